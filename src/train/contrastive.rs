//! The task losses of training that involves both towers: UPop's image–text contrastive loss
//! (spec structured-and-analysis.md §4.2, ALBEF-style, with a momentum model and a feature queue)
//! and the zero-shot class head recomputed through a training text tower. Shared by UPop's search
//! and retraining after it.
//!
//! Invariants: the momentum model never receives gradients; the queue holds the student's
//! features of past steps, written after each step (every micro-batch of a step sees the same
//! queue, as the reference's ranks do); all its state is exposed for checkpoints.

use crate::model::clip::{Gates, TextTower};
use crate::model::{Clip, TokenBatch, zeroshot};
use tch::nn::Module;
use tch::{Kind, Tensor};

/// Text features through the (optionally ζ-masked) text tower, not normalised.
pub fn text_features(model: &Clip, tokens: &TokenBatch, gates: Option<&[Gates]>) -> Tensor {
    let h = model.text.hidden(tokens, gates);
    model.text_projection.forward(&model.text.pool(&h, tokens))
}

/// The zero-shot head `[E, C]` from every class's prompts (`tokens`: `classes` × templates, class
/// by class), with gradients through the text tower.
pub fn class_head(
    model: &Clip,
    tokens: &TokenBatch,
    classes: i64,
    gates: Option<&[Gates]>,
) -> Tensor {
    let f = zeroshot::normalize(&text_features(model, tokens, gates));
    let e = f.size()[1];
    let f = f.view([classes, -1, e]).mean_dim(1, false, Kind::Float);
    zeroshot::normalize(&f).tr()
}

/// The momentum model and the queue of the contrastive loss.
pub struct Contrastive {
    pub momentum: Clip,
    mu: f64,
    images: Tensor,
    texts: Tensor,
    /// Image id of each queued pair (−100: empty).
    ids: Tensor,
    /// The next row to write, `[1]`.
    ptr: Tensor,
    pending: Vec<(Tensor, Tensor, Tensor)>,
}

impl Contrastive {
    /// A momentum copy of `model` and a queue of `size` random unit features (the reference's
    /// initialisation; libtorch's generator draws them).
    pub fn new(model: &Clip, size: i64, mu: f64) -> Contrastive {
        let device = model.vs.device();
        let momentum = Clip::new(&model.config, device);
        let source = model.vs.variables();
        tch::no_grad(|| {
            for (name, t) in momentum.vs.variables() {
                t.shallow_clone().copy_(&source[&name]);
            }
        });
        let e = model.config.projection_dim;
        let unit = || zeroshot::normalize(&Tensor::randn([size, e], (Kind::Float, device)));
        Contrastive {
            momentum,
            mu,
            images: unit(),
            texts: unit(),
            ids: Tensor::full([size], -100, (Kind::Int64, device)),
            ptr: Tensor::zeros([1], (Kind::Int64, device)),
            pending: vec![],
        }
    }

    /// The queue's length.
    pub fn queue_len(&self) -> i64 {
        self.ids.size()[0]
    }

    /// Everything that changes, by name, for a checkpoint.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> = self
            .momentum
            .vs
            .variables()
            .into_iter()
            .map(|(n, t)| (format!("contrastive.momentum.{n}"), t))
            .collect();
        for (n, t) in [
            ("images", &self.images),
            ("texts", &self.texts),
            ("ids", &self.ids),
            ("ptr", &self.ptr),
        ] {
            out.push((format!("contrastive.queue.{n}"), t.shallow_clone()));
        }
        out
    }

    /// θ_m ← μ·θ_m + (1 − μ)·θ, once per step before its first micro-batch (ζ are not model
    /// variables, so they stay out).
    pub fn begin_step(&mut self, model: &Clip) {
        let source = model.vs.variables();
        let _g = tch::no_grad_guard();
        for (name, mut t) in self.momentum.vs.variables() {
            let _ = t
                .g_mul_scalar_(self.mu)
                .g_add_(&(&source[&name] * (1.0 - self.mu)));
        }
    }

    /// One micro-batch's loss (§4.2 steps 1–5): `f_i`, `f_t` are the student's unit features of
    /// `pixels` and `tokens`, `ids` each pair's image id, `alpha` the distillation weight. The
    /// student features are kept for [`Contrastive::end_step`].
    #[allow(clippy::too_many_arguments)]
    pub fn loss(
        &mut self,
        model: &Clip,
        pixels: &Tensor,
        tokens: &TokenBatch,
        f_i: &Tensor,
        f_t: &Tensor,
        ids: &Tensor,
        alpha: f64,
    ) -> Tensor {
        tch::no_grad(|| {
            let _ = model.logit_scale.shallow_clone().clamp_(0.0, 4.6052);
        });
        let s = model.logit_scale.exp();
        let m = &self.momentum;
        let (targets_i2t, targets_t2i, images_all, texts_all) = tch::no_grad(|| {
            let idx_all = Tensor::cat(&[ids, &self.ids], 0);
            let positives = ids
                .view([-1, 1])
                .eq_tensor(&idx_all.view([1, -1]))
                .to_kind(Kind::Float);
            let sim = &positives / positives.sum_dim_intlist(1, true, Kind::Float);
            let f_im = zeroshot::normalize(&m.image_features(pixels));
            // The reference's momentum text path ends in the student's `ln_final`.
            let h = m.text.hidden(tokens, None);
            let pooled = model
                .text
                .final_layer_norm
                .forward(&TextTower::eos_rows(&h, tokens));
            let f_tm = zeroshot::normalize(&m.text_projection.forward(&pooled));
            let images_all = Tensor::cat(&[&f_im, &self.images], 0);
            let texts_all = Tensor::cat(&[&f_tm, &self.texts], 0);
            let s = s.detach();
            let t_i2t = (&s * f_im.matmul(&texts_all.tr())).softmax(1, Kind::Float) * alpha
                + &sim * (1.0 - alpha);
            let t_t2i = (&s * f_tm.matmul(&images_all.tr())).softmax(1, Kind::Float) * alpha
                + &sim * (1.0 - alpha);
            (t_i2t, t_t2i, images_all, texts_all)
        });
        self.pending
            .push((f_i.detach(), f_t.detach(), ids.shallow_clone()));
        let loss = |f: &Tensor, all: &Tensor, t: &Tensor| {
            -((&s * f.matmul(&all.tr())).log_softmax(1, Kind::Float) * t)
                .sum_dim_intlist(1, false, Kind::Float)
                .mean(Kind::Float)
        };
        (loss(f_i, &texts_all, &targets_i2t) + loss(f_t, &images_all, &targets_t2i)) / 2.0
    }

    /// Writes the step's student features and ids at the queue pointer (§4.2 step 6).
    pub fn end_step(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let _g = tch::no_grad_guard();
        let cat = |k: usize| {
            let parts: Vec<Tensor> = self
                .pending
                .iter()
                .map(|p| [&p.0, &p.1, &p.2][k].shallow_clone())
                .collect();
            Tensor::cat(&parts, 0)
        };
        let (images, texts, ids) = (cat(0), cat(1), cat(2));
        self.pending.clear();
        let n = images.size()[0];
        let size = self.ids.size()[0];
        let ptr = self.ptr.int64_value(&[0]);
        self.images.narrow(0, ptr, n).copy_(&images);
        self.texts.narrow(0, ptr, n).copy_(&texts);
        self.ids.narrow(0, ptr, n).copy_(&ids);
        let _ = self.ptr.fill_((ptr + n) % size);
    }
}
