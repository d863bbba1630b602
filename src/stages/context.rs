//! What every ML stage needs from its job spec: the device and thread budget, the model (base,
//! vision overlays, an upstream fine-tuned vision tower, an upstream prune), the tokenizer and preprocessing of
//! the base model, and the dataset (source, splits, class names and templates).

use super::StageError;
use crate::cache::Cache;
use crate::data::retrieval::RetrievalSet;
use crate::data::synthetic::Synthetic;
use crate::data::{ImageSet, Preprocessor, Prompts, SourceSpec, loader};
use crate::manifest::schema::{Towers, TypedParams};
use crate::model::{Clip, ClipTokenizer, Tower};
use crate::plan::{JobSpec, StageKind};
use serde_json::Value as Json;
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

/// The artifact directory of a fine-tuned vision tower inside a finetune entry.
pub const VISION_ARTIFACT: &str = "vision";

/// The towers a `towers` parameter names; `both` is text then vision (Slide-CLIP's order; the
/// towers are independent).
pub fn towers(set: Towers) -> Vec<Tower> {
    match set {
        Towers::Both => vec![Tower::Text, Tower::Vision],
        Towers::Vision => vec![Tower::Vision],
        Towers::Text => vec![Tower::Text],
    }
}

/// A stage's typed parameters from the job (`key` of its params): the planner filled every
/// default in, so a missing or unknown key means the spec was written by another version.
pub fn params<T: TypedParams>(job: &JobSpec, key: &str) -> Result<T, StageError> {
    T::decode(&job.params[key]).map_err(|e| StageError::BadJob {
        path: job.results_dir.clone(),
        reason: format!(
            "{} job {}: {e}; re-plan with this version of orchestrate",
            job.kind, job.key
        ),
    })
}

/// Sets libtorch's and rayon's thread counts and returns the job's device.
pub fn device(job: &JobSpec) -> Result<Device, StageError> {
    if job.threads > 0 {
        tch::set_num_threads(job.threads as i32);
        // Decoding shares the stage's thread budget; a second call (tests) keeps the first pool.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(job.threads as usize)
            .build_global();
    }
    match job.device.as_str() {
        "cpu" => Ok(Device::Cpu),
        d => match d
            .strip_prefix("cuda:")
            .and_then(|i| i.parse::<usize>().ok())
        {
            Some(i) if crate::util::runtime::load_cuda() && tch::Cuda::is_available() => {
                Ok(Device::Cuda(i))
            }
            Some(_) => {
                let visible = std::env::var("CUDA_VISIBLE_DEVICES").unwrap_or_default();
                Err(StageError::Failed(format!(
                    "device {d} was assigned (CUDA_VISIBLE_DEVICES={visible:?} on {}) but libtorch sees no CUDA device: no NVIDIA driver here, or a CPU-only libtorch",
                    crate::util::runtime::hostname()
                )))
            }
            None => Err(StageError::Failed(format!("unknown device `{d}`"))),
        },
    }
}

fn input<'a>(job: &'a JobSpec, role: &str) -> Option<&'a Path> {
    job.inputs
        .iter()
        .find(|i| i.role == role)
        .map(|i| i.path.as_path())
}

/// The dataset directory (absent for synthetic data).
pub fn dataset_dir(job: &JobSpec) -> Result<PathBuf, StageError> {
    input(job, "dataset")
        .map(Path::to_path_buf)
        .ok_or_else(|| StageError::Failed("job has no dataset input".into()))
}

/// A preprocessed batch (`n` images of `pre`'s crop size, CHW floats) as `[n, 3, H, W]` on the
/// device in `kind`.
pub fn pixels(px: &[f32], n: usize, pre: &Preprocessor, device: Device, kind: tch::Kind) -> Tensor {
    Tensor::from_slice(px)
        .view([n as i64, 3, pre.crop.0 as i64, pre.crop.1 as i64])
        .to_device(device)
        .to_kind(kind)
}

