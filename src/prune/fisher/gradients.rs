//! Fisher collection (spec structured-and-analysis.md §3.3): all-ones head and neuron masks
//! that require gradients, one backward pass of the batch-mean loss per mini-batch, the mask
//! gradients of every batch kept (rearrangement reads them) and the diagonal Fisher
//! information `Σ_b g_b²` summed in f64. Model parameters are frozen; no dropout exists.

use super::{Objective, Samples, masked, uniform_shape};
use crate::model::Clip;
use crate::model::layerwise::{self, Tower};
use crate::prune::PruneError;
use tch::{Device, Kind, Tensor};

/// Per-batch mask gradients: `heads[b]` is `[L·H]`, `neurons[b]` is `[L·I]`, row-major.
pub struct Gradients {
    pub heads: Vec<Vec<f64>>,
    pub neurons: Vec<Vec<f64>>,
    pub layers: usize,
}

fn fisher(g: &[Vec<f64>]) -> Vec<f64> {
    let mut out = vec![0.0; g.first().map_or(0, Vec::len)];
    for row in g {
        for (o, x) in out.iter_mut().zip(row) {
            *o += x * x;
        }
    }
    out
}

fn layer_slice(g: &[Vec<f64>], layer: usize, layers: usize) -> Vec<Vec<f64>> {
    g.iter()
        .map(|row| {
            let w = row.len() / layers;
            row[layer * w..(layer + 1) * w].to_vec()
        })
        .collect()
}

impl Gradients {
    pub fn head_fisher(&self) -> Vec<f64> {
        fisher(&self.heads)
    }

    pub fn neuron_fisher(&self) -> Vec<f64> {
        fisher(&self.neurons)
    }

    /// Layer `l`'s head gradients, `[batches][H]`.
    pub fn heads_of(&self, l: usize) -> Vec<Vec<f64>> {
        layer_slice(&self.heads, l, self.layers)
    }

    pub fn neurons_of(&self, l: usize) -> Vec<Vec<f64>> {
        layer_slice(&self.neurons, l, self.layers)
    }

    pub fn batches(&self) -> usize {
        self.heads.len()
    }
}

fn to_f64(t: &Tensor) -> Result<Vec<f64>, PruneError> {
    Ok(Vec::<f64>::try_from(
        &t.to_kind(Kind::Double)
            .to_device(Device::Cpu)
            .flatten(0, -1),
    )?)
}

/// Mask gradients over the samples in batches of `batch` (the last may be smaller).
pub fn collect(
    model: &Clip,
    tower: Tower,
    samples: &Samples,
    objective: &Objective,
    batch: i64,
) -> Result<Gradients, PruneError> {
    let shape = uniform_shape(model, tower)?;
    let layers = layerwise::layers(model, tower).len() as i64;
    let device = model.vs.device();
    let heads = Tensor::ones([layers, shape.heads], (Kind::Float, device)).set_requires_grad(true);
    let neurons = Tensor::ones([layers, shape.intermediate_size], (Kind::Float, device))
        .set_requires_grad(true);
    let n = samples.inputs.x.size()[0];
    let mut out = Gradients {
        heads: Vec::new(),
        neurons: Vec::new(),
        layers: layers as usize,
    };
    for (start, len) in layerwise::ranges(n, batch) {
        let mask = samples
            .inputs
            .mask
            .as_ref()
            .map(|m| m.narrow(0, start, len));
        let emb = masked::embed(
            model,
            tower,
            &samples.inputs.x.narrow(0, start, len),
            mask.as_ref(),
            (&heads, &neurons),
            &samples.pool,
            (start, len),
        );
        let loss = objective.loss(&emb, (start, len));
        if !loss.double_value(&[]).is_finite() {
            return Err(PruneError::Numerics {
                matrix: format!("{} tower", tower.name()),
                reason: format!("the loss of samples {start}..{} is not finite", start + len),
            });
        }
        let (gh, gn) = {
            let g = Tensor::run_backward(&[loss], &[&heads, &neurons], false, false);
            (to_f64(&g[0])?, to_f64(&g[1])?)
        };
        out.heads.push(gh);
        out.neurons.push(gn);
    }
    Ok(out)
}
