//! Retraining end to end on the real binary: a tiny fine-tuned model truncated by SLS recovers
//! its accuracy with Convpass + a linear head; a magnitude-pruned model retrained in full keeps
//! exactly its pruned zeros. Plus the adapters' identity at initialisation.

mod common;
use common::run_in;
use std::path::Path;

const MANIFEST: &str = r#"
[experiment]
name = "retrain"

[models.tiny]
path = "models/tiny"

[datasets.shapes]
kind = "synthetic"
classes = 10
train_size = 1000
test_size = 200
image_size = 48
seed = 0

# α = 0: every block with a non-negative score passes, so the tower is cut to (near) one block.
[methods.sls-shallow]
kind = "sls"
alpha = 0.0

[grid]
model = ["tiny"]
dataset = ["shapes"]
method = ["sls-shallow", "magnitude"]
sparsity = [0.5]
calibration_size = [300]

[stages.finetune]
steps = 120
batch_size = 64
lr = 2e-3
warmup_steps = 12

[stages.retrain]
epochs = 4
train_size = 500
lr = 1e-3
convpass_scale = 1.0
convpass_xavier = false
"#;

fn rows(dir: &Path) -> Vec<std::collections::HashMap<String, String>> {
    let csv = std::fs::read_to_string(dir.join("results/retrain/retrain.csv")).unwrap();
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let headers = reader.headers().unwrap().clone();
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            headers
                .iter()
                .zip(r.iter())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// The retrain records of the cache, by label.
fn retrain_records(dir: &Path) -> Vec<serde_json::Value> {
    walkdir::WalkDir::new(dir.join("results/cache"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_name() == "record.json")
        .map(|e| {
            serde_json::from_slice::<serde_json::Value>(&std::fs::read(e.path()).unwrap()).unwrap()
        })
        .filter(|r| r["kind"] == "retrain")
        .collect()
}

#[test]
fn retraining_recovers_truncated_models_and_keeps_pruned_zeros() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    run_in(d, &["init-model", "models/tiny", "--preset", "tiny"]);
    std::fs::write(d.join("retrain.toml"), MANIFEST).unwrap();
    run_in(d, &["run", "retrain.toml"]);
    let table = rows(d);
    let sls = table.iter().find(|r| r["method"] == "sls-shallow").unwrap();
    assert_eq!(sls["status"], "done");
    let (before, best): (f64, f64) = (
        sls["top1"].parse().unwrap(),
        sls["retrain_best_top1"].parse().unwrap(),
    );
    let depth: usize = sls["vision_depth"].parse().unwrap();
    eprintln!("SLS depth {depth}: top-1 {before} without retraining, {best} retrained");
    // What the README claims: α = 0 truncates the tower, and four epochs recover the accuracy.
    assert!(depth < 3, "α = 0 keeps {depth} of 3 blocks");
    assert!(
        best >= 0.95,
        "retraining a truncated model: {before} → {best}"
    );
    assert!(
        best > before + 0.1,
        "retraining a truncated model: {before} → {best}"
    );
    for r in retrain_records(d) {
        let m = &r["metrics"];
        let epochs = m["epochs"].as_array().unwrap();
        assert_eq!(epochs.len(), 4);
        // The best is the initial model or an evaluated epoch, and names that epoch.
        let initial = m["initial_top1"].as_f64().unwrap();
        let best = m["best_top1"].as_f64().unwrap();
        let best_epoch = m["best_epoch"].as_u64().unwrap() as usize;
        let evaluated: Vec<f64> = epochs.iter().map(|e| e["top1"].as_f64().unwrap()).collect();
        let max = evaluated.iter().copied().fold(initial, f64::max);
        assert_eq!(best, max, "{m}");
        if best_epoch == 0 {
            assert_eq!(best, initial);
        } else {
            assert_eq!(best, evaluated[best_epoch - 1]);
        }
        assert_eq!(m["last_top1"].as_f64().unwrap(), evaluated[3]);
    }

    // Full retraining of the vision tower after magnitude pruning: same zeros, exactly.
    let full = MANIFEST.replace(
        "[stages.retrain]\n",
        "[stages.retrain]\ntrainable = \"vision\"\n",
    );
    std::fs::write(d.join("retrain.toml"), full).unwrap();
    run_in(d, &["run", "retrain.toml"]);
    let records = retrain_records(d);
    let full: Vec<_> = records
        .iter()
        .filter(|r| r["metrics"]["trainable"] == "vision")
        .collect();
    assert_eq!(full.len(), 2);
    let magnitude = full
        .iter()
        .find(|r| r["label"].as_str().unwrap().contains("magnitude"))
        .unwrap();
    let m = &magnitude["metrics"];
    let zeros = m["encoder_zero_weights_before"].as_i64().unwrap();
    assert!(zeros > 0);
    assert_eq!(
        m["encoder_zero_weights_after"].as_i64().unwrap(),
        zeros,
        "pruned weights stay zero"
    );
    let row = rows(d)
        .into_iter()
        .find(|r| r["method"] == "magnitude")
        .unwrap();
    // The prune's achieved sparsity counts the same zeros (both towers, six Linears per layer).
    let achieved: f64 = row["achieved_sparsity"].parse().unwrap();
    assert!((achieved - 0.5).abs() < 0.01);
    assert!(m["best_top1"].as_f64().unwrap() > row["top1"].parse::<f64>().unwrap());
}

#[test]
fn fresh_adapters_leave_the_model_unchanged() {
    use orchestrate::model::{Clip, create};
    use orchestrate::train::convpass::{Adapters, image_features};
    let mut config = create::preset("tiny").unwrap();
    config.text.vocab_size = 64;
    tch::manual_seed(2);
    let model = Clip::new(&config, tch::Device::Cpu);
    let size = config.vision.image_size;
    let pixels = tch::Tensor::randn([4, 3, size, size], (tch::Kind::Float, tch::Device::Cpu));
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    for xavier in [false, true] {
        let adapters = Adapters::new(&vs.root(), &model, 10.0, xavier);
        let _g = tch::no_grad_guard();
        let with = image_features(&model, Some(&adapters), &pixels, false);
        assert!(with.allclose(&model.image_features(&pixels), 1e-6, 1e-6, false));
    }
}

/// UPop at p = 0.5 and its retraining (every parameter of both towers, the zero-shot head
/// recomputed through the training text tower, per-epoch cosine), next to magnitude and Fisher at
/// a similar parameter count retrained the same way: UPop recovers, and magnitude keeps its zeros.
#[test]
fn upop_retrained_recovers_next_to_magnitude_and_fisher() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    run_in(d, &["init-model", "models/tiny", "--preset", "tiny"]);
    let manifest = MANIFEST
        .replace(
            "method = [\"sls-shallow\", \"magnitude\"]",
            "method = [\"upop\", \"magnitude\", \"fisher\"]",
        )
        .replace("calibration_size = [300]\n", "")
        .replace(
            "[stages.retrain]\nepochs = 4\ntrain_size = 500\nlr = 1e-3\nconvpass_scale = 1.0\nconvpass_xavier = false\n",
            r#"[stages.retrain]
trainable = "all"
head = "zero-shot"
schedule = "epoch-cosine"
epochs = 4
lr = 1e-4
min_lr = 0
weight_decay = 0.2
batch_size = 32
accumulation = 2
train_size = 1000

[methods.upop]
epochs = 2
interval = 5
batch_size = 32
accumulation = 2
lr = 1e-4

[methods.fisher]
num_samples = 256

[stages.evaluate]
timing = false
"#,
        );
    assert!(manifest.contains("trainable = \"all\"") && manifest.contains("\"upop\""));
    std::fs::write(d.join("retrain.toml"), manifest).unwrap();
    run_in(d, &["run", "retrain.toml"]);
    let table = rows(d);
    let get = |method: &str, column: &str| -> f64 {
        let r = table.iter().find(|r| r["method"] == method).unwrap();
        assert_eq!(r["status"], "done", "{method}");
        r[column].parse().unwrap()
    };
    for method in ["upop", "magnitude", "fisher"] {
        eprintln!(
            "{method} @ 0.5: top-1 {} → {} retrained; {} non-zero parameters (dense {})",
            get(method, "top1"),
            get(method, "retrain_best_top1"),
            get(method, "params_nonzero"),
            get("dense", "params_nonzero"),
        );
        assert!(get(method, "retrain_best_top1") >= get(method, "top1"));
    }
    let (before, after) = (get("upop", "top1"), get("upop", "retrain_best_top1"));
    assert!(
        after >= 0.95 && after > before + 0.1,
        "UPop {before} → {after}"
    );
    // Similar sizes: UPop's smaller model within 10 % of magnitude's non-zero count.
    let (upop, magnitude) = (
        get("upop", "params_nonzero"),
        get("magnitude", "params_nonzero"),
    );
    assert!(
        (upop / magnitude - 1.0).abs() < 0.1,
        "{upop} vs {magnitude}"
    );
    for r in retrain_records(d) {
        let m = &r["metrics"];
        assert_eq!(m["trainable"], "all");
        assert_eq!(
            m["encoder_zero_weights_after"], m["encoder_zero_weights_before"],
            "{}",
            r["label"]
        );
    }
}
