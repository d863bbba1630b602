//! Prune stage: loads the point's model (and its calibration pairs when the method reads them),
//! runs the registered method ([`super::methods`]), and stores the artifact the method declares
//! — with `artifact.json` naming its kind, so applying it never guesses — plus its metrics:
//! achieved sparsity per layer, tower and overall, timings, and the documented deviations that
//! apply to this point.

use super::context::{self, calibration_dir};
use super::{StageError, StageOutput, calibrate, methods};
use crate::cache::{Cache, EntryBuilder, Lookup};
use crate::manifest::schema::MethodInput;
use crate::manifest::schema::Towers;
use crate::model::{Clip, Tower};
use crate::plan::{JobSpec, StageKind};
use crate::prune::structured::{self, LayerUnits, Structured};
use crate::prune::{
    Calibration, Outcome, Pattern, PruneError, artifact, depth, fisher, over_towers, sparsegpt,
};
use serde_json::{Value as Json, json};
use std::collections::BTreeMap;
use tch::{Kind, Tensor};

/// What a method works on: the job, the loaded model, and its calibration when it reads one.
pub struct Pruning<'a> {
    pub job: &'a JobSpec,
    /// The cache, whose scratch folder holds a training method's checkpoints.
    pub cache: &'a Cache,
    pub model: Clip,
    calibration: Option<(calibrate::Pairs, Calibration)>,
}

impl Pruning<'_> {
    /// The calibration pairs as the model takes them.
    pub fn calibration(&self) -> Result<&Calibration, StageError> {
        self.calibration
            .as_ref()
            .map(|(_, c)| c)
            .ok_or_else(|| StageError::Failed("this method needs a calibration upstream".into()))
    }

    /// The calibration images' class labels.
    pub fn labels(&self) -> Result<&[i64], StageError> {
        self.calibration
            .as_ref()
            .map(|(p, _)| p.labels.as_slice())
            .ok_or_else(|| StageError::Failed("this method needs a calibration upstream".into()))
    }

    /// Prunes the towers a `towers` parameter names at the point's pattern, one tower at a time
    /// (timed, pattern checked first): `per_tower` gets the model, the tower and the pattern, and
    /// adds what it pruned to the outcome.
    pub fn masks_over_towers(
        &self,
        set: Towers,
        mut per_tower: impl FnMut(&Clip, Tower, Pattern, &mut Outcome) -> Result<(), PruneError>,
    ) -> Result<Pruned, StageError> {
        let pattern = self.pattern()?;
        let model = &self.model;
        let outcome = over_towers(model, &context::towers(set), pattern, |tower, out| {
            per_tower(model, tower, pattern, out)
        })?;
        Ok(Pruned::masks(outcome, pattern))
    }

    /// The dense model's intrinsic dimension per pruned Linear, `(module, ID)` in the measured
    /// order (vision layers first), from the upstream per-Linear measurement.
    pub fn linear_intrinsic_dimensions(&self) -> Result<Vec<(String, f64)>, StageError> {
        let up = self
            .job
            .upstream
            .iter()
            .find(|u| u.kind == StageKind::IntrinsicDimension)
            .ok_or_else(|| {
                StageError::Failed("this method needs the dense model's per-Linear intrinsic dimension upstream; re-plan the manifest".into())
            })?;
        let record = match self.cache.lookup(&up.key, false) {
            Lookup::Done(r) | Lookup::Evicted(r) => r,
            other => {
                return Err(StageError::Upstream {
                    kind: up.kind,
                    key: up.key.clone(),
                    why: other.describe(),
                });
            }
        };
        let mut out = Vec::new();
        for tower in record.metrics["towers"].as_array().into_iter().flatten() {
            for layer in tower["layers"].as_array().into_iter().flatten() {
                match (layer["module"].as_str(), layer["dimension"].as_f64()) {
                    (Some(m), Some(d)) if layer["linear"].is_string() => {
                        out.push((m.to_string(), d))
                    }
                    _ => {
                        return Err(StageError::Failed(format!(
                            "upstream intrinsic-dimension entry {} is not a per-Linear measurement",
                            up.key
                        )));
                    }
                }
            }
        }
        Ok(out)
    }

    /// The grid's sparsity as a fraction (structured methods: of the MACs removed).
    pub fn fraction(&self) -> Result<f64, StageError> {
        match self.pattern()? {
            Pattern::Unstructured(f) => Ok(f),
            Pattern::NM { .. } => Err(StageError::Failed(
                "this method reads `sparsity` as a fraction, not an n:m pattern".into(),
            )),
        }
    }

    /// The grid's sparsity as a weight pattern: `"0.5"` or `"2:4"`.
    pub fn pattern(&self) -> Result<Pattern, StageError> {
        let s = self.job.params["sparsity"].as_str().unwrap_or_default();
        parse_pattern(s).ok_or_else(|| StageError::Failed(format!("bad sparsity `{s}`")))
    }
}

