//! The batch script of one submission: `n` stages of one kind, as a job array when `n > 1`.
//! Task `i` computes the job spec on line `i + 1` of a list file, through the same
//! `orchestrate stage <job.json>` entry the local backend runs. Everything Slurm is asked for is
//! an `#SBATCH` line, so a script can be read, and resubmitted by hand, on its own.

use crate::manifest::types::SlurmRequest;
use std::path::Path;

/// One submission's contents.
pub struct Batch<'a> {
    /// Job name: the run id, so every job of a run is found with one `squeue --name`.
    pub run_id: &'a str,
    /// The job's comment: the stage key of a single stage, the batch token of an array (each
    /// task then writes its own key there when it starts).
    pub comment: &'a str,
    pub kind: &'a str,
    pub request: &'a SlurmRequest,
    pub tasks: usize,
    /// One job-spec path per line.
    pub list: &'a Path,
    pub log_dir: &'a Path,
    pub exe: &'a Path,
    /// Intra-op threads of each stage (its `cpus_per_task`).
    pub threads: u32,
    /// Extra environment every stage gets (OpenMP's spin policy).
    pub env: &'a [(&'a str, &'a str)],
}

/// The log of job `job` (`ID` or `ID_TASK`), as the script's `--output` names it.
pub fn log_name(kind: &str, job: &str) -> String {
    format!("{kind}-{job}.log")
}

pub fn script(b: &Batch) -> String {
    let r = b.request;
    let mut s = String::from("#!/bin/bash\n");
    let mut directive = |option: String| {
        s.push_str("#SBATCH ");
        s.push_str(&option);
        s.push('\n');
    };
    directive(format!("--job-name={}", b.run_id));
    directive(format!("--comment={}", b.comment));
    let output = if b.tasks > 1 {
        directive(format!("--array=0-{}", b.tasks - 1));
        format!("{}-%A_%a.log", b.kind)
    } else {
        format!("{}-%j.log", b.kind)
    };
    directive(format!("--output={}", b.log_dir.join(output).display()));
    // A requeued job (node failure, preemption) appends to its log instead of erasing it.
    directive("--open-mode=append".into());
    for (option, value) in [
        ("partition", &r.partition),
        ("account", &r.account),
        ("time", &r.time),
        ("mem", &r.mem),
    ] {
        if let Some(v) = value {
            directive(format!("--{option}={v}"));
        }
    }
    directive(format!("--cpus-per-task={}", b.threads));
    if let Some(g) = &r.gres {
        directive(format!("--gres={g}"));
    }
    for e in &r.extra {
        directive(e.clone());
    }
    let noun = if b.tasks == 1 { "stage" } else { "stages" };
    s.push_str(&format!(
        "# orchestrate: {n} {kind} {noun} of run {run}. Task i computes the job spec on line i + 1\n\
         # of the list; every path is absolute, so the results directory must be shared with the nodes.\n",
        n = b.tasks,
        kind = b.kind,
        run = b.run_id,
    ));
    s.push_str(&format!("list={}\n", quote(&b.list.display().to_string())));
    s.push_str(
        "spec=$(sed -n \"$((${SLURM_ARRAY_TASK_ID:-0} + 1))p\" \"$list\" 2>/dev/null)\n\
         if [ -z \"$spec\" ] || [ ! -r \"$spec\" ]; then\n\
         \x20 echo \"error: the job spec of task ${SLURM_ARRAY_TASK_ID:-0} (${spec:-listed in $list}) is not readable on $(hostname): the results directory must be on a file system shared with the machine running orchestrate\" >&2\n\
         \x20 exit 2\n\
         fi\n",
    );
    if b.tasks > 1 {
        s.push_str(
            "# The task's stage key in its own comment: `squeue -o %k` shows what each task computes.\n\
             scontrol update JobId=\"${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}\" Comment=\"$(basename \"$spec\" .json)\" >/dev/null 2>&1 || true\n",
        );
    }
    let mut env = vec![
        ("OMP_NUM_THREADS", b.threads.to_string()),
        ("RAYON_NUM_THREADS", b.threads.to_string()),
    ];
    env.extend(b.env.iter().map(|(k, v)| (*k, v.to_string())));
    if !r.wants_gpu() {
        // A CPU stage never touches a GPU the node may have.
        env.push(("CUDA_VISIBLE_DEVICES", String::new()));
    }
    for (k, v) in env {
        s.push_str(&format!("export {k}={}\n", quote(&v)));
    }
    s.push_str(&format!(
        "exec {} stage \"$spec\"\n",
        quote(&b.exe.display().to_string())
    ));
    s
}

/// `text` as one shell word.
fn quote(text: &str) -> String {
    if !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:,=@%".contains(&b))
    {
        return text.to_string();
    }
    format!("'{}'", text.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// Compares with `tests/golden/slurm/<name>`; `ORCHESTRATE_BLESS=1` rewrites the file.
    fn golden(name: &str, text: &str) {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden/slurm")
            .join(name);
        if std::env::var_os("ORCHESTRATE_BLESS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (ORCHESTRATE_BLESS=1 writes it)", path.display()));
        assert_eq!(text, want, "{name} differs from its golden file");
    }

    fn batch<'a>(request: &'a SlurmRequest, tasks: usize, kind: &'a str) -> Batch<'a> {
        Batch {
            run_id: "20261130T184000Z-4242",
            comment: if tasks > 1 {
                "20261130T184000Z-4242.3"
            } else {
                "6f1d0c2b6a55e0c1d1b0a4c7f4e3d2c1b0a99887766554433221100ffeeddcc"
            },
            kind,
            request,
            tasks,
            list: Path::new("/shared/results/runs/20261130T184000Z-4242/slurm/3.jobs"),
            log_dir: Path::new("/shared/results/runs/20261130T184000Z-4242/logs"),
            exe: Path::new("/opt/orchestrate/bin/orchestrate"),
            threads: request.cpus_per_task.unwrap_or(1),
            env: &[("GOMP_SPINCOUNT", "10000")],
        }
    }

    #[test]
    fn a_gpu_array_asks_for_everything_the_manifest_says() {
        let request = SlurmRequest {
            partition: Some("gpu".into()),
            account: Some("lab".into()),
            gres: Some("gpu:1".into()),
            time: Some("4:00:00".into()),
            mem: Some("32G".into()),
            cpus_per_task: Some(8),
            extra: vec!["--qos=normal".into(), "--constraint=a100|h100".into()],
        };
        golden("prune-array.sh", &script(&batch(&request, 120, "prune")));
    }

    #[test]
    fn a_single_cpu_stage_with_the_cluster_defaults() {
        let request = SlurmRequest::default();
        golden(
            "evaluate-single.sh",
            &script(&batch(&request, 1, "evaluate")),
        );
    }

    #[test]
    fn words_are_quoted_for_the_shell() {
        assert_eq!(quote("/a/b-c_d.json"), "/a/b-c_d.json");
        assert_eq!(quote("/my results/x"), "'/my results/x'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote(""), "''");
    }
}
