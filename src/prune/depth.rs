//! SLS depth pruning of the vision tower (spec structured-and-analysis.md §2.2, §2.8): the CLS
//! row after each block on labelled training images, a 2-D exact t-SNE, per-axis min-max, the
//! silhouette under the class labels; scanning from the last block down while each score stays
//! ≥ α · the last block's score; the tower keeps blocks 1…D, D the shallowest block reached.
//!
//! Blocks are embedded lazily, top down, so the scan stops computing at its first failure (as the
//! reference does). The result is a number (the depth); [`truncate`] applies it.

use crate::analysis::representation::{Inputs, Pooling, per_layer};
use crate::analysis::silhouette::{self, SilhouetteError};
use crate::analysis::tsne::{self, TsneError};
use crate::model::Clip;
use tch::Tensor;

/// What to do when the last block's silhouette is negative (no depth passes the criterion).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnNegative {
    /// Fail the stage (the reference writes no target and retraining cannot start).
    Error,
    /// Keep every block (D = L).
    KeepAll,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    pub alpha: f64,
    pub on_negative: OnNegative,
    pub tsne: tsne::Settings,
}

/// The chosen depth and the scores the scan computed (block number, silhouette), top down.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    pub depth: usize,
    pub blocks: usize,
    pub scores: Vec<(usize, f64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum DepthError {
    #[error(transparent)]
    Silhouette(#[from] SilhouetteError),
    #[error(transparent)]
    Tsne(#[from] TsneError),
}

/// Runs the criterion on normalised `pixels` (`[n, 3, H, W]`) with class `labels`.
pub fn select(
    model: &Clip,
    pixels: &Tensor,
    labels: &[i64],
    settings: Settings,
) -> Result<Selection, DepthError> {
    // The CLS rows of every block, kept on the host-side budget of n × D floats per block.
    let mut features = Vec::new();
    per_layer(model, Inputs::Pixels(pixels), Pooling::Token, |_, f| {
        features.push(f);
        Ok::<(), DepthError>(())
    })?;
    let blocks = features.len();
    let score = |f: &Tensor| -> Result<f64, DepthError> {
        let z = tsne::embed(f, settings.tsne)?.points;
        Ok(silhouette::score(&silhouette::min_max(&z), labels)?)
    };
    let last = score(&features[blocks - 1])?;
    let mut scores = vec![(blocks, last)];
    if last < 0.0 {
        return match settings.on_negative {
            OnNegative::Error => Err(SilhouetteError::NegativeLastScore(last).into()),
            OnNegative::KeepAll => Ok(Selection {
                depth: blocks,
                blocks,
                scores,
            }),
        };
    }
    let mut depth = blocks;
    for block in (1..blocks).rev() {
        let s = score(&features[block - 1])?;
        scores.push((block, s));
        if s < settings.alpha * last {
            break;
        }
        depth = block;
    }
    Ok(Selection {
        depth,
        blocks,
        scores,
    })
}

/// Keeps the first `depth` vision blocks (embeddings, `pre_layrnorm`, blocks 1…D,
/// `post_layernorm`, projection). The dropped blocks' tensors leave the variable store and the
/// config says D layers, so a saved model is the truncated one.
pub fn truncate(model: &mut Clip, depth: usize) {
    model.vision.layers.truncate(depth);
    model.config.vision.num_hidden_layers = depth as i64;
    model.vision.config.num_hidden_layers = depth as i64;
    let dropped = |name: &str| {
        name.strip_prefix("vision_model.encoder.layers.")
            .and_then(|rest| rest.split('.').next())
            .and_then(|i| i.parse::<usize>().ok())
            .is_some_and(|i| i >= depth)
    };
    let mut vars = model
        .vs
        .variables_
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    vars.named_variables.retain(|name, _| !dropped(name));
}