/// What a method produced, by the artifact kind it declares.
pub enum Pruned {
    Masks {
        outcome: Outcome,
        pattern: Pattern,
        /// SparseGPT's requested block size, for methods that have one.
        blocksize: Option<i64>,
        /// Method-specific documented deviations that apply.
        deviations: Vec<&'static str>,
        /// A method that trains: its record (steps, loss curve, masking events, ...).
        training: Option<Json>,
    },
    Depth {
        selection: depth::Selection,
        alpha: f64,
    },
    /// Heads and neurons kept per tower, with their scales.
    Structured {
        towers: Vec<StructuredTower>,
        /// How a head with pruned dimensions scales its attention.
        attention_scale: structured::AttentionScale,
        /// Full-size weights trained while searching (UPop), replacing the base model's before
        /// slicing.
        trained: Option<Vec<(String, Tensor)>>,
        /// Method-level facts for the metrics (sample counts, ...).
        extra: Json,
    },
}

/// One structurally pruned tower: the masks the method found (written to
/// `masks.<tower>.safetensors` under their names: Fisher's `head_mask`/`neuron_mask` in the ETH
/// layout, UPop's ζ), the kept units they give, and the method's record of how they were found.
pub struct StructuredTower {
    pub tower: Tower,
    pub masks: Vec<(String, Tensor)>,
    pub units: Vec<LayerUnits>,
    pub record: Json,
}

impl StructuredTower {
    /// Fisher's masks (`[L, H]`, `[L, I]`: 0 = pruned, else the unit's scale): builds the kept
    /// units and checks the physically smaller model against the masked full-size model on
    /// `samples` (spec §6e).
    pub fn checked(
        model: &Clip,
        tower: Tower,
        heads: Tensor,
        neurons: Tensor,
        samples: &fisher::Samples,
        mut record: Json,
    ) -> Result<Self, StageError> {
        let units = fisher::units(tower, &heads, &neurons)?;
        let small = structured::apply(
            model,
            &Structured {
                layers: units.clone(),
                ..Structured::default()
            },
        )?;
        let masked = fisher::masked_embeddings(model, tower, samples, &heads, &neurons);
        let physical = fisher::embeddings(&small, tower, samples);
        check_physical(tower, &masked, &physical, &mut record)?;
        Ok(StructuredTower {
            tower,
            masks: vec![
                (fisher::stored::HEAD_MASK.into(), heads),
                (fisher::stored::NEURON_MASK.into(), neurons),
            ],
            units,
            record,
        })
    }
}

/// Compares the physically smaller model's embeddings with the masked model's (spec §6e) and
/// records the deviation; beyond the tolerance the stage fails (it would be a bug).
pub fn check_physical(
    tower: Tower,
    masked: &Tensor,
    physical: &Tensor,
    record: &mut Json,
) -> Result<(), StageError> {
    let (deviation, tolerance) = fisher::deviation(masked, physical);
    let n = masked.size()[0];
    record["physical_check"] = json!({
        "samples": n, "max_abs_deviation": deviation, "tolerance": tolerance,
    });
    if deviation.is_nan() || deviation > tolerance {
        return Err(StageError::Failed(format!(
            "the physically pruned {} tower differs from the masked model by {deviation:e} on {n} samples (tolerance {tolerance:e}): a bug in orchestrate, please report it with this log",
            tower.name()
        )));
    }
    Ok(())
}

