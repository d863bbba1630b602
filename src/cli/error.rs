//! Typed errors of the commands and the documented exit statuses they map to.

use crate::exec::backend::slurm::SlurmError;
use crate::manifest::ManifestError;
use crate::plan::build::PlanError;
use crate::stages::StageError;

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
    #[error("{0}")]
    Cache(#[from] crate::cache::CacheError),
    #[error("{0}")]
    Slurm(#[from] crate::exec::backend::slurm::SlurmError),
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
            CliError::Cache(crate::cache::CacheError::Link { .. }) => exit::BAD_INPUT,
            CliError::Cache(_) => exit::INTERNAL,
            CliError::Slurm(SlurmError::Refused { .. }) => exit::BAD_INPUT,
            CliError::Slurm(_) => exit::INTERNAL,
        }
    }

    pub fn hint(&self) -> Option<&'static str> {
        match self {
            CliError::Plan(_) => {
                Some("check that the file is readable, or fix the manifest's path")
            }
            CliError::Io { .. } | CliError::Cache(crate::cache::CacheError::Io { .. }) => {
                Some("check that the results directory is writable (--results DIR)")
            }
            CliError::Cache(crate::cache::CacheError::Link { .. }) => {
                Some("replace the link with a directory, or point --results at the real one")
            }
            CliError::Slurm(SlurmError::Unreachable(_)) => Some(
                "run orchestrate where `sinfo` works (a login node), or set [resources] backend = \"local\"",
            ),
            CliError::Slurm(SlurmError::Refused { .. }) => Some(
                "check partition, account and gres in [resources.slurm] against `sinfo` and `sacctmgr show associations`",
            ),
            _ => None,
        }
    }
}

pub fn io_context(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> CliError {
    let context = context.into();
    move |source| CliError::Io { context, source }
}
