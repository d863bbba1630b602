//! Why a Slurm job ended without publishing its entry, in one line: the kind of failure (out of
//! memory, time limit, node failure, cancelled, preempted, exit code), in Slurm's and the
//! stage's words, and the setting to change.

use super::cluster::JobDetail;
use crate::exec::backend::last_error_line;
use crate::manifest::types::SlurmRequest;
use crate::plan::StageKind;
use std::path::Path;

/// What is known about a job that ended without publishing.
pub struct Failure<'a> {
    pub job: &'a str,
    pub kind: StageKind,
    /// Its last state in `squeue` (none: the controller no longer knows it).
    pub state: Option<&'a str>,
    /// Its state at the query before it ended (or vanished).
    pub last_seen: &'a str,
    pub detail: Option<&'a JobDetail>,
    pub log: &'a str,
    pub request: &'a SlurmRequest,
    pub results_dir: &'a Path,
}

/// One line: which kind of failure, in Slurm's and the stage's words, and what to change.
pub fn describe_failure(f: &Failure) -> String {
    let state = f
        .detail
        .map(|d| d.state.as_str())
        .filter(|s| !s.is_empty())
        .or(f.state)
        .unwrap_or("");
    let kind = f.kind.name();
    let setting = |key: &str, value: &Option<String>| match value {
        Some(v) => format!("{key} = \"{v}\""),
        None => format!("the cluster's default {key}"),
    };
    let out_of_memory = state == "OUT_OF_MEMORY"
        || ["Exceeded job memory limit", "oom-kill", "oom_kill"]
            .iter()
            .any(|m| f.log.contains(m));
    let nodes = f
        .detail
        .map(|d| d.nodes.as_str())
        .filter(|n| !n.is_empty() && *n != "(null)")
        .unwrap_or("its node");
    if out_of_memory {
        return format!(
            "out of memory: Slurm job {} exceeded its memory ({}); raise `mem` in [resources.slurm.{kind}] or [resources.slurm]",
            f.job,
            setting("mem", &f.request.mem)
        );
    }
    let resumes = if matches!(
        f.kind,
        StageKind::Finetune | StageKind::Retrain | StageKind::Prune
    ) {
        "; a training stage resumes from its last checkpoint"
    } else {
        ""
    };
    match state {
        "TIMEOUT" => format!(
            "time limit: Slurm stopped job {} at its time limit ({}); raise `time` in [resources.slurm.{kind}] or [resources.slurm]{resumes}",
            f.job,
            setting("time", &f.request.time)
        ),
        "NODE_FAIL" | "BOOT_FAIL" => format!(
            "node failure: Slurm job {} ended with {state} on {nodes}; run again to resume{resumes}",
            f.job
        ),
        "CANCELLED" => format!(
            "cancelled: Slurm job {} was cancelled (scancel, or an administrator); run again to resume",
            f.job
        ),
        "PREEMPTED" | "DEADLINE" => format!(
            "{}: Slurm job {} ended with {state}; run again to resume{resumes}",
            state.to_lowercase(),
            f.job
        ),
        "COMPLETED" => format!(
            "Slurm job {} completed on {nodes} but published no entry: is {} on a file system the node shares?",
            f.job,
            f.results_dir.display()
        ),
        _ => {
            let exit = f
                .detail
                .map(|d| d.exit_code.as_str())
                .filter(|c| !c.is_empty() && *c != "0:0");
            let slurm = match (state, exit) {
                ("", _) => format!("Slurm job {}", f.job),
                (s, Some(c)) => format!("Slurm job {} {s}, exit code {c}", f.job),
                (s, None) => format!("Slurm job {} {s}", f.job),
            };
            match last_error_line(f.log) {
                Some(reason) => format!("{reason} ({slurm})"),
                // A pending job (or array task) that is cancelled leaves no trace in the queue.
                None if state.is_empty() && f.last_seen == "PENDING" => format!(
                    "cancelled: Slurm job {} left the queue before it started (scancel, or an administrator); run again to resume",
                    f.job
                ),
                None if state.is_empty() => format!(
                    "{slurm} left the queue without publishing its entry (the controller no longer reports its state)"
                ),
                None => format!("{slurm} without publishing its entry"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure<'a>(
        state: Option<&'a str>,
        detail: Option<&'a JobDetail>,
        log: &'a str,
        request: &'a SlurmRequest,
    ) -> String {
        describe_failure(&Failure {
            job: "41_3",
            kind: StageKind::Retrain,
            state,
            last_seen: "RUNNING",
            detail,
            log,
            request,
            results_dir: Path::new("/shared/results"),
        })
    }

    #[test]
    fn failures_are_classified_with_what_to_change() {
        let request = SlurmRequest {
            mem: Some("100M".into()),
            ..SlurmRequest::default()
        };
        let oom_log = "slurmstepd-localhost: error: Exceeded job memory limit\n";
        let failed = JobDetail {
            state: "FAILED".into(),
            exit_code: "0:9".into(),
            ..Default::default()
        };
        let e = failure(Some("FAILED"), Some(&failed), oom_log, &request);
        assert!(e.starts_with("out of memory: Slurm job 41_3"), "{e}");
        assert!(
            e.contains("mem = \"100M\"") && e.contains("[resources.slurm.retrain]"),
            "{e}"
        );

        let e = failure(Some("TIMEOUT"), None, "", &request);
        assert!(
            e.starts_with("time limit:") && e.contains("the cluster's default time"),
            "{e}"
        );
        assert!(e.contains("resumes from its last checkpoint"), "{e}");

        let node = JobDetail {
            state: "NODE_FAIL".into(),
            nodes: "gpu17".into(),
            ..Default::default()
        };
        let e = failure(Some("NODE_FAIL"), Some(&node), "", &request);
        assert!(e.starts_with("node failure:") && e.contains("gpu17"), "{e}");

        let e = failure(Some("CANCELLED"), None, "", &request);
        assert!(e.starts_with("cancelled:"), "{e}");

        let exit = JobDetail {
            state: "FAILED".into(),
            exit_code: "2:0".into(),
            ..Default::default()
        };
        let e = failure(
            Some("FAILED"),
            Some(&exit),
            "stage retrain x\nerror: dataset /d/x is corrupt\n",
            &request,
        );
        assert_eq!(
            e,
            "dataset /d/x is corrupt (Slurm job 41_3 FAILED, exit code 2:0)"
        );

        let e = failure(None, None, "", &request);
        assert!(e.contains("no longer reports its state"), "{e}");
        let vanished = describe_failure(&Failure {
            job: "41_3",
            kind: StageKind::Evaluate,
            state: None,
            last_seen: "PENDING",
            detail: None,
            log: "",
            request: &request,
            results_dir: Path::new("/r"),
        });
        assert!(
            vanished.starts_with("cancelled: Slurm job 41_3 left the queue before it started"),
            "{vanished}"
        );
        let e = failure(Some("COMPLETED"), None, "", &request);
        assert!(e.contains("/shared/results") && e.contains("shares"), "{e}");
    }
}
