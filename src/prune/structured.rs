//! Structured prunes: per encoder layer, the attention heads (and, within every kept head, the
//! head dimensions) and the MLP neurons kept, each kept unit with a scale. Applying one slices
//! the base model into a physically smaller model with per-layer shapes (spec
//! structured-and-analysis.md §3.9, §6e): the scales fold into the `out_proj` and `fc2` columns
//! that read the kept units, a layer may keep no heads or no neurons (the branch then adds only
//! its output bias), and a head with pruned dimensions keeps its unpruned attention scale, so
//! the smaller model computes what the masked full-size model computes.

use super::PruneError;
use crate::model::config::{ClipConfig, LayerShape};
use crate::model::{Clip, Tower};
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// What one layer keeps. Indices are ascending and distinct.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerUnits {
    pub tower: Tower,
    pub layer: usize,
    /// Kept attention heads.
    pub heads: Vec<i64>,
    /// Kept dimensions within every kept head; `None`: all of them.
    #[serde(default)]
    pub head_dims: Option<Vec<i64>>,
    /// One scale per kept head (1 = unchanged).
    pub head_scales: Vec<f32>,
    /// Kept MLP neurons.
    pub neurons: Vec<i64>,
    /// One scale per kept neuron.
    pub neuron_scales: Vec<f32>,
}

/// How a head with pruned dimensions scales its attention logits (spec §4.5, §6e).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttentionScale {
    /// `1/√head_dim` of the unpruned head: the smaller model computes what the masked one does.
    #[default]
    Original,
    /// `1/√kept_dims`, what PyTorch's attention does after UPop's slicing (reference retraining).
    Reduced,
}

/// A structured prune: the layers it changes (the others stay whole).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Structured {
    pub layers: Vec<LayerUnits>,
    #[serde(default)]
    pub attention_scale: AttentionScale,
}

fn invalid(u: &LayerUnits, what: String) -> PruneError {
    PruneError::Invalid(format!("{} layer {}: {what}", u.tower.name(), u.layer))
}

/// Checks `indices` are ascending, distinct and below `limit`.
fn check_indices(
    u: &LayerUnits,
    what: &str,
    indices: &[i64],
    limit: i64,
) -> Result<(), PruneError> {
    let ascending = indices.windows(2).all(|w| w[0] < w[1]);
    if !ascending
        || indices.first().is_some_and(|&i| i < 0)
        || indices.last().is_some_and(|&i| i >= limit)
    {
        return Err(invalid(
            u,
            format!("{what} must be distinct, ascending and in 0..{limit}"),
        ));
    }
    Ok(())
}

impl Structured {
    /// The model's config with the kept shapes, after checking every layer's units.
    fn config(&self, model: &Clip) -> Result<ClipConfig, PruneError> {
        let mut config = model.config.clone();
        let mut vision = config.vision.shapes();
        let mut text = config.text.shapes();
        for u in &self.layers {
            let shapes = match u.tower {
                Tower::Vision => &mut vision,
                Tower::Text => &mut text,
            };
            let Some(shape) = shapes.get_mut(u.layer) else {
                return Err(invalid(u, format!("the tower has {} layers", shapes.len())));
            };
            check_indices(u, "heads", &u.heads, shape.heads)?;
            check_indices(u, "neurons", &u.neurons, shape.intermediate_size)?;
            if u.head_scales.len() != u.heads.len() || u.neuron_scales.len() != u.neurons.len() {
                return Err(invalid(u, "one scale per kept unit is needed".into()));
            }
            let scale = shape
                .attention_scale
                .unwrap_or(1.0 / (shape.head_dim as f64).sqrt());
            let head_dim = match &u.head_dims {
                Some(dims) => {
                    check_indices(u, "head_dims", dims, shape.head_dim)?;
                    dims.len() as i64
                }
                None => shape.head_dim,
            };
            *shape = LayerShape {
                heads: u.heads.len() as i64,
                head_dim,
                intermediate_size: u.neurons.len() as i64,
                attention_scale: match self.attention_scale {
                    AttentionScale::Original => (head_dim != shape.head_dim)
                        .then_some(scale)
                        .or(shape.attention_scale),
                    AttentionScale::Reduced => None,
                },
            };
        }
        config.vision.layer_shapes = Some(vision);
        config.text.layer_shapes = Some(text);
        Ok(config)
    }
}

