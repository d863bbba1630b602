//! Retrieval evaluation end to end on the real binary: a Karpathy-split dataset the test writes,
//! a tiny model from `init-model`, and recall@k in the tables equal to the same computation in
//! transformers (`tests/reference/retrieval_reference.py`) on the same files.

use std::path::Path;

mod common;
use common::{run_in, run_reference};

/// 12 test images (each a distinct colour pattern) with two captions each, plus 16 train images
/// that evaluation must leave out (the intrinsic dimension reads them) and 6 validation images
/// (retraining selects its epoch on them).
fn write_dataset(dir: &Path) {
    std::fs::create_dir_all(dir.join("images")).unwrap();
    let mut entries = Vec::new();
    for i in 0..34u32 {
        let img = image::RgbImage::from_fn(40 + i, 36, |x, y| {
            image::Rgb([
                ((x * (i + 3) + y * 7) % 256) as u8,
                ((y * (i + 5)) % 256) as u8,
                ((i * 40 + x) % 256) as u8,
            ])
        });
        let name = format!("img{i}.png");
        img.save(dir.join("images").join(&name)).unwrap();
        entries.push(serde_json::json!({
            "filename": name,
            "split": match i {
                0..12 => "test",
                28.. => "val",
                _ => "restval",
            },
            "sentences": [
                {"raw": format!("a photo of pattern number {i}.")},
                {"raw": format!("a striped picture with {} colours", i + 2)},
            ],
        }));
    }
    std::fs::write(
        dir.join("dataset.json"),
        serde_json::to_string(&serde_json::json!({ "images": entries })).unwrap(),
    )
    .unwrap();
}

/// The one cache record of a stage kind.
fn record(d: &Path, kind: &str) -> serde_json::Value {
    std::fs::read_dir(d.join("results/cache/entries"))
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path().join("record.json");
            serde_json::from_slice::<serde_json::Value>(&std::fs::read(path).unwrap()).unwrap()
        })
        .find(|r| r["kind"] == kind)
        .unwrap()
}

/// An experiment's main table: its text, headers and rows.
fn table(d: &Path, experiment: &str) -> (String, csv::StringRecord, Vec<csv::StringRecord>) {
    let path = d.join(format!("results/{experiment}/{experiment}.csv"));
    let csv = std::fs::read_to_string(path).unwrap();
    let mut rows = csv::Reader::from_reader(csv.as_bytes());
    let headers = rows.headers().unwrap().clone();
    let all = rows.records().map(Result::unwrap).collect();
    (csv, headers, all)
}

/// A tiny model and the dataset in `d`, and the manifest's sections naming them.
fn project(d: &Path, name: &str) -> String {
    run_in(
        d,
        &[
            "init-model",
            "models/tiny",
            "--preset",
            "tiny",
            "--seed",
            "3",
        ],
    );
    write_dataset(&d.join("flickr"));
    format!(
        r#"
[experiment]
name = "{name}"

[models.tiny]
path = "models/tiny"

[datasets.flickr]
kind = "retrieval"
path = "flickr"
"#
    )
}

