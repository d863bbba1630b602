//! The scheduler: the single owner of run state. Ready nodes go to free slots; each running node
//! has a worker thread that holds the key's lock, runs the stage process (with retries) and
//! reports back over a channel.

use super::child;
use super::event::{Event, RunSummary};
use super::signals::Interrupts;
use super::slots::Slot;
use crate::cache::store::Failure;
use crate::cache::{Cache, Lookup, State};
use crate::plan::{JobSpec, NodeId, Plan};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, unbounded};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub results_dir: PathBuf,
    /// `results/runs/<run-id>`: jobs, logs and the event log of this run.
    pub run_dir: PathBuf,
    /// The binary whose `stage` subcommand computes a node.
    pub exe: PathBuf,
    pub slots: Vec<Slot>,
    /// Extra attempts for a failed stage.
    pub retries: u32,
    /// Keep pruned weights after every stage reading them is done.
    pub keep_pruned: bool,
    /// Trust cached entries only after checking their artifact checksums.
    pub verify: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Status {
    Waiting(usize),
    Ready,
    Running,
    Cached,
    Done,
    Failed,
    Skipped,
}

enum Report {
    Started {
        id: NodeId,
        device: String,
    },
    Retrying {
        id: NodeId,
        attempt: u32,
        error: String,
    },
    Finished {
        id: NodeId,
        slot: usize,
        outcome: WorkerOutcome,
    },
}

enum WorkerOutcome {
    Done {
        seconds: f64,
    },
    /// Another run published the entry while this one waited for the lock.
    CachedByOther,
    Failed {
        error: String,
        log: PathBuf,
        attempts: u32,
    },
}

struct Shared {
    cache: Cache,
    opts: RunOptions,
    pids: Mutex<HashMap<NodeId, u32>>,
    hard_stop: AtomicBool,
}

/// Runs every node whose state is `Run`, emitting events; returns the summary.
pub fn run(
    plan: &Plan,
    states: &[State],
    opts: &RunOptions,
    interrupts: &Interrupts,
    emit: &mut dyn FnMut(&Event),
) -> RunSummary {
    let clock = Instant::now();
    let shared = Arc::new(Shared {
        cache: Cache::new(&opts.results_dir),
        opts: opts.clone(),
        pids: Mutex::new(HashMap::new()),
        hard_stop: AtomicBool::new(false),
    });
    let dependents = plan.dependents();
    let mut status: Vec<Status> = Vec::with_capacity(plan.nodes.len());
    let mut ready = VecDeque::new();
    for (id, node) in plan.nodes.iter().enumerate() {
        let s = if states[id] == State::Cached {
            Status::Cached
        } else {
            let waiting = node
                .upstream
                .iter()
                .filter(|&&u| states[u] != State::Cached)
                .count();
            if waiting == 0 {
                ready.push_back(id);
                Status::Ready
            } else {
                Status::Waiting(waiting)
            }
        };
        status.push(s);
    }
    let cached = status.iter().filter(|s| **s == Status::Cached).count();
    emit(&Event::Start {
        total: plan.nodes.len(),
        cached,
        to_run: plan.nodes.len() - cached,
        slots: opts.slots.iter().map(|s| s.device.to_string()).collect(),
    });
    let mut summary = RunSummary {
        cached,
        ..Default::default()
    };

    let (tx, rx): (Sender<Report>, Receiver<Report>) = unbounded();
    let mut free: Vec<usize> = (0..opts.slots.len()).rev().collect();
    let mut running = 0usize;
    let (mut stopping, mut killed) = (false, false);
    loop {
        let n = interrupts.count();
        if n >= 1 && !stopping {
            stopping = true;
            summary.interrupted = true;
            emit(&Event::Interrupted { hard: false });
        }
        if n >= 2 && !killed {
            killed = true;
            shared.hard_stop.store(true, Ordering::SeqCst);
            for pid in shared.pids.lock().expect("pid table").values() {
                child::kill_group(*pid);
            }
            emit(&Event::Interrupted { hard: true });
        }
        while !stopping && !free.is_empty() && !ready.is_empty() {
            let (slot, id) = (
                free.pop().expect("free slot"),
                ready.pop_front().expect("ready node"),
            );
            status[id] = Status::Running;
            running += 1;
            let (shared, tx) = (shared.clone(), tx.clone());
            let job = {
                let s = &opts.slots[slot];
                let (_, device) = s.child_device();
                JobSpec::new(
                    plan,
                    &plan.nodes[id],
                    opts.results_dir.clone(),
                    device,
                    s.device.to_string(),
                    s.threads,
                )
            };
            std::thread::spawn(move || work(id, slot, job, &shared, &tx));
        }
        if running == 0 && (ready.is_empty() || stopping) {
            break;
        }
        let report = match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        match report {
            Report::Started { id, device } => emit(&Event::Started {
                node: id,
                label: plan.nodes[id].label.clone(),
                device,
            }),
            Report::Retrying { id, attempt, error } => emit(&Event::Retrying {
                node: id,
                label: plan.nodes[id].label.clone(),
                attempt,
                error,
            }),
            Report::Finished { id, slot, outcome } => {
                running -= 1;
                free.push(slot);
                let node = &plan.nodes[id];
                match outcome {
                    WorkerOutcome::Done { seconds } => {
                        status[id] = Status::Done;
                        summary.done += 1;
                        let _ = shared.cache.set_slot(&node.slot, &node.key);
                        shared.cache.clear_failure(&node.key);
                        emit(&Event::Finished {
                            node: id,
                            label: node.label.clone(),
                            seconds,
                        });
                    }
                    WorkerOutcome::CachedByOther => {
                        status[id] = Status::Cached;
                        summary.cached += 1;
                        emit(&Event::Cached {
                            node: id,
                            label: node.label.clone(),
                        });
                    }
                    WorkerOutcome::Failed {
                        error,
                        log,
                        attempts,
                    } => {
                        status[id] = Status::Failed;
                        summary.failed += 1;
                        if !killed {
                            let _ = shared.cache.note_failure(
                                &node.key,
                                &Failure {
                                    label: node.label.clone(),
                                    error: error.clone(),
                                    log: log.clone(),
                                    attempts,
                                },
                            );
                        }
                        summary
                            .failures
                            .push((node.label.clone(), error.clone(), log.clone()));
                        emit(&Event::Failed {
                            node: id,
                            label: node.label.clone(),
                            error,
                            log,
                        });
                        skip_dependents(plan, &dependents, id, &mut status, &mut summary, emit);
                        continue;
                    }
                }
                for &d in &dependents[id] {
                    if let Status::Waiting(n) = status[d] {
                        status[d] = if n == 1 {
                            ready.push_back(d);
                            Status::Ready
                        } else {
                            Status::Waiting(n - 1)
                        };
                    }
                }
                if !opts.keep_pruned {
                    for &u in &node.upstream {
                        evict_if_consumed(plan, &dependents, &status, u, &shared.cache, emit);
                    }
                }
            }
        }
    }
    summary.not_run = status
        .iter()
        .filter(|s| matches!(s, Status::Waiting(_) | Status::Ready))
        .count();
    summary.seconds = clock.elapsed().as_secs_f64();
    emit(&Event::End {
        summary: summary.clone(),
    });
    summary
}

