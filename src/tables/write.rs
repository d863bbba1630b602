//! Rows → polars DataFrame → `results/<experiment>/<experiment>.{csv,parquet}`, atomically.

use super::collect::{RETRIEVAL_METRICS, Row};
use crate::util::fsx;
use polars::prelude::*;
use std::path::{Path, PathBuf};

pub fn to_dataframe(rows: &[Row]) -> PolarsResult<DataFrame> {
    fn col<T>(name: &str, rows: &[Row], f: impl Fn(&Row) -> T) -> Column
    where
        Series: NamedFrom<Vec<T>, [T]>,
    {
        Column::new(name.into(), rows.iter().map(f).collect::<Vec<T>>())
    }
    let mut columns = vec![
        col("model", rows, |r| r.model.clone()),
        col("dataset", rows, |r| r.dataset.clone()),
        col("method", rows, |r| r.method.clone()),
        col("sparsity", rows, |r| r.sparsity.clone()),
        col("target_sparsity", rows, |r| r.target_sparsity),
        col("calibration_size", rows, |r| r.calibration_size),
        col("seed", rows, |r| r.seed),
        col("status", rows, |r| r.status.name().to_string()),
        col("top1", rows, |r| r.top1),
        col("top5", rows, |r| r.top5),
        col("n_eval", rows, |r| r.n_eval),
        col("achieved_sparsity", rows, |r| r.achieved_sparsity),
        col("prune_seconds", rows, |r| r.prune_seconds),
        col("eval_seconds", rows, |r| r.eval_seconds),
        col("retrain_best_top1", rows, |r| r.retrain_best_top1),
        col("retrain_last_top1", rows, |r| r.retrain_last_top1),
    ];
    for (i, name) in RETRIEVAL_METRICS.iter().enumerate() {
        columns.push(col(name, rows, |r| r.retrieval[i]));
    }
    columns.push(col("failed_stage", rows, |r| r.failed_stage.clone()));
    columns.push(col("log", rows, |r| {
        r.log.as_ref().map(|p| p.display().to_string())
    }));
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
