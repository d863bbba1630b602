//! UPop's search (spec structured-and-analysis.md §4): trainable ζ on every layer of the pruned
//! towers — ζ_a per head dimension (shared by all heads, on q, k and v) and ζ_m per MLP neuron
//! (before the activation) — ranked jointly by their standardised accumulated gradients with
//! weight 36 per attention entry, on the progressive cosine schedule; then compression of the
//! final binary ζ into the kept units of a physically smaller model.
//!
//! Invariants: every module keeps at least its minimum-gradient entry (§4.8), so no layer loses
//! its attention or MLP; the ranking is computed in f64 from the gradient sums; after the last
//! update (π = p) every ζ is exactly 0 or 1.

use super::PruneError;
use super::structured::LayerUnits;
use crate::model::clip::Gates;
use crate::model::{Clip, Tower, layerwise};
use tch::{Kind, Tensor};

/// The weight of an attention entry in the unified count ("12 heads × (q, k, v)", hard-coded in
/// the reference whatever the head count).
pub const ATTENTION_WEIGHT: f64 = 36.0;

/// ζ of one tower: per layer ζ_a `[head_dim]` and ζ_m `[F]`, trainable (outside any optimiser).
pub struct TowerZeta {
    pub tower: Tower,
    pub dims: Vec<Tensor>,
    pub neurons: Vec<Tensor>,
}

impl TowerZeta {
    /// All ones (the unpruned model), on the model's device.
    pub fn ones(model: &Clip, tower: Tower) -> TowerZeta {
        let device = model.vs.device();
        let make = |n: i64| Tensor::ones([n], (Kind::Float, device)).set_requires_grad(true);
        let layers = layerwise::layers(model, tower);
        TowerZeta {
            tower,
            dims: layers.iter().map(|l| make(l.self_attn.head_dim)).collect(),
            neurons: layers
                .iter()
                .map(|l| make(l.mlp.fc1.ws.size()[0]))
                .collect(),
        }
    }

    pub fn gates(&self) -> Vec<Gates<'_>> {
        self.dims
            .iter()
            .zip(&self.neurons)
            .map(|(dims, neurons)| Gates { dims, neurons })
            .collect()
    }

    /// Σ|ζ_a| and Σ|ζ_m| of the tower (the L1 terms of the search loss, §4.2).
    pub fn l1(&self) -> (Tensor, Tensor) {
        let sum = |v: &[Tensor]| {
            v.iter()
                .map(|z| z.abs().sum(Kind::Float))
                .reduce(|a, b| a + b)
                .expect("a tower has layers")
        };
        (sum(&self.dims), sum(&self.neurons))
    }

    /// The kept units of the final (binary) ζ: every head with the kept dimensions, the kept
    /// neurons, unit scales.
    pub fn units(&self, model: &Clip) -> Result<Vec<LayerUnits>, PruneError> {
        let kept = |z: &Tensor| -> Vec<i64> {
            Vec::<i64>::try_from(z.detach().eq(1.0).nonzero().view([-1])).unwrap_or_default()
        };
        let layers = layerwise::layers(model, self.tower);
        let mut out = Vec::new();
        for (i, (dims, neurons)) in self.dims.iter().zip(&self.neurons).enumerate() {
            let (d, n) = (kept(dims), kept(neurons));
            let values = Tensor::cat(&[dims.detach(), neurons.detach()], 0);
            let binary = values.eq(0.0).logical_or(&values.eq(1.0)).all();
            if !bool::try_from(binary).unwrap_or(false) || d.is_empty() || n.is_empty() {
                return Err(PruneError::Invalid(format!(
                    "{} layer {i}: UPop's ζ is not final (values other than 0 and 1, or nothing kept)",
                    self.tower.name()
                )));
            }
            let heads = layers[i].self_attn.heads;
            let full_dims = layers[i].self_attn.head_dim;
            out.push(LayerUnits {
                tower: self.tower,
                layer: i,
                heads: (0..heads).collect(),
                head_dims: (d.len() as i64 != full_dims).then(|| d.clone()),
                head_scales: vec![1.0; heads as usize],
                neuron_scales: vec![1.0; n.len()],
                neurons: n,
            });
        }
        Ok(out)
    }
}

