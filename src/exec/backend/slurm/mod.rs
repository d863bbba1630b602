//! The Slurm backend: each stage runs as `orchestrate stage <job.json>` in a Slurm job, on
//! whichever node Slurm picks; the DAG stays here, so only stages whose inputs are published are
//! ever submitted.
//!
//! - Stages the scheduler hands over between two polls are grouped by kind and submitted
//!   together, one job array per kind, chunked to the cluster's `MaxArraySize`; the scheduler's
//!   slots (`max_queued` of them) bound the jobs (array tasks included) in the queue at once.
//! - Submission is recorded in the [`ledger`] before and after each `sbatch`; a driver that
//!   starts adopts the queued and running jobs of earlier drivers instead of resubmitting them.
//! - Status: one `squeue` per poll for every job of the run, at an interval that starts at a
//!   second and stretches to 15 s while nothing changes (a stage's outcome file appearing cuts it
//!   short). A failed query is retried at the next interval.
//! - A job that left the queue is done exactly when its key's entry is published in the cache;
//!   otherwise its failure is classified (out of memory, time limit, node failure, cancelled,
//!   exit code) from Slurm's state and the stage log.
//! - `sbatch` errors that pass (time-outs, QOS submit limits) are retried with back-off and never
//!   fail a stage; refusals (bad partition, account, gres) fail its stages with Slurm's words.
//!
//! Files: [`cluster`] runs and parses the Slurm commands, [`script`] writes batch scripts,
//! [`ledger`] is the durable record, [`failure`] says why a job failed, [`results_dir`] checks
//! that nodes can use the results directory.

pub mod cluster;
pub mod failure;
pub mod ledger;
pub mod results_dir;
pub mod script;

pub use results_dir::results_dir_warnings;

use self::cluster::{CommandError, QueuedJob};
use self::failure::{Failure, describe_failure};
use self::ledger::{Entry, JobState, Ledger};
use super::{Backend, Finished, JobOutcome, read_outcome, write_job};
use crate::cache::{Cache, Lookup};
use crate::exec::slots::Slot;
use crate::manifest::Device;
use crate::manifest::types::{SlurmRequest, SlurmResources};
use crate::plan::{JobSpec, NodeId, StageKind};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Why a Slurm run cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    /// No controller answers (not a Slurm machine, or the controller is down).
    #[error("cannot reach the Slurm controller: {0}")]
    Unreachable(String),
    /// The cluster would never run a job as `[resources.slurm]` describes it.
    #[error("the cluster refuses {kind} jobs as [resources.slurm] describes them: {message}")]
    Refused { kind: StageKind, message: String },
    #[error("{0}")]
    Io(String),
}

/// Status query interval right after something changed, and at most.
const QUICK: Duration = Duration::from_secs(1);
const SLOW: Duration = Duration::from_secs(15);
/// Status query interval while a stage that published is still in the queue (exiting).
const EXITING: Duration = Duration::from_millis(200);
/// Back-off of a transient `sbatch` error: first wait, and at most.
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
const MOST_BACKOFF: Duration = Duration::from_secs(120);

pub struct Slurm {
    exe: PathBuf,
    run_dir: PathBuf,
    run_id: String,
    cache: Cache,
    resources: SlurmResources,
    slots: Vec<Slot>,
    max_array: usize,
    ledger: Ledger,
    /// Attempts so far per key, over every run (from the ledger).
    attempts: HashMap<String, u32>,
    /// Jobs of earlier drivers still queued or running, by key: adopted when the scheduler asks
    /// for their key.
    adoptable: HashMap<String, Entry>,
    /// Handed over by the scheduler, not yet submitted.
    pending: Vec<Pending>,
    retry_at: Option<Instant>,
    backoff: Duration,
    in_flight: HashMap<NodeId, Task>,
    next_query: Instant,
    interval: Duration,
    last_outcome_check: Instant,
    batches: u32,
    interrupted: bool,
    finished: Vec<Finished>,
    notices: Vec<String>,
}

struct Pending {
    node: NodeId,
    key: String,
    kind: StageKind,
    spec: PathBuf,
    outcome: PathBuf,
    attempt: u32,
}

