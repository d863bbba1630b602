//! `orchestrate table`: the results tables from the cache, their figures, and the paper pivot.

use super::{CliError, Loaded, Pivot, exit, io_context, load};
use crate::cache::Lookup;
use crate::manifest::schema::SparsityAxis;
use crate::report::{self, html};
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
        let text = render(&rows, format, metric, &l.exp.references);
        let path = tables_dir(results, &l.exp.name).join(format!("{}.{ext}", l.exp.name));
        fsx::write_atomic(&path, text.as_bytes())
            .map_err(io_context(format!("cannot write {}", path.display())))?;
        print!("{text}");
        println!("wrote {}", path.display());
    }
    Ok(exit::OK)
}

/// `orchestrate report`: the tables, figures and report, and where the report is.
pub fn report(results: &Path, manifest: &Path) -> Result<i32, CliError> {
    let l = load(results, manifest, false)?;
    write(&l, results)?;
    let dir = tables_dir(results, &l.exp.name);
    println!("wrote {}", dir.join("report.html").display());
    println!("figures: {}", dir.join("figures").display());
    Ok(exit::OK)
}

/// Collects the rows and writes the CSV and Parquet tables, the figures and the report;
/// returns the rows and the tables' paths.
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
    // Written when the manifest measures intrinsic dimensions, or a method reads per-Linear ones.
    let linear_ids = l
        .plan
        .dense
        .iter()
        .any(|d| d.nodes.linear_intrinsic_dimension.is_some());
    let id_rows = if l.exp.stages.intrinsic_dimension || linear_ids {
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
    let figures_dir = dir.join("figures");
    let report_error = |e: report::ReportError| CliError::Io {
        context: format!("cannot write the figures and report in {}", dir.display()),
        source: std::io::Error::other(e),
    };
    let figures =
        report::write_figures(&rows, &id_rows, &data_driven, &figures_dir).map_err(report_error)?;
    let (times, provenance) = records_summary(l);
    let manifest_text = std::fs::read_to_string(&l.exp.manifest_path).unwrap_or_default();
    let manifest_path = l.exp.manifest_path.display().to_string();
    let data = html::ReportData {
        experiment: &l.exp.name,
        description: Some(l.exp.description.as_str()).filter(|d| !d.is_empty()),
        manifest_path: &manifest_path,
        manifest_text: &manifest_text,
        generated: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        rows: &rows,
        references: &l.exp.references,
        figures: &figures,
        times: &times,
        provenance: &provenance,
    };
    report::write_report(&data, &dir).map_err(report_error)?;
    Ok((rows, written))
}

/// Time per stage kind and the provenance of every computed stage of the plan.
fn records_summary(l: &Loaded) -> (Vec<html::StageTime>, html::Provenance) {
    let mut times: Vec<html::StageTime> = Vec::new();
    let mut sets: [std::collections::BTreeSet<String>; 5] = Default::default();
    for n in &l.plan.nodes {
        let record = match l.cache.lookup(&n.key, false) {
            Lookup::Done(r) | Lookup::Evicted(r) => r,
            _ => continue,
        };
        let kind = n.kind.name().to_string();
        let seconds = record.timing.seconds;
        match times.iter_mut().find(|t| t.kind == kind) {
            Some(t) => {
                t.count += 1;
                t.seconds += seconds;
                if seconds > t.slowest.1 {
                    t.slowest = (n.label.clone(), seconds);
                }
            }
            None => times.push(html::StageTime {
                kind,
                count: 1,
                seconds,
                slowest: (n.label.clone(), seconds),
            }),
        }
        let p = &record.provenance;
        sets[0].insert(p.orchestrate_version.clone());
        sets[1].insert(p.git_revision.clone());
        sets[2].extend(p.libraries.iter().map(|(k, v)| format!("{k} {v}")));
        sets[3].insert(p.device.clone());
        sets[4].insert(p.host.clone());
    }
    let [versions, revisions, libraries, devices, hosts] = sets.map(|s| s.into_iter().collect());
    (
        times,
        html::Provenance {
            versions,
            revisions,
            libraries,
            devices,
            hosts,
        },
    )
}