impl Pruned {
    pub fn masks(outcome: Outcome, pattern: Pattern) -> Self {
        Pruned::Masks {
            outcome,
            pattern,
            blocksize: None,
            deviations: vec![],
            training: None,
        }
    }

    pub fn with_training(mut self, record: Json) -> Self {
        if let Pruned::Masks { training, .. } = &mut self {
            *training = Some(record);
        }
        self
    }

    pub fn with_blocksize(mut self, b: i64) -> Self {
        if let Pruned::Masks { blocksize, .. } = &mut self {
            *blocksize = Some(b);
        }
        self
    }

    pub fn with_deviation(mut self, d: &'static str) -> Self {
        if let Pruned::Masks { deviations, .. } = &mut self {
            deviations.push(d);
        }
        self
    }
}

/// `"0.5"` or `"2:4"`.
pub fn parse_pattern(s: &str) -> Option<Pattern> {
    match s.split_once(':') {
        Some((n, m)) => Some(Pattern::NM {
            n: n.parse().ok()?,
            m: m.parse().ok()?,
        }),
        None => s.parse().ok().map(Pattern::Unstructured),
    }
}

pub fn run(
    job: &JobSpec,
    cache: &Cache,
    builder: &EntryBuilder,
) -> Result<StageOutput, StageError> {
    let device = context::device(job)?;
    let name = job.params["method"].as_str().unwrap_or_default();
    let method = methods::find(name).ok_or_else(|| {
        StageError::Failed(format!(
            "unknown pruning method `{name}`; re-plan the manifest with this version of orchestrate"
        ))
    })?;
    let model = context::load_model(job, cache, device)?;
    let calibration = if method.spec.needs(MethodInput::Calibration) {
        Some(calibration(job, cache, &model)?)
    } else {
        None
    };
    let calibrated = calibration.is_some();
    let p = Pruning {
        job,
        cache,
        model,
        calibration,
    };
    let clock = std::time::Instant::now();
    let pruned = (method.prune)(&p, &job.params["params"])?;
    let dir = builder.artifacts_dir();
    let written = match &pruned {
        Pruned::Masks { .. } => artifact::Kind::Masks,
        Pruned::Depth { .. } => artifact::Kind::Depth,
        Pruned::Structured { .. } => artifact::Kind::Structured,
    };
    if written != method.artifact {
        return Err(StageError::Failed(format!(
            "method `{name}` declares {:?} artifacts but produced {written:?} (a bug in orchestrate)",
            method.artifact
        )));
    }
    let metrics = match pruned {
        Pruned::Masks {
            outcome,
            pattern,
            blocksize,
            deviations: own,
            training,
        } => {
            artifact::write(&p.model, &outcome, &dir)?;
            let mut metrics = mask_metrics(&outcome, pattern, blocksize);
            let towers: Vec<Tower> = outcome.seconds.iter().map(|(t, _)| *t).collect();
            metrics["deviations"] = json!(deviations(
                calibrated,
                &towers,
                blocksize.is_some_and(|b| sparsegpt::effective_blocksize(b, pattern) != b),
                &own,
                calibration_drawn(job, cache),
            ));
            if let Some(t) = training {
                metrics["training"] = t;
            }
            metrics
        }
        Pruned::Depth { selection, alpha } => {
            artifact::write_depth(&dir, selection.depth)?;
            depth_metrics(&p, &selection, alpha, clock.elapsed().as_secs_f64())
        }
        Pruned::Structured {
            towers,
            attention_scale,
            trained,
            extra,
        } => {
            let layers = towers
                .iter()
                .flat_map(|t| t.units.iter().cloned())
                .collect();
            artifact::write_structured(
                &dir,
                &Structured {
                    layers,
                    attention_scale,
                },
            )?;
            if let Some(trained) = &trained {
                crate::model::weights::write_file(&dir.join(artifact::WEIGHTS), trained)?;
            }
            for t in &towers {
                let file = dir.join(format!("masks.{}.safetensors", t.tower.name()));
                crate::model::weights::write_file(&file, &t.masks)?;
            }
            structured_metrics(&towers, extra, clock.elapsed().as_secs_f64())
        }
    };
    Ok(StageOutput {
        metrics,
        // The surviving values (half a model and more); the 1-bit masks stay.
        transient: vec![artifact::WEIGHTS],
    })
}

