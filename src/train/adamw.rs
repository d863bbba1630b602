//! AdamW with PyTorch 2.x semantics (decoupled weight decay applied first, bias-corrected
//! moments; spec pruning-unstructured.md §8.3) over an explicit list of tensors, so a stage
//! trains exactly the set it names, whatever VarStore the tensors live in.

use tch::Tensor;

/// AdamW with PyTorch 2.x semantics (spec §8.3), over an explicit list of tensors.
pub struct AdamW {
    lr: f64,
    weight_decay: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    step: i32,
    moments: Vec<(Tensor, Tensor)>,
}

impl AdamW {
    pub fn new(params: &[Tensor], lr: f64, weight_decay: f64) -> AdamW {
        AdamW {
            lr,
            weight_decay,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            step: 0,
            moments: params
                .iter()
                .map(|p| (p.zeros_like(), p.zeros_like()))
                .collect(),
        }
    }

    /// Steps taken (bias correction depends on it).
    pub fn steps(&self) -> i32 {
        self.step
    }

    /// The first and second moments as named tensors sharing the optimiser's storage, for a
    /// checkpoint to save or overwrite in place; with [`AdamW::set_steps`] that is the whole
    /// state.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.moments
            .iter()
            .enumerate()
            .flat_map(|(i, (m, v))| {
                [
                    (format!("adamw.m.{i}"), m.shallow_clone()),
                    (format!("adamw.v.{i}"), v.shallow_clone()),
                ]
            })
            .collect()
    }

    pub fn set_steps(&mut self, steps: i32) {
        self.step = steps;
    }

    /// Clears the gradients of `params` (a step's are summed into them otherwise).
    pub fn zero_grad(params: &[Tensor]) {
        for p in params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// One step on `params` (the same list as at construction) from their gradients.
    pub fn step(&mut self, params: &[Tensor]) {
        let _g = tch::no_grad_guard();
        self.step += 1;
        let bc1 = 1.0 - self.beta1.powi(self.step);
        let bc2_sqrt = (1.0 - self.beta2.powi(self.step)).sqrt();
        for (p, (m, v)) in params.iter().zip(&mut self.moments) {
            let g = p.grad();
            // A tensor the loss did not reach is left alone (PyTorch skips `grad is None`).
            if !g.defined() {
                continue;
            }
            let mut p = p.shallow_clone();
            let _ = p.g_mul_scalar_(1.0 - self.lr * self.weight_decay);
            let _ = m
                .g_mul_scalar_(self.beta1)
                .g_add_(&(&g * (1.0 - self.beta1)));
            let _ = v
                .g_mul_scalar_(self.beta2)
                .g_add_(&(g.square() * (1.0 - self.beta2)));
            let denom = v.sqrt() / bc2_sqrt + self.eps;
            let _ = p.g_sub_(&(&*m / &denom * (self.lr / bc1)));
        }
    }
}
