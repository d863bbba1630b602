//! Cache storage: lookup, the commit protocol (tmp dir → record last → atomic rename), locks,
//! failure notes and slot pointers.

use super::record::{Artifact, Record};
use crate::util::{fsx, hash};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path} is a symbolic link; the cache's folders must be real directories (cleanup never follows a link out of the cache)"
    )]
    Link { path: PathBuf },
}

/// The folders the cache creates and cleans.
const FOLDERS: [&str; 6] = ["entries", "tmp", "locks", "failures", "slots", "scratch"];

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What the cache holds for a key.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// Complete: every artifact present with its recorded size (and checksum, if verified).
    Done(Box<Record>),
    /// Complete, but its transient artifacts were dropped by the retention policy.
    Evicted(Box<Record>),
    Missing,
    /// Present but not trustworthy; the reason says what is wrong.
    Corrupt(String),
}

impl Lookup {
    /// A short phrase for messages.
    pub fn describe(&self) -> String {
        match self {
            Lookup::Done(_) => "complete".into(),
            Lookup::Evicted(_) => "its transient artifacts were dropped".into(),
            Lookup::Missing => "missing".into(),
            Lookup::Corrupt(why) => format!("corrupt: {why}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    /// The cache under `results_dir/cache` (created on first write).
    pub fn new(results_dir: &Path) -> Self {
        Self {
            root: results_dir.join("cache"),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn entry_dir(&self, key: &str) -> PathBuf {
        self.root.join("entries").join(key)
    }

    pub fn artifacts_dir(&self, key: &str) -> PathBuf {
        self.entry_dir(key).join("artifacts")
    }

    /// The key's scratch folder: a training stage's checkpoints, which survive a kill, a crash
    /// or a cluster requeue (unlike `tmp/`, which the next run clears) and go when the entry is
    /// published. Only the holder of the key's lock touches it.
    pub fn scratch_dir(&self, key: &str) -> PathBuf {
        self.root.join("scratch").join(key)
    }

    pub fn fingerprints_path(&self) -> PathBuf {
        self.root.join("fingerprints.json")
    }

    /// Refuses a cache whose own folders (or itself) are symbolic links: removing through one
    /// would delete whatever it points at.
    pub fn check_layout(&self) -> Result<(), CacheError> {
        let folders =
            std::iter::once(self.root.clone()).chain(FOLDERS.iter().map(|f| self.root.join(f)));
        for path in folders {
            if fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(CacheError::Link { path });
            }
        }
        Ok(())
    }

    fn results_lock_file(&self) -> Result<File, CacheError> {
        open_lock(&self.root.join("results.lock"))
    }

    /// Held (shared) by every run for its whole duration, so `gc` never removes an entry a run
    /// may still read. Released on drop, and by the OS if the process dies.
    pub fn lock_for_run(&self) -> Result<File, CacheError> {
        let file = self.results_lock_file()?;
        file.lock_shared()
            .map_err(io_err(&self.root.join("results.lock")))?;
        Ok(file)
    }

    /// Held (exclusively) by `gc`: `None` while a run holds the directory.
    pub fn try_lock_for_gc(&self) -> Result<Option<File>, CacheError> {
        let file = self.results_lock_file()?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(CacheError::Io {
                path: self.root.join("results.lock"),
                source: e,
            }),
        }
    }

    /// Blocks until no run holds the directory, then holds it exclusively.
    pub fn lock_for_gc(&self) -> Result<File, CacheError> {
        let file = self.results_lock_file()?;
        file.lock()
            .map_err(io_err(&self.root.join("results.lock")))?;
        Ok(file)
    }

    /// The keys that have an entry directory (complete or not).
    pub fn entry_keys(&self) -> std::collections::HashSet<String> {
        fs::read_dir(self.root.join("entries"))
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// Reads and checks the entry of `key`. `verify` also compares artifact checksums.
    pub fn lookup(&self, key: &str, verify: bool) -> Lookup {
        let dir = self.entry_dir(key);
        let bytes = match fs::read(dir.join("record.json")) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return if dir.exists() {
                    Lookup::Corrupt("entry has no record".into())
                } else {
                    Lookup::Missing
                };
            }
            Err(e) => return Lookup::Corrupt(format!("record unreadable: {e}")),
        };
        let record: Record = match serde_json::from_slice(&bytes) {
            Ok(r) => r,
            Err(e) => return Lookup::Corrupt(format!("record is not valid: {e}")),
        };
        if !record.intact() {
            return Lookup::Corrupt("record fails its checksum".into());
        }
        if record.key != key {
            return Lookup::Corrupt(format!("record names key {} instead", record.key));
        }
        let artifacts = dir.join("artifacts");
        for a in &record.artifacts {
            if record.evicted && a.transient {
                continue;
            }
            let path = artifacts.join(&a.name);
            match fs::metadata(&path) {
                Ok(m) if m.len() == a.size => {}
                Ok(m) => {
                    return Lookup::Corrupt(format!(
                        "artifact {} has {} bytes, the record says {}",
                        a.name,
                        m.len(),
                        a.size
                    ));
                }
                Err(_) => return Lookup::Corrupt(format!("artifact {} is missing", a.name)),
            }
            if verify {
                match hash::sha256_file(&path) {
                    Ok(sum) if sum == a.sha256 => {}
                    Ok(_) => {
                        return Lookup::Corrupt(format!("artifact {} fails its checksum", a.name));
                    }
                    Err(e) => {
                        return Lookup::Corrupt(format!("artifact {} unreadable: {e}", a.name));
                    }
                }
            }
        }
        if record.evicted {
            Lookup::Evicted(Box::new(record))
        } else {
            Lookup::Done(Box::new(record))
        }
    }

    /// Removes the entry of `key` (moved aside first, so readers never see half of it). Only
    /// while holding the key's lock.
    pub fn discard(&self, key: &str) -> Result<(), CacheError> {
        let target = self.entry_dir(key);
        if !target.exists() {
            return Ok(());
        }
        let trash = self
            .root
            .join("tmp")
            .join(format!("trash.{key}.{}", fsx::unique_suffix()));
        fs::create_dir_all(self.root.join("tmp")).map_err(io_err(&trash))?;
        fs::rename(&target, &trash).map_err(io_err(&target))?;
        let _ = fs::remove_dir_all(&trash);
        Ok(())
    }

    /// Starts building the entry of `key` in a fresh temporary directory.
    pub fn begin(&self, key: &str) -> Result<EntryBuilder, CacheError> {
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{key}.{}", fsx::unique_suffix()));
        let artifacts = tmp.join("artifacts");
        fs::create_dir_all(&artifacts).map_err(io_err(&artifacts))?;
        Ok(EntryBuilder {
            cache: self.clone(),
            key: key.to_string(),
            tmp,
        })
    }

    /// Takes the per-key advisory lock, blocking until it is free. Released on drop, and by the
    /// OS if the process dies.
    pub fn lock(&self, key: &str) -> Result<File, CacheError> {
        let file = self.lock_file(key)?;
        file.lock().map_err(io_err(&self.lock_path(key)))?;
        Ok(file)
    }

    /// Takes the lock if nobody holds it.
    pub fn try_lock(&self, key: &str) -> Result<Option<File>, CacheError> {
        let file = self.lock_file(key)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(CacheError::Io {
                path: self.lock_path(key),
                source: e,
            }),
        }
    }

    fn lock_path(&self, key: &str) -> PathBuf {
        self.root.join("locks").join(format!("{key}.lock"))
    }

    fn lock_file(&self, key: &str) -> Result<File, CacheError> {
        open_lock(&self.lock_path(key))
    }

    /// Drops transient artifacts of a finished entry (record first, so a crash in between only
    /// leaves extra files).
    pub fn evict_transient(&self, record: &Record) -> Result<u64, CacheError> {
        if record.evicted || !record.artifacts.iter().any(|a| a.transient) {
            return Ok(0);
        }
        let dir = self.entry_dir(&record.key);
        let mut updated = record.clone();
        updated.evicted = true;
        updated.seal();
        let path = dir.join("record.json");
        fsx::write_atomic(
            &path,
            &serde_json::to_vec_pretty(&updated).expect("record serialises"),
        )
        .map_err(io_err(&path))?;
        let mut freed = 0;
        let artifacts = dir.join("artifacts");
        for a in record.artifacts.iter().filter(|a| a.transient) {
            // Only plain files inside the entry: never through a link out of the cache.
            let path = artifacts.join(&a.name);
            let inside = std::path::Path::new(&a.name)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
            let plain = fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_file())
                && fs::symlink_metadata(&artifacts).is_ok_and(|m| m.file_type().is_dir());
            if inside && plain && fs::remove_file(&path).is_ok() {
                freed += a.size;
            }
        }
        Ok(freed)
    }