/// The physically smaller model `prune` describes, on `model`'s device.
pub fn apply(model: &Clip, prune: &Structured) -> Result<Clip, PruneError> {
    let config = prune.config(model)?;
    let mut small = Clip::new(&config, model.vs.device());
    // The smaller model keeps the base's precision (f64 references included).
    if model.visual_projection.ws.kind() == tch::Kind::Double {
        small.vs.double();
    }
    let source = model.vs.variables();
    // name → the slice of the base tensor that holds it
    let mut sliced = std::collections::HashMap::new();
    for u in &prune.layers {
        let base = match u.tower {
            Tower::Vision => &model.config.vision.shapes()[u.layer],
            Tower::Text => &model.config.text.shapes()[u.layer],
        };
        let prefix = format!("{}encoder.layers.{}.", u.tower.prefix(), u.layer);
        let var = |n: &str| &source[&format!("{prefix}{n}")];
        let device = model.vs.device();
        let dims: Vec<i64> = u
            .head_dims
            .clone()
            .unwrap_or_else(|| (0..base.head_dim).collect());
        let inner: Vec<i64> = u
            .heads
            .iter()
            .flat_map(|h| dims.iter().map(move |d| h * base.head_dim + d))
            .collect();
        let inner = Tensor::from_slice(&inner).to_device(device);
        let column_scales: Vec<f32> = u
            .head_scales
            .iter()
            .flat_map(|&s| std::iter::repeat_n(s, dims.len()))
            .collect();
        let column_scales = Tensor::from_slice(&column_scales).to_device(device);
        let neurons = Tensor::from_slice(&u.neurons).to_device(device);
        let neuron_scales = Tensor::from_slice(&u.neuron_scales).to_device(device);
        let rows = |n: &str, idx: &Tensor| var(n).index_select(0, idx);
        let columns = |n: &str, idx: &Tensor, scales: &Tensor| {
            var(n).index_select(1, idx) * scales.to_kind(var(n).kind()).view([1, -1])
        };
        for proj in ["q_proj", "k_proj", "v_proj"] {
            for p in ["weight", "bias"] {
                let n = format!("self_attn.{proj}.{p}");
                sliced.insert(format!("{prefix}{n}"), rows(&n, &inner));
            }
        }
        sliced.insert(
            format!("{prefix}self_attn.out_proj.weight"),
            columns("self_attn.out_proj.weight", &inner, &column_scales),
        );
        sliced.insert(
            format!("{prefix}mlp.fc1.weight"),
            rows("mlp.fc1.weight", &neurons),
        );
        sliced.insert(
            format!("{prefix}mlp.fc1.bias"),
            rows("mlp.fc1.bias", &neurons),
        );
        sliced.insert(
            format!("{prefix}mlp.fc2.weight"),
            columns("mlp.fc2.weight", &neurons, &neuron_scales),
        );
    }
    tch::no_grad(|| -> Result<(), PruneError> {
        for (name, mut var) in small.vs.variables() {
            let from = match sliced.remove(&name) {
                Some(t) => t,
                None => source[&name].shallow_clone(),
            };
            if from.size() != var.size() {
                return Err(PruneError::Invalid(format!(
                    "{name}: {:?} does not fit the pruned shape {:?}",
                    from.size(),
                    var.size()
                )));
            }
            var.copy_(&from);
        }
        Ok(())
    })?;
    small.set_eval();
    Ok(small)
}

/// The same prune at the model's full size, in place: the rows of Q, K, V (weights and biases)
/// and the `out_proj` columns of every dropped head dimension are zeroed, as are the `fc1` rows
/// and `fc2` columns of dropped neurons; kept `out_proj` and `fc2` columns are scaled. A
/// zeroed query and key give a dropped head uniform attention over a zero value, and a zeroed
/// neuron's activation is 0, so the outputs equal the physically smaller model's.
pub fn apply_full_size(model: &mut Clip, prune: &Structured) -> Result<(), PruneError> {
    prune.config(model)?;
    if prune.attention_scale == AttentionScale::Reduced
        && prune.layers.iter().any(|u| u.head_dims.is_some())
    {
        return Err(PruneError::Invalid(
            "heads with pruned dimensions and `attn_scale = \"reduced\"` have no full-size equivalent; export with --physical".into(),
        ));
    }
    let vars = model.vs.variables();
    let _g = tch::no_grad_guard();
    for u in &prune.layers {
        let base = match u.tower {
            Tower::Vision => &model.config.vision.shapes()[u.layer],
            Tower::Text => &model.config.text.shapes()[u.layer],
        };
        let prefix = format!("{}encoder.layers.{}.", u.tower.prefix(), u.layer);
        let var = |n: &str| vars[&format!("{prefix}{n}")].shallow_clone();
        let dims: Vec<i64> = u
            .head_dims
            .clone()
            .unwrap_or_else(|| (0..base.head_dim).collect());
        // Per inner column of the attention: the kept head's scale, else 0.
        let mut column = vec![0f32; (base.heads * base.head_dim) as usize];
        for (h, s) in u.heads.iter().zip(&u.head_scales) {
            for d in &dims {
                column[(h * base.head_dim + d) as usize] = *s;
            }
        }
        let mut neuron = vec![0f32; base.intermediate_size as usize];
        for (n, s) in u.neurons.iter().zip(&u.neuron_scales) {
            neuron[*n as usize] = *s;
        }
        let device = model.vs.device();
        let as_tensor = |v: &[f32], kind| Tensor::from_slice(v).to_device(device).to_kind(kind);
        for (rows, scales) in [
            (
                ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"].as_slice(),
                &column,
            ),
            (["mlp.fc1"].as_slice(), &neuron),
        ] {
            for name in rows {
                for p in ["weight", "bias"] {
                    let mut t = var(&format!("{name}.{p}"));
                    let keep = as_tensor(scales, t.kind()).ne(0.0).to_kind(t.kind());
                    let shape: Vec<i64> = if p == "weight" { vec![-1, 1] } else { vec![-1] };
                    let _ = t.g_mul_(&keep.view(shape.as_slice()));
                }
            }
        }
        for (name, scales) in [
            ("self_attn.out_proj.weight", &column),
            ("mlp.fc2.weight", &neuron),
        ] {
            let mut t = var(name);
            let s = as_tensor(scales, t.kind());
            let _ = t.g_mul_(&s.view([1, -1]));
        }
    }
    Ok(())
}
