//! Tables: one row per grid point (plus one dense baseline row per model × dataset), built from
//! cache records only, as a polars DataFrame written atomically to CSV and Parquet; and the
//! paper layout (rows method × sparsity, columns dataset, plus a mean) as Markdown or LaTeX.
//!
//! Invariant: every grid point appears, with a status; failed or missing points have null
//! metrics, never a dropped row.

pub mod collect;
pub mod pivot;
pub mod write;

pub use collect::{Row, RowStatus, collect};
pub use write::{to_dataframe, write_tables};
