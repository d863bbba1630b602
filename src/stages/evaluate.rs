//! Evaluation stage: zero-shot classification (top-1, top-5, per-class accuracy over the full
//! evaluation split, spec clip.md §9) with a head built by the model's own text tower, or
//! image↔text retrieval (R@1/5/10 both directions) for retrieval datasets. Batched, no grad,
//! fp32 unless `precision` asks for bf16/fp16 on a GPU.

use super::context::{self, Dataset};
use super::{StageError, StageOutput, efficiency};
use crate::analysis::metrics;
use crate::cache::{Cache, EntryBuilder};
use crate::data::retrieval::RetrievalSet;
use crate::data::{Preprocessor, loader};
use crate::manifest::schema::{EvaluateParams, Precision};
use crate::model::{Clip, ClipConfig, ClipTokenizer, zeroshot};
use crate::plan::{JobSpec, StageKind};
use serde_json::{Value as Json, json};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

fn precision(p: &EvaluateParams, device: Device) -> Result<Kind, StageError> {
    let (kind, name) = match p.precision {
        Precision::Bf16 => (Kind::BFloat16, "bf16"),
        Precision::Fp16 => (Kind::Half, "fp16"),
        Precision::Fp32 => (Kind::Float, "fp32"),
    };
    if kind != Kind::Float && device == Device::Cpu {
        return Err(StageError::Failed(format!(
            "precision \"{name}\" needs a GPU; this stage runs on the CPU (set [stages.evaluate] precision = \"fp32\" or give it a CUDA device)"
        )));
    }
    Ok(kind)
}

pub fn run(
    job: &JobSpec,
    cache: &Cache,
    _builder: &EntryBuilder,
) -> Result<StageOutput, StageError> {
    let device = context::device(job)?;
    let params: EvaluateParams = context::params(job, "evaluate")?;
    let kind = precision(&params, device)?;
    let mut model = context::load_model(job, cache, device)?;
    model.vs.set_kind(kind);
    let batch = params.batch_size;
    let mut output = if job.params["dataset"]["kind"].as_str() == Some("retrieval") {
        retrieval(job, &model, kind, batch)?
    } else {
        classification(job, &model, kind, batch)?
    };
    let dense_config = ClipConfig::read(&context::base_dir(job)?.join("config.json"))
        .map_err(crate::model::ModelError::from)?;
    let mut measured = efficiency::counts(&model, &dense_config);
    if params.timing {
        let pruned = job.upstream.iter().any(|u| u.kind == StageKind::Prune);
        let dense = if pruned {
            let mut dense = context::load_dense(job, cache, device)?;
            dense.vs.set_kind(kind);
            Some(dense)
        } else {
            None
        };
        efficiency::add_timing(
            &mut measured,
            &model,
            dense.as_ref(),
            kind,
            batch,
            params.timing_repeats,
        );
    }
    output.metrics["efficiency"] = measured;
    Ok(output)
}

/// Zero-shot classification over the evaluation split.
fn classification(
    job: &JobSpec,
    model: &Clip,
    kind: Kind,
    batch: usize,
) -> Result<StageOutput, StageError> {
    let device = model.vs.device();
    let dataset = Dataset::from_job(job)?;
    let (set, prompts) = dataset.open(false)?;
    let tokenizer = context::tokenizer(job)?;
    let pre = context::preprocessor(job, model)?;
    let _guard = tch::no_grad_guard();
    let clock = Instant::now();
    let head = zeroshot::head(model, &tokenizer, &prompts)?;
    let head_seconds = clock.elapsed().as_secs_f64();
    let mut top1 = Vec::with_capacity(set.len());
    let mut top5 = Vec::with_capacity(set.len());
    let mut loss_sum = 0.0;
    let clock = Instant::now();
    context::labelled_batches(&set, &pre, device, kind, batch, |pixels, labels| {
        let logits = zeroshot::logits(&model.image_features(pixels), &head);
        loss_sum += logits
            .log_softmax(-1, Kind::Float)
            .nll_loss_nd::<Tensor>(labels, None, tch::Reduction::Sum, -100)
            .double_value(&[]);
        top1.extend(Vec::<bool>::try_from(
            &metrics::topk_hits(&logits, labels, 1).to_device(Device::Cpu),
        )?);
        top5.extend(Vec::<bool>::try_from(
            &metrics::topk_hits(&logits, labels, 5).to_device(Device::Cpu),
        )?);
        Ok(())
    })?;
    let seconds = clock.elapsed().as_secs_f64();
    let classes = prompts.classnames.len();
    let mut per_class = vec![(0usize, 0usize); classes];
    for (i, hit) in top1.iter().enumerate() {
        let c = &mut per_class[set.label(i) as usize];
        c.0 += *hit as usize;
        c.1 += 1;
    }
    let n = set.len() as f64;
    let frac = |hits: &[bool]| hits.iter().filter(|h| **h).count() as f64 / n;
    Ok(StageOutput {
        metrics: json!({
            "top1": frac(&top1),
            "top5": frac(&top5),
            "loss": loss_sum / n,
            "n_eval": set.len(),
            "classes": classes,
            "per_class_top1": per_class.iter().map(|&(h, t)| if t == 0 { serde_json::Value::Null } else { json!(h as f64 / t as f64) }).collect::<Vec<_>>(),
            "per_class_n": per_class.iter().map(|&(_, t)| t).collect::<Vec<_>>(),
            "images_per_second": n / seconds.max(1e-9),
            "head_seconds": head_seconds,
            "precision": format!("{kind:?}"),
        }),
        transient: vec![],
    })
}

