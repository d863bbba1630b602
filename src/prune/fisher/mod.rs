//! Retraining-free structured pruning with Fisher information (Kwon et al. 2022, as ported to
//! CLIP by the ETH code; spec structured-and-analysis.md §3): per tower, the Fisher information
//! of every attention head's and MLP neuron's mask from mini-batch gradients ([`gradients`]),
//! the MAC-constrained global search ([`search`]), per-layer rearrangement ([`rearrange`]) and
//! layer-wise least-squares mask tuning against a teacher ([`tune`]). The result is a pair of
//! real-valued masks (`[L, H]`, `[L, I]`: 0 = pruned, otherwise the kept unit's scale), which
//! [`TowerPrune::units`] turns into the physically smaller model's kept units.
//!
//! Invariants: model parameters never change (the masks carry everything); statistics are
//! accumulated in f64; per-layer counts, hence MACs, are fixed by the search (rearrangement and
//! tuning never change them).

pub mod gradients;
pub mod masked;
pub mod rearrange;
pub mod search;
pub mod stored;
pub mod tune;

use super::PruneError;
use super::structured::LayerUnits;
use crate::model::layerwise::{self, Tower, TowerInputs};
use crate::model::{Clip, zeroshot};
use crate::util::macs::{self, UnitCost};
use search::{Feasibility, Selection};
use std::time::Instant;
use tch::nn::Module;
use tch::{Kind, Tensor};

/// How the pooled embedding of a tower is read from its last hidden state.
pub enum Pool {
    /// CLS row → `post_layernorm` → `visual_projection`.
    Vision,
    /// Each sample's first EOS row (`[N]` positions) → `final_layer_norm` → `text_projection`.
    Text { eos: Tensor },
}

impl Pool {
    /// Projected (not normalised) embeddings of hidden states `h` of samples `start..start+len`.
    pub fn project(&self, model: &Clip, h: &Tensor, (start, len): (i64, i64)) -> Tensor {
        match self {
            Pool::Vision => model.visual_projection.forward(&model.vision.pool(h)),
            Pool::Text { eos } => {
                let d = h.size()[2];
                let idx = eos
                    .narrow(0, start, len)
                    .view([len, 1, 1])
                    .expand([len, 1, d], false);
                let rows = h.gather(1, &idx, false).squeeze_dim(1);
                model
                    .text_projection
                    .forward(&model.text.final_layer_norm.forward(&rows))
            }
        }
    }
}

/// What the masks are scored against.
pub enum Objective {
    /// Symmetric InfoNCE (§3.2) against fixed unit-norm embeddings of the other modality
    /// (`[N, E]`, row `i` pairs with sample `i`), logits scaled by `scale` = exp(logit_scale).
    Contrastive { targets: Tensor, scale: f64 },
    /// Cross-entropy of the zero-shot logits (`100 · cos` against the unit columns of `head`,
    /// `[E, C]`) with the samples' `labels` (`[N]`).
    ZeroShot { head: Tensor, labels: Tensor },
}

impl Objective {
    /// The batch-mean loss of embeddings `emb` of samples `start..start+len`.
    pub fn loss(&self, emb: &Tensor, (start, len): (i64, i64)) -> Tensor {
        let emb = zeroshot::normalize(emb);
        match self {
            Objective::Contrastive { targets, scale } => {
                let t = targets.narrow(0, start, len);
                let logits = t.matmul(&emb.tr()) * *scale;
                let diag = Tensor::arange(len, (Kind::Int64, emb.device()));
                (cross_entropy(&logits, &diag) + cross_entropy(&logits.tr(), &diag)) * 0.5
            }
            Objective::ZeroShot { head, labels } => cross_entropy(
                &(emb.matmul(head) * zeroshot::LOGIT_SCALE),
                &labels.narrow(0, start, len),
            ),
        }
    }
}

/// Mean cross-entropy in the logits' own precision (tch's `cross_entropy_for_logits` computes
/// in f32 whatever the input).
fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Tensor {
    logits.log_softmax(-1, logits.kind()).nll_loss(targets)
}

/// One tower's samples: layer-0 inputs (with the attention visibility for text), which tokens
/// count in the least-squares targets (`[N, T]`, text padding excluded), and the pooling.
pub struct Samples {
    pub inputs: TowerInputs,
    pub valid: Option<Tensor>,
    pub pool: Pool,
}

/// Whose output the tuned layer is fitted to (§3.8 target variants, §6f).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// The teacher's branch output plus the residual difference (ETH HEAD).
    Residual,
    /// The teacher's branch output alone (ETH ≤ `50eeb09`).
    Branch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Teacher {
    /// The unpruned model (ETH).
    Full,
    /// Binary masks searched at √c (KW).
    Sqrt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Keep the layer's masks as they are and tune the next layers (ETH).
    Continue,
    /// Stop tuning at the first failed solve or scale outside [−10, 10] (KW).
    Stop,
}

