//! `orchestrate table`: the results tables from the cache, their figures, and the paper pivot.

use super::{CliError, Loaded, Pivot, exit, io_context, load};
use crate::manifest::schema::SparsityAxis;
use crate::report;
use crate::tables::pivot::{Metric, PivotFormat, render};
use crate::tables::{
    Row, collect, collect_id, id_dataframe, to_dataframe, write::tables_dir, write_tables,
};
use crate::util::fsx;
use std::path::{Path, PathBuf};

pub fn run(
    results: &Path,
    manifest: &Path,
    pivot: Option<Pivot>,
    metric: Metric,
) -> Result<i32, CliError> {
    let l = load(results, manifest, false)?;
    let (rows, (csv, parquet)) = write(&l, results)?;
    println!("wrote {} and {}", csv.display(), parquet.display());
    if let Some(p) = pivot {
        let (format, ext) = match p {
            Pivot::Md => (PivotFormat::Markdown, "md"),
            Pivot::Tex => (PivotFormat::Latex, "tex"),
        };
        let text = render(&rows, format, metric);
        let path = tables_dir(results, &l.exp.name).join(format!("{}.{ext}", l.exp.name));
        fsx::write_atomic(&path, text.as_bytes())
            .map_err(io_context(format!("cannot write {}", path.display())))?;
        print!("{text}");
        println!("wrote {}", path.display());
    }
    Ok(exit::OK)
}

/// Collects the rows and writes the CSV and Parquet tables; returns the rows and the paths.
pub fn write(l: &Loaded, results: &Path) -> Result<(Vec<Row>, (PathBuf, PathBuf)), CliError> {
    let rows = collect(&l.exp, &l.plan, &l.cache);
    let dir = tables_dir(results, &l.exp.name);
    let mut df = to_dataframe(&rows).map_err(|e| CliError::Io {
        context: "cannot build the table".into(),
        source: std::io::Error::other(e),
    })?;
    let written = write_tables(&mut df, &dir, &l.exp.name).map_err(io_context(format!(
        "cannot write tables in {}",
        dir.display()
    )))?;
    let id_rows = if l.exp.stages.intrinsic_dimension {
        let id_rows = collect_id(&l.plan, &l.cache, &rows);
        let mut id = id_dataframe(&id_rows).map_err(|e| CliError::Io {
            context: "cannot build the intrinsic-dimension table".into(),
            source: std::io::Error::other(e),
        })?;
        write_tables(&mut id, &dir, &format!("{}_id", l.exp.name)).map_err(io_context(format!(
            "cannot write tables in {}",
            dir.display()
        )))?;
        id_rows
    } else {
        Vec::new()
    };
    let data_driven = |method: &str| {
        l.exp
            .method_spec(method)
            .is_some_and(|s| s.sparsity == SparsityAxis::DataDriven)
    };
    let figures = dir.join("figures");
    report::write_figures(&rows, &id_rows, &data_driven, &figures).map_err(|e| CliError::Io {
        context: format!("cannot write the figures in {}", figures.display()),
        source: std::io::Error::other(e),
    })?;
    Ok((rows, written))
}
