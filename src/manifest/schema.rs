//! The manifest's schemas: the declaration every pruning method makes ([`MethodSpec`]), the
//! typed parameters of each configurable stage, and the options of each dataset kind.
//!
//! One concept, one place: a parameter is declared once ([`super::params`]); validation,
//! defaults, the key encoding (every resolved parameter is part of a node's key), the stage's
//! typed view and `experiments/README.md` all follow from it. The pruning methods themselves are
//! declared beside their implementations (`stages::methods`) and handed to the manifest loader.

pub use super::params::{DefaultValue, ParamSpec, ParamType, TypedParams};
use super::params::{float, int, p, positive};
use serde::{Deserialize, Serialize};

/// What a pruning method needs besides the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodInput {
    /// Calibration images with captions (and their labels, which SLS reads).
    Calibration,
    /// The dataset's training split (training-based methods).
    TrainingSplit,
    /// The dense model's intrinsic dimension per Linear (PLATON + ID).
    DenseIntrinsicDimension,
}

/// How a method reads the grid's `sparsity` axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SparsityAxis {
    /// The fraction of the pruned weights removed, or an n:m pattern.
    Weights,
    /// The fraction of the tower's multiply-accumulates removed (structured methods).
    MacsRemoved,
    /// UPop's p: the fraction of the weighted count of masked units removed (36 per head
    /// dimension, 1 per neuron).
    UnitsRemoved,
    /// Unused: the method decides from the data (one prune serves every sparsity).
    DataDriven,
}

/// A pruning method's declaration: everything the manifest and the planner need to know about
/// it. Its implementation, and the kind of artifact it writes, live beside it
/// (`stages::methods`).
#[derive(Debug, Clone, Copy)]
pub struct MethodSpec {
    pub name: &'static str,
    pub doc: &'static str,
    pub params: &'static [ParamSpec],
    pub inputs: &'static [MethodInput],
    pub sparsity: SparsityAxis,
    /// What the method can know is wrong with a grid point before anything runs.
    pub check: Option<PlanCheck>,
}

/// A method's plan-time check of one grid point.
pub type PlanCheck = fn(&PointCheck) -> Result<(), Problem>;

/// A grid point as a method's plan-time check sees it.
pub struct PointCheck<'a> {
    pub model: &'a crate::util::clip_config::ClipConfig,
    pub sparsity: super::types::Sparsity,
    /// The method's resolved parameters (defaults, the method table, the point's overrides).
    pub params: &'a serde_json::Map<String, serde_json::Value>,
    /// Whether the dataset is an image–text retrieval set (captions) rather than classes.
    pub retrieval: bool,
}

/// What a plan-time check found, and what the user can do about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub message: String,
    pub hint: String,
}

impl MethodSpec {
    pub fn needs(&self, input: MethodInput) -> bool {
        self.inputs.contains(&input)
    }
}

/// The methods a manifest may name, as the command line hands them to the loader.
pub type Methods = &'static [&'static MethodSpec];

/// Which encoder towers a stage works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Towers {
    Both,
    Vision,
    Text,
}

pub const TOWER_CHOICES: ParamType = ParamType::Choice(&["both", "vision", "text"]);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Fp32,
    Bf16,
    Fp16,
}

