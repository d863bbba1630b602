//! The Slurm backend against a live single-node cluster (`make slurm`: controller, compute
//! daemon and munge on localhost, from Debian's packages). Without one these tests say so and
//! pass; with `ORCHESTRATE_REQUIRE_SLURM` set (CI) a missing cluster fails them. They share one
//! cluster, so they run one at a time.

mod common;
use common::*;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

static CLUSTER: Mutex<()> = Mutex::new(());

/// The cluster, held by this test; `None` (after a loud note) when there is none.
fn cluster() -> Option<MutexGuard<'static, ()>> {
    let guard = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let name = Command::new("scontrol")
        .args(["show", "config"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("ClusterName"))
                .map(|l| l.split('=').nth(1).unwrap_or_default().trim().to_string())
        });
    match name.as_deref() {
        Some("orchestrate-test") => {}
        other => {
            let why = match other {
                Some(n) => format!("the cluster here is `{n}`, not the test cluster"),
                None => "no Slurm cluster answers".to_string(),
            };
            if std::env::var_os("ORCHESTRATE_REQUIRE_SLURM").is_some() {
                panic!("ORCHESTRATE_REQUIRE_SLURM is set but {why} (`make slurm` starts one)");
            }
            eprintln!("SKIPPED Slurm backend test: {why} (`make slurm` starts one)");
            return None;
        }
    }
    node_state("resume");
    wait_until(Duration::from_secs(60), "the node to be idle", || {
        let s = sh("sinfo", &["-h", "-o", "%T"]);
        s.trim() == "idle"
    });
    Some(guard)
}

