//! `orchestrate run`: plan, run what is not cached, write the tables. Re-running resumes.

use super::{CliError, exit, io_context, load};
use crate::cache::freshness;
use crate::exec::{self, Event, RunOptions, signals::Interrupts};
use crate::report::{Console, EventLog};
use std::path::Path;

pub fn run(results: &Path, manifest: &Path, retries: u32, verify: bool) -> Result<i32, CliError> {
    let l = load(results, manifest)?;
    let states = freshness(&l.cache, &l.plan, verify, false);
    let run_id = format!(
        "{}-{}",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now())
            .to_string()
            .replace(':', ""),
        std::process::id()
    );
    let run_dir = results.join("runs").join(&run_id);
    std::fs::create_dir_all(&run_dir).map_err(io_context(format!(
        "cannot create run directory {}",
        run_dir.display()
    )))?;
    let cuda = if needs_cuda_count(&l.exp) {
        tch::Cuda::device_count().max(0) as u32
    } else {
        0
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let opts = RunOptions {
        results_dir: results.to_path_buf(),
        run_dir: run_dir.clone(),
        exe: std::env::current_exe().map_err(io_context("cannot locate the orchestrate binary"))?,
        slots: exec::slots(&l.exp.resources, cuda, cores),
        retries,
        keep_pruned: l.exp.keep_pruned,
        verify,
    };
    let interrupts =
        Interrupts::install().map_err(io_context("cannot install the Ctrl-C handler"))?;
    let mut console = Console::new();
    let mut log = EventLog::create(&run_dir.join("events.jsonl"));
    let summary = exec::run(&l.plan, &states, &opts, &interrupts, &mut |e: &Event| {
        console.handle(e);
        log.handle(e);
    });

    // Tables are written whatever happened: failed and pending points keep their rows.
    let tables = super::table::write(&l, results);
    println!(
        "{} done, {} cached, {} failed, {} skipped{} in {:.1}s",
        summary.done,
        summary.cached,
        summary.failed,
        summary.skipped,
        if summary.not_run > 0 {
            format!(", {} not started", summary.not_run)
        } else {
            String::new()
        },
        summary.seconds
    );
    for (label, error, log) in &summary.failures {
        println!("  failed: {label}\n    {error}\n    log: {}", log.display());
    }
    match tables {
        Ok((_, (csv, parquet))) => println!("tables: {} and {}", csv.display(), parquet.display()),
        Err(e) => eprintln!("error: {e}"),
    }
    println!("run log: {}", run_dir.display());
    Ok(if summary.interrupted {
        println!("interrupted: run the same command again to resume");
        exit::INTERRUPTED
    } else if summary.failed > 0 {
        exit::STAGE_FAILED
    } else {
        exit::OK
    })
}

/// Only `devices = "auto"` asks libtorch how many GPUs there are.
fn needs_cuda_count(exp: &crate::manifest::Experiment) -> bool {
    exp.resources.devices == crate::manifest::DeviceRequest::Auto
        && !exp.models.values().all(|m| m.test)
}