/// A job in the queue for a node.
struct Task {
    key: String,
    kind: StageKind,
    job: String,
    run: String,
    log: PathBuf,
    outcome: PathBuf,
    /// Slurm's state at the last query (to notice a requeue).
    last_state: String,
}

impl Slurm {
    /// Connects to the cluster (reads `MaxArraySize`), checks that a job of each kind in `kinds`
    /// would be accepted as `[resources.slurm]` describes it, and reconciles the ledger of
    /// `results_dir` with the queue. `run_dir` receives this run's job specs, scripts and logs.
    pub fn new(
        exe: PathBuf,
        results_dir: &Path,
        run_dir: PathBuf,
        run_id: String,
        resources: &SlurmResources,
        kinds: &[StageKind],
    ) -> Result<Self, SlurmError> {
        let max_array =
            cluster::max_array_size().map_err(|e| SlurmError::Unreachable(e.message))? as usize;
        let mut me = Slurm {
            exe,
            cache: Cache::new(results_dir),
            ledger: Ledger::new(results_dir),
            run_dir,
            run_id,
            resources: resources.clone(),
            slots: vec![
                Slot {
                    device: Device::Cpu,
                    threads: 1,
                };
                resources.max_queued as usize
            ],
            max_array: max_array.max(1),
            attempts: HashMap::new(),
            adoptable: HashMap::new(),
            pending: Vec::new(),
            retry_at: None,
            backoff: FIRST_BACKOFF,
            in_flight: HashMap::new(),
            next_query: Instant::now(),
            interval: QUICK,
            last_outcome_check: Instant::now(),
            batches: 0,
            interrupted: false,
            finished: Vec::new(),
            notices: Vec::new(),
        };
        for &kind in kinds {
            me.check_request(kind)?;
        }
        me.reconcile()?;
        me.notices
            .extend(results_dir_warnings(results_dir, resources));
        Ok(me)
    }

    fn slurm_dir(&self) -> PathBuf {
        self.run_dir.join("slurm")
    }

    /// `sbatch --test-only` with a kind's request: a partition, account or gres the cluster
    /// refuses is one error before anything is submitted.
    fn check_request(&self, kind: StageKind) -> Result<(), SlurmError> {
        let request = self.resources.for_kind(kind.name());
        let dir = self.slurm_dir();
        let path = dir.join(format!("check-{}.sh", kind.name()));
        let text = self.script(kind, &request, 1, "check", &dir.join("check.jobs"));
        std::fs::create_dir_all(&dir)
            .and_then(|_| std::fs::write(&path, text))
            .map_err(|e| SlurmError::Io(format!("cannot write {}: {e}", path.display())))?;
        let checked = cluster::check_request(&path);
        let _ = std::fs::remove_file(&path);
        match checked {
            Ok(()) => Ok(()),
            Err(e) if e.transient => Err(SlurmError::Unreachable(e.message)),
            Err(e) => Err(SlurmError::Refused {
                kind,
                message: e.message,
            }),
        }
    }

