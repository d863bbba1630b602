//! `orchestrate plan`: counts per stage kind, cached vs to run; `--explain` gives each node's
//! reason; `--format json` prints the DAG.

use super::{CliError, Format, counts_by_kind, exit, load};
use crate::cache::{State, freshness};
use crate::exec::backend::slurm::results_dir_warnings;
use crate::manifest::types::BackendKind;
use serde_json::json;
use std::path::Path;

pub fn run(
    results: &Path,
    manifest: &Path,
    explain: bool,
    format: Format,
    verify: bool,
) -> Result<i32, CliError> {
    let l = load(results, manifest, verify)?;
    let states = freshness(&l.cache, &l.plan, verify, explain || format == Format::Json);
    match format {
        Format::Json => {
            let nodes: Vec<_> = l
                .plan
                .nodes
                .iter()
                .zip(&states)
                .enumerate()
                .map(|(id, (n, s))| {
                    json!({
                        "id": id,
                        "kind": n.kind.name(),
                        "key": n.key,
                        "label": n.label,
                        "params": n.params_json(),
                        "upstream": n.upstream,
                        "inputs": n.inputs.iter().map(|i| json!({"role": i.role, "path": i.path, "fingerprint": i.fingerprint})).collect::<Vec<_>>(),
                        "cached": *s == State::Cached,
                        "reason": match s { State::Cached => None, State::Run(r) => Some(r.to_string()) },
                    })
                })
                .collect();
            let doc = json!({ "experiment": l.exp.name, "grid_points": l.exp.points.len(), "nodes": nodes });
            println!("{}", serde_json::to_string_pretty(&doc).expect("json"));
        }
        Format::Text => {
            println!(
                "experiment {}: {} grid points → {} stages",
                l.exp.name,
                l.exp.points.len(),
                l.plan.nodes.len()
            );
            println!("{:<22} {:>8} {:>8}", "stage", "cached", "to run");
            let (mut tc, mut tr) = (0, 0);
            for (kind, cached, run) in counts_by_kind(&l.plan, &states) {
                println!("{:<22} {:>8} {:>8}", kind.name(), cached, run);
                tc += cached;
                tr += run;
            }
            println!("{:<22} {:>8} {:>8}", "total", tc, tr);
            if l.exp.resources.backend == BackendKind::Slurm {
                let dir = std::path::absolute(results).unwrap_or_else(|_| results.to_path_buf());
                println!(
                    "backend: Slurm; results directory {} (every node running a stage must see it)",
                    dir.display()
                );
                for warning in results_dir_warnings(&dir, &l.exp.resources.slurm) {
                    println!("warning: {warning}");
                }
            }
            if explain {
                println!();
                for (n, s) in l.plan.nodes.iter().zip(&states) {
                    match s {
                        State::Cached => println!("  cached  {}", n.label),
                        State::Run(reason) => println!("  run     {} — {reason}", n.label),
                    }
                }
            }
        }
    }
    Ok(exit::OK)
}
