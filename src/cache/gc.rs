//! Garbage collection: drop every cache entry that no given manifest reaches, plus leftovers of
//! interrupted runs (temporary entries, stale failure notes). Never touches an entry whose lock
//! is held by a running stage; removes an entry by moving it aside first; never unlinks a lock
//! file (they are empty, and unlinking one can hand the same key to two processes).

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

/// Removes entries whose key is not in `reachable`. With `dry_run`, only measures. The caller
/// holds the results directory ([`Cache::lock_for_gc`]) and has checked its layout.
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
                // Moved aside in one rename, so a concurrent run sees the whole entry or none.
                // The lock file stays: unlinking it while held would let a process already
                // waiting on it and one opening a fresh file both take "the" lock.
                cache.discard(&key).map_err(std::io::Error::other)?;
            }
        }
    }
    report.bytes_freed += clean_tmp(cache, dry_run);
    report.bytes_freed += clean_scratch(cache, reachable, dry_run);
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

/// The key of a name the cache gives its temporary directories: `<key>.<suffix>` (an entry
/// being built) or `trash.<key>.<suffix>` (an entry being removed).
fn tmp_key(name: &str) -> Option<&str> {
    let rest = name.strip_prefix("trash.").unwrap_or(name);
    let (key, suffix) = rest.split_once('.')?;
    let hex = key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit());
    (hex && !suffix.is_empty()).then_some(key)
}

/// Removes what interrupted stages left in `tmp/`: directories the cache named itself whose key
/// no live process holds (a builder holds its key's lock until it publishes or drops the
/// directory). Anything else there, and links, are left alone. Returns the bytes freed.
pub fn clean_tmp(cache: &Cache, dry_run: bool) -> u64 {
    let mut freed = 0;
    let Ok(dir) = fs::read_dir(cache.root().join("tmp")) else {
        return 0;
    };
    for entry in dir.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(key) = tmp_key(&name) else { continue };
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let Some(_lock) = cache.try_lock(key).ok().flatten() else {
            continue;
        };
        freed += fsx::tree_size(&entry.path());
        if !dry_run {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
    freed
}

/// Removes the checkpoints of keys no manifest reaches or that are published (a stage killed
/// between publishing and removing its scratch leaves one). Keys a stage holds are left alone.
fn clean_scratch(cache: &Cache, reachable: &HashSet<String>, dry_run: bool) -> u64 {
    let mut freed = 0;
    let Ok(dir) = fs::read_dir(cache.root().join("scratch")) else {
        return 0;
    };
    for entry in dir.filter_map(Result::ok) {
        let key = entry.file_name().to_string_lossy().into_owned();
        if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        let published = cache.entry_dir(&key).join("record.json").exists();
        if reachable.contains(&key) && !published {
            continue;
        }
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let Some(_lock) = cache.try_lock(&key).ok().flatten() else {
            continue;
        };
        freed += fsx::tree_size(&entry.path());
        if !dry_run {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
    freed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::record::{RECORD_FORMAT, Record};

    fn publish(cache: &Cache, key: &str) {
        let b = cache.begin(key).unwrap();
        fs::write(b.artifacts_dir().join("x.bin"), b"0123456789").unwrap();
        let record = Record {
            format: RECORD_FORMAT,
            key: key.into(),
            kind: "evaluate".into(),
            version: 1,
            label: key.into(),
            params: serde_json::json!({}),
            upstream: vec![],
            inputs: vec![],
            artifacts: vec![],
            metrics: serde_json::json!({}),
            timing: Default::default(),
            provenance: Default::default(),
            evicted: false,
            checksum: None,
        };
        b.commit(record, &[]).unwrap();
    }

    #[test]
    fn gc_moves_entries_aside_and_keeps_their_lock_files() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let (keep, drop) = ("a".repeat(64), "b".repeat(64));
        publish(&cache, &keep);
        publish(&cache, &drop);
        drop_lock(&cache, &drop);
        let report = collect(&cache, &HashSet::from([keep.clone()]), false).unwrap();
        assert_eq!((report.entries_removed, report.entries_kept), (1, 1));
        assert!(!cache.entry_dir(&drop).exists());
        assert!(matches!(
            cache.lookup(&keep, true),
            crate::cache::Lookup::Done(_)
        ));
        let lock = cache.root().join("locks").join(format!("{drop}.lock"));
        assert!(lock.is_file(), "the lock file of a removed entry stays");
        let leftovers: Vec<_> = fs::read_dir(cache.root().join("tmp"))
            .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    /// Takes and releases the key's lock, so its lock file exists as after a real run.
    fn drop_lock(cache: &Cache, key: &str) {
        drop(cache.lock(key).unwrap());
    }
}
