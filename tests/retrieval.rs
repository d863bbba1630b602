//! Retrieval evaluation end to end on the real binary: a Karpathy-split dataset the test writes,
//! a tiny model from `init-model`, and recall@k in the tables equal to the same computation in
//! transformers (`tests/reference/retrieval_reference.py`) on the same files.

use std::path::Path;

mod common;
use common::{run_in, run_reference};

/// 12 test images (each a distinct colour pattern) with two captions each, plus 16 train images
/// that evaluation must leave out (the intrinsic dimension reads them).
fn write_dataset(dir: &Path) {
    std::fs::create_dir_all(dir.join("images")).unwrap();
    let mut entries = Vec::new();
    for i in 0..28u32 {
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
            "split": if i < 12 { "test" } else { "restval" },
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

#[test]
fn retrieval_recall_matches_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
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
    std::fs::write(
        d.join("retrieval.toml"),
        r#"
[experiment]
name = "retrieval"

[models.tiny]
path = "models/tiny"

[datasets.flickr]
kind = "retrieval"
path = "flickr"

[grid]
model = ["tiny"]
dataset = ["flickr"]

[stages.intrinsic_dimension]
towers = "both"
"#,
    )
    .unwrap();
    run_in(d, &["run", "retrieval.toml"]);
    let csv = std::fs::read_to_string(d.join("results/retrieval/retrieval.csv")).unwrap();
    let mut rows = csv::Reader::from_reader(csv.as_bytes());
    let headers = rows.headers().unwrap().clone();
    let row = rows.records().next().unwrap().unwrap();
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
