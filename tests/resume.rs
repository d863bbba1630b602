//! Training stages resume from their checkpoints: SIGKILL the driver while fine-tuning, run
//! again, SIGKILL it while UPop searches, PLATON prunes or a model retrains, run again — and every trained
//! tensor and metric equals an uninterrupted run's, bit for bit, with the records saying where
//! each killed stage resumed.

mod common;
use common::{Project, text};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

const MANIFEST: &str = r#"
[experiment]
name = "resume"

[models.tiny]
path = "models/tiny"

[datasets.shapes]
kind = "synthetic"
classes = 4
train_size = 160
test_size = 40
image_size = 32
seed = 0

[grid]
model = ["tiny"]
dataset = ["shapes"]
method = ["magnitude", "upop", "platon"]
sparsity = [0.5]

[methods.upop]
epochs = 3
interval = 4
batch_size = 8
accumulation = 2

[methods.platon]
epochs = 2
batch_size = 16
final_warmup = 0.5
use_id = true
id_samples = 40

[stages.finetune]
steps = 24
batch_size = 16
lr = 1e-3
warmup_steps = 4

[stages.retrain]
epochs = 3
train_size = 96
batch_size = 16
lr = 1e-3
convpass_scale = 1.0
convpass_xavier = false

[stages.evaluate]
timing = false

[resources]
threads = 1
checkpoint_minutes = 0
"#;

fn project() -> Project {
    let p = Project::new();
    common::run_in(p.path(), &["init-model", "models/tiny", "--preset", "tiny"]);
    p.write("resume.toml", MANIFEST);
    p
}

fn record(entry: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(entry.join("record.json")).unwrap()).unwrap()
}

/// The entries of the stages of `kind`, by label.
fn entries(p: &Project, kind: &str) -> std::collections::BTreeMap<String, PathBuf> {
    p.entries_with(kind)
        .into_iter()
        .filter(|e| record(e)["kind"] == kind)
        .map(|e| (record(&e)["label"].as_str().unwrap().to_string(), e))
        .collect()
}

/// Starts a slow run, waits until a stage not in `skip` has a checkpoint past step 2, kills the
/// driver (its stage processes die with it) and returns that stage's key; `None` when the run
/// ends first.
fn kill_mid_training(p: &Project, skip: &[String]) -> Option<String> {
    let mut child = p
        .cmd(&["run", "resume.toml"])
        .env("ORCHESTRATE_TEST_STEP_MS", "150")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let scratch = p.results().join("cache/scratch");
    let deadline = Instant::now() + Duration::from_secs(300);
    let key = loop {
        assert!(Instant::now() < deadline, "no checkpoint appeared");
        if child.try_wait().unwrap().is_some() {
            return None;
        }
        let found = std::fs::read_dir(&scratch).ok().and_then(|dir| {
            dir.filter_map(Result::ok).find_map(|e| {
                let key = e.file_name().to_string_lossy().into_owned();
                let index = std::fs::read(e.path().join("checkpoint.json")).ok()?;
                let index: serde_json::Value = serde_json::from_slice(&index).ok()?;
                (!skip.contains(&key) && index["step"].as_u64()? >= 2).then_some(key)
            })
        });
        if let Some(key) = found {
            break key;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !p.results()
            .join("cache/entries")
            .join(&key)
            .join("record.json")
            .exists(),
        "the stage finished before the kill"
    );
    Some(key)
}

#[test]
fn killed_training_stages_resume_to_an_uninterrupted_result() {
    let whole = project();
    let out = whole.run(&["run", "resume.toml"]);
    assert!(out.status.success(), "{}", text(&out));

    let p = project();
    let mut killed: Vec<String> = vec![];
    for _ in 0..4 {
        if let Some(key) = kill_mid_training(&p, &killed) {
            killed.push(key);
        }
    }
    let out = p.run(&["run", "resume.toml"]);
    assert!(out.status.success(), "{}", text(&out));

    let mut resumed = std::collections::BTreeSet::new();
    for (kind, artifact) in [
        ("finetune", "vision/model.safetensors"),
        ("prune", "weights.safetensors"),
        ("retrain", "retrained.safetensors"),
    ] {
        let (mine, theirs) = (entries(&p, kind), entries(&whole, kind));
        assert_eq!(
            mine.keys().collect::<Vec<_>>(),
            theirs.keys().collect::<Vec<_>>()
        );
        for (label, dir) in &mine {
            let (a, b) = (record(dir), record(&theirs[label]));
            let key = a["key"].as_str().unwrap().to_string();
            let from = a["metrics"]["resumed_from_step"].as_u64().unwrap_or(0);
            if killed.contains(&key) {
                assert!(from >= 2, "{label} resumed from step {from}");
            }
            if from > 0 {
                resumed.insert(kind);
            }
            assert_eq!(b["metrics"]["resumed_from_step"].as_u64().unwrap_or(0), 0);
            // The trained tensors, bit for bit (dropped artifacts' checksums stay in the
            // record).
            let checksum = |r: &serde_json::Value| {
                r["artifacts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|x| x["name"] == artifact)
                    .map(|x| x["sha256"].clone())
            };
            assert_eq!(checksum(&a), checksum(&b), "{label}: {artifact}");
            for metric in [
                "final_loss",
                "loss_curve",
                "best_top1",
                "epochs",
                "last_top1",
                "updates",
                "towers",
            ] {
                assert_eq!(
                    a["metrics"][metric], b["metrics"][metric],
                    "{label}: {metric}"
                );
            }
            // PLATON's record, less where it resumed: loss curve, masking events, ID vector.
            let training = |r: &serde_json::Value| {
                let mut t = r["metrics"]["training"].clone();
                if let Some(t) = t.as_object_mut() {
                    t.remove("resumed_from_step");
                    t.remove("checkpoint_discarded");
                }
                t
            };
            assert_eq!(training(&a), training(&b), "{label}: training");
            // The checkpoints are spent once the entry is published.
            assert!(!p.results().join("cache/scratch").join(&key).exists());
        }
    }
    // Fine-tuning and UPop's search were each killed mid-run and resumed.
    assert!(
        resumed.contains("finetune") && resumed.contains("prune"),
        "{resumed:?}"
    );
    assert_eq!(
        common::stable_table(&p.table_csv("resume")),
        common::stable_table(&whole.table_csv("resume"))
    );
}
