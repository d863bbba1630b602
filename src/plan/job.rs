//! The job spec: everything a stage process needs to compute one node, as JSON. The local
//! executor writes it for each child process; a cluster backend writes the same file for each
//! array task. `orchestrate stage <job.json>` is the documented entry point that reads it.

use super::kind::StageKind;
use super::{Node, Plan};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::path::PathBuf;

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
    pub fn new(
        plan: &Plan,
        node: &Node,
        results_dir: PathBuf,
        device: String,
        assigned_device: String,
        threads: u32,
    ) -> Self {
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
                    path: i.path.clone(),
                    fingerprint: i.fingerprint.clone(),
                })
                .collect(),
            results_dir,
            device,
            assigned_device,
            threads,
        }
    }
}
