//! The demo pipeline end to end on the real binary: a new tiny model, fine-tuned on synthetic
//! shapes, evaluated zero-shot — far above chance — and the tables written.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_orchestrate");

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
    let row = rows.records().next().unwrap().unwrap();
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

    // The fine-tuned vision tower is an HF vision checkpoint another manifest can overlay.
    let ckpt = walkdir::WalkDir::new(d.join("results/cache"))
        .into_iter()
        .filter_map(Result::ok)
        .find(|e| e.path().ends_with("vision/model.safetensors"))
        .expect("finetune artifact");
    let model = orchestrate::model::Clip::load(
        &d.join("models/tiny"),
        &[ckpt.path().parent().unwrap()],
        tch::Device::Cpu,
    );
    assert!(model.is_ok());

    // Re-running is the resume: nothing recomputes.
    let (code, log) = run(&["run", "demo.toml"]);
    assert_eq!(code, Some(0));
    assert!(log.contains("2 cached"), "{log}");
}
