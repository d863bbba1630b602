//! Runs a parsed command; the manifest → plan → cache loading every command shares.

use super::args::{Cli, Command};
use super::error::CliError;
use super::{export, gc, init_model, plan, run, stage, status, table};
use crate::cache::{Cache, State};
use crate::manifest::{self, Experiment};
use crate::plan::Plan;
use crate::plan::fingerprint::FingerprintCache;
use std::path::Path;

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
        Command::Table {
            manifest,
            pivot,
            metric,
        } => {
            let metric = crate::tables::pivot::Metric::named(&metric).expect("clap checked it");
            table::run(&results, &manifest, pivot, metric)
        }
        Command::Report { manifest } => table::report(&results, &manifest),
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
            physical,
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
            physical,
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

/// Loads and validates the manifest, then plans it (fingerprinting inputs through the cache;
/// with `verify`, every input is hashed again).
pub fn load(results: &Path, manifest: &Path, verify: bool) -> Result<Loaded, CliError> {
    let exp = manifest::load(manifest, crate::stages::methods::specs())?;
    let cache = Cache::new(results);
    let mut fingerprints = FingerprintCache::open(&cache.fingerprints_path()).rehashing(verify);
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
