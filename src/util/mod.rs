//! Leaf helpers shared by every layer: content hashing, atomic filesystem writes, small formatting.
//!
//! Invariant: nothing here imports another module of the crate.

pub mod clip_config;
pub mod columns;
pub mod fsx;
pub mod hash;
pub mod hf;
pub mod macs;
pub mod parquet_split;
pub mod runtime;
pub mod safetensors_header;
