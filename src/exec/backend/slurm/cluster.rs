//! The Slurm commands the backend runs (`sbatch`, `squeue`, `scontrol`, `scancel`, found on
//! `PATH`) and the parsing of what they print. Nothing here keeps state.
//!
//! Status comes from `squeue` (every state while the controller remembers the job, `MinJobAge`)
//! and, for a job that ended badly, `scontrol show job`; `sacct` is never needed, so clusters
//! without an accounting daemon work.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

/// A command that did not do its job: its one-line reason, and whether trying again later may
/// succeed (the controller busy or unreachable, a QOS or queue limit).
#[derive(Debug, Clone, PartialEq)]
pub struct CommandError {
    pub message: String,
    pub transient: bool,
}

/// Runs `program args`, returning stdout, or stderr's message (trimmed to one line).
fn run(program: &str, args: &[String]) -> Result<String, CommandError> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| CommandError {
            message: format!(
                "cannot run `{program}`: {e} (is Slurm's client installed and on PATH?)"
            ),
            transient: false,
        })?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let message = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let message = if message.is_empty() {
        format!("`{program}` exited with {}", out.status)
    } else {
        format!("{program}: {message}")
    };
    Err(CommandError {
        transient: is_transient(&message),
        message,
    })
}

/// Errors that go away by themselves: the controller is busy, restarting or unreachable, or a
/// limit on queued jobs (QOS, association, `MaxJobCount`) is reached until some jobs end.
pub fn is_transient(message: &str) -> bool {
    const TRANSIENT: [&str; 12] = [
        "socket timed out",
        "unable to contact slurm controller",
        "connection refused",
        "temporarily unable",
        "resource temporarily unavailable",
        "try again",
        "slurmctld is busy",
        "qosmaxsubmitjob",
        "maxsubmitjob",
        "job violates accounting/qos policy",
        "maxjobcount",
        "communication connection failure",
    ];
    let m = message.to_lowercase();
    TRANSIENT.iter().any(|t| m.contains(t))
}

/// Submits a batch script; returns the job id.
pub fn submit(script: &Path) -> Result<String, CommandError> {
    let out = run(
        "sbatch",
        &["--parsable".to_string(), script.display().to_string()],
    )?;
    // `--parsable` prints `JOBID` or `JOBID;CLUSTER`.
    let id = out.trim().split(';').next().unwrap_or_default().to_string();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CommandError {
            message: format!("sbatch printed no job id: {}", out.trim()),
            transient: false,
        });
    }
    Ok(id)
}

/// Asks the controller whether a job like `script` could ever run (partition, account, gres,
/// limits) without submitting it.
pub fn check_request(script: &Path) -> Result<(), CommandError> {
    run(
        "sbatch",
        &["--test-only".to_string(), script.display().to_string()],
    )
    .map(|_| ())
}

/// The cluster's `MaxArraySize` (array indices run from 0 to one less).
pub fn max_array_size() -> Result<u32, CommandError> {
    let out = run("scontrol", &["show".into(), "config".into()])?;
    Ok(parse_config_value(&out, "MaxArraySize")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1001))
}

fn parse_config_value<'a>(config: &'a str, name: &str) -> Option<&'a str> {
    config.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == name).then(|| v.trim())
    })
}

/// The nodes of `partition` (the default partition when `None`), as `sinfo` names them.
pub fn partition_nodes(partition: Option<&str>) -> Result<Vec<String>, CommandError> {
    let mut args = vec!["--noheader".to_string(), "--format=%N".to_string()];
    if let Some(p) = partition {
        args.push(format!("--partition={p}"));
    }
    let out = run("sinfo", &args)?;
    Ok(out
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect())
}

/// One job (or array task) as `squeue` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedJob {
    /// `JOBID` or `ARRAYJOBID_TASK`: how this backend names a job everywhere.
    pub id: String,
    pub state: String,
    pub reason: String,
    pub comment: String,
}

impl QueuedJob {
    /// Whether the job has ended (its slot in the queue is free).
    pub fn ended(&self) -> bool {
        !ACTIVE_STATES.contains(&self.state.as_str())
    }
}

/// States of a job that still occupies the queue.
const ACTIVE_STATES: [&str; 14] = [
    "PENDING",
    "CONFIGURING",
    "RUNNING",
    "COMPLETING",
    "SUSPENDED",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESIZING",
    "SIGNALING",
    "STAGE_OUT",
    "STOPPED",
    "RESV_DEL_HOLD",
    "SPECIAL_EXIT",
];

const SQUEUE_FORMAT: &str = "%F|%K|%A|%T|%r|%k";

