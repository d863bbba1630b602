//! An experiment's figures and report, drawn from its tables: [`figures`] decides what each
//! figure shows (data only, tested against the table), [`render`] draws it as SVG and PNG with
//! an embedded font, [`html`] assembles the self-contained `report.html`. [`write_figures`]
//! writes the figures under `results/<experiment>/figures/`, atomically per file, and removes
//! figures the table no longer supports.
//!
//! Invariant: the orchestration half only; the report reads rows and records, never a model.

pub mod figures;
pub mod html;
pub mod render;

use crate::tables::{IdRow, Row};
use crate::util::fsx;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot draw a figure: {0}")]
    Render(String),
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Draws every figure the rows support into `dir` (`<name>.svg`, `<name>.png`); returns the
/// figures with their SVG.
pub fn write_figures(
    rows: &[Row],
    id_rows: &[IdRow],
    data_driven: &dyn Fn(&str) -> bool,
    dir: &Path,
) -> Result<Vec<(figures::Figure, String)>, ReportError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ReportError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let all = figures::all(rows, id_rows, data_driven);
    let mut out = Vec::with_capacity(all.len());
    for f in all {
        let drawn = render::render(&f)?;
        let svg = dir.join(format!("{}.svg", f.name));
        let png = dir.join(format!("{}.png", f.name));
        fsx::write_atomic(&svg, drawn.svg.as_bytes()).map_err(io(&svg))?;
        fsx::write_atomic(&png, &drawn.png).map_err(io(&png))?;
        out.push((f, drawn.svg));
    }
    // A figure from an earlier run whose data is gone would mislead.
    let current: Vec<String> = out.iter().map(|(f, _)| f.name.clone()).collect();
    for e in std::fs::read_dir(dir).map_err(io(dir))?.flatten() {
        let path = e.path();
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let ext = path
            .extension()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        if matches!(ext, "svg" | "png") && !current.iter().any(|c| c == stem) {
            let _ = std::fs::remove_file(&path);
        }
    }
    Ok(out)
}

/// Writes `report.html` into `dir`; returns its path.
pub fn write_report(data: &html::ReportData, dir: &Path) -> Result<PathBuf, ReportError> {
    let path = dir.join("report.html");
    fsx::write_atomic(&path, html::render(data).as_bytes()).map_err(|source| ReportError::Io {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}
