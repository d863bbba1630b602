//! `orchestrate status`: per stage, done / failed (with log path) / running / pending.

use super::{CliError, exit, load};
use crate::cache::{State, freshness};
use std::path::Path;

pub fn run(results: &Path, manifest: &Path, all: bool) -> Result<i32, CliError> {
    let l = load(results, manifest, false)?;
    let states = freshness(&l.cache, &l.plan, false, false);
    let mut counts = [0usize; 4];
    let mut lines = Vec::new();
    for (n, s) in l.plan.nodes.iter().zip(&states) {
        let (i, text) = match s {
            State::Cached => (0, format!("done     {}", n.label)),
            State::Run(_) => match (l.cache.failure(&n.key), l.cache.try_lock(&n.key)) {
                (_, Ok(None)) => (2, format!("running  {}", n.label)),
                (Some(f), _) => (
                    1,
                    format!(
                        "failed   {}\n         {}\n         log: {}",
                        n.label,
                        f.error,
                        f.log.display()
                    ),
                ),
                (None, _) => (3, format!("pending  {}", n.label)),
            },
        };
        counts[i] += 1;
        if all || i != 0 {
            lines.push(text);
        }
    }
    println!(
        "experiment {}: {} stages — {} done, {} failed, {} running, {} pending",
        l.exp.name,
        l.plan.nodes.len(),
        counts[0],
        counts[1],
        counts[2],
        counts[3]
    );
    for line in lines {
        println!("{line}");
    }
    Ok(if counts[1] > 0 {
        exit::STAGE_FAILED
    } else {
        exit::OK
    })
}
