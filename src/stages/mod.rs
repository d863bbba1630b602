//! The bridge: one stage process computes one node. It reads the [`JobSpec`], calls into the ML
//! core, and publishes the result through the cache's commit protocol (artifacts, then the
//! record, then one atomic rename). Each stage kind's version lives in [`StageKind::version`].
//!
//! A stage runs in its own child process (`orchestrate stage <job.json>`), so a crash, an OOM
//! or a libtorch abort fails that node only.

pub mod calibrate;
pub mod context;
pub mod evaluate;
pub mod finetune;
pub mod intrinsic_dimension;
pub mod prune;
pub mod retrain;
#[cfg(feature = "test-stages")]
pub mod simulated;

use crate::cache::record::{InputRef, Provenance, RECORD_FORMAT, Record, Timing, UpstreamRef};
use crate::cache::{Cache, CacheError, EntryBuilder, Lookup};
use crate::plan::{JobSpec, StageKind};
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

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

/// Reads a job spec file.
pub fn read_job(path: &std::path::Path) -> Result<JobSpec, StageError> {
    let bytes = std::fs::read(path).map_err(|e| StageError::BadJob {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| StageError::BadJob {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Computes the job's node and publishes its cache entry. A no-op when the entry already exists.
pub fn run(job: &JobSpec) -> Result<Record, StageError> {
    let cache = Cache::new(&job.results_dir);
    if let Lookup::Done(r) = cache.lookup(&job.key, false) {
        return Ok(*r);
    }
    for up in &job.upstream {
        match cache.lookup(&up.key, false) {
            Lookup::Done(_) => {}
            other => {
                return Err(StageError::Upstream {
                    kind: up.kind,
                    key: up.key.clone(),
                    why: other.describe(),
                });
            }
        }
    }
    let started = unix_now();
    let clock = Instant::now();
    let builder = cache.begin(&job.key)?;
    let output = dispatch(job, &cache, &builder)?;
    let record = Record {
        format: RECORD_FORMAT,
        key: job.key.clone(),
        kind: job.kind.name().to_string(),
        version: job.kind.version(),
        label: job.label.clone(),
        params: job.params.clone(),
        upstream: job
            .upstream
            .iter()
            .map(|u| UpstreamRef {
                kind: u.kind.name().to_string(),
                key: u.key.clone(),
            })
            .collect(),
        inputs: job
            .inputs
            .iter()
            .map(|i| InputRef {
                role: i.role.clone(),
                fingerprint: i.fingerprint.clone(),
            })
            .collect(),
        artifacts: vec![],
        metrics: output.metrics,
        timing: Timing {
            started,
            finished: unix_now(),
            seconds: clock.elapsed().as_secs_f64(),
        },
        provenance: provenance(&job.assigned_device),
        evicted: false,
    };
    Ok(builder.commit(record, &output.transient)?)
}

fn dispatch(
    job: &JobSpec,
    cache: &Cache,
    builder: &EntryBuilder,
) -> Result<StageOutput, StageError> {
    #[cfg(feature = "test-stages")]
    if simulated::is_simulated(job) {
        return simulated::run(job, cache, builder);
    }
    match job.kind {
        StageKind::Evaluate => evaluate::run(job, cache, builder),
        StageKind::Finetune => finetune::run(job, cache, builder),
        StageKind::Calibrate => calibrate::run(job, cache, builder),
        StageKind::Prune => prune::run(job, cache, builder),
        StageKind::IntrinsicDimension => intrinsic_dimension::run(job, cache, builder),
        StageKind::Retrain => retrain::run(job, cache, builder),
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Where, by what and with what a record was made.
pub fn provenance(device: &str) -> Provenance {
    let mut libraries = BTreeMap::new();
    for (name, version) in [
        ("tch", env!("ORCHESTRATE_TCH_VERSION")),
        ("libtorch", env!("ORCHESTRATE_LIBTORCH_VERSION")),
        ("polars", env!("ORCHESTRATE_POLARS_VERSION")),
    ] {
        libraries.insert(name.to_string(), version.to_string());
    }
    Provenance {
        device: device.to_string(),
        host: hostname(),
        orchestrate_version: env!("CARGO_PKG_VERSION").to_string(),
        git_revision: env!("ORCHESTRATE_GIT_REVISION").to_string(),
        libraries,
    }
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into the buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