fn sh(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn node_state(state: &str) {
    let _ = Command::new("scontrol")
        .args([
            "update",
            "nodename=localhost",
            &format!("state={state}"),
            "reason=orchestrate-test",
        ])
        .output();
}

fn wait_until(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A simulated sweep through Slurm: 1 model × 1 dataset × `methods` × 2 sparsities, one
/// calibration size.
fn sweep(name: &str, methods: &str, slurm: &str) -> String {
    format!(
        r#"
[experiment]
name = "{name}"

[models.a]
test = true

[datasets.d1]
kind = "synthetic"
classes = 4

[grid]
model = ["a"]
dataset = ["d1"]
method = [{methods}]
sparsity = [0.5, 0.7]
calibration_size = [8]

[resources]
backend = "slurm"

[resources.slurm]
mem = "300M"
{slurm}
"#
    )
}

/// The ledger: key → entry.
fn ledger(p: &Project) -> BTreeMap<String, serde_json::Value> {
    std::fs::read(p.results().join("slurm/ledger.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Slurm's state of every job in the ledger that the controller knows.
fn job_states(p: &Project) -> HashMap<String, String> {
    let runs: Vec<String> = ledger(p)
        .values()
        .map(|e| e["run"].as_str().unwrap().to_string())
        .collect();
    if runs.is_empty() {
        return HashMap::new();
    }
    sh(
        "squeue",
        &[
            "-h",
            "-r",
            "--states=all",
            &format!("--name={}", runs.join(",")),
            "-o",
            "%F|%K|%A|%T",
        ],
    )
    .lines()
    .map(|l| {
        let f: Vec<&str> = l.split('|').collect();
        let id = if f[1] == "N/A" {
            f[2].to_string()
        } else {
            format!("{}_{}", f[0], f[1])
        };
        (id, f[3].to_string())
    })
    .collect()
}

/// The binary with the project's environment and another results directory.
fn in_results(p: &Project, results: &str, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .arg("--results")
        .arg(p.path().join(results))
        .current_dir(p.path())
        .env("ORCHESTRATE_TEST_COMPUTE_LOG", p.compute_log())
        .env("ORCHESTRATE_TEST_WORK_MS", "5");
    c
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Every key computed at most once (the simulated stages log each computation).
fn assert_computed_once(p: &Project) {
    let keys = p.computed();
    let mut seen = HashMap::new();
    for k in &keys {
        *seen.entry(k).or_insert(0) += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "computed more than once: {twice:?}");
}

#[test]
fn a_sweep_runs_through_slurm_in_arrays_and_resumes_from_the_cache() {
    let Some(_cluster) = cluster() else { return };
    let p = Project::new();
    p.write(
        "s.toml",
        &sweep("s", r#""magnitude", "wanda", "sparsegpt""#, ""),
    );
    let plan = p.run(&["plan", "s.toml"]);
    assert!(stdout(&plan).contains("backend: Slurm"), "{}", text(&plan));
    let out = p.run(&["run", "s.toml"]);
    assert!(out.status.success(), "{}", text(&out));
    let log = stdout(&out);
    // 1 calibration, 6 prunes, 7 evaluations.
    assert!(log.contains("14 done, 0 cached, 0 failed"), "{log}");
    assert_eq!(p.computed().len(), 14);
    assert_computed_once(&p);
    // The four prunes that read the calibration set were ready together: one array of four.
    let run_dir = std::fs::read_dir(p.results().join("runs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let scripts: Vec<String> = std::fs::read_dir(run_dir.join("slurm"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sh"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert!(
        scripts
            .iter()
            .any(|s| s.contains("--array=0-3") && s.contains("4 prune stages")),
        "{scripts:?}"
    );
    // Every entry of the ledger names its job, attempt 1, ended COMPLETED.
    let l = ledger(&p);
    assert_eq!(l.len(), 14);
    for e in l.values() {
        assert_eq!(e["attempt"], 1, "{e}");
        assert_eq!(e["state"], "ended", "{e}");
        assert_eq!(e["slurm_state"], "COMPLETED", "{e}");
        assert!(Path::new(e["log"].as_str().unwrap()).is_file(), "{e}");
    }
    let again = p.run(&["run", "s.toml"]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        stdout(&again).contains("0 done, 14 cached"),
        "{}",
        text(&again)
    );
    let status = p.run(&["status", "s.toml"]);
    assert!(
        stdout(&status).contains("14 done, 0 failed, 0 running, 0 queued, 0 pending"),
        "{}",
        text(&status)
    );
}

/// The demo's model, data and methods, reduced to a few minutes on two cores.
const REDUCED_DEMO: &str = r#"
[experiment]
name = "demo"

[models.tiny]
path = "models/tiny"

[datasets.shapes]
kind = "synthetic"
classes = 10
train_size = 600
test_size = 200
image_size = 48
seed = 0

[grid]
model = ["tiny"]
dataset = ["shapes"]
method = ["magnitude", "wanda"]
sparsity = [0.5]
calibration_size = [32]

[[grid.include]]
method = "fisher"
sparsity = 0.5

[methods.fisher]
num_samples = 64

[stages.finetune]
steps = 30
batch_size = 32
lr = 2e-3
warmup_steps = 5

[stages.intrinsic_dimension]
n = 200
towers = "vision"
"#;

/// The table without what depends on the machine and the moment (timings, throughput, logs).
fn comparable(csv: &str) -> Vec<String> {
    table_without(csv, |h| {
        h.ends_with("_seconds")
            || h == "log"
            || h.contains("throughput")
            || h.contains("latency")
            || h.contains("speedup")
    })
}

/// A tiny random CLIP at `models/tiny` of the project.
fn tiny_model(p: &Project) {
    let init = p.run(&[
        "init-model",
        "models/tiny",
        "--preset",
        "tiny",
        "--seed",
        "0",
    ]);
    assert!(init.status.success(), "{}", text(&init));
}

#[test]
fn the_reduced_demo_gives_the_same_table_through_slurm_as_locally() {
    let Some(_cluster) = cluster() else { return };
    let p = Project::new();
    tiny_model(&p);
    // One thread per stage both ways: the same arithmetic, bit for bit.
    p.write(
        "local.toml",
        &format!("{REDUCED_DEMO}\n[resources]\ndevices = [\"cpu\"]\nthreads = 1\n"),
    );
    p.write(
        "slurm.toml",
        &format!(
            "{REDUCED_DEMO}\n[resources]\nbackend = \"slurm\"\n[resources.slurm]\ncpus_per_task = 1\nmem = \"2G\"\n"
        ),
    );
    let local = in_results(&p, "local", &["run", "local.toml"])
        .output()
        .unwrap();
    assert!(local.status.success(), "{}", text(&local));
    let slurm = in_results(&p, "slurm", &["run", "slurm.toml"])
        .output()
        .unwrap();
    assert!(slurm.status.success(), "{}", text(&slurm));
    let table =
        |dir: &str| std::fs::read_to_string(p.path().join(dir).join("demo/demo.csv")).unwrap();
    let (a, b) = (comparable(&table("local")), comparable(&table("slurm")));
    assert!(a.len() >= 5, "{a:?}");
    assert_eq!(a, b, "local and Slurm tables differ");
    let top1 = a[0].split(',').position(|h| h == "top1").unwrap();
    for row in &a[1..] {
        let v: f64 = row.split(',').nth(top1).unwrap().parse().unwrap();
        assert!(v > 0.0, "{row}");
    }
}

#[test]
fn a_killed_driver_s_jobs_are_adopted_and_nothing_is_computed_twice() {
    let Some(_cluster) = cluster() else { return };
    let p = Project::new();
    p.write(
        "k.toml",
        &sweep("k", r#""magnitude", "wanda", "sparsegpt", "slide""#, ""),
    );
    let mut driver = p
        .cmd(&["run", "k.toml"])
        .env("ORCHESTRATE_TEST_WORK_MS", "1500")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once prunes are queued and running.
    wait_until(Duration::from_secs(120), "prunes in the queue", || {
        let states = job_states(&p);
        let prunes = ledger(&p)
            .values()
            .filter(|e| e["log"].as_str().unwrap().contains("/prune-"))
            .filter(|e| {
                e["job"].as_str().is_some_and(|j| {
                    states
                        .get(j)
                        .is_some_and(|s| s == "PENDING" || s == "RUNNING")
                })
            })
            .count();
        prunes >= 4
    });
    driver.kill().unwrap();
    driver.wait().unwrap();
    let alive: Vec<String> = job_states(&p)
        .into_iter()
        .filter(|(_, s)| s == "PENDING" || s == "RUNNING")
        .map(|(j, _)| j)
        .collect();
    assert!(!alive.is_empty(), "jobs outlive their driver");
    // `status` shows them from the ledger and one squeue.
    let status = p.run(&["status", "k.toml"]);
    assert!(stdout(&status).contains("(Slurm job "), "{}", text(&status));

    let out = p
        .cmd(&["run", "k.toml"])
        .env("ORCHESTRATE_TEST_WORK_MS", "1500")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let log = stdout(&out);
    assert!(
        log.contains("of an earlier run are still queued or running: adopting them"),
        "{log}"
    );
    // 1 calibration, 8 prunes, 9 evaluations, each computed once.
    assert_eq!(p.computed().len(), 18, "{log}");
    assert_computed_once(&p);
    for e in ledger(&p).values() {
        assert_eq!(e["attempt"], 1, "nothing was resubmitted: {e}");
    }
    // No stage log says another run published its key meanwhile.
    for entry in walkdir::WalkDir::new(p.results().join("runs")) {
        let path = entry.unwrap().into_path();
        if path.extension().is_some_and(|e| e == "log") {
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                !text.contains("published by another run"),
                "{}",
                path.display()
            );
        }
    }
    let again = p.run(&["run", "k.toml"]);
    assert!(
        stdout(&again).contains("0 done, 18 cached"),
        "{}",
        text(&again)
    );
}

/// The ledger's job of the first entry whose log name contains `what`.
fn job_of(p: &Project, what: &str) -> Option<String> {
    ledger(p)
        .values()
        .find(|e| e["log"].as_str().unwrap().contains(what) && e["job"].is_string())
        .map(|e| e["job"].as_str().unwrap().to_string())
}

#[test]
fn a_cancelled_job_is_reported_its_dependents_skipped_and_a_rerun_completes() {
    let Some(_cluster) = cluster() else { return };
    let p = Project::new();
    p.write("c.toml", &sweep("c", r#""magnitude""#, ""));
    let driver = p
        .cmd(&["run", "c.toml"])
        .env("ORCHESTRATE_TEST_WORK_MS", "4000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut job = None;
    wait_until(Duration::from_secs(120), "a running prune job", || {
        job =
            job_of(&p, "/prune-").filter(|j| job_states(&p).get(j).is_some_and(|s| s == "RUNNING"));
        job.is_some()
    });
    let job = job.unwrap();
    let out = Command::new("scancel").arg(&job).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let out = driver.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let log = stdout(&out);
    assert!(
        log.contains(&format!("cancelled: Slurm job {job} was cancelled")),
        "{log}"
    );
    assert!(log.contains("1 failed, 1 skipped"), "{log}");
    let status = p.run(&["status", "c.toml"]);
    assert!(
        stdout(&status).contains("cancelled: Slurm job"),
        "{}",
        text(&status)
    );
    let again = p.run(&["run", "c.toml"]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(stdout(&again).contains("2 done,"), "{}", text(&again));
}

#[test]
fn a_node_going_down_mid_run_requeues_its_jobs_and_the_run_completes() {
    let Some(_cluster) = cluster() else { return };
    let p = Project::new();
    p.write("n.toml", &sweep("n", r#""magnitude""#, ""));
    let driver = p
        .cmd(&["run", "n.toml"])
        .env("ORCHESTRATE_TEST_WORK_MS", "3000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(120), "a running prune", || {
        job_of(&p, "/prune-")
            .is_some_and(|j| job_states(&p).get(&j).is_some_and(|s| s == "RUNNING"))
    });
    let prune = job_of(&p, "/prune-").unwrap();
    // Slurm kills the node's jobs and requeues them; the node returns to service when its
    // daemon registers again (ReturnToService=2), or when resumed.
    node_state("down");
    std::thread::sleep(Duration::from_secs(3));
    node_state("resume");
    // Slurm holds a requeued job for two minutes (its begin time); bring that forward.
    wait_until(Duration::from_secs(60), "the prune to be requeued", || {
        job_states(&p).get(&prune).is_some_and(|s| s == "PENDING")
    });
    for (job, state) in job_states(&p) {
        if state == "PENDING" {
            let _ = Command::new("scontrol")
                .args(["update", &format!("jobid={job}"), "StartTime=now"])
                .output();
        }
    }
    let out = driver.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let log = stdout(&out);
    assert!(log.contains("5 done, 0 cached, 0 failed"), "{log}");
    // The killed prune ran again: its log, kept across the requeue, has Slurm's word on the
    // node failure and then the stage publishing.
    let stage_log = ledger(&p)
        .values()
        .find(|e| e["job"] == prune.as_str())
        .map(|e| std::fs::read_to_string(e["log"].as_str().unwrap()).unwrap())
        .unwrap();
    let failure = stage_log.find("DUE TO NODE FAILURE").expect(&stage_log);
    let published = stage_log.rfind("published ").expect(&stage_log);
    assert!(failure < published, "{stage_log}");
}

/// Sets the cluster's `MaxArraySize` for as long as it lives.
struct MaxArraySize;

impl MaxArraySize {
    fn set(n: u32) -> Self {
        let conf = std::fs::read_to_string("/etc/slurm/slurm.conf").unwrap();
        let changed: String = conf
            .lines()
            .map(|l| match l.starts_with("MaxArraySize=") {
                true => format!("MaxArraySize={n}\n"),
                false => format!("{l}\n"),
            })
            .collect();
        std::fs::write("/etc/slurm/slurm.conf", changed).unwrap();
        let out = Command::new("scontrol")
            .arg("reconfigure")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        wait_until(Duration::from_secs(30), "the new MaxArraySize", || {
            sh("scontrol", &["show", "config"])
                .lines()
                .any(|l| l.starts_with("MaxArraySize") && l.trim_end().ends_with(&format!("= {n}")))
        });
        MaxArraySize
    }
}

impl Drop for MaxArraySize {
    fn drop(&mut self) {
        let conf = std::fs::read_to_string("/etc/slurm/slurm.conf").unwrap();
        let restored: String = conf
            .lines()
            .map(|l| match l.starts_with("MaxArraySize=") {
                true => "MaxArraySize=10001\n".to_string(),
                false => format!("{l}\n"),
            })
            .collect();
        std::fs::write("/etc/slurm/slurm.conf", restored).unwrap();
        let _ = Command::new("scontrol").arg("reconfigure").output();
    }
}

#[test]
fn arrays_are_chunked_to_the_cluster_s_max_array_size() {
    let Some(_cluster) = cluster() else { return };
    let _small = MaxArraySize::set(3);
    let p = Project::new();
    p.write(
        "a.toml",
        &sweep("a", r#""magnitude", "wanda", "sparsegpt", "slide""#, ""),
    );
    let out = p.run(&["run", "a.toml"]);
    assert!(out.status.success(), "{}", text(&out));
    let run_dir: PathBuf = std::fs::read_dir(p.results().join("runs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut sizes = Vec::new();
    for entry in std::fs::read_dir(run_dir.join("slurm")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "jobs") {
            sizes.push(std::fs::read_to_string(path).unwrap().lines().count());
        }
    }
    sizes.sort();
    assert!(sizes.iter().all(|&n| n <= 3), "{sizes:?}");
    assert!(sizes.contains(&3), "{sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), 18, "{sizes:?}");
    // The six prunes that read the calibration set were ready together: two arrays of three.
    assert_eq!(sizes.iter().filter(|&&n| n == 3).count(), 2, "{sizes:?}");
}

#[test]
fn max_queued_bounds_the_run_s_jobs_in_the_queue() {
    let Some(_cluster) = cluster() else { return };
    let p = Project::new();
    p.write(
        "q.toml",
        &sweep(
            "q",
            r#""magnitude", "wanda", "sparsegpt""#,
            "max_queued = 2",
        ),
    );
    let mut driver = p
        .cmd(&["run", "q.toml"])
        .env("ORCHESTRATE_TEST_WORK_MS", "300")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut most = 0;
    while driver.try_wait().unwrap().is_none() {
        let queued = job_states(&p)
            .values()
            .filter(|s| !matches!(s.as_str(), "COMPLETED" | "FAILED" | "CANCELLED"))
            .count();
        most = most.max(queued);
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = driver.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stdout(&out).contains("up to 2 queued jobs"),
        "{}",
        text(&out)
    );
    assert!(
        most <= 2,
        "{most} jobs of the run were in the queue at once"
    );
    assert!(most >= 1);
    assert_eq!(p.computed().len(), 14);
}

#[test]
fn stages_over_their_memory_or_time_are_reported_as_such() {
    let Some(_cluster) = cluster() else { return };
    let p = Project::new();
    p.write(
        "m.toml",
        &sweep(
            "m",
            r#""magnitude""#,
            "[resources.slurm.prune]\nmem = \"200M\"",
        ),
    );
    p.write(
        "t.toml",
        &sweep(
            "t",
            r#""magnitude""#,
            "[resources.slurm.prune]\ntime = \"1\"",
        ),
    );
    let memory = in_results(&p, "m", &["run", "m.toml"])
        .env("ORCHESTRATE_TEST_HOG", "prune")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let time = in_results(&p, "t", &["run", "t.toml"])
        .env("ORCHESTRATE_TEST_SLOW", "prune a/d1 magnitude@0.5")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let memory = memory.wait_with_output().unwrap();
    assert_eq!(memory.status.code(), Some(1), "{}", text(&memory));
    let log = stdout(&memory);
    assert!(log.contains("out of memory: Slurm job"), "{log}");
    assert!(log.contains("mem = \"200M\""), "{log}");
    assert!(log.contains("2 failed, 2 skipped"), "{log}");
    let time = time.wait_with_output().unwrap();
    assert_eq!(time.status.code(), Some(1), "{}", text(&time));
    let log = stdout(&time);
    assert!(log.contains("time limit: Slurm stopped job"), "{log}");
    assert!(log.contains("time = \"1\""), "{log}");
    assert!(log.contains("1 failed, 1 skipped"), "{log}");
}

#[test]
fn transient_submission_errors_are_retried_and_refusals_are_one_clear_error() {
    let Some(_cluster) = cluster() else { return };
    let p = Project::new();
    // An sbatch that times out twice, then submits.
    let bin = p.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let count = p.path().join("sbatch-calls");
    let real = sh("sh", &["-c", "command -v sbatch"]).trim().to_string();
    let wrapper = bin.join("sbatch");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ncase \"$1\" in --test-only) exec {real} \"$@\";; esac\n\
             n=$(cat {c} 2>/dev/null || echo 0); echo $((n + 1)) > {c}\n\
             if [ \"$n\" -lt 2 ]; then echo 'sbatch: error: Batch job submission failed: Socket timed out on send/recv operation' >&2; exit 1; fi\n\
             exec {real} \"$@\"\n",
            c = count.display()
        ),
    )
    .unwrap();
    let mut perms = std::fs::metadata(&wrapper).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&wrapper, perms).unwrap();
    p.write("r.toml", &sweep("r", r#""magnitude""#, ""));
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let out = p
        .cmd(&["run", "r.toml"])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let log = stdout(&out);
    assert!(
        log.contains("Socket timed out on send/recv operation; submitting again in 2 s"),
        "{log}"
    );
    assert!(log.contains("5 done, 0 cached, 0 failed"), "{log}");

    // A partition the cluster does not have: one error before anything is submitted.
    p.write(
        "bad.toml",
        &sweep("bad", r#""magnitude""#, "partition = \"nope\""),
    );
    let out = in_results(&p, "bad", &["run", "bad.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the cluster refuses calibrate jobs as [resources.slurm] describes them")
            && err.contains("nope")
            || err.contains("invalid partition"),
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");
}

#[test]
fn a_gpu_request_gives_the_stage_slurm_s_gpu() {
    let Some(_cluster) = cluster() else { return };
    let p = Project::new();
    tiny_model(&p);
    // The test cluster's two GPUs are stand-ins (/dev/null, /dev/zero): Slurm hands one out and
    // sets CUDA_VISIBLE_DEVICES, and the stage, asked to run on it, finds no CUDA device and
    // says which one it was given.
    p.write(
        "g.toml",
        "[experiment]\nname = \"g\"\n[models.tiny]\npath = \"models/tiny\"\n\
         [datasets.shapes]\nkind = \"synthetic\"\nclasses = 4\ntest_size = 16\nimage_size = 32\n\
         [grid]\nmodel = [\"tiny\"]\ndataset = [\"shapes\"]\n\
         [resources]\nbackend = \"slurm\"\n[resources.slurm]\ngres = \"gpu:1\"\nmem = \"1G\"\n",
    );
    let out = p.run(&["run", "g.toml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let log = stdout(&out);
    assert!(
        log.contains("device cuda:0 was assigned (CUDA_VISIBLE_DEVICES=\"0\" on")
            || log.contains("device cuda:0 was assigned (CUDA_VISIBLE_DEVICES=\"1\" on"),
        "{log}"
    );
}

#[test]
fn ctrl_c_cancels_the_run_s_jobs_and_a_rerun_starts_them_again() {
    let Some(_cluster) = cluster() else { return };
    let p = Project::new();
    p.write("i.toml", &sweep("i", r#""magnitude", "wanda""#, ""));
    let driver = p
        .cmd(&["run", "i.toml"])
        .env("ORCHESTRATE_TEST_WORK_MS", "5000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(120), "jobs in the queue", || {
        job_states(&p)
            .values()
            .filter(|s| *s == "PENDING" || *s == "RUNNING")
            .count()
            >= 2
    });
    // SAFETY: signalling our own child.
    unsafe { libc::kill(driver.id() as i32, libc::SIGINT) };
    let out = driver.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    let log = stdout(&out);
    assert!(log.contains("interrupted: cancelling this run's"), "{log}");
    assert!(
        log.contains("0 failed"),
        "an interrupted stage is not a failure: {log}"
    );
    let left: Vec<_> = job_states(&p)
        .into_iter()
        .filter(|(_, s)| s == "PENDING" || s == "RUNNING" || s == "COMPLETING")
        .collect();
    assert!(left.is_empty(), "jobs left in the queue: {left:?}");
    let again = p.run(&["run", "i.toml"]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(stdout(&again).contains("0 failed"), "{}", text(&again));
}
