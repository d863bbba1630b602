//! What the methods that train while they prune (UPop, PLATON) share: the training split as
//! samples (a retrieval dataset's caption pairs, a classification dataset's labelled images), a
//! per-epoch order fixed by (seed, epoch) — so a resumed run draws the same batches — and one
//! optimiser step's task loss over micro-batches: the contrastive loss with the momentum model
//! and queue on retrieval data, the zero-shot cross-entropy with the class head recomputed
//! through the training text tower on classification data.

use crate::data::Preprocessor;
use crate::model::clip::Gates;
use crate::model::{Clip, ClipTokenizer, TokenBatch, zeroshot};
use crate::stages::StageError;
use crate::stages::context::{self, Dataset};
use crate::stages::prune::Pruning;
use crate::train::contrastive::{Contrastive, class_head, text_features};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use tch::nn::Module;
use tch::{Device, Kind, Tensor};

/// Preprocessed pixels of training images by index.
type Decode = dyn Fn(&[usize]) -> Result<Vec<f32>, StageError>;

/// One training sample: an image and its caption's image id (retrieval), or its label.
pub struct Sample {
    pub image: usize,
    pub caption: Option<String>,
    pub target: i64,
}

/// The point's training split, ready to train on.
pub struct TrainingData {
    pub samples: Vec<Sample>,
    images: Box<Decode>,
    /// Every class prompt (class by class) and the class count: classification data.
    pub prompts: Option<(TokenBatch, i64)>,
    pub retrieval: bool,
    pub pre: Preprocessor,
    pub tokenizer: ClipTokenizer,
    device: Device,
}

impl TrainingData {
    pub fn open(p: &Pruning) -> Result<TrainingData, StageError> {
        let job = p.job;
        let device = p.model.vs.device();
        let pre = context::preprocessor(job, &p.model)?;
        let tokenizer = context::tokenizer(job)?;
        let retrieval = job.params["dataset"]["kind"].as_str() == Some("retrieval");
        let decode_with = pre.clone();
        let (samples, images, prompts): (Vec<Sample>, Box<Decode>, _) = if retrieval {
            let set = context::retrieval_set(job, true)?;
            let samples = set
                .captions
                .iter()
                .enumerate()
                .flat_map(|(i, caps)| {
                    caps.iter().map(move |c| Sample {
                        image: i,
                        caption: Some(c.clone()),
                        target: i as i64,
                    })
                })
                .collect();
            let decode =
                Box::new(move |idx: &[usize]| Ok(decode_with.batch(idx, |i| set.image(i))?));
            (samples, decode, None)
        } else {
            let (set, prompts) = Dataset::from_job(job)?.open(true)?;
            let samples = (0..set.len())
                .map(|i| Sample {
                    image: i,
                    caption: None,
                    target: set.label(i),
                })
                .collect();
            let all: Vec<String> = (0..prompts.classnames.len())
                .flat_map(|c| prompts.class_prompts(c))
                .collect();
            let tokens = tokenizer.encode(&all, device)?;
            let decode =
                Box::new(move |idx: &[usize]| Ok(decode_with.batch(idx, |i| set.image(i))?));
            (
                samples,
                decode,
                Some((tokens, prompts.classnames.len() as i64)),
            )
        };
        Ok(TrainingData {
            samples,
            images,
            prompts,
            retrieval,
            pre,
            tokenizer,
            device,
        })
    }

    /// Full steps of `global` samples per epoch (at least one, or an error naming `method`).
    pub fn steps_per_epoch(&self, global: usize, method: &str) -> Result<usize, StageError> {
        match self.samples.len() / global {
            0 => Err(StageError::Failed(format!(
                "method `{method}`: the training split has {} samples, fewer than one step's global batch of {global} (batch_size × accumulation); lower them",
                self.samples.len()
            ))),
            n => Ok(n),
        }
    }

