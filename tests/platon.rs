//! PLATON + intrinsic dimension end to end on the real binary: a tiny fine-tuned model pruned at
//! 50 % while it trains — PLATON, PLATON weighted by the dense model's per-Linear intrinsic
//! dimension, and Taylor — next to magnitude and Wanda. The achieved sparsity is the target
//! exactly, and the ID vector the prune used is the per-Linear measurement, module by module.

mod common;
use common::run_in;

const MANIFEST: &str = r#"
[experiment]
name = "platon"

[models.tiny]
path = "models/tiny"

[datasets.shapes]
kind = "synthetic"
classes = 10
train_size = 1000
test_size = 200
image_size = 48
seed = 0

[methods.platon]
epochs = 2
batch_size = 32
lr = 1e-4
final_warmup = 0.5

[methods.platon-id]
kind = "platon"
use_id = true
id_samples = 200
epochs = 2
batch_size = 32
lr = 1e-4
final_warmup = 0.5

[methods.taylor]
kind = "platon"
importance = "taylor"
epochs = 2
batch_size = 32
lr = 1e-4
final_warmup = 0.5

[grid]
model = ["tiny"]
dataset = ["shapes"]
method = ["platon", "platon-id", "taylor", "magnitude", "wanda"]
sparsity = [0.5]
calibration_size = [128]

[stages.finetune]
steps = 120
batch_size = 64
lr = 2e-3
warmup_steps = 12

[stages.evaluate]
timing = false
"#;

fn records(dir: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_dir(dir.join("results/cache/entries"))
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path().join("record.json");
            serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
        })
        .collect()
}

#[test]
fn platon_prunes_while_fine_tuning_with_and_without_intrinsic_dimension() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    run_in(d, &["init-model", "models/tiny", "--preset", "tiny"]);
    std::fs::write(d.join("platon.toml"), MANIFEST).unwrap();
    run_in(d, &["run", "platon.toml"]);
    let csv = std::fs::read_to_string(d.join("results/platon/platon.csv")).unwrap();
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let headers = reader.headers().unwrap().clone();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let get = |method: &str, column: &str| -> String {
        let r = rows.iter().find(|r| &r[2] == method).unwrap();
        r[headers.iter().position(|h| h == column).unwrap()].to_string()
    };
    for method in ["platon", "platon-id", "taylor", "magnitude", "wanda"] {
        assert_eq!(get(method, "status"), "done", "{method}: {csv}");
        eprintln!(
            "{method} @ 0.5: top-1 {}, achieved {}, {} non-zero parameters",
            get(method, "top1"),
            get(method, "achieved_sparsity"),
            get(method, "params_nonzero")
        );
    }
    let all = records(d);
    // The per-Linear measurement: out_proj, fc1, fc2 of every layer, vision first.
    let id = all
        .iter()
        .find(|r| r["kind"] == "intrinsic-dimension")
        .expect("the dense per-Linear measurement");
    assert_eq!(id["params"]["measure"]["layers"], "linears");
    let measured: Vec<(String, f64)> = id["metrics"]["towers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["layers"].as_array().unwrap().clone())
        .map(|l| {
            (
                l["module"].as_str().unwrap().to_string(),
                l["dimension"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        measured.len(),
        (3 + 2) * 3,
        "tiny: 3 vision + 2 text layers"
    );
    assert!(
        measured[0]
            .0
            .starts_with("vision_model.encoder.layers.0.self_attn.out_proj")
    );
    assert!(
        measured[3 * 3]
            .0
            .starts_with("text_model.encoder.layers.0.self_attn.out_proj")
    );

    for r in all.iter().filter(|r| r["kind"] == "prune") {
        let m = &r["metrics"];
        let label = r["label"].as_str().unwrap();
        if !label.contains("platon") && !label.contains("taylor") {
            continue;
        }
        // Exactly round(N · 0.5) of the N masked entries (weights and biases of out_proj, fc1,
        // fc2 in both towers) are zero at the end.
        let n = m["prunable_weights"].as_i64().unwrap();
        let pruned = m["pruned_weights"].as_i64().unwrap();
        assert_eq!(pruned, (n as f64 * 0.5).round() as i64, "{label}");
        let t = &m["training"];
        let events = t["masking_events"].as_array().unwrap();
        assert!(events.len() > 2, "{label}");
        assert_eq!(events.last().unwrap()["step"], t["steps"]);
        // With `use_id`, every masked tensor's factor is its Linear's measured dimension, in the
        // measurement's order (weight and bias share one entry).
        if label.contains("platon-id") {
            let used: Vec<f64> = t["intrinsic_dimensions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            let expected: Vec<f64> = measured.iter().flat_map(|(_, d)| [*d, *d]).collect();
            assert_eq!(used, expected);
        } else {
            assert!(t["intrinsic_dimensions"].is_null());
        }
    }
    // The per-Linear measurement has its rows in the ID table, module by module.
    let id_table = std::fs::read_to_string(d.join("results/platon/platon_id.csv")).unwrap();
    let modules: Vec<&str> = id_table
        .lines()
        .filter(|l| l.contains("self_attn.out_proj") || l.contains("mlp.fc"))
        .collect();
    assert_eq!(modules.len(), measured.len(), "{id_table}");

    // PLATON prunes as it trains: it keeps the fine-tuned accuracy that magnitude loses.
    let top1 = |m: &str| get(m, "top1").parse::<f64>().unwrap();
    assert!(top1("platon") > top1("magnitude") + 0.2, "{csv}");
}
