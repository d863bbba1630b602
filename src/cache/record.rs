//! The record of a cache entry: everything needed to trust, explain and reuse it.

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::collections::BTreeMap;

pub const RECORD_FORMAT: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub format: u32,
    pub key: String,
    pub kind: String,
    pub version: u32,
    pub label: String,
    pub params: Json,
    pub upstream: Vec<UpstreamRef>,
    pub inputs: Vec<InputRef>,
    pub artifacts: Vec<Artifact>,
    /// Stage results (accuracies, achieved sparsity, ...), an object.
    pub metrics: Json,
    pub timing: Timing,
    pub provenance: Provenance,
    /// Transient artifacts were removed by the retention policy; the record still counts for
    /// the stages that already consumed them.
    #[serde(default)]
    pub evicted: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UpstreamRef {
    pub kind: String,
    pub key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InputRef {
    pub role: String,
    pub fingerprint: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Artifact {
    /// Path relative to the entry's `artifacts/` directory.
    pub name: String,
    pub size: u64,
    pub sha256: String,
    /// Big intermediates (pruned weights) that the retention policy may drop once every stage
    /// reading them is done.
    pub transient: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Timing {
    /// Unix seconds.
    pub started: f64,
    pub finished: f64,
    /// Seconds of the stage's own work.
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Provenance {
    pub device: String,
    pub host: String,
    pub orchestrate_version: String,
    pub git_revision: String,
    pub libraries: BTreeMap<String, String>,
}

impl Record {
    /// A metric as f64, if present and numeric.
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics.get(name).and_then(Json::as_f64)
    }
}
