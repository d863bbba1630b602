//! `orchestrate run`: plan, run what is not cached, write the tables. Re-running resumes.

use super::{CliError, Loaded, exit, io_context, load};
use crate::cache::{State, freshness};
use crate::exec::backend::{Backend, Local, Slurm};
use crate::exec::{self, Event, RunOptions, RunSummary, signals::Interrupts};
use crate::manifest::types::BackendKind;
use crate::plan::StageKind;
use crate::progress::{Console, EventLog};
use std::path::{Path, PathBuf};

pub fn run(results: &Path, manifest: &Path, retries: u32, verify: bool) -> Result<i32, CliError> {
    let l = load(results, manifest, verify)?;
    let states = freshness(&l.cache, &l.plan, verify, false);
    let (summary, run_dir) = execute(&l, results, &states, retries, verify, l.exp.keep_pruned)?;

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
    let tables_failed = match tables {
        Ok((_, (csv, parquet))) => {
            println!("tables: {} and {}", csv.display(), parquet.display());
            let report = csv.with_file_name("report.html");
            println!(
                "report: {} (figures in {})",
                report.display(),
                csv.with_file_name("figures").display()
            );
            false
        }
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!(
                "  hint: the cache is intact; fix the cause and run `orchestrate table {}` to write them",
                manifest.display()
            );
            true
        }
    };
    println!("run log: {}", run_dir.display());
    Ok(if summary.interrupted {
        println!("interrupted: run the same command again to resume");
        exit::INTERRUPTED
    } else if tables_failed {
        // The computed results are safe in the cache, but the user's deliverable is missing.
        exit::INTERNAL
    } else if summary.failed > 0 {
        exit::STAGE_FAILED
    } else {
        exit::OK
    })
}

/// Runs the nodes whose state is `Run` under a fresh run directory, reporting to the console and
/// the run's event log; returns the summary and the run directory.
pub fn execute(
    l: &Loaded,
    results: &Path,
    states: &[State],
    retries: u32,
    verify: bool,
    keep_pruned: bool,
) -> Result<(RunSummary, PathBuf), CliError> {
    let run_id = format!(
        "{}-{}",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now())
            .to_string()
            .replace(':', ""),
        std::process::id()
    );
    let cuda = if needs_cuda_count(&l.exp) && crate::util::runtime::load_cuda() {
        tch::Cuda::device_count().max(0) as u32
    } else {
        0
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    // Absolute, so jobs find the cache from wherever they run.
    let results_dir = std::path::absolute(results).map_err(io_context(format!(
        "cannot resolve the results directory {}",
        results.display()
    )))?;
    // Held until the run ends: `gc` waits for it rather than remove what it may read.
    let cache = crate::cache::Cache::new(&results_dir);
    let _held = cache.lock_for_run()?;
    // Entries that killed stages left half-built (no live process holds their key).
    crate::cache::gc::clean_tmp(&cache, false);
    let run_dir = results_dir.join("runs").join(&run_id);
    std::fs::create_dir_all(&run_dir).map_err(io_context(format!(
        "cannot create run directory {}",
        run_dir.display()
    )))?;
    let exe =
        std::env::current_exe().map_err(io_context("cannot locate the orchestrate binary"))?;
    let to_run: Vec<StageKind> = {
        let mut kinds: Vec<StageKind> = l
            .plan
            .nodes
            .iter()
            .zip(states)
            .filter(|(_, s)| **s != State::Cached)
            .map(|(n, _)| n.kind)
            .collect();
        kinds.sort();
        kinds.dedup();
        kinds
    };
    // With nothing to run, a cluster run needs no cluster (writing tables on a laptop works).
    let backend_kind = match to_run.is_empty() {
        true => BackendKind::Local,
        false => l.exp.resources.backend,
    };
    let mut backend: Box<dyn Backend> = match backend_kind {
        BackendKind::Local => Box::new(Local::new(
            exe,
            run_dir.clone(),
            exec::slots(&l.exp.resources, cuda, cores),
        )),
        BackendKind::Slurm => Box::new(Slurm::new(
            exe,
            &results_dir,
            run_dir.clone(),
            run_id.clone(),
            &l.exp.resources.slurm,
            &to_run,
        )?),
    };
    let opts = RunOptions {
        results_dir,
        retries,
        keep_pruned,
        verify,
        checkpoint_minutes: l.exp.resources.checkpoint_minutes,
    };
    let interrupts =
        Interrupts::install().map_err(io_context("cannot install the Ctrl-C handler"))?;
    let mut console = Console::new();
    let mut log = EventLog::create(&run_dir.join("events.jsonl"));
    let summary = exec::run(
        &l.plan,
        states,
        backend.as_mut(),
        &opts,
        &interrupts,
        &mut |e: &Event| {
            console.handle(e);
            log.handle(e);
        },
    );
    Ok((summary, run_dir))
}

/// Only `devices = "auto"` on the local backend asks libtorch how many GPUs there are.
fn needs_cuda_count(exp: &crate::manifest::Experiment) -> bool {
    // Under Slurm the nodes' GPUs are what `gres` asks for, not this machine's.
    exp.resources.backend == BackendKind::Local
        && exp.resources.devices == crate::manifest::DeviceRequest::Auto
        && !exp.models.values().all(|m| m.test)
}
