//! Manifest: TOML text → validated [`Experiment`].
//!
//! Parsing happens in passes, like cargo's config: the TOML is read into a spanned tree
//! ([`tree`]), then [`resolve`] walks it against the schema ([`schema`]) collecting *every*
//! problem (unknown keys with did-you-mean, wrong types, out-of-range values, undefined names,
//! missing files) as [`Diagnostic`]s with file:line:column and key path. Nothing runs unless the
//! whole manifest is valid. No manifest field can run a command.

pub mod diag;
pub mod params;
pub mod resolve;
pub mod schema;
pub mod tree;
pub mod types;

pub use diag::{Diagnostic, ManifestError};
pub use resolve::load;
pub use types::*;
