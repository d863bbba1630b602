//! Unstructured and n:m pruning of CLIP's encoder Linears (spec pruning-unstructured.md):
//! magnitude, Wanda, SparseGPT and Slide-CLIP (+ progressive), layer-sequential over the towers,
//! fp32; and SLS depth pruning of the vision tower ([`depth`]). The model is pruned in place; the result lists a mask per pruned matrix and whether the
//! method also changed its surviving weights. [`artifact`] stores and re-applies a result.
//!
//! Invariants: only the six Linear weights of encoder layers are pruned; embeddings, LayerNorms,
//! projections, biases and `logit_scale` are never touched (Slide-CLIP's distillation alone also
//! trains the LayerNorm γ of layers 1…L−1, spec §8.3). Pruned entries are exactly 0.

pub mod artifact;
pub mod depth;
pub mod magnitude;
pub mod mask;
pub mod sequential;
pub mod slide;
pub mod sparsegpt;
pub mod wanda;

pub use mask::Pattern;
pub use sequential::Calibration;

use crate::model::Clip;
use tch::Tensor;

/// An encoder tower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tower {
    Vision,
    Text,
}

impl Tower {
    pub fn name(self) -> &'static str {
        match self {
            Tower::Vision => "vision",
            Tower::Text => "text",
        }
    }

    /// The HF prefix of the tower's tensors.
    pub fn prefix(self) -> &'static str {
        match self {
            Tower::Vision => "vision_model.",
            Tower::Text => "text_model.",
        }
    }

    /// `both` → text then vision (Slide-CLIP's order; towers are independent).
    pub fn parse_set(s: &str) -> Option<Vec<Tower>> {
        match s {
            "both" => Some(vec![Tower::Text, Tower::Vision]),
            "vision" => Some(vec![Tower::Vision]),
            "text" => Some(vec![Tower::Text]),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error("{matrix}: {reason}")]
    Numerics { matrix: String, reason: String },
    #[error("{0}")]
    Invalid(String),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

/// A pruning method with its parameters.
#[derive(Debug, Clone, Copy)]
pub enum Method {
    Magnitude,
    Wanda,
    SparseGpt(sparsegpt::Settings),
    Slide(slide::Settings),
    SlideProgressive(slide::Settings),
}

impl Method {
    pub fn needs_calibration(self) -> bool {
        !matches!(self, Method::Magnitude)
    }
}

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
                for (name, linear) in sequential::layers(model, tower)[0].linears() {
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

/// Prunes `model` in place. `calib` is required by every method but magnitude.
pub fn prune(
    model: &Clip,
    calib: Option<&Calibration>,
    method: Method,
    pattern: Pattern,
    towers: &[Tower],
) -> Result<Outcome, PruneError> {
    check(model, towers, pattern)?;
    let calib = match (method.needs_calibration(), calib) {
        (true, None) => {
            return Err(PruneError::Invalid(
                "this method needs calibration data".into(),
            ));
        }
        (_, c) => c,
    };
    let mut outcome = Outcome::default();
    for &tower in towers {
        let clock = std::time::Instant::now();
        let calib = || calib.expect("checked above");
        match method {
            Method::Magnitude => outcome
                .matrices
                .extend(sequential::prune_magnitude(model, tower, pattern)),
            Method::Wanda => outcome.matrices.extend(sequential::prune_tower(
                model,
                tower,
                calib(),
                sequential::LayerRule::Wanda,
                pattern,
            )?),
            Method::SparseGpt(settings) => outcome.matrices.extend(sequential::prune_tower(
                model,
                tower,
                calib(),
                sequential::LayerRule::SparseGpt(settings),
                pattern,
            )?),
            Method::Slide(settings) => {
                let start = slide::dense_start(model, tower, calib());
                slide::prune_tower(
                    model,
                    tower,
                    calib(),
                    settings,
                    pattern,
                    &start,
                    &mut outcome,
                )?
            }
            Method::SlideProgressive(settings) => {
                // Pass 1 at 50 % (n:m targets are 0.5 already), then pass 2 at the target, both
                // with the teacher chain starting from the dense layer-0 output (§8.4).
                let start = slide::dense_start(model, tower, calib());
                let first = match pattern {
                    Pattern::Unstructured(_) => Pattern::Unstructured(0.5),
                    nm => nm,
                };
                for (pass, p) in [(1, first), (2, pattern)] {
                    let before = outcome.epochs.len();
                    slide::prune_tower(model, tower, calib(), settings, p, &start, &mut outcome)?;
                    for record in &mut outcome.epochs[before..] {
                        record.pass = pass;
                    }
                }
            }
        }
        outcome.seconds.push((tower, clock.elapsed().as_secs_f64()));
    }
    Ok(outcome)
}
