//! Garbage collection: drop every cache entry that no given manifest reaches, plus leftovers of
//! interrupted runs (temporary entries, stale failure notes). Never touches an entry whose lock
//! is held by a running stage.

use super::store::Cache;
use crate::util::fsx;
use std::collections::HashSet;
use std::fs;

#[derive(Debug, Default, Clone, PartialEq)]
pub struct GcReport {
    pub entries_removed: usize,
    pub entries_kept: usize,
    pub bytes_freed: u64,
}

/// Removes entries whose key is not in `reachable`. With `dry_run`, only measures.
pub fn collect(
    cache: &Cache,
    reachable: &HashSet<String>,
    dry_run: bool,
) -> std::io::Result<GcReport> {
    let mut report = GcReport::default();
    let entries = cache.root().join("entries");
    if let Ok(dir) = fs::read_dir(&entries) {
        for entry in dir.filter_map(Result::ok) {
            let key = entry.file_name().to_string_lossy().into_owned();
            if reachable.contains(&key) {
                report.entries_kept += 1;
                continue;
            }
            // A held lock means a stage is writing this key right now.
            let Some(_lock) = cache.try_lock(&key).ok().flatten() else {
                report.entries_kept += 1;
                continue;
            };
            report.bytes_freed += fsx::tree_size(&entry.path());
            report.entries_removed += 1;
            if !dry_run {
                fs::remove_dir_all(entry.path())?;
                let _ = fs::remove_file(cache.root().join("locks").join(format!("{key}.lock")));
            }
        }
    }
    // Temporary directories of entries being built: only those whose key is not locked.
    if let Ok(dir) = fs::read_dir(cache.root().join("tmp")) {
        for entry in dir.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let key = name.split('.').next().unwrap_or_default().to_string();
            let held = key.len() == 64 && cache.try_lock(&key).ok().flatten().is_none();
            if !held {
                report.bytes_freed += fsx::tree_size(&entry.path());
                if !dry_run {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
    }
    if !dry_run && let Ok(dir) = fs::read_dir(cache.root().join("failures")) {
        for entry in dir.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !reachable.contains(name.trim_end_matches(".json")) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
    Ok(report)
}