    /// Reads the ledger and asks Slurm about every job it names that may still be in the queue:
    /// those still queued or running become adoptable; the rest are marked ended.
    fn reconcile(&mut self) -> Result<(), SlurmError> {
        let mut entries = match self.ledger.read() {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                let aside = self.ledger.path().with_extension(format!(
                    "json.damaged-{}",
                    crate::util::fsx::unique_suffix()
                ));
                let _ = std::fs::rename(self.ledger.path(), &aside);
                self.notices.push(format!(
                    "{e}; moved to {} and starting a new one (a stage still queued from an earlier run computes nothing twice: it waits for its key's lock)",
                    aside.display()
                ));
                ledger::Entries::new()
            }
            Err(e) => {
                return Err(SlurmError::Io(format!(
                    "cannot read {}: {e}",
                    self.ledger.path().display()
                )));
            }
        };
        for (key, e) in &entries {
            self.attempts.insert(key.clone(), e.attempt);
        }
        let open: Vec<String> = entries
            .iter()
            .filter(|(_, e)| e.state != JobState::Ended)
            .map(|(k, _)| k.clone())
            .collect();
        if open.is_empty() {
            return Ok(());
        }
        let mut runs: Vec<String> = open.iter().map(|k| entries[k].run.clone()).collect();
        runs.sort();
        runs.dedup();
        let queue = cluster::queue(&runs).map_err(|e| SlurmError::Unreachable(e.message))?;
        for key in open {
            let e = entries.get_mut(&key).expect("listed");
            let job = match e.state {
                JobState::Queued => e.job.clone(),
                // The driver may have died between sbatch and the ledger: find the job by its
                // comment (this key, or its batch's token and the key's place in the batch).
                _ => find_submitted(&queue, &key, e),
            };
            match job.as_ref().and_then(|j| queue.get(j)) {
                Some(q) if !q.ended() => {
                    e.job = job;
                    e.state = JobState::Queued;
                    if let Some(j) = &e.job {
                        e.log.set_file_name(script::log_name(e.kind.name(), j));
                    }
                    self.adoptable.insert(key.clone(), e.clone());
                }
                q => {
                    e.state = JobState::Ended;
                    e.slurm_state = q.map(|q| q.state.clone());
                }
            }
        }
        self.ledger
            .update(|current| {
                for (k, e) in std::mem::take(&mut entries) {
                    current.insert(k, e);
                }
            })
            .map_err(|e| {
                SlurmError::Io(format!(
                    "cannot write {}: {e}",
                    self.ledger.path().display()
                ))
            })?;
        if !self.adoptable.is_empty() {
            self.notices.push(format!(
                "{} Slurm job(s) of an earlier run are still queued or running: adopting them",
                self.adoptable.len()
            ));
        }
        Ok(())
    }

    fn script(
        &self,
        kind: StageKind,
        request: &SlurmRequest,
        tasks: usize,
        comment: &str,
        list: &Path,
    ) -> String {
        let env = crate::util::runtime::openmp_env();
        script::script(&script::Batch {
            run_id: &self.run_id,
            comment,
            kind: kind.name(),
            request,
            tasks,
            list,
            log_dir: &self.run_dir.join("logs"),
            exe: &self.exe,
            threads: request.cpus_per_task.unwrap_or(1),
            env: &env,
        })
    }

    /// Submits what the scheduler handed over: per kind, arrays of at most `MaxArraySize`.
    fn flush(&mut self) {
        if self.pending.is_empty() || self.retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        let mut by_kind: BTreeMap<StageKind, Vec<Pending>> = BTreeMap::new();
        for p in std::mem::take(&mut self.pending) {
            by_kind.entry(p.kind).or_default().push(p);
        }
        let mut chunks: Vec<Vec<Pending>> = Vec::new();
        for (_, mut group) in by_kind {
            while !group.is_empty() {
                let rest = group.split_off(group.len().min(self.max_array));
                chunks.push(std::mem::replace(&mut group, rest));
            }
        }
        let mut chunks = chunks.into_iter();
        for chunk in chunks.by_ref() {
            if let Err(again) = self.submit_chunk(chunk) {
                self.pending.extend(again);
                break;
            }
        }
        // After a transient error, the rest waits for the retry too.
        self.pending.extend(chunks.flatten());
    }

    /// One `sbatch`. `Err` hands back a chunk to retry later (a transient error).
    fn submit_chunk(&mut self, chunk: Vec<Pending>) -> Result<(), Vec<Pending>> {
        self.batches += 1;
        let kind = chunk[0].kind;
        let token = format!("{}.{}", self.run_id, self.batches);
        let dir = self.slurm_dir();
        let list = dir.join(format!("{}.jobs", self.batches));
        let script_path = dir.join(format!("{}.sh", self.batches));
        let request = self.resources.for_kind(kind.name());
        let comment = if chunk.len() == 1 {
            chunk[0].key.clone()
        } else {
            token.clone()
        };
        let text = self.script(kind, &request, chunk.len(), &comment, &list);
        let specs: String = chunk
            .iter()
            .map(|p| format!("{}\n", p.spec.display()))
            .collect();
        let written = std::fs::create_dir_all(&dir)
            .and_then(|_| std::fs::write(&list, specs))
            .and_then(|_| std::fs::write(&script_path, text));
        if let Err(e) = written {
            self.refuse(
                chunk,
                &format!("cannot write {}: {e}", script_path.display()),
                &script_path,
            );
            return Ok(());
        }
        let log_dir = self.run_dir.join("logs");
        let entry = |index: usize, p: &Pending, job: Option<String>| Entry {
            log: log_dir.join(script::log_name(
                kind.name(),
                job.as_deref().unwrap_or("pending"),
            )),
            job,
            kind,
            token: token.clone(),
            index,
            run: self.run_id.clone(),
            attempt: p.attempt,
            state: JobState::Submitting,
            outcome: p.outcome.clone(),
            slurm_state: None,
        };
        let before: Vec<(String, Entry)> = chunk
            .iter()
            .enumerate()
            .map(|(i, p)| (p.key.clone(), entry(i, p, None)))
            .collect();
        if let Err(e) = self.ledger.update(|l| l.extend(before)) {
            self.refuse(
                chunk,
                &format!("cannot write {}: {e}", self.ledger.path().display()),
                &script_path,
            );
            return Ok(());
        }
        match cluster::submit(&script_path) {
            Ok(id) => {
                self.backoff = FIRST_BACKOFF;
                self.retry_at = None;
                let array = chunk.len() > 1;
                let jobs: Vec<(Pending, String)> = chunk
                    .into_iter()
                    .enumerate()
                    .map(|(i, p)| {
                        let job = if array {
                            format!("{id}_{i}")
                        } else {
                            id.clone()
                        };
                        (p, job)
                    })
                    .collect();
                let after: Vec<(String, Entry)> = jobs
                    .iter()
                    .enumerate()
                    .map(|(i, (p, job))| {
                        let mut e = entry(i, p, Some(job.clone()));
                        e.state = JobState::Queued;
                        (p.key.clone(), e)
                    })
                    .collect();
                if let Err(e) = self.ledger.update(|l| l.extend(after)) {
                    // The jobs run; a driver that restarts finds them by their comment.
                    self.notices
                        .push(format!("cannot record job {id} in the ledger: {e}"));
                }
                for (p, job) in jobs {
                    self.in_flight.insert(
                        p.node,
                        Task {
                            log: log_dir.join(script::log_name(kind.name(), &job)),
                            key: p.key,
                            kind,
                            job,
                            run: self.run_id.clone(),
                            outcome: p.outcome,
                            last_state: "PENDING".into(),
                        },
                    );
                }
                self.interval = QUICK;
                self.next_query = Instant::now() + QUICK;
                Ok(())
            }
            Err(CommandError {
                message,
                transient: true,
            }) => {
                self.notices.push(format!(
                    "{message}; submitting again in {} s",
                    self.backoff.as_secs()
                ));
                self.retry_at = Some(Instant::now() + self.backoff);
                self.backoff = (self.backoff * 2).min(MOST_BACKOFF);
                Err(chunk)
            }
            Err(CommandError { message, .. }) => {
                let keys: Vec<String> = chunk.iter().map(|p| p.key.clone()).collect();
                let _ = self.ledger.update(|l| {
                    for k in &keys {
                        l.remove(k);
                    }
                });
                self.refuse(
                    chunk,
                    &format!("Slurm refused the job: {message}"),
                    &script_path,
                );
                Ok(())
            }
        }
    }

    /// Fails every stage of a chunk that cannot be submitted.
    fn refuse(&mut self, chunk: Vec<Pending>, error: &str, script: &Path) {
        for p in chunk {
            self.finished.push(Finished {
                node: p.node,
                outcome: JobOutcome::Failed {
                    error: error.to_string(),
                    log: script.to_path_buf(),
                },
            });
        }
    }

    /// Whether a running stage's outcome file appeared (checked at most twice a second): its
    /// job is about to leave the queue, so the next query need not wait.
    fn outcome_appeared(&mut self) -> bool {
        if self.last_outcome_check.elapsed() < Duration::from_millis(500) {
            return false;
        }
        self.last_outcome_check = Instant::now();
        self.in_flight.values().any(|t| t.outcome.exists())
    }

    /// One status query; ended jobs become finished attempts.
    fn query(&mut self) {
        let mut runs: Vec<String> = self.in_flight.values().map(|t| t.run.clone()).collect();
        runs.sort();
        runs.dedup();
        let queue = match cluster::queue(&runs) {
            Ok(q) => q,
            Err(e) => {
                // A controller that stays away is asked less and less often (up to every 15 s).
                self.interval = self.interval.mul_f64(1.5).min(SLOW);
                self.notices.push(format!(
                    "{}; asking again in {:.0} s",
                    e.message,
                    self.interval.as_secs_f64()
                ));
                self.next_query = Instant::now() + self.interval;
                return;
            }
        };
        let mut ended = Vec::new();
        for (&node, task) in self.in_flight.iter_mut() {
            match queue.get(&task.job) {
                Some(q) if !q.ended() => {
                    if q.state != task.last_state {
                        if task.last_state == "RUNNING" && q.state != "COMPLETING" {
                            self.notices.push(format!(
                                "Slurm job {} ({} {}) went from RUNNING to {} ({}): waiting for it to run again",
                                task.job,
                                task.kind,
                                &task.key[..12],
                                q.state,
                                q.reason
                            ));
                        }
                        task.last_state = q.state.clone();
                    }
                }
                q => ended.push((node, q.cloned())),
            }
        }
        let mut ledger_changes = Vec::new();
        for (node, q) in &ended {
            let task = self.in_flight.remove(node).expect("in flight");
            let outcome = self.conclude(&task, q.as_ref());
            ledger_changes.push((task.key.clone(), q.as_ref().map(|q| q.state.clone())));
            self.finished.push(Finished {
                node: *node,
                outcome,
            });
        }
        if !ledger_changes.is_empty() {
            let _ = self.ledger.update(|l| {
                for (key, state) in ledger_changes {
                    if let Some(e) = l.get_mut(&key) {
                        e.state = JobState::Ended;
                        e.slurm_state = state;
                    }
                }
            });
        }
        self.interval = if ended.is_empty() {
            (self.interval.mul_f64(1.5)).min(SLOW)
        } else {
            QUICK
        };
        // A stage that wrote its outcome is exiting: look again as soon as Slurm can notice.
        let exiting = self.in_flight.values().any(|t| t.outcome.exists());
        self.next_query = Instant::now()
            + match exiting {
                true => EXITING,
                false => self.interval,
            };
    }

    /// How a job that left the queue ended: done exactly when its entry is published.
    fn conclude(&self, task: &Task, queued: Option<&QueuedJob>) -> JobOutcome {
        if let Lookup::Done(record) | Lookup::Evicted(record) = self.cache.lookup(&task.key, false)
        {
            return JobOutcome::Done {
                seconds: record.timing.seconds,
                computed: read_outcome(&task.outcome).unwrap_or(true),
            };
        }
        let state = queued.map(|q| q.state.as_str());
        if self.interrupted && matches!(state, Some("CANCELLED") | None) {
            return JobOutcome::Interrupted;
        }
        let detail = match state {
            Some("COMPLETED") => None,
            _ => cluster::job_detail(&task.job),
        };
        let log_text = std::fs::read_to_string(&task.log).unwrap_or_default();
        let request = self.resources.for_kind(task.kind.name());
        JobOutcome::Failed {
            error: describe_failure(&Failure {
                job: &task.job,
                kind: task.kind,
                state,
                last_seen: &task.last_state,
                detail: detail.as_ref(),
                log: &log_text,
                request: &request,
                results_dir: self.cache.root(),
            }),
            log: task.log.clone(),
        }
    }
}