/// `f(pixels, labels)` over every image of `set` in order, `batch` at a time, the next batch
/// decoding while the current one runs.
pub fn labelled_batches(
    set: &ImageSet,
    pre: &Preprocessor,
    device: Device,
    kind: tch::Kind,
    batch: usize,
    mut f: impl FnMut(&Tensor, &Tensor) -> Result<(), StageError>,
) -> Result<(), StageError> {
    let indices: Vec<usize> = (0..set.len()).collect();
    loader::pipeline(
        &loader::chunks(&indices, batch),
        |chunk| {
            pre.batch(chunk, |i| set.image(i))
                .map(|px| (chunk.to_vec(), px))
        },
        |(chunk, px): (Vec<usize>, Vec<f32>)| -> Result<(), StageError> {
            let pixels = self::pixels(&px, chunk.len(), pre, device, kind);
            let labels: Vec<i64> = chunk.iter().map(|&i| set.label(i)).collect();
            f(&pixels, &Tensor::from_slice(&labels).to_device(device))
        },
    )
}

/// The base model directory (tokenizer and preprocessing live there).
pub fn base_dir(job: &JobSpec) -> Result<&Path, StageError> {
    input(job, "model").ok_or_else(|| StageError::Failed("job has no model input".into()))
}

/// Loads the job's model: the base, its vision overlay, a fine-tuned vision tower from an
/// upstream finetune entry, then the upstream prune.
pub fn load_model(job: &JobSpec, cache: &Cache, device: Device) -> Result<Clip, StageError> {
    let mut model = load_dense(job, cache, device)?;
    for up in job.upstream.iter().filter(|u| u.kind == StageKind::Prune) {
        crate::prune::artifact::apply(&mut model, &cache.artifacts_dir(&up.key))?;
    }
    Ok(model)
}

/// The job's model before any prune: the dense model a pruned point is compared with.
pub fn load_dense(job: &JobSpec, cache: &Cache, device: Device) -> Result<Clip, StageError> {
    let base = base_dir(job)?;
    let mut overlays: Vec<PathBuf> = job
        .inputs
        .iter()
        .filter(|i| i.role == "model.vision")
        .map(|i| i.path.clone())
        .collect();
    for up in job
        .upstream
        .iter()
        .filter(|u| u.kind == StageKind::Finetune)
    {
        overlays.push(cache.artifacts_dir(&up.key).join(VISION_ARTIFACT));
    }
    let refs: Vec<&Path> = overlays.iter().map(PathBuf::as_path).collect();
    Ok(Clip::load(base, &refs, device)?)
}

/// The artifact directory of the job's upstream calibration, if any.
pub fn calibration_dir(job: &JobSpec, cache: &Cache) -> Option<PathBuf> {
    job.upstream
        .iter()
        .find(|u| u.kind == StageKind::Calibrate)
        .map(|u| cache.artifacts_dir(&u.key))
}

pub fn tokenizer(job: &JobSpec) -> Result<ClipTokenizer, StageError> {
    Ok(ClipTokenizer::from_file(
        &base_dir(job)?.join("tokenizer.json"),
    )?)
}

pub fn preprocessor(job: &JobSpec, model: &Clip) -> Result<Preprocessor, StageError> {
    Ok(Preprocessor::for_model(
        base_dir(job)?,
        model.config.vision.image_size as u32,
    )?)
}

/// Adds `from`'s fields to the JSON object `into` (both objects; otherwise nothing).
pub fn merge(into: &mut Json, from: Json) {
    if let (Json::Object(a), Json::Object(b)) = (into, from) {
        a.extend(b);
    }
}

/// A Karpathy-split retrieval dataset's evaluation split (or, with `train`, its `train_split`).
pub fn retrieval_set(job: &JobSpec, train: bool) -> Result<RetrievalSet, StageError> {
    let opts = &job.params["dataset"]["options"];
    let split = if train {
        opts["train_split"].as_str().unwrap_or("train")
    } else {
        opts["split"].as_str().unwrap_or("test")
    };
    retrieval_split(job, split)
}

/// The dataset's `val_split` option: where retraining picks its best epoch, if anywhere.
pub fn val_split(job: &JobSpec) -> Option<String> {
    job.params["dataset"]["options"]["val_split"]
        .as_str()
        .map(str::to_string)
}

/// A Karpathy-split retrieval dataset's split by name.
pub fn retrieval_split(job: &JobSpec, split: &str) -> Result<RetrievalSet, StageError> {
    let opts = &job.params["dataset"]["options"];
    let dir = dataset_dir(job)?;
    let rel = |k: &str, d: &str| dir.join(Path::new(opts[k].as_str().unwrap_or(d)));
    Ok(RetrievalSet::open(
        &rel("annotations", "dataset.json"),
        &rel("images", "images"),
        split,
    )?)
}

