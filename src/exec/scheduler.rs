//! The scheduler: the single owner of run state. Ready nodes go to free slots of a
//! [`Backend`]; finished attempts free their slot, release dependents, are retried, or skip
//! their dependents. It knows nothing about processes: the backend runs jobs, and each job
//! holds its key's lock while it computes (see [`super::backend`]).

use super::backend::{Backend, Finished, JobOutcome};
use super::event::{Event, RunSummary};
use super::signals::Interrupts;
use crate::cache::store::Failure;
use crate::cache::{Cache, Lookup, Reason, State};
use crate::plan::{JobSpec, NodeId, Plan};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The results directory (absolute) whose cache the jobs publish into.
    pub results_dir: PathBuf,
    /// Extra attempts for a failed stage.
    pub retries: u32,
    /// Keep pruned weights after every stage reading them is done.
    pub keep_pruned: bool,
    /// Trust cached entries only after checking their artifact checksums.
    pub verify: bool,
    /// Minutes between a training stage's checkpoints (0: after every step).
    pub checkpoint_minutes: u64,
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

/// A node with an attempt in flight.
struct Running {
    slot: usize,
    attempt: u32,
}

/// Runs every node whose state is `Run` on `backend`, emitting events; returns the summary.
pub fn run(
    plan: &Plan,
    states: &[State],
    backend: &mut dyn Backend,
    opts: &RunOptions,
    interrupts: &Interrupts,
    emit: &mut dyn FnMut(&Event),
) -> RunSummary {
    let clock = Instant::now();
    let cache = Cache::new(&opts.results_dir);
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
        slots: backend.describe(),
    });
    let mut summary = RunSummary {
        cached,
        ..Default::default()
    };

    let mut free: Vec<usize> = (0..backend.slots().len()).rev().collect();
    let mut running: HashMap<NodeId, Running> = HashMap::new();
    // Attempts that failed to start: handled with the next poll's results.
    let mut unstarted: Vec<Finished> = Vec::new();
    let (mut stopping, mut killed) = (false, false);
    loop {
        let n = interrupts.count();
        if n >= 1 && !stopping {
            stopping = true;
            summary.interrupted = true;
            let message = backend.interrupt();
            emit(&Event::Interrupted {
                hard: false,
                message,
            });
        }
        if n >= 2 && !killed {
            killed = true;
            let message = backend.cancel_all();
            emit(&Event::Interrupted {
                hard: true,
                message,
            });
        }
        for message in backend.notices() {
            emit(&Event::Notice { message });
        }
        while !stopping && !free.is_empty() && !ready.is_empty() {
            let (slot, id) = (
                free.pop().expect("free slot"),
                ready.pop_front().expect("ready node"),
            );
            status[id] = Status::Running;
            let device = backend.placement(slot);
            let submitted = backend.submit(id, slot, job(plan, id, opts));
            running.insert(id, Running { slot, attempt: 0 });
            match submitted {
                Ok(()) => emit(&Event::Started {
                    node: id,
                    label: plan.nodes[id].label.clone(),
                    device,
                    reason: match &states[id] {
                        State::Run(Reason::NoRecord) | State::Cached => None,
                        State::Run(r) => Some(r.to_string()),
                    },
                }),
                Err(error) => unstarted.push(Finished {
                    node: id,
                    outcome: JobOutcome::Failed {
                        error,
                        log: PathBuf::new(),
                    },
                }),
            }
        }
        if running.is_empty() && (ready.is_empty() || stopping) {
            break;
        }
        let wait = if unstarted.is_empty() { 100 } else { 0 };
        let mut finished = std::mem::take(&mut unstarted);
        finished.extend(backend.poll(Duration::from_millis(wait)));
        for Finished { node: id, outcome } in finished {
            let Some(mut attempt) = running.get(&id).map(|r| r.attempt) else {
                continue;
            };
            let node = &plan.nodes[id];
            let outcome = match outcome {
                JobOutcome::Failed { error, log } if attempt < opts.retries && !stopping => {
                    // Another attempt in the same slot.
                    emit(&Event::Retrying {
                        node: id,
                        label: node.label.clone(),
                        attempt: attempt + 1,
                        error,
                    });
                    attempt += 1;
                    let slot = running[&id].slot;
                    running.insert(id, Running { slot, attempt });
                    match backend.submit(id, slot, job(plan, id, opts)) {
                        Ok(()) => continue,
                        Err(error) => JobOutcome::Failed { error, log },
                    }
                }
                other => other,
            };
            let slot = running.remove(&id).expect("running node").slot;
            free.push(slot);
            match outcome {
                JobOutcome::Interrupted => {
                    // Not run: counted with the nodes that never started.
                    status[id] = Status::Ready;
                    continue;
                }
                JobOutcome::Done { seconds, computed } => {
                    if computed {
                        status[id] = Status::Done;
                        summary.done += 1;
                        let _ = cache.set_slot(&node.slot, &node.key);
                        cache.clear_failure(&node.key);
                        emit(&Event::Finished {
                            node: id,
                            label: node.label.clone(),
                            seconds,
                        });
                    } else {
                        status[id] = Status::Cached;
                        summary.cached += 1;
                        emit(&Event::Cached {
                            node: id,
                            label: node.label.clone(),
                        });
                    }
                }
                JobOutcome::Failed { error, log } => {
                    status[id] = Status::Failed;
                    summary.failed += 1;
                    if !killed {
                        let _ = cache.note_failure(
                            &node.key,
                            &Failure {
                                label: node.label.clone(),
                                error: error.clone(),
                                log: log.clone(),
                                attempts: attempt + 1,
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
                    evict_if_consumed(plan, &dependents, &status, u, &cache, emit);
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

/// The job of node `id`: its spec, with the run's options; the backend places it.
fn job(plan: &Plan, id: NodeId, opts: &RunOptions) -> JobSpec {
    let mut job = JobSpec::new(plan, &plan.nodes[id], &opts.results_dir);
    job.verify = opts.verify;
    job.checkpoint_minutes = opts.checkpoint_minutes;
    job
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::slots::Slot;
    use crate::manifest::Device;
    use crate::plan::{Node, StageKind};
    use std::collections::HashSet;

    /// An in-memory backend: every attempt ends at the next poll, failing while its node has
    /// failures left. Records submissions and the most jobs ever in flight.
    struct Fake {
        slots: Vec<Slot>,
        failures_left: HashMap<NodeId, u32>,
        not_computed: HashSet<NodeId>,
        in_flight: Vec<NodeId>,
        most_in_flight: usize,
        submitted: Vec<(NodeId, usize)>,
    }

    impl Fake {
        fn new(slots: usize) -> Self {
            Fake {
                slots: vec![
                    Slot {
                        device: Device::Cpu,
                        threads: 1
                    };
                    slots
                ],
                failures_left: HashMap::new(),
                not_computed: HashSet::new(),
                in_flight: vec![],
                most_in_flight: 0,
                submitted: vec![],
            }
        }
    }

    impl Backend for Fake {
        fn slots(&self) -> &[Slot] {
            &self.slots
        }
        fn submit(&mut self, node: NodeId, slot: usize, job: JobSpec) -> Result<(), String> {
            assert!(job.results_dir.is_absolute());
            self.submitted.push((node, slot));
            self.in_flight.push(node);
            self.most_in_flight = self.most_in_flight.max(self.in_flight.len());
            Ok(())
        }
        fn poll(&mut self, _timeout: Duration) -> Vec<Finished> {
            std::mem::take(&mut self.in_flight)
                .into_iter()
                .map(|node| {
                    let left = self.failures_left.entry(node).or_insert(0);
                    let outcome = if *left > 0 {
                        *left -= 1;
                        JobOutcome::Failed {
                            error: format!("node {node} failed"),
                            log: PathBuf::from("/log"),
                        }
                    } else {
                        JobOutcome::Done {
                            seconds: 0.0,
                            computed: !self.not_computed.contains(&node),
                        }
                    };
                    Finished { node, outcome }
                })
                .collect()
        }
        fn cancel_all(&mut self) -> String {
            String::new()
        }
    }

    /// a → b → c, a → d, and e alone.
    fn plan() -> Plan {
        let node = |i: usize, upstream: Vec<NodeId>| Node {
            kind: StageKind::Evaluate,
            key: format!("{i:064}"),
            label: format!("n{i}"),
            slot: format!("n{i}"),
            params: "{}".into(),
            upstream,
            inputs: vec![],
        };
        Plan {
            nodes: vec![
                node(0, vec![]),
                node(1, vec![0]),
                node(2, vec![1]),
                node(3, vec![0]),
                node(4, vec![]),
            ],
            ..Plan::default()
        }
    }

    fn go(backend: &mut Fake, retries: u32) -> (RunSummary, Vec<Event>) {
        let dir = tempfile::tempdir().unwrap();
        let plan = plan();
        let states = vec![State::Run(crate::cache::Reason::NoRecord); plan.nodes.len()];
        let opts = RunOptions {
            results_dir: dir.path().to_path_buf(),
            retries,
            keep_pruned: true,
            verify: false,
            checkpoint_minutes: 10,
        };
        let mut events = Vec::new();
        let summary = run(
            &plan,
            &states,
            backend,
            &opts,
            &Interrupts::default(),
            &mut |e: &Event| events.push(e.clone()),
        );
        (summary, events)
    }

    #[test]
    fn nodes_run_after_their_upstream_within_the_slots() {
        let mut b = Fake::new(2);
        let (summary, _) = go(&mut b, 0);
        assert_eq!((summary.done, summary.failed, summary.not_run), (5, 0, 0));
        assert_eq!(b.most_in_flight, 2);
        let order: Vec<NodeId> = b.submitted.iter().map(|(n, _)| *n).collect();
        let at = |n: NodeId| order.iter().position(|&m| m == n).unwrap();
        assert!(at(0) < at(1) && at(1) < at(2) && at(0) < at(3));
    }

    #[test]
    fn a_failure_skips_its_dependents_only_and_retries_reuse_the_slot() {
        let mut b = Fake::new(1);
        b.failures_left.insert(1, 5);
        let (summary, events) = go(&mut b, 0);
        assert_eq!(
            (summary.done, summary.failed, summary.skipped),
            (3, 1, 1),
            "{events:?}"
        );

        let mut b = Fake::new(3);
        b.failures_left.insert(1, 1);
        b.not_computed.insert(4);
        let (summary, events) = go(&mut b, 1);
        assert_eq!((summary.done, summary.cached, summary.failed), (4, 1, 0));
        let retried: Vec<_> = events
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    Event::Retrying {
                        node: 1,
                        attempt: 1,
                        ..
                    }
                )
            })
            .collect();
        assert_eq!(retried.len(), 1);
        let slots: HashSet<usize> = b
            .submitted
            .iter()
            .filter(|(n, _)| *n == 1)
            .map(|(_, s)| *s)
            .collect();
        assert_eq!(slots.len(), 1, "a retry stays in its slot");
    }
}
