//! The resolved, validated form of a manifest. Everything here has passed validation: names
//! refer to definitions, values are in range, input files exist.

use super::schema::{MethodSpec, Methods};
use serde_json::{Map, Value as Json};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// Resolved parameters (defaults filled in). Canonically encoded into node keys.
pub type Params = Map<String, Json>;

#[derive(Debug, Clone)]
pub struct Experiment {
    pub name: String,
    pub description: String,
    /// The manifest file as given on the command line.
    pub manifest_path: PathBuf,
    /// Keep pruned weights in the cache after every stage that reads them has finished.
    pub keep_pruned: bool,
    pub models: BTreeMap<String, ModelDef>,
    pub datasets: BTreeMap<String, DatasetDef>,
    pub methods: BTreeMap<String, MethodDef>,
    pub points: Vec<GridPoint>,
    /// (model, dataset) pairs of a grid without `method`/`sparsity`: dense stages only.
    pub dense_pairs: Vec<(String, String)>,
    pub stages: StageSettings,
    pub resources: Resources,
    /// Published numbers to show next to ours.
    pub references: Vec<Reference>,
    /// The registered pruning methods the manifest was validated against.
    pub registry: Methods,
}

impl Experiment {
    /// The registered method a grid point's method names (its definition's kind, or itself).
    pub fn method_spec(&self, method: &str) -> Option<&'static MethodSpec> {
        match self.methods.get(method) {
            Some(def) => Some(def.spec),
            None => self.registry.iter().copied().find(|m| m.name == method),
        }
    }
}

/// A named model. Its weights come from a directory or the local Hugging Face cache, optionally
/// with a vision-tower checkpoint overlaid per dataset.
#[derive(Debug, Clone)]
pub struct ModelDef {
    pub name: String,
    pub base: InputSource,
    /// Vision-only checkpoint overlaid on `base`; may contain `{dataset}`.
    pub vision: Option<InputSource>,
    /// Per dataset the model is used with: the resolved directories (base, then overlay).
    pub resolved: BTreeMap<String, Vec<PathBuf>>,
    /// A test-only model whose stages are simulated (feature `test-stages`).
    pub test: bool,
}

/// Where an external input comes from, as written in the manifest.
#[derive(Debug, Clone, PartialEq)]
pub enum InputSource {
    /// A filesystem path, relative to the manifest's directory; may contain `{dataset}`.
    Path(String),
    /// `org/name` in the local Hugging Face cache.
    Hub(String),
}

impl fmt::Display for InputSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputSource::Path(p) => write!(f, "{p}"),
            InputSource::Hub(r) => write!(f, "hf:{r}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetKind {
    /// Hugging Face parquet shards (an image struct with bytes + a label column).
    HfParquet,
    /// One sub-directory per class.
    ImageFolder,
    /// Procedurally generated, seeded.
    Synthetic,
    /// Karpathy-split JSON + image directory (COCO / Flickr30k).
    Retrieval,
}

impl DatasetKind {
    pub const NAMES: &'static [&'static str] =
        &["hf-parquet", "imagefolder", "synthetic", "retrieval"];
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::HfParquet => "hf-parquet",
            DatasetKind::ImageFolder => "imagefolder",
            DatasetKind::Synthetic => "synthetic",
            DatasetKind::Retrieval => "retrieval",
        }
    }
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "hf-parquet" => DatasetKind::HfParquet,
            "imagefolder" => DatasetKind::ImageFolder,
            "synthetic" => DatasetKind::Synthetic,
            "retrieval" => DatasetKind::Retrieval,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
pub struct DatasetDef {
    pub name: String,
    pub kind: DatasetKind,
    pub source: Option<InputSource>,
    /// The resolved directory holding the data (None for synthetic data).
    pub resolved: Option<PathBuf>,
    /// Everything else that defines the data (split names, columns, class names, templates,
    /// synthetic generator settings); part of every dependent key.
    pub params: Params,
}

#[derive(Debug, Clone)]
pub struct MethodDef {
    pub name: String,
    /// The registered method it configures.
    pub spec: &'static MethodSpec,
    pub params: Params,
}

impl MethodDef {
    /// The method's kind (its registered name).
    pub fn kind(&self) -> &'static str {
        self.spec.name
    }
}

/// Target sparsity: a fraction of weights set to zero, or an n:m pattern (n zeros in every m).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sparsity {
    Fraction(f64),
    NM { n: u32, m: u32 },
}

impl Sparsity {
    /// The fraction of weights removed.
    pub fn fraction(self) -> f64 {
        match self {
            Sparsity::Fraction(f) => f,
            Sparsity::NM { n, m } => n as f64 / m as f64,
        }
    }
}

impl fmt::Display for Sparsity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sparsity::Fraction(v) => write!(f, "{v}"),
            Sparsity::NM { n, m } => write!(f, "{n}:{m}"),
        }
    }
}

/// One point of the expanded grid.
#[derive(Debug, Clone, PartialEq)]
pub struct GridPoint {
    pub model: String,
    pub dataset: String,
    pub method: String,
    pub sparsity: Sparsity,
    pub calibration_size: u32,
    pub seed: u64,
    /// Per-point method parameter overrides from `[[grid.include]]`.
    pub overrides: Params,
}