/// A dataset as the stage sees it: where the items come from and how its classes are named.
pub struct Dataset {
    pub source: SourceSpec,
    pub options: Json,
    /// Explicit or built-in lists; `None` means "the data's own class names".
    prompts: Option<Prompts>,
    templates: Option<Vec<String>>,
}

const DEFAULT_TEMPLATES: &[&str] = &["a photo of a {c}."];

impl Dataset {
    /// From the job's `params.dataset` (`{"kind", "options"}`) and its `dataset` input.
    pub fn from_job(job: &JobSpec) -> Result<Dataset, StageError> {
        let spec = &job.params["dataset"];
        let opts = &spec["options"];
        let s = |k: &str, d: &str| opts[k].as_str().unwrap_or(d).to_string();
        let u = |k: &str, d: u64| opts[k].as_u64().unwrap_or(d);
        let dir = || dataset_dir(job);
        let source = match spec["kind"].as_str().unwrap_or("") {
            "hf-parquet" => SourceSpec::Parquet {
                dir: dir()?,
                image_column: s("image_column", "image"),
                label_column: s("label_column", "label"),
            },
            "imagefolder" => SourceSpec::Folder { dir: dir()? },
            "synthetic" => SourceSpec::Synthetic {
                generator: Synthetic {
                    classes: u("classes", 10) as usize,
                    image_size: u("image_size", 64) as u32,
                    seed: u("seed", 0),
                },
                train_size: u("train_size", 1000) as usize,
                test_size: u("test_size", 500) as usize,
            },
            other => {
                return Err(StageError::Failed(format!(
                    "dataset kind `{other}` is not a classification dataset"
                )));
            }
        };
        let list = |k: &str| -> Option<Vec<String>> {
            opts[k].as_array().map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
        };
        let builtin = opts["prompts"].as_str().and_then(Prompts::builtin);
        let templates = list("templates").or_else(|| builtin.map(|b| b.templates.clone()));
        let prompts = list("classnames")
            .or_else(|| builtin.map(|b| b.classnames.clone()))
            .map(|classnames| Prompts {
                classnames,
                templates: templates.clone().unwrap_or_else(default_templates),
            });
        Ok(Dataset {
            source,
            options: opts.clone(),
            prompts,
            templates,
        })
    }

    pub fn split_name(&self, train: bool) -> String {
        let (k, d) = if train {
            ("train_split", "train")
        } else {
            ("split", "test")
        };
        self.options[k].as_str().unwrap_or(d).to_string()
    }

    /// Opens a split, every image loaded, and the prompts that name its classes, checked against
    /// its labels.
    pub fn open(&self, train: bool) -> Result<(ImageSet, Prompts), StageError> {
        self.open_split(&self.split_name(train))
    }

    /// [`Dataset::open`] of a split by name.
    pub fn open_split(&self, split: &str) -> Result<(ImageSet, Prompts), StageError> {
        let (mut set, prompts) = self.open_split_labels(split)?;
        set.load(&(0..set.len()).collect::<Vec<_>>())?;
        Ok((set, prompts))
    }

    /// As [`Dataset::open`], with no image loaded: a stage that uses a sample of the split
    /// [`ImageSet::load`]s just those rows.
    pub fn open_labels(&self, train: bool) -> Result<(ImageSet, Prompts), StageError> {
        self.open_split_labels(&self.split_name(train))
    }

    fn open_split_labels(&self, split: &str) -> Result<(ImageSet, Prompts), StageError> {
        let set = ImageSet::open_labels(&self.source, split)?;
        let prompts = match (&self.prompts, &set.found_classnames) {
            (Some(p), _) => p.clone(),
            (None, Some(found)) => Prompts {
                classnames: found.clone(),
                templates: self.templates.clone().unwrap_or_else(default_templates),
            },
            (None, None) => {
                return Err(StageError::Failed(format!(
                    "{}: no class names; give `classnames` (and `templates`) in the dataset's manifest entry",
                    set.origin.display()
                )));
            }
        };
        prompts.check(None, &set.origin)?;
        set.check_labels(prompts.classnames.len())?;
        if set.is_empty() {
            return Err(StageError::Failed(format!(
                "{}: split `{split}` is empty",
                set.origin.display(),
            )));
        }
        Ok((set, prompts))
    }
}

fn default_templates() -> Vec<String> {
    DEFAULT_TEMPLATES.iter().map(|s| s.to_string()).collect()
}