/// Whether the upstream calibration drew its samples by seed (rather than an explicit list).
fn calibration_drawn(job: &JobSpec, cache: &Cache) -> bool {
    let calibrate = job.upstream.iter().find(|u| u.kind == StageKind::Calibrate);
    calibrate.is_some_and(|u| match cache.lookup(&u.key, false) {
        Lookup::Done(r) => r.params.get("indices").is_none_or(Json::is_null),
        _ => false,
    })
}

/// The project's documented departures from the reference code (spec pruning-unstructured.md
/// §13) that apply to this point, and only those.
fn deviations(
    calibrated: bool,
    towers: &[Tower],
    blocksize_rounded: bool,
    method_specific: &[&'static str],
    drawn: bool,
) -> Vec<&'static str> {
    let mut out = Vec::new();
    if calibrated && towers.contains(&Tower::Text) {
        out.push("text padding masked (Decision 1)");
    }
    if blocksize_rounded {
        out.push("n:m block size rounded to a multiple of m (Decision 2)");
    }
    out.extend_from_slice(method_specific);
    if drawn {
        out.push("seeded calibration sampling (Decision 4)");
    }
    out
}

/// The upstream calibration: its pairs, normalised pixels and tokenised captions on the model's
/// device.
fn calibration(
    job: &JobSpec,
    cache: &Cache,
    model: &Clip,
) -> Result<(calibrate::Pairs, Calibration), StageError> {
    let dir = calibration_dir(job, cache)
        .ok_or_else(|| StageError::Failed("this method needs a calibration upstream".into()))?;
    let (pairs, pixels) = calibrate::read(&dir)?;
    let pre = context::preprocessor(job, model)?;
    let bytes = Vec::<u8>::try_from(pixels.flatten(0, -1))?;
    let n = pairs.indices.len();
    let device = model.vs.device();
    let pixels = context::pixels(&pre.normalize(&bytes), n, &pre, device, Kind::Float);
    let tokens = context::tokenizer(job)?.encode(&pairs.captions, device)?;
    Ok((pairs, Calibration { pixels, tokens }))
}

/// SLS: the depth, the silhouette of every block the scan reached, and the fraction of the
/// vision tower's prunable weights dropped with its blocks.
fn depth_metrics(p: &Pruning, selection: &depth::Selection, alpha: f64, seconds: f64) -> Json {
    let (kept, all) = (selection.depth, selection.blocks);
    // Every Linear of a dropped block is gone: the fraction of the vision tower's prunable
    // weights removed is the fraction of its blocks dropped.
    let layer_weights: i64 = p.model.vision.layers[0]
        .linears()
        .iter()
        .map(|(_, l)| l.ws.numel() as i64)
        .sum();
    let removed = (all - kept) as i64 * layer_weights;
    let total = all as i64 * layer_weights;
    json!({
        "depth": kept,
        "blocks": all,
        "alpha": alpha,
        "silhouette": selection.scores.iter().map(|(b, s)| json!({"block": b, "score": s})).collect::<Vec<_>>(),
        "achieved_sparsity": removed as f64 / total as f64,
        "pruned_weights": removed,
        "prunable_weights": total,
        "tower_seconds": { "vision": seconds },
        "samples": p.labels().map_or(0, <[i64]>::len),
    })
}

