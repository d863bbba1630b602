//! UPop (spec structured-and-analysis.md §4, decisions §6e/6f): trainable ζ on both towers,
//! searched while the whole model trains (AdamW, constant lr), ranked on the progressive cosine
//! schedule, then compressed to a physically smaller model. The grid's `sparsity` is UPop's p,
//! the fraction of the weighted unit count removed.
//!
//! Task loss: on a retrieval dataset the reference's image–text contrastive loss with the
//! momentum model, the feature queue and the distillation ramp (§4.2); `accumulation`
//! micro-batches of `batch_size` make one step, as the reference's 8 GPUs × 32 do (§4.8: every
//! micro-batch against the same queue, gradients averaged, all features enqueued after the step).
//! On a classification dataset (a project extension) the cross-entropy of the zero-shot logits,
//! with the class embeddings recomputed every step through the (masked, training) text tower.
//!
//! The search checkpoints its whole state (weights, AdamW, ζ and their gradient sums, momentum
//! model, queue) into the key's scratch folder and resumes to the same bits after a kill. The
//! artifact holds the kept units and the trained full-size weights (which the retention policy
//! may drop once consumed).
//!
//! Deviations (documented): training images use the evaluation preprocessing (no random crop or
//! RandAugment); batches are drawn per epoch by the point's seed.

use super::training::{self, TrainingData};
use super::{Method, decode};
use crate::manifest::params::{float, int, positive};
use crate::manifest::schema::{
    DefaultValue, MethodInput, MethodSpec, ParamType, PointCheck, Problem, SparsityAxis,
    TOWER_CHOICES, Towers, TypedParams,
};
use crate::manifest::types::Sparsity;
use crate::model::{Clip, Tower};
use crate::prune::artifact::Kind;
use crate::prune::structured::{self, AttentionScale, Structured};
use crate::prune::upop::{self, TowerZeta};
use crate::stages::StageError;
use crate::stages::checkpoint::{self, Checkpoints};
use crate::stages::context;
use crate::stages::prune::{Pruned, Pruning, StructuredTower, check_physical};
use crate::train::AdamW;
use crate::train::contrastive::{Contrastive, text_features};
use crate::util::macs;
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};
use std::time::Instant;
use tch::nn::Module;
use tch::{Kind as DType, Tensor};

/// Which gradient ranks ζ (§4.3, §6f).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Gradient {
    /// The running sum of every step's gradient since the search began (the reference's
    /// default, non-AMP path).
    Accumulated,
    /// The current step's gradient only (the reference's `--amp` path).
    PerStep,
}

crate::params! {
    pub struct Params {
        /// which towers carry ζ (all parameters of both train either way)
        towers: Towers = (TOWER_CHOICES, DefaultValue::Str("both")),
        /// search epochs over the training split (the reference: Flickr30K 12 at 2×, 18 at 4×; COCO 6 / 9)
        epochs: usize = (int(1, 100_000), DefaultValue::Int(12)),
        /// global steps between ζ updates (the reference: 50 on Flickr30K, 200 on COCO); the last step always updates
        interval: u64 = (int(1, 1 << 40), DefaultValue::Int(50)),
        /// samples per micro-batch (the reference's per-GPU batch)
        batch_size: usize = (int(1, 1 << 16), DefaultValue::Int(32)),
        /// micro-batches per step (the reference's GPU count): global batch = batch_size × accumulation
        accumulation: usize = (int(1, 1 << 16), DefaultValue::Int(8)),
        /// AdamW learning rate (constant while searching)
        lr: f64 = (positive(0.0, 10.0), DefaultValue::Float(1e-5)),
        /// AdamW weight decay
        weight_decay: f64 = (float(0.0, 10.0), DefaultValue::Float(0.2)),
        /// L1 weight of the attention ζ (the reference's (22/15)·8e-3)
        w_sp_attn: f64 = (float(0.0, 1e6), DefaultValue::Float(22.0 / 15.0 * 8e-3)),
        /// L1 weight of the MLP ζ
        w_sp_mlp: f64 = (float(0.0, 1e6), DefaultValue::Float(2e-4)),
        /// the reference divides both L1 weights by its process count (8 in its scripts)
        world_size: usize = (int(1, 1 << 16), DefaultValue::Int(8)),
        /// ζ ranked on the accumulated gradient (reference) or the current step's (its AMP path)
        gradient: Gradient = (ParamType::Choice(&["accumulated", "per-step"]), DefaultValue::Str("accumulated")),
        /// distillation weight of the momentum model's targets, ramped over the first epoch (retrieval)
        alpha: f64 = (float(0.0, 1.0), DefaultValue::Float(0.4)),
        /// momentum of the momentum model (retrieval)
        momentum: f64 = (float(0.0, 1.0), DefaultValue::Float(0.995)),
        /// feature queue length, a multiple of the global batch (retrieval)
        queue_size: usize = (int(1, 1 << 30), DefaultValue::Int(57_600)),
        /// attention scale of heads with pruned dimensions: the unpruned one (matches the masked model) or 1/√kept (reference retraining)
        attn_scale: AttentionScale = (ParamType::Choice(&["original", "reduced"]), DefaultValue::Str("original")),
        /// samples on which the physically smaller model is checked against the masked one
        check_samples: usize = (int(1, 1 << 20), DefaultValue::Int(64)),
    }
}