#[test]
fn retrieval_recall_matches_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(
        d.join("retrieval.toml"),
        project(d, "retrieval")
            + r#"
[grid]
model = ["tiny"]
dataset = ["flickr"]

[stages.intrinsic_dimension]
towers = "both"
"#,
    )
    .unwrap();
    run_in(d, &["run", "retrieval.toml"]);
    let (_, headers, rows) = table(d, "retrieval");
    let row = &rows[0];
    let ours = |name: &str| -> f64 {
        let col = headers.iter().position(|h| h == name).unwrap();
        row.get(col).unwrap().parse().unwrap()
    };

    let out = run_reference(
        "retrieval_reference.py",
        &[
            d.join("models/tiny"),
            d.join("flickr/dataset.json"),
            d.join("flickr/images"),
            "test".into(),
        ],
    );
    let theirs: serde_json::Value = serde_json::from_str(&out).unwrap();

    // The intrinsic dimension reads the train split: its 16 images and 32 distinct captions.
    let id_csv = std::fs::read_to_string(d.join("results/retrieval/retrieval_id.csv")).unwrap();
    let mut id = csv::Reader::from_reader(id_csv.as_bytes());
    let h = id.headers().unwrap().clone();
    let col = |name: &str| h.iter().position(|x| x == name).unwrap();
    let id_rows: Vec<csv::StringRecord> = id.records().map(Result::unwrap).collect();
    // Tiny preset: 3 vision layers, 2 text layers.
    assert_eq!(id_rows.len(), 3 + 2);
    for r in &id_rows {
        let want = if &r[col("tower")] == "vision" {
            "16"
        } else {
            "32"
        };
        assert_eq!(&r[col("samples")], want);
        assert!(r[col("intrinsic_dimension")].parse::<f64>().unwrap() > 0.0);
    }
    for dir in ["image_to_text", "text_to_image"] {
        let mut last = 0.0;
        for k in [1, 5, 10] {
            let name = format!("{dir}_r{k}");
            let (a, b) = (ours(&name), theirs[&name].as_f64().unwrap());
            // Recall is a count over 12 images / 24 texts: identical ranks give identical values.
            assert!(
                (a - b).abs() < 1e-9,
                "{name}: orchestrate {a}, transformers {b}"
            );
            assert!(a >= last, "{name} below recall at a smaller k");
            last = a;
        }
    }
}

/// Fisher on a retrieval dataset prunes both towers, each to its own MAC budget, with the ETH
/// port's InfoNCE loss (the vision tower against the unpruned caption embeddings, the text tower
/// against the unpruned image embeddings), from a seeded draw or an explicit index list with
/// repeats; both physical towers match their masked models and the point reports recall.
#[test]
fn fisher_prunes_both_towers_on_captions() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(
        d.join("fisher.toml"),
        project(d, "fisher")
            + r#"
[grid]
model = ["tiny"]
dataset = ["flickr"]
method = ["fisher", "listed"]
sparsity = [0.5]

[methods.fisher]
towers = "both"
num_samples = 48
batch_size = 16

[methods.listed]
kind = "fisher"
towers = "both"
batch_size = 16
indices = [0, 0, 3, 3, 3, 7, 12, 20, 31, 31, 1, 2, 4, 5, 6, 8, 9, 10, 11, 13, 14, 15, 16, 17]
"#,
    )
    .unwrap();
    run_in(d, &["run", "fisher.toml"]);
    let (csv, headers, all) = table(d, "fisher");
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    assert_eq!(all.len(), 3, "{csv}");
    for r in all.iter().filter(|r| &r[col("method")] != "dense") {
        assert_eq!(&r[col("status")], "done", "{csv}");
        let r1: f64 = r[col("image_to_text_r1")].parse().unwrap();
        assert!((0.0..=1.0).contains(&r1));
        let achieved: f64 = r[col("achieved_sparsity")].parse().unwrap();
        assert!((0.5..0.6).contains(&achieved), "{achieved}");
        // The evaluated model is smaller in both towers.
        let text_macs: f64 = r[col("text_macs")].parse().unwrap();
        let dense_text: f64 = all[0][col("text_macs")].parse().unwrap();
        assert!(text_macs < 0.75 * dense_text, "{text_macs} vs {dense_text}");
    }
    // Each tower's record: its own budget, and a physical model that matches the masked one.
    let entries = d.join("results/cache/entries");
    let mut seen = 0;
    for e in std::fs::read_dir(entries).unwrap() {
        let record = std::fs::read_to_string(e.unwrap().path().join("record.json")).unwrap();
        let record: serde_json::Value = serde_json::from_str(&record).unwrap();
        let Some(towers) = record["metrics"]["towers"].as_object() else {
            continue;
        };
        if !towers.contains_key("text") {
            continue;
        }
        seen += 1;
        for (name, t) in towers {
            assert!(t["mac_fraction"].as_f64().unwrap() <= 0.5, "{name}: {t}");
            let check = &t["physical_check"];
            assert!(
                check["max_abs_deviation"].as_f64() <= check["tolerance"].as_f64(),
                "{name}: {check}"
            );
        }
        let samples = record["metrics"]["samples"].as_u64().unwrap();
        let drawn = record["metrics"]["drawn"].as_bool().unwrap();
        assert_eq!(samples, if drawn { 48 } else { 24 });
    }
    assert_eq!(seen, 2);
}

