//! The local backend: one child process per job (`<exe> stage <job.json>`), over this machine's
//! device slots. Each child gets its own process group (a terminal's Ctrl-C reaches only the
//! scheduler, which decides) and is killed by the kernel if the scheduler dies. The child holds
//! the key's lock; this backend only starts, waits for and describes processes.

use super::{Backend, Finished, JobOutcome, last_error_line, read_outcome, write_job};
use crate::exec::slots::Slot;
use crate::plan::{JobSpec, NodeId};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, unbounded};
use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Local {
    exe: PathBuf,
    run_dir: PathBuf,
    slots: Vec<Slot>,
    tx: Sender<Finished>,
    rx: Receiver<Finished>,
    /// Process ids of running children, by node.
    pids: Arc<Mutex<HashMap<NodeId, u32>>>,
}

impl Local {
    /// `exe` is the binary whose `stage` subcommand computes a job; `run_dir` receives the job
    /// specs, logs and outcomes of this run.
    pub fn new(exe: PathBuf, run_dir: PathBuf, slots: Vec<Slot>) -> Self {
        let (tx, rx) = unbounded();
        Local {
            exe,
            run_dir,
            slots,
            tx,
            rx,
            pids: Arc::default(),
        }
    }
}

impl Backend for Local {
    fn slots(&self) -> &[Slot] {
        &self.slots
    }

    fn submit(&mut self, node: NodeId, slot: usize, mut job: JobSpec) -> Result<(), String> {
        let s = &self.slots[slot];
        let (cuda_visible, device) = s.child_device();
        job.device = device;
        job.assigned_device = s.device.to_string();
        job.threads = s.threads;
        let log =
            self.run_dir
                .join("logs")
                .join(format!("{}-{}.log", job.kind.name(), &job.key[..12]));
        let (job_path, outcome) = write_job(&self.run_dir, &mut job)?;
        let clock = Instant::now();
        let mut child = spawn(&self.exe, &job_path, &log, &cuda_visible, job.threads)
            .map_err(|e| format!("cannot start stage process {}: {e}", self.exe.display()))?;
        self.pids
            .lock()
            .expect("pid table")
            .insert(node, child.id());
        let (tx, pids) = (self.tx.clone(), self.pids.clone());
        std::thread::spawn(move || {
            let status = child.wait();
            pids.lock().expect("pid table").remove(&node);
            let outcome = match status {
                Ok(s) if s.success() => match read_outcome(&outcome) {
                    Some(computed) => JobOutcome::Done {
                        seconds: clock.elapsed().as_secs_f64(),
                        computed,
                    },
                    None => JobOutcome::Failed {
                        error: format!(
                            "stage exited successfully but left no outcome in {}",
                            outcome.display()
                        ),
                        log,
                    },
                },
                Ok(s) => JobOutcome::Failed {
                    error: describe_exit(s, &log),
                    log,
                },
                Err(e) => JobOutcome::Failed {
                    error: format!("waiting for the stage process failed: {e}"),
                    log,
                },
            };
            let _ = tx.send(Finished { node, outcome });
        });
        Ok(())
    }

    fn poll(&mut self, timeout: Duration) -> Vec<Finished> {
        let first = match self.rx.recv_timeout(timeout) {
            Ok(f) => f,
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return vec![],
        };
        std::iter::once(first).chain(self.rx.try_iter()).collect()
    }

    fn cancel_all(&mut self) -> String {
        for pid in self.pids.lock().expect("pid table").values() {
            kill_group(*pid);
        }
        "killing running stages".into()
    }
}

/// Spawns the stage process in its own process group, killed if this process dies.
fn spawn(
    exe: &Path,
    job: &Path,
    log: &Path,
    cuda_visible: &str,
    threads: u32,
) -> std::io::Result<Child> {
    let out = std::fs::File::create(log)?;
    let err = out.try_clone()?;
    let mut cmd = Command::new(exe);
    cmd.arg("stage")
        .arg(job)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .env("CUDA_VISIBLE_DEVICES", cuda_visible)
        .env("OMP_NUM_THREADS", threads.to_string())
        .env("RAYON_NUM_THREADS", threads.to_string())
        .env("RUST_BACKTRACE", "1")
        .envs(crate::util::runtime::openmp_env())
        .process_group(0);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Kills a stage process group.
fn kill_group(pid: u32) {
    // SAFETY: sending a signal has no memory effects.
    unsafe {
        libc::kill(-(pid as i32), libc::SIGKILL);
    }
}

/// One line on why a stage process failed: its last error line, its panic, or the signal that
/// killed it.
fn describe_exit(status: std::process::ExitStatus, log: &Path) -> String {
    use std::os::unix::process::ExitStatusExt;
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let last_line = || text.lines().rev().find(|l| !l.trim().is_empty());
    match status.signal() {
        Some(sig) => format!(
            "stage process killed by signal {sig} ({})",
            signal_name(sig)
        ),
        None => match (last_error_line(&text), last_line()) {
            (Some(reason), _) => reason,
            (None, Some(line)) => line.to_string(),
            (None, None) => format!("stage process exited with {status}"),
        },
    }
}

/// A stage log's panic (`thread '…' panicked at FILE:LINE:COL:`, then the message) in one
/// line. The message is cut at its first (escaped) newline and at 300 characters: libtorch's
/// errors carry their C++ backtrace inline.
pub(super) fn panic_message(log: &str) -> Option<String> {
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
