//! Layer-wise least-squares mask tuning (spec structured-and-analysis.md §3.8, §6b): layer by
//! layer, the kept heads' and then the kept neurons' scales are fitted so the student layer's
//! output matches the teacher's, the student's inputs being recomputed with every scale tuned so
//! far. Normal equations are accumulated in f64 over chunks of samples; the solve is exact: for
//! n > 1 unknowns `(AᵀA² + I)·δ = AᵀA·b'` with `b' = Aᵀb − AᵀA·1` (what converged LSMR with
//! damp = 1 returns, around the prior "scales = 1"), for n = 1 the reference's undamped
//! `δ = b'/AᵀA`.

use super::masked;
use super::{OnFailure, Samples, Target, Tuning};
use crate::model::Clip;
use crate::model::layerwise::{self, Tower};
use crate::prune::PruneError;
use tch::nn::Module;
use tch::{Device, Kind, Tensor};

/// Samples per accumulation chunk: bounds the `[k, chunk·T·D]` f64 products.
const CHUNK: i64 = 32;
/// KW's sanity bound on a scale (failure policy `stop`).
const SCALE_LIMIT: f64 = 10.0;

/// Which units of a layer a solve tuned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    Heads,
    Neurons,
}

/// One solve: the kept units' scales and the reconstruction error `‖A·x − b‖²` before (all
/// scales 1) and after.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LayerTuning {
    pub layer: usize,
    pub part: Part,
    /// Kept unit indices, in order.
    pub units: Vec<i64>,
    pub scales: Vec<f64>,
    /// Why the solve failed (its scales are then not applied).
    pub failure: Option<String>,
    pub error_before: f64,
    pub error_after: f64,
}

/// The exact damped solve around the prior 1 (§6b); `None` when the system is singular or the
/// result is not finite.
pub fn solve(ata: &Tensor, atb: &Tensor) -> Option<Vec<f64>> {
    let ata = ata.to_kind(Kind::Double).to_device(Device::Cpu);
    let atb = atb.to_kind(Kind::Double).to_device(Device::Cpu);
    let n = atb.size()[0];
    let ones = Tensor::ones([n], (Kind::Double, Device::Cpu));
    let b = &atb - ata.mv(&ones);
    let delta = if n == 1 {
        let a = ata.double_value(&[0, 0]);
        let d = if a == 0.0 {
            0.0
        } else {
            b.double_value(&[0]) / a
        };
        Tensor::from_slice(&[d])
    } else {
        let m = ata.mm(&ata) + Tensor::eye(n, (Kind::Double, Device::Cpu));
        let (l, info) = m.linalg_cholesky_ex(false, false);
        if info.int64_value(&[]) != 0 {
            return None;
        }
        ata.mv(&b)
            .unsqueeze(1)
            .cholesky_solve(&l, false)
            .squeeze_dim(1)
    };
    let x = Vec::<f64>::try_from(&(delta + 1.0)).ok()?;
    x.iter().all(|v| v.is_finite()).then_some(x)
}

/// Accumulated normal equations of one solve.
struct Normal {
    ata: Tensor,
    atb: Tensor,
    bb: f64,
}

impl Normal {
    fn new(n: i64) -> Self {
        let opts = (Kind::Double, Device::Cpu);
        Normal {
            ata: Tensor::zeros([n, n], opts),
            atb: Tensor::zeros([n], opts),
            bb: 0.0,
        }
    }

    /// Adds rows `b ≈ aᵀ·x + bias` (`a`: `[k, R]`, `b`: `[R]`) to a system with a trailing bias
    /// unknown.
    fn add_with_bias(&mut self, a: &Tensor, b: &Tensor) {
        let k = a.size()[0];
        let asum = a.sum_dim_intlist(1, false, Kind::Double);
        let mut block = self.ata.narrow(0, 0, k).narrow(1, 0, k);
        block += a.mm(&a.tr());
        let mut col = self.ata.narrow(0, 0, k).select(1, k);
        col += &asum;
        let mut row = self.ata.select(0, k).narrow(0, 0, k);
        row += &asum;
        let mut corner = self.ata.get(k).get(k);
        corner += b.size()[0] as f64;
        let mut head_b = self.atb.narrow(0, 0, k);
        head_b += a.mv(b);
        let mut bias_b = self.atb.get(k);
        bias_b += b.sum(Kind::Double);
        self.bb += b.dot(b).double_value(&[]);
    }

