//! Content hashing: sha256 over canonical bytes, and file/directory fingerprints.
//!
//! A fingerprint is the sha256 of a file's bytes (or, for a directory, of the sorted list of
//! `relative path, size, file fingerprint`), so it is the same on any machine and checkout path.

use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Streaming sha256 of a file's contents.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Incremental hasher for building canonical encodings without an intermediate buffer.
#[derive(Default, Clone)]
pub struct KeyHasher(Sha256);

impl KeyHasher {
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds a length-prefixed field so that field boundaries are unambiguous.
    pub fn field(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
        self
    }
    pub fn finish(self) -> String {
        hex::encode(self.0.finalize())
    }
}
