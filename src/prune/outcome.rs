//! What an unstructured prune did to the model, and the driver that runs a method over the
//! towers (pattern checked against the model first, each tower timed).

use super::{PruneError, mask::Pattern, slide};
use crate::model::{Clip, Tower};
use tch::Tensor;

/// One pruned weight matrix.
#[derive(Debug)]
pub struct PrunedMatrix {
    /// HF tensor name, e.g. `vision_model.encoder.layers.3.mlp.fc1.weight`.
    pub name: String,
    /// `true` = pruned, shaped like the weight.
    pub mask: Tensor,
    /// The method also changed the surviving weights (SparseGPT, Slide-CLIP).
    pub updated: bool,
}

/// What a prune did to the model.
#[derive(Debug, Default)]
pub struct Outcome {
    pub matrices: Vec<PrunedMatrix>,
    /// Other tensors the method changed (Slide-CLIP's LayerNorm γ), by HF name.
    pub changed: Vec<String>,
    /// Distillation epochs per layer (Slide-CLIP).
    pub epochs: Vec<slide::EpochRecord>,
    /// Seconds per tower.
    pub seconds: Vec<(Tower, f64)>,
}

/// Checks that the pattern applies to every pruned matrix of the towers.
fn check(model: &Clip, towers: &[Tower], pattern: Pattern) -> Result<(), PruneError> {
    match pattern {
        Pattern::Unstructured(s) if !(s > 0.0 && s < 1.0) => Err(PruneError::Invalid(format!(
            "unstructured sparsity must be in (0, 1), got {s}"
        ))),
        Pattern::NM { n, m } => {
            for &tower in towers {
                for (name, linear) in crate::model::layerwise::layers(model, tower)[0].linears() {
                    let c = linear.ws.size()[1];
                    if c % m != 0 {
                        return Err(PruneError::Invalid(format!(
                            "{n}:{m} sparsity needs input widths divisible by {m}; {}{name} has {c} inputs",
                            tower.prefix()
                        )));
                    }
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Prunes `model` in place tower by tower: `per_tower` prunes one tower into the outcome, and
/// each tower is timed. The pattern is checked against the model first.
pub fn over_towers(
    model: &Clip,
    towers: &[Tower],
    pattern: Pattern,
    mut per_tower: impl FnMut(Tower, &mut Outcome) -> Result<(), PruneError>,
) -> Result<Outcome, PruneError> {
    check(model, towers, pattern)?;
    let mut outcome = Outcome::default();
    for &tower in towers {
        let clock = std::time::Instant::now();
        per_tower(tower, &mut outcome)?;
        outcome.seconds.push((tower, clock.elapsed().as_secs_f64()));
    }
    Ok(outcome)
}
