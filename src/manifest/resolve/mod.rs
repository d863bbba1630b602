//! Pass 2: walk the spanned tree against the schema, collecting every problem, and build the
//! resolved [`Experiment`](super::Experiment) (grid expanded, defaults filled in, input paths
//! resolved). One file per job: the entry point, typed getters, one file per section, grid
//! expansion, the file-system and Hugging Face cache lookups, and the cross-section checks.

mod checks;
mod datasets;
mod experiment;
mod getters;
mod grid;
mod inputs;
mod load;
mod methods;
mod models;
mod references;
mod stages;

pub use load::load;

use super::diag::Diags;
use super::schema::Methods;
use std::path::PathBuf;

/// The internal method name of a dense-only grid's points (reserved: no user method has it).
const DENSE: &str = "dense";

/// The grid axes, in expansion (nesting) order.
pub const AXES: &[&str] = &[
    "model",
    "dataset",
    "method",
    "sparsity",
    "calibration_size",
    "seed",
];

/// The resolver: the diagnostics collected so far, where relative paths start, and the
/// registered pruning methods.
struct Cx<'s> {
    d: Diags<'s>,
    base_dir: PathBuf,
    registry: Methods,
    /// The most grid points a manifest may expand to (`[experiment] max_points`).
    max_points: u64,
}

/// The default of `[experiment] max_points`: far above any paper's sweep, far below what
/// exhausts memory.
const MAX_POINTS: u64 = 100_000;
