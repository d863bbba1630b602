//! The bridge: one stage process computes one node. It reads the [`JobSpec`](crate::plan::JobSpec), calls into the ML
//! core, and publishes the result through the cache's commit protocol (artifacts, then the
//! record, then one atomic rename). Each stage kind's version lives in [`StageKind::version`].
//!
//! A stage runs in its own child process (`orchestrate stage <job.json>`), so a crash, an OOM
//! or a libtorch abort fails that node only.

pub mod calibrate;
pub mod checkpoint;
pub mod context;
pub mod efficiency;
pub mod evaluate;
pub mod finetune;
pub mod intrinsic_dimension;
pub mod methods;
pub mod prune;
pub mod retrain;
mod run;
#[cfg(feature = "test-stages")]
pub mod simulated;

pub use run::{Published, provenance, read_job, run};

use crate::cache::CacheError;
use crate::plan::StageKind;
use serde_json::Value as Json;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("cannot read job spec {path}: {reason}")]
    BadJob { path: PathBuf, reason: String },
    #[error(
        "upstream {kind} entry {key} is not usable ({why}); re-run `orchestrate run` to recompute it"
    )]
    Upstream {
        kind: StageKind,
        key: String,
        why: String,
    },
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error("pruning failed: {0}")]
    Prune(#[from] crate::prune::PruneError),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("{0}")]
    Failed(String),
}

/// What a stage implementation hands back: its metrics and which artifacts are transient.
pub struct StageOutput {
    pub metrics: Json,
    pub transient: Vec<&'static str>,
}
