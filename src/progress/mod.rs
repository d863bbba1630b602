//! Reporters: consumers of run events. A progress bar on a terminal, plain lines otherwise,
//! and a JSON-lines event log in the run directory. They never touch scheduler state.

mod console;
mod event_log;

pub use console::Console;
pub use event_log::EventLog;
