//! Retrain stage (spec structured-and-analysis.md §2.5, §2.8): trains a pruned or truncated
//! model's classifier (and, by `trainable`, its LayerNorms, Convpass adapters or whole vision
//! tower) on `train_size` training images, evaluating on the evaluation split after every
//! `eval_every` epochs; reports the accuracy before training, the best epoch's and the last
//! epoch's. The defaults are the SLS paper's setting: Convpass + linear head, AdamW (weight decay
//! 1e-4), constant lr 1e-5, 100 epochs, batch 64, 1000 images.
//!
//! Invariant: pruned weights stay exactly zero. Every encoder Linear weight that is zero when
//! training starts has its gradient masked and is re-zeroed after each step (only `vision`
//! trains such weights; the other sets never touch them). The record counts those zeros before
//! and after. The stage checkpoints its state ([`super::checkpoint`]) and resumes after a kill;
//! dropout draws are seeded by (seed, step) so a resumed run equals an uninterrupted one.

use super::calibrate::draw;
use super::checkpoint::{self, Checkpoints};
use super::context::{self, Dataset};
use super::{StageError, StageOutput};
use crate::analysis::metrics;
use crate::cache::{Cache, EntryBuilder};
use crate::manifest::schema::{Head, RetrainParams, Schedule, Trainable};
use crate::model::{Clip, Tower, layerwise, weights, zeroshot};
use crate::plan::JobSpec;
use crate::train::AdamW;
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