/// π_t = p·√((1 − cos(π(t+1)/T))/2) (§4.4).
pub fn ratio(p: f64, step: u64, total: u64) -> f64 {
    let x = std::f64::consts::PI * (step + 1) as f64 / total as f64;
    p * ((1.0 - x.cos()) / 2.0).sqrt()
}

/// Whether ζ is updated after global step `step` of `total` (every `interval`, and the last).
pub fn update_due(step: u64, interval: u64, total: u64) -> bool {
    step.is_multiple_of(interval.max(1)) || step + 1 == total
}

/// One update's outcome: the threshold and the new ζ of every module, in the input order.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    pub threshold: f64,
    pub attention: Vec<Vec<f64>>,
    pub mlp: Vec<Vec<f64>>,
}

/// The unified ranking (§4.3) over the modules' accumulated gradients (attention modules and MLP
/// modules, each in vision-then-text layer order): z-score each group (unbiased std), sort all
/// descending, threshold where the weighted cumulative count is nearest π·Σw; a module's entry is
/// kept (ζ = 1) when its standardised gradient is ≤ the threshold or is the module's minimum,
/// else ζ = 1 − π/p.
pub fn rank(attention: &[Vec<f64>], mlp: &[Vec<f64>], p: f64, pi: f64) -> Update {
    let standardise = |modules: &[Vec<f64>]| -> Vec<Vec<f64>> {
        let all: Vec<f64> = modules.iter().flatten().copied().collect();
        let n = all.len() as f64;
        let mean = all.iter().sum::<f64>() / n;
        let var = all.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
        let std = var.sqrt();
        modules
            .iter()
            .map(|m| m.iter().map(|g| (g - mean) / std).collect())
            .collect()
    };
    let (za, zm) = (standardise(attention), standardise(mlp));
    let mut entries: Vec<(f64, f64)> = za
        .iter()
        .flatten()
        .map(|&g| (g, ATTENTION_WEIGHT))
        .chain(zm.iter().flatten().map(|&g| (g, 1.0)))
        .collect();
    entries.sort_by(|a, b| b.0.total_cmp(&a.0));
    let total: f64 = entries.iter().map(|e| e.1).sum();
    let target = total * pi;
    let (mut cum, mut best, mut threshold) = (0.0, f64::INFINITY, f64::NAN);
    for (g, w) in &entries {
        cum += w;
        let d = (cum - target).abs();
        // The first minimum, as argmin returns it.
        if d < best {
            (best, threshold) = (d, *g);
        }
    }
    let prune_to = 1.0 - pi / p;
    let apply = |modules: Vec<Vec<f64>>| -> Vec<Vec<f64>> {
        modules
            .into_iter()
            .map(|g| {
                let min = g.iter().copied().fold(f64::INFINITY, f64::min);
                g.iter()
                    .map(|&x| {
                        if x <= threshold || x <= min {
                            1.0
                        } else {
                            prune_to
                        }
                    })
                    .collect()
            })
            .collect()
    };
    Update {
        threshold,
        attention: apply(za),
        mlp: apply(zm),
    }
}

