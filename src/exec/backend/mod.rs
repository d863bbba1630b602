//! Where jobs run. The scheduler hands a job to a [`Backend`] and later polls for its outcome;
//! it knows nothing about processes, hosts or queues.
//!
//! - [`local`]: one child process per job on this machine (`orchestrate stage <job.json>`), over
//!   device slots.
//! - [`slurm`]: one Slurm job (or array task) per job, submitted with `sbatch`, followed with
//!   `squeue`, and recorded in a ledger so a restarted driver adopts what is still queued.
//!
//! Contract: whatever runs a job runs `orchestrate stage` (or [`crate::stages::run`]'s
//! equivalent) on its spec, and that process holds the key's lock while it computes and
//! publishes the entry: every key is computed once, whichever backend ran it and whatever else
//! shares the results directory. Every path in a spec is absolute, so a job can run from any
//! working directory on any host that sees the same filesystem.

pub mod local;
pub mod slurm;

pub use local::Local;
pub use slurm::Slurm;

use super::slots::Slot;
use crate::plan::{JobSpec, NodeId};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How one attempt of a job ended.
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    /// The entry is published. `computed`: by this job (false: another run published it while
    /// this one waited for the key's lock).
    Done { seconds: f64, computed: bool },
    /// The job failed: one line on why, and where its log is.
    Failed { error: String, log: PathBuf },
    /// Stopped because the user interrupted the run: not a failure of the stage, which simply
    /// has not run (the next run starts it again).
    Interrupted,
}

/// A finished attempt, reported by [`Backend::poll`].
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub node: NodeId,
    pub outcome: JobOutcome,
}

pub trait Backend {
    /// One slot per job that may run at once, with the device jobs in it use.
    fn slots(&self) -> &[Slot];

    /// Where this backend runs jobs, for the run's first line.
    fn describe(&self) -> Vec<String> {
        self.slots().iter().map(|s| s.device.to_string()).collect()
    }

    /// Where a job in `slot` runs, for its start line.
    fn placement(&self, slot: usize) -> String {
        self.slots()[slot].device.to_string()
    }

    /// Starts an attempt of `job` (node `node`) in `slot`. An `Err` is a job that could not be
    /// started; the scheduler counts it as a failed attempt.
    fn submit(&mut self, node: NodeId, slot: usize, job: JobSpec) -> Result<(), String>;

    /// Attempts that ended, waiting at most `timeout` for the first one.
    fn poll(&mut self, timeout: Duration) -> Vec<Finished>;

    /// The first Ctrl-C: nothing new starts. Returns what happens to running attempts, in one
    /// line for the user (here: they finish).
    fn interrupt(&mut self) -> String {
        "no new stages start; running ones finish (Ctrl-C again to kill them)".into()
    }

    /// The second Ctrl-C: stops every running attempt now; each still reports (as failed or
    /// interrupted). Returns what it did, in one line.
    fn cancel_all(&mut self) -> String;

    /// Things the user should know that are not a job's outcome (a submission being retried, a
    /// status query that failed, jobs adopted from an earlier run).
    fn notices(&mut self) -> Vec<String> {
        Vec::new()
    }
}

/// Writes `job`'s spec to `<run_dir>/jobs/<key>.json` with its outcome file set to
/// `<run_dir>/outcomes/<key>.json` (an earlier attempt's removed, so a retry never reads it) and
/// `<run_dir>/logs/` created; returns the spec's and the outcome's paths.
pub fn write_job(run_dir: &Path, job: &mut JobSpec) -> Result<(PathBuf, PathBuf), String> {
    let outcome = run_dir.join("outcomes").join(format!("{}.json", job.key));
    let spec = run_dir.join("jobs").join(format!("{}.json", job.key));
    job.outcome = Some(outcome.clone());
    for dir in ["jobs", "outcomes", "logs"].map(|d| run_dir.join(d)) {
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let _ = std::fs::remove_file(&outcome);
    let text = serde_json::to_vec_pretty(&job).expect("job serialises");
    std::fs::write(&spec, text).map_err(|e| format!("cannot write {}: {e}", spec.display()))?;
    Ok((spec, outcome))
}

/// What a stage process wrote after publishing: whether it computed the entry itself.
pub fn read_outcome(path: &Path) -> Option<bool> {
    let bytes = std::fs::read(path).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v["computed"].as_bool()
}

/// Why a stage failed, from its log: its last `error:` line, else its panic in one line.
pub fn last_error_line(log: &str) -> Option<String> {
    match log.lines().rev().find(|l| l.starts_with("error")) {
        Some(line) => Some(line.trim_start_matches("error: ").to_string()),
        None => local::panic_message(log),
    }
}
