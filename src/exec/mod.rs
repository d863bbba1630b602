//! Executor: runs the nodes that must run, in dependency order, over device slots.
//!
//! - [`slots`]: devices × `jobs_per_device` → slots, each with a concrete device and a thread count.
//! - [`child`]: one child process per stage (`orchestrate stage <job.json>`), its own process
//!   group (a terminal Ctrl-C reaches only the scheduler) and killed if the scheduler dies.
//! - [`scheduler`]: the single owner of run state; emits [`Event`]s that reporters consume.
//! - [`signals`]: first Ctrl-C stops scheduling, the second kills running stages.
//!
//! Invariants: a node runs only while its key's lock is held, so concurrent runs on one
//! results directory compute each key once; a failed node skips its dependents only.

pub mod child;
pub mod event;
pub mod scheduler;
pub mod signals;
pub mod slots;

pub use event::{Event, RunSummary};
pub use scheduler::{RunOptions, run};
pub use slots::{Slot, slots};
