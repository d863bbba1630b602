//! PLATON's importance scores and schedule (spec structured-and-analysis.md §5): per masked tensor
//! the windowed sensitivity Ī and uncertainty Ū of |θ ⊙ ∇θ|, the cubic remaining-ratio schedule,
//! and the global threshold over all masked tensors (with the ID-pruning reference's per-tensor
//! floor), each weight's score optionally multiplied by the intrinsic dimension of its Linear's
//! output (§5.4).
//!
//! Pure tensor arithmetic on the caller's tensors; the training loop that calls it lives in the
//! `platon` method. Invariant: a tensor's state only changes through [`Scores::update`].

use super::PruneError;
use tch::{Kind, Tensor};

/// What ranks the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Importance {
    /// Ī ⊙ Ū (§5.1).
    Platon,
    /// |θ ⊙ ∇θ| of the current step.
    Taylor,
    /// |θ|.
    Magnitude,
}

/// PLATON's constants (§5.1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Smoothing {
    pub beta1: f64,
    pub beta2: f64,
    /// The window ΔT.
    pub window: u64,
}

/// Ī, Ū and the window buffer of one tensor.
pub struct Scores {
    pub ibar: Tensor,
    pub ubar: Tensor,
    pub ibuf: Tensor,
}

impl Scores {
    /// Zero states in `t`'s precision (f32 for the model's weights; f64 in the reference tests).
    pub fn zeros_like(t: &Tensor) -> Scores {
        let z = || t.detach().zeros_like();
        Scores {
            ibar: z(),
            ubar: z(),
            ibuf: z(),
        }
    }

    /// The update at step `t` (1-based, as the reference counts) with this step's sensitivity
    /// `i_t = |θ ⊙ ∇θ|` (§5.1 steps 2–3).
    pub fn update(&mut self, i_t: &Tensor, t: u64, s: Smoothing) {
        let _g = tch::no_grad_guard();
        let (local, upd) = (t % s.window, t / s.window);
        if local == 0 {
            self.ibar = &self.ibar * s.beta1 + &self.ibuf * (1.0 - s.beta1);
            if s.beta2 > 0.0 && s.beta2 < 1.0 {
                self.ubar =
                    &self.ubar * s.beta2 + (&self.ibuf - &self.ibar).abs() * (1.0 - s.beta2);
            } else if s.beta2 == 2.0 {
                let u = upd as f64;
                self.ubar = (&self.ubar * u + (&self.ibuf - &self.ibar).square()) / (u + 1.0);
            }
            self.ibuf = i_t.to_kind(self.ibuf.kind()).copy();
        } else {
            let l = local as f64;
            self.ibuf = (&self.ibuf * l + i_t.to_kind(self.ibuf.kind())) / (l + 1.0);
        }
    }

    /// S (§5.1 step 4).
    pub fn score(&self, s: Smoothing) -> Tensor {
        if s.beta2 > 0.0 && s.beta2 < 1.0 {
            &self.ibar * &self.ubar
        } else if s.beta2 == 1.0 {
            self.ibar.copy()
        } else if s.beta2 == 2.0 {
            &self.ibar * self.ubar.sqrt()
        } else {
            &self.ibar * (&self.ibuf - &self.ibar).abs()
        }
    }
}

/// The cubic remaining-ratio schedule (§5.2).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// r0 and rT: fractions of the masked weights that remain.
    pub initial: f64,
    pub last: f64,
    /// t_i and t_f in steps.
    pub initial_warmup: u64,
    pub final_warmup: u64,
    pub total: u64,
    pub window: u64,
    /// Also mask at every epoch boundary (the ID-pruning reference's rule), with this epoch length.
    pub epoch_length: Option<u64>,
}

impl Schedule {
    /// The remaining ratio at step `t` and whether the weights are masked then.
    pub fn at(&self, t: u64) -> (f64, bool) {
        if t <= self.initial_warmup {
            (self.initial, false)
        } else if t > self.total.saturating_sub(self.final_warmup) {
            (self.last, true)
        } else {
            let span = (self.total - self.initial_warmup - self.final_warmup).max(1) as f64;
            let x = 1.0 - (t - self.initial_warmup) as f64 / span;
            let r = self.last + (self.initial - self.last) * x.powi(3);
            let at_epoch = self.epoch_length.is_some_and(|l| t.is_multiple_of(l));
            (r, t.is_multiple_of(self.window) || at_epoch)
        }
    }
}

/// One masking event: the step, the remaining ratio, the threshold (none at the exact final
/// event) and the entries zeroed.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Event {
    pub step: u64,
    pub remaining: f64,
    pub threshold: Option<f64>,
    pub zeroed: i64,
}

/// Scores the masked tensors after every optimiser step and masks them on the schedule.
pub struct Pruner {
    pub importance: Importance,
    pub smoothing: Smoothing,
    pub schedule: Schedule,
    /// The ID-pruning reference's per-tensor floor.
    pub floor: bool,
    /// Per masked tensor, its Linear's intrinsic dimension (`use_id`).
    pub ids: Option<Vec<f64>>,
    /// The fraction of the masked entries removed at the end.
    pub sparsity: f64,
    pub scores: Vec<Scores>,
}

