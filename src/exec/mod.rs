//! Executor: runs the nodes that must run, in dependency order, over device slots.
//!
//! - [`slots`]: devices × `jobs_per_device` → slots, each with a concrete device and a thread count.
//! - [`backend`]: where jobs run, behind one interface (capacity, submit, poll, cancel); the
//!   [`backend::Local`] backend runs a child process per stage.
//! - [`scheduler`]: the single owner of run state; emits [`Event`]s that reporters consume.
//! - [`signals`]: first Ctrl-C stops scheduling, the second cancels running jobs.
//!
//! Invariants: a job computes only while its key's lock is held (inside the stage process), so
//! concurrent runs on one results directory compute each key once, whatever backend runs them;
//! a failed node skips its dependents only.

pub mod backend;
pub mod event;
pub mod scheduler;
pub mod signals;
pub mod slots;

pub use event::{Event, RunSummary};
pub use scheduler::{RunOptions, run};
pub use slots::{Slot, slots};