/// The job an unconfirmed submission of `key` became, if it is in `queue`: found by its comment
/// (the key, once a task or single job wrote it), or as its task of the array whose pending
/// tasks still carry the batch's token.
fn find_submitted(queue: &HashMap<String, QueuedJob>, key: &str, entry: &Entry) -> Option<String> {
    if let Some(q) = queue.values().find(|q| q.comment == key) {
        return Some(q.id.clone());
    }
    let array = queue
        .values()
        .find(|q| q.comment == entry.token)?
        .id
        .split('_')
        .next()?
        .to_string();
    Some(format!("{array}_{}", entry.index))
}

impl Backend for Slurm {
    fn slots(&self) -> &[Slot] {
        &self.slots
    }

    fn describe(&self) -> Vec<String> {
        let partition = self
            .resources
            .default
            .partition
            .as_deref()
            .unwrap_or("default partition");
        vec![format!(
            "Slurm ({partition}, up to {} queued jobs, arrays of up to {})",
            self.resources.max_queued, self.max_array
        )]
    }

    fn placement(&self, _slot: usize) -> String {
        "slurm".into()
    }

    fn submit(&mut self, node: NodeId, _slot: usize, mut job: JobSpec) -> Result<(), String> {
        if let Some(e) = self.adoptable.remove(&job.key) {
            self.in_flight.insert(
                node,
                Task {
                    key: job.key,
                    kind: job.kind,
                    job: e.job.unwrap_or_default(),
                    run: e.run,
                    log: e.log,
                    outcome: e.outcome,
                    last_state: "PENDING".into(),
                },
            );
            self.next_query = Instant::now();
            return Ok(());
        }
        let request = self.resources.for_kind(job.kind.name());
        job.device = if request.wants_gpu() { "cuda:0" } else { "cpu" }.into();
        job.assigned_device = match &request.gres {
            Some(g) => format!("slurm gres {g}"),
            None => "slurm cpu".into(),
        };
        job.threads = request.cpus_per_task.unwrap_or(1);
        let (spec, outcome) = write_job(&self.run_dir, &mut job)?;
        let attempt = self.attempts.entry(job.key.clone()).or_insert(0);
        *attempt += 1;
        self.pending.push(Pending {
            node,
            attempt: *attempt,
            key: job.key,
            kind: job.kind,
            spec,
            outcome,
        });
        Ok(())
    }

