//! Retrain stage (spec structured-and-analysis.md §2.5, §2.8, §4.5): trains a pruned or
//! truncated model on `train_size` training samples, evaluating after every `eval_every` epochs;
//! reports the metrics before training, at the best epoch and at the last.
//!
//! - Classification datasets: a classifier (a linear head initialised from the zero-shot head, or
//!   the zero-shot head itself) and, by `trainable`, the vision LayerNorms, Convpass adapters, the
//!   vision tower or the whole model (`all`: the zero-shot head is then recomputed every step
//!   through the training text tower). The defaults are the SLS paper's setting: Convpass +
//!   linear head, AdamW (weight decay 1e-4), constant lr 1e-5, 100 epochs, batch 64, 1000 images.
//! - Retrieval datasets: UPop's retraining (§4.5) — the image–text contrastive loss with the
//!   momentum model and the queue ([`crate::train::contrastive`]), the vision tower or the whole
//!   model trained; R@1/5/10 both ways and their mean after each evaluated epoch.
//!
//! The best epoch is chosen on the dataset's `val_split` when it names one (the reference's
//! practice: best validation `r_mean`, that epoch's test metrics reported), else on the
//! evaluation split itself. Invariant: pruned weights stay exactly zero — every encoder Linear
//! weight that is zero when training starts has its gradient masked and is re-zeroed after each
//! step; the record counts those zeros before and after. The stage checkpoints its state
//! ([`super::checkpoint`]) and resumes after a kill; dropout draws are seeded by (seed, step) and
//! each epoch's order by the seed, so a resumed run equals an uninterrupted one.

use super::calibrate::draw;
use super::checkpoint::{self, Checkpoints};
use super::context::{self, Dataset};
use super::{StageError, StageOutput, evaluate};
use crate::analysis::metrics;
use crate::cache::{Cache, EntryBuilder};
use crate::data::{ImageSet, Prompts};
use crate::manifest::schema::{Head, RetrainParams, Schedule, Trainable};
use crate::model::{Clip, TokenBatch, Tower, layerwise, weights, zeroshot};
use crate::plan::JobSpec;
use crate::train::AdamW;
use crate::train::contrastive::{Contrastive, class_head, text_features};
use crate::train::convpass::{self, Adapters, Classifier};
use crate::train::schedule;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde_json::{Value as Json, json};
use std::time::Instant;
use tch::{Device, Kind, Tensor, nn};

/// Artifact with every tensor the stage trained (HF names for the model's own).
pub const RETRAINED: &str = "retrained.safetensors";

/// What the stage trains on and evaluates with (one per stage: the size difference is moot).
#[allow(clippy::large_enum_variant)]
enum Task {
    Classify {
        train: ImageSet,
        eval: ImageSet,
        val: Option<ImageSet>,
        prompts: Prompts,
        /// Every class prompt, class by class, when the text tower trains (the head follows it).
        prompt_tokens: Option<TokenBatch>,
    },
    Retrieve {
        train: crate::data::retrieval::RetrievalSet,
        eval: crate::data::retrieval::RetrievalSet,
        val: Option<crate::data::retrieval::RetrievalSet>,
        /// (image, caption) of every training pair.
        pairs: Vec<(usize, String)>,
    },
}

