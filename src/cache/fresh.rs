//! Freshness: for every node of a plan, is it cached, and if not, *why* must it run.

use super::record::Record;
use super::store::{Cache, Lookup};
use crate::plan::{NodeId, Plan};
use rayon::prelude::*;
use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum State {
    Cached,
    Run(Reason),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    /// Never computed (or its record was garbage-collected).
    NoRecord,
    ParamChanged(Vec<String>),
    UpstreamChanged(Vec<String>),
    InputChanged(Vec<String>),
    VersionBumped {
        from: u32,
        to: u32,
    },
    /// The entry exists but cannot be trusted.
    Corrupt(String),
    /// Transient artifacts were dropped and a new downstream stage needs them.
    Evicted,
    /// Computed from an entry found corrupt (the label of that entry): its result cannot be
    /// trusted either.
    UpstreamCorrupt(String),
    /// The last attempt failed.
    Failed {
        error: String,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NoRecord => write!(f, "no record"),
            Reason::ParamChanged(p) => write!(f, "param changed: {}", p.join(", ")),
            Reason::UpstreamChanged(k) => write!(f, "upstream changed: {}", k.join(", ")),
            Reason::InputChanged(r) => write!(f, "input file changed: {}", r.join(", ")),
            Reason::VersionBumped { from, to } => write!(f, "stage version bumped ({from} → {to})"),
            Reason::Corrupt(why) => write!(f, "corrupt entry: {why}"),
            Reason::Evicted => write!(
                f,
                "its weights were dropped by the retention policy (keep_pruned = false) and are needed again"
            ),
            Reason::UpstreamCorrupt(label) => {
                write!(f, "computed from a corrupt entry ({label})")
            }
            Reason::Failed { error } => write!(f, "failed before: {error}"),
        }
    }
}

/// The state of every node. `verify` checks artifact checksums as well as sizes; `explain`
/// compares each missing node with the last record of its slot to say why it must run (without
/// it, missing nodes report [`Reason::NoRecord`] and cost no extra I/O).
pub fn freshness(cache: &Cache, plan: &Plan, verify: bool, explain: bool) -> Vec<State> {
    // One directory listing instead of a failed lookup per missing node.
    let present = cache.entry_keys();
    let lookups: Vec<Lookup> = plan
        .nodes
        .par_iter()
        .map(|n| {
            if present.contains(&n.key) {
                cache.lookup(&n.key, verify)
            } else {
                Lookup::Missing
            }
        })
        .collect();
    // Upstream first: whatever was computed from a corrupt entry cannot be trusted either.
    let mut tainted: Vec<Option<String>> = vec![None; plan.nodes.len()];
    for (id, node) in plan.nodes.iter().enumerate() {
        tainted[id] = node.upstream.iter().find_map(|&u| match &lookups[u] {
            Lookup::Corrupt(_) => Some(plan.nodes[u].label.clone()),
            _ => tainted[u].clone(),
        });
    }
    let dependents = plan.dependents();
    let mut states: Vec<Option<State>> = vec![None; plan.nodes.len()];
    // Dependents come later in creation order, so a reverse pass sees them first (a dropped
    // entry is recomputed only when a stage that runs needs it).
    for id in (0..plan.nodes.len()).rev() {
        let state = match (&lookups[id], &tainted[id]) {
            (Lookup::Corrupt(why), _) => State::Run(Reason::Corrupt(why.clone())),
            (Lookup::Done(_) | Lookup::Evicted(_), Some(from)) => {
                State::Run(Reason::UpstreamCorrupt(from.clone()))
            }
            (Lookup::Done(_), None) => State::Cached,
            (Lookup::Evicted(_), None) => {
                let needed = dependents[id]
                    .iter()
                    .any(|&d| matches!(states[d], Some(State::Run(_))));
                if needed {
                    State::Run(Reason::Evicted)
                } else {
                    State::Cached
                }
            }
            (Lookup::Missing, _) if explain => State::Run(reason(cache, plan, id)),
            (Lookup::Missing, _) => State::Run(Reason::NoRecord),
        };
        states[id] = Some(state);
    }
    states
        .into_iter()
        .map(|s| s.expect("every node visited"))
        .collect()
}

/// Compares the node with the last record computed for the same logical slot.
fn reason(cache: &Cache, plan: &Plan, id: NodeId) -> Reason {
    let node = &plan.nodes[id];
    if let Some(f) = cache.failure(&node.key) {
        return Reason::Failed { error: f.error };
    }
    let Some(previous) = cache.slot(&node.slot).filter(|k| *k != node.key) else {
        return Reason::NoRecord;
    };
    let record: Record = match cache.lookup(&previous, false) {
        Lookup::Done(r) | Lookup::Evicted(r) => *r,
        _ => return Reason::NoRecord,
    };
    if record.version != node.kind.version() {
        return Reason::VersionBumped {
            from: record.version,
            to: node.kind.version(),
        };
    }
    let mut changed = Vec::new();
    diff_json("", &record.params, &node.params_json(), &mut changed);
    if !changed.is_empty() {
        return Reason::ParamChanged(changed);
    }
    let roles: Vec<String> = node
        .inputs
        .iter()
        .filter(|i| {
            !record
                .inputs
                .iter()
                .any(|r| r.role == i.role && r.fingerprint == i.fingerprint)
        })
        .map(|i| i.role.clone())
        .collect();
    if !roles.is_empty() {
        return Reason::InputChanged(roles);
    }
    let kinds: Vec<String> = node
        .upstream
        .iter()
        .map(|&u| &plan.nodes[u])
        .filter(|u| !record.upstream.iter().any(|r| r.key == u.key))
        .map(|u| u.kind.name().to_string())
        .collect();
    if !kinds.is_empty() {
        return Reason::UpstreamChanged(kinds);
    }
    Reason::NoRecord
}

/// Dotted paths where two JSON values differ, with old → new values.
fn diff_json(path: &str, old: &serde_json::Value, new: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value::Object;
    match (old, new) {
        (Object(a), Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => diff_json(&p, x, y, out),
                    (Some(x), None) => out.push(format!("{p} {x} → (unset)")),
                    (None, Some(y)) => out.push(format!("{p} (unset) → {y}")),
                    (None, None) => {}
                }
            }
        }
        (a, b) if a != b => out.push(format!("{path} {a} → {b}")),
        _ => {}
    }
}
