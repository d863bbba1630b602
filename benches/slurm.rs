//! `make bench` — the Slurm backend through the local test cluster (`make slurm`); skipped, with
//! a note, where no cluster answers. Not a timed test: figures are printed.
//!
//! 1. Submission and completion overhead per stage: the same chain-shaped sweep of simulated
//!    stages that do no work, one stage at a time (`max_queued = 1`; locally one slot), so
//!    (wall time − the stages' own seconds) / stages is what each stage costs to hand over,
//!    start and notice finished, through Slurm and locally.
//! 2. Plan + submit 10,000 stages as arrays: 10,100 stages ready at once (held, `--hold`, so
//!    none runs), from `orchestrate run` starting to every one of them in the ledger as queued;
//!    then the first Ctrl-C cancels them all (`scancel`), timed too.

mod common;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_orchestrate");

fn manifest(
    name: &str,
    models: usize,
    datasets: usize,
    sparsities: usize,
    resources: &str,
) -> String {
    let mut s = common::simulated_models_and_datasets(name, models, datasets);
    let list = |prefix: &str, n: usize| {
        (0..n)
            .map(|i| format!("\"{prefix}{i}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let sparsity: Vec<String> = (0..sparsities)
        .map(|i| format!("{:.4}", (i + 1) as f64 / (sparsities + 1) as f64))
        .collect();
    s += &format!(
        "[grid]\nmodel = [{}]\ndataset = [{}]\nmethod = [\"magnitude\"]\nsparsity = [{}]\n{resources}\n",
        list("m", models),
        list("d", datasets),
        sparsity.join(", ")
    );
    s
}

fn cluster_up() -> bool {
    Command::new("sinfo")
        .arg("-h")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `run` to the end; returns (wall seconds, stages computed, their own seconds).
fn timed_run(dir: &Path, manifest: &str, results: &str) -> (f64, usize, f64) {
    let clock = Instant::now();
    let out = Command::new(BIN)
        .args(["run", manifest, "--results", results])
        .current_dir(dir)
        .env("ORCHESTRATE_TEST_WORK_MS", "0")
        .output()
        .unwrap();
    let wall = clock.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (mut n, mut own) = (0, 0.0);
    for e in std::fs::read_dir(dir.join(results).join("cache/entries")).unwrap() {
        let b = std::fs::read(e.unwrap().path().join("record.json")).unwrap();
        let r: serde_json::Value = serde_json::from_slice(&b).unwrap();
        n += 1;
        own += r["timing"]["seconds"].as_f64().unwrap();
    }
    (wall, n, own)
}

fn queued_in_ledger(path: &Path) -> usize {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<BTreeMap<String, serde_json::Value>>(&b).ok())
        .map_or(0, |l| l.values().filter(|e| e["state"] == "queued").count())
}

fn main() {
    if !cluster_up() {
        println!("slurm: SKIPPED — no Slurm cluster answers here (`make slurm` starts one)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // 1. One stage at a time: 1 model × 2 datasets × 5 sparsities = 2 dense evaluations, 5
    //    (data-free) prunes, 10 evaluations.
    std::fs::write(
        d.join("local.toml"),
        manifest(
            "o",
            1,
            2,
            5,
            "[resources]\ndevices = [\"cpu\"]\njobs_per_device = 1",
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("slurm.toml"),
        manifest(
            "o",
            1,
            2,
            5,
            "[resources]\nbackend = \"slurm\"\n[resources.slurm]\nmax_queued = 1\nmem = \"500M\"",
        ),
    )
    .unwrap();
    let bare = bare_round_trip(5);
    let (lw, ln, lo) = timed_run(d, "local.toml", "local");
    let (sw, sn, so) = timed_run(d, "slurm.toml", "slurm");
    println!(
        "per-stage overhead, one stage at a time ({sn} simulated stages doing no work): Slurm {:.2} s, local {:.3} s (wall {sw:.1} s vs {lw:.1} s); the cluster's own round trip for `sbatch --wrap true` until squeue says COMPLETED (polled every 50 ms): median {bare:.2} s",
        (sw - so) / sn as f64,
        (lw - lo) / ln as f64,
    );

    // 2. 100 models × 100 sparsities of magnitude (data-free: one prune per model and sparsity)
    //    on one dataset: 10,000 prunes and 100 dense evaluations ready at once, held.
    std::fs::write(
        d.join("big.toml"),
        manifest(
            "big",
            100,
            1,
            100,
            "[resources]\nbackend = \"slurm\"\n[resources.slurm]\nmax_queued = 20000\nmem = \"100M\"\nextra = [\"--hold\"]",
        ),
    )
    .unwrap();
    let ledger = d.join("big/slurm/ledger.json");
    let clock = Instant::now();
    let mut driver = Command::new(BIN)
        .args(["run", "big.toml", "--results", "big"])
        .current_dir(d)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut queued = 0;
    while queued < 10_100 && clock.elapsed() < Duration::from_secs(600) {
        std::thread::sleep(Duration::from_millis(100));
        queued = queued_in_ledger(&ledger);
    }
    let submit = clock.elapsed().as_secs_f64();
    let arrays = std::fs::read_dir(d.join("big/runs"))
        .unwrap()
        .flat_map(|r| std::fs::read_dir(r.unwrap().path().join("slurm")).unwrap())
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "sh")
        })
        .count();
    let clock = Instant::now();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(driver.id() as i32, libc::SIGINT) };
    let status = driver.wait().unwrap();
    let cancel = clock.elapsed().as_secs_f64();
    println!(
        "plan + submit {queued} stages as {arrays} sbatch calls (arrays): {submit:.1} s; first Ctrl-C cancelling them all: {cancel:.1} s (exit {:?})",
        status.code()
    );
    // Leave nothing behind on the cluster.
    let _ = Command::new("scancel")
        .args(["--name", &latest_run(d)])
        .output();
}

/// Median seconds from `sbatch` of a job that does nothing to `squeue` reporting it COMPLETED.
fn bare_round_trip(n: usize) -> f64 {
    let mut times: Vec<f64> = (0..n)
        .map(|_| {
            let clock = Instant::now();
            let out = Command::new("sbatch")
                .args([
                    "--parsable",
                    "--output=/dev/null",
                    "--mem=100M",
                    "--wrap",
                    "true",
                ])
                .output()
                .unwrap();
            let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
            loop {
                let state = Command::new("squeue")
                    .args(["-h", "--states=all", "-j", &id, "-o", "%T"])
                    .output()
                    .unwrap();
                if String::from_utf8_lossy(&state.stdout).trim() == "COMPLETED" {
                    break clock.elapsed().as_secs_f64();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[n / 2]
}

fn latest_run(d: &Path) -> String {
    std::fs::read_dir(d.join("big/runs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .max()
        .unwrap_or_default()
}
