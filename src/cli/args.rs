//! The command line as clap parses it.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

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
        /// What the pivot's cells show.
        #[arg(long, default_value = "top1", value_parser = clap::builder::PossibleValuesParser::new(crate::tables::pivot::METRICS.iter().map(|m| m.name)))]
        metric: String,
    },
    /// Write the tables, the figures (results/<experiment>/figures/) and the self-contained
    /// results/<experiment>/report.html from the cache (every run writes them too).
    Report { manifest: PathBuf },
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
        /// For a structured prune: the physically smaller model (per-layer shapes in
        /// `config.json`, which `path = …` in a manifest loads) instead of a full-size
        /// transformers checkpoint with the pruned units zeroed.
        #[arg(long)]
        physical: bool,
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
