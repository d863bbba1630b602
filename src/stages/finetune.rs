//! Fine-tuning stage (spec clip.md §8.1, the task-arithmetic recipe): the vision tower
//! (`vision_model.*`) trains on the dataset's training split against the frozen zero-shot head
//! built once from the text tower; AdamW with linear warm-up then cosine decay. The output is an
//! HF-format vision-only checkpoint (`vision/config.json` + `vision/model.safetensors`) that
//! downstream stages overlay on the base model, and that another manifest can name as `vision`.
//! The stage checkpoints its state ([`super::checkpoint`]) and resumes after a kill.

use super::checkpoint::{self, Checkpoints};
use super::context::{self, Dataset, VISION_ARTIFACT};
use super::{StageError, StageOutput};
use crate::cache::{Cache, EntryBuilder};
use crate::data::loader;
use crate::manifest::schema::FinetuneParams;
use crate::model::zeroshot;
use crate::plan::JobSpec;
use crate::train::{AdamW, schedule};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use std::time::Instant;
use tch::{Kind, Tensor};

/// The fine-tuned tower's weights, which the retention policy may drop (`keep_pruned`).
pub const FINETUNED_WEIGHTS: &str = "vision/model.safetensors";

pub fn run(
    job: &JobSpec,
    cache: &Cache,
    builder: &EntryBuilder,
) -> Result<StageOutput, StageError> {
    let device = context::device(job)?;
    let p: FinetuneParams = context::params(job, "train")?;
    let (steps, batch, lr, wd, seed) = (p.steps, p.batch_size, p.lr, p.weight_decay, p.seed);
    let warmup = p.warmup_steps.min(steps);
    tch::manual_seed(seed as i64);

    let mut model = context::load_model(job, cache, device)?;
    let dataset = Dataset::from_job(job)?;
    let (set, prompts) = dataset.open(true)?;
    let tokenizer = context::tokenizer(job)?;
    let pre = context::preprocessor(job, &model)?;
    let head = zeroshot::head(&model, &tokenizer, &prompts)?;

    // What trains: the vision tower, in name order (the checkpoint's layout).
    let mut params: Vec<(String, Tensor)> = model
        .vs
        .variables()
        .into_iter()
        .filter(|(name, _)| name.starts_with("vision_model."))
        .collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, t) in &params {
        let _ = t.shallow_clone().set_requires_grad(true);
    }
    let tensors: Vec<Tensor> = params.iter().map(|(_, t)| t.shallow_clone()).collect();
    let mut opt = AdamW::new(&tensors, lr, wd);

    // The sample stream: a fresh seeded permutation per epoch, fixed by the seed alone, so a
    // resumed run continues the same stream.
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut order: Vec<usize> = Vec::with_capacity(steps as usize * batch);
    while order.len() < steps as usize * batch {
        let mut epoch: Vec<usize> = (0..set.len()).collect();
        epoch.shuffle(&mut rng);
        order.extend(epoch);
    }
    order.truncate(steps as usize * batch);

    let mut checkpoints = Checkpoints::new(cache, job);
    let state = |opt: &AdamW| checkpoint::with_optimizer(&params, opt);
    let mut losses: Vec<f64> = Vec::with_capacity(steps as usize);
    let mut hits: Vec<f64> = Vec::with_capacity(steps as usize);
    let mut step = 0u64;
    if let Some(saved) = checkpoints.resume() {
        saved.restore(&state(&opt))?;
        step = saved.step;
        opt.set_steps(step as i32);
        losses = serde_json::from_value(saved.cursor["losses"].clone()).unwrap_or_default();
        hits = serde_json::from_value(saved.cursor["hits"].clone()).unwrap_or_default();
    }
    let resumed_from = step;
    let clock = Instant::now();
    loader::pipeline(
        &loader::chunks(&order[step as usize * batch..], batch),
        |chunk| {
            pre.batch(chunk, |i| set.image(i))
                .map(|px| (chunk.to_vec(), px))
        },
        |(chunk, px): (Vec<usize>, Vec<f32>)| -> Result<(), StageError> {
            opt.set_lr(schedule::steps_warmup_cosine(step, steps, warmup, lr));
            let pixels = context::pixels(&px, chunk.len(), &pre, device, Kind::Float);
            let labels: Vec<i64> = chunk.iter().map(|&i| set.label(i)).collect();
            let labels = Tensor::from_slice(&labels).to_device(device);
            AdamW::zero_grad(&tensors);
            let logits = zeroshot::logits(&model.image_features(&pixels), &head);
            let loss = logits.cross_entropy_for_logits(&labels);
            loss.backward();
            opt.step(&tensors);
            let loss = loss.double_value(&[]);
            if !loss.is_finite() {
                return Err(StageError::Failed(format!(
                    "training diverged at step {step} (loss {loss}); lower `lr` in [stages.finetune]"
                )));
            }
            losses.push(loss);
            hits.push(
                logits
                    .argmax(1, false)
                    .eq_tensor(&labels)
                    .to_kind(Kind::Double)
                    .mean(Kind::Double)
                    .double_value(&[]),
            );
            step += 1;
            checkpoint::test_delay();
            if step < steps && checkpoints.due() {
                checkpoints.save(
                    step,
                    json!({ "losses": losses, "hits": hits }),
                    &state(&opt),
                )?;
            }
            Ok(())
        },
    )?;
    let seconds = clock.elapsed().as_secs_f64();
    model.set_eval();
    model.save_vision(&builder.artifacts_dir().join(VISION_ARTIFACT))?;
    let tail = (steps as usize / 10).max(1);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    // A loss curve of at most 100 points for plots.
    let stride = (losses.len() / 100).max(1);
    Ok(StageOutput {
        metrics: json!({
            "steps": steps,
            "train_images": set.len(),
            "first_loss": losses.first(),
            "final_loss": mean(&losses[losses.len().saturating_sub(tail)..]),
            "final_train_top1": mean(&hits[hits.len().saturating_sub(tail)..]),
            "loss_curve": losses.iter().step_by(stride).collect::<Vec<_>>(),
            "images_per_second": (steps - resumed_from) as f64 * batch as f64 / seconds.max(1e-9),
            "resumed_from_step": resumed_from,
            "checkpoint_discarded": checkpoints.discarded,
        }),
        // The tower's weights (a whole vision model); its config and the metrics stay.
        transient: vec![FINETUNED_WEIGHTS],
    })
}