crate::params! {
    /// Parameters of the zero-shot evaluation stage (`[stages.evaluate]`).
    pub struct EvaluateParams {
        /// images per forward
        batch_size: usize = (int(1, 1 << 16), DefaultValue::Int(256)),
        /// evaluation dtype (bf16/fp16 on GPU only)
        precision: Precision = (ParamType::Choice(&["fp32", "bf16", "fp16"]), DefaultValue::Str("fp32")),
        /// measure latency (batch 1) and throughput (at `batch_size`) of the model and of its dense model, in the same process
        timing: bool = (ParamType::Bool, DefaultValue::Bool(true)),
        /// timed forwards per measurement (the median is reported; a warm-up precedes them on CUDA)
        timing_repeats: usize = (int(1, 1000), DefaultValue::Int(1)),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Trainable {
    #[serde(rename = "head")]
    Head,
    #[serde(rename = "head+layernorm")]
    HeadLayerNorm,
    #[serde(rename = "head+convpass")]
    HeadConvpass,
    #[serde(rename = "vision")]
    Vision,
    /// Every parameter of the model, both towers (UPop's retraining).
    #[serde(rename = "all")]
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Head {
    #[serde(rename = "linear")]
    Linear,
    #[serde(rename = "zero-shot")]
    ZeroShot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Schedule {
    #[serde(rename = "constant")]
    Constant,
    #[serde(rename = "warmup-cosine")]
    WarmupCosine,
    /// Half cosine from `lr` to `min_lr`, set at the start of each epoch (UPop's retraining).
    #[serde(rename = "epoch-cosine")]
    EpochCosine,
}

crate::params! {
    /// Parameters of the retraining stage (`[stages.retrain]`). The defaults are the SLS paper's
    /// setting (spec structured-and-analysis.md §2.5, §2.8: preset `sls-paper`).
    pub struct RetrainParams {
        /// what trains besides a linear head: nothing, the vision LayerNorms, Convpass adapters in every kept block, or the whole vision tower (pruned weights stay zero)
        trainable: Trainable = (ParamType::Choice(&["head", "head+layernorm", "head+convpass", "vision", "all"]), DefaultValue::Str("head+convpass")),
        /// a linear classifier initialised from the zero-shot head, or the frozen zero-shot head
        head: Head = (ParamType::Choice(&["linear", "zero-shot"]), DefaultValue::Str("linear")),
        /// training epochs
        epochs: usize = (int(1, 100_000), DefaultValue::Int(100)),
        /// after a method that trains for epochs (UPop), retrain for as many as it searched (UPop's rule: search = retrain epochs); else `epochs`
        search_epochs: bool = (ParamType::Bool, DefaultValue::Bool(false)),
        /// AdamW learning rate (the peak, with the cosine schedule)
        lr: f64 = (positive(0.0, 10.0), DefaultValue::Float(1e-5)),
        /// constant lr (the paper's FT), or linear warm-up then half-cycle cosine to `min_lr` (CLR)
        schedule: Schedule = (ParamType::Choice(&["constant", "warmup-cosine", "epoch-cosine"]), DefaultValue::Str("constant")),
        /// warm-up length of the cosine schedule
        warmup_epochs: f64 = (float(0.0, 100_000.0), DefaultValue::Float(10.0)),
        /// final lr of the cosine schedule
        min_lr: f64 = (float(0.0, 10.0), DefaultValue::Float(1e-5)),
        /// AdamW weight decay
        weight_decay: f64 = (float(0.0, 10.0), DefaultValue::Float(1e-4)),
        /// training batch size (incomplete batches are dropped); with `accumulation`, per micro-batch
        batch_size: usize = (int(1, 1 << 16), DefaultValue::Int(64)),
        /// micro-batches per optimiser step (gradients averaged): one device reproduces a multi-GPU batch
        accumulation: usize = (int(1, 1 << 16), DefaultValue::Int(1)),
        /// distillation weight of the momentum model's targets, ramped over the first epoch (retrieval datasets)
        alpha: f64 = (float(0.0, 1.0), DefaultValue::Float(0.4)),
        /// momentum of the momentum model (retrieval datasets)
        momentum: f64 = (float(0.0, 1.0), DefaultValue::Float(0.995)),
        /// feature queue length, a multiple of batch_size × accumulation (retrieval datasets)
        queue_size: usize = (int(1, 1 << 30), DefaultValue::Int(57_600)),
        /// training images (caption pairs on a retrieval dataset) drawn by `seed` (all of them when the split is smaller)
        train_size: usize = (int(1, 100_000_000), DefaultValue::Int(1000)),
        /// epochs between evaluations (the last epoch is always evaluated)
        eval_every: usize = (int(1, 100_000), DefaultValue::Int(1)),
        /// seed of the image draw, the batch order and the adapters' initialisation
        seed: u64 = (int(0, i64::MAX), DefaultValue::Int(0)),
        /// Convpass output scale s; default: the VTAB-1k value of a built-in dataset
        convpass_scale: Option<f64> = (positive(0.0, 1e6), DefaultValue::Derived),
        /// Xavier-initialised Convpass conv (else identity at the centre tap); default: the VTAB-1k value
        convpass_xavier: Option<bool> = (ParamType::Bool, DefaultValue::Derived),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Representation {
    Token,
    Mean,
    Sequence,
}

/// Which outputs the intrinsic-dimension stage measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdLayout {
    /// Each encoder layer's output.
    Blocks,
    /// The outputs of `out_proj`, `fc1` and `fc2` of every layer (spec §1.4, §5.4).
    Linears,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EstimatorName {
    Reference,
    Idvl,
}

crate::params! {
    /// Parameters of the intrinsic-dimension stage (`[stages.intrinsic_dimension]`).
    pub struct IntrinsicDimensionParams {
        /// training images whose representations are measured (all of them when the split is smaller); text: distinct prompts
        n: usize = (int(3, 1_000_000), DefaultValue::Int(2000)),
        /// towers measured
        towers: Towers = (TOWER_CHOICES, DefaultValue::Str("vision")),
        /// what is measured: each encoder layer's output, or the output of every Linear PLATON + ID prunes (out_proj, fc1, fc2 of every layer)
        layers: IdLayout = (ParamType::Choice(&["blocks", "linears"]), DefaultValue::Str("blocks")),
        /// per sample: the CLS (vision) / EOS (text) token, the token mean, or the whole sequence flattened
        representation: Representation = (ParamType::Choice(&["token", "mean", "sequence"]), DefaultValue::Str("token")),
        /// TwoNN variant
        estimator: EstimatorName = (ParamType::Choice(&["reference", "idvl"]), DefaultValue::Str("reference")),
        /// fraction of points kept by the fit (reference estimator)
        fraction: f64 = (positive(0.0, 1.0), DefaultValue::Float(0.9)),
        /// seed of the sample draw (and of the IDVL block permutations)
        seed: u64 = (int(0, i64::MAX), DefaultValue::Int(0)),
    }
}

crate::params! {
    /// Parameters of the fine-tuning stage (`[stages.finetune]`).
    pub struct FinetuneParams {
        /// optimizer steps
        steps: u64 = (int(1, 10_000_000), DefaultValue::Int(4000)),
        /// training batch size
        batch_size: usize = (int(1, 1 << 16), DefaultValue::Int(128)),
        /// AdamW peak learning rate
        lr: f64 = (positive(0.0, 10.0), DefaultValue::Float(1e-5)),
        /// AdamW weight decay
        weight_decay: f64 = (float(0.0, 10.0), DefaultValue::Float(0.1)),
        /// linear warm-up steps before the cosine decay
        warmup_steps: u64 = (int(0, 10_000_000), DefaultValue::Int(500)),
        /// seed of the sample order
        seed: u64 = (int(0, i64::MAX), DefaultValue::Int(0)),
    }
}

/// Options every dataset kind takes.
pub const DATASET_COMMON_PARAMS: &[ParamSpec] = &[
    p(
        "split",
        ParamType::Str,
        DefaultValue::Str("test"),
        "evaluation split",
    ),
    p(
        "train_split",
        ParamType::Str,
        DefaultValue::Str("train"),
        "split calibration, fine-tuning and retraining draw from",
    ),
    p(
        "val_split",
        ParamType::Str,
        DefaultValue::Derived,
        "split retraining picks its best epoch on (reporting the evaluation split at that epoch); default: none, the best evaluated epoch on the evaluation split",
    ),
    p(
        "classnames",
        ParamType::StrList,
        DefaultValue::Derived,
        "class names; default: the built-in list of a known dataset",
    ),
    p(
        "templates",
        ParamType::StrList,
        DefaultValue::Derived,
        "prompt templates with `{c}`; default: the built-in list",
    ),
    p(
        "calibration_indices",
        ParamType::IndexList { repeats: false },
        DefaultValue::Derived,
        "training-split indices of the calibration images, in order (a list or a file); a point uses the first `calibration_size`; default: a draw seeded by the point's seed",
    ),
    p(
        "prompts",
        ParamType::Choice(KNOWN_DATASET_NAMES),
        DefaultValue::Derived,
        "built-in class names and templates to use; default: the dataset's own name when it is one of the 12 known datasets",
    ),
];

/// A dataset of the spec's table (clip.md §10) with its built-in class names and templates, and
/// the split and columns of its Hugging Face parquet copy.
#[derive(Debug, Clone, Copy)]
pub struct KnownDataset {
    pub name: &'static str,
    pub split: &'static str,
    pub image_column: &'static str,
    pub label_column: &'static str,
    /// Convpass scale and Xavier flag of its VTAB-1k task (structured-and-analysis.md §2.6).
    pub convpass: Option<(f64, bool)>,
}

const fn known(
    name: &'static str,
    split: &'static str,
    image_column: &'static str,
    label_column: &'static str,
) -> KnownDataset {
    KnownDataset {
        name,
        split,
        image_column,
        label_column,
        convpass: None,
    }
}

const fn vtab(d: KnownDataset, scale: f64, xavier: bool) -> KnownDataset {
    KnownDataset {
        convpass: Some((scale, xavier)),
        ..d
    }
}

pub const KNOWN_DATASETS: &[KnownDataset] = &[
    known("mnist", "test", "image", "label"),
    vtab(known("svhn", "test", "image", "label"), 100.0, true),
    known("cifar10", "test", "img", "label"),
    vtab(known("cifar100", "test", "img", "fine_label"), 0.1, false),
    known("cars", "test", "image", "label"),
    known("gtsrb", "test", "image", "label"),
    vtab(known("flowers102", "test", "image", "label"), 0.1, true),
    known("food101", "validation", "image", "label"),
    vtab(known("eurosat", "test", "image", "label"), 10.0, false),
    vtab(known("sun397", "test", "image", "label"), 0.1, false),
    vtab(known("resisc45", "test", "image", "label"), 10.0, false),
    vtab(known("dtd", "test", "image", "label"), 0.01, true),
];

pub const KNOWN_DATASET_NAMES: &[&str] = &[
    "mnist",
    "svhn",
    "cifar10",
    "cifar100",
    "cars",
    "gtsrb",
    "flowers102",
    "food101",
    "eurosat",
    "sun397",
    "resisc45",
    "dtd",
];

pub fn known_dataset(name: &str) -> Option<&'static KnownDataset> {
    KNOWN_DATASETS.iter().find(|k| k.name == name)
}

/// Extra options of `hf-parquet` datasets.
pub const DATASET_PARQUET_PARAMS: &[ParamSpec] = &[
    p(
        "image_column",
        ParamType::Str,
        DefaultValue::Str("image"),
        "column holding the image struct",
    ),
    p(
        "label_column",
        ParamType::Str,
        DefaultValue::Str("label"),
        "column holding the integer label",
    ),
];

/// Extra options of `synthetic` datasets.
pub const DATASET_SYNTHETIC_PARAMS: &[ParamSpec] = &[
    p(
        "classes",
        ParamType::Int {
            min: 2,
            max: 10_000,
        },
        DefaultValue::Int(10),
        "number of classes",
    ),
    p(
        "train_size",
        ParamType::Int {
            min: 1,
            max: 10_000_000,
        },
        DefaultValue::Int(1000),
        "training images",
    ),
    p(
        "test_size",
        ParamType::Int {
            min: 1,
            max: 10_000_000,
        },
        DefaultValue::Int(500),
        "test images",
    ),
    p(
        "image_size",
        ParamType::Int { min: 8, max: 4096 },
        DefaultValue::Int(64),
        "side of the square images",
    ),
    p(
        "seed",
        ParamType::Int {
            min: 0,
            max: i64::MAX,
        },
        DefaultValue::Int(0),
        "generator seed",
    ),
];

/// Extra options of `retrieval` datasets.
pub const DATASET_RETRIEVAL_PARAMS: &[ParamSpec] = &[
    p(
        "annotations",
        ParamType::Str,
        DefaultValue::Str("dataset.json"),
        "Karpathy-split JSON, relative to the dataset path",
    ),
    p(
        "images",
        ParamType::Str,
        DefaultValue::Str("images"),
        "image directory, relative to the dataset path",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::params::check_declaration;

    #[test]
    fn stage_parameter_declarations_decode() {
        check_declaration::<EvaluateParams>().unwrap();
        check_declaration::<RetrainParams>().unwrap();
        check_declaration::<IntrinsicDimensionParams>().unwrap();
        check_declaration::<FinetuneParams>().unwrap();
    }
}
