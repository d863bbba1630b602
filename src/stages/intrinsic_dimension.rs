//! Intrinsic-dimension stage (spec structured-and-analysis.md §1.7): TwoNN on each encoder
//! layer's output, per tower, over a seeded sample of the training split, for dense and pruned
//! models alike (the model comes from the upstream chain: fine-tuned tower, prune).
//!
//! Samples: `n` training images drawn without replacement (all of them when the split is
//! smaller), preprocessed as for evaluation; for the text tower, the distinct prompts
//! (class × template) of a classification dataset or the distinct captions of a retrieval
//! dataset, at most `n` of them in a seeded order. The record holds one entry per
//! tower and layer: dimension, IDVL spread, points kept, duplicates, degenerate points. With
//! `layers = "linears"` it measures instead the output of every Linear PLATON + ID prunes
//! (`out_proj`, `fc1`, `fc2` of each layer, vision first: the ID vector of spec §1.4), each
//! record naming its module.

use super::calibrate::draw;
use super::context::{self, Dataset};
use super::{StageError, StageOutput};
use crate::analysis::representation::{self, Inputs, Pooling};
use crate::analysis::twonn::{self, Estimator};
use crate::cache::{Cache, EntryBuilder};
use crate::data::retrieval::RetrievalSet;
use crate::data::{DataError, ImageSet, Prompts};
use crate::manifest::schema::{EstimatorName, IdLayout, IntrinsicDimensionParams, Representation};
use crate::model::Tower;
use crate::plan::JobSpec;
use image::RgbImage;
use serde_json::{Value as Json, json};
use std::time::Instant;

pub fn run(
    job: &JobSpec,
    cache: &Cache,
    _builder: &EntryBuilder,
) -> Result<StageOutput, StageError> {
    let device = context::device(job)?;
    let p: IntrinsicDimensionParams = context::params(job, "measure")?;
    let (n, seed) = (p.n, p.seed);
    let mut towers = context::towers(p.towers);
    // Vision first: the layout of the reference's ID vector (§1.4).
    towers.sort_by_key(|t| *t != Tower::Vision);
    let pooling = match p.representation {
        Representation::Token => Pooling::Token,
        Representation::Mean => Pooling::Mean,
        Representation::Sequence => Pooling::Sequence,
    };
    let estimator = match p.estimator {
        EstimatorName::Idvl => Estimator::Idvl { seed },
        EstimatorName::Reference => Estimator::Reference {
            fraction: p.fraction,
        },
    };
    let model = context::load_model(job, cache, device)?;
    let mut samples = Samples::open(job)?;

    let mut out = Vec::new();
    for tower in towers {
        let clock = Instant::now();
        let mut layers = Vec::new();
        let mut measure = |layer: usize,
                           linear: Option<&str>,
                           features: tch::Tensor|
         -> Result<(), StageError> {
            // The module measured: its HF name (layers are 1-based here, 0-based in names).
            let module = match linear {
                Some(l) => format!("{}encoder.layers.{}.{l}", tower.prefix(), layer - 1),
                None => format!("{}encoder.layers.{}", tower.prefix(), layer - 1),
            };
            let m = twonn::measure(&features, estimator).map_err(|e| {
                let hint = if e.is_collapse() {
                    "; the representations collapse (try representation = \"sequence\" or more samples)"
                } else {
                    ""
                };
                StageError::Failed(format!("{module}: {e}{hint}"))
            })?;
            layers.push(json!({
                "layer": layer,
                "linear": linear,
                "module": module,
                "dimension": m.dimension,
                "std": m.std,
                "kept": m.fit.kept,
                "duplicates": m.fit.duplicates,
                "degenerate": m.fit.degenerate,
                "features": features.size()[1],
            }));
            Ok(())
        };
        let measured = match tower {
            Tower::Vision => {
                let indices = draw(samples.images(), n.min(samples.images()), seed);
                samples.load(&indices)?;
                let pre = context::preprocessor(job, &model)?;
                let px = pre.batch(&indices, |i| samples.image(i))?;
                let pixels = context::pixels(&px, indices.len(), &pre, device, tch::Kind::Float);
                walk(
                    &model,
                    Inputs::Pixels(&pixels),
                    pooling,
                    p.layers,
                    &mut measure,
                )?;
                indices.len()
            }
            Tower::Text => {
                let texts = samples.texts(n, seed);
                let tokens = context::tokenizer(job)?.encode(&texts, device)?;
                walk(
                    &model,
                    Inputs::Tokens(&tokens),
                    pooling,
                    p.layers,
                    &mut measure,
                )?;
                texts.len()
            }
        };
        out.push(json!({
            "tower": tower.name(),
            "samples": measured,
            "seconds": clock.elapsed().as_secs_f64(),
            "layers": layers,
        }));
    }
    Ok(StageOutput {
        metrics: json!({
            "split": samples.split,
            "representation": p.representation,
            "layers": p.layers,
            "estimator": p.estimator,
            "towers": out,
            "summary": summary(&out),
        }),
        transient: vec![],
    })
}