/// UPop on captions: the contrastive search with the momentum model and the queue masks both
/// towers to p = 0.5 of the weighted units; the evaluated model is the physically smaller one,
/// which matched the masked model in the prune. Then UPop's retraining (every parameter, the
/// same loss, per-epoch cosine) with the best epoch chosen on the validation split, reported as
/// R@K both ways and their mean after retraining.
#[test]
fn upop_searches_both_towers_on_captions() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(
        d.join("upop.toml"),
        project(d, "upop")
            + r#"
[grid]
model = ["tiny"]
dataset = ["flickr"]
method = ["upop"]
sparsity = [0.5]

[methods.upop]
epochs = 2
interval = 2
batch_size = 4
accumulation = 2
queue_size = 16
lr = 1e-4

[stages.retrain]
trainable = "all"
schedule = "epoch-cosine"
search_epochs = true
lr = 1e-4
min_lr = 0
weight_decay = 0.2
batch_size = 4
accumulation = 2
queue_size = 16
train_size = 32
"#,
    )
    .unwrap();
    let manifest = std::fs::read_to_string(d.join("upop.toml"))
        .unwrap()
        .replace(
            "path = \"flickr\"\n",
            "path = \"flickr\"\nval_split = \"val\"\n",
        );
    std::fs::write(d.join("upop.toml"), manifest).unwrap();
    run_in(d, &["run", "upop.toml"]);
    let (csv, headers, all) = table(d, "upop");
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let (dense, upop) = (&all[0], &all[1]);
    assert_eq!(&upop[col("status")], "done", "{csv}");
    let achieved: f64 = upop[col("achieved_sparsity")].parse().unwrap();
    assert!((0.45..0.55).contains(&achieved), "{achieved}");
    for tower in ["vision_macs", "text_macs"] {
        let (a, b): (f64, f64) = (
            upop[col(tower)].parse().unwrap(),
            dense[col(tower)].parse().unwrap(),
        );
        assert!(a < 0.9 * b, "{tower}: {a} vs {b}");
    }
    let prune = record(d, "prune");
    let m = &prune["metrics"];
    // 16 training images × 2 captions, global batch 8: 4 steps per epoch, updates at 0, 2, 4,
    // 6 and the last step (7), the last at π = p.
    assert_eq!(m["steps"], 8);
    let updates = m["updates"].as_array().unwrap();
    let steps: Vec<u64> = updates
        .iter()
        .map(|u| u["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [0, 2, 4, 6, 7]);
    assert_eq!(updates.last().unwrap()["ratio"], 0.5);
    for (name, t) in m["towers"].as_object().unwrap() {
        let check = &t["physical_check"];
        assert!(
            check["max_abs_deviation"].as_f64() <= check["tolerance"].as_f64(),
            "{name}: {check}"
        );
        // Every layer keeps some head dimensions and neurons.
        for per_layer in ["head_dims_per_layer", "neurons_per_layer"] {
            assert!(
                t[per_layer]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|n| n.as_i64() > Some(0))
            );
        }
    }
    assert!(m["final_loss"].as_f64().unwrap().is_finite());

    // Retraining: the row's R@K after retraining are the test metrics of the epoch chosen on
    // the validation split (or the model before retraining, epoch 0).
    let retrain = record(d, "retrain");
    let r = &retrain["metrics"];
    assert_eq!(r["selected_on"], "val");
    assert_eq!(r["trainable"], "all");
    // As many epochs as the search (`search_epochs`: UPop's rule).
    let epochs = r["epochs"].as_array().unwrap();
    assert_eq!(epochs.len(), 2);
    let best_epoch = r["best_epoch"].as_u64().unwrap() as usize;
    let best = &r["best"];
    if best_epoch == 0 {
        assert_eq!(best, &r["initial"]);
    } else {
        let chosen = &epochs[best_epoch - 1];
        assert_eq!(best["r_mean"], chosen["r_mean"]);
        // The chosen epoch has the highest validation score of all evaluated ones.
        let v = |e: &serde_json::Value| e["val_selection"].as_f64().unwrap();
        assert!(epochs.iter().all(|e| v(e) <= v(chosen)));
    }
    for name in ["image_to_text_r1", "text_to_image_r10", "r_mean"] {
        let column: f64 = upop[col(&format!("retrain_{name}"))].parse().unwrap();
        assert_eq!(column, best[name].as_f64().unwrap(), "{name}");
    }
    // The six recalls (the columns before `r_mean`).
    let mean: f64 = orchestrate::util::columns::RETRIEVAL[..6]
        .iter()
        .map(|k| best[k].as_f64().unwrap())
        .sum::<f64>()
        / 6.0;
    assert!((mean - best["r_mean"].as_f64().unwrap()).abs() < 1e-12);
    // The learning rate followed the per-epoch cosine and every parameter trained.
    for (k, e) in epochs.iter().enumerate() {
        let want = 1e-4 * 0.5 * (1.0 + (std::f64::consts::PI * k as f64 / 2.0).cos());
        assert!((e["last_lr"].as_f64().unwrap() - want).abs() < 1e-15, "{e}");
    }
    assert!(r["trained_parameters"].as_u64().unwrap() > 100_000);
}

