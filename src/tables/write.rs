//! Rows → polars DataFrame → `results/<experiment>/<experiment>.{csv,parquet}`, atomically.

use super::collect::{EFFICIENCY, ID_SUMMARY, IdRow, RETRAIN_RETRIEVAL, RETRIEVAL_METRICS, Row};
use crate::util::fsx;
use polars::prelude::*;
use std::path::{Path, PathBuf};

fn col<R, T>(name: &str, rows: &[R], f: impl Fn(&R) -> T) -> Column
where
    Series: NamedFrom<Vec<T>, [T]>,
{
    Column::new(name.into(), rows.iter().map(f).collect::<Vec<T>>())
}

/// The columns that identify a grid point, and its status.
fn point_columns<R>(rows: &[R], point: impl Fn(&R) -> &Row) -> Vec<Column> {
    vec![
        col("model", rows, |r| point(r).model.clone()),
        col("dataset", rows, |r| point(r).dataset.clone()),
        col("method", rows, |r| point(r).method.clone()),
        col("sparsity", rows, |r| point(r).sparsity.clone()),
        col("target_sparsity", rows, |r| point(r).target_sparsity),
        col("calibration_size", rows, |r| point(r).calibration_size),
        col("seed", rows, |r| point(r).seed),
        col("status", rows, |r| point(r).status.name().to_string()),
    ]
}

pub fn to_dataframe(rows: &[Row]) -> PolarsResult<DataFrame> {
    let mut columns = point_columns(rows, |r| r);
    columns.extend([
        col("top1", rows, |r| r.top1),
        col("top5", rows, |r| r.top5),
        col("n_eval", rows, |r| r.n_eval),
        col("achieved_sparsity", rows, |r| r.achieved_sparsity),
        col("vision_depth", rows, |r| r.vision_depth),
        col("prune_seconds", rows, |r| r.prune_seconds),
        col("eval_seconds", rows, |r| r.eval_seconds),
        col("retrain_best_top1", rows, |r| r.retrain_best_top1),
        col("retrain_last_top1", rows, |r| r.retrain_last_top1),
    ]);
    for (i, name) in RETRIEVAL_METRICS.iter().enumerate() {
        columns.push(col(name, rows, |r| r.retrieval[i]));
    }
    for (i, name) in RETRAIN_RETRIEVAL.iter().enumerate() {
        columns.push(col(name, rows, |r| r.retrain_retrieval[i]));
    }
    for (i, name) in ID_SUMMARY.iter().enumerate() {
        columns.push(col(name, rows, |r| r.intrinsic_dimension[i]));
    }
    columns.push(col("loss", rows, |r| r.loss));
    for (i, name) in EFFICIENCY.iter().enumerate() {
        columns.push(col(name, rows, |r| r.efficiency[i]));
    }
    columns.push(col("failed_stage", rows, |r| r.failed_stage.clone()));
    columns.push(col("error", rows, |r| r.error.clone()));
    columns.push(col("log", rows, |r| {
        r.log.as_ref().map(|p| p.display().to_string())
    }));
    DataFrame::new(rows.len(), columns)
}

/// The long intrinsic-dimension table (one row per point × tower × layer).
pub fn id_dataframe(rows: &[IdRow]) -> PolarsResult<DataFrame> {
    let mut columns = point_columns(rows, |r| &r.point);
    columns.extend([
        col("tower", rows, |r| r.tower.clone()),
        col("layer", rows, |r| r.layer),
        col("module", rows, |r| r.module.clone()),
        col("intrinsic_dimension", rows, |r| r.dimension),
        col("std", rows, |r| r.std),
        col("kept", rows, |r| r.kept),
        col("duplicates", rows, |r| r.duplicates),
        col("degenerate", rows, |r| r.degenerate),
        col("samples", rows, |r| r.samples),
    ]);
    DataFrame::new(rows.len(), columns)
}

/// The directory of an experiment's tables.
pub fn tables_dir(results_dir: &Path, experiment: &str) -> PathBuf {
    results_dir.join(experiment)
}

/// Writes `<dir>/<name>.csv` and `<dir>/<name>.parquet` atomically; returns their paths.
pub fn write_tables(
    df: &mut DataFrame,
    dir: &Path,
    name: &str,
) -> std::io::Result<(PathBuf, PathBuf)> {
    let csv = dir.join(format!("{name}.csv"));
    let parquet = dir.join(format!("{name}.parquet"));
    fsx::write_atomic_with(&csv, |f| {
        CsvWriter::new(f).finish(df).map_err(std::io::Error::other)
    })?;
    fsx::write_atomic_with(&parquet, |f| {
        ParquetWriter::new(f)
            .finish(df)
            .map(|_| ())
            .map_err(std::io::Error::other)
    })?;
    Ok((csv, parquet))
}