#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    pub teacher: Teacher,
    pub attention_target: Target,
    pub mlp_target: Target,
    /// Tune layer 0's head scales too (ETH `8cd50ab`; HEAD skips them).
    pub first_layer_heads: bool,
    pub on_failure: OnFailure,
}

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Keep at most this fraction of the encoder's MACs, in (0, 1).
    pub constraint: f64,
    pub feasibility: Feasibility,
    /// The token count of the MAC model.
    pub tokens: i64,
    /// Samples per gradient (and tuning) batch.
    pub batch: i64,
    pub rearrange: bool,
    pub tuning: Option<Tuning>,
}

impl Tuning {
    /// The ETH port's HEAD: full-model teacher, residual targets, layer 0's heads untuned,
    /// failed solves skipped.
    pub const HEAD: Tuning = Tuning {
        teacher: Teacher::Full,
        attention_target: Target::Residual,
        mlp_target: Target::Residual,
        first_layer_heads: false,
        on_failure: OnFailure::Continue,
    };
}

impl Settings {
    /// The HEAD defaults at a constraint and token count: the project's feasibility rule,
    /// batches of 32, rearrangement and tuning on.
    pub fn head(constraint: f64, tokens: i64) -> Settings {
        Settings {
            constraint,
            feasibility: Feasibility::Project,
            tokens,
            batch: 32,
            rearrange: true,
            tuning: Some(Tuning::HEAD),
        }
    }
}

/// Seconds spent in each phase.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Phases {
    pub gradients: f64,
    pub search: f64,
    pub rearrange: f64,
    pub tune: f64,
}

/// A pruned tower: its masks and how they were found.
pub struct TowerPrune {
    pub tower: Tower,
    /// `[L, H]` f32 on the CPU: 0 = pruned, else the head's scale.
    pub heads: Tensor,
    /// `[L, I]` f32 on the CPU.
    pub neurons: Tensor,
    pub selection: Selection,
    pub teacher: Option<Selection>,
    pub tuning: Vec<tune::LayerTuning>,
    pub cost: UnitCost,
    pub full_macs: i64,
    pub phases: Phases,
    pub batches: usize,
}

/// The tower's single layer shape; Fisher masks assume one (the unpruned model's).
pub fn uniform_shape(
    model: &Clip,
    tower: Tower,
) -> Result<crate::model::config::LayerShape, PruneError> {
    let shapes = match tower {
        Tower::Vision => model.config.vision.shapes(),
        Tower::Text => model.config.text.shapes(),
    };
    let first = shapes
        .first()
        .cloned()
        .ok_or_else(|| PruneError::Invalid(format!("the {} tower has no layers", tower.name())))?;
    if let Some(l) = shapes.iter().position(|s| s != &first) {
        return Err(PruneError::Invalid(format!(
            "the {} tower's layers differ in shape (layer {l}: {:?}, layer 0: {first:?}); structured pruning starts from a model with one shape per tower",
            tower.name(),
            shapes[l]
        )));
    }
    if first.heads == 0 {
        return Err(PruneError::Invalid(format!(
            "the {} tower has no attention heads to prune",
            tower.name()
        )));
    }
    Ok(first)
}

fn hidden_size(model: &Clip, tower: Tower) -> i64 {
    match tower {
        Tower::Vision => model.config.vision.hidden_size,
        Tower::Text => model.config.text.hidden_size,
    }
}

/// Binary masks of a selection, `[L, H]` and `[L, I]`, f32 on the CPU.
fn masks_of(sel: &Selection, layers: i64) -> (Tensor, Tensor) {
    let flags = |v: &[bool]| {
        let f: Vec<f32> = v.iter().map(|&k| k as u8 as f32).collect();
        Tensor::from_slice(&f).view([layers, -1])
    };
    (flags(&sel.heads), flags(&sel.neurons))
}