/// PLATON + ID on captions (the reference's Flickr30K setting, small): pruned while training with
/// the contrastive loss and its momentum model and queue, scores weighted by the per-Linear ID
/// of the dense model measured on the captions' images and texts; the masked set ends at exactly
/// the target sparsity and the pruned model is evaluated by recall.
#[test]
fn platon_prunes_both_towers_on_captions() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(
        d.join("platon.toml"),
        project(d, "platon")
            + r#"
[grid]
model = ["tiny"]
dataset = ["flickr"]
method = ["platon"]
sparsity = [0.8]

[methods.platon]
use_id = true
id_samples = 16
epochs = 2
batch_size = 4
accumulation = 2
queue_size = 16
lr = 1e-4
window = 2
final_warmup = 0.5
"#,
    )
    .unwrap();
    run_in(d, &["run", "platon.toml"]);
    let (csv, headers, all) = table(d, "platon");
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let platon = all.iter().find(|r| &r[col("method")] == "platon").unwrap();
    assert_eq!(&platon[col("status")], "done", "{csv}");
    let r1: f64 = platon[col("image_to_text_r1")].parse().unwrap();
    assert!((0.0..=1.0).contains(&r1));
    let prune = record(d, "prune");
    let m = &prune["metrics"];
    let n = m["prunable_weights"].as_i64().unwrap();
    assert_eq!(
        m["pruned_weights"].as_i64().unwrap(),
        (n as f64 * 0.8).round() as i64
    );
    // 16 training images × 2 captions, global batch 8: 4 steps per epoch, 8 in all, masking on
    // the window and every step of the final phase, the last exactly.
    let t = &m["training"];
    assert_eq!(t["steps"], 8);
    let events = t["masking_events"].as_array().unwrap();
    assert_eq!(events.last().unwrap()["step"], 8);
    assert!(events.len() >= 3, "{events:?}");
    // One factor per masked tensor: (3 vision + 2 text layers) × 3 Linears × (weight, bias).
    assert_eq!(t["intrinsic_dimensions"].as_array().unwrap().len(), 30);
    assert!(t["final_loss"].as_f64().unwrap().is_finite());
}
