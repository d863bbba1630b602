//! The manifest's parameter schemas: one table per method kind and per configurable stage.
//!
//! One concept, one place: a [`ParamSpec`] names a parameter, its type and range, its default
//! (from `../shared/specs/`), and a one-line doc; validation, defaults, the key encoding (every
//! resolved parameter is part of a node's key) and `experiments/README.md` all follow from it.

use serde_json::Value as Json;

#[derive(Debug, Clone, Copy)]
pub enum ParamType {
    /// A float in `[min, max]` (or `(min, max]` when `min_exclusive`).
    Float {
        min: f64,
        max: f64,
        min_exclusive: bool,
    },
    Int {
        min: i64,
        max: i64,
    },
    Bool,
    Choice(&'static [&'static str]),
    /// Any non-empty string.
    Str,
    /// A list of strings (class names, templates, ...).
    StrList,
    /// Distinct non-negative integers: an inline list, or the path of a text file holding them
    /// (separated by whitespace or commas, optionally inside `[ ]`), relative to the manifest.
    IndexList,
}

#[derive(Debug, Clone, Copy)]
pub enum DefaultValue {
    Float(f64),
    Int(i64),
    Bool(bool),
    Str(&'static str),
    /// No default: absent means "derived" (documented in `doc`), and is left out of the key.
    Derived,
}

#[derive(Debug, Clone, Copy)]
pub struct ParamSpec {
    pub name: &'static str,
    pub ty: ParamType,
    pub default: DefaultValue,
    pub doc: &'static str,
}

impl DefaultValue {
    pub fn to_json(self) -> Option<Json> {
        match self {
            DefaultValue::Float(v) => Some(Json::from(v)),
            DefaultValue::Int(v) => Some(Json::from(v)),
            DefaultValue::Bool(v) => Some(Json::from(v)),
            DefaultValue::Str(v) => Some(Json::from(v)),
            DefaultValue::Derived => None,
        }
    }
}

const fn p(
    name: &'static str,
    ty: ParamType,
    default: DefaultValue,
    doc: &'static str,
) -> ParamSpec {
    ParamSpec {
        name,
        ty,
        default,
        doc,
    }
}

const TOWERS: ParamSpec = p(
    "towers",
    ParamType::Choice(&["both", "vision", "text"]),
    DefaultValue::Str("both"),
    "which encoder towers are pruned",
);
const BLOCKSIZE_128: ParamSpec = p(
    "blocksize",
    ParamType::Int {
        min: 1,
        max: 1 << 20,
    },
    DefaultValue::Int(128),
    "SparseGPT column block size (rounded down to a multiple of m for n:m)",
);
const BLOCKSIZE_N: ParamSpec = p(
    "blocksize",
    ParamType::Int {
        min: 1,
        max: 1 << 20,
    },
    DefaultValue::Derived,
    "SparseGPT column block size; default = the calibration size",
);
const PERCDAMP: ParamSpec = p(
    "percdamp",
    ParamType::Float {
        min: 0.0,
        max: 1.0,
        min_exclusive: true,
    },
    DefaultValue::Float(0.01),
    "Hessian dampening as a fraction of its mean diagonal",
);
const SLIDE: [ParamSpec; 7] = [
    TOWERS,
    BLOCKSIZE_N,
    PERCDAMP,
    p(
        "epochs",
        ParamType::Int {
            min: 0,
            max: 10_000,
        },
        DefaultValue::Int(5),
        "local-distillation epochs per layer (upper bound)",
    ),
    p(
        "lr",
        ParamType::Float {
            min: 0.0,
            max: 1.0,
            min_exclusive: true,
        },
        DefaultValue::Float(1e-5),
        "AdamW learning rate of the distillation",
    ),
    p(
        "weight_decay",
        ParamType::Float {
            min: 0.0,
            max: 1.0,
            min_exclusive: false,
        },
        DefaultValue::Float(0.01),
        "AdamW weight decay of the distillation",
    ),
    p(
        "threshold",
        ParamType::Float {
            min: 0.0,
            max: 1e6,
            min_exclusive: false,
        },
        DefaultValue::Float(0.01),
        "early stop when an epoch's mean loss falls below this",
    ),
];

/// A pruning method kind: what it needs and which parameters it takes.
#[derive(Debug, Clone, Copy)]
pub struct MethodKind {
    pub name: &'static str,
    pub needs_calibration: bool,
    pub params: &'static [ParamSpec],
    pub doc: &'static str,
}

const SLS: [ParamSpec; 2] = [
    p(
        "alpha",
        ParamType::Float {
            min: 0.0,
            max: 1.0,
            min_exclusive: false,
        },
        DefaultValue::Float(0.3),
        "a block is kept while its silhouette is ≥ alpha · the last block's",
    ),
    p(
        "on_negative",
        ParamType::Choice(&["error", "keep-all"]),
        DefaultValue::Str("error"),
        "when the last block's silhouette is negative: fail, or keep every block",
    ),
];

pub const METHOD_KINDS: &[MethodKind] = &[
    MethodKind {
        name: "magnitude",
        needs_calibration: false,
        params: &[TOWERS],
        doc: "smallest |W| per layer",
    },
    MethodKind {
        name: "wanda",
        needs_calibration: true,
        params: &[TOWERS],
        doc: "|W|·‖X‖ per output row (Wanda)",
    },
    MethodKind {
        name: "sparsegpt",
        needs_calibration: true,
        params: &[TOWERS, BLOCKSIZE_128, PERCDAMP],
        doc: "OBS-style reconstruction (SparseGPT)",
    },
    MethodKind {
        name: "slide",
        needs_calibration: true,
        params: &SLIDE,
        doc: "Slide-CLIP sliding SparseGPT with local distillation",
    },
    MethodKind {
        name: "slide-progressive",
        needs_calibration: true,
        params: &SLIDE,
        doc: "Slide-CLIP with a progressive sparsity schedule",
    },
    MethodKind {
        name: "sls",
        needs_calibration: true,
        params: &SLS,
        doc: "SLS depth pruning of the vision tower (t-SNE + silhouette per block; the calibration images and their labels; sparsity is ignored)",
    },
];

pub fn method_kind(name: &str) -> Option<&'static MethodKind> {
    METHOD_KINDS.iter().find(|k| k.name == name)
}

