//! The console reporter: a progress bar on a terminal, plain lines otherwise.

use crate::exec::Event;
use crate::util::fsx::human_bytes;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;

pub struct Console {
    bar: Option<ProgressBar>,
    counts: Counts,
}

#[derive(Default)]
struct Counts {
    done: usize,
    cached: usize,
    failed: usize,
    skipped: usize,
    running: usize,
}

impl Console {
    /// A progress bar when stdout is a terminal, plain lines otherwise.
    pub fn new() -> Self {
        Self {
            bar: std::io::stdout().is_terminal().then(ProgressBar::hidden),
            counts: Counts::default(),
        }
    }

    fn line(&self, text: String) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => println!("{text}"),
        }
    }

    pub fn handle(&mut self, event: &Event) {
        let c = &mut self.counts;
        match event {
            Event::Start {
                total,
                cached,
                to_run,
                slots,
            } => {
                c.cached = *cached;
                let text = format!(
                    "{total} stages: {cached} cached, {to_run} to run on {}",
                    slots.join(", ")
                );
                if let Some(bar) = &mut self.bar {
                    *bar = ProgressBar::new(*to_run as u64);
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg} (ETA {eta})",
                        )
                        .expect("valid template"),
                    );
                    bar.enable_steady_tick(std::time::Duration::from_millis(200));
                }
                self.line(text);
            }
            Event::Started {
                label,
                device,
                reason,
                ..
            } => {
                c.running += 1;
                match reason {
                    // Recomputing what was computed before is worth a line even under the bar.
                    Some(why) => self.line(format!("start    {label} [{device}]: {why}")),
                    None if self.bar.is_none() => println!("start    {label} [{device}]"),
                    None => {}
                }
            }
            Event::Cached { label, .. } => {
                c.cached += 1;
                self.line(format!("cached   {label} (computed by another run)"));
                self.tick();
            }
            Event::Finished { label, seconds, .. } => {
                c.running = c.running.saturating_sub(1);
                c.done += 1;
                if self.bar.is_none() {
                    println!("done     {label} ({seconds:.1}s)");
                }
                self.tick();
            }
            Event::Retrying {
                label,
                attempt,
                error,
                ..
            } => self.line(format!(
                "retry    {label} (attempt {}): {error}",
                attempt + 1
            )),
            Event::Failed {
                label, error, log, ..
            } => {
                c.running = c.running.saturating_sub(1);
                c.failed += 1;
                self.line(format!(
                    "FAILED   {label}: {error}\n         log: {}",
                    log.display()
                ));
                self.tick();
            }
            Event::Skipped { label, because, .. } => {
                c.skipped += 1;
                if self.bar.is_none() {
                    println!("skipped  {label} (upstream failed: {because})");
                }
                self.tick();
            }
            Event::Interrupted {
                hard: false,
                message,
            } => self.line(format!("interrupted: {message}")),
            Event::Interrupted {
                hard: true,
                message,
            } => self.line(format!("interrupted again: {message}")),
            Event::Notice { message } => self.line(format!("note     {message}")),
            Event::Evicted { bytes, .. } => {
                if self.bar.is_none() {
                    println!(
                        "freed    {} of pruned weights no longer needed",
                        human_bytes(*bytes)
                    );
                }
            }
            Event::End { .. } => {
                if let Some(bar) = &self.bar {
                    bar.finish_and_clear();
                }
            }
        }
    }

    fn tick(&self) {
        if let Some(bar) = &self.bar {
            let c = &self.counts;
            bar.set_position((c.done + c.failed + c.skipped) as u64);
            bar.set_message(format!(
                "done {} · cached {} · failed {} · running {}",
                c.done, c.cached, c.failed, c.running
            ));
        }
    }
}

impl Default for Console {
    fn default() -> Self {
        Self::new()
    }
}