pub const METHOD: Method = Method {
    spec: MethodSpec {
        name: "upop",
        doc: "UPop: trainable masks on head dimensions and MLP neurons of both towers, searched progressively while the model trains (sparsity = fraction of the weighted units removed); a physically smaller model",
        params: Params::SPECS,
        inputs: &[MethodInput::TrainingSplit],
        sparsity: SparsityAxis::UnitsRemoved,
        check: Some(check),
    },
    artifact: Kind::Structured,
    prune,
};

/// Plan-time: p in (0, 1), towers the method can mask, a queue that holds whole steps.
fn check(p: &PointCheck) -> Result<(), Problem> {
    let Sparsity::Fraction(sparsity) = p.sparsity else {
        return Err(Problem {
            message: "UPop reads `sparsity` as the fraction of weighted units removed, not an n:m pattern".into(),
            hint: "give fractions in [grid] sparsity for this method".into(),
        });
    };
    if !(sparsity > 0.0 && sparsity < 1.0) {
        return Err(Problem {
            message: format!("UPop's p must be between 0 and 1, not {sparsity}"),
            hint: "the paper's settings are 0.5 (2×) and 0.75 (4×)".into(),
        });
    }
    for tower in towers_of(p.params) {
        let shapes = match tower {
            Tower::Vision => p.model.vision.shapes(),
            Tower::Text => p.model.text.shapes(),
        };
        if shapes
            .iter()
            .any(|s| s.heads == 0 || s.intermediate_size == 0)
        {
            return Err(Problem {
                message: format!(
                    "the {} tower has a layer without heads or neurons, which UPop cannot mask",
                    tower.name()
                ),
                hint: "start from an unpruned model".into(),
            });
        }
    }
    let get = |k: &str, d: u64| p.params.get(k).and_then(Json::as_u64).unwrap_or(d);
    let global = get("batch_size", 32) * get("accumulation", 8);
    let queue = get("queue_size", 57_600);
    if p.retrieval && !queue.is_multiple_of(global) {
        return Err(Problem {
            message: format!(
                "queue_size {queue} is not a multiple of the global batch {global} (batch_size × accumulation)"
            ),
            hint: format!("e.g. queue_size = {}", (queue / global).max(1) * global),
        });
    }
    Ok(())
}

fn towers_of(params: &serde_json::Map<String, Json>) -> Vec<Tower> {
    match params.get("towers").and_then(Json::as_str) {
        Some("vision") => vec![Tower::Vision],
        Some("text") => vec![Tower::Text],
        _ => vec![Tower::Vision, Tower::Text],
    }
}

/// Where the search stands between steps: what a checkpoint's cursor holds besides tensors.
#[derive(Serialize, Deserialize, Default)]
struct Progress {
    losses: Vec<f64>,
    updates: Vec<Json>,
}