pub fn run(
    job: &JobSpec,
    cache: &Cache,
    builder: &EntryBuilder,
) -> Result<StageOutput, StageError> {
    let device = context::device(job)?;
    let p: RetrainParams = context::params(job, "train")?;
    let trainable = p.trainable;
    let (epochs, lr, min_lr, wd) = (p.epochs, p.lr, p.min_lr, p.weight_decay);
    let (warmup, train_size, eval_every, seed) =
        (p.warmup_epochs, p.train_size, p.eval_every, p.seed);
    tch::manual_seed(seed as i64);

    let model = context::load_model(job, cache, device)?;
    let tokenizer = context::tokenizer(job)?;
    let pre = context::preprocessor(job, &model)?;
    let val_split = context::val_split(job);
    let retrieval = job.params["dataset"]["kind"].as_str() == Some("retrieval");
    let task = if retrieval {
        if !matches!(trainable, Trainable::Vision | Trainable::All) {
            return Err(StageError::Failed(
                "retraining on a retrieval dataset trains the model itself: set `trainable = \"all\"` (or \"vision\") in [stages.retrain]".into(),
            ));
        }
        let train = context::retrieval_set(job, true)?;
        let pairs = train
            .captions
            .iter()
            .enumerate()
            .flat_map(|(i, caps)| caps.iter().map(move |c| (i, c.clone())))
            .collect();
        Task::Retrieve {
            eval: context::retrieval_set(job, false)?,
            val: val_split
                .as_deref()
                .map(|s| context::retrieval_split(job, s))
                .transpose()?,
            train,
            pairs,
        }
    } else {
        let dataset = Dataset::from_job(job)?;
        let (train, prompts) = dataset.open(true)?;
        let prompt_tokens = if trainable == Trainable::All && p.head == Head::ZeroShot {
            let all: Vec<String> = (0..prompts.classnames.len())
                .flat_map(|c| prompts.class_prompts(c))
                .collect();
            Some(tokenizer.encode(&all, device)?)
        } else {
            None
        };
        Task::Classify {
            train,
            eval: dataset.open(false)?.0,
            val: val_split
                .as_deref()
                .map(|s| dataset.open_split(s).map(|(set, _)| set))
                .transpose()?,
            prompts,
            prompt_tokens,
        }
    };

    let extra = nn::VarStore::new(device);
    let root = extra.root();
    let (classifier, adapters, head) = match &task {
        Task::Classify { prompts, .. } => {
            let head = zeroshot::head(&model, &tokenizer, prompts)?;
            let classifier =
                (p.head == Head::Linear).then(|| Classifier::from_zero_shot(&root, &head));
            let adapters = match (trainable, p.convpass_scale, p.convpass_xavier) {
                (Trainable::HeadConvpass, Some(scale), Some(xavier)) => {
                    Some(Adapters::new(&root, &model, scale, xavier))
                }
                // The planner fills the VTAB-1k values of built-in datasets and refuses a
                // manifest that leaves them unknown.
                (Trainable::HeadConvpass, _, _) => {
                    return Err(StageError::Failed(
                        "Convpass needs `convpass_scale` and `convpass_xavier` in [stages.retrain]"
                            .into(),
                    ));
                }
                _ => None,
            };
            (classifier, adapters, Some(head))
        }
        Task::Retrieve { .. } => (None, None, None),
    };
    let mut params: Vec<(String, Tensor)> = extra.variables().into_iter().collect();
    params.extend(model_params(&model, trainable));
    params.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, t) in &params {
        let _ = t.shallow_clone().set_requires_grad(true);
    }
    let tensors: Vec<Tensor> = params.iter().map(|(_, t)| t.shallow_clone()).collect();
    // Pruned weights among the trained tensors: their zeros are masks to keep.
    let linears: std::collections::HashSet<String> = encoder_linears(&model)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let zero_masks: Vec<Option<Tensor>> = params
        .iter()
        .map(|(name, t)| linears.contains(name).then(|| t.eq(0.0)))
        .collect();
    let zeros_before = count_encoder_zeros(&model);

    // Image features → logits of a classification batch, under a given zero-shot head.
    let logits = |pixels: &Tensor, train: bool, head: &Tensor| -> Tensor {
        let f = convpass::image_features(&model, adapters.as_ref(), pixels, train);
        match &classifier {
            Some(c) => c.logits(&f),
            None => zeroshot::logits(&f, head),
        }
    };
    // The zero-shot head as the model stands (it moves when the text tower trains).
    let current_head = || -> Result<Option<Tensor>, StageError> {
        match (&task, &head) {
            (
                Task::Classify {
                    prompts,
                    prompt_tokens: Some(_),
                    ..
                },
                _,
            ) => Ok(Some(zeroshot::head(&model, &tokenizer, prompts)?)),
            (_, Some(h)) => Ok(Some(h.shallow_clone())),
            _ => Ok(None),
        }
    };
    // The split's metrics as the record holds them; the selection score is `top1` or `r_mean`.
    let measure = |split: Which| -> Result<Json, StageError> {
        let _g = tch::no_grad_guard();
        match &task {
            Task::Classify { eval, val, .. } => {
                let set = match split {
                    Which::Eval => eval,
                    Which::Val => val.as_ref().expect("a val split was named"),
                };
                let head = current_head()?.expect("classification has a head");
                let mut hits = 0i64;
                context::labelled_batches(
                    set,
                    &pre,
                    device,
                    Kind::Float,
                    256,
                    |pixels, labels| {
                        let correct = metrics::topk_hits(&logits(pixels, false, &head), labels, 1);
                        hits += correct.sum(Kind::Int64).int64_value(&[]);
                        Ok(())
                    },
                )?;
                Ok(json!({ "top1": hits as f64 / set.len() as f64 }))
            }
            Task::Retrieve { eval, val, .. } => {
                let set = match split {
                    Which::Eval => eval,
                    Which::Val => val.as_ref().expect("a val split was named"),
                };
                evaluate::recall(&model, set, &pre, &tokenizer, Kind::Float, 256)
            }
        }
    };
    let score_key = if retrieval { "r_mean" } else { "top1" };
    let score = |m: &Json| m[score_key].as_f64().unwrap_or(f64::NAN);
    let has_val = val_split.is_some();
    // Evaluates after an epoch (or before training): the evaluation split, and the validation
    // split that selects the best epoch when there is one.
    let assess = || -> Result<(Json, f64), StageError> {
        let eval = measure(Which::Eval)?;
        let selection = if has_val {
            score(&measure(Which::Val)?)
        } else {
            score(&eval)
        };
        Ok((eval, selection))
    };

    let clock = Instant::now();
    let mut checkpoints = Checkpoints::new(cache, job);
    let (micro, accumulation) = (p.batch_size, p.accumulation);
    let mut contrastive =
        retrieval.then(|| Contrastive::new(&model, p.queue_size as i64, p.momentum));
    let mut opt = AdamW::new(&tensors, lr, wd);
    let state = |opt: &AdamW, contrastive: &Option<Contrastive>| {
        let mut out = checkpoint::with_optimizer(&params, opt);
        if let Some(c) = contrastive {
            out.extend(c.state());
        }
        out
    };
    let saved = checkpoints.resume();

    // The training samples: images (classification, decoded once as 8-bit pixels) or caption
    // pairs (retrieval, decoded per batch).
    let (n, cached) = match &task {
        Task::Classify { train, .. } => {
            let picks = draw(train.len(), train_size.min(train.len()), seed);
            let images = pre.batch_u8(&picks, |i| train.image(i))?;
            let labels: Vec<i64> = picks.iter().map(|&i| train.label(i)).collect();
            (picks.len(), Some((images, labels)))
        }
        Task::Retrieve { pairs, .. } => (train_size.min(pairs.len()), None),
    };
    let drawn_pairs = match &task {
        Task::Retrieve { pairs, .. } => draw(pairs.len(), n, seed),
        Task::Classify { .. } => vec![],
    };
    let per_image = 3 * pre.crop.0 as usize * pre.crop.1 as usize;
    // Full steps only (drop_last), and at least one when the set is small.
    let global = (micro * accumulation).min(n);
    let micro = micro.min(global);
    let per_epoch = (n / global).max(1);
    if let Some(c) = &contrastive
        && c.queue_len() % global as i64 != 0
    {
        return Err(StageError::Failed(format!(
            "`queue_size` {} is not a multiple of the global batch {global} (batch_size × accumulation, at most the training pairs); set it in [stages.retrain]",
            c.queue_len()
        )));
    }
    // With nothing to train (a frozen zero-shot head alone) the stage only evaluates.
    let epochs_run = if tensors.is_empty() { 0 } else { epochs };
    let total = (epochs_run * per_epoch) as u64;

    let mut progress = match &saved {
        Some(saved) => {
            saved.restore(&state(&opt, &contrastive))?;
            opt.set_steps(saved.step as i32);
            serde_json::from_value(saved.cursor.clone())
                .map_err(|e| StageError::Failed(format!("unreadable retraining checkpoint: {e}")))?
        }
        None => {
            let (initial, selection) = assess()?;
            Progress {
                best: initial.clone(),
                last: initial.clone(),
                initial,
                best_selection: selection,
                best_epoch: 0,
                loss_sum: 0.0,
                history: vec![],
                train_seconds: 0.0,
            }
        }
    };
    let resumed_from = saved.as_ref().map_or(0, |s| s.step);
    drop(saved);
    // Epoch e's batch order is the e-th shuffle of one seeded stream (replayed on resume).
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..n).collect();
    let mut shuffled = 0usize;
    for step in resumed_from..total {
        let step_clock = Instant::now();
        let (epoch, it) = (step as usize / per_epoch + 1, step as usize % per_epoch);
        while shuffled < epoch {
            order = (0..n).collect();
            order.shuffle(&mut rng);
            shuffled += 1;
        }
        // Dropout draws depend on (seed, step) only, so a resumed run draws the same.
        tch::manual_seed(seed.wrapping_add(step) as i64);
        let e = (epoch - 1) as f64 + it as f64 / per_epoch as f64;
        let lr_now = match p.schedule {
            Schedule::EpochCosine => schedule::per_epoch_cosine(epoch - 1, epochs, lr, min_lr),
            s => schedule::epochs_warmup_cosine(
                e,
                epochs as f64,
                lr,
                min_lr,
                warmup,
                s == Schedule::WarmupCosine,
            ),
        };
        opt.set_lr(lr_now);
        // The reference's distillation ramp over the first epoch (retrieval).
        let alpha = if epoch > 1 {
            p.alpha
        } else {
            p.alpha * it as f64 / per_epoch as f64
        };
        if let Some(c) = &mut contrastive {
            c.begin_step(&model);
        }
        // A head that follows the training text tower: once per step, its gradient gathered at a
        // leaf over the micro-batches and sent back through the text tower once.
        let moving_head = match &task {
            Task::Classify {
                prompt_tokens: Some(tokens),
                prompts,
                ..
            } => Some(class_head(
                &model,
                tokens,
                prompts.classnames.len() as i64,
                None,
            )),
            _ => None,
        };
        let head_leaf = moving_head
            .as_ref()
            .map(|h| h.detach().set_requires_grad(true));
        let pick = &order[it * global..(it + 1) * global];
        for chunk in pick.chunks(micro) {
            let loss = match (&task, &mut contrastive) {
                (Task::Retrieve { train, pairs, .. }, Some(c)) => {
                    let chosen: Vec<&(usize, String)> =
                        chunk.iter().map(|&j| &pairs[drawn_pairs[j]]).collect();
                    let idx: Vec<usize> = chosen.iter().map(|(i, _)| *i).collect();
                    let px = pre.batch(&idx, |i| train.image(i))?;
                    let pixels = context::pixels(&px, idx.len(), &pre, device, Kind::Float);
                    let captions: Vec<String> = chosen.iter().map(|(_, c)| c.clone()).collect();
                    let tokens = tokenizer.encode(&captions, device)?;
                    let ids: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
                    let ids = Tensor::from_slice(&ids).to_device(device);
                    let f_i = zeroshot::normalize(&model.image_features(&pixels));
                    let f_t = zeroshot::normalize(&text_features(&model, &tokens, None));
                    c.loss(&model, &pixels, &tokens, &f_i, &f_t, &ids, alpha)
                }
                _ => {
                    let (images, labels) = cached.as_ref().expect("classification images");
                    let mut bytes = Vec::with_capacity(chunk.len() * per_image);
                    for &j in chunk {
                        bytes.extend_from_slice(&images[j * per_image..(j + 1) * per_image]);
                    }
                    let pixels = context::pixels(
                        &pre.normalize(&bytes),
                        chunk.len(),
                        &pre,
                        device,
                        Kind::Float,
                    );
                    let y: Vec<i64> = chunk.iter().map(|&j| labels[j]).collect();
                    let y = Tensor::from_slice(&y).to_device(device);
                    let h = head_leaf.as_ref().or(head.as_ref()).expect("a head");
                    logits(&pixels, true, h).cross_entropy_for_logits(&y)
                }
            };
            (&loss / accumulation as f64).backward();
            let loss = loss.double_value(&[]);
            if !loss.is_finite() {
                return Err(StageError::Failed(format!(
                    "retraining diverged in epoch {epoch} (loss {loss}); lower `lr` in [stages.retrain]"
                )));
            }
            progress.loss_sum += loss / accumulation as f64;
        }
        if let (Some(h), Some(leaf)) = (&moving_head, &head_leaf) {
            let g = leaf.grad();
            if g.defined() {
                (h * g).sum(Kind::Float).backward();
            }
        }
        tch::no_grad(|| {
            for (t, m) in tensors.iter().zip(&zero_masks) {
                let mut g = t.grad();
                if let (Some(m), true) = (m, g.defined()) {
                    let _ = g.masked_fill_(m, 0.0);
                }
            }
        });
        opt.step(&tensors);
        tch::no_grad(|| {
            for (t, m) in tensors.iter().zip(&zero_masks) {
                if let Some(m) = m {
                    let _ = t.shallow_clone().masked_fill_(m, 0.0);
                }
            }
            AdamW::zero_grad(&tensors);
        });
        if let Some(c) = &mut contrastive {
            c.end_step();
        }
        progress.train_seconds += step_clock.elapsed().as_secs_f64();
        if it + 1 == per_epoch {
            let mut record = json!({
                "epoch": epoch,
                "train_loss": progress.loss_sum / per_epoch as f64,
                "last_lr": lr_now,
            });
            progress.loss_sum = 0.0;
            if epoch % eval_every == 0 || epoch == epochs {
                let (eval, selection) = assess()?;
                context::merge(&mut record, eval.clone());
                if has_val {
                    record["val_selection"] = json!(selection);
                }
                if selection > progress.best_selection {
                    progress.best_selection = selection;
                    progress.best_epoch = epoch;
                    progress.best = eval.clone();
                }
                progress.last = eval;
            }
            progress.history.push(record);
        }
        checkpoint::test_delay();
        if step + 1 < total && checkpoints.due() {
            let cursor = serde_json::to_value(&progress).expect("progress serialises");
            checkpoints.save(step + 1, cursor, &state(&opt, &contrastive))?;
        }
    }
    let zeros_after = count_encoder_zeros(&model);
    let saved: Vec<(String, Tensor)> = params
        .iter()
        .map(|(name, t)| (name.clone(), t.detach().to_device(Device::Cpu)))
        .collect();
    if !saved.is_empty() {
        let dir = builder.artifacts_dir();
        std::fs::create_dir_all(&dir)
            .map_err(|e| StageError::Failed(format!("{}: {e}", dir.display())))?;
        weights::write_file(&dir.join(RETRAINED), &saved)?;
    }
    let n_eval = match &task {
        Task::Classify { eval, .. } => eval.len(),
        Task::Retrieve { eval, .. } => eval.images.len(),
    };
    let mut metrics = json!({
        "initial": progress.initial,
        "best": progress.best,
        "last": progress.last,
        "best_epoch": progress.best_epoch,
        "selected_on": val_split.unwrap_or_else(|| "the evaluation split".into()),
        "epochs": progress.history,
        "trainable": trainable,
        "trained_parameters": tensors.iter().map(|t| t.numel()).sum::<usize>(),
        "train_samples": n,
        "n_eval": n_eval,
        "encoder_zero_weights_before": zeros_before,
        "encoder_zero_weights_after": zeros_after,
        "seconds": clock.elapsed().as_secs_f64(),
        "steps": total,
        "train_seconds": progress.train_seconds,
        "resumed_from_step": resumed_from,
        "checkpoint_discarded": checkpoints.discarded,
    });
    if !retrieval {
        for (name, at) in [
            ("initial_top1", "initial"),
            ("best_top1", "best"),
            ("last_top1", "last"),
        ] {
            metrics[name] = metrics[at]["top1"].clone();
        }
    }
    Ok(StageOutput {
        metrics,
        transient: vec![],
    })
}