    // ---- failures and slots ------------------------------------------------------------

    fn failure_path(&self, key: &str) -> PathBuf {
        self.root.join("failures").join(format!("{key}.json"))
    }

    pub fn note_failure(&self, key: &str, failure: &Failure) -> Result<(), CacheError> {
        let path = self.failure_path(key);
        fsx::write_atomic(
            &path,
            &serde_json::to_vec_pretty(failure).expect("failure serialises"),
        )
        .map_err(io_err(&path))
    }

    pub fn failure(&self, key: &str) -> Option<Failure> {
        fs::read(self.failure_path(key))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    }

    pub fn clear_failure(&self, key: &str) {
        let _ = fs::remove_file(self.failure_path(key));
    }

    fn slot_path(&self, slot: &str) -> PathBuf {
        self.root
            .join("slots")
            .join(&hash::sha256_hex(slot.as_bytes())[..32])
    }

    /// Remembers that `slot` was last computed as `key`.
    pub fn set_slot(&self, slot: &str, key: &str) -> Result<(), CacheError> {
        let path = self.slot_path(slot);
        fsx::write_atomic(&path, key.as_bytes()).map_err(io_err(&path))
    }

    pub fn slot(&self, slot: &str) -> Option<String> {
        fs::read_to_string(self.slot_path(slot))
            .ok()
            .map(|s| s.trim().to_string())
    }
}