    fn poll(&mut self, timeout: Duration) -> Vec<Finished> {
        if !self.interrupted {
            self.flush();
        }
        if !self.in_flight.is_empty()
            && (Instant::now() >= self.next_query || self.outcome_appeared())
        {
            self.query();
        }
        if self.finished.is_empty() {
            let mut wake = Instant::now() + timeout;
            if !self.in_flight.is_empty() {
                wake = wake.min(self.next_query);
            }
            if let Some(retry) = self.retry_at {
                wake = wake.min(retry);
            }
            std::thread::sleep(wake.saturating_duration_since(Instant::now()));
        }
        std::mem::take(&mut self.finished)
    }

    fn interrupt(&mut self) -> String {
        self.interrupted = true;
        for p in std::mem::take(&mut self.pending) {
            self.finished.push(Finished {
                node: p.node,
                outcome: JobOutcome::Interrupted,
            });
        }
        let ids: Vec<String> = self.in_flight.values().map(|t| t.job.clone()).collect();
        if let Err(e) = cluster::cancel(&ids) {
            self.notices.push(e.message);
        }
        self.next_query = Instant::now();
        format!(
            "cancelling this run's {} Slurm job(s) (scancel) and waiting for them to end; Ctrl-C again to stop waiting",
            ids.len()
        )
    }