fn skip_dependents(
    plan: &Plan,
    dependents: &[Vec<NodeId>],
    failed: NodeId,
    status: &mut [Status],
    summary: &mut RunSummary,
    emit: &mut dyn FnMut(&Event),
) {
    let mut stack = dependents[failed].clone();
    while let Some(d) = stack.pop() {
        if matches!(status[d], Status::Waiting(_) | Status::Ready) {
            status[d] = Status::Skipped;
            summary.skipped += 1;
            emit(&Event::Skipped {
                node: d,
                label: plan.nodes[d].label.clone(),
                because: plan.nodes[failed].label.clone(),
            });
            stack.extend(dependents[d].iter().copied());
        }
    }
}

/// Retention: once every stage reading a node's transient artifacts is done, drop them.
fn evict_if_consumed(
    plan: &Plan,
    dependents: &[Vec<NodeId>],
    status: &[Status],
    id: NodeId,
    cache: &Cache,
    emit: &mut dyn FnMut(&Event),
) {
    if !dependents[id]
        .iter()
        .all(|&d| matches!(status[d], Status::Done | Status::Cached))
    {
        return;
    }
    if let Lookup::Done(record) = cache.lookup(&plan.nodes[id].key, false)
        && let Ok(bytes) = cache.evict_transient(&record)
        && bytes > 0
    {
        emit(&Event::Evicted { node: id, bytes });
    }
}

fn work(id: NodeId, slot: usize, job: JobSpec, shared: &Shared, tx: &Sender<Report>) {
    let outcome = attempt_all(id, slot, &job, shared, tx);
    let _ = tx.send(Report::Finished { id, slot, outcome });
}