/// Image↔text retrieval over a Karpathy-split dataset.
fn retrieval(
    job: &JobSpec,
    model: &Clip,
    kind: Kind,
    batch: usize,
) -> Result<StageOutput, StageError> {
    let set = context::retrieval_set(job, false)?;
    let tokenizer = context::tokenizer(job)?;
    let pre = context::preprocessor(job, model)?;
    let metrics = recall(model, &set, &pre, &tokenizer, kind, batch)?;
    Ok(StageOutput {
        metrics,
        transient: vec![],
    })
}

/// R@1/5/10 both ways on a retrieval split, their mean (`r_mean`, the reference's model
/// selection metric) and the split's sizes, as the record holds them.
pub fn recall(
    model: &Clip,
    set: &RetrievalSet,
    pre: &Preprocessor,
    tokenizer: &ClipTokenizer,
    kind: Kind,
    batch: usize,
) -> Result<Json, StageError> {
    let device = model.vs.device();
    let _guard = tch::no_grad_guard();
    let indices: Vec<usize> = (0..set.images.len()).collect();
    let mut image_feats = Vec::new();
    loader::pipeline(
        &loader::chunks(&indices, batch),
        |chunk| {
            pre.batch(chunk, |i| set.image(i))
                .map(|px| (chunk.len(), px))
        },
        |(len, px): (usize, Vec<f32>)| -> Result<(), StageError> {
            let pixels = context::pixels(&px, len, pre, device, kind);
            image_feats.push(zeroshot::normalize(
                &model.image_features(&pixels).to_kind(Kind::Float),
            ));
            Ok(())
        },
    )?;
    let mut owner = Vec::new();
    let mut texts = Vec::new();
    for (i, caps) in set.captions.iter().enumerate() {
        for c in caps {
            owner.push(i as i64);
            texts.push(c.clone());
        }
    }
    let mut text_feats = Vec::new();
    for chunk in texts.chunks(batch.max(1)) {
        let tokens = tokenizer.encode(chunk, device)?;
        text_feats.push(zeroshot::normalize(
            &model.text_features(&tokens).to_kind(Kind::Float),
        ));
    }
    let sim = Tensor::cat(&image_feats, 0).matmul(&Tensor::cat(&text_feats, 0).tr());
    let owner = Tensor::from_slice(&owner).to_device(device);
    let (i2t, t2i) = metrics::retrieval_recall(&sim, &owner, &[1, 5, 10]);
    let mean = (i2t.iter().sum::<f64>() + t2i.iter().sum::<f64>()) / 6.0;
    Ok(json!({
        "image_to_text_r1": i2t[0], "image_to_text_r5": i2t[1], "image_to_text_r10": i2t[2],
        "text_to_image_r1": t2i[0], "text_to_image_r5": t2i[1], "text_to_image_r10": t2i[2],
        "r_mean": mean,
        "n_images": set.images.len(),
        "n_texts": texts.len(),
    }))
}
