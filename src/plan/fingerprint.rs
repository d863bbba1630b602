//! Content fingerprints of external inputs (model and dataset files).
//!
//! A file's fingerprint is the sha256 of its bytes; a directory's is the sha256 over its files'
//! relative paths and fingerprints (hidden files skipped), so it does not depend on where the
//! directory lives. Re-hashing gigabytes on every `plan` is avoided by a cache keyed by
//! absolute path + size + mtime + inode change time + inode, stored as JSON beside the stage
//! cache: a file rewritten with its old timestamp (`touch -r`) still changes its ctime, which no
//! user call can set. Hugging Face cache blobs are named by the sha256 of their content, which
//! is used directly. [`FingerprintCache::rehashing`] (`--verify`) hashes everything again.

use crate::util::{fsx, hash};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Entry {
    size: u64,
    mtime_ns: i128,
    #[serde(default)]
    ctime_ns: i128,
    #[serde(default)]
    inode: u64,
    sha256: String,
}

#[derive(Debug, Default)]
pub struct FingerprintCache {
    path: Option<PathBuf>,
    entries: HashMap<String, Entry>,
    dirty: bool,
    /// Hash every file, trusting neither the cache nor blob names.
    rehash: bool,
}

impl FingerprintCache {
    /// Loads the cache file at `path` (a missing or unreadable file starts empty).
    pub fn open(path: &Path) -> Self {
        let entries = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Self {
            path: Some(path.to_path_buf()),
            entries,
            dirty: false,
            rehash: false,
        }
    }

    /// With `rehash`, every file is hashed again (and the cache refreshed).
    pub fn rehashing(mut self, rehash: bool) -> Self {
        self.rehash = rehash;
        self
    }

    /// A cache that is never saved (tests, benchmarks).
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// Fingerprint of a file or directory.
    pub fn fingerprint(&mut self, path: &Path) -> io::Result<String> {
        let meta = std::fs::metadata(path)?;
        if meta.is_file() {
            return self.file(path, &meta);
        }
        let mut files: Vec<(String, PathBuf)> = Vec::new();
        let walker = walkdir::WalkDir::new(path)
            .follow_links(true)
            .sort_by_file_name();
        for entry in walker
            .into_iter()
            .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'))
        {
            let entry = entry.map_err(io::Error::other)?;
            if entry.file_type().is_file() {
                let rel = entry
                    .path()
                    .strip_prefix(path)
                    .unwrap_or(entry.path())
                    .to_string_lossy()
                    .replace('\\', "/");
                files.push((rel, entry.path().to_path_buf()));
            }
        }
        let mut listing = String::new();
        for (rel, full) in files {
            let meta = std::fs::metadata(&full)?;
            let fp = self.file(&full, &meta)?;
            listing.push_str(&format!("{rel}\0{}\0{fp}\n", meta.len()));
        }
        Ok(hash::sha256_hex(listing.as_bytes()))
    }

    fn file(&mut self, path: &Path, meta: &std::fs::Metadata) -> io::Result<String> {
        // Hugging Face cache: snapshot files are symlinks to blobs named by their sha256.
        if !self.rehash
            && let Ok(target) = std::fs::read_link(path)
            && let Some(name) = target.file_name().and_then(|n| n.to_str())
            && name.len() == 64
            && name.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Ok(name.to_ascii_lowercase());
        }
        let abs = std::fs::canonicalize(path)?.to_string_lossy().into_owned();
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as i128);
        let ctime_ns = meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128;
        if !self.rehash
            && let Some(e) = self.entries.get(&abs)
            && e.size == meta.len()
            && e.mtime_ns == mtime_ns
            && e.ctime_ns == ctime_ns
            && e.inode == meta.ino()
        {
            return Ok(e.sha256.clone());
        }
        let sha256 = hash::sha256_file(path)?;
        self.entries.insert(
            abs,
            Entry {
                size: meta.len(),
                mtime_ns,
                ctime_ns,
                inode: meta.ino(),
                sha256: sha256.clone(),
            },
        );
        self.dirty = true;
        Ok(sha256)
    }

    /// Writes the cache back if anything was hashed.
    pub fn save(&self) -> io::Result<()> {
        match &self.path {
            Some(path) if self.dirty => fsx::write_atomic(
                path,
                &serde_json::to_vec(&self.entries).map_err(io::Error::other)?,
            ),
            _ => Ok(()),
        }
    }
}
