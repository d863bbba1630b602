//! Helpers shared by the integration tests: a scratch project with a manifest, and the real
//! `orchestrate` binary (built with the test-only simulated stages).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_orchestrate");

/// The test virtualenv's python (the reference implementation's interpreter).
pub fn python() -> PathBuf {
    let venv = std::env::var("VIRTUAL_ENV")
        .unwrap_or_else(|_| format!("{}/.venv", env!("CARGO_MANIFEST_DIR")));
    PathBuf::from(venv).join("bin/python")
}

/// A reference script under `tests/reference/`.
pub fn reference_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/reference")
        .join(name)
}

/// Runs reference script `name` with `args`; its stdout, the test failing with its stderr.
pub fn run_reference<S: AsRef<std::ffi::OsStr>>(name: &str, args: &[S]) -> String {
    let out = Command::new(python())
        .arg(reference_script(name))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs the binary in `dir`; its stdout and stderr, the test failing unless it succeeds.
pub fn run_in(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let log =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?}: {log}");
    log
}

/// A temporary directory holding manifests and a results directory.
pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    pub fn new() -> Self {
        Project {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn results(&self) -> PathBuf {
        self.path().join("results")
    }

    pub fn compute_log(&self) -> PathBuf {
        self.path().join("computed.log")
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    /// A command for the binary with this project's results directory and compute log.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .arg("--results")
            .arg(self.results())
            .current_dir(self.path())
            .env("ORCHESTRATE_TEST_COMPUTE_LOG", self.compute_log())
            .env("ORCHESTRATE_TEST_WORK_MS", "5")
            .env_remove("ORCHESTRATE_TEST_FAIL")
            .env_remove("ORCHESTRATE_TEST_CRASH");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run orchestrate")
    }

    /// Keys computed so far (one per stage execution).
    pub fn computed(&self) -> Vec<String> {
        std::fs::read_to_string(self.compute_log())
            .unwrap_or_default()
            .lines()
            .map(|l| l.split(' ').next().unwrap().to_string())
            .collect()
    }

    /// The cache entry directories whose `record.json` contains `needle`, in listing order.
    pub fn entries_with(&self, needle: &str) -> Vec<PathBuf> {
        std::fs::read_dir(self.results().join("cache/entries"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|d| {
                std::fs::read_to_string(d.join("record.json"))
                    .unwrap()
                    .contains(needle)
            })
            .collect()
    }

    pub fn table_csv(&self, experiment: &str) -> String {
        std::fs::read_to_string(
            self.results()
                .join(experiment)
                .join(format!("{experiment}.csv")),
        )
        .expect("table written")
    }
}

pub fn text(o: &Output) -> String {
    format!(
        "status: {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A sweep over simulated models: 2 models × 2 datasets × 3 methods × 2 sparsities × 2 sizes.
pub const SWEEP: &str = r#"
[experiment]
name = "sweep"

[models.a]
test = true
[models.b]
test = true

[datasets.d1]
kind = "synthetic"
classes = 4
[datasets.d2]
kind = "synthetic"
classes = 6

[methods.sg]
kind = "sparsegpt"
blocksize = 64

[grid]
model = ["a", "b"]
dataset = ["d1", "d2"]
method = ["magnitude", "wanda", "sg"]
sparsity = [0.5, "2:4"]
calibration_size = [8, 16]

[resources]
devices = ["cpu"]
jobs_per_device = 2
"#;

/// [`SWEEP`] with pruned weights kept, so that exactly the entries a test disturbs are recomputed.
pub fn sweep_keeping_pruned() -> String {
    SWEEP.replace("name = \"sweep\"", "name = \"sweep\"\nkeep_pruned = true")
}

/// The table without run-dependent columns (timings, log paths), for comparing runs.
pub fn stable_table(csv: &str) -> Vec<String> {
    table_without(csv, |h| h.ends_with("_seconds") || h == "log")
}

/// The table's lines without the columns `drop` names.
pub fn table_without(csv: &str, drop: impl Fn(&str) -> bool) -> Vec<String> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let keep: Vec<usize> = (0..header.len()).filter(|&i| !drop(header[i])).collect();
    std::iter::once(header.clone())
        .chain(lines.map(|l| l.split(',').collect()))
        .map(|cells: Vec<&str>| {
            keep.iter()
                .map(|&i| cells.get(i).copied().unwrap_or(""))
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect()
}

/// A randomly initialised model of `config` (seeded through libtorch's global generator: hold
/// the test's serial lock) with non-zero biases, so a branch pruned down to its bias still
/// shows. The biases are drawn in name order, never a hash map's.
pub fn seeded_model(
    config: &orchestrate::model::ClipConfig,
    seed: i64,
) -> orchestrate::model::Clip {
    use tch::Tensor;
    tch::manual_seed(seed);
    let mut model = orchestrate::model::Clip::new(config, tch::Device::Cpu);
    model.set_eval();
    let vars: std::collections::BTreeMap<String, Tensor> =
        model.vs.variables().into_iter().collect();
    tch::no_grad(|| {
        for (name, mut v) in vars {
            if name.ends_with(".bias") {
                let _ = v.g_add_(&(Tensor::randn_like(&v) * 0.1));
            }
        }
    });
    model
}