/// Prunes one tower of `model` (unchanged) on `samples` under `objective`.
pub fn prune_tower(
    model: &Clip,
    tower: Tower,
    samples: &Samples,
    objective: &Objective,
    settings: &Settings,
) -> Result<TowerPrune, PruneError> {
    let shape = uniform_shape(model, tower)?;
    let layers = layerwise::layers(model, tower).len() as i64;
    let cost = macs::unit_cost(settings.tokens, hidden_size(model, tower), shape.head_dim);
    let full_macs = macs::encoder(cost, layers * shape.heads, layers * shape.intermediate_size);
    let mut phases = Phases::default();

    let clock = Instant::now();
    let grads = gradients::collect(model, tower, samples, objective, settings.batch)?;
    phases.gradients = clock.elapsed().as_secs_f64();

    let clock = Instant::now();
    let selection = search::search(
        &grads.head_fisher(),
        &grads.neuron_fisher(),
        cost,
        settings.constraint,
        settings.feasibility,
    )
    .map_err(|e| PruneError::Invalid(format!("{} tower: {e}", tower.name())))?;
    phases.search = clock.elapsed().as_secs_f64();

    let clock = Instant::now();
    let mut kept = selection.clone();
    if settings.rearrange {
        let (h, i) = (shape.heads as usize, shape.intermediate_size as usize);
        for l in 0..layers as usize {
            let heads = rearrange::rearrange(&kept.heads[l * h..(l + 1) * h], &grads.heads_of(l));
            kept.heads[l * h..(l + 1) * h].copy_from_slice(&heads);
            let neurons =
                rearrange::rearrange(&kept.neurons[l * i..(l + 1) * i], &grads.neurons_of(l));
            kept.neurons[l * i..(l + 1) * i].copy_from_slice(&neurons);
        }
    }
    phases.rearrange = clock.elapsed().as_secs_f64();
    let (mut heads, mut neurons) = masks_of(&kept, layers);

    let clock = Instant::now();
    let mut teacher = None;
    let mut tuning = Vec::new();
    if let Some(t) = &settings.tuning {
        let teacher_masks = match t.teacher {
            Teacher::Full => (heads.ones_like(), neurons.ones_like()),
            Teacher::Sqrt => {
                let sel = search::search(
                    &grads.head_fisher(),
                    &grads.neuron_fisher(),
                    cost,
                    settings.constraint.sqrt(),
                    settings.feasibility,
                )
                .map_err(|e| PruneError::Invalid(format!("{} tower teacher: {e}", tower.name())))?;
                let m = masks_of(&sel, layers);
                teacher = Some(sel);
                m
            }
        };
        tuning = tune::tune(
            model,
            tower,
            samples,
            (&mut heads, &mut neurons),
            (&teacher_masks.0, &teacher_masks.1),
            t,
        )?;
    }
    phases.tune = clock.elapsed().as_secs_f64();
    Ok(TowerPrune {
        tower,
        heads,
        neurons,
        selection,
        teacher,
        tuning,
        cost,
        full_macs,
        phases,
        batches: grads.batches(),
    })
}

/// The kept units of masks `[L, H]`, `[L, I]` (non-zero entries, their values as scales).
pub fn units(
    tower: Tower,
    heads: &Tensor,
    neurons: &Tensor,
) -> Result<Vec<LayerUnits>, PruneError> {
    let rows = |t: &Tensor| -> Result<Vec<Vec<f32>>, PruneError> {
        let t = t.to_kind(Kind::Float).to_device(tch::Device::Cpu);
        Ok(Vec::<Vec<f32>>::try_from(&t)?)
    };
    let (h, n) = (rows(heads)?, rows(neurons)?);
    if h.len() != n.len() {
        return Err(PruneError::Invalid(format!(
            "head mask has {} layers, neuron mask {}",
            h.len(),
            n.len()
        )));
    }
    let kept = |row: &[f32]| -> (Vec<i64>, Vec<f32>) {
        row.iter()
            .enumerate()
            .filter(|(_, v)| **v != 0.0)
            .map(|(i, v)| (i as i64, *v))
            .unzip()
    };
    Ok(h.iter()
        .zip(&n)
        .enumerate()
        .map(|(layer, (hr, nr))| {
            let (heads, head_scales) = kept(hr);
            let (neurons, neuron_scales) = kept(nr);
            LayerUnits {
                tower,
                layer,
                heads,
                head_dims: None,
                head_scales,
                neurons,
                neuron_scales,
            }
        })
        .collect())
}

/// The encoder MACs the masks keep (non-zero entries), at the cost model's token count.
pub fn masked_macs(cost: UnitCost, heads: &Tensor, neurons: &Tensor) -> i64 {
    let count = |t: &Tensor| t.ne(0.0).sum(Kind::Int64).int64_value(&[]);
    macs::encoder(cost, count(heads), count(neurons))
}

/// Unnormalised embeddings of the samples through the masked full-size tower.
pub fn masked_embeddings(
    model: &Clip,
    tower: Tower,
    samples: &Samples,
    heads: &Tensor,
    neurons: &Tensor,
) -> Tensor {
    let device = model.vs.device();
    let (heads, neurons) = (heads.to_device(device), neurons.to_device(device));
    let _g = tch::no_grad_guard();
    let i = &samples.inputs;
    layerwise::map_ranges(&i.x, i.mask.as_ref(), |x, m, rows| {
        masked::embed(model, tower, x, m, (&heads, &neurons), &samples.pool, rows)
    })
}

/// Unnormalised embeddings of the samples through a model's own (possibly smaller) layers.
pub fn embeddings(model: &Clip, tower: Tower, samples: &Samples) -> Tensor {
    let _g = tch::no_grad_guard();
    let i = &samples.inputs;
    layerwise::map_ranges(&i.x, i.mask.as_ref(), |x, m, rows| {
        let mut h = x.shallow_clone();
        for layer in layerwise::layers(model, tower) {
            h = layer.forward(&h, m);
        }
        samples.pool.project(model, &h, rows)
    })
}

/// The physical-vs-masked check of §6e: `max|Δ|` of the embeddings and the tolerance
/// `1e-4 · max(1, max|y|)` (f32; 1e-9 in f64).
pub fn deviation(masked: &Tensor, physical: &Tensor) -> (f64, f64) {
    let diff = (masked - physical).abs().max().double_value(&[]);
    let scale = masked.abs().max().double_value(&[]).max(1.0);
    let tol = if masked.kind() == Kind::Double {
        1e-9
    } else {
        1e-4
    };
    (diff, tol * scale)
}
