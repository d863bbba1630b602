//! Run events: the scheduler's only output. Reporters (progress bar, plain lines, JSONL log)
//! subscribe to them and never reach into scheduler state.

use crate::plan::NodeId;
use serde::Serialize;
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// The run begins: node counts.
    Start {
        total: usize,
        cached: usize,
        to_run: usize,
        slots: Vec<String>,
    },
    Started {
        node: NodeId,
        label: String,
        device: String,
        /// Why it runs, when it was computed before (corrupt, dropped weights, …).
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Another run computed the node while this one waited for its lock.
    Cached {
        node: NodeId,
        label: String,
    },
    Finished {
        node: NodeId,
        label: String,
        seconds: f64,
    },
    Retrying {
        node: NodeId,
        label: String,
        attempt: u32,
        error: String,
    },
    Failed {
        node: NodeId,
        label: String,
        error: String,
        log: PathBuf,
    },
    Skipped {
        node: NodeId,
        label: String,
        because: String,
    },
    /// Ctrl-C: `hard` = the second one; `message` says what happens to running stages.
    Interrupted {
        hard: bool,
        message: String,
    },
    /// Something the backend wants the user to know (a retried submission, adopted jobs).
    Notice {
        message: String,
    },
    Evicted {
        node: NodeId,
        bytes: u64,
    },
    End {
        summary: RunSummary,
    },
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RunSummary {
    pub cached: usize,
    pub done: usize,
    pub failed: usize,
    pub skipped: usize,
    pub not_run: usize,
    pub interrupted: bool,
    pub seconds: f64,
    /// (label, error, log) of every failed node.
    pub failures: Vec<(String, String, PathBuf)>,
}
