//! The demo pipeline end to end on the real binary: a new tiny model, fine-tuned on synthetic
//! shapes, evaluated zero-shot — far above chance — pruned by every method, and the tables
//! written; one pruned point exported and evaluated by transformers with the same accuracy.

use std::path::Path;
use std::process::Command;

mod common;
use common::{BIN, run_reference};

#[test]
fn demo_finetunes_far_above_chance() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = Command::new(BIN)
        .args(["init-model", "models/tiny", "--preset", "tiny"])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let demo = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/demo.toml"),
    )
    .unwrap()
    .replace("models/tiny-clip", "models/tiny")
    .replace("steps = 250", "steps = 150")
    .replace("test_size = 500", "test_size = 200");
    std::fs::write(d.join("demo.toml"), demo).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .current_dir(d)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, log) = run(&["run", "demo.toml"]);
    assert_eq!(code, Some(0), "{log}");
    let csv = std::fs::read_to_string(d.join("results/demo/demo.csv")).unwrap();
    let mut rows = csv::Reader::from_reader(csv.as_bytes());
    let headers = rows.headers().unwrap().clone();
    let all: Vec<csv::StringRecord> = rows.records().map(Result::unwrap).collect();
    let row = &all[0];
    let get = |name: &str| {
        row.get(headers.iter().position(|h| h == name).unwrap())
            .unwrap()
            .to_string()
    };
    let top1: f64 = get("top1").parse().unwrap();
    assert_eq!(get("n_eval"), "200");
    // 10 classes: chance is 0.1.
    assert!(
        top1 > 0.8,
        "fine-tuned tiny model reaches only {top1}\n{log}"
    );

    // Every pruned point: evaluated, at its sparsity (both towers, six Linears per layer).
    let field = |r: &csv::StringRecord, name: &str| -> String {
        r.get(headers.iter().position(|h| h == name).unwrap())
            .unwrap()
            .to_string()
    };
    // dense, 5 methods × 3 sparsities, SLS, Fisher at two MAC budgets, UPop, PLATON + ID
    assert_eq!(all.len(), 1 + 5 * 3 + 1 + 2 + 1 + 1);
    let mut top1_at_half = std::collections::BTreeMap::new();
    // SLS: a depth of 1…3 blocks, and achieved sparsity = the fraction of blocks dropped.
    let sls = all.iter().find(|r| field(r, "method") == "sls").unwrap();
    assert_eq!(
        (field(sls, "method").as_str(), field(sls, "status").as_str()),
        ("sls", "done")
    );
    let depth: f64 = field(sls, "vision_depth").parse().unwrap();
    assert!((1.0..=3.0).contains(&depth));
    let achieved: f64 = field(sls, "achieved_sparsity").parse().unwrap();
    assert!((achieved - (3.0 - depth) / 3.0).abs() < 1e-12);
    for r in all[1..].iter().filter(|r| field(r, "method") != "sls") {
        assert_eq!(field(r, "status"), "done");
        let achieved: f64 = field(r, "achieved_sparsity").parse().unwrap();
        let target: f64 = field(r, "target_sparsity").parse().unwrap();
        assert!((achieved - target).abs() < 0.01, "{r:?}");
        if field(r, "sparsity") == "0.5" {
            top1_at_half.insert(field(r, "method"), field(r, "top1").parse::<f64>().unwrap());
        }
    }
    eprintln!("top-1 at 50 % unstructured: {top1_at_half:?}");

    // Figures: the ones this table supports, as SVG (text drawn as paths) and PNG.
    let figures = d.join("results/demo/figures");
    for name in [
        "accuracy_vs_sparsity",
        "intrinsic_dimension",
        "accuracy_vs_macs",
        "accuracy_vs_parameters",
        "accuracy_vs_throughput",
    ] {
        let svg = std::fs::read_to_string(figures.join(format!("{name}.svg"))).unwrap();
        assert!(svg.starts_with("<svg") && !svg.contains("<text"), "{name}");
        let png = image::open(figures.join(format!("{name}.png"))).unwrap();
        assert!(png.width() >= 600 && png.height() >= 300, "{name}");
    }
    // No calibration sweep, no retraining: no figure pretends otherwise.
    assert!(!figures.join("calibration_ablation.svg").exists());
    assert!(!figures.join("retraining.svg").exists());

    // Intrinsic dimension of every model's vision layers (3 in the tiny preset, D after SLS),
    // dense and pruned: the long table has one row per point and layer, the main table the
    // summaries; plus the dense model's per-Linear measurement PLATON + ID reads (out_proj, fc1,
    // fc2 of 3 vision and 2 text layers, on 500 images), each row naming its module.
    let id_csv = std::fs::read_to_string(d.join("results/demo/demo_id.csv")).unwrap();
    let mut id_rows = csv::Reader::from_reader(id_csv.as_bytes());
    let id_headers = id_rows.headers().unwrap().clone();
    let (per_linear, id_all): (Vec<csv::StringRecord>, Vec<csv::StringRecord>) =
        id_rows.records().map(Result::unwrap).partition(|r| {
            r.iter().any(|f| {
                f.ends_with(".mlp.fc1") || f.ends_with(".out_proj") || f.ends_with(".mlp.fc2")
            })
        });
    assert_eq!(id_all.len(), (all.len() - 1) * 3 + depth as usize);
    assert_eq!(per_linear.len(), (3 + 2) * 3);
    let at = |r: &csv::StringRecord, name: &str| {
        r.get(id_headers.iter().position(|h| h == name).unwrap())
            .unwrap()
            .to_string()
    };
    for r in &id_all {
        assert_eq!(
            (at(r, "status").as_str(), at(r, "tower").as_str()),
            ("done", "vision")
        );
        let dim: f64 = at(r, "intrinsic_dimension").parse().unwrap();
        // Width-64 representations of 1000 images: a positive dimension below the width.
        assert!(dim > 1.0 && dim < 64.0, "{r:?}");
        assert_eq!(at(r, "samples"), "1000");
    }
    for r in &all {
        let mean: f64 = field(r, "vision_id_mean").parse().unwrap();
        assert!(mean > 1.0 && mean < 64.0);
    }

    // Export a pruned point; transformers loads it and measures the same accuracy.
    let export = |method: &str, sparsity: &str, out: &str, extra: &[&str]| {
        let mut args = vec![
            "export",
            "demo.toml",
            "--model",
            "tiny",
            "--dataset",
            "shapes",
            "--method",
            method,
            "--sparsity",
            sparsity,
            "--out",
            out,
        ];
        args.extend_from_slice(extra);
        let (code, log) = run(&args);
        assert_eq!(code, Some(0), "{log}");
    };
    export("sparsegpt", "0.5", "exported", &[]);
    let synthetic = orchestrate::data::synthetic::Synthetic {
        classes: 10,
        image_size: 48,
        seed: 0,
    };
    std::fs::create_dir_all(d.join("images")).unwrap();
    let mut paths = Vec::new();
    let mut labels = Vec::new();
    for i in 0..200 {
        let path = d.join(format!("images/{i}.png"));
        synthetic.image("test", i).save(&path).unwrap();
        paths.push(path);
        labels.push(synthetic.label(i));
    }
    let prompts = orchestrate::data::Prompts {
        classnames: synthetic.classnames(),
        templates: vec!["a photo of a {c}.".into()],
    };
    std::fs::write(
        d.join("spec.json"),
        serde_json::json!({
            "images": paths, "labels": labels,
            "classnames": prompts.classnames, "templates": prompts.templates,
        })
        .to_string(),
    )
    .unwrap();
    let out = run_reference(
        "zeroshot_reference.py",
        &[d.join("exported"), d.join("spec.json")],
    );
    let theirs: f64 = out.trim().parse().unwrap();
    let ours = top1_at_half["sparsegpt"];
    // Same weights, same images: at most one near-tie may flip.
    assert!(
        (ours - theirs).abs() <= 1.0 / 200.0 + 1e-9,
        "orchestrate {ours}, transformers {theirs}"
    );

    // A Fisher point exports at full size (pruned heads and neurons zeroed, scales folded):
    // transformers measures the same accuracy.
    let fisher_top1: f64 = all
        .iter()
        .find(|r| field(r, "method") == "fisher" && field(r, "sparsity") == "0.5")
        .map(|r| field(r, "top1").parse().unwrap())
        .unwrap();
    export("fisher", "0.5", "fisher-hf", &[]);
    let out = run_reference(
        "zeroshot_reference.py",
        &[d.join("fisher-hf"), d.join("spec.json")],
    );
    let theirs: f64 = out.trim().parse().unwrap();
    assert!(
        (fisher_top1 - theirs).abs() <= 1.0 / 200.0 + 1e-9,
        "orchestrate {fisher_top1}, transformers {theirs}"
    );
    // --physical: the smaller model, which a manifest loads by path and evaluates the same.
    export("fisher", "0.5", "fisher-small", &["--physical"]);
    let config = std::fs::read_to_string(d.join("fisher-small/config.json")).unwrap();
    assert!(config.contains("layer_shapes"), "{config}");
    let small = std::fs::read_to_string(d.join("demo.toml"))
        .unwrap()
        .replace("models/tiny\"", "fisher-small\"")
        .replace("name = \"demo\"", "name = \"small\"");
    let small = small[..small.find("[grid]").unwrap()].to_string()
        + "[grid]\nmodel = [\"tiny\"]\ndataset = [\"shapes\"]\n";
    std::fs::write(d.join("small.toml"), small).unwrap();
    let (code, log) = run(&["run", "small.toml"]);
    assert_eq!(code, Some(0), "{log}");
    let csv = std::fs::read_to_string(d.join("results/small/small.csv")).unwrap();
    let mut rows = csv::Reader::from_reader(csv.as_bytes());
    let h = rows.headers().unwrap().clone();
    let r = rows.records().next().unwrap().unwrap();
    let top1: f64 = r[h.iter().position(|c| c == "top1").unwrap()]
        .parse()
        .unwrap();
    assert_eq!(top1, fisher_top1, "{csv}");

    // Retention (keep_pruned = false): once every reader is done, the fine-tuned tower's and the
    // pruned models' weights are dropped; configs, masks and records stay. (The export above
    // recomputed the SparseGPT point's weights, and transformers agreed on them.)
    let files: Vec<std::path::PathBuf> = walkdir::WalkDir::new(d.join("results/cache/entries"))
        .into_iter()
        .filter_map(Result::ok)
        .map(|e| e.into_path())
        .collect();
    let named = |suffix: &str| files.iter().filter(|p| p.ends_with(suffix)).count();
    assert_eq!(
        named("vision/model.safetensors"),
        0,
        "the fine-tuned tower was dropped"
    );
    assert_eq!(named("vision/config.json"), 1);
    assert_eq!(
        named("weights.safetensors"),
        0,
        "pruned weights were dropped"
    );
    // 5 methods × 3 sparsities and PLATON + ID.
    assert_eq!(named("masks.safetensors"), 16);

    // Re-running is the resume: nothing recomputes.
    let (code, log) = run(&["run", "demo.toml"]);
    assert_eq!(code, Some(0));
    assert!(log.contains("65 cached"), "{log}");
}
