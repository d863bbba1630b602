//! `make bench` — orchestration core figures (not a timed test; targets are printed beside the
//! measurements):
//! 1. `plan` of a manifest that expands to 100,000 grid points: wall time and peak RSS of the
//!    real binary (target: < 2 s, < 500 MB);
//! 2. a fully cached re-run of ~1,000 nodes (target: < 3 s);
//! 3. per-stage scheduling overhead: child process start to record published, minus the stage's
//!    own work, over a run of simulated stages that do no work.

mod common;
use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_orchestrate");

fn grid_manifest(
    name: &str,
    models: usize,
    datasets: usize,
    sparsities: &[&str],
    sizes: &[u32],
    seeds: usize,
) -> String {
    let mut s = common::simulated_models_and_datasets(name, models, datasets);
    let list = |v: Vec<String>| v.join(", ");
    s += &format!(
        "[grid]\nmodel = [{}]\ndataset = [{}]\nmethod = [\"magnitude\", \"wanda\", \"sparsegpt\", \"slide\", \"slide-progressive\"]\nsparsity = [{}]\ncalibration_size = [{}]\nseed = [{}]\n[resources]\ndevices = [\"cpu\"]\njobs_per_device = 2\n",
        list((0..models).map(|m| format!("\"m{m}\"")).collect()),
        list((0..datasets).map(|d| format!("\"d{d}\"")).collect()),
        sparsities.join(", "),
        list(sizes.iter().map(|s| s.to_string()).collect()),
        list((0..seeds).map(|s| s.to_string()).collect()),
    );
    s
}

/// Runs the binary; returns (seconds, peak RSS in MiB, stdout).
fn measure(args: &[&str], results: &Path, env: &[(&str, &str)]) -> (f64, f64, String) {
    let clock = Instant::now();
    let mut cmd = Command::new(BIN);
    cmd.args(args).arg("--results").arg(results);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start orchestrate");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // Read the pipes on threads so a chatty child cannot block, then reap it with its rusage.
    let mut child = child;
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            pipe.read_to_string(&mut s).ok();
            s
        })
    };
    let t_out = drain(Box::new(out));
    let t_err = drain(Box::new(err));
    unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let seconds = clock.elapsed().as_secs_f64();
    let stdout = t_out.join().unwrap();
    let stderr = t_err.join().unwrap();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "orchestrate {args:?} failed:\n{stdout}\n{stderr}"
    );
    (seconds, usage.ru_maxrss as f64 / 1024.0, stdout)
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");

    // 1. 10 models × 10 datasets × 5 methods × 10 sparsities × 10 sizes × 2 seeds = 100,000 points.
    let sparsities = [
        "0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "\"2:4\"", "\"4:8\"",
    ];
    let sizes = [125, 250, 500, 1000, 2000, 4000, 8000, 100, 200, 300];
    let big = dir.path().join("big.toml");
    std::fs::write(&big, grid_manifest("big", 10, 10, &sparsities, &sizes, 2)).unwrap();
    let (secs, rss, out) = measure(&["plan", big.to_str().unwrap()], &results, &[]);
    let first = out.lines().next().unwrap_or_default().to_string();
    println!(
        "plan, 100,000 grid points: {secs:.2} s, peak RSS {rss:.0} MiB  (target < 2 s, < 500 MB)  [{first}]"
    );

    // 2. Fully cached re-run of ~1,000 nodes.
    let mid = dir.path().join("mid.toml");
    std::fs::write(
        &mid,
        grid_manifest("mid", 2, 5, &["0.5", "0.7", "\"2:4\""], &[125, 250], 2),
    )
    .unwrap();
    let env = [("ORCHESTRATE_TEST_WORK_MS", "0")];
    let (cold, _, out) = measure(&["run", mid.to_str().unwrap()], &results, &env);
    let summary = out
        .lines()
        .find(|l| l.contains(" done, "))
        .unwrap_or_default()
        .to_string();
    let (warm, warm_rss, out) = measure(&["run", mid.to_str().unwrap()], &results, &env);
    let cached = out
        .lines()
        .find(|l| l.contains(" cached"))
        .unwrap_or_default()
        .to_string();
    println!("cold run: {cold:.1} s [{summary}]");
    println!(
        "fully cached re-run: {warm:.2} s, peak RSS {warm_rss:.0} MiB  (target < 3 s)  [{cached}]"
    );

    // 3. Scheduling overhead per stage, from the cold run's event log and records.
    let runs = results.join("runs");
    let mut run_dirs: Vec<_> = std::fs::read_dir(&runs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    run_dirs.sort();
    let events =
        std::fs::read_to_string(run_dirs[run_dirs.len() - 2].join("events.jsonl")).unwrap();
    let mut overheads = Vec::new();
    for line in events.lines() {
        let e: serde_json::Value = serde_json::from_str(line).unwrap();
        if e["event"] == "finished" {
            overheads.push(e["seconds"].as_f64().unwrap());
        }
    }
    let entries = results.join("cache/entries");
    let own: f64 = std::fs::read_dir(&entries)
        .unwrap()
        .filter_map(|e| std::fs::read(e.unwrap().path().join("record.json")).ok())
        .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .filter(|r| {
            r["label"]
                .as_str()
                .is_some_and(|l| l.contains(" m0/") || l.contains(" m1/"))
        })
        .map(|r| r["timing"]["seconds"].as_f64().unwrap())
        .sum::<f64>();
    overheads.sort_by(f64::total_cmp);
    let n = overheads.len().max(1) as f64;
    let mean = overheads.iter().sum::<f64>() / n;
    println!(
        "per-stage overhead (process start → record published, minus the stage's own {:.1} ms): mean {:.1} ms, median {:.1} ms over {} stages",
        1000.0 * own / n,
        1000.0 * (mean - own / n),
        1000.0 * overheads[overheads.len() / 2],
        overheads.len()
    );
}
