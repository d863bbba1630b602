//! Where jobs run. The scheduler hands a job to a [`Backend`] and later polls for its outcome;
//! it knows nothing about processes, hosts or queues.
//!
//! - [`local`]: one child process per job on this machine (`orchestrate stage <job.json>`), over
//!   device slots.
//!
//! Contract: whatever runs a job runs `orchestrate stage` (or [`crate::stages::run`]'s
//! equivalent) on its spec, and that process holds the key's lock while it computes and
//! publishes the entry: every key is computed once, whichever backend ran it and whatever else
//! shares the results directory. Every path in a spec is absolute, so a job can run from any
//! working directory on any host that sees the same filesystem.

pub mod local;

pub use local::Local;

use super::slots::Slot;
use crate::plan::{JobSpec, NodeId};
use std::path::PathBuf;
use std::time::Duration;

/// How one attempt of a job ended.
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    /// The entry is published. `computed`: by this job (false: another run published it while
    /// this one waited for the key's lock).
    Done { seconds: f64, computed: bool },
    /// The job failed: one line on why, and where its log is.
    Failed { error: String, log: PathBuf },
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

    /// Starts an attempt of `job` (node `node`) in `slot`. An `Err` is a job that could not be
    /// started; the scheduler counts it as a failed attempt.
    fn submit(&mut self, node: NodeId, slot: usize, job: JobSpec) -> Result<(), String>;

    /// Attempts that ended, waiting at most `timeout` for the first one.
    fn poll(&mut self, timeout: Duration) -> Vec<Finished>;

    /// Stops every running attempt now (the second Ctrl-C). Each still reports as failed.
    fn cancel_all(&mut self);
}