    /// `‖A·x − b‖²` over the first `k` unknowns (the model's scales; a bias unknown is dropped).
    fn error(&self, x: &[f64], k: i64) -> f64 {
        let x = Tensor::from_slice(&x[..k as usize]);
        let a = self.ata.narrow(0, 0, k).narrow(1, 0, k);
        let b = self.atb.narrow(0, 0, k);
        (x.dot(&a.mv(&x)) - x.dot(&b) * 2.0).double_value(&[]) + self.bb
    }
}

/// Rows of `t` (`[B, T, …]`) at the valid tokens (`[B, T]`), or all rows, as `[R, …]`.
fn tokens(t: &Tensor, valid: Option<&Tensor>) -> Tensor {
    let flat = t.flatten(0, 1);
    match valid {
        Some(v) => flat.index_select(0, &v.flatten(0, 1).nonzero().squeeze_dim(1)),
        None => flat,
    }
}

fn kept(row: &Tensor) -> Vec<i64> {
    Vec::<f32>::try_from(&row.to_device(Device::Cpu))
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter(|(_, v)| **v != 0.0)
        .map(|(i, _)| i as i64)
        .collect()
}

/// Tunes `masks` (`[L, H]`, `[L, I]`, CPU, modified in place) against the teacher's masks.
///
/// Per layer, three passes over the samples in chunks: (1) the teacher's layer, whose output
/// replaces its input in place, and the student's unmasked attention context, with the
/// attention's normal equations; (2) the student's residual after its tuned attention, which
/// replaces the context in place, with the MLP's normal equations; (3) the student's layer
/// output, in place of its input. Each branch is computed once per pass; memory holds three
/// `[N, T, D]` tensors (four with `mlp_target = branch`).
pub fn tune(
    model: &Clip,
    tower: Tower,
    samples: &Samples,
    (heads, neurons): (&mut Tensor, &mut Tensor),
    (teacher_heads, teacher_neurons): (&Tensor, &Tensor),
    settings: &Tuning,
) -> Result<Vec<LayerTuning>, PruneError> {
    let _g = tch::no_grad_guard();
    let device = model.vs.device();
    let on = |t: &Tensor| t.to_device(device);
    let (th, tn) = (on(teacher_heads), on(teacher_neurons));
    let n = samples.inputs.x.size()[0];
    // Written in place below: copies, never the samples' own inputs.
    let student = samples.inputs.x.copy();
    let teacher = samples.inputs.x.copy();
    let work = student.empty_like();
    let teacher_res2 = (settings.mlp_target == Target::Branch).then(|| student.empty_like());
    let layers = layerwise::layers(model, tower);
    let mut out = Vec::new();
    for (l, layer) in layers.iter().enumerate() {
        let li = l as i64;
        let at = |t: &Tensor, s: i64, len: i64| t.narrow(0, s, len);
        let mask = |s, len| samples.inputs.mask.as_ref().map(|m| at(m, s, len));
        let valid = |s, len| samples.valid.as_ref().map(|v| at(v, s, len));
        let (t_head, t_neuron) = (th.get(li), tn.get(li));
        let attn = &layer.self_attn;
        let fc2 = &layer.mlp.fc2;
        let b2 = fc2.bs.as_ref().expect("fc2 has a bias");
        let b_o = attn.out_proj.bs.as_ref().expect("out_proj has a bias");

        // Pass 1: attention. One scale per kept head plus a bias unknown.
        let head_units = kept(&heads.get(li));
        let tune_heads = !head_units.is_empty() && (l > 0 || settings.first_layer_heads);
        let k = head_units.len() as i64;
        let mut eq = Normal::new(k + 1);
        let s_head = on(&heads.get(li));
        let dh = attn.head_dim;
        for (s, len) in layerwise::ranges(n, CHUNK) {
            let (sx, mut tx) = (at(&student, s, len), at(&teacher, s, len));
            let m = mask(s, len);
            let ctx = attn.context(&layer.layer_norm1.forward(&sx), m.as_ref());
            at(&work, s, len).copy_(&ctx);
            let t_ctx =
                masked::context(layer, &layer.layer_norm1.forward(&tx), m.as_ref(), &t_head);
            let t_attn = attn.project(&t_ctx);
            if tune_heads {
                let ctx = masked::apply_heads(layer, &ctx, &s_head);
                let w_o = &attn.out_proj.ws;
                let per_head: Vec<Tensor> = head_units
                    .iter()
                    .map(|&h| {
                        let p = ctx
                            .narrow(2, h * dh, dh)
                            .matmul(&w_o.narrow(1, h * dh, dh).tr());
                        tokens(&p, valid(s, len).as_ref()).flatten(0, -1)
                    })
                    .collect();
                let a = Tensor::stack(&per_head, 0)
                    .to_kind(Kind::Double)
                    .to_device(Device::Cpu);
                let target = match settings.attention_target {
                    Target::Residual => &t_attn + &tx - b_o - &sx,
                    Target::Branch => &t_attn - b_o,
                };
                let b = tokens(&target, valid(s, len).as_ref())
                    .flatten(0, -1)
                    .to_kind(Kind::Double)
                    .to_device(Device::Cpu);
                eq.add_with_bias(&a, &b);
            }
            // The teacher's layer output becomes its next input.
            let t_res2 = &tx + t_attn;
            let t_hidden =
                layer.mlp.hidden(&layer.layer_norm2.forward(&t_res2)) * t_neuron.view([1, 1, -1]);
            let t_out = &t_res2 + fc2.forward(&t_hidden);
            if let Some(r) = &teacher_res2 {
                at(r, s, len).copy_(&t_res2);
            }
            tx.copy_(&t_out);
        }
        if tune_heads {
            let record = finish(
                l,
                Part::Heads,
                head_units,
                &eq,
                k,
                settings.on_failure,
                heads,
            );
            let stop = record.failure.is_some() && settings.on_failure == OnFailure::Stop;
            out.push(record);
            if stop {
                break;
            }
        }

        // Pass 2: the MLP, with the attention scales just tuned. One scale per kept neuron.
        let neuron_units = kept(&neurons.get(li));
        let s_head = on(&heads.get(li));
        let k = neuron_units.len() as i64;
        let idx = Tensor::from_slice(&neuron_units).to_device(device);
        let w_k = fc2.ws.index_select(1, &idx);
        let w64 = w_k.to_kind(Kind::Double).to_device(Device::Cpu);
        let mut eq = Normal::new(k);
        let mut hh = Tensor::zeros([k, k], (Kind::Double, Device::Cpu));
        for (s, len) in layerwise::ranges(n, CHUNK) {
            let (sx, tx) = (at(&student, s, len), at(&teacher, s, len));
            let mut slot = at(&work, s, len);
            let res2 = &sx + attn.project(&masked::apply_heads(layer, &slot, &s_head));
            slot.copy_(&res2);
            if k == 0 {
                continue;
            }
            let hidden = layer
                .mlp
                .hidden(&layer.layer_norm2.forward(&res2))
                .index_select(2, &idx);
            // `tx` now holds the teacher's layer output.
            let target = match &teacher_res2 {
                None => &tx - b2 - &res2,
                Some(r) => &tx - at(r, s, len) - b2,
            };
            let v = valid(s, len);
            let h = tokens(&hidden, v.as_ref());
            let bt = tokens(&target, v.as_ref());
            // The k×k product runs in the model's precision per chunk (≤ CHUNK·T rows; in f64
            // it dominated the stage) and is summed over chunks in f64.
            hh += h.tr().mm(&h).to_kind(Kind::Double).to_device(Device::Cpu);
            let bw = bt.matmul(&w_k).to_kind(Kind::Double).to_device(Device::Cpu);
            let h64 = h.to_kind(Kind::Double).to_device(Device::Cpu);
            eq.atb += (&h64 * bw).sum_dim_intlist(0, false, Kind::Double);
            eq.bb += bt
                .to_kind(Kind::Double)
                .square()
                .sum(Kind::Double)
                .double_value(&[]);
        }
        if k > 0 {
            eq.ata = hh * w64.tr().mm(&w64);
            let record = finish(
                l,
                Part::Neurons,
                neuron_units,
                &eq,
                k,
                settings.on_failure,
                neurons,
            );
            let stop = record.failure.is_some() && settings.on_failure == OnFailure::Stop;
            out.push(record);
            if stop {
                break;
            }
        }

        // Pass 3: the student's layer output becomes its next input.
        if l + 1 < layers.len() {
            let s_neuron = on(&neurons.get(li));
            for (s, len) in layerwise::ranges(n, CHUNK) {
                let res2 = at(&work, s, len);
                let hidden =
                    layer.mlp.hidden(&layer.layer_norm2.forward(&res2)) * s_neuron.view([1, 1, -1]);
                at(&student, s, len).copy_(&(&res2 + fc2.forward(&hidden)));
            }
        }
    }
    Ok(out)
}