#[derive(Debug, Clone, Default)]
pub struct StageSettings {
    pub retrain: bool,
    pub intrinsic_dimension: bool,
    pub finetune: bool,
    pub evaluate_params: Params,
    pub retrain_params: Params,
    pub intrinsic_dimension_params: Params,
    pub finetune_params: Params,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DeviceRequest {
    /// Every CUDA device libtorch sees, else the CPU.
    Auto,
    List(Vec<Device>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Device {
    Cpu,
    Cuda(u32),
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl Device {
    pub fn parse(s: &str) -> Option<Device> {
        if s == "cpu" {
            return Some(Device::Cpu);
        }
        s.strip_prefix("cuda:")
            .and_then(|i| i.parse().ok())
            .map(Device::Cuda)
    }
}

/// A number a paper reports for a grid point (`[[reference]]`), in percent.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    pub model: String,
    pub dataset: String,
    pub method: String,
    pub sparsity: Sparsity,
    /// The table column it compares with (`top1`, `image_to_text_r1`, ...).
    pub metric: String,
    pub value: f64,
    pub source: Option<String>,
}

/// Minutes between a training stage's checkpoints unless `[resources]` says otherwise.
pub const DEFAULT_CHECKPOINT_MINUTES: u64 = 10;

#[derive(Debug, Clone)]
pub struct Resources {
    pub devices: DeviceRequest,
    pub jobs_per_device: u32,
    /// Intra-op threads per job; 0 = the machine's cores divided among the CPU jobs.
    pub threads: u32,
    /// Minutes between a training stage's checkpoints (0: after every step).
    pub checkpoint_minutes: u64,
    /// Where stages run: this machine's devices, or a Slurm cluster (`[resources.slurm]`).
    pub backend: BackendKind,
    pub slurm: SlurmResources,
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            devices: DeviceRequest::Auto,
            jobs_per_device: 1,
            threads: 0,
            checkpoint_minutes: DEFAULT_CHECKPOINT_MINUTES,
            backend: BackendKind::Local,
            slurm: SlurmResources::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Local,
    Slurm,
}

/// The stage kinds `[resources.slurm.<kind>]` may name (`plan::StageKind::name`; a test keeps
/// the two lists equal). `intrinsic_dimension` is accepted as spelled in `[stages]`.
pub const STAGE_KIND_NAMES: [&str; 6] = [
    "finetune",
    "calibrate",
    "prune",
    "retrain",
    "evaluate",
    "intrinsic-dimension",
];

/// Jobs in a Slurm queue at once unless `max_queued` says otherwise.
pub const DEFAULT_MAX_QUEUED: u32 = 500;

/// `[resources.slurm]`: what every stage's job asks Slurm for, with per-stage-kind overrides
/// (`[resources.slurm.prune]`). None of it is part of any key.
#[derive(Debug, Clone, PartialEq)]
pub struct SlurmResources {
    pub default: SlurmRequest,
    /// By stage kind name (`prune`, `intrinsic-dimension`, ...): set keys replace the default's;
    /// `extra` is appended.
    pub per_kind: BTreeMap<String, SlurmRequest>,
    /// Jobs (array tasks included) this run keeps in the queue at once.
    pub max_queued: u32,
}

impl Default for SlurmResources {
    fn default() -> Self {
        SlurmResources {
            default: SlurmRequest::default(),
            per_kind: BTreeMap::new(),
            max_queued: DEFAULT_MAX_QUEUED,
        }
    }
}

impl SlurmResources {
    /// What a job of stage kind `kind` asks for.
    pub fn for_kind(&self, kind: &str) -> SlurmRequest {
        let mut r = self.default.clone();
        if let Some(o) = self.per_kind.get(kind) {
            let pick = |a: &mut Option<String>, b: &Option<String>| {
                if b.is_some() {
                    a.clone_from(b);
                }
            };
            pick(&mut r.partition, &o.partition);
            pick(&mut r.account, &o.account);
            pick(&mut r.gres, &o.gres);
            pick(&mut r.time, &o.time);
            pick(&mut r.mem, &o.mem);
            r.cpus_per_task = o.cpus_per_task.or(r.cpus_per_task);
            r.extra.extend(o.extra.iter().cloned());
        }
        r
    }
}

/// One job's request to Slurm; `None` leaves the cluster's default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlurmRequest {
    pub partition: Option<String>,
    pub account: Option<String>,
    /// Generic resources per job (`gpu:1`); a GPU request runs the stage on `cuda:0` of the
    /// GPUs Slurm gives it.
    pub gres: Option<String>,
    pub time: Option<String>,
    pub mem: Option<String>,
    pub cpus_per_task: Option<u32>,
    /// sbatch options passed through verbatim, one `--option=value` per item.
    pub extra: Vec<String>,
}

impl SlurmRequest {
    /// Whether the job asks for GPUs (`gpu`, `gpu:2`, `gpu:a100:1`).
    pub fn wants_gpu(&self) -> bool {
        self.gres
            .as_deref()
            .is_some_and(|g| g.split(',').any(|r| r == "gpu" || r.starts_with("gpu:")))
    }
}
