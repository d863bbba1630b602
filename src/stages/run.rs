//! One stage process: read the job spec, compute the node through its stage kind, publish the
//! entry through the cache's commit protocol, and record where and by what it was made.

#[cfg(feature = "test-stages")]
use super::simulated;
use super::{StageError, StageOutput};
use super::{calibrate, evaluate, finetune, intrinsic_dimension, prune, retrain};
use crate::cache::record::{InputRef, Provenance, RECORD_FORMAT, Record, Timing, UpstreamRef};
use crate::cache::{Cache, EntryBuilder, Lookup};
use crate::plan::{JobSpec, StageKind};
use std::collections::BTreeMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

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

/// A published entry, and whether this process computed it.
pub struct Published {
    pub record: Record,
    /// False when another process had published it (this one waited for the lock).
    pub computed: bool,
}

/// Computes the job's node and publishes its cache entry, holding the key's lock throughout:
/// whatever started this process (the local backend, a cluster, a user), each key is computed
/// once. An existing complete entry is returned as is; an untrustworthy one is replaced.
pub fn run(job: &JobSpec) -> Result<Published, StageError> {
    let cache = Cache::new(&job.results_dir);
    let _lock = cache.lock(&job.key)?;
    match cache.lookup(&job.key, job.verify) {
        // Complete, and computed from the upstream entries there now (another run published
        // it while this one waited for the lock).
        Lookup::Done(r) if !predates_upstream(&cache, job, &r) => {
            return Ok(Published {
                record: *r,
                computed: false,
            });
        }
        Lookup::Missing => {}
        // Corrupt, dropped by retention, or computed before an upstream entry was replaced
        // (a corrupt one recomputed): computed again.
        _ => cache.discard(&job.key)?,
    }
    // What this stage reads is checked against its checksums first: corrupt bytes are never
    // consumed. A corrupt entry is removed (when no process holds it), so the next run
    // recomputes it and everything computed from it.
    for up in &job.upstream {
        match cache.lookup(&up.key, true) {
            Lookup::Done(_) => {}
            other => {
                let mut why = other.describe();
                if let Lookup::Corrupt(_) = other
                    && let Ok(Some(_held)) = cache.try_lock(&up.key)
                    && cache.discard(&up.key).is_ok()
                {
                    why.push_str("; it was removed");
                }
                return Err(StageError::Upstream {
                    kind: up.kind,
                    key: up.key.clone(),
                    why,
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
        checksum: None,
    };
    Ok(Published {
        record: builder.commit(record, &output.transient)?,
        computed: true,
    })
}

/// Whether `record` started before one of the job's upstream entries was published: it was
/// computed from an earlier (corrupt, since replaced) version of that entry.
fn predates_upstream(cache: &Cache, job: &JobSpec, record: &Record) -> bool {
    job.upstream
        .iter()
        .any(|u| match cache.lookup(&u.key, false) {
            Lookup::Done(up) | Lookup::Evicted(up) => up.timing.finished > record.timing.started,
            _ => false,
        })
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
        host: crate::util::runtime::hostname(),
        orchestrate_version: env!("CARGO_PKG_VERSION").to_string(),
        git_revision: env!("ORCHESTRATE_GIT_REVISION").to_string(),
        libraries,
    }
}
