//! The JSON-lines event log of a run (`results/runs/<run-id>/events.jsonl`).

use crate::exec::Event;
use std::io::Write;
use std::path::Path;

/// Appends every event as one JSON line to `events.jsonl`.
pub struct EventLog(Option<std::fs::File>);

impl EventLog {
    pub fn create(path: &Path) -> Self {
        Self(std::fs::File::create(path).ok())
    }

    pub fn handle(&mut self, event: &Event) {
        if let Some(f) = &mut self.0 {
            let _ = serde_json::to_writer(&mut *f, event);
            let _ = f.write_all(b"\n");
        }
    }
}
