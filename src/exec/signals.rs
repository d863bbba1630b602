//! Ctrl-C handling: SIGINT and SIGTERM increment a counter the scheduler polls. The handler only
//! touches an atomic, which is async-signal-safe.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Clone, Debug, Default)]
pub struct Interrupts(Arc<AtomicUsize>);

impl Interrupts {
    /// Installs the handlers for this process.
    pub fn install() -> std::io::Result<Self> {
        let me = Self::default();
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            let counter = me.0.clone();
            // SAFETY: the handler only performs an atomic increment.
            unsafe {
                signal_hook::low_level::register(sig, move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                })
            }?;
        }
        Ok(me)
    }

    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}
