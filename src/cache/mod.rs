//! The content-addressed stage cache under `results/cache/`.
//!
//! ```text
//! cache/entries/<key>/record.json      the record: params, upstream keys, artifact checksums, timings, provenance
//! cache/entries/<key>/artifacts/...    the stage's outputs
//! cache/tmp/                           entries being built (never read)
//! cache/locks/<key>.lock               per-key advisory lock held by whoever computes the key
//! cache/slots/<hash>                   last key computed for a logical node (explains invalidations)
//! cache/failures/<key>.json            last failure of a key: error and log path
//! cache/fingerprints.json              input fingerprint cache (path + size + mtime → sha256)
//! ```
//!
//! Invariant: an entry is complete and verified, or absent. It is built in `tmp/`, its record
//! written last, and the whole directory published by one atomic rename; a kill at any instant
//! leaves at most garbage in `tmp/`. Artifact sizes are checked on every lookup, checksums on
//! `--verify`; a bad entry is recomputed, never trusted.

pub mod fresh;
pub mod gc;
pub mod record;
pub mod store;

pub use fresh::{Reason, State, freshness};
pub use record::{Artifact, Record};
pub use store::{Cache, CacheError, EntryBuilder, Lookup};
