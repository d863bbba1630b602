//! Resumable training: a training stage saves its whole state — every tensor that changes
//! (weights, optimiser moments, masks, momentum model, queues) plus a JSON cursor (step, epoch,
//! running statistics) — into its key's scratch folder ([`Cache::scratch_dir`]), and a rerun
//! after a kill, a crash or a cluster requeue continues from the last save instead of step 0.
//!
//! Invariants: a save is atomic (tensors written and synced under a fresh name, then the small
//! `checkpoint.json` naming them renamed into place), so a kill during a save leaves the previous
//! checkpoint intact; a resumed run computes what an uninterrupted run computes, because stages
//! derive every random draw from (seed, step) and restore every tensor bit for bit. An unreadable
//! checkpoint is ignored (the stage starts over and says so), never trusted.

use super::StageError;
use crate::cache::Cache;
use crate::plan::JobSpec;
use crate::train::AdamW;
use crate::util::fsx;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tch::{Device, Tensor};

const INDEX: &str = "checkpoint.json";

#[derive(Serialize, Deserialize)]
struct Index {
    /// Steps completed when the state was saved.
    step: u64,
    /// The safetensors file holding the tensors, beside the index.
    tensors: String,
    cursor: Json,
}

/// A saved state: the steps completed, the stage's cursor and its tensors by name.
pub struct Saved {
    pub step: u64,
    pub cursor: Json,
    pub tensors: HashMap<String, Tensor>,
}

impl Saved {
    /// Copies the saved values into `live` (same names, shapes and dtypes) in place.
    pub fn restore(&self, live: &[(String, Tensor)]) -> Result<(), StageError> {
        let _g = tch::no_grad_guard();
        for (name, t) in live {
            let saved = self.tensors.get(name).ok_or_else(|| {
                StageError::Failed(format!("the checkpoint has no tensor `{name}`"))
            })?;
            if saved.size() != t.size() {
                return Err(StageError::Failed(format!(
                    "the checkpoint's `{name}` is {:?}, the model's {:?}",
                    saved.size(),
                    t.size()
                )));
            }
            t.shallow_clone()
                .copy_(&saved.to_device(t.device()).to_kind(t.kind()));
        }
        Ok(())
    }

    /// A saved tensor by name, on `device`.
    pub fn tensor(&self, name: &str, device: Device) -> Result<Tensor, StageError> {
        self.tensors
            .get(name)
            .map(|t| t.to_device(device))
            .ok_or_else(|| StageError::Failed(format!("the checkpoint has no tensor `{name}`")))
    }
}

/// Saves a stage's state every `checkpoint_minutes` (the job's; 0 = after every step) and reads
/// the last one back.
pub struct Checkpoints {
    dir: PathBuf,
    interval: Duration,
    last: Instant,
    /// Why a checkpoint found at start could not be used, for the stage's record.
    pub discarded: Option<String>,
}

impl Checkpoints {
    pub fn new(cache: &Cache, job: &JobSpec) -> Self {
        Self::at(cache.scratch_dir(&job.key), job.checkpoint_minutes)
    }

    fn at(dir: PathBuf, minutes: u64) -> Self {
        Checkpoints {
            dir,
            interval: Duration::from_secs(minutes * 60),
            last: Instant::now(),
            discarded: None,
        }
    }

    /// The last saved state, if one is there and readable (tensors on the CPU).
    pub fn resume(&mut self) -> Option<Saved> {
        let path = self.dir.join(INDEX);
        let bytes = std::fs::read(&path).ok()?;
        let read = || -> Result<Saved, String> {
            let index: Index = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
            let file = self.dir.join(&index.tensors);
            let tensors = Tensor::read_safetensors(&file)
                .map_err(|e| format!("{}: {e}", file.display()))?
                .into_iter()
                .collect();
            Ok(Saved {
                step: index.step,
                cursor: index.cursor,
                tensors,
            })
        };
        match read() {
            Ok(saved) => Some(saved),
            Err(why) => {
                self.discarded = Some(format!(
                    "checkpoint {} unreadable ({why}); started over",
                    path.display()
                ));
                None
            }
        }
    }

    /// Whether a save is due (the interval has passed since the last save or the start).
    pub fn due(&self) -> bool {
        self.last.elapsed() >= self.interval
    }

