//! Planner: expanded grid → DAG of content-keyed stage nodes.
//!
//! - [`kind`]: the stage kinds and their implementation versions.
//! - [`key`]: the canonical encoding hashed into a node's key (a Merkle hash: kind, version,
//!   resolved params, upstream keys, input fingerprints).
//! - [`fingerprint`]: content hashes of external inputs, cached by path + size + mtime.
//! - [`build`]: expansion, with identical upstream work shared by key.
//!
//! Invariant: keys depend only on content, never on paths, names of files, hosts or time, so the
//! same manifest gives the same keys on any machine and checkout; changing one parameter changes
//! exactly the keys downstream of it.

pub mod build;
pub mod fingerprint;
pub mod job;
pub mod key;
pub mod kind;

pub use build::{Input, Node, NodeId, Plan, PointNodes, build};
pub use job::JobSpec;
pub use kind::StageKind;
