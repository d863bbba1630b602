//! Datasets, prompts and image preprocessing: everything between files on disk and the
//! `[B, 3, S, S]` pixel tensors and prompt lists the model consumes.
//!
//! Invariants: a split is an ordered list of (image, label) items addressed by index, so a seed
//! and an index list reproduce any sample; every error names the file and the row.

pub mod loader;
pub mod preprocess;
pub mod prompts;
pub mod retrieval;
pub mod source;
pub mod synthetic;

pub use preprocess::Preprocessor;
pub use prompts::Prompts;
pub use source::{ImageSet, SourceSpec};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("{path}, row {row}: {reason}")]
    Row {
        path: PathBuf,
        row: usize,
        reason: String,
    },
}
