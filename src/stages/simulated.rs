//! Test-only stages (feature `test-stages`, never in the shipped binary): a node whose model is
//! a manifest `test = true` model does deterministic pseudo-work instead of ML, so the planner,
//! cache and executor can be tested end to end without libtorch models.
//!
//! Environment knobs (timing and faults only; they never change keys):
//! `ORCHESTRATE_TEST_WORK_MS` (sleep per stage, default 20), `ORCHESTRATE_TEST_FAIL` and
//! `ORCHESTRATE_TEST_CRASH` (a substring of node labels that fail cleanly / abort the process),
//! `ORCHESTRATE_TEST_COMPUTE_LOG` (a file that gets one line `<key> <label>` per computation),
//! `ORCHESTRATE_TEST_SLOW` (a label substring whose stages take ten minutes) and
//! `ORCHESTRATE_TEST_HOG` (a label substring whose stages hold 1 GiB for ten seconds): a cluster
//! backend's time and memory limits.

use super::{StageError, StageOutput};
use crate::cache::{Cache, EntryBuilder};
use crate::plan::{JobSpec, StageKind};
use crate::util::hash;
use serde_json::json;
use std::io::Write;

pub fn is_simulated(job: &JobSpec) -> bool {
    job.inputs
        .iter()
        .any(|i| i.fingerprint.starts_with("test-model:"))
}

pub fn run(
    job: &JobSpec,
    cache: &Cache,
    builder: &EntryBuilder,
) -> Result<StageOutput, StageError> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if let Some(log) = env("ORCHESTRATE_TEST_COMPUTE_LOG") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| StageError::Failed(e.to_string()))?;
        writeln!(f, "{} {}", job.key, job.label).map_err(|e| StageError::Failed(e.to_string()))?;
    }
    let ms: u64 = env("ORCHESTRATE_TEST_WORK_MS")
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    std::thread::sleep(std::time::Duration::from_millis(ms));
    if env("ORCHESTRATE_TEST_SLOW").is_some_and(|s| job.label.contains(&s)) {
        std::thread::sleep(std::time::Duration::from_secs(600));
    }
    if env("ORCHESTRATE_TEST_HOG").is_some_and(|s| job.label.contains(&s)) {
        // Touched, so it is resident.
        let hog = vec![1u8; 1 << 30];
        std::thread::sleep(std::time::Duration::from_secs(10));
        std::hint::black_box(hog);
    }
    if env("ORCHESTRATE_TEST_CRASH").is_some_and(|s| job.label.contains(&s)) {
        eprintln!("simulated crash in {}", job.label);
        std::process::abort();
    }
    if env("ORCHESTRATE_TEST_FAIL").is_some_and(|s| job.label.contains(&s)) {
        return Err(StageError::Failed(format!(
            "simulated failure in {}",
            job.label
        )));
    }
    // The output depends on the upstream outputs, so a stage that reads a wrong or missing
    // upstream artifact produces a different (or no) result.
    let mut material = job.key.clone();
    for up in &job.upstream {
        let path = cache.artifacts_dir(&up.key).join("output.txt");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| StageError::Failed(format!("cannot read {}: {e}", path.display())))?;
        material.push_str(&text);
    }
    let digest = hash::sha256_hex(material.as_bytes());
    let dir = builder.artifacts_dir();
    let write = |name: &str, bytes: &[u8]| {
        std::fs::write(dir.join(name), bytes).map_err(|e| StageError::Failed(e.to_string()))
    };
    write("output.txt", digest.as_bytes())?;
    let unit = |i: usize| u32::from_str_radix(&digest[i..i + 4], 16).unwrap_or(0) as f64 / 65535.0;
    let (metrics, transient) = match job.kind {
        StageKind::Prune => {
            write("weights.bin", &vec![7u8; 64 * 1024])?;
            let sparsity = job.params["sparsity"].as_str().unwrap_or("0");
            let fraction = match sparsity.split_once(':') {
                Some((n, m)) => n.parse::<f64>().unwrap_or(0.0) / m.parse::<f64>().unwrap_or(1.0),
                None => sparsity.parse().unwrap_or(0.0),
            };
            (
                json!({ "achieved_sparsity": fraction }),
                vec!["weights.bin"],
            )
        }
        StageKind::Evaluate => {
            let top1 = 0.1 + 0.8 * unit(0);
            (
                json!({ "top1": top1, "top5": top1 + (1.0 - top1) * unit(4), "n_eval": 500 }),
                vec![],
            )
        }
        StageKind::IntrinsicDimension => {
            (json!({ "vision_id_mean": 5.0 + 20.0 * unit(0) }), vec![])
        }
        StageKind::Retrain => (
            json!({ "best_top1": unit(0), "last_top1": unit(4) }),
            vec![],
        ),
        StageKind::Calibrate | StageKind::Finetune => (json!({}), vec![]),
    };
    Ok(StageOutput { metrics, transient })
}