pub fn run(
    job: &JobSpec,
    cache: &Cache,
    builder: &EntryBuilder,
) -> Result<StageOutput, StageError> {
    let device = context::device(job)?;
    let p: RetrainParams = context::params(job, "train")?;
    let trainable = p.trainable;
    let linear_head = p.head == Head::Linear;
    let (epochs, lr, min_lr, wd, batch) = (p.epochs, p.lr, p.min_lr, p.weight_decay, p.batch_size);
    let cosine = p.schedule == Schedule::WarmupCosine;
    let (warmup, train_size, eval_every, seed) =
        (p.warmup_epochs, p.train_size, p.eval_every, p.seed);
    tch::manual_seed(seed as i64);

    let model = context::load_model(job, cache, device)?;
    let dataset = Dataset::from_job(job)?;
    let (train_set, prompts) = dataset.open(true)?;
    let (eval_set, _) = dataset.open(false)?;
    let tokenizer = context::tokenizer(job)?;
    let pre = context::preprocessor(job, &model)?;
    let head = zeroshot::head(&model, &tokenizer, &prompts)?;

    let extra = nn::VarStore::new(device);
    let root = extra.root();
    let classifier = linear_head.then(|| Classifier::from_zero_shot(&root, &head));
    let adapters = match (trainable, p.convpass_scale, p.convpass_xavier) {
        (Trainable::HeadConvpass, Some(scale), Some(xavier)) => {
            Some(Adapters::new(&root, &model, scale, xavier))
        }
        // The planner fills the VTAB-1k values of built-in datasets and refuses a manifest that
        // leaves them unknown.
        (Trainable::HeadConvpass, _, _) => {
            return Err(StageError::Failed(
                "Convpass needs `convpass_scale` and `convpass_xavier` in [stages.retrain]".into(),
            ));
        }
        _ => None,
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

    let forward = |pixels: &Tensor, train: bool| -> Tensor {
        let f = convpass::image_features(&model, adapters.as_ref(), pixels, train);
        match &classifier {
            Some(c) => c.logits(&f),
            None => zeroshot::logits(&f, &head),
        }
    };
    let evaluate = || -> Result<f64, StageError> {
        let _g = tch::no_grad_guard();
        let mut hits = 0i64;
        context::labelled_batches(
            &eval_set,
            &pre,
            device,
            Kind::Float,
            256,
            |pixels, labels| {
                let correct = metrics::topk_hits(&forward(pixels, false), labels, 1);
                hits += correct.sum(Kind::Int64).int64_value(&[]);
                Ok(())
            },
        )?;
        Ok(hits as f64 / eval_set.len() as f64)
    };

    let clock = Instant::now();
    let mut checkpoints = Checkpoints::new(cache, job);
    let mut opt = AdamW::new(&tensors, lr, wd);
    let state = |opt: &AdamW| checkpoint::with_optimizer(&params, opt);
    let saved = checkpoints.resume();
    // The training images, decoded once (8-bit, exact), normalised per batch.
    let train_indices = draw(train_set.len(), train_size.min(train_set.len()), seed);
    let images = pre.batch_u8(&train_indices, |i| train_set.image(i))?;
    let labels: Vec<i64> = train_indices.iter().map(|&i| train_set.label(i)).collect();
    let (h, w) = (pre.crop.0 as usize, pre.crop.1 as usize);
    let per_image = 3 * h * w;
    let n = train_indices.len();
    // Full batches only (drop_last), and at least one batch when the set is small.
    let per_epoch = (n / batch).max(1);
    let batch = batch.min(n);
    // With nothing to train (a frozen zero-shot head alone) the stage only evaluates.
    let epochs_run = if tensors.is_empty() { 0 } else { epochs };
    let total = (epochs_run * per_epoch) as u64;

    let mut progress = match &saved {
        Some(saved) => {
            saved.restore(&state(&opt))?;
            opt.set_steps(saved.step as i32);
            serde_json::from_value(saved.cursor.clone())
                .map_err(|e| StageError::Failed(format!("unreadable retraining checkpoint: {e}")))?
        }
        None => {
            let initial = evaluate()?;
            Progress {
                initial,
                best: initial,
                best_epoch: 0,
                last: initial,
                loss_sum: 0.0,
                history: vec![],
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
        let (epoch, it) = (step as usize / per_epoch + 1, step as usize % per_epoch);
        while shuffled < epoch {
            order = (0..n).collect();
            order.shuffle(&mut rng);
            shuffled += 1;
        }
        // Dropout draws depend on (seed, step) only, so a resumed run draws the same.
        tch::manual_seed(seed.wrapping_add(step) as i64);
        let e = (epoch - 1) as f64 + it as f64 / per_epoch as f64;
        opt.set_lr(schedule::epochs_warmup_cosine(
            e,
            epochs as f64,
            lr,
            min_lr,
            warmup,
            cosine,
        ));
        let pick = &order[it * batch..(it + 1) * batch];
        let mut bytes = Vec::with_capacity(batch * per_image);
        for &j in pick {
            bytes.extend_from_slice(&images[j * per_image..(j + 1) * per_image]);
        }
        let pixels = context::pixels(&pre.normalize(&bytes), batch, &pre, device, Kind::Float);
        let y: Vec<i64> = pick.iter().map(|&j| labels[j]).collect();
        let y = Tensor::from_slice(&y).to_device(device);
        for t in &tensors {
            let mut g = t.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
        let loss = forward(&pixels, true).cross_entropy_for_logits(&y);
        loss.backward();
        let loss = loss.double_value(&[]);
        if !loss.is_finite() {
            return Err(StageError::Failed(format!(
                "retraining diverged in epoch {epoch} (loss {loss}); lower `lr` in [stages.retrain]"
            )));
        }
        progress.loss_sum += loss;
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
        });
        if it + 1 == per_epoch {
            let mut record =
                json!({ "epoch": epoch, "train_loss": progress.loss_sum / per_epoch as f64 });
            progress.loss_sum = 0.0;
            if epoch % eval_every == 0 || epoch == epochs {
                progress.last = evaluate()?;
                record["top1"] = json!(progress.last);
                if progress.last > progress.best {
                    (progress.best, progress.best_epoch) = (progress.last, epoch);
                }
            }
            progress.history.push(record);
        }
        checkpoint::test_delay();
        if step + 1 < total && checkpoints.due() {
            let cursor = serde_json::to_value(&progress).expect("progress serialises");
            checkpoints.save(step + 1, cursor, &state(&opt))?;
        }
    }
    let Progress {
        initial,
        best,
        best_epoch,
        last,
        history,
        ..
    } = progress;
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
    Ok(StageOutput {
        metrics: json!({
            "initial_top1": initial,
            "best_top1": best,
            "best_epoch": best_epoch,
            "last_top1": last,
            "epochs": history,
            "trainable": trainable,
            "trained_parameters": tensors.iter().map(|t| t.numel()).sum::<usize>(),
            "train_images": n,
            "n_eval": eval_set.len(),
            "encoder_zero_weights_before": zeros_before,
            "encoder_zero_weights_after": zeros_after,
            "seconds": clock.elapsed().as_secs_f64(),
            "resumed_from_step": resumed_from,
            "checkpoint_discarded": checkpoints.discarded,
        }),
        transient: vec![],
    })
}

/// Where retraining stands between steps: what a checkpoint's cursor holds.
#[derive(serde::Serialize, serde::Deserialize)]
struct Progress {
    initial: f64,
    best: f64,
    best_epoch: usize,
    last: f64,
    /// Training loss summed over the current epoch's steps so far.
    loss_sum: f64,
    history: Vec<Json>,
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
