//! Entry point: parse arguments, run, map typed errors to documented exit codes.

use clap::Parser;
use orchestrate::cli::{self, Cli, Command, exit};

fn main() {
    let cli = Cli::parse();
    let is_stage = matches!(cli.command, Command::Stage { .. });
    if !matches!(cli.command, Command::Stage { .. } | Command::Run { .. }) {
        // Reporting commands piped into `head` end quietly instead of panicking on a closed
        // stdout. (`run` keeps ignoring SIGPIPE: it must outlive its terminal to reap stages.)
        // SAFETY: restoring a default signal disposition before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    if !is_stage {
        // User-facing commands never show a backtrace; stage processes keep the default hook so
        // their logs carry the full story.
        std::panic::set_hook(Box::new(|info| {
            eprintln!("internal error (a bug in orchestrate, please report it): {info}");
        }));
    }
    let code = match cli::main(cli) {
        Ok(code) => code,
        Err(cli::CliError::Manifest(e)) => {
            // Already one `error:` line per problem.
            eprintln!("{e}");
            exit::BAD_INPUT
        }
        Err(e) => {
            eprintln!("error: {e}");
            if let Some(hint) = e.hint() {
                eprintln!("  hint: {hint}");
            }
            e.exit_code()
        }
    };
    std::process::exit(if code == 0 { exit::OK } else { code });
}
