//! Slide-CLIP (spec §8): layer-sequential SparseGPT with a two-layer sliding window — after
//! layer `i` is pruned, layer `i+1` is distilled (batch 1, fixed order, hand-written AdamW over
//! its 8 weight tensors) to map the pruned path's output of layer `i` onto the dense model's
//! hidden state after layer `i+1`; then the window moves on. The progressive variant runs the
//! whole process twice: at 50 %, then at the target, both starting from the dense layer-0 output.

use super::mask::Pattern;
use super::sequential::{self, Calibration, LayerRule};
use super::{Outcome, PruneError, sparsegpt};
use crate::model::Tower;
use crate::model::clip::EncoderLayer;
use crate::model::layerwise::{self, TowerInputs};
use crate::train::AdamW;
use tch::{Reduction, Tensor};

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub sparsegpt: sparsegpt::Settings,
    /// Upper bound on distillation epochs per layer.
    pub epochs: usize,
    pub lr: f64,
    pub weight_decay: f64,
    /// Early stop after an epoch whose mean loss is below this (Decision 3).
    pub threshold: f64,
}

/// Distillation epochs of one layer.
#[derive(Debug, Clone)]
pub struct EpochRecord {
    pub tower: Tower,
    /// 1, or 2 for the second pass of the progressive variant (set by its caller).
    pub pass: usize,
    pub layer: usize,
    pub epochs: usize,
    /// Mean loss of the last epoch run.
    pub last_loss: f64,
}

/// The 8 tensors the distillation trains (§8.3): the six Linear weights and both LayerNorm γ.
pub fn trainable(layer: &EncoderLayer) -> Vec<Tensor> {
    let mut out: Vec<Tensor> = layer
        .linears()
        .iter()
        .map(|(_, l)| l.ws.shallow_clone())
        .collect();
    for ln in [&layer.layer_norm1, &layer.layer_norm2] {
        out.push(
            ln.ws
                .as_ref()
                .expect("CLIP LayerNorms are affine")
                .shallow_clone(),
        );
    }
    out
}

/// Trains `layer` so that `layer(inputs_j) ≈ targets_j`, one sample at a time in order
/// `0 … N−1`. Returns (epochs run, mean loss of the last epoch).
pub fn distil(
    layer: &EncoderLayer,
    inputs: &TowerInputs,
    targets: &Tensor,
    settings: &Settings,
) -> (usize, f64) {
    let params = trainable(layer);
    for p in &params {
        let _ = p.shallow_clone().set_requires_grad(true);
    }
    let mut opt = AdamW::new(&params, settings.lr, settings.weight_decay);
    let n = inputs.x.size()[0];
    let (mut epochs, mut last) = (0, f64::NAN);
    for _ in 0..settings.epochs {
        let mut sum = 0.0;
        for j in 0..n {
            for p in &params {
                let mut g = p.grad();
                if g.defined() {
                    let _ = g.zero_();
                }
            }
            let mask = inputs.mask.as_ref().map(|m| m.narrow(0, j, 1));
            let y = layer.forward(&inputs.x.narrow(0, j, 1), mask.as_ref());
            let loss = y.mse_loss(&targets.narrow(0, j, 1), Reduction::Mean);
            loss.backward();
            opt.step(&params);
            sum += loss.double_value(&[]);
        }
        epochs += 1;
        last = sum / n as f64;
        if last < settings.threshold {
            break;
        }
    }
    for p in &params {
        let _ = p.shallow_clone().set_requires_grad(false);
    }
    (epochs, last)
}

/// The dense model's output of layer 0 on the calibration set: the teacher chain's start,
/// captured before anything is pruned.
pub fn dense_start(model: &crate::model::Clip, tower: Tower, calib: &Calibration) -> Tensor {
    let inputs = sequential::tower_inputs(model, tower, calib);
    layerwise::forward(&layerwise::layers(model, tower)[0], &inputs)
}

/// One sliding pass over a tower at `pattern` (§8.2), teacher chain starting at `teacher_start`.
pub fn prune_tower(
    model: &crate::model::Clip,
    tower: Tower,
    calib: &Calibration,
    settings: Settings,
    pattern: Pattern,
    teacher_start: &Tensor,
    outcome: &mut Outcome,
) -> Result<(), PruneError> {
    let layers = layerwise::layers(model, tower);
    let mut inputs = sequential::tower_inputs(model, tower, calib);
    let mut teacher = TowerInputs {
        x: teacher_start.shallow_clone(),
        mask: inputs.mask.as_ref().map(Tensor::shallow_clone),
    };
    let rule = LayerRule::SparseGpt(settings.sparsegpt);
    let mut matrices = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        // The dense target of layer i+1, before layer i+1 is touched.
        let next_target = layers
            .get(i + 1)
            .map(|next| layerwise::forward(next, &teacher));
        matrices.extend(sequential::prune_layer(
            layer,
            &inputs,
            rule,
            pattern,
            tower,
            i,
            calib.len(),
        )?);
        if let (Some(target), Some(next)) = (&next_target, layers.get(i + 1)) {
            // Only a next layer reads the pruned outputs (none after the last).
            inputs.x = layerwise::forward(layer, &inputs);
            let (epochs, last_loss) = distil(next, &inputs, target, &settings);
            outcome.epochs.push(EpochRecord {
                tower,
                pass: 1,
                layer: i + 1,
                epochs,
                last_loss,
            });
            for ln in ["layer_norm1", "layer_norm2"] {
                let name = format!("{}encoder.layers.{}.{ln}.weight", tower.prefix(), i + 1);
                if !outcome.changed.contains(&name) {
                    outcome.changed.push(name);
                }
            }
        }
        if let Some(target) = next_target {
            teacher.x = target;
        }
    }
    // A later pass re-prunes the same matrices: its masks replace the earlier ones.
    outcome
        .matrices
        .retain(|m| !matrices.iter().any(|n| n.name == m.name));
    outcome.matrices.extend(matrices);
    Ok(())
}

/// Slide-CLIP over one tower: the dense layer-0 output starts the teacher chain (§8.2).
pub fn prune_tower_once(
    model: &crate::model::Clip,
    tower: Tower,
    calib: &Calibration,
    settings: Settings,
    pattern: Pattern,
    outcome: &mut Outcome,
) -> Result<(), PruneError> {
    let start = dense_start(model, tower, calib);
    prune_tower(model, tower, calib, settings, pattern, &start, outcome)
}

/// The progressive variant (§8.4): pass 1 at 50 % (n:m targets are 0.5 already), then pass 2 at
/// the target, both with the teacher chain starting from the dense layer-0 output.
pub fn prune_tower_progressive(
    model: &crate::model::Clip,
    tower: Tower,
    calib: &Calibration,
    settings: Settings,
    pattern: Pattern,
    outcome: &mut Outcome,
) -> Result<(), PruneError> {
    let start = dense_start(model, tower, calib);
    let first = match pattern {
        Pattern::Unstructured(_) => Pattern::Unstructured(0.5),
        nm => nm,
    };
    for (pass, p) in [(1, first), (2, pattern)] {
        let before = outcome.epochs.len();
        prune_tower(model, tower, calib, settings, p, &start, outcome)?;
        for record in &mut outcome.epochs[before..] {
            record.pass = pass;
        }
    }
    Ok(())
}
