//! The job spec: everything a stage process needs to compute one node, as JSON. The local
//! backend writes it for each child process; a cluster backend writes the same file for each
//! task. `orchestrate stage <job.json>` is the documented entry point that reads it.
//!
//! Invariant: every path in a spec is absolute, so the stage can run from any working
//! directory (a cluster node's) and still find the cache and its inputs.

use super::kind::StageKind;
use super::{Node, Plan};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobSpec {
    pub key: String,
    pub kind: StageKind,
    pub label: String,
    pub params: Json,
    pub upstream: Vec<JobUpstream>,
    pub inputs: Vec<JobInput>,
    /// The results directory whose `cache/` receives the entry.
    pub results_dir: PathBuf,
    /// Device as the stage process sees it (`cpu`, or `cuda:0` under `CUDA_VISIBLE_DEVICES`).
    pub device: String,
    /// Device as the scheduler assigned it (recorded in provenance).
    pub assigned_device: String,
    /// Intra-op threads.
    pub threads: u32,
    /// Re-check artifact checksums of an existing entry (under the lock) before trusting it.
    #[serde(default)]
    pub verify: bool,
    /// Where the stage process writes its outcome (`{"computed": bool}`) once the entry is
    /// published, for the backend that started it.
    #[serde(default)]
    pub outcome: Option<PathBuf>,
    /// Minutes between a training stage's checkpoints (0: after every step).
    #[serde(default = "default_checkpoint_minutes")]
    pub checkpoint_minutes: u64,
}

use crate::manifest::types::DEFAULT_CHECKPOINT_MINUTES;

fn default_checkpoint_minutes() -> u64 {
    DEFAULT_CHECKPOINT_MINUTES
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobUpstream {
    pub kind: StageKind,
    pub key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobInput {
    pub role: String,
    pub path: PathBuf,
    pub fingerprint: String,
}

impl JobSpec {
    /// The spec of `node`, placed on the CPU with default threads; a backend sets where it runs.
    /// Relative paths are made absolute against the current directory.
    pub fn new(plan: &Plan, node: &Node, results_dir: &Path) -> Self {
        JobSpec {
            key: node.key.clone(),
            kind: node.kind,
            label: node.label.clone(),
            params: node.params_json(),
            upstream: node
                .upstream
                .iter()
                .map(|&u| JobUpstream {
                    kind: plan.nodes[u].kind,
                    key: plan.nodes[u].key.clone(),
                })
                .collect(),
            inputs: node
                .inputs
                .iter()
                .map(|i| JobInput {
                    role: i.role.clone(),
                    path: absolute(&i.path),
                    fingerprint: i.fingerprint.clone(),
                })
                .collect(),
            results_dir: absolute(results_dir),
            device: "cpu".into(),
            assigned_device: "cpu".into(),
            threads: 0,
            verify: false,
            outcome: None,
            checkpoint_minutes: DEFAULT_CHECKPOINT_MINUTES,
        }
    }
}

/// `path` made absolute (an empty path, a test model's, stays empty).
fn absolute(path: &Path) -> PathBuf {
    if path.as_os_str().is_empty() {
        return PathBuf::new();
    }
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::build::Input;

    #[test]
    fn every_path_of_a_job_is_absolute() {
        let node = Node {
            kind: StageKind::Evaluate,
            key: "0".repeat(64),
            label: "evaluate".into(),
            slot: "evaluate".into(),
            params: "{}".into(),
            upstream: vec![],
            inputs: vec![Input {
                role: "model".into(),
                path: PathBuf::from("experiments/models/tiny"),
                fingerprint: "f".into(),
            }],
        };
        let plan = Plan {
            nodes: vec![node.clone()],
            ..Plan::default()
        };
        let job = JobSpec::new(&plan, &node, Path::new("results"));
        assert!(job.results_dir.is_absolute());
        assert!(job.inputs[0].path.is_absolute());
        assert!(job.inputs[0].path.ends_with("experiments/models/tiny"));
    }
}
