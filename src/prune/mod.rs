//! Unstructured and n:m pruning of CLIP's encoder Linears (spec pruning-unstructured.md):
//! magnitude, Wanda, SparseGPT and Slide-CLIP (+ progressive), layer-sequential over the towers,
//! fp32; and SLS depth pruning of the vision tower ([`depth`]). These are the algorithms; the
//! methods a manifest names are declared beside their stage glue (`stages::methods`). The model is pruned in place; the
//! result lists a mask per pruned matrix and whether the method also changed its surviving
//! weights. [`artifact`] stores and re-applies a result.
//!
//! Invariants: only the six Linear weights of encoder layers are pruned; embeddings, LayerNorms,
//! projections, biases and `logit_scale` are never touched (Slide-CLIP's distillation alone also
//! trains the LayerNorm γ of layers 1…L−1, spec §8.3). Pruned entries are exactly 0.

pub mod artifact;
pub mod depth;
pub mod fisher;
pub mod magnitude;
pub mod mask;
mod outcome;
pub mod platon;
pub mod sequential;
pub mod slide;
pub mod sparsegpt;
pub mod structured;
pub mod upop;
pub mod wanda;

pub use mask::Pattern;
pub use outcome::{Outcome, PrunedMatrix, over_towers};
pub use sequential::Calibration;

#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error("{matrix}: {reason}")]
    Numerics { matrix: String, reason: String },
    #[error("{0}")]
    Invalid(String),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}
