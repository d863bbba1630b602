//! `orchestrate stage <job.json>`: computes one node and publishes its cache entry. This is what
//! `run` starts in a child process per stage; a cluster backend calls it the same way.

use super::{CliError, exit};
use std::path::Path;

pub fn run(job_path: &Path) -> Result<i32, CliError> {
    let job = crate::stages::read_job(job_path)?;
    println!("stage {} ({}) on {}", job.label, job.key, job.device);
    let record = crate::stages::run(&job)?;
    println!(
        "published {} in {:.2}s: {}",
        record.key, record.timing.seconds, record.metrics
    );
    Ok(exit::OK)
}
