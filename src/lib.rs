//! orchestrate: a TOML manifest (models × datasets × methods × sparsities × calibration sizes ×
//! seeds) becomes a DAG of content-hashed, cached stages, run resumably over the machine's
//! devices and collected into polars tables.
//!
//! | layer | modules | may import |
//! |---|---|---|
//! | leaf | [`util`] | std and small crates |
//! | orchestration | [`manifest`] → [`plan`] → [`cache`]; [`exec`]; [`progress`] (run events → console, event log); [`tables`] → [`report`] (figures) | each other in that order; never `tch` or the ML core |
//! | ML core | [`model`], [`data`], [`prune`], [`analysis`], [`train`] | `tch` and each other; never the orchestration half |
//! | bridge | [`stages`] | both halves |
//! | root | [`cli`] | everything |
//!
//! Data flows one way: manifest → plan (keys) → freshness → executor (child process per stage)
//! → cache entries → tables → figures.

pub mod analysis;
pub mod cache;
pub mod cli;
pub mod data;
pub mod exec;
pub mod manifest;
pub mod model;
pub mod plan;
pub mod progress;
pub mod prune;
pub mod report;
pub mod stages;
pub mod tables;
pub mod train;
pub mod util;