impl Pruner {
    /// Restarts every tensor's state from 0 (the reference's new pruner each epoch).
    pub fn reset(&mut self, masked: &[Tensor]) {
        self.scores = masked.iter().map(Scores::zeros_like).collect();
    }

    /// After optimiser step `t` (1-based) with the step's gradients still on `masked`: updates
    /// the importance and, when the schedule says so (and at the last step, exactly to the
    /// target count), zeroes weights. Returns the masks and the event when it masked.
    pub fn step(
        &mut self,
        masked: &[Tensor],
        t: u64,
    ) -> Result<Option<(Vec<Tensor>, Event)>, PruneError> {
        let (remaining, masking) = self.schedule.at(t);
        let last = t == self.schedule.total;
        let masking = masking || last;
        let (importance, smoothing) = (self.importance, self.smoothing);
        // |θ·∇θ| is PLATON's input at every step; the scores themselves (a tensor per masked
        // tensor) are only formed when this step masks.
        let sensitivity = |w: &Tensor| {
            let g = w.grad();
            if g.defined() {
                (w * &g).abs()
            } else {
                w.zeros_like()
            }
        };
        let current: Vec<Tensor> = tch::no_grad(|| {
            let mut out = vec![];
            for (w, s) in masked.iter().zip(self.scores.iter_mut()) {
                match importance {
                    Importance::Platon => {
                        s.update(&sensitivity(w), t, smoothing);
                        if masking {
                            out.push(s.score(smoothing));
                        }
                    }
                    Importance::Taylor if masking => out.push(sensitivity(w)),
                    Importance::Magnitude if masking => out.push(w.abs()),
                    _ => {}
                }
            }
            out
        });
        if !masking {
            return Ok(None);
        }
        let weighted: Vec<Tensor> = match &self.ids {
            Some(ids) => current.iter().zip(ids).map(|(s, id)| s * *id).collect(),
            None => current,
        };
        let (threshold, masks) = if last {
            let n: i64 = masked.iter().map(|w| w.numel() as i64).sum();
            let count = (n as f64 * self.sparsity).round() as i64;
            (None, mask_exactly(masked, &weighted, count))
        } else {
            let thr = threshold(&weighted, remaining)?;
            (Some(thr), mask(masked, &weighted, thr, self.floor))
        };
        let zeroed = masks
            .iter()
            .map(|m| m.sum(Kind::Int64).int64_value(&[]))
            .sum();
        Ok(Some((
            masks,
            Event {
                step: t,
                remaining,
                threshold,
                zeroed,
            },
        )))
    }
}

/// The global threshold (§5.3): the k-th smallest of all scores, k = trunc(N·(1 − r)).
pub fn threshold(scores: &[Tensor], remaining: f64) -> Result<f64, PruneError> {
    let all = Tensor::cat(
        &scores.iter().map(|s| s.flatten(0, -1)).collect::<Vec<_>>(),
        0,
    );
    let n = all.numel() as f64;
    let k = (n * (1.0 - remaining)).trunc() as i64;
    if k < 1 {
        return Err(PruneError::Invalid(format!(
            "remaining ratio {remaining} of {n} weights prunes none (k = 0)"
        )));
    }
    Ok(all.kthvalue(k, 0, false).0.double_value(&[]))
}

/// Zeroes the entries of `params` whose score is below the threshold — with `floor`, below the
/// larger of the threshold and the tensor's third-smallest score (the ID-pruning reference:
/// "remain at least 3 weights", which in effect zeroes a tensor's two lowest at every event).
/// Returns the masks (true = zeroed).
pub fn mask(params: &[Tensor], scores: &[Tensor], thr: f64, floor: bool) -> Vec<Tensor> {
    let _g = tch::no_grad_guard();
    params
        .iter()
        .zip(scores)
        .map(|(p, s)| {
            let mut cutoff = thr;
            if floor && s.numel() >= 3 {
                cutoff = cutoff.max(s.flatten(0, -1).kthvalue(3, 0, false).0.double_value(&[]));
            }
            // The cutoff is one of the scores, so the comparison is exact in their precision.
            let zero = s.lt(cutoff);
            let _ = p.shallow_clone().masked_fill_(&zero, 0.0);
            zero
        })
        .collect()
}

