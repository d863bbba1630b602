//! Calibration stage (spec pruning-unstructured.md §3, Decision 4): `N` distinct training images
//! drawn without replacement from a permutation seeded by the point's seed (or the manifest's
//! explicit index list), each paired with its class's first template, resized and cropped once
//! and stored for every method that calibrates at this (model, dataset, size, seed).
//!
//! Artifacts: `calibration.safetensors` (`pixels`: 8-bit `[N, 3, H, W]` before normalisation —
//! a quarter of the floats, and normalising later is exact) and `calibration.json` (`indices`
//! in calibration order, `labels`, `captions`, `split`).

use super::context::{self, Dataset};
use super::{StageError, StageOutput};
use crate::cache::{Cache, EntryBuilder};
use crate::model::{ClipConfig, weights};
use crate::plan::JobSpec;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::Path;
use tch::Tensor;

pub const PIXELS: &str = "calibration.safetensors";
pub const PAIRS: &str = "calibration.json";

/// The stored pairs (`calibration.json`).
#[derive(Debug, Serialize, Deserialize)]
pub struct Pairs {
    pub split: String,
    pub indices: Vec<usize>,
    pub labels: Vec<i64>,
    pub captions: Vec<String>,
}

/// A calibrate job's parameters, as the planner writes them: the first `size` listed training
/// images, or `size` drawn by `seed`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    /// Read through [`Dataset::from_job`].
    #[serde(rename = "dataset")]
    _dataset: serde::de::IgnoredAny,
    size: usize,
    seed: Option<u64>,
    indices: Option<Vec<usize>>,
}

/// `size` distinct indices of `0..len`, in the order of a permutation seeded by `seed`.
pub fn draw(len: usize, size: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    order.truncate(size);
    order
}

pub fn run(
    job: &JobSpec,
    _cache: &Cache,
    builder: &EntryBuilder,
) -> Result<StageOutput, StageError> {
    context::device(job)?;
    let params: Params =
        serde_json::from_value(job.params.clone()).map_err(|e| StageError::BadJob {
            path: job.results_dir.clone(),
            reason: format!("calibrate job {}: {e}", job.key),
        })?;
    let dataset = Dataset::from_job(job)?;
    let (mut set, prompts) = dataset.open_labels(true)?;
    let split = dataset.split_name(true);
    let indices = match (params.indices, params.seed) {
        (Some(indices), _) => {
            if let Some(bad) = indices.iter().find(|&&i| i >= set.len()) {
                return Err(StageError::Failed(format!(
                    "{}: calibration index {bad} is out of range (split `{split}` has {} images)",
                    set.origin.display(),
                    set.len()
                )));
            }
            indices
        }
        (None, Some(seed)) => {
            let size = params.size;
            if size > set.len() {
                return Err(StageError::Failed(format!(
                    "{}: calibration size {size} exceeds the {} images of split `{split}`; lower `calibration_size`",
                    set.origin.display(),
                    set.len()
                )));
            }
            draw(set.len(), size, seed)
        }
        (None, None) => {
            return Err(StageError::BadJob {
                path: job.results_dir.clone(),
                reason: format!("calibrate job {} names neither indices nor a seed", job.key),
            });
        }
    };
    set.load(&indices)?;
    let base = context::base_dir(job)?;
    let config =
        ClipConfig::read(&base.join("config.json")).map_err(crate::model::ModelError::from)?;
    let pre = crate::data::Preprocessor::for_model(base, config.vision.image_size as u32)?;
    let pixels = pre.batch_u8(&indices, |i| set.image(i))?;
    let labels: Vec<i64> = indices.iter().map(|&i| set.label(i)).collect();
    let captions: Vec<String> = labels
        .iter()
        .map(|&l| prompts.caption(l as usize))
        .collect();
    let dir = builder.artifacts_dir();
    std::fs::create_dir_all(&dir)
        .map_err(|e| StageError::Failed(format!("{}: {e}", dir.display())))?;
    let (h, w) = (pre.crop.0 as i64, pre.crop.1 as i64);
    let tensor = Tensor::from_slice(&pixels).view([indices.len() as i64, 3, h, w]);
    weights::write_file(&dir.join(PIXELS), &[("pixels".to_string(), tensor)])?;
    let classes = {
        let mut l = labels.clone();
        l.sort_unstable();
        l.dedup();
        l.len()
    };
    let pairs = Pairs {
        split: split.clone(),
        indices,
        labels,
        captions,
    };
    crate::util::fsx::write_atomic(
        &dir.join(PAIRS),
        serde_json::to_string(&pairs)
            .expect("pairs serialise")
            .as_bytes(),
    )
    .map_err(|e| StageError::Failed(format!("{}: {e}", dir.join(PAIRS).display())))?;
    Ok(StageOutput {
        metrics: json!({
            "size": pairs.indices.len(),
            "split": split,
            "split_images": set.len(),
            "classes_covered": classes,
        }),
        transient: vec![],
    })
}

/// Reads a calibration entry's artifacts: the pairs and the 8-bit pixels.
pub fn read(dir: &Path) -> Result<(Pairs, Tensor), StageError> {
    let text = std::fs::read_to_string(dir.join(PAIRS))
        .map_err(|e| StageError::Failed(format!("{}: {e}", dir.join(PAIRS).display())))?;
    let pairs: Pairs = serde_json::from_str(&text)
        .map_err(|e| StageError::Failed(format!("{}: {e}", dir.join(PAIRS).display())))?;
    let pixels = Tensor::read_safetensors(dir.join(PIXELS))?
        .into_iter()
        .find(|(n, _)| n == "pixels")
        .map(|(_, t)| t)
        .ok_or_else(|| {
            StageError::Failed(format!("{}: no `pixels`", dir.join(PIXELS).display()))
        })?;
    Ok((pairs, pixels))
}

#[cfg(test)]
mod tests {
    use super::draw;

    #[test]
    fn draws_are_distinct_seeded_and_cover_the_split_at_full_size() {
        let a = draw(1000, 250, 7);
        let mut s = a.clone();
        s.sort_unstable();
        s.dedup();
        assert_eq!(s.len(), 250);
        assert_eq!(a, draw(1000, 250, 7));
        assert_ne!(a, draw(1000, 250, 8));
        // A larger draw extends a smaller one with the same seed (same permutation).
        assert_eq!(&draw(1000, 500, 7)[..250], &a[..]);
        let mut all = draw(40, 40, 1);
        all.sort_unstable();
        assert_eq!(all, (0..40).collect::<Vec<_>>());
    }
}