    /// Saves the state after `step` completed steps, replacing the previous one.
    pub fn save(
        &mut self,
        step: u64,
        cursor: Json,
        tensors: &[(String, Tensor)],
    ) -> Result<(), StageError> {
        let io = |path: &std::path::Path, e: std::io::Error| {
            StageError::Failed(format!("cannot write checkpoint {}: {e}", path.display()))
        };
        std::fs::create_dir_all(&self.dir).map_err(|e| io(&self.dir, e))?;
        let name = format!("state.{step}.{}.safetensors", fsx::unique_suffix());
        let file = self.dir.join(&name);
        let cpu: Vec<(String, Tensor)> = tensors
            .iter()
            .map(|(n, t)| (n.clone(), t.detach().to_device(Device::Cpu).contiguous()))
            .collect();
        Tensor::write_safetensors(&cpu, &file)
            .map_err(|e| StageError::Failed(format!("cannot write {}: {e}", file.display())))?;
        std::fs::File::open(&file)
            .and_then(|f| f.sync_all())
            .map_err(|e| io(&file, e))?;
        let index = Index {
            step,
            tensors: name.clone(),
            cursor,
        };
        let path = self.dir.join(INDEX);
        fsx::write_atomic(
            &path,
            &serde_json::to_vec(&index).expect("a checkpoint index serialises"),
        )
        .map_err(|e| io(&path, e))?;
        // Earlier states are unreachable now.
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.filter_map(Result::ok) {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with("state.") && n != name {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        self.last = Instant::now();
        Ok(())
    }
}

/// Trained tensors by name plus the optimiser's moments: a plain training loop's whole state
/// (with the step, which the checkpoint keeps).
pub fn with_optimizer(params: &[(String, Tensor)], opt: &AdamW) -> Vec<(String, Tensor)> {
    params
        .iter()
        .map(|(n, t)| (n.clone(), t.shallow_clone()))
        .chain(opt.state())
        .collect()
}

/// Test hook (feature `test-stages`): slows every training step by `ORCHESTRATE_TEST_STEP_MS`
/// so a test can kill a stage mid-run.
pub fn test_delay() {
    #[cfg(feature = "test-stages")]
    if let Some(ms) = std::env::var("ORCHESTRATE_TEST_STEP_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        std::thread::sleep(Duration::from_millis(ms));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn saves_replace_each_other_and_a_corrupt_one_is_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let mut c = Checkpoints::at(tmp.path().join("k"), 0);
        assert!(c.resume().is_none() && c.discarded.is_none());
        assert!(c.due());
        let w = Tensor::from_slice(&[1.5f32, -2.0]);
        let ids = Tensor::from_slice(&[7i64, -100]);
        c.save(3, json!({"a": 1}), &[("w".into(), w.shallow_clone())])
            .unwrap();
        c.save(
            5,
            json!({"a": 2}),
            &[("w".into(), &w * 2.0), ("ids".into(), ids.shallow_clone())],
        )
        .unwrap();
        let states = std::fs::read_dir(tmp.path().join("k"))
            .unwrap()
            .filter(|e| {
                let e = e.as_ref().unwrap();
                e.file_name().to_string_lossy().starts_with("state.")
            })
            .count();
        assert_eq!(states, 1, "earlier states are removed");
        let saved = c.resume().unwrap();
        assert_eq!((saved.step, saved.cursor["a"].as_i64()), (5, Some(2)));
        let live = Tensor::zeros([2], (tch::Kind::Float, Device::Cpu));
        saved
            .restore(&[("w".into(), live.shallow_clone())])
            .unwrap();
        assert!(live.equal(&(&w * 2.0)));
        assert!(saved.tensor("ids", Device::Cpu).unwrap().equal(&ids));
        // A size mismatch is an error, never a silent partial restore.
        let wrong = Tensor::zeros([3], (tch::Kind::Float, Device::Cpu));
        assert!(saved.restore(&[("w".into(), wrong)]).is_err());

        // A truncated tensor file: ignored, and the reason kept for the record.
        for e in std::fs::read_dir(tmp.path().join("k")).unwrap() {
            let path = e.unwrap().path();
            if path.to_string_lossy().ends_with(".safetensors") {
                std::fs::write(&path, b"{").unwrap();
            }
        }
        let mut c = Checkpoints::at(tmp.path().join("k"), 10);
        assert!(c.resume().is_none());
        assert!(c.discarded.as_deref().unwrap().contains("started over"));
        assert!(!c.due(), "ten minutes have not passed");
    }
}
