//! The zero-shot classification head (spec clip.md §9.1): per class, the mean of the
//! L2-normalised text features of its rendered templates, renormalised; logits are
//! `100 · cos(image, class)`.

use super::{Clip, ClipTokenizer, ModelError};
use crate::data::Prompts;
use tch::{Kind, Tensor};

/// Fixed logit scale of the evaluation protocol (not `exp(logit_scale)`).
pub const LOGIT_SCALE: f64 = 100.0;

/// `x / max(‖x‖₂, 1e-12)` over the last dimension.
pub fn normalize(x: &Tensor) -> Tensor {
    let norm = x.norm_scalaropt_dim(2, [-1], true).clamp_min(1e-12);
    x / norm
}

/// `[E, C]` head, unit columns, built with the model's own text tower: one tokenizer call and
/// one forward per class (padded to that class's longest prompt, as the reference).
pub fn head(
    model: &Clip,
    tokenizer: &ClipTokenizer,
    prompts: &Prompts,
) -> Result<Tensor, ModelError> {
    let device = model.vs.device();
    let _guard = tch::no_grad_guard();
    let mut columns = Vec::with_capacity(prompts.classnames.len());
    for c in 0..prompts.classnames.len() {
        let tokens = tokenizer.encode(&prompts.class_prompts(c), device)?;
        let f = normalize(&model.text_features(&tokens).to_kind(Kind::Float));
        columns.push(normalize(&f.mean_dim(0, false, Kind::Float)));
    }
    Ok(Tensor::stack(&columns, 1))
}

/// `100 · normalize(image_features) · head`, `[B, C]`, fp32.
pub fn logits(image_features: &Tensor, head: &Tensor) -> Tensor {
    normalize(&image_features.to_kind(Kind::Float)).matmul(head) * LOGIT_SCALE
}
