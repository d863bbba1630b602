//! `orchestrate gc`: drop cache entries that none of the given manifests reaches.

use super::{CliError, exit, io_context, load};
use crate::cache::gc;
use crate::util::fsx::human_bytes;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

pub fn run(results: &Path, manifests: &[PathBuf], dry_run: bool) -> Result<i32, CliError> {
    // Every manifest must load: a typo must never make gc delete a sweep's results.
    let mut reachable = HashSet::new();
    let mut cache = None;
    for m in manifests {
        let l = load(results, m, false)?;
        reachable.extend(l.plan.nodes.iter().map(|n| n.key.clone()));
        cache = Some(l.cache);
    }
    let cache = cache.expect("clap requires at least one manifest");
    cache.check_layout()?;
    // A run reads entries it did not compute (its upstream): wait for every run to end.
    let _held = match cache.try_lock_for_gc() {
        Ok(Some(lock)) => lock,
        Ok(None) => {
            eprintln!(
                "waiting for the runs using {} to finish…",
                results.display()
            );
            cache.lock_for_gc()?
        }
        Err(e) => return Err(e.into()),
    };
    let report = gc::collect(&cache, &reachable, dry_run).map_err(io_context(format!(
        "cannot clean {}",
        cache.root().display()
    )))?;
    println!(
        "{} {} entries ({}), kept {}",
        if dry_run { "would remove" } else { "removed" },
        report.entries_removed,
        human_bytes(report.bytes_freed),
        report.entries_kept
    );
    println!(
        "{} bytes freed",
        if dry_run { 0 } else { report.bytes_freed }
    );
    Ok(exit::OK)
}
