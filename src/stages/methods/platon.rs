//! PLATON + intrinsic dimension (spec structured-and-analysis.md §5, decisions §6f): unstructured
//! pruning during fine-tuning. Every parameter trains (AdamW) on the task loss — the zero-shot
//! cross-entropy on a classification dataset, the contrastive loss with momentum model and queue
//! on a retrieval dataset (the reference's Flickr30K script) — and after each optimiser step the
//! masked tensors (weights **and** biases of every layer's `out_proj`, `fc1`, `fc2`, both towers:
//! the reference's CLIP set) get their importance updated and, on the cubic schedule, the weights
//! under the global threshold zeroed. `use_id` multiplies each score by the dense model's
//! intrinsic dimension of its Linear's output (upstream per-Linear ID stage, matched by name).
//!
//! The grid's `sparsity` is the fraction of masked entries removed at the end (1 − final
//! ratio): the last step zeroes exactly round(N·sparsity) of them (lowest scores, ties by
//! position), so the achieved sparsity is the target — a documented deviation from the
//! reference, whose last event zeroes those under the threshold (and, with its floor, two more
//! per tensor). `reference_loop` reproduces the ID-pruning scripts' per-epoch score reset and
//! skipped optimiser step on each epoch's last step (§5.5). The state checkpoints and resumes.

use super::training::{self, TrainingData};
use super::{Method, decode};
use crate::manifest::params::{float, int, positive};
use crate::manifest::schema::{
    DefaultValue, MethodInput, MethodSpec, ParamType, PointCheck, Problem, SparsityAxis,
    TOWER_CHOICES, Towers, TypedParams,
};
use crate::manifest::types::Sparsity;
use crate::model::{Tower, layerwise};
use crate::prune::artifact::Kind;
use crate::prune::platon::{self, Importance, Pruner, Schedule, Scores, Smoothing};
use crate::prune::{Outcome, Pattern, PrunedMatrix};
use crate::stages::StageError;
use crate::stages::checkpoint::{self, Checkpoints};
use crate::stages::context;
use crate::stages::prune::{Pruned, Pruning};
use crate::train::AdamW;
use crate::train::contrastive::Contrastive;
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};
use std::time::Instant;
use tch::Tensor;

crate::params! {
    pub struct Params {
        /// which towers' out_proj, fc1 and fc2 are masked (every parameter trains either way)
        towers: Towers = (TOWER_CHOICES, DefaultValue::Str("both")),
        /// what ranks the weights: PLATON's Ī·Ū, the current |θ·∇θ| (Taylor) or |θ|
        importance: Importance = (ParamType::Choice(&["platon", "taylor", "magnitude"]), DefaultValue::Str("platon")),
        /// multiply each score by the dense model's intrinsic dimension of its Linear's output
        use_id: bool = (ParamType::Bool, DefaultValue::Bool(false)),
        /// samples of the per-Linear intrinsic dimension (`use_id`)
        id_samples: usize = (int(3, 1_000_000), DefaultValue::Int(2000)),
        /// representation of the per-Linear intrinsic dimension (`use_id`): the whole sequence (reference), the CLS/EOS token, or the token mean
        id_representation: String = (ParamType::Choice(&["sequence", "token", "mean"]), DefaultValue::Str("sequence")),
        /// fine-tuning epochs over the training split
        epochs: usize = (int(1, 100_000), DefaultValue::Int(5)),
        /// samples per micro-batch
        batch_size: usize = (int(1, 1 << 16), DefaultValue::Int(32)),
        /// micro-batches per optimiser step
        accumulation: usize = (int(1, 1 << 16), DefaultValue::Int(1)),
        /// AdamW learning rate (constant)
        lr: f64 = (positive(0.0, 10.0), DefaultValue::Float(1e-5)),
        /// AdamW weight decay
        weight_decay: f64 = (float(0.0, 10.0), DefaultValue::Float(0.2)),
        /// Ī's smoothing β1
        beta1: f64 = (float(0.0, 1.0), DefaultValue::Float(0.85)),
        /// Ū's smoothing β2 (1: Ī alone; 2: running variance)
        beta2: f64 = (float(0.0, 2.0), DefaultValue::Float(0.95)),
        /// the score window ΔT and masking interval, in steps
        window: u64 = (int(1, 1 << 30), DefaultValue::Int(10)),
        /// the schedule's unit; default: one epoch's steps
        warmup_steps: Option<u64> = (int(1, 1 << 40), DefaultValue::Derived),
        /// steps (in warmup_steps) before masking starts
        initial_warmup: f64 = (float(0.0, 1e6), DefaultValue::Float(0.0)),
        /// steps (in warmup_steps) at the final ratio, masking every step (the reference's CLIP script: 2)
        final_warmup: f64 = (float(0.0, 1e6), DefaultValue::Float(2.0)),
        /// the remaining ratio before masking starts
        initial_threshold: f64 = (positive(0.0, 1.0), DefaultValue::Float(1.0)),
        /// per-tensor floor (the ID-pruning reference: zero below the larger of the threshold and the tensor's 3rd-smallest score); off: the PLATON rule
        floor: bool = (ParamType::Bool, DefaultValue::Bool(true)),
        /// the ID-pruning scripts' loop: scores reset every epoch, optimiser step skipped on each epoch's last step, masking also at epoch ends
        reference_loop: bool = (ParamType::Bool, DefaultValue::Bool(true)),
        /// distillation weight of the momentum model's targets (retrieval)
        alpha: f64 = (float(0.0, 1.0), DefaultValue::Float(0.4)),
        /// momentum of the momentum model (retrieval)
        momentum: f64 = (float(0.0, 1.0), DefaultValue::Float(0.995)),
        /// feature queue length, a multiple of the global batch (retrieval)
        queue_size: usize = (int(1, 1 << 30), DefaultValue::Int(57_600)),
    }
}

