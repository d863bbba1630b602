//! Command line: the only place that wires manifest, planner, cache, executor, reporters and
//! stages together. One file per subcommand.

mod export;
mod gc;
mod init_model;
mod plan;
mod run;
mod stage;
mod status;
mod table;

use crate::cache::{Cache, State};
use crate::manifest::{self, Experiment, ManifestError};
use crate::plan::fingerprint::FingerprintCache;
use crate::plan::{Plan, build::PlanError};
use crate::stages::StageError;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};

/// Exit statuses (documented in the README).
pub mod exit {
    pub const OK: i32 = 0;
    /// One or more stages failed (everything else ran; see the summary and logs).
    pub const STAGE_FAILED: i32 = 1;
    /// Bad input: manifest, model or dataset files, command-line arguments.
    pub const BAD_INPUT: i32 = 2;
    /// Internal or I/O error (results directory not writable, ...).
    pub const INTERNAL: i32 = 3;
    /// Interrupted by Ctrl-C; re-run the same command to resume.
    pub const INTERRUPTED: i32 = 130;
}

#[derive(Debug, Parser)]
#[command(
    name = "orchestrate",
    version,
    about = "Run CLIP-pruning experiment sweeps from one TOML manifest: planned, cached, resumable."
)]
pub struct Cli {
    /// Results directory (cache, run logs, tables).
    #[arg(
        long,
        global = true,
        env = "ORCHESTRATE_RESULTS",
        default_value = "results"
    )]
    pub results: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show what will run, what is cached, and why.
    Plan {
        manifest: PathBuf,
        /// List every node with the reason it must run.
        #[arg(long)]
        explain: bool,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Check artifact checksums, not only sizes.
        #[arg(long)]
        verify: bool,
    },
    /// Run the sweep (re-running the same command resumes it).
    Run {
        manifest: PathBuf,
        /// Extra attempts for a failed stage.
        #[arg(long, default_value_t = 0)]
        retries: u32,
        /// Check artifact checksums of cached entries before trusting them.
        #[arg(long)]
        verify: bool,
    },
    /// Per stage: done, failed (with log path), running or pending.
    Status {
        manifest: PathBuf,
        /// List every stage, not only those that are not done.
        #[arg(long)]
        all: bool,
    },
    /// Write results/<experiment>/<experiment>.csv and .parquet from the cache.
    Table {
        manifest: PathBuf,
        /// Also render the paper layout (rows method × sparsity, columns dataset).
        #[arg(long, value_enum)]
        pivot: Option<Pivot>,
    },
    /// Delete cache entries that none of the given manifests reaches.
    Gc {
        #[arg(required = true)]
        manifests: Vec<PathBuf>,
        /// Only report what would be freed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Write a new randomly initialised CLIP model (HF layout, with a tokenizer built for the
    /// project's prompts): the demo's tiny model, or an OpenAI architecture for benchmarks.
    InitModel {
        /// Directory to create.
        dir: PathBuf,
        #[arg(long, default_value = "tiny", value_parser = clap::builder::PossibleValuesParser::new(crate::model::create::PRESETS))]
        preset: String,
        #[arg(long, default_value_t = 0)]
        seed: i64,
        /// Replace an existing model in DIR.
        #[arg(long)]
        force: bool,
    },
    /// Write one computed grid point's model as a complete Hugging Face CLIP directory.
    Export {
        manifest: PathBuf,
        #[arg(long)]
        model: String,
        #[arg(long)]
        dataset: String,
        #[arg(long)]
        method: String,
        /// As in the manifest: a fraction (`0.8`) or `n:m`.
        #[arg(long)]
        sparsity: String,
        #[arg(long)]
        calibration_size: Option<u32>,
        #[arg(long)]
        seed: Option<u64>,
        /// Directory to write.
        #[arg(long)]
        out: PathBuf,
        /// Write into a non-empty --out.
        #[arg(long)]
        force: bool,
    },
    /// Compute one stage from a job spec (what `run` starts per stage; cluster backends call it too).
    Stage { job: PathBuf },
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Pivot {
    Md,
    Tex,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Manifest(#[from] ManifestError),
    #[error("{0}")]
    Plan(#[from] PlanError),
    #[error("{0}")]
    Stage(#[from] StageError),
    #[error("{0}")]
    Model(#[from] crate::model::ModelError),
    /// A command-line request that cannot be served (e.g. no such grid point).
    #[error("{0}")]
    Usage(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Manifest(_) | CliError::Plan(_) | CliError::Model(_) | CliError::Usage(_) => {
                exit::BAD_INPUT
            }
            CliError::Stage(StageError::BadJob { .. }) => exit::BAD_INPUT,
            CliError::Stage(_) => exit::STAGE_FAILED,
            CliError::Io { .. } => exit::INTERNAL,
        }
    }

    pub fn hint(&self) -> Option<&'static str> {
        match self {
            CliError::Plan(_) => {
                Some("check that the file is readable, or fix the manifest's path")
            }
            CliError::Io { .. } => {
                Some("check that the results directory is writable (--results DIR)")
            }
            _ => None,
        }
    }
}

pub fn io_context(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> CliError {
    let context = context.into();
    move |source| CliError::Io { context, source }
}

/// Runs the parsed command; returns the exit status.
pub fn main(cli: Cli) -> Result<i32, CliError> {
    let results = cli.results;
    match cli.command {
        Command::Plan {
            manifest,
            explain,
            format,
            verify,
        } => plan::run(&results, &manifest, explain, format, verify),
        Command::Run {
            manifest,
            retries,
            verify,
        } => run::run(&results, &manifest, retries, verify),
        Command::Status { manifest, all } => status::run(&results, &manifest, all),
        Command::Table { manifest, pivot } => table::run(&results, &manifest, pivot),
        Command::Gc { manifests, dry_run } => gc::run(&results, &manifests, dry_run),
        Command::InitModel {
            dir,
            preset,
            seed,
            force,
        } => init_model::run(&dir, &preset, seed, force),
        Command::Export {
            manifest,
            model,
            dataset,
            method,
            sparsity,
            calibration_size,
            seed,
            out,
            force,
        } => export::run(
            &results,
            &manifest,
            &export::Selector {
                model,
                dataset,
                method,
                sparsity,
                calibration_size,
                seed,
            },
            &out,
            force,
        ),
        Command::Stage { job } => stage::run(&job),
    }
}

/// A loaded manifest with its plan and the cache it lives in.
pub struct Loaded {
    pub exp: Experiment,
    pub plan: Plan,
    pub cache: Cache,
}

/// Loads and validates the manifest, then plans it (fingerprinting inputs through the cache).
pub fn load(results: &Path, manifest: &Path) -> Result<Loaded, CliError> {
    let exp = manifest::load(manifest)?;
    let cache = Cache::new(results);
    let mut fingerprints = FingerprintCache::open(&cache.fingerprints_path());
    let plan = crate::plan::build(&exp, &mut fingerprints)?;
    // A fingerprint cache that cannot be saved only costs re-hashing next time.
    let _ = fingerprints.save();
    Ok(Loaded { exp, plan, cache })
}

/// Counts of cached and to-run nodes per stage kind, in pipeline order.
pub fn counts_by_kind(
    plan: &Plan,
    states: &[State],
) -> Vec<(crate::plan::StageKind, usize, usize)> {
    crate::plan::StageKind::ALL
        .into_iter()
        .map(|k| {
            let ids = plan.nodes.iter().enumerate().filter(|(_, n)| n.kind == k);
            let (mut cached, mut run) = (0, 0);
            for (id, _) in ids {
                if states[id] == State::Cached {
                    cached += 1
                } else {
                    run += 1
                }
            }
            (k, cached, run)
        })
        .filter(|(_, c, r)| c + r > 0)
        .collect()
}