fn prune(p: &Pruning, params: &Json) -> Result<Pruned, StageError> {
    let params: Params = decode("upop", params)?;
    let job = p.job;
    let model = &p.model;
    let device = model.vs.device();
    let target = p.fraction()?;
    let seed = job.params["seed"].as_u64().unwrap_or(0);
    tch::manual_seed(seed as i64);
    let data = TrainingData::open(p)?;
    let retrieval = data.retrieval;
    let (micro, accumulation) = (params.batch_size, params.accumulation);
    let global = micro * accumulation;
    let per_epoch = data.steps_per_epoch(global, "upop")?;
    let total = (per_epoch * params.epochs) as u64;

    // ζ: vision first, then text (the ranking's order).
    let mut tower_list = towers_of(&serde_json::Map::new());
    tower_list.retain(|t| context::towers(params.towers).contains(t));
    let zetas: Vec<TowerZeta> = tower_list
        .iter()
        .map(|&t| TowerZeta::ones(model, t))
        .collect();
    let zeta_of = |t: Tower| zetas.iter().find(|z| z.tower == t);
    let sums: Vec<Tensor> = all_zeta(&zetas).iter().map(|z| z.zeros_like()).collect();

    // Everything the model holds trains (the reference's optimiser takes every non-ζ parameter).
    let (named, tensors) = training::all_parameters(model);
    let mut opt = AdamW::new(&tensors, params.lr, params.weight_decay);

    // The momentum model and the queue (retrieval only).
    let mut contrastive =
        retrieval.then(|| Contrastive::new(model, params.queue_size as i64, params.momentum));
    let state = |opt: &AdamW, contrastive: &Option<Contrastive>| -> Vec<(String, Tensor)> {
        let mut out = checkpoint::with_optimizer(&named, opt);
        for (i, z) in all_zeta(&zetas).iter().enumerate() {
            out.push((format!("upop.zeta.{i}"), z.shallow_clone()));
        }
        for (i, s) in sums.iter().enumerate() {
            out.push((format!("upop.gradient.{i}"), s.shallow_clone()));
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
        saved.restore(&state(&opt, &contrastive))?;
        opt.set_steps(saved.step as i32);
        start = saved.step;
        progress = serde_json::from_value(saved.cursor.clone())
            .map_err(|e| StageError::Failed(format!("unreadable UPop checkpoint: {e}")))?;
    }
    let clock = Instant::now();
    let mut order: Vec<usize> = vec![];
    let mut order_epoch = usize::MAX;
    let (w_attn, w_mlp) = (
        params.w_sp_attn / params.world_size as f64,
        params.w_sp_mlp / params.world_size as f64,
    );
    for step in start..total {
        let (epoch, it) = (step as usize / per_epoch, step as usize % per_epoch);
        if order_epoch != epoch {
            order = data.epoch_order(seed, epoch);
            order_epoch = epoch;
        }
        let alpha = training::alpha_at(params.alpha, epoch, it, per_epoch);
        let batch = &order[it * global..(it + 1) * global];
        let text_gates = zeta_of(Tower::Text).map(TowerZeta::gates);
        let vision_gates = zeta_of(Tower::Vision).map(TowerZeta::gates);
        let l1 = || {
            zetas
                .iter()
                .map(|z| {
                    let (a, m) = z.l1();
                    a * w_attn + m * w_mlp
                })
                .reduce(|a, b| a + b)
        };
        let step_loss = data.step(
            model,
            batch,
            micro,
            &mut contrastive,
            (vision_gates.as_deref(), text_gates.as_deref()),
            alpha,
            &l1,
        )?;
        opt.step(&tensors);
        AdamW::zero_grad(&tensors);
        tch::no_grad(|| {
            // ζ is outside the optimiser: its gradient is summed explicitly (§4.10).
            for (z, sum) in all_zeta(&zetas).iter().zip(&sums) {
                let mut g = z.grad();
                if g.defined() {
                    if params.gradient == Gradient::PerStep {
                        let _ = sum.shallow_clone().zero_();
                    }
                    let _ = sum.shallow_clone().g_add_(&g);
                    let _ = g.zero_();
                }
            }
        });
        if upop::update_due(step, params.interval, total) {
            let pi = upop::ratio(target, step, total);
            let update = apply_update(&zetas, &sums, target, pi);
            progress
                .updates
                .push(json!({ "step": step, "ratio": pi, "threshold": update }));
        }
        progress.losses.push(step_loss);
        checkpoint::test_delay();
        if step + 1 < total && checkpoints.due() {
            let cursor = serde_json::to_value(&progress).expect("progress serialises");
            checkpoints.save(step + 1, cursor, &state(&opt, &contrastive))?;
        }
    }
    let search_seconds = clock.elapsed().as_secs_f64();
    training::frozen(&tensors);

    // Compression: the kept units of the final ζ, checked against the masked model.
    let mut towers = Vec::new();
    let mut removed = 0.0;
    let (_, _, weighted) = upop::counts(&model.config, &tower_list);
    for z in &zetas {
        let units = z.units(model)?;
        let prune = Structured {
            layers: units.clone(),
            attention_scale: params.attn_scale,
        };
        let small = structured::apply(model, &prune)?;
        let mut record = tower_record(model, &small, z);
        removed += record["removed_weighted_units"].as_f64().unwrap_or(0.0);
        if params.attn_scale == AttentionScale::Original {
            let _g = tch::no_grad_guard();
            let (masked, physical) = match z.tower {
                Tower::Vision => {
                    let n = params.check_samples.min(data.samples.len());
                    let pixels = data.pixels(&(0..n).collect::<Vec<_>>())?;
                    (
                        model
                            .visual_projection
                            .forward(&model.vision.forward_gated(&pixels, Some(&z.gates()))),
                        small.image_features(&pixels),
                    )
                }
                Tower::Text => {
                    let tokens = match &data.prompts {
                        Some((tokens, _)) => tokens.narrow(0, params.check_samples as i64),
                        None => {
                            let captions: Vec<String> = data
                                .samples
                                .iter()
                                .take(params.check_samples)
                                .filter_map(|s| s.caption.clone())
                                .collect();
                            data.tokenizer.encode(&captions, device)?
                        }
                    };
                    (
                        text_features(model, &tokens, Some(&z.gates())),
                        small.text_features(&tokens),
                    )
                }
            };
            check_physical(z.tower, &masked, &physical, &mut record)?;
        } else {
            record["physical_check"] =
                json!("not applicable: attn_scale = reduced changes the attention of sliced heads");
        }
        let masks = vec![
            (
                "attention_zeta".to_string(),
                Tensor::stack(&z.dims, 0).detach(),
            ),
            (
                "mlp_zeta".to_string(),
                Tensor::stack(&z.neurons, 0).detach(),
            ),
        ];
        towers.push(StructuredTower {
            tower: z.tower,
            masks,
            units,
            record,
        });
    }
    let trained: Vec<(String, Tensor)> =
        named.iter().map(|(n, t)| (n.clone(), t.detach())).collect();
    let stride = (progress.losses.len() / 100).max(1);
    Ok(Pruned::Structured {
        towers,
        attention_scale: params.attn_scale,
        trained: Some(trained),
        extra: json!({
            "achieved_sparsity": removed / weighted,
            "target_units": weighted,
            "steps": total,
            "steps_per_epoch": per_epoch,
            "global_batch": global,
            "train_samples": data.samples.len(),
            "first_loss": progress.losses.first(),
            "final_loss": progress.losses.last(),
            "loss_curve": progress.losses.iter().step_by(stride).collect::<Vec<_>>(),
            "updates": progress.updates,
            "search_seconds": search_seconds,
            "resumed_from_step": start,
            "checkpoint_discarded": checkpoints.discarded,
        }),
    })
}

/// Every ζ tensor, tower by tower, attention before MLP.
fn all_zeta(zetas: &[TowerZeta]) -> Vec<Tensor> {
    zetas
        .iter()
        .flat_map(|z| z.dims.iter().chain(&z.neurons).map(Tensor::shallow_clone))
        .collect()
}

/// Ranks the gradient sums (§4.3) and writes the new ζ; returns the threshold.
fn apply_update(zetas: &[TowerZeta], sums: &[Tensor], p: f64, pi: f64) -> f64 {
    let to_vec = |t: &Tensor| {
        Vec::<f64>::try_from(t.to_kind(DType::Double).to_device(tch::Device::Cpu))
            .unwrap_or_default()
    };
    // The sums are laid out as `all_zeta`: per tower its attention modules, then its MLP ones.
    let mut attention = vec![];
    let mut mlp = vec![];
    let mut k = 0;
    for z in zetas {
        for _ in &z.dims {
            attention.push(to_vec(&sums[k]));
            k += 1;
        }
        for _ in &z.neurons {
            mlp.push(to_vec(&sums[k]));
            k += 1;
        }
    }
    let update = upop::rank(&attention, &mlp, p, pi);
    let _g = tch::no_grad_guard();
    let (mut a, mut m) = (update.attention.iter(), update.mlp.iter());
    for z in zetas {
        for t in &z.dims {
            let v = a.next().expect("one update per module");
            t.shallow_clone().copy_(
                &Tensor::from_slice(v)
                    .to_kind(DType::Float)
                    .to_device(t.device()),
            );
        }
        for t in &z.neurons {
            let v = m.next().expect("one update per module");
            t.shallow_clone().copy_(
                &Tensor::from_slice(v)
                    .to_kind(DType::Float)
                    .to_device(t.device()),
            );
        }
    }
    update.threshold
}

/// The tower's kept counts per layer, weighted units removed, and encoder MACs before and after.
fn tower_record(model: &Clip, small: &Clip, z: &TowerZeta) -> Json {
    let count = |v: &[Tensor]| -> Vec<i64> {
        v.iter()
            .map(|t| t.eq(1.0).sum(DType::Int64).int64_value(&[]))
            .collect()
    };
    let (dims, neurons) = (count(&z.dims), count(&z.neurons));
    let removed_dims: i64 =
        z.dims.iter().map(|t| t.numel() as i64).sum::<i64>() - dims.iter().sum::<i64>();
    let removed_neurons: i64 =
        z.neurons.iter().map(|t| t.numel() as i64).sum::<i64>() - neurons.iter().sum::<i64>();
    let macs = |c: &crate::util::clip_config::ClipConfig| -> i64 {
        let (tokens, d, shapes) = match z.tower {
            Tower::Vision => (c.vision.tokens(), c.vision.hidden_size, c.vision.shapes()),
            Tower::Text => (
                c.text.max_position_embeddings,
                c.text.hidden_size,
                c.text.shapes(),
            ),
        };
        shapes.iter().map(|s| macs::layer(tokens, d, s)).sum()
    };
    let (full, kept) = (macs(&model.config), macs(&small.config));
    json!({
        "head_dims_per_layer": dims,
        "neurons_per_layer": neurons,
        "removed_head_dims": removed_dims,
        "removed_neurons": removed_neurons,
        "removed_weighted_units": removed_dims as f64 * upop::ATTENTION_WEIGHT + removed_neurons as f64,
        "full_macs": full,
        "kept_macs": kept,
        "mac_fraction": kept as f64 / full.max(1) as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declaration_decodes() {
        crate::manifest::params::check_declaration::<Params>().unwrap();
    }

    #[test]
    fn plan_time_checks() {
        let config = crate::model::create::preset("vit-b32").unwrap();
        let params = serde_json::Map::new();
        let point = |sparsity, retrieval, params| PointCheck {
            model: &config,
            sparsity: Sparsity::Fraction(sparsity),
            params,
            retrieval,
        };
        assert!(check(&point(0.5, true, &params)).is_ok());
        assert!(check(&point(1.0, true, &params)).is_err());
        let mut short = serde_json::Map::new();
        short.insert("queue_size".into(), json!(1000));
        let e = check(&point(0.5, true, &short)).unwrap_err();
        assert!(e.hint.contains("768"), "{e:?}");
        // Classification keeps no queue.
        assert!(check(&point(0.5, false, &short)).is_ok());
    }
}