/// Parameters of the zero-shot evaluation stage (`[stages.evaluate]`).
pub const EVALUATE_PARAMS: &[ParamSpec] = &[
    p(
        "batch_size",
        ParamType::Int {
            min: 1,
            max: 1 << 16,
        },
        DefaultValue::Int(256),
        "images per forward",
    ),
    p(
        "precision",
        ParamType::Choice(&["fp32", "bf16", "fp16"]),
        DefaultValue::Str("fp32"),
        "evaluation dtype (bf16/fp16 on GPU only)",
    ),
];

/// Parameters of the retraining stage (`[stages.retrain]`). The defaults are the SLS paper's
/// setting (spec structured-and-analysis.md §2.5, §2.8: preset `sls-paper`).
pub const RETRAIN_PARAMS: &[ParamSpec] = &[
    p(
        "trainable",
        ParamType::Choice(&["head", "head+layernorm", "head+convpass", "vision"]),
        DefaultValue::Str("head+convpass"),
        "what trains besides a linear head: nothing, the vision LayerNorms, Convpass adapters in every kept block, or the whole vision tower (pruned weights stay zero)",
    ),
    p(
        "head",
        ParamType::Choice(&["linear", "zero-shot"]),
        DefaultValue::Str("linear"),
        "a linear classifier initialised from the zero-shot head, or the frozen zero-shot head",
    ),
    p(
        "epochs",
        ParamType::Int {
            min: 1,
            max: 100_000,
        },
        DefaultValue::Int(100),
        "training epochs",
    ),
    p(
        "lr",
        ParamType::Float {
            min: 0.0,
            max: 10.0,
            min_exclusive: true,
        },
        DefaultValue::Float(1e-5),
        "AdamW learning rate (the peak, with the cosine schedule)",
    ),
    p(
        "schedule",
        ParamType::Choice(&["constant", "warmup-cosine"]),
        DefaultValue::Str("constant"),
        "constant lr (the paper's FT), or linear warm-up then half-cycle cosine to `min_lr` (CLR)",
    ),
    p(
        "warmup_epochs",
        ParamType::Float {
            min: 0.0,
            max: 100_000.0,
            min_exclusive: false,
        },
        DefaultValue::Float(10.0),
        "warm-up length of the cosine schedule",
    ),
    p(
        "min_lr",
        ParamType::Float {
            min: 0.0,
            max: 10.0,
            min_exclusive: false,
        },
        DefaultValue::Float(1e-5),
        "final lr of the cosine schedule",
    ),
    p(
        "weight_decay",
        ParamType::Float {
            min: 0.0,
            max: 10.0,
            min_exclusive: false,
        },
        DefaultValue::Float(1e-4),
        "AdamW weight decay",
    ),
    p(
        "batch_size",
        ParamType::Int {
            min: 1,
            max: 1 << 16,
        },
        DefaultValue::Int(64),
        "training batch size (incomplete batches are dropped)",
    ),
    p(
        "train_size",
        ParamType::Int {
            min: 1,
            max: 100_000_000,
        },
        DefaultValue::Int(1000),
        "training images drawn by `seed` (all of them when the split is smaller)",
    ),
    p(
        "eval_every",
        ParamType::Int {
            min: 1,
            max: 100_000,
        },
        DefaultValue::Int(1),
        "epochs between evaluations (the last epoch is always evaluated)",
    ),
    p(
        "seed",
        ParamType::Int {
            min: 0,
            max: i64::MAX,
        },
        DefaultValue::Int(0),
        "seed of the image draw, the batch order and the adapters' initialisation",
    ),
    p(
        "convpass_scale",
        ParamType::Float {
            min: 0.0,
            max: 1e6,
            min_exclusive: true,
        },
        DefaultValue::Derived,
        "Convpass output scale s; default: the VTAB-1k value of a built-in dataset",
    ),
    p(
        "convpass_xavier",
        ParamType::Bool,
        DefaultValue::Derived,
        "Xavier-initialised Convpass conv (else identity at the centre tap); default: the VTAB-1k value",
    ),
];

