//! Prune stage: loads the point's model (and its calibration pairs), runs the method over the
//! chosen towers, and stores masks (+ surviving weights for methods that update them), achieved
//! sparsity per layer, per tower and overall, and timings. SLS stores the vision depth it chose
//! and the silhouette of every block its scan reached.

use super::context::{self, calibration_dir};
use super::{StageError, StageOutput, calibrate};
use crate::analysis::tsne;
use crate::cache::{Cache, EntryBuilder};
use crate::model::Clip;
use crate::plan::JobSpec;
use crate::prune::{
    self, Calibration, Method, Outcome, Pattern, Tower, artifact, depth, slide, sparsegpt,
};
use serde_json::{Value as Json, json};
use std::collections::BTreeMap;
use tch::{Kind, Tensor};

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

/// The method and towers of a prune job's `method` + `params`.
pub fn method(job: &JobSpec) -> Result<(Method, Vec<Tower>), StageError> {
    let p = &job.params["params"];
    let f = |k: &str, d: f64| p[k].as_f64().unwrap_or(d);
    let u = |k: &str, d: u64| p[k].as_u64().unwrap_or(d);
    let sg = sparsegpt::Settings {
        blocksize: u("blocksize", 128) as i64,
        percdamp: f("percdamp", 0.01),
    };
    let slide = slide::Settings {
        sparsegpt: sg,
        epochs: u("epochs", 5) as usize,
        lr: f("lr", 1e-5),
        weight_decay: f("weight_decay", 0.01),
        threshold: f("threshold", 0.01),
    };
    let kind = job.params["method"].as_str().unwrap_or("");
    let m = match kind {
        "magnitude" => Method::Magnitude,
        "wanda" => Method::Wanda,
        "sparsegpt" => Method::SparseGpt(sg),
        "slide" => Method::Slide(slide),
        "slide-progressive" => Method::SlideProgressive(slide),
        other => {
            return Err(StageError::Failed(format!(
                "unknown pruning method `{other}`"
            )));
        }
    };
    let towers = Tower::parse_set(p["towers"].as_str().unwrap_or("both"))
        .ok_or_else(|| StageError::Failed(format!("bad `towers` value {}", p["towers"])))?;
    Ok((m, towers))
}

pub fn run(
    job: &JobSpec,
    cache: &Cache,
    builder: &EntryBuilder,
) -> Result<StageOutput, StageError> {
    let device = context::device(job)?;
    if job.params["method"].as_str() == Some("sls") {
        return sls(job, cache, builder, device);
    }
    let sparsity = job.params["sparsity"].as_str().unwrap_or("");
    let pattern = parse_pattern(sparsity)
        .ok_or_else(|| StageError::Failed(format!("bad sparsity `{sparsity}`")))?;
    let (method, towers) = method(job)?;
    let model = context::load_model(job, cache, device)?;
    let calib = match calibration(job, cache, &model)? {
        Some((pairs, pixels)) => {
            let tokens = context::tokenizer(job)?.encode(&pairs.captions, device)?;
            Some(Calibration { pixels, tokens })
        }
        None => None,
    };
    let outcome = prune::prune(&model, calib.as_ref(), method, pattern, &towers)
        .map_err(|e| StageError::Failed(format!("pruning failed: {e}")))?;
    artifact::write(&model, &outcome, &builder.artifacts_dir())?;
    Ok(StageOutput {
        metrics: metrics(&outcome, pattern, method),
        transient: vec![],
    })
}

/// The upstream calibration, if any: its pairs and their normalised pixels on the model's device.
fn calibration(
    job: &JobSpec,
    cache: &Cache,
    model: &Clip,
) -> Result<Option<(calibrate::Pairs, Tensor)>, StageError> {
    let Some(dir) = calibration_dir(job, cache) else {
        return Ok(None);
    };
    let (pairs, pixels) = calibrate::read(&dir)?;
    let pre = context::preprocessor(job, model)?;
    let bytes = Vec::<u8>::try_from(pixels.flatten(0, -1))?;
    let n = pairs.indices.len();
    let device = model.vs.device();
    let px = context::pixels(&pre.normalize(&bytes), n, &pre, device, Kind::Float);
    Ok(Some((pairs, px)))
}

/// SLS: the depth from the calibration images and their labels; the artifact is the depth.
fn sls(
    job: &JobSpec,
    cache: &Cache,
    builder: &EntryBuilder,
    device: tch::Device,
) -> Result<StageOutput, StageError> {
    let p = &job.params["params"];
    let settings = depth::Settings {
        alpha: p["alpha"].as_f64().unwrap_or(0.3),
        on_negative: match p["on_negative"].as_str() {
            Some("keep-all") => depth::OnNegative::KeepAll,
            _ => depth::OnNegative::Error,
        },
        tsne: tsne::Settings::default(),
    };
    let model = context::load_model(job, cache, device)?;
    let (pairs, px) = calibration(job, cache, &model)?
        .ok_or_else(|| StageError::Failed("the sls method needs a calibration upstream".into()))?;
    let n = pairs.indices.len();
    let clock = std::time::Instant::now();
    let selection = depth::select(&model, &px, &pairs.labels, settings).map_err(|e| {
        StageError::Failed(format!(
            "SLS depth selection failed: {e}; set `on_negative = \"keep-all\"` to keep every block instead"
        ))
    })?;
    artifact::write_depth(&builder.artifacts_dir(), selection.depth)?;
    let (kept, all) = (selection.depth, selection.blocks);
    // Every Linear of a dropped block is gone: the fraction of the vision tower's prunable
    // weights removed is the fraction of its blocks dropped.
    let layer_weights: i64 = model.vision.layers[0]
        .linears()
        .iter()
        .map(|(_, l)| l.ws.numel() as i64)
        .sum();
    let removed = (all - kept) as i64 * layer_weights;
    let total = all as i64 * layer_weights;
    Ok(StageOutput {
        metrics: json!({
            "depth": kept,
            "blocks": all,
            "alpha": settings.alpha,
            "silhouette": selection.scores.iter().map(|(b, s)| json!({"block": b, "score": s})).collect::<Vec<_>>(),
            "achieved_sparsity": removed as f64 / total as f64,
            "pruned_weights": removed,
            "prunable_weights": total,
            "tower_seconds": { "vision": clock.elapsed().as_secs_f64() },
            "samples": n,
        }),
        transient: vec![],
    })
}

/// Achieved sparsity (pruned entries over the six Linear weights) per layer, tower and overall,
/// timings, and Slide-CLIP's distillation epochs.
fn metrics(outcome: &Outcome, pattern: Pattern, method: Method) -> Json {
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
    let blocksize = match method {
        Method::SparseGpt(s) => Some(s.blocksize),
        Method::Slide(s) | Method::SlideProgressive(s) => Some(s.sparsegpt.blocksize),
        _ => None,
    }
    .map(|b| sparsegpt::effective_blocksize(b, pattern));
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
        "deviations": "text padding masked (Decision 1); n:m block size rounded to a multiple of m (Decision 2); early stop on the true epoch mean (Decision 3); seeded calibration sampling (Decision 4)",
    })
}
