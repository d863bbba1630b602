//! The encoder forward with head and neuron masks (spec structured-and-analysis.md §0.3):
//! `head[h]` scales head `h`'s context (the `out_proj` input), which equals scaling its attention
//! probabilities; `neuron[i]` scales the `fc2` input. Masks may be real-valued (tuned scales) and
//! may require gradients (Fisher collection).

use super::Pool;
use crate::model::Clip;
use crate::model::EncoderLayer;
use crate::model::layerwise::{self, Tower};
use tch::Tensor;

/// One layer's masks: `[H]` and `[I]`.
pub struct LayerMasks<'a> {
    pub head: &'a Tensor,
    pub neuron: &'a Tensor,
}

/// The masked per-head context, `[B, T, H·d_h]`.
pub fn context(layer: &EncoderLayer, a: &Tensor, mask: Option<&Tensor>, head: &Tensor) -> Tensor {
    apply_heads(layer, &layer.self_attn.context(a, mask), head)
}

/// An unmasked context `[B, T, H·d_h]` with each head's slice scaled by `head[h]`.
pub fn apply_heads(layer: &EncoderLayer, ctx: &Tensor, head: &Tensor) -> Tensor {
    let attn = &layer.self_attn;
    let (b, t, _) = ctx.size3().expect("context is [B, T, inner]");
    let scaled = ctx.view([b, t, attn.heads, attn.head_dim]) * head.view([1, 1, attn.heads, 1]);
    scaled.view([b, t, attn.heads * attn.head_dim])
}

/// The residual stream after the masked attention branch (the input of `layer_norm2`).
pub fn after_attention(
    layer: &EncoderLayer,
    x: &Tensor,
    mask: Option<&Tensor>,
    head: &Tensor,
) -> Tensor {
    let ctx = context(layer, &layer.layer_norm1.forward(x), mask, head);
    x + layer.self_attn.project(&ctx)
}

/// One masked encoder layer.
pub fn layer(layer: &EncoderLayer, x: &Tensor, mask: Option<&Tensor>, m: &LayerMasks) -> Tensor {
    let h = after_attention(layer, x, mask, m.head);
    let hidden = layer.mlp.hidden(&layer.layer_norm2.forward(&h)) * m.neuron.view([1, 1, -1]);
    &h + layer.mlp.fc2.forward(&hidden)
}

use tch::nn::Module;

/// The tower's embeddings (projected, not normalised) of a chunk of layer-0 inputs under masks
/// `[L, H]` and `[L, I]`; `rows` are the chunk's sample indices (for text pooling).
pub fn embed(
    model: &Clip,
    tower: Tower,
    x: &Tensor,
    mask: Option<&Tensor>,
    (heads, neurons): (&Tensor, &Tensor),
    pool: &Pool,
    rows: (i64, i64),
) -> Tensor {
    let mut h = x.shallow_clone();
    for (l, lay) in layerwise::layers(model, tower).iter().enumerate() {
        let (head, neuron) = (heads.get(l as i64), neurons.get(l as i64));
        h = layer(
            lay,
            &h,
            mask,
            &LayerMasks {
                head: &head,
                neuron: &neuron,
            },
        );
    }
    pool.project(model, &h, rows)
}