/// Parameters of the intrinsic-dimension stage (`[stages.intrinsic_dimension]`).
pub const INTRINSIC_DIMENSION_PARAMS: &[ParamSpec] = &[
    p(
        "n",
        ParamType::Int {
            min: 3,
            max: 1_000_000,
        },
        DefaultValue::Int(2000),
        "training images whose representations are measured (all of them when the split is smaller); text: distinct prompts",
    ),
    p(
        "towers",
        ParamType::Choice(&["both", "vision", "text"]),
        DefaultValue::Str("vision"),
        "towers measured",
    ),
    p(
        "representation",
        ParamType::Choice(&["token", "mean", "sequence"]),
        DefaultValue::Str("token"),
        "per sample: the CLS (vision) / EOS (text) token, the token mean, or the whole sequence flattened",
    ),
    p(
        "estimator",
        ParamType::Choice(&["reference", "idvl"]),
        DefaultValue::Str("reference"),
        "TwoNN variant",
    ),
    p(
        "fraction",
        ParamType::Float {
            min: 0.0,
            max: 1.0,
            min_exclusive: true,
        },
        DefaultValue::Float(0.9),
        "fraction of points kept by the fit (reference estimator)",
    ),
    p(
        "seed",
        ParamType::Int {
            min: 0,
            max: i64::MAX,
        },
        DefaultValue::Int(0),
        "seed of the sample draw (and of the IDVL block permutations)",
    ),
];

/// Parameters of the fine-tuning stage (`[stages.finetune]`).
pub const FINETUNE_PARAMS: &[ParamSpec] = &[
    p(
        "steps",
        ParamType::Int {
            min: 1,
            max: 10_000_000,
        },
        DefaultValue::Int(4000),
        "optimizer steps",
    ),
    p(
        "batch_size",
        ParamType::Int {
            min: 1,
            max: 1 << 16,
        },
        DefaultValue::Int(128),
        "training batch size",
    ),
    p(
        "lr",
        ParamType::Float {
            min: 0.0,
            max: 10.0,
            min_exclusive: true,
        },
        DefaultValue::Float(1e-5),
        "AdamW peak learning rate",
    ),
    p(
        "weight_decay",
        ParamType::Float {
            min: 0.0,
            max: 10.0,
            min_exclusive: false,
        },
        DefaultValue::Float(0.1),
        "AdamW weight decay",
    ),
    p(
        "warmup_steps",
        ParamType::Int {
            min: 0,
            max: 10_000_000,
        },
        DefaultValue::Int(500),
        "linear warm-up steps before the cosine decay",
    ),
    p(
        "seed",
        ParamType::Int {
            min: 0,
            max: i64::MAX,
        },
        DefaultValue::Int(0),
        "seed of the sample order",
    ),
];

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
        ParamType::IndexList,
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
