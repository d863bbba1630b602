//! Convpass adapters (spec structured-and-analysis.md §2.6) on CLIP's vision blocks, and the
//! classifier the retraining trains (§2.8).
//!
//! In every kept block, in parallel with both sub-layers and scaled by `s`:
//! `x ← x + Attn(LN₁x) + s·Convpass(LN₁x)`, `x ← x + MLP(LN₂x) + s·Convpass(LN₂x)`.
//! Convpass(x): down-projection to 8 channels (Xavier-uniform weight, zero bias), QuickGELU;
//! patch tokens reshaped to an 8-channel grid and the CLS token to a 1×1 map, the same 3×3 conv
//! on both; QuickGELU, dropout 0.1 (training only); up-projection to the width, weight and bias
//! zero — so a fresh adapter leaves the model's output unchanged.
//!
//! Invariant: the model's own tensors are only read here; what trains is chosen by the caller.

use crate::model::Clip;
use crate::model::clip::quick_gelu;
use tch::nn::{self, Init, Module};
use tch::{Kind, Tensor};

/// Adapter width (the reference's `dim`).
pub const CHANNELS: i64 = 8;

pub struct Convpass {
    down: nn::Linear,
    conv_w: Tensor,
    conv_b: Tensor,
    up: nn::Linear,
    grid: i64,
}

impl Convpass {
    /// `xavier`: Xavier-uniform conv weights; otherwise zeros with the identity at the centre tap.
    pub fn new(p: &nn::Path, width: i64, grid: i64, xavier: bool) -> Convpass {
        let xavier_bound = |fan_in: i64, fan_out: i64| (6.0 / (fan_in + fan_out) as f64).sqrt();
        let b = xavier_bound(width, CHANNELS);
        let down = nn::Linear {
            ws: (p / "down").var(
                "weight",
                &[CHANNELS, width],
                Init::Uniform { lo: -b, up: b },
            ),
            bs: Some((p / "down").zeros("bias", &[CHANNELS])),
        };
        let conv_w = if xavier {
            let b = xavier_bound(CHANNELS * 9, CHANNELS * 9);
            (p / "conv").var(
                "weight",
                &[CHANNELS, CHANNELS, 3, 3],
                Init::Uniform { lo: -b, up: b },
            )
        } else {
            let w = (p / "conv").zeros("weight", &[CHANNELS, CHANNELS, 3, 3]);
            tch::no_grad(|| {
                let eye = Tensor::eye(CHANNELS, (Kind::Float, w.device()));
                w.shallow_clone().select(3, 1).select(2, 1).copy_(&eye);
            });
            w
        };
        Convpass {
            down,
            conv_w,
            conv_b: (p / "conv").zeros("bias", &[CHANNELS]),
            up: nn::Linear {
                ws: (p / "up").zeros("weight", &[width, CHANNELS]),
                bs: Some((p / "up").zeros("bias", &[width])),
            },
            grid,
        }
    }

    /// `x`: `[B, 1 + grid², width]` → same shape.
    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let (b, t, _) = x.size3().expect("tokens are [B, T, D]");
        let z = quick_gelu(&self.down.forward(x));
        let conv =
            |m: &Tensor| m.conv2d(&self.conv_w, Some(&self.conv_b), [1, 1], [1, 1], [1, 1], 1);
        let patches = z
            .narrow(1, 1, t - 1)
            .transpose(1, 2)
            .reshape([b, CHANNELS, self.grid, self.grid]);
        let patches = conv(&patches).reshape([b, CHANNELS, t - 1]).transpose(1, 2);
        let cls = z
            .narrow(1, 0, 1)
            .transpose(1, 2)
            .reshape([b, CHANNELS, 1, 1]);
        let cls = conv(&cls).reshape([b, CHANNELS, 1]).transpose(1, 2);
        let z = quick_gelu(&Tensor::cat(&[cls, patches], 1)).dropout(0.1, train);
        self.up.forward(&z)
    }
}

/// The adapters of the kept blocks, with their scale `s`.
pub struct Adapters {
    pub blocks: Vec<[Convpass; 2]>,
    pub scale: f64,
}

impl Adapters {
    pub fn new(p: &nn::Path, model: &Clip, scale: f64, xavier: bool) -> Adapters {
        let c = &model.vision.config;
        let grid = c.image_size / c.patch_size;
        let blocks = (0..model.vision.layers.len())
            .map(|i| {
                let q = p / "adapters" / i;
                [
                    Convpass::new(&(&q / "attn"), c.hidden_size, grid, xavier),
                    Convpass::new(&(&q / "mlp"), c.hidden_size, grid, xavier),
                ]
            })
            .collect();
        Adapters { blocks, scale }
    }
}

/// The image embedding (`visual_projection ∘ post_layernorm` of the CLS row) with optional
/// adapters, `[B, E]`.
pub fn image_features(
    model: &Clip,
    adapters: Option<&Adapters>,
    pixels: &Tensor,
    train: bool,
) -> Tensor {
    let Some(adapters) = adapters else {
        return model.image_features(pixels);
    };
    let mut x = model.vision.embed(pixels);
    for (layer, [attn, mlp]) in model.vision.layers.iter().zip(&adapters.blocks) {
        let a = layer.layer_norm1.forward(&x);
        x = &x + layer.self_attn.forward(&a, None) + attn.forward(&a, train) * adapters.scale;
        let m = layer.layer_norm2.forward(&x);
        x = &x + layer.mlp.output(&layer.mlp.hidden(&m)) + mlp.forward(&m, train) * adapters.scale;
    }
    model.visual_projection.forward(&model.vision.pool(&x))
}

/// A linear classifier on the normalised image embedding: `100 · (f̂ Wᵀ + b)`, initialised from
/// the zero-shot head (rows = class embeddings, bias 0), so training starts at zero-shot.
pub struct Classifier {
    pub weight: Tensor,
    pub bias: Tensor,
}

impl Classifier {
    /// `head`: the zero-shot head `[E, C]` (unit columns).
    pub fn from_zero_shot(p: &nn::Path, head: &Tensor) -> Classifier {
        let (e, c) = head.size2().expect("head is [E, C]");
        let weight = (p / "head").zeros("weight", &[c, e]);
        tch::no_grad(|| weight.shallow_clone().copy_(&head.tr()));
        Classifier {
            weight,
            bias: (p / "head").zeros("bias", &[c]),
        }
    }

    pub fn logits(&self, features: &Tensor) -> Tensor {
        let f = crate::model::zeroshot::normalize(&features.to_kind(Kind::Float));
        (f.matmul(&self.weight.tr()) + &self.bias) * crate::model::zeroshot::LOGIT_SCALE
    }
}
