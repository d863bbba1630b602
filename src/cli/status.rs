//! `orchestrate status`: per stage, done / failed (with log path) / running / pending.

use super::{CliError, exit, load};
use crate::cache::{State, freshness};
use crate::exec::backend::slurm::{cluster, ledger};
use crate::manifest::types::BackendKind;
use std::collections::HashMap;
use std::path::Path;

pub fn run(results: &Path, manifest: &Path, all: bool) -> Result<i32, CliError> {
    let l = load(results, manifest, false)?;
    let states = freshness(&l.cache, &l.plan, false, false);
    let queued = match l.exp.resources.backend {
        BackendKind::Slurm => slurm_jobs(results),
        BackendKind::Local => HashMap::new(),
    };
    let mut counts = [0usize; 5];
    let mut lines = Vec::new();
    for (n, s) in l.plan.nodes.iter().zip(&states) {
        let job = queued.get(&n.key);
        let (i, text) = match s {
            State::Cached => (0, format!("done     {}", n.label)),
            State::Run(_) => match (l.cache.failure(&n.key), l.cache.try_lock(&n.key)) {
                (_, Ok(None)) => (
                    2,
                    match job {
                        Some(j) => format!("running  {} (Slurm job {})", n.label, j.id),
                        None => format!("running  {}", n.label),
                    },
                ),
                _ if job.is_some() => {
                    let j = job.expect("queued");
                    (
                        4,
                        format!(
                            "queued   {} (Slurm job {}: {}, {})",
                            n.label, j.id, j.state, j.reason
                        ),
                    )
                }
                (Some(f), _) => (
                    1,
                    format!(
                        "failed   {}\n         {}\n         log: {}",
                        n.label,
                        f.error,
                        f.log.display()
                    ),
                ),
                (None, _) => (3, format!("pending  {}", n.label)),
            },
        };
        counts[i] += 1;
        if all || i != 0 {
            lines.push(text);
        }
    }
    let queued_count = match l.exp.resources.backend {
        BackendKind::Slurm => format!(", {} queued", counts[4]),
        BackendKind::Local => String::new(),
    };
    println!(
        "experiment {}: {} stages — {} done, {} failed, {} running{queued_count}, {} pending",
        l.exp.name,
        l.plan.nodes.len(),
        counts[0],
        counts[1],
        counts[2],
        counts[3]
    );
    for line in lines {
        println!("{line}");
    }
    Ok(if counts[1] > 0 {
        exit::STAGE_FAILED
    } else {
        exit::OK
    })
}

/// Stage key → its Slurm job still in the queue, from the results directory's ledger and one
/// `squeue`. Status never fails for want of a cluster: it says so and shows the rest.
fn slurm_jobs(results: &Path) -> HashMap<String, cluster::QueuedJob> {
    let entries = match ledger::Ledger::new(results).read() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("note: {e}");
            return HashMap::new();
        }
    };
    let mut runs: Vec<String> = entries
        .values()
        .filter(|e| e.state != ledger::JobState::Ended)
        .map(|e| e.run.clone())
        .collect();
    runs.sort();
    runs.dedup();
    let queue = match cluster::queue(&runs) {
        Ok(q) => q,
        Err(e) => {
            eprintln!("note: cannot ask Slurm about queued stages: {}", e.message);
            return HashMap::new();
        }
    };
    entries
        .into_iter()
        .filter_map(|(key, e)| {
            let job = queue.get(e.job.as_deref()?)?;
            (!job.ended()).then(|| (key, job.clone()))
        })
        .collect()
}