/// Every job (in any state the controller still remembers) whose name is one of `names`, one line
/// per array task: one query, however many jobs.
pub fn queue(names: &[String]) -> Result<HashMap<String, QueuedJob>, CommandError> {
    if names.is_empty() {
        return Ok(HashMap::new());
    }
    let out = run(
        "squeue",
        &[
            "--noheader".into(),
            "--array".into(),
            "--states=all".into(),
            format!("--name={}", names.join(",")),
            format!("--format={SQUEUE_FORMAT}"),
        ],
    )?;
    Ok(parse_queue(&out))
}

fn parse_queue(out: &str) -> HashMap<String, QueuedJob> {
    out.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.trim().splitn(6, '|').collect();
            let [array, task, id, state, reason, comment] = f[..] else {
                return None;
            };
            let id = if task == "N/A" || task.is_empty() {
                id.to_string()
            } else {
                format!("{array}_{task}")
            };
            // A state may carry a suffix (`CANCELLED by 0`).
            let state = state
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            Some((
                id.clone(),
                QueuedJob {
                    id,
                    state,
                    reason: reason.to_string(),
                    comment: comment.to_string(),
                },
            ))
        })
        .collect()
}

/// What `scontrol show job` says about one ended job.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobDetail {
    pub state: String,
    pub reason: String,
    /// `EXIT:SIGNAL`.
    pub exit_code: String,
    pub nodes: String,
}

pub fn job_detail(id: &str) -> Option<JobDetail> {
    let out = run(
        "scontrol",
        &["--oneliner".into(), "show".into(), "job".into(), id.into()],
    )
    .ok()?;
    Some(parse_job_detail(&out))
}

fn parse_job_detail(out: &str) -> JobDetail {
    let field = |name: &str| {
        out.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .unwrap_or_default()
            .to_string()
    };
    JobDetail {
        state: field("JobState"),
        reason: field("Reason"),
        exit_code: field("ExitCode"),
        nodes: field("NodeList"),
    }
}

/// Cancels jobs (array tasks by `ID_TASK`); jobs that already ended are no error.
pub fn cancel(ids: &[String]) -> Result<(), CommandError> {
    if ids.is_empty() {
        return Ok(());
    }
    // Hundreds of ids per call at most: the command line stays short.
    for chunk in ids.chunks(500) {
        match run("scancel", chunk) {
            Err(e) if !e.message.contains("Invalid job id") => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squeue_lines_become_jobs_named_as_the_backend_names_them() {
        let out = "3|0|4|COMPLETED|None|key0\n\
                   3|3|3|PENDING|Resources|batch-1\n\
                   12|N/A|12|RUNNING|None|abc\n\
                   13|N/A|13|CANCELLED by 0|None|(null)\n";
        let q = parse_queue(out);
        assert_eq!(q.len(), 4);
        assert_eq!(q["3_0"].state, "COMPLETED");
        assert!(q["3_0"].ended());
        assert_eq!(q["3_3"].reason, "Resources");
        assert!(!q["3_3"].ended());
        assert_eq!(q["3_3"].comment, "batch-1");
        assert!(!q["12"].ended());
        assert_eq!(q["13"].state, "CANCELLED");
    }

    #[test]
    fn scontrol_fields_and_config_values() {
        let d = parse_job_detail(
            "JobId=1 JobName=oom.sh UserId=root(0) JobState=FAILED Reason=JobLaunchFailure \
             Dependency=(null) ExitCode=0:9 NodeList=localhost",
        );
        assert_eq!(d.state, "FAILED");
        assert_eq!(d.exit_code, "0:9");
        assert_eq!(d.nodes, "localhost");
        assert_eq!(d.reason, "JobLaunchFailure");
        let config = "KillWait                = 2 sec\nMaxArraySize            = 10001\n";
        assert_eq!(parse_config_value(config, "MaxArraySize"), Some("10001"));
    }

    #[test]
    fn transient_errors_are_told_apart_from_refusals() {
        for t in [
            "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation",
            "sbatch: error: Batch job submission failed: Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)",
            "squeue: error: Unable to contact slurm controller (connect failure)",
            "sbatch: error: Slurm temporarily unable to accept job, sleeping and retrying",
        ] {
            assert!(is_transient(t), "{t}");
        }
        for p in [
            "sbatch: error: Batch job submission failed: Invalid partition name specified",
            "sbatch: error: Batch job submission failed: Invalid generic resource (gres) specification",
            "sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified",
        ] {
            assert!(!is_transient(p), "{p}");
        }
    }
}