pub const METHOD: Method = Method {
    spec: MethodSpec {
        name: "platon",
        doc: "PLATON: unstructured pruning of out_proj, fc1, fc2 (weights and biases) while fine-tuning, by smoothed sensitivity × uncertainty (or Taylor, magnitude), optionally weighted by each Linear's intrinsic dimension (`use_id`)",
        params: Params::SPECS,
        inputs: &[
            MethodInput::TrainingSplit,
            MethodInput::DenseIntrinsicDimension,
        ],
        sparsity: SparsityAxis::Weights,
        check: Some(check),
    },
    artifact: Kind::Masks,
    prune,
};

fn check(p: &PointCheck) -> Result<(), Problem> {
    match p.sparsity {
        Sparsity::Fraction(s) if s > 0.0 && s < 1.0 => Ok(()),
        _ => Err(Problem {
            message: "PLATON prunes a fraction of the masked weights, not an n:m pattern".into(),
            hint:
                "give fractions in (0, 1) in [grid] sparsity for this method (the reference: 0.8)"
                    .into(),
        }),
    }
}

/// The masked tensors of a tower in module order: per layer `out_proj`, `fc1`, `fc2`, weight then
/// bias (the order of the reference's ID vector, one ID per Linear).
fn masked_names(model: &crate::model::Clip, tower: Tower) -> Vec<(String, String)> {
    let mut out = vec![];
    for i in 0..layerwise::layers(model, tower).len() {
        for linear in crate::analysis::representation::LINEARS {
            let module = format!("{}encoder.layers.{i}.{linear}", tower.prefix());
            for p in ["weight", "bias"] {
                out.push((format!("{module}.{p}"), module.clone()));
            }
        }
    }
    out
}

#[derive(Serialize, Deserialize, Default)]
struct Progress {
    losses: Vec<f64>,
    /// Per masking event: step, remaining ratio, threshold, entries zeroed.
    events: Vec<platon::Event>,
}