#[derive(Clone, Copy)]
enum Which {
    Eval,
    Val,
}

/// Where retraining stands between steps: what a checkpoint's cursor holds.
#[derive(serde::Serialize, serde::Deserialize)]
struct Progress {
    /// The evaluation split's metrics before training, at the best epoch and at the last.
    initial: Json,
    best: Json,
    last: Json,
    /// The score the best epoch was chosen by (validation split, else evaluation split).
    best_selection: f64,
    best_epoch: usize,
    /// Training loss summed over the current epoch's steps so far.
    loss_sum: f64,
    history: Vec<Json>,
    /// Seconds spent in training steps (evaluations excluded), across resumes.
    #[serde(default)]
    train_seconds: f64,
}

/// The model's own tensors a trainable set names (the classifier and adapters live apart).
fn model_params(model: &Clip, trainable: Trainable) -> Vec<(String, Tensor)> {
    let vars = model.vs.variables();
    let keep = |name: &str| match trainable {
        Trainable::HeadLayerNorm => {
            name.starts_with("vision_model.")
                && (name.contains("layer_norm") || name.contains("post_layernorm"))
        }
        Trainable::Vision => name.starts_with("vision_model."),
        Trainable::All => true,
        Trainable::Head | Trainable::HeadConvpass => false,
    };
    vars.into_iter().filter(|(name, _)| keep(name)).collect()
}

/// The names of the encoder Linear weights of both towers (what pruning zeroes).
fn encoder_linears(model: &Clip) -> Vec<(String, Tensor)> {
    let mut out = Vec::new();
    for tower in [Tower::Vision, Tower::Text] {
        for (i, layer) in layerwise::layers(model, tower).iter().enumerate() {
            for (name, linear) in layer.linears() {
                out.push((
                    crate::prune::sequential::weight_name(tower, i, name),
                    linear.ws.shallow_clone(),
                ));
            }
        }
    }
    out
}

fn count_encoder_zeros(model: &Clip) -> i64 {
    encoder_linears(model)
        .iter()
        .map(|(_, w)| w.eq(0.0).sum(Kind::Int64).int64_value(&[]))
        .sum()
}