    fn cancel_all(&mut self) -> String {
        for (node, _) in self.in_flight.drain() {
            self.finished.push(Finished {
                node,
                outcome: JobOutcome::Interrupted,
            });
        }
        "not waiting for the cancelled Slurm jobs to end".into()
    }

    fn notices(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notices)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unconfirmed_submission_is_found_by_its_comment() {
        let entry = Entry {
            job: None,
            kind: StageKind::Prune,
            token: "r1.2".into(),
            index: 1,
            run: "r1".into(),
            attempt: 1,
            state: JobState::Submitting,
            log: "/r/runs/r1/logs/prune-pending.log".into(),
            outcome: "/r/runs/r1/outcomes/bbb.json".into(),
            slurm_state: None,
        };
        let q = |id: &str, comment: &str| {
            (
                id.to_string(),
                QueuedJob {
                    id: id.into(),
                    state: "PENDING".into(),
                    reason: "Priority".into(),
                    comment: comment.into(),
                },
            )
        };
        let queue: HashMap<_, _> = [q("9_0", "aaa"), q("9_1", "r1.2")].into_iter().collect();
        assert_eq!(
            find_submitted(&queue, "bbb", &entry).as_deref(),
            Some("9_1")
        );
        assert_eq!(
            find_submitted(&queue, "aaa", &entry).as_deref(),
            Some("9_0")
        );
        let empty = HashMap::new();
        assert_eq!(find_submitted(&empty, "bbb", &entry), None);
        assert_eq!(
            script::log_name(StageKind::IntrinsicDimension.name(), "9_1"),
            "intrinsic-dimension-9_1.log"
        );
    }
}