fn attempt_all(
    id: NodeId,
    slot: usize,
    job: &JobSpec,
    shared: &Shared,
    tx: &Sender<Report>,
) -> WorkerOutcome {
    let opts = &shared.opts;
    let short = &job.key[..12];
    let log = opts
        .run_dir
        .join("logs")
        .join(format!("{}-{short}.log", job.kind.name()));
    let fail = |error: String, attempts: u32| WorkerOutcome::Failed {
        error,
        log: log.clone(),
        attempts,
    };
    // The lock makes concurrent runs compute each key once: whoever waits finds it published.
    let _lock = match shared.cache.lock(&job.key) {
        Ok(l) => l,
        Err(e) => return fail(e.to_string(), 0),
    };
    // Under the lock: published meanwhile by another run, or an untrustworthy entry to clear.
    match shared.cache.lookup(&job.key, opts.verify) {
        Lookup::Done(_) => return WorkerOutcome::CachedByOther,
        Lookup::Missing => {}
        _ => {
            if let Err(e) = shared.cache.discard(&job.key) {
                return fail(e.to_string(), 0);
            }
        }
    }
    let job_path = opts.run_dir.join("jobs").join(format!("{}.json", job.key));
    let written = std::fs::create_dir_all(job_path.parent().expect("jobs dir"))
        .and_then(|_| std::fs::create_dir_all(log.parent().expect("logs dir")))
        .and_then(|_| {
            std::fs::write(
                &job_path,
                serde_json::to_vec_pretty(job).expect("job serialises"),
            )
        });
    if let Err(e) = written {
        return fail(format!("cannot write {}: {e}", job_path.display()), 0);
    }
    let (cuda_visible, _) = opts.slots[slot].child_device();
    let mut error = String::new();
    for attempt in 0..=opts.retries {
        if shared.hard_stop.load(Ordering::SeqCst) {
            return fail("interrupted".into(), attempt);
        }
        if attempt > 0 {
            let _ = tx.send(Report::Retrying {
                id,
                attempt,
                error: error.clone(),
            });
        }
        let clock = Instant::now();
        let mut child = match child::spawn(&opts.exe, &job_path, &log, &cuda_visible, job.threads) {
            Ok(c) => c,
            Err(e) => {
                return fail(
                    format!("cannot start stage process {}: {e}", opts.exe.display()),
                    attempt + 1,
                );
            }
        };
        shared
            .pids
            .lock()
            .expect("pid table")
            .insert(id, child.id());
        if attempt == 0 {
            let _ = tx.send(Report::Started {
                id,
                device: job.assigned_device.clone(),
            });
        }
        let status = child.wait();
        shared.pids.lock().expect("pid table").remove(&id);
        match status {
            Ok(s) if s.success() => match shared.cache.lookup(&job.key, false) {
                Lookup::Done(_) => {
                    return WorkerOutcome::Done {
                        seconds: clock.elapsed().as_secs_f64(),
                    };
                }
                other => {
                    error = format!(
                        "stage exited successfully but its cache entry is not usable ({other:?})"
                    )
                }
            },
            Ok(s) => error = describe_exit(s, &log),
            Err(e) => error = format!("waiting for the stage process failed: {e}"),
        }
    }
    fail(error, opts.retries + 1)
}

/// One line on why a stage process failed: its last error line, its panic, or the signal that
/// killed it.
fn describe_exit(status: std::process::ExitStatus, log: &Path) -> String {
    use std::os::unix::process::ExitStatusExt;
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let last_error = text.lines().rev().find(|l| l.starts_with("error"));
    let last_line = || text.lines().rev().find(|l| !l.trim().is_empty());
    match status.signal() {
        Some(sig) => format!(
            "stage process killed by signal {sig} ({})",
            signal_name(sig)
        ),
        None => match (last_error, panic_message(&text), last_line()) {
            (Some(line), _, _) => line.trim_start_matches("error: ").to_string(),
            (None, Some(panic), _) => panic,
            (None, None, Some(line)) => line.to_string(),
            (None, None, None) => format!("stage process exited with {status}"),
        },
    }
}

/// A stage log's panic (`thread '…' panicked at FILE:LINE:COL:`, then the message) in one
/// line. The message is cut at its first (escaped) newline and at 300 characters: libtorch's
/// errors carry their C++ backtrace inline.
fn panic_message(log: &str) -> Option<String> {
    let mut lines = log.lines();
    let header = lines.by_ref().find(|l| l.contains("panicked at "))?;
    let place = header.split("panicked at ").nth(1)?.trim_end_matches(':');
    let message = lines.next().unwrap_or_default();
    let message = message.split("\\n").next().unwrap_or_default();
    let message: String = message.chars().take(300).collect();
    Some(format!(
        "internal error at {place}: {message} (a bug in orchestrate; please report it with the log)"
    ))
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGABRT => "abort; often a libtorch error or assertion",
        libc::SIGKILL => "killed; often the out-of-memory killer",
        libc::SIGSEGV => "segmentation fault",
        libc::SIGTERM => "terminated",
        libc::SIGBUS => "bus error",
        _ => "signal",
    }
}

#[cfg(test)]
mod tests {
    use super::panic_message;

    #[test]
    fn a_panic_is_one_line_with_its_place() {
        let log = "stage finetune tiny/shapes (764a) on cpu\n\n\
            thread 'main' (16244) panicked at src/wrappers/tensor.rs:300:27:\n\
            called `Result::unwrap()` on an `Err` value: Torch(\"modified by an inplace operation\\nException raised from unpack\\nframe #0\")\n\
            stack backtrace:\n   0: rust_begin_unwind\n\
            note: Some details are omitted, run with `RUST_BACKTRACE=full` for a verbose backtrace.\n";
        assert_eq!(
            panic_message(log).unwrap(),
            "internal error at src/wrappers/tensor.rs:300:27: called `Result::unwrap()` on an \
             `Err` value: Torch(\"modified by an inplace operation (a bug in orchestrate; please \
             report it with the log)"
        );
        assert_eq!(panic_message("error: the dataset is missing\n"), None);
    }
}
