//! `orchestrate stage <job.json>`: computes one node and publishes its cache entry. This is what
//! `run` starts in a child process per stage; a cluster backend calls it the same way.

use super::{CliError, exit, io_context};
use std::path::Path;

pub fn run(job_path: &Path) -> Result<i32, CliError> {
    let job = crate::stages::read_job(job_path)?;
    // Held while the stage computes, as `run` holds it: `gc` waits for stages whose driver is
    // gone too (a Slurm job outlives a killed driver).
    let _held = crate::cache::Cache::new(&job.results_dir).lock_for_run()?;
    println!("stage {} ({}) on {}", job.label, job.key, job.device);
    let published = crate::stages::run(&job)?;
    let record = &published.record;
    if published.computed {
        println!(
            "published {} in {:.2}s: {}",
            record.key, record.timing.seconds, record.metrics
        );
    } else {
        println!("{} was published by another run meanwhile", record.key);
    }
    if let Some(path) = &job.outcome {
        let text = serde_json::json!({ "computed": published.computed }).to_string();
        crate::util::fsx::write_atomic(path, text.as_bytes())
            .map_err(io_context(format!("cannot write {}", path.display())))?;
    }
    Ok(exit::OK)
}
