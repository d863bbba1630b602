//! The real binary end to end, with simulated stages: resume after SIGKILL, concurrent runs,
//! corrupted artifacts, failures, retention, gc, status and tables.

mod common;
use common::*;
use std::collections::{BTreeSet, HashMap};
use std::process::Stdio;
use std::time::{Duration, Instant};

fn all_cached_plan(p: &Project, m: &str) {
    let out = p.run(&["plan", m, "--verify", "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let uncached: Vec<_> = doc["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["cached"] != true)
        .map(|n| n["label"].clone())
        .collect();
    assert!(uncached.is_empty(), "not cached: {uncached:?}");
}

fn duplicates(keys: &[String]) -> Vec<&String> {
    let mut seen = HashMap::new();
    for k in keys {
        *seen.entry(k).or_insert(0) += 1;
    }
    seen.into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(k, _)| k)
        .collect()
}

#[test]
fn run_then_rerun_computes_nothing_and_writes_tables() {
    let p = Project::new();
    p.write("sweep.toml", SWEEP);
    let out = p.run(&["run", "sweep.toml"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(p.computed().len(), 88);
    let csv = p.table_csv("sweep");
    assert_eq!(csv.lines().count(), 1 + 4 + 48);
    let header = csv.lines().next().unwrap();
    for col in [
        "model",
        "dataset",
        "method",
        "sparsity",
        "calibration_size",
        "seed",
        "status",
        "top1",
        "top5",
        "n_eval",
        "achieved_sparsity",
        "prune_seconds",
        "eval_seconds",
    ] {
        assert!(
            header.split(',').any(|h| h == col),
            "column {col} in {header}"
        );
    }
    assert!(csv.lines().skip(1).all(|l| l.contains(",done,")), "{csv}");
    assert!(p.results().join("sweep/sweep.parquet").is_file());

    let again = p.run(&["run", "sweep.toml"]);
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(p.computed().len(), 88, "a re-run recomputes nothing");
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("0 done, 88 cached"),
        "{}",
        text(&again)
    );

    let pivot = p.run(&["table", "sweep.toml", "--pivot", "md"]);
    assert!(pivot.status.success(), "{}", text(&pivot));
    let md = String::from_utf8_lossy(&pivot.stdout);
    assert!(
        md.contains("| method | sparsity | d1 | d2 | mean |"),
        "{md}"
    );
    assert!(md.contains("| dense | 0 |"), "{md}");
    let tex = p.run(&["table", "sweep.toml", "--pivot", "tex"]);
    assert!(
        String::from_utf8_lossy(&tex.stdout).contains("\\begin{tabular}"),
        "{}",
        text(&tex)
    );
}

#[test]
fn sigkill_mid_sweep_then_resume_matches_an_uninterrupted_run() {
    let p = Project::new();
    p.write("sweep.toml", SWEEP);
    let mut child = p
        .cmd(&["run", "sweep.toml"])
        .env("ORCHESTRATE_TEST_WORK_MS", "150")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while p.computed().len() < 12 {
        assert!(Instant::now() < deadline, "the run made no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300)); // stage processes die with their parent
    let before = p.computed();
    assert!(before.len() < 88);

    // Entries published before the kill.
    let entries: BTreeSet<String> = std::fs::read_dir(p.results().join("cache/entries"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!entries.is_empty());

    let out = p.run(&["run", "sweep.toml"]);
    assert!(out.status.success(), "{}", text(&out));
    let after = p.computed();
    let recomputed: Vec<&String> = after[before.len()..]
        .iter()
        .filter(|k| entries.contains(*k))
        .collect();
    assert!(
        recomputed.is_empty(),
        "finished stages were recomputed: {recomputed:?}"
    );
    all_cached_plan(&p, "sweep.toml");

    let fresh = Project::new();
    fresh.write("sweep.toml", SWEEP);
    assert!(fresh.run(&["run", "sweep.toml"]).status.success());
    assert_eq!(
        stable_table(&p.table_csv("sweep")),
        stable_table(&fresh.table_csv("sweep"))
    );
}

#[test]
fn concurrent_runs_compute_each_stage_once() {
    let p = Project::new();
    p.write("sweep.toml", SWEEP);
    let spawn = || {
        p.cmd(&["run", "sweep.toml"])
            .env("ORCHESTRATE_TEST_WORK_MS", "30")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (oa, ob) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(
        oa.status.success() && ob.status.success(),
        "{}\n{}",
        text(&oa),
        text(&ob)
    );
    let computed = p.computed();
    assert!(
        duplicates(&computed).is_empty(),
        "computed twice: {:?}",
        duplicates(&computed)
    );
    assert_eq!(computed.len(), 88);
    all_cached_plan(&p, "sweep.toml");
}

#[test]
fn corrupted_artifacts_are_detected_and_recomputed() {
    let p = Project::new();
    // Keep pruned weights so that exactly the corrupted entries need recomputing.
    p.write("sweep.toml", &sweep_keeping_pruned());
    assert!(p.run(&["run", "sweep.toml"]).status.success());
    let evals = p.entries_with("\"kind\": \"evaluate\"");
    // Truncated: caught by the size check on every lookup.
    std::fs::write(evals[0].join("artifacts/output.txt"), "x").unwrap();
    // Same size, different bytes: caught by --verify.
    let other = evals[1].join("artifacts/output.txt");
    let mut bytes = std::fs::read(&other).unwrap();
    bytes[0] = if bytes[0] == b'0' { b'1' } else { b'0' };
    std::fs::write(&other, bytes).unwrap();

    let plan = p.run(&["plan", "sweep.toml", "--explain"]);
    assert!(
        String::from_utf8_lossy(&plan.stdout)
            .contains("corrupt entry: artifact output.txt has 1 bytes"),
        "{}",
        text(&plan)
    );
    let n = p.computed().len();
    assert!(p.run(&["run", "sweep.toml"]).status.success());
    assert_eq!(
        p.computed().len(),
        n + 1,
        "only the truncated entry is recomputed without --verify"
    );
    assert!(p.run(&["run", "sweep.toml", "--verify"]).status.success());
    assert_eq!(
        p.computed().len(),
        n + 2,
        "--verify catches the checksum mismatch"
    );
    all_cached_plan(&p, "sweep.toml");
}

#[test]
fn a_failed_stage_skips_its_dependents_only() {
    let p = Project::new();
    p.write("sweep.toml", SWEEP);
    let out = p
        .cmd(&["run", "sweep.toml"])
        .env("ORCHESTRATE_TEST_FAIL", "prune a/d1 sg@0.5 n=8")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("1 failed, 1 skipped"), "{stdout}");
    assert!(
        stdout.contains("simulated failure in prune a/d1 sg@0.5 n=8"),
        "{stdout}"
    );
    let csv = p.table_csv("sweep");
    let failed: Vec<&str> = csv.lines().filter(|l| l.contains(",failed,")).collect();
    assert_eq!(failed.len(), 1, "{csv}");
    assert!(
        failed[0].contains(".log"),
        "failed rows carry the log path: {}",
        failed[0]
    );
    assert_eq!(csv.lines().filter(|l| l.contains(",done,")).count(), 52 - 1);

    let status = p.run(&["status", "sweep.toml"]);
    assert_eq!(status.status.code(), Some(1));
    let s = String::from_utf8_lossy(&status.stdout);
    assert!(s.contains("1 failed") && s.contains("log: "), "{s}");

    // Fixed: the same command resumes and only the failed part runs.
    let n = p.computed().len();
    let out = p.run(&["run", "sweep.toml"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(p.computed().len(), n + 2);
}

#[test]
fn a_crashing_stage_process_fails_one_node_and_retries_apply() {
    let p = Project::new();
    p.write("sweep.toml", SWEEP);
    let out = p
        .cmd(&["run", "sweep.toml", "--retries", "1"])
        .env("ORCHESTRATE_TEST_CRASH", "evaluate b/d2 dense")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("killed by signal 6"), "{stdout}");
    assert!(stdout.contains("retry    evaluate b/d2 dense"), "{stdout}");
    assert!(stdout.contains("1 failed, 0 skipped"), "{stdout}");
}

#[test]
fn pruned_weights_are_dropped_once_consumed_unless_kept() {
    let p = Project::new();
    p.write("sweep.toml", SWEEP);
    assert!(p.run(&["run", "sweep.toml"]).status.success());
    let weights = |p: &Project| {
        walkdir::WalkDir::new(p.results().join("cache/entries"))
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_name() == "weights.bin")
            .count()
    };
    assert_eq!(
        weights(&p),
        0,
        "every prune's weights were consumed by its evaluations"
    );
    all_cached_plan(&p, "sweep.toml");

    // A new downstream stage needs evicted weights: the prune reruns, with the reason shown.
    p.write(
        "more.toml",
        &format!("{SWEEP}\n[stages]\nintrinsic_dimension = true\n"),
    );
    let plan = p.run(&["plan", "more.toml", "--explain"]);
    assert!(
        String::from_utf8_lossy(&plan.stdout).contains("dropped by the retention policy"),
        "{}",
        text(&plan)
    );

    let keep = Project::new();
    keep.write("sweep.toml", &sweep_keeping_pruned());
    assert!(keep.run(&["run", "sweep.toml"]).status.success());
    assert_eq!(weights(&keep), 36);
}

#[test]
fn plan_explains_why_nodes_must_run() {
    let p = Project::new();
    p.write("sweep.toml", SWEEP);
    let out = p.run(&["plan", "sweep.toml"]);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("48 grid points → 88 stages"), "{s}");
    assert!(s.contains("calibrate") && s.contains("total"), "{s}");
    assert!(p.run(&["run", "sweep.toml"]).status.success());
    p.write(
        "sweep.toml",
        &SWEEP.replace("blocksize = 64", "blocksize = 32"),
    );
    let out = p.run(&["plan", "sweep.toml", "--explain"]);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("param changed: params.blocksize 64 → 32"), "{s}");
    assert!(s.contains("upstream changed: prune"), "{s}");
    let json = p.run(&["plan", "sweep.toml", "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(doc["nodes"].as_array().unwrap().len(), 88);
}

#[test]
fn gc_drops_unreachable_entries_and_reports_bytes() {
    let p = Project::new();
    p.write("sweep.toml", SWEEP);
    assert!(p.run(&["run", "sweep.toml"]).status.success());
    p.write(
        "small.toml",
        &SWEEP.replace("model = [\"a\", \"b\"]", "model = [\"a\"]"),
    );
    let out = p.run(&["gc", "small.toml"]);
    assert!(out.status.success(), "{}", text(&out));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("removed 44 entries"), "{s}");
    all_cached_plan(&p, "small.toml");
    // A manifest that does not load deletes nothing.
    p.write("broken.toml", "[experiment]\nname = 1\n");
    assert_eq!(p.run(&["gc", "broken.toml"]).status.code(), Some(2));
    all_cached_plan(&p, "small.toml");
}

#[test]
fn first_ctrl_c_lets_running_stages_finish_and_the_rerun_completes() {
    let p = Project::new();
    p.write("sweep.toml", SWEEP);
    let child = p
        .cmd(&["run", "sweep.toml"])
        .env("ORCHESTRATE_TEST_WORK_MS", "300")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while p.computed().len() < 3 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    // Every stage that started was allowed to finish and publish.
    let started = p.computed().len();
    let entries = std::fs::read_dir(p.results().join("cache/entries"))
        .unwrap()
        .count();
    assert_eq!(started, entries, "{}", text(&out));
    assert!(p.run(&["run", "sweep.toml"]).status.success());
    all_cached_plan(&p, "sweep.toml");
}

#[test]
fn a_table_that_cannot_be_written_fails_the_run_and_keeps_the_cache() {
    let p = Project::new();
    p.write("sweep.toml", SWEEP);
    std::fs::create_dir_all(p.results()).unwrap();
    // The tables directory is taken by a file.
    std::fs::write(p.results().join("sweep"), "in the way").unwrap();
    let out = p.run(&["run", "sweep.toml"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot write tables"), "{stderr}");
    assert_eq!(p.computed().len(), 88);
    std::fs::remove_file(p.results().join("sweep")).unwrap();
    let again = p.run(&["run", "sweep.toml"]);
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(p.computed().len(), 88, "nothing computed is lost");
}

#[test]
fn a_failed_measurement_fails_its_point_in_every_table() {
    let p = Project::new();
    p.write(
        "sweep.toml",
        &format!("{SWEEP}\n[stages]\nintrinsic_dimension = true\n"),
    );
    let out = p
        .cmd(&["run", "sweep.toml"])
        .env(
            "ORCHESTRATE_TEST_FAIL",
            "intrinsic-dimension a/d1 wanda@0.5",
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let csv = p.table_csv("sweep");
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let failed: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|r| r[col("status")] == "failed")
        .collect();
    assert_eq!(failed.len(), 2, "wanda@0.5 on a/d1 at both sizes\n{csv}");
    for r in &failed {
        assert_eq!(r[col("failed_stage")], "intrinsic-dimension", "{csv}");
        assert_eq!(r[col("method")], "wanda");
    }
    let id = std::fs::read_to_string(p.results().join("sweep/sweep_id.csv")).unwrap();
    assert_eq!(
        id.lines().filter(|l| l.contains(",failed,")).count(),
        2,
        "{id}"
    );
    let status = p.run(&["status", "sweep.toml"]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("failed"));
}

/// A one-bit flip in a record (a metric) is caught on every lookup: the entry is recomputed and
/// the table shows the real value again.
#[test]
fn a_flipped_bit_in_a_record_is_caught() {
    let p = Project::new();
    // Pruned weights kept, so only the flipped entry itself is recomputed.
    p.write("sweep.toml", &sweep_keeping_pruned());
    assert!(p.run(&["run", "sweep.toml"]).status.success());
    let before = p.table_csv("sweep");
    let record = p.entries_with("\"top1\"")[0].join("record.json");
    let json = std::fs::read_to_string(&record).unwrap();
    let at = json.find("\"top1\": 0.").unwrap() + "\"top1\": 0.".len();
    let mut bytes = json.into_bytes();
    // Flip the low bit of the first decimal digit: 0.42 → 0.52 or 0.32.
    bytes[at] ^= 1;
    std::fs::write(&record, bytes).unwrap();
    let plan = p.run(&["plan", "sweep.toml", "--explain"]);
    assert!(
        String::from_utf8_lossy(&plan.stdout).contains("record fails its checksum"),
        "{}",
        text(&plan)
    );
    let n = p.computed().len();
    assert!(p.run(&["run", "sweep.toml"]).status.success());
    assert_eq!(p.computed().len(), n + 1);
    assert_eq!(stable_table(&p.table_csv("sweep")), stable_table(&before));
}

/// `gc` never follows a link out of the cache: a results directory whose cache folders are
/// links is refused (exit 2), and what the links point at is untouched.
#[test]
fn gc_refuses_linked_cache_folders() {
    let p = Project::new();
    p.write("sweep.toml", SWEEP);
    assert!(p.run(&["run", "sweep.toml"]).status.success());
    let precious = p.path().join("precious");
    std::fs::create_dir_all(precious.join("0123")).unwrap();
    std::fs::write(precious.join("0123/data.bin"), b"keep me").unwrap();
    for folder in ["tmp", "entries"] {
        let path = p.results().join("cache").join(folder);
        let aside = p.path().join(format!("aside-{folder}"));
        if path.exists() {
            std::fs::rename(&path, &aside).unwrap();
        }
        std::os::unix::fs::symlink(&precious, &path).unwrap();
        let out = p.run(&["gc", "sweep.toml"]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("is a symbolic link"),
            "{}",
            text(&out)
        );
        assert_eq!(
            std::fs::read(precious.join("0123/data.bin")).unwrap(),
            b"keep me"
        );
        std::fs::remove_file(&path).unwrap();
        if aside.exists() {
            std::fs::rename(&aside, &path).unwrap();
        }
    }
}

/// `gc` of another manifest while a run is going waits for it: nothing the run still reads is
/// removed, the run completes, then gc does its work.
#[test]
fn gc_waits_for_a_running_sweep() {
    let p = Project::new();
    p.write("sweep.toml", SWEEP);
    p.write(
        "small.toml",
        &SWEEP.replace("model = [\"a\", \"b\"]", "model = [\"a\"]"),
    );
    // Model b's dense evaluations and prunes exist before the run that reads them.
    let first = p
        .cmd(&["run", "sweep.toml"])
        .env("ORCHESTRATE_TEST_FAIL", "evaluate b/d2")
        .output()
        .unwrap();
    assert_eq!(first.status.code(), Some(1), "{}", text(&first));
    let run = p
        .cmd(&["run", "sweep.toml"])
        .env("ORCHESTRATE_TEST_WORK_MS", "300")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let before = p.computed().len();
    while p.computed().len() == before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let gc = p.run(&["gc", "small.toml"]);
    let run = run.wait_with_output().unwrap();
    assert!(
        run.status.success(),
        "the run lost entries to gc: {}",
        text(&run)
    );
    assert!(gc.status.success(), "{}", text(&gc));
    assert!(
        String::from_utf8_lossy(&gc.stderr).contains("waiting for the runs"),
        "{}",
        text(&gc)
    );
    all_cached_plan(&p, "small.toml");
}

/// Entries that a killed stage left half-built are removed by the next run; anything in the
/// temporary folder the cache did not name is left alone.
#[test]
fn a_run_removes_leftover_temporary_entries() {
    let p = Project::new();
    p.write("sweep.toml", SWEEP);
    let tmp = p.results().join("cache/tmp");
    let leftover = tmp.join(format!("{}.12345-1", "e".repeat(64)));
    std::fs::create_dir_all(leftover.join("artifacts")).unwrap();
    std::fs::write(leftover.join("artifacts/weights.bin"), vec![0u8; 4096]).unwrap();
    std::fs::create_dir_all(tmp.join("mine")).unwrap();
    assert!(p.run(&["run", "sweep.toml"]).status.success());
    assert!(!leftover.exists());
    assert!(tmp.join("mine").is_dir());
}

/// Same-size corruption of an upstream artifact is never consumed: a stage that reads it fails
/// (and removes the corrupt entry, so the next run recomputes it); `--verify` recomputes the
/// corrupt entry and everything computed from it, and says why.
#[test]
fn stages_never_consume_corrupt_upstream_artifacts() {
    let p = Project::new();
    let sweep = sweep_keeping_pruned();
    p.write("sweep.toml", &sweep);
    assert!(p.run(&["run", "sweep.toml"]).status.success());
    let flip = |label: &str| {
        let dir = &p.entries_with(&format!("\"label\": \"{label}\""))[0];
        let file = dir.join("artifacts/output.txt");
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[0] = if bytes[0] == b'0' { b'1' } else { b'0' };
        std::fs::write(&file, bytes).unwrap();
    };

    // A new stage reads a silently corrupted prune: it fails instead of using it.
    flip("prune a/d1 wanda@0.5 n=8 seed=0");
    p.write(
        "more.toml",
        &format!("{sweep}\n[stages]\nintrinsic_dimension = true\n"),
    );
    let out = p.run(&["run", "more.toml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("fails its checksum; it was removed"),
        "{}",
        text(&out)
    );
    let again = p.run(&["run", "more.toml"]);
    assert!(again.status.success(), "{}", text(&again));

    // --verify: the corrupt entry and what was computed from it run again, with the reason.
    flip("prune b/d2 sg@2:4 n=16 seed=0");
    let n = p.computed().len();
    let out = p.run(&["run", "sweep.toml", "--verify"]);
    assert!(out.status.success(), "{}", text(&out));
    let redone: Vec<String> = p.computed()[n..].to_vec();
    assert_eq!(redone.len(), 2, "the prune and its evaluation: {redone:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("computed from a corrupt entry (prune b/d2 sg@2:4 n=16 seed=0)"),
        "{}",
        text(&out)
    );
    let events = walkdir::WalkDir::new(p.results().join("runs"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_name() == "events.jsonl")
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect::<String>();
    assert!(
        events.contains("\"reason\":\"corrupt entry: artifact output.txt fails its checksum\"")
    );
}