    /// Epoch `epoch`'s sample order: a shuffle seeded by (seed, epoch) alone.
    pub fn epoch_order(&self, seed: u64, epoch: usize) -> Vec<usize> {
        let mut rng =
            ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9).wrapping_add(epoch as u64));
        let mut order: Vec<usize> = (0..self.samples.len()).collect();
        order.shuffle(&mut rng);
        order
    }

    /// Normalised pixels of samples.
    pub fn pixels(&self, samples: &[usize]) -> Result<Tensor, StageError> {
        let idx: Vec<usize> = samples.iter().map(|&k| self.samples[k].image).collect();
        let px = (self.images)(&idx)?;
        Ok(context::pixels(
            &px,
            idx.len(),
            &self.pre,
            self.device,
            Kind::Float,
        ))
    }

    /// One step's task loss over `batch` in micro-batches of `micro`, each micro-batch's loss
    /// (plus `extra()`, e.g. UPop's L1 terms) divided by their count and back-propagated; the
    /// class head's gradient is gathered at a leaf and sent through the text tower once. Returns
    /// the mean task loss. `gates` are UPop's ζ per tower (vision, text), if any.
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &self,
        model: &Clip,
        batch: &[usize],
        micro: usize,
        contrastive: &mut Option<Contrastive>,
        gates: (Option<&[Gates]>, Option<&[Gates]>),
        alpha: f64,
        extra: &dyn Fn() -> Option<Tensor>,
    ) -> Result<f64, StageError> {
        let (vision_gates, text_gates) = gates;
        let parts = batch.len().div_ceil(micro.max(1));
        if let Some(c) = contrastive.as_mut() {
            c.begin_step(model);
        }
        let head = self
            .prompts
            .as_ref()
            .map(|(tokens, classes)| class_head(model, tokens, *classes, text_gates));
        let head_leaf = head.as_ref().map(|h| h.detach().set_requires_grad(true));
        let mut total = 0.0;
        for chunk in batch.chunks(micro) {
            let picked: Vec<&Sample> = chunk.iter().map(|&k| &self.samples[k]).collect();
            let pixels = self.pixels(chunk)?;
            let targets = Tensor::from_slice(&picked.iter().map(|s| s.target).collect::<Vec<_>>())
                .to_device(self.device);
            let image = model
                .visual_projection
                .forward(&model.vision.forward_gated(&pixels, vision_gates));
            let task = match (contrastive.as_mut(), &head_leaf) {
                (Some(c), _) => {
                    let captions: Vec<String> =
                        picked.iter().filter_map(|s| s.caption.clone()).collect();
                    let tokens = self.tokenizer.encode(&captions, self.device)?;
                    let f_i = zeroshot::normalize(&image);
                    let f_t = zeroshot::normalize(&text_features(model, &tokens, text_gates));
                    c.loss(model, &pixels, &tokens, &f_i, &f_t, &targets, alpha)
                }
                (None, Some(h)) => zeroshot::logits(&image, h).cross_entropy_for_logits(&targets),
                (None, None) => unreachable!("retrieval has a queue, classification a head"),
            };
            let loss = match extra() {
                Some(e) => &task + e,
                None => task.shallow_clone(),
            };
            (loss / parts as f64).backward();
            let value = task.double_value(&[]);
            if !value.is_finite() {
                return Err(StageError::Failed(format!(
                    "training diverged (loss {value}); lower `lr`"
                )));
            }
            total += value / parts as f64;
        }
        if let (Some(h), Some(leaf)) = (&head, &head_leaf) {
            let g = leaf.grad();
            if g.defined() {
                (h * g).sum(Kind::Float).backward();
            }
        }
        if let Some(c) = contrastive.as_mut() {
            c.end_step();
        }
        Ok(total)
    }
}

/// Every variable of the model, by name in name order (a checkpoint's layout), made trainable,
/// and the same tensors as the optimiser takes them. [`frozen`] undoes it.
pub fn all_parameters(model: &Clip) -> (Vec<(String, Tensor)>, Vec<Tensor>) {
    let mut named: Vec<(String, Tensor)> = model.vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, t) in &named {
        let _ = t.shallow_clone().set_requires_grad(true);
    }
    let tensors = named.iter().map(|(_, t)| t.shallow_clone()).collect();
    (named, tensors)
}

/// Turns autograd off again for tensors [`all_parameters`] made trainable.
pub fn frozen(tensors: &[Tensor]) {
    for t in tensors {
        let _ = t.shallow_clone().set_requires_grad(false);
    }
}

/// The distillation weight at iteration `it` of epoch `epoch` (0-based): ramped over the first
/// epoch (§4.2).
pub fn alpha_at(alpha: f64, epoch: usize, it: usize, per_epoch: usize) -> f64 {
    if epoch > 0 {
        alpha
    } else {
        alpha * (it as f64 / per_epoch as f64).min(1.0)
    }
}
