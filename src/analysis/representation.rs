//! What a tower represents after each encoder layer, for measurements over a sample set
//! (intrinsic dimension, SLS's depth criterion). The whole set moves through the tower one layer
//! at a time (chunked forwards), so memory holds one layer's hidden states, not all of them.

use crate::model::Tower;
use crate::model::clip::TextTower;
use crate::model::layerwise::{forward, layers, map_chunks, pixel_inputs, token_inputs};
use crate::model::{Clip, TokenBatch};
use tch::nn::Module;
use tch::{Kind, Tensor};

/// How a layer's hidden states `[n, T, D]` become one vector per sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The CLS row (vision) or the first EOS row (text), `[n, D]`.
    Token,
    /// The mean over the sample's real tokens (text padding excluded), `[n, D]`.
    Mean,
    /// The whole sequence flattened, `[n, T·D]`, text padding zeroed (the ID-pruning
    /// repository's choice).
    Sequence,
}

impl Pooling {
    pub fn parse(s: &str) -> Option<Pooling> {
        Some(match s {
            "token" => Pooling::Token,
            "mean" => Pooling::Mean,
            "sequence" => Pooling::Sequence,
            _ => return None,
        })
    }
}

/// The samples a tower reads: images (normalised pixels) or texts.
pub enum Inputs<'a> {
    Pixels(&'a Tensor),
    Tokens(&'a TokenBatch),
}

/// Calls `visit(l, features)` with the pooled output of every encoder layer `l` = 1…L.
pub fn per_layer<E>(
    model: &Clip,
    inputs: Inputs,
    pooling: Pooling,
    mut visit: impl FnMut(usize, Tensor) -> Result<(), E>,
) -> Result<(), E> {
    let _g = tch::no_grad_guard();
    let (tower, mut inputs, tokens) = match inputs {
        Inputs::Pixels(px) => (Tower::Vision, pixel_inputs(model, px), None),
        Inputs::Tokens(t) => (Tower::Text, token_inputs(model, t), Some(t)),
    };
    for (l, layer) in layers(model, tower).iter().enumerate() {
        inputs.x = forward(layer, &inputs);
        visit(l + 1, pool(&inputs.x, tokens, pooling))?;
    }
    Ok(())
}

/// The Linears whose outputs the per-Linear layout measures, per block in module order: the ones
/// PLATON + ID prunes (spec structured-and-analysis.md §1.4, §5.4).
pub const LINEARS: [&str; 3] = ["self_attn.out_proj", "mlp.fc1", "mlp.fc2"];

/// Calls `visit(l, linear, features)` with the pooled output of every [`LINEARS`] entry of every
/// encoder layer `l` = 1…L (`fc1` before its activation).
pub fn per_linear<E>(
    model: &Clip,
    inputs: Inputs,
    pooling: Pooling,
    mut visit: impl FnMut(usize, &'static str, Tensor) -> Result<(), E>,
) -> Result<(), E> {
    let _g = tch::no_grad_guard();
    let (tower, inputs, tokens) = match inputs {
        Inputs::Pixels(px) => (Tower::Vision, pixel_inputs(model, px), None),
        Inputs::Tokens(t) => (Tower::Text, token_inputs(model, t), Some(t)),
    };
    let mask = inputs.mask.as_ref();
    let mut x = inputs.x;
    for (l, layer) in layers(model, tower).iter().enumerate() {
        let attended = map_chunks(&x, mask, |x, m| {
            let a = layer.self_attn.context(&layer.layer_norm1.forward(x), m);
            layer.self_attn.project(&a)
        });
        visit(l + 1, LINEARS[0], pool(&attended, tokens, pooling))?;
        let h = &x + attended;
        let fc1 = map_chunks(&h, None, |h, _| {
            layer.mlp.fc1.forward(&layer.layer_norm2.forward(h))
        });
        visit(l + 1, LINEARS[1], pool(&fc1, tokens, pooling))?;
        let fc2 = map_chunks(&fc1, None, |z, _| {
            layer.mlp.output(&layer.mlp.activation(z))
        });
        visit(l + 1, LINEARS[2], pool(&fc2, tokens, pooling))?;
        x = h + fc2;
    }
    Ok(())
}

fn pool(h: &Tensor, tokens: Option<&TokenBatch>, pooling: Pooling) -> Tensor {
    let n = h.size()[0];
    let valid = tokens.map(|t| t.mask.to_kind(Kind::Float).unsqueeze(-1));
    match (pooling, tokens) {
        (Pooling::Token, None) => h.select(1, 0),
        (Pooling::Token, Some(t)) => TextTower::eos_rows(h, t),
        (Pooling::Mean, _) => match valid {
            None => h.mean_dim(1, false, Kind::Float),
            Some(v) => {
                (h * &v).sum_dim_intlist(1, false, Kind::Float)
                    / v.sum_dim_intlist(1, false, Kind::Float)
            }
        },
        (Pooling::Sequence, _) => match valid {
            None => h.reshape([n, -1]),
            Some(v) => (h * v).reshape([n, -1]),
        },
    }
}
