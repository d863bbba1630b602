//! CLIP in libtorch: the vision and text towers, projections and logit scale, loaded strictly
//! from Hugging Face safetensors directories (spec clip.md §2–§5, §8).
//!
//! Invariants: variable names spell the checkpoint's tensor names exactly (`pre_layrnorm`
//! included), so loading, saving and pruning address weights by their HF names; every forward is
//! fp32 unless a caller converts the model; no pickle checkpoint is ever read.

pub mod clip;
/// The `config.json` mirror lives in the leaf, where the planner can read it too.
pub use crate::util::clip_config as config;
pub mod create;
pub mod layerwise;
pub mod tokenizer;
pub mod weights;
pub mod zeroshot;

pub use clip::{Clip, EncoderLayer};
pub use config::{Activation, ClipConfig, TextConfig, VisionConfig};
pub use layerwise::Tower;
pub use tokenizer::{ClipTokenizer, TokenBatch};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Weights { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Tokenizer { path: PathBuf, reason: String },
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

impl From<config::ConfigError> for ModelError {
    fn from(e: config::ConfigError) -> Self {
        match e {
            config::ConfigError::Io { path, source } => ModelError::Io { path, source },
            config::ConfigError::Invalid { path, reason } => ModelError::Config { path, reason },
        }
    }
}