/// Measures one output: (layer, the Linear within it if per-Linear, the features).
type Measure<'a> = dyn FnMut(usize, Option<&str>, tch::Tensor) -> Result<(), StageError> + 'a;

/// Visits every measured output of a tower in module order: each layer's, or each pruned
/// Linear's.
fn walk(
    model: &crate::model::Clip,
    inputs: Inputs,
    pooling: Pooling,
    layout: IdLayout,
    measure: &mut Measure,
) -> Result<(), StageError> {
    match layout {
        IdLayout::Blocks => {
            representation::per_layer(model, inputs, pooling, |l, f| measure(l, None, f))
        }
        IdLayout::Linears => representation::per_linear(model, inputs, pooling, |l, name, f| {
            measure(l, Some(name), f)
        }),
    }
}

/// Where the measured samples come from: a classification dataset's training split (texts: its
/// distinct prompts) or a retrieval dataset's (texts: its distinct captions).
struct Samples {
    split: String,
    source: Source,
}

enum Source {
    Classification(ImageSet, Prompts),
    Retrieval(RetrievalSet),
}

impl Samples {
    fn open(job: &JobSpec) -> Result<Samples, StageError> {
        if job.params["dataset"]["kind"].as_str() == Some("retrieval") {
            let split = job.params["dataset"]["options"]["train_split"]
                .as_str()
                .unwrap_or("train")
                .to_string();
            let set = context::retrieval_set(job, true)?;
            return Ok(Samples {
                split,
                source: Source::Retrieval(set),
            });
        }
        let dataset = Dataset::from_job(job)?;
        let (set, prompts) = dataset.open_labels(true)?;
        Ok(Samples {
            split: dataset.split_name(true),
            source: Source::Classification(set, prompts),
        })
    }

    fn images(&self) -> usize {
        match &self.source {
            Source::Classification(set, _) => set.len(),
            Source::Retrieval(set) => set.images.len(),
        }
    }

    /// Reads the images that will be measured.
    fn load(&mut self, indices: &[usize]) -> Result<(), DataError> {
        match &mut self.source {
            Source::Classification(set, _) => set.load(indices),
            Source::Retrieval(_) => Ok(()),
        }
    }

    fn image(&self, i: usize) -> Result<RgbImage, DataError> {
        match &self.source {
            Source::Classification(set, _) => set.image(i),
            Source::Retrieval(set) => set.image(i),
        }
    }

    /// Every distinct text once, at most `n` of them in a seeded order.
    fn texts(&self, n: usize, seed: u64) -> Vec<String> {
        let mut all: Vec<String> = match &self.source {
            Source::Classification(_, prompts) => (0..prompts.classnames.len())
                .flat_map(|c| prompts.class_prompts(c))
                .collect(),
            Source::Retrieval(set) => set.captions.iter().flatten().cloned().collect(),
        };
        all.sort();
        all.dedup();
        let order = draw(all.len(), n.min(all.len()), seed);
        order.into_iter().map(|i| all[i].clone()).collect()
    }
}

/// Per tower: the mean, the maximum and the last layer's dimension (the main table's columns).
fn summary(towers: &[Json]) -> Json {
    let mut out = serde_json::Map::new();
    for t in towers {
        let name = t["tower"].as_str().unwrap_or("?");
        let dims: Vec<f64> = t["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l["dimension"].as_f64())
            .collect();
        if dims.is_empty() {
            continue;
        }
        let mean = dims.iter().sum::<f64>() / dims.len() as f64;
        let max = dims.iter().copied().fold(f64::MIN, f64::max);
        out.insert(format!("{name}_id_mean"), json!(mean));
        out.insert(format!("{name}_id_max"), json!(max));
        out.insert(format!("{name}_id_last"), json!(dims[dims.len() - 1]));
    }
    Json::Object(out)
}