/// Solves one system, applies the scales to the kept entries of `masks[layer]` unless the solve
/// failed, and records it.
fn finish(
    layer: usize,
    part: Part,
    units: Vec<i64>,
    eq: &Normal,
    k: i64,
    policy: OnFailure,
    masks: &mut Tensor,
) -> LayerTuning {
    let before = eq.error(&vec![1.0; k as usize], k);
    let solved = solve(&eq.ata, &eq.atb);
    let failure = match &solved {
        None => Some("the normal equations are singular or not finite".to_string()),
        Some(x) if policy == OnFailure::Stop => x[..k as usize]
            .iter()
            .find(|v| v.abs() > SCALE_LIMIT)
            .map(|v| format!("scale {v} outside [−{SCALE_LIMIT}, {SCALE_LIMIT}]")),
        Some(_) => None,
    };
    let scales = solved
        .as_ref()
        .map(|x| x[..k as usize].to_vec())
        .unwrap_or_default();
    let after = if failure.is_none() {
        eq.error(&scales, k)
    } else {
        before
    };
    if failure.is_none() {
        let _g = tch::no_grad_guard();
        let idx = Tensor::from_slice(&units);
        let mut row = masks.get(layer as i64);
        let current = row.index_select(0, &idx);
        let new = current * Tensor::from_slice(&scales).to_kind(Kind::Float);
        let _ = row.index_copy_(0, &idx, &new);
    }
    LayerTuning {
        layer,
        part,
        units,
        scales,
        failure,
        error_before: before,
        error_after: after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spec §7.8: the damped solution, not the undamped one.
    #[test]
    fn solver_toy() {
        let ata = Tensor::from_slice(&[4.0, 1.0, 0.5, 1.0, 3.0, 0.2, 0.5, 0.2, 2.0]).view([3, 3]);
        let atb = Tensor::from_slice(&[6.0, 4.5, 2.0]);
        let x = solve(&ata, &atb).unwrap();
        for (got, want) in x.iter().zip([1.13336681, 1.07001469, 0.69342234]) {
            assert!((got - want).abs() < 1e-8, "{x:?}");
        }
        assert!((x[2] - 0.60356975).abs() > 1e-2);
        // One unknown: undamped; a zero diagonal leaves the prior.
        let one = solve(
            &Tensor::from_slice(&[2.0]).view([1, 1]),
            &Tensor::from_slice(&[3.0]),
        )
        .unwrap();
        assert_eq!(one, [1.5]);
        let zero = solve(
            &Tensor::from_slice(&[0.0]).view([1, 1]),
            &Tensor::from_slice(&[3.0]),
        )
        .unwrap();
        assert_eq!(zero, [1.0]);
    }
}
