//! Tables: one row per grid point (plus one dense baseline row per model × dataset), built from
//! cache records only, as a polars DataFrame written atomically to CSV and Parquet; and the
//! paper layout (rows method × sparsity, columns dataset, plus a mean) as Markdown or LaTeX.
//! With intrinsic-dimension measurements, a long table `<experiment>_id` holds one row per
//! point × tower × layer.
//!
//! Invariant: every grid point appears, with a status; failed or missing points have null
//! metrics, never a dropped row.

pub mod collect;
pub mod pivot;
pub mod write;

pub use collect::{IdRow, Row, RowStatus, collect, collect_id};
pub use write::{id_dataframe, to_dataframe, write_tables};