/// Zeroes exactly `count` entries across `params`: the lowest scores, ties by position (the
/// final masking, so the achieved sparsity is the target exactly). Returns the masks.
pub fn mask_exactly(params: &[Tensor], scores: &[Tensor], count: i64) -> Vec<Tensor> {
    let _g = tch::no_grad_guard();
    let flat: Vec<Tensor> = scores.iter().map(|s| s.flatten(0, -1)).collect();
    let all = Tensor::cat(&flat, 0);
    let n = all.numel() as i64;
    // A stable sort keeps equal scores in position order.
    let (_, order) = all.sort_stable(true, 0, false);
    let mut zero = Tensor::zeros([n], (Kind::Bool, all.device()));
    let _ = zero.index_fill_(0, &order.narrow(0, 0, count.clamp(0, n)), 1);
    let mut start = 0;
    params
        .iter()
        .map(|p| {
            let len = p.numel() as i64;
            let m = zero.narrow(0, start, len).view(p.size().as_slice());
            start += len;
            let _ = p.shallow_clone().masked_fill_(&m, 0.0);
            m
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// §5.7 / check 14: the windowed trace of one weight, in f64 within 1e-8.
    #[test]
    fn windowed_trace() {
        let s = Smoothing {
            beta1: 0.85,
            beta2: 0.95,
            window: 2,
        };
        let mut st = Scores::zeros_like(&Tensor::zeros([1], (Kind::Double, tch::Device::Cpu)));
        let want = [
            (0.5, 0.0, 0.0, 0.0),
            (3.0, 0.075, 0.02125, 0.00159375),
            (2.5, 0.075, 0.02125, 0.00159375),
            (0.0, 0.43875, 0.12325, 0.05407594),
            (2.0, 0.43875, 0.12325, 0.05407594),
            (1.0, 0.6729375, 0.18344063, 0.12344408),
        ];
        for (t, (i, w)) in [1.0f64, 3.0, 2.0, 0.0, 4.0, 1.0]
            .iter()
            .zip(want)
            .enumerate()
        {
            st.update(&Tensor::from_slice(&[*i]), t as u64 + 1, s);
            let got = [
                st.ibuf.double_value(&[0]),
                st.ibar.double_value(&[0]),
                st.ubar.double_value(&[0]),
                st.score(s).double_value(&[0]),
            ];
            for (g, w) in got.iter().zip([w.0, w.1, w.2, w.3]) {
                assert!((g - w).abs() < 1e-8, "t {}: {got:?} vs {w:?}", t + 1);
            }
        }
    }

    /// §5.7: the schedule of `train_caption.py`.
    #[test]
    fn schedule_values() {
        let s = Schedule {
            initial: 1.0,
            last: 0.2,
            initial_warmup: 14168,
            final_warmup: 14168,
            total: 5 * 14168,
            window: 10,
            epoch_length: None,
        };
        assert_eq!(s.at(14168), (1.0, false));
        for (t, r) in [
            (14169, 0.999944),
            (28336, 0.437037),
            (35420, 0.3),
            (42504, 0.22963),
            (56672, 0.2),
        ] {
            assert!((s.at(t).0 - r).abs() < 1e-6, "r({t}) = {}", s.at(t).0);
        }
        assert_eq!(s.at(56673), (0.2, true));
        assert!(s.at(28340).1 && !s.at(28341).1);
        let idvl = Schedule {
            epoch_length: Some(14168),
            ..s
        };
        // 28336 = 2 epochs of 14168, not a multiple of ΔT: only the ID-pruning rule masks.
        assert!(idvl.at(28336).1);
        assert!(!s.at(28336).1);
    }

    /// §5.7: the threshold toy, the reference's rule and the ID-pruning floor.
    #[test]
    fn threshold_toy() {
        let a = Tensor::from_slice(&[0.5f32, 0.1, 0.9, 0.35, 0.7]) * 2.0; // ID 2
        let b = Tensor::from_slice(&[0.25f32, 0.8, 0.05, 0.6, 0.4]); // ID 1
        let scores = [a, b];
        let thr = threshold(&scores, 0.5).unwrap();
        assert!((thr - 0.6).abs() < 1e-6);
        let zeroed = |floor| {
            let params = [
                Tensor::ones([5], (Kind::Float, tch::Device::Cpu)),
                Tensor::ones([5], (Kind::Float, tch::Device::Cpu)),
            ];
            mask(&params, &scores, thr, floor)
                .iter()
                .map(|m| {
                    Vec::<bool>::try_from(m)
                        .unwrap()
                        .iter()
                        .enumerate()
                        .filter(|(_, z)| **z)
                        .map(|(i, _)| i)
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(zeroed(false), [vec![1], vec![0, 2, 4]]);
        assert_eq!(zeroed(true), [vec![1, 3], vec![0, 2, 4]]);
        // k = 0 is an error, not a silent no-op.
        assert!(threshold(&scores, 0.95).is_err());
        // Exactly the target count, ties by position.
        let params = [
            Tensor::ones([5], (Kind::Float, tch::Device::Cpu)),
            Tensor::ones([5], (Kind::Float, tch::Device::Cpu)),
        ];
        let tied = [
            Tensor::from_slice(&[1.0f32, 0.0, 0.0, 2.0, 0.0]),
            Tensor::from_slice(&[0.0f32, 3.0, 3.0, 3.0, 3.0]),
        ];
        let m = mask_exactly(&params, &tied, 3);
        assert_eq!(
            Vec::<bool>::try_from(&m[0]).unwrap(),
            [false, true, true, false, true]
        );
        assert_eq!(Vec::<bool>::try_from(&m[1]).unwrap(), [false; 5]);
        assert_eq!(params[0].sum(Kind::Float).double_value(&[]), 2.0);
    }
}
