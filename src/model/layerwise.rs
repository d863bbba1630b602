//! One tower layer at a time: a tower's layer-0 inputs for a sample set, and each encoder layer
//! applied to the whole set in chunks of samples. Pruning (layer-sequential statistics),
//! representation measurements (intrinsic dimension, SLS) and retraining all walk a tower this
//! way; memory holds one layer's hidden states (`chunk · T · D` floats of work space), never all.

use super::clip::{EncoderLayer, TextTower};
use super::{Clip, TokenBatch};
use tch::Tensor;

/// An encoder tower.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
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
}

/// Samples per forward chunk: bounds activation memory (`chunk · T · F` floats) for any `N`. On
/// ViT-B/32 with 2 CPU threads 32 was both faster and leaner than 16 or 64 (`make bench`).
pub const CHUNK: i64 = 32;

/// A tower's encoder-layer inputs on the sample set: `x` (`[N, T, D]`) and the attention
/// visibility (`[N, 1, T, T]`, text only).
pub struct TowerInputs {
    pub x: Tensor,
    pub mask: Option<Tensor>,
}

/// Vision layer-0 inputs of normalised pixels, embedded in chunks.
pub fn pixel_inputs(model: &Clip, pixels: &Tensor) -> TowerInputs {
    let _g = tch::no_grad_guard();
    TowerInputs {
        x: map_chunks(pixels, None, |p, _| model.vision.embed(p)),
        mask: None,
    }
}

/// Text layer-0 inputs and attention visibility of a token batch.
pub fn token_inputs(model: &Clip, tokens: &TokenBatch) -> TowerInputs {
    let _g = tch::no_grad_guard();
    TowerInputs {
        x: model.text.embed(&tokens.ids),
        mask: Some(TextTower::attention_mask(tokens)),
    }
}

/// The encoder layers of a tower.
pub fn layers(model: &Clip, tower: Tower) -> &[EncoderLayer] {
    match tower {
        Tower::Vision => &model.vision.layers,
        Tower::Text => &model.text.layers,
    }
}

/// `(start, len)` of consecutive chunks of `size` samples covering `0..n`.
pub fn ranges(n: i64, size: i64) -> impl Iterator<Item = (i64, i64)> {
    let size = size.max(1);
    (0..n)
        .step_by(size as usize)
        .map(move |s| (s, size.min(n - s)))
}

/// `f` applied to each chunk of samples (with its slice of the mask and its sample range),
/// results concatenated.
pub fn map_ranges(
    x: &Tensor,
    mask: Option<&Tensor>,
    mut f: impl FnMut(&Tensor, Option<&Tensor>, (i64, i64)) -> Tensor,
) -> Tensor {
    let parts: Vec<Tensor> = ranges(x.size()[0], CHUNK)
        .map(|(s, b)| {
            let m = mask.map(|m| m.narrow(0, s, b));
            f(&x.narrow(0, s, b), m.as_ref(), (s, b))
        })
        .collect();
    Tensor::cat(&parts, 0)
}

/// `f` applied to each chunk of samples (with its slice of the mask), results concatenated.
pub fn map_chunks(
    x: &Tensor,
    mask: Option<&Tensor>,
    mut f: impl FnMut(&Tensor, Option<&Tensor>) -> Tensor,
) -> Tensor {
    map_ranges(x, mask, |x, m, _| f(x, m))
}

/// `layer(x)` over the sample set, no gradients.
pub fn forward(layer: &EncoderLayer, inputs: &TowerInputs) -> Tensor {
    let _g = tch::no_grad_guard();
    map_chunks(&inputs.x, inputs.mask.as_ref(), |x, m| layer.forward(x, m))
}
