//! The layer-sequential driver (spec §4): per tower, each layer's statistics come from one dense
//! forward of that layer on the pruned path's inputs; its six weights are pruned; the pruned
//! layer's outputs become the next layer's inputs. Forwards run over the calibration set in
//! chunks of samples (Decision 5), and statistics are sums over every token, counted in samples.

use super::mask::Pattern;
use super::{PruneError, PrunedMatrix, magnitude, sparsegpt, wanda};
use crate::model::clip::EncoderLayer;
use crate::model::layerwise::{
    CHUNK, Tower, TowerInputs, forward, layers, pixel_inputs, token_inputs,
};
use crate::model::{Clip, TokenBatch};
use tch::nn::Module;
use tch::{Kind, Tensor};

/// The calibration pairs as the model takes them.
pub struct Calibration {
    /// Normalised pixels `[N, 3, H, W]`.
    pub pixels: Tensor,
    /// The captions, tokenised in one call (padded to the longest).
    pub tokens: TokenBatch,
}

impl Calibration {
    pub fn len(&self) -> i64 {
        self.pixels.size()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Layer-0 inputs of `tower` (spec §3.5).
pub fn tower_inputs(model: &Clip, tower: Tower, calib: &Calibration) -> TowerInputs {
    match tower {
        Tower::Vision => pixel_inputs(model, &calib.pixels),
        Tower::Text => token_inputs(model, &calib.tokens),
    }
}

/// What a method needs to know about a Linear's inputs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Statistic {
    /// `Σ x²` per input column (Wanda).
    SquaredNorm,
    /// `Σ xᵀx` (SparseGPT).
    Gram,
}

/// Sums of the statistic over all tokens of all samples for the four distinct Linear inputs of
/// a layer: `LN₁(x)` (q, k, v), the attention context (out), `LN₂(h)` (fc1), `act(fc1(·))` (fc2).
///
/// Each chunk's statistic is an fp32 product (the fast kernel) added into a float64 sum, and the
/// total is rounded to fp32 once: its error against an exact float64 computation is one
/// chunk's rounding, never the chunks' accumulated drift, so it is no larger than the reference
/// code's per-sample running mean even on ill-conditioned layers (short, repeated prompts).
pub fn layer_statistics(
    layer: &EncoderLayer,
    inputs: &TowerInputs,
    statistic: Statistic,
) -> [Tensor; 4] {
    let _g = tch::no_grad_guard();
    let n = inputs.x.size()[0];
    let mut sums: [Option<Tensor>; 4] = Default::default();
    // One fp32 buffer per input for the chunk's Gram matrix (tens of MiB at MLP width).
    let mut chunk_grams: [Option<Tensor>; 4] = Default::default();
    for s in (0..n).step_by(CHUNK as usize) {
        let b = CHUNK.min(n - s);
        let x = inputs.x.narrow(0, s, b);
        let mask = inputs.mask.as_ref().map(|m| m.narrow(0, s, b));
        let a = layer.layer_norm1.forward(&x);
        let ctx = layer.self_attn.context(&a, mask.as_ref());
        let h = &x + layer.self_attn.project(&ctx);
        let m = layer.layer_norm2.forward(&h);
        let hidden = layer.mlp.hidden(&m);
        for ((sum, buf), z) in sums
            .iter_mut()
            .zip(chunk_grams.iter_mut())
            .zip([&a, &ctx, &m, &hidden])
        {
            let z = z.flatten(0, 1);
            let chunk = match statistic {
                Statistic::SquaredNorm => z.square().sum_dim_intlist(0, false, Kind::Float),
                Statistic::Gram => {
                    let width = z.size()[1];
                    let buf = buf.get_or_insert_with(|| {
                        Tensor::empty([width, width], (Kind::Float, z.device()))
                    });
                    let _ = z.tr().mm_out(buf, &z);
                    buf.shallow_clone()
                }
            };
            let sum = sum.get_or_insert_with(|| chunk.zeros_like().to_kind(Kind::Double));
            // In place, promoting the fp32 chunk as it is added.
            let _ = sum.g_add_(&chunk);
        }
    }
    sums.map(|s| {
        s.expect("calibration set is not empty")
            .to_kind(Kind::Float)
    })
}

/// Which of [`layer_statistics`]' four inputs feeds each of the six Linears (k, v, q, out, fc1,
/// fc2).
const INPUT_OF: [usize; 6] = [0, 0, 0, 1, 2, 3];

/// A calibrated per-layer rule.
#[derive(Debug, Clone, Copy)]
pub enum LayerRule {
    Wanda,
    SparseGpt(sparsegpt::Settings),
}

impl LayerRule {
    fn statistic(self) -> Statistic {
        match self {
            LayerRule::Wanda => Statistic::SquaredNorm,
            LayerRule::SparseGpt(_) => Statistic::Gram,
        }
    }
}

/// The HF name of a Linear weight of layer `i`.
pub fn weight_name(tower: Tower, i: usize, linear: &str) -> String {
    format!("{}encoder.layers.{i}.{linear}.weight", tower.prefix())
}

/// Prunes the six weights of `layer` in place from statistics on `inputs` (steps 1–2 of §4).
pub fn prune_layer(
    layer: &EncoderLayer,
    inputs: &TowerInputs,
    rule: LayerRule,
    pattern: Pattern,
    tower: Tower,
    index: usize,
    samples: i64,
) -> Result<Vec<PrunedMatrix>, PruneError> {
    let stats = layer_statistics(layer, inputs, rule.statistic());
    let _g = tch::no_grad_guard();
    let mut out = Vec::with_capacity(6);
    for (j, (name, linear)) in layer.linears().into_iter().enumerate() {
        let stat = &stats[INPUT_OF[j]];
        let mut ws = linear.ws.shallow_clone();
        let name = weight_name(tower, index, name);
        let (mask, updated) = match rule {
            LayerRule::Wanda => (wanda::mask(&ws, &(stat / samples as f64), pattern), false),
            LayerRule::SparseGpt(settings) => {
                let h = stat * (2.0 / samples as f64);
                let (w, mask) = sparsegpt::prune(&ws, &h, pattern, settings).map_err(|reason| {
                    PruneError::Numerics {
                        matrix: name.clone(),
                        reason,
                    }
                })?;
                ws.copy_(&w);
                (mask, true)
            }
        };
        let _ = ws.masked_fill_(&mask, 0.0);
        out.push(PrunedMatrix {
            name,
            mask,
            updated,
        });
    }
    Ok(out)
}

/// Magnitude pruning of every Linear of the tower (no data, no sequencing needed).
pub fn prune_magnitude(model: &Clip, tower: Tower, pattern: Pattern) -> Vec<PrunedMatrix> {
    let _g = tch::no_grad_guard();
    let mut out = Vec::new();
    for (i, layer) in layers(model, tower).iter().enumerate() {
        for (name, linear) in layer.linears() {
            let mut ws = linear.ws.shallow_clone();
            let mask = magnitude::mask(&ws, pattern);
            let _ = ws.masked_fill_(&mask, 0.0);
            out.push(PrunedMatrix {
                name: weight_name(tower, i, name),
                mask,
                updated: false,
            });
        }
    }
    out
}

/// Wanda or SparseGPT over one tower, layer by layer on the pruned path (§4).
pub fn prune_tower(
    model: &Clip,
    tower: Tower,
    calib: &Calibration,
    rule: LayerRule,
    pattern: Pattern,
) -> Result<Vec<PrunedMatrix>, PruneError> {
    let mut inputs = tower_inputs(model, tower, calib);
    let mut out = Vec::new();
    let layers = layers(model, tower);
    for (i, layer) in layers.iter().enumerate() {
        out.extend(prune_layer(
            layer,
            &inputs,
            rule,
            pattern,
            tower,
            i,
            calib.len(),
        )?);
        // The last layer's outputs feed nothing: no recompute (the reference's uniform loop
        // runs it anyway; a twelfth of the forwards).
        if i + 1 < layers.len() {
            inputs.x = forward(layer, &inputs);
        }
    }
    Ok(out)
}