fn prune(p: &Pruning, params: &Json) -> Result<Pruned, StageError> {
    let params: Params = decode("platon", params)?;
    let job = p.job;
    let model = &p.model;
    let sparsity = match p.pattern()? {
        Pattern::Unstructured(s) => s,
        Pattern::NM { .. } => {
            return Err(StageError::Failed(
                "method `platon`: n:m patterns are not supported".into(),
            ));
        }
    };
    let seed = job.params["seed"].as_u64().unwrap_or(0);
    tch::manual_seed(seed as i64);
    let data = TrainingData::open(p)?;
    let (micro, accumulation) = (params.batch_size, params.accumulation);
    let global = micro * accumulation;
    let per_epoch = data.steps_per_epoch(global, "platon")?;
    let total = (per_epoch * params.epochs) as u64;

    // The masked tensors (vision first) and, with `use_id`, each one's ID by its Linear's name.
    let mut towers = context::towers(params.towers);
    towers.sort_by_key(|t| *t != Tower::Vision);
    let masked: Vec<(String, String)> = towers
        .iter()
        .flat_map(|&t| masked_names(model, t))
        .collect();
    let ids: Option<Vec<f64>> = if params.use_id {
        let measured = p.linear_intrinsic_dimensions()?;
        let by_name: std::collections::HashMap<&str, f64> =
            measured.iter().map(|(m, d)| (m.as_str(), *d)).collect();
        Some(
            masked
                .iter()
                .map(|(_, module)| {
                    by_name.get(module.as_str()).copied().ok_or_else(|| {
                        StageError::Failed(format!(
                            "the intrinsic-dimension vector has no entry for {module} (it lists {} modules); re-plan the manifest",
                            measured.len()
                        ))
                    })
                })
                .collect::<Result<_, _>>()?,
        )
    } else {
        None
    };
    let vars = model.vs.variables();
    let masked_tensors: Vec<Tensor> = masked
        .iter()
        .map(|(n, _)| vars[n].shallow_clone())
        .collect();

    let (named, tensors) = training::all_parameters(model);
    let mut opt = AdamW::new(&tensors, params.lr, params.weight_decay);
    let mut contrastive = data
        .retrieval
        .then(|| Contrastive::new(model, params.queue_size as i64, params.momentum));
    let smoothing = Smoothing {
        beta1: params.beta1,
        beta2: params.beta2,
        window: params.window,
    };
    let unit = params.warmup_steps.unwrap_or(per_epoch as u64) as f64;
    let schedule = Schedule {
        initial: params.initial_threshold,
        last: 1.0 - sparsity,
        initial_warmup: (params.initial_warmup * unit) as u64,
        final_warmup: (params.final_warmup * unit) as u64,
        total,
        window: params.window,
        epoch_length: params.reference_loop.then_some(per_epoch as u64),
    };
    let mut pruner = Pruner {
        importance: params.importance,
        smoothing,
        schedule,
        floor: params.floor,
        ids: ids.clone(),
        sparsity,
        scores: masked_tensors.iter().map(Scores::zeros_like).collect(),
    };

    let state = |opt: &AdamW,
                 contrastive: &Option<Contrastive>,
                 scores: &[Scores]|
     -> Vec<(String, Tensor)> {
        let mut out = checkpoint::with_optimizer(&named, opt);
        for (i, s) in scores.iter().enumerate() {
            out.push((format!("platon.ibar.{i}"), s.ibar.shallow_clone()));
            out.push((format!("platon.ubar.{i}"), s.ubar.shallow_clone()));
            out.push((format!("platon.ibuf.{i}"), s.ibuf.shallow_clone()));
        }
        if let Some(c) = contrastive {
            out.extend(c.state());
        }
        out
    };
    let mut checkpoints = Checkpoints::new(p.cache, job);
    let mut progress = Progress::default();
    let mut start = 0;
    if let Some(saved) = checkpoints.resume() {
        saved.restore(&state(&opt, &contrastive, &pruner.scores))?;
        opt.set_steps(saved.step as i32);
        start = saved.step;
        progress = serde_json::from_value(saved.cursor.clone())
            .map_err(|e| StageError::Failed(format!("unreadable PLATON checkpoint: {e}")))?;
    }
    let clock = Instant::now();
    let mut order = vec![];
    let mut order_epoch = usize::MAX;
    let mut last_masks: Vec<Tensor> = vec![];
    for step in start..total {
        // The reference counts steps from 1.
        let t = step + 1;
        let (epoch, it) = (step as usize / per_epoch, step as usize % per_epoch);
        if order_epoch != epoch {
            order = data.epoch_order(seed, epoch);
            order_epoch = epoch;
        }
        // The reference builds a new pruner every epoch: its states restart from 0.
        if params.reference_loop && it == 0 && epoch > 0 {
            pruner.reset(&masked_tensors);
        }
        let alpha = training::alpha_at(params.alpha, epoch, it, per_epoch);
        let batch = &order[it * global..(it + 1) * global];
        let loss = data.step(
            model,
            batch,
            micro,
            &mut contrastive,
            (None, None),
            alpha,
            &|| None,
        )?;
        // The reference skips the optimiser step on each epoch's last step (scores still update).
        let skip = params.reference_loop && it + 1 == per_epoch;
        if !skip {
            opt.step(&tensors);
        }
        let masked_now = pruner.step(&masked_tensors, t)?;
        AdamW::zero_grad(&tensors);
        if let Some((masks, event)) = masked_now {
            progress.events.push(event);
            last_masks = masks;
        }
        progress.losses.push(loss);
        checkpoint::test_delay();
        if step + 1 < total && checkpoints.due() {
            let cursor = serde_json::to_value(&progress).expect("progress serialises");
            checkpoints.save(step + 1, cursor, &state(&opt, &contrastive, &pruner.scores))?;
        }
    }
    let seconds = clock.elapsed().as_secs_f64();
    training::frozen(&tensors);
    if last_masks.len() != masked_tensors.len() {
        return Err(StageError::Failed(
            "method `platon`: the run ended without its final masking (resumed after it?); clear the point's scratch folder and run again".into(),
        ));
    }
    let masked_names: std::collections::HashSet<&str> =
        masked.iter().map(|(n, _)| n.as_str()).collect();
    let outcome = Outcome {
        matrices: masked
            .iter()
            .zip(last_masks)
            .map(|((name, _), mask)| PrunedMatrix {
                name: name.clone(),
                mask,
                updated: true,
            })
            .collect(),
        // Everything else trained too.
        changed: named
            .iter()
            .map(|(n, _)| n.clone())
            .filter(|n| !masked_names.contains(n.as_str()))
            .collect(),
        epochs: vec![],
        seconds: towers.iter().map(|&t| (t, seconds)).collect(),
    };
    let stride = (progress.losses.len() / 100).max(1);
    Ok(
        Pruned::masks(outcome, Pattern::Unstructured(sparsity)).with_training(json!({
            "steps": total,
            "steps_per_epoch": per_epoch,
            "first_loss": progress.losses.first(),
            "final_loss": progress.losses.last(),
            "loss_curve": progress.losses.iter().step_by(stride).collect::<Vec<_>>(),
            "masking_events": progress.events,
            "use_id": params.use_id,
            "intrinsic_dimensions": ids,
            "resumed_from_step": start,
            "checkpoint_discarded": checkpoints.discarded,
        })),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declaration_decodes() {
        crate::manifest::params::check_declaration::<Params>().unwrap();
    }

    /// The masked tensors follow the ID vector's layout (§1.4, §5.4): vision layers first, per
    /// layer out_proj, fc1, fc2, each weight then bias sharing its Linear's entry — the same
    /// module names, in the same order, as the per-Linear intrinsic-dimension stage measures.
    #[test]
    fn masked_set_follows_the_id_layout() {
        let mut config = crate::model::create::preset("tiny").unwrap();
        config.text.vocab_size = 64;
        let model = crate::model::Clip::new(&config, tch::Device::Cpu);
        let names = masked_names(&model, Tower::Vision);
        assert_eq!(names.len(), 3 * 3 * 2);
        assert_eq!(
            names[..4],
            [
                (
                    "vision_model.encoder.layers.0.self_attn.out_proj.weight".to_string(),
                    "vision_model.encoder.layers.0.self_attn.out_proj".to_string()
                ),
                (
                    "vision_model.encoder.layers.0.self_attn.out_proj.bias".to_string(),
                    "vision_model.encoder.layers.0.self_attn.out_proj".to_string()
                ),
                (
                    "vision_model.encoder.layers.0.mlp.fc1.weight".to_string(),
                    "vision_model.encoder.layers.0.mlp.fc1".to_string()
                ),
                (
                    "vision_model.encoder.layers.0.mlp.fc1.bias".to_string(),
                    "vision_model.encoder.layers.0.mlp.fc1".to_string()
                ),
            ]
        );
        let vars = model.vs.variables();
        assert!(names.iter().all(|(n, _)| vars.contains_key(n)));
    }
}