/// Structured prunes: per tower the method's record; overall, the fraction of the pruned
/// towers' encoder MACs removed (the grid's sparsity for these methods).
fn structured_metrics(towers: &[StructuredTower], extra: Json, seconds: f64) -> Json {
    let sum = |key: &str| -> i64 { towers.iter().filter_map(|t| t.record[key].as_i64()).sum() };
    let (kept, full) = (sum("kept_macs"), sum("full_macs"));
    let mut metrics = json!({
        "achieved_sparsity": 1.0 - kept as f64 / full.max(1) as f64,
        "kept_macs": kept,
        "full_macs": full,
        "towers": towers.iter().map(|t| (t.tower.name().to_string(), t.record.clone())).collect::<serde_json::Map<_, _>>(),
        "tower_seconds": towers.iter().map(|t| (t.tower.name().to_string(), t.record["seconds"].clone())).collect::<serde_json::Map<_, _>>(),
        "seconds": seconds,
    });
    if let (Json::Object(m), Json::Object(e)) = (&mut metrics, extra) {
        m.extend(e);
    }
    metrics
}

/// Achieved sparsity (pruned entries over the six Linear weights) per layer, tower and overall,
/// timings, and Slide-CLIP's distillation epochs.
fn mask_metrics(outcome: &Outcome, pattern: Pattern, blocksize: Option<i64>) -> Json {
    // (tower, layer) → (pruned, total)
    let mut layers: BTreeMap<(String, usize), (i64, i64)> = BTreeMap::new();
    for m in &outcome.matrices {
        let (tower, rest) = m
            .name
            .split_once("_model.encoder.layers.")
            .unwrap_or(("?", "0."));
        let layer: usize = rest
            .split('.')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let e = layers.entry((tower.to_string(), layer)).or_default();
        e.0 += m.mask.sum(Kind::Int64).int64_value(&[]);
        e.1 += m.mask.numel() as i64;
    }
    let mut towers: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for ((tower, _), (p, t)) in &layers {
        let e = towers.entry(tower.as_str()).or_default();
        e.0 += p;
        e.1 += t;
    }
    let (pruned, total) = towers.values().fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    let ratio = |p: i64, t: i64| p as f64 / t.max(1) as f64;
    let blocksize = blocksize.map(|b| sparsegpt::effective_blocksize(b, pattern));
    json!({
        "achieved_sparsity": ratio(pruned, total),
        "pruned_weights": pruned,
        "prunable_weights": total,
        "towers": towers.iter().map(|(t, (p, n))| (t.to_string(), json!({
            "achieved_sparsity": ratio(*p, *n), "pruned_weights": p, "prunable_weights": n,
        }))).collect::<serde_json::Map<_, _>>(),
        "layers": layers.iter().map(|((t, l), (p, n))| json!({
            "tower": t, "layer": l, "achieved_sparsity": ratio(*p, *n), "pruned_weights": p,
        })).collect::<Vec<_>>(),
        "effective_blocksize": blocksize,
        "tower_seconds": outcome.seconds.iter().map(|(t, s)| (t.name().to_string(), json!(s))).collect::<serde_json::Map<_, _>>(),
        "distillation": outcome.epochs.iter().map(|e| json!({
            "tower": e.tower.name(), "pass": e.pass, "layer": e.layer, "epochs": e.epochs, "last_loss": e.last_loss,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_deviations_that_apply_are_recorded() {
        let both = [Tower::Text, Tower::Vision];
        assert!(deviations(false, &both, false, &[], false).is_empty());
        assert_eq!(
            deviations(true, &[Tower::Vision], false, &[], true),
            ["seeded calibration sampling (Decision 4)"]
        );
        assert_eq!(
            deviations(true, &both, false, &[], false),
            ["text padding masked (Decision 1)"]
        );
        assert_eq!(
            deviations(
                true,
                &[Tower::Vision],
                true,
                &["early stop on the true epoch mean (Decision 3)"],
                false
            ),
            [
                "n:m block size rounded to a multiple of m (Decision 2)",
                "early stop on the true epoch mean (Decision 3)"
            ]
        );
        // 4:8 rounds the block size 250 down to 248; unstructured leaves it.
        let nm = Pattern::NM { n: 4, m: 8 };
        assert_ne!(sparsegpt::effective_blocksize(250, nm), 250);
        assert_eq!(
            sparsegpt::effective_blocksize(250, Pattern::Unstructured(0.5)),
            250
        );
    }
}