/// Opens (creating it and its folder) a lock file; its content is never used.
fn open_lock(path: &Path) -> Result<File, CacheError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_err(path))
}

/// Why a key last failed.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Failure {
    pub label: String,
    pub error: String,
    pub log: PathBuf,
    pub attempts: u32,
}

/// An entry under construction. Dropping it without [`EntryBuilder::commit`] removes it.
#[derive(Debug)]
pub struct EntryBuilder {
    cache: Cache,
    key: String,
    tmp: PathBuf,
}

impl EntryBuilder {
    /// Where the stage writes its outputs.
    pub fn artifacts_dir(&self) -> PathBuf {
        self.tmp.join("artifacts")
    }

    /// Publishes the entry: checksums the artifacts, writes the record last, renames atomically.
    /// `transient` names the artifacts the retention policy may drop. Returns the record as
    /// published (or the one another process published first).
    pub fn commit(self, mut record: Record, transient: &[&str]) -> Result<Record, CacheError> {
        let artifacts_dir = self.artifacts_dir();
        let mut artifacts = Vec::new();
        for entry in walkdir::WalkDir::new(&artifacts_dir).sort_by_file_name() {
            let entry = entry.map_err(|e| CacheError::Io {
                path: artifacts_dir.clone(),
                source: e.into(),
            })?;
            if !entry.file_type().is_file() {
                continue;
            }
            let path = entry.path();
            let name = path
                .strip_prefix(&artifacts_dir)
                .unwrap_or(path)
                .to_string_lossy()
                .replace('\\', "/");
            File::open(path)
                .and_then(|f| f.sync_all())
                .map_err(io_err(path))?;
            let size = entry
                .metadata()
                .map_err(|e| CacheError::Io {
                    path: path.to_path_buf(),
                    source: e.into(),
                })?
                .len();
            let sha256 = hash::sha256_file(path).map_err(io_err(path))?;
            artifacts.push(Artifact {
                transient: transient.contains(&name.as_str()),
                name,
                size,
                sha256,
            });
        }
        record.artifacts = artifacts;
        record.key = self.key.clone();
        record.seal();
        let record_path = self.tmp.join("record.json");
        fsx::write_atomic(
            &record_path,
            &serde_json::to_vec_pretty(&record).expect("record serialises"),
        )
        .map_err(io_err(&record_path))?;
        let target = self.cache.entry_dir(&self.key);
        let entries = target.parent().expect("entries dir");
        fs::create_dir_all(entries).map_err(io_err(entries))?;
        loop {
            match fs::rename(&self.tmp, &target) {
                Ok(()) => {
                    fsx::sync_dir(entries).map_err(io_err(entries))?;
                    // The checkpoints are spent once the entry is published.
                    let _ = fs::remove_dir_all(self.cache.scratch_dir(&self.key));
                    return Ok(record);
                }
                // The target exists: someone else published, or a corrupt entry is in the way.
                // A complete entry wins; an evicted or corrupt one is replaced by this one.
                Err(_) if target.exists() => match self.cache.lookup(&self.key, false) {
                    Lookup::Done(existing) => {
                        let _ = fs::remove_dir_all(self.cache.scratch_dir(&self.key));
                        return Ok(*existing);
                    }
                    _ => self.cache.discard(&self.key)?,
                },
                Err(e) => {
                    return Err(CacheError::Io {
                        path: target,
                        source: e,
                    });
                }
            }
        }
    }
}

impl Drop for EntryBuilder {
    fn drop(&mut self) {
        // After a successful commit the temp dir no longer exists; otherwise clean up.
        let _ = fs::remove_dir_all(&self.tmp);
    }
}
