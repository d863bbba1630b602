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

mod args;
mod dispatch;
mod error;

pub use args::{Cli, Command, Format, Pivot};
pub use dispatch::{Loaded, counts_by_kind, load, main};
pub use error::{CliError, exit, io_context};