/// (ζ_a entries, ζ_m entries, weighted unit count Σw) of the towers of a model (§4.3).
pub fn counts(model: &crate::util::clip_config::ClipConfig, towers: &[Tower]) -> (i64, i64, f64) {
    let (mut a, mut m) = (0, 0);
    for tower in towers {
        let shapes = match tower {
            Tower::Vision => model.vision.shapes(),
            Tower::Text => model.text.shapes(),
        };
        for s in shapes {
            a += s.head_dim;
            m += s.intermediate_size;
        }
    }
    (a, m, a as f64 * ATTENTION_WEIGHT + m as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// §4.9 / acceptance check 13: π, the threshold and every ζ pattern at steps 0, 199, 499,
    /// 999 of a 1000-step search at p = 0.5.
    #[test]
    fn update_and_schedule_check_values() {
        let attention = vec![vec![0.30, -0.10, 0.55, 0.02], vec![0.12, 0.80, -0.40, 0.07]];
        let mlp = vec![
            vec![1.5, -0.2, 0.4, 2.2, 0.9, -1.1],
            vec![0.05, 3.0, -0.7, 0.6, 1.2, 0.3],
        ];
        let a = 0.690983;
        let b = 0.292893;
        type Case = (u64, f64, f64, [Vec<f64>; 4]);
        let cases: [Case; 4] = [
            (
                0,
                0.000785,
                1.977104,
                [vec![1.0; 4], vec![1.0; 4], vec![1.0; 6], vec![1.0; 6]],
            ),
            (
                199,
                0.154508,
                1.295589,
                [
                    vec![1.0; 4],
                    vec![1.0, a, 1.0, 1.0],
                    vec![1.0; 6],
                    vec![1.0, a, 1.0, 1.0, 1.0, 1.0],
                ],
            ),
            (
                499,
                0.353553,
                0.345506,
                [
                    vec![1.0, 1.0, b, 1.0],
                    vec![1.0, b, 1.0, 1.0],
                    vec![b, 1.0, 1.0, b, 1.0, 1.0],
                    vec![1.0, b, 1.0, 1.0, b, 1.0],
                ],
            ),
            (
                999,
                0.5,
                -0.132887,
                [
                    vec![0.0, 1.0, 0.0, 1.0],
                    vec![1.0, 0.0, 1.0, 1.0],
                    vec![0.0, 1.0, 1.0, 0.0, 0.0, 1.0],
                    vec![1.0, 0.0, 1.0, 0.0, 0.0, 1.0],
                ],
            ),
        ];
        for (step, pi, thr, zeta) in cases {
            let got = ratio(0.5, step, 1000);
            assert!((got - pi).abs() < 1e-6, "step {step}: π {got}");
            let u = rank(&attention, &mlp, 0.5, got);
            assert!(
                (u.threshold - thr).abs() < 1e-6,
                "step {step}: thr {}",
                u.threshold
            );
            let all = [&u.attention[0], &u.attention[1], &u.mlp[0], &u.mlp[1]];
            for (got, want) in all.iter().zip(&zeta) {
                for (g, w) in got.iter().zip(want) {
                    assert!((g - w).abs() < 1e-6, "step {step}: {got:?} vs {want:?}");
                }
            }
        }
        // π = p at the last step: selected entries exactly 0.
        assert_eq!(ratio(0.5, 999, 1000), 0.5);
        let due: Vec<u64> = (0..1000).filter(|&t| update_due(t, 200, 1000)).collect();
        assert_eq!(due, [0, 200, 400, 600, 800, 999]);
    }

    /// Acceptance check 13: the ViT-L/14 (24 × 1024, 16 heads) + text (12 × 768) configuration.
    #[test]
    fn zeta_counts_for_vit_l14() {
        let mut config = crate::model::create::preset("vit-b32").unwrap();
        config.vision.num_hidden_layers = 24;
        config.vision.hidden_size = 1024;
        config.vision.num_attention_heads = 16;
        config.vision.intermediate_size = 4096;
        config.text.hidden_size = 768;
        config.text.num_attention_heads = 12;
        config.text.intermediate_size = 3072;
        let (a, m, w) = counts(&config, &[Tower::Vision, Tower::Text]);
        assert_eq!((a, m, w), (2_304, 135_168, 218_112.0));
    }

    #[test]
    fn every_module_keeps_its_minimum() {
        // One module whose entries all rank above the threshold still keeps one.
        let attention = vec![vec![0.0, 0.0], vec![0.0, 0.0]];
        let mlp = vec![vec![100.0, 101.0, 102.0], vec![-1.0, -2.0, -3.0]];
        let u = rank(&attention, &mlp, 0.9, 0.9);
        assert_eq!(u.mlp[0].iter().filter(|&&z| z == 1.0).count(), 1);
        assert_eq!(u.mlp[0][0], 1.0);
    }
}
