//! Strict checkpoint loading: every problem names the file and the tensor; only safetensors.

mod common;

use orchestrate::model::Clip;
use orchestrate::model::create::create;
use std::path::Path;
use tch::{Device, Tensor};

fn tiny(dir: &Path) {
    create(dir, "tiny", 0).unwrap();
}

fn rewrite(dir: &Path, edit: impl FnOnce(&mut Vec<(String, Tensor)>)) {
    let file = dir.join("model.safetensors");
    let mut tensors = Tensor::read_safetensors(&file).unwrap();
    edit(&mut tensors);
    Tensor::write_safetensors(&tensors, &file).unwrap();
}

fn load_err(dir: &Path, overlays: &[&Path]) -> String {
    Clip::load(dir, overlays, Device::Cpu)
        .unwrap_err()
        .to_string()
}

#[test]
fn loads_what_it_saves() {
    let d = tempfile::tempdir().unwrap();
    tiny(d.path());
    let a = Clip::load(d.path(), &[], Device::Cpu).unwrap();
    let out = d.path().join("copy");
    a.save(&out).unwrap();
    std::fs::copy(d.path().join("tokenizer.json"), out.join("tokenizer.json")).unwrap();
    let b = Clip::load(&out, &[], Device::Cpu).unwrap();
    let px = Tensor::randn([2, 3, 32, 32], (tch::Kind::Float, Device::Cpu));
    assert!(
        (a.image_features(&px) - b.image_features(&px))
            .abs()
            .max()
            .double_value(&[])
            == 0.0
    );
}

#[test]
fn missing_unexpected_and_misshapen_tensors_are_named() {
    let d = tempfile::tempdir().unwrap();
    tiny(d.path());
    rewrite(d.path(), |t| {
        t.retain(|(n, _)| n != "text_model.final_layer_norm.bias")
    });
    let e = load_err(d.path(), &[]);
    assert!(e.contains("model.safetensors") || e.contains(&d.path().display().to_string()));
    assert!(
        e.contains("missing tensor text_model.final_layer_norm.bias"),
        "{e}"
    );

    let d = tempfile::tempdir().unwrap();
    tiny(d.path());
    rewrite(d.path(), |t| {
        t.push((
            "vision_model.extra.weight".into(),
            Tensor::zeros([2], (tch::Kind::Float, Device::Cpu)),
        ))
    });
    let e = load_err(d.path(), &[]);
    assert!(
        e.contains("model.safetensors: unexpected tensor vision_model.extra.weight"),
        "{e}"
    );

    let d = tempfile::tempdir().unwrap();
    tiny(d.path());
    rewrite(d.path(), |t| {
        for (n, v) in t.iter_mut() {
            if n == "visual_projection.weight" {
                *v = Tensor::zeros([3, 3], (tch::Kind::Float, Device::Cpu));
            }
        }
    });
    let e = load_err(d.path(), &[]);
    assert!(
        e.contains("tensor visual_projection.weight has shape [3, 3], the config needs [64, 64]"),
        "{e}"
    );

    // Position-id buffers some exports carry are ignored.
    let d = tempfile::tempdir().unwrap();
    tiny(d.path());
    rewrite(d.path(), |t| {
        t.push((
            "text_model.embeddings.position_ids".into(),
            Tensor::arange(77, (tch::Kind::Int64, Device::Cpu)).view([1, 77]),
        ))
    });
    Clip::load(d.path(), &[], Device::Cpu).unwrap();
}

#[test]
fn pickle_only_and_corrupt_files_are_refused() {
    let d = tempfile::tempdir().unwrap();
    tiny(d.path());
    std::fs::rename(
        d.path().join("model.safetensors"),
        d.path().join("pytorch_model.bin"),
    )
    .unwrap();
    let e = load_err(d.path(), &[]);
    assert!(
        e.contains("only a pickle checkpoint") && e.contains("safetensors only"),
        "{e}"
    );

    let d = tempfile::tempdir().unwrap();
    tiny(d.path());
    std::fs::write(d.path().join("model.safetensors"), b"garbage").unwrap();
    let e = load_err(d.path(), &[]);
    assert!(e.contains("not a readable safetensors file"), "{e}");
}

#[test]
fn sharded_checkpoints_load() {
    let d = tempfile::tempdir().unwrap();
    tiny(d.path());
    let all = Tensor::read_safetensors(d.path().join("model.safetensors")).unwrap();
    let (text, rest): (Vec<_>, Vec<_>) = all
        .into_iter()
        .partition(|(n, _)| n.starts_with("text_model"));
    Tensor::write_safetensors(&text, d.path().join("model-00001-of-00002.safetensors")).unwrap();
    Tensor::write_safetensors(&rest, d.path().join("model-00002-of-00002.safetensors")).unwrap();
    let mut map = serde_json::Map::new();
    for (n, _) in &text {
        map.insert(n.clone(), "model-00001-of-00002.safetensors".into());
    }
    for (n, _) in &rest {
        map.insert(n.clone(), "model-00002-of-00002.safetensors".into());
    }
    let single = Clip::load(d.path(), &[], Device::Cpu).unwrap();
    std::fs::remove_file(d.path().join("model.safetensors")).unwrap();
    std::fs::write(
        d.path().join("model.safetensors.index.json"),
        serde_json::json!({"metadata": {}, "weight_map": map}).to_string(),
    )
    .unwrap();
    let sharded = Clip::load(d.path(), &[], Device::Cpu).unwrap();
    let px = Tensor::randn([1, 3, 32, 32], (tch::Kind::Float, Device::Cpu));
    assert!(
        (single.image_features(&px) - sharded.image_features(&px))
            .abs()
            .max()
            .double_value(&[])
            == 0.0
    );
}

#[test]
fn vision_overlays_must_match_and_hold_only_vision_tensors() {
    let d = tempfile::tempdir().unwrap();
    tiny(d.path());
    let model = Clip::load(d.path(), &[], Device::Cpu).unwrap();
    let v = d.path().join("vision");
    model.save_vision(&v).unwrap();
    Clip::load(d.path(), &[&v], Device::Cpu).unwrap();

    // A full model is not a vision-only checkpoint.
    let e = load_err(d.path(), &[d.path()]);
    assert!(
        e.contains("unexpected tensors")
            && e.contains("vision-only checkpoint holds only `vision_model.*`"),
        "{e}"
    );

    // A different vision architecture is refused before any tensor is read.
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(v.join("config.json")).unwrap()).unwrap();
    cfg["num_hidden_layers"] = 5.into();
    std::fs::write(v.join("config.json"), cfg.to_string()).unwrap();
    let e = load_err(d.path(), &[&v]);
    assert!(
        e.contains("vision config does not match the base model"),
        "{e}"
    );
}

/// `init-model` twice (two processes, so two hash seeds): byte-identical files, the tokenizer
/// included, so a fresh `make demo` reproduces its table.
#[test]
fn init_model_is_byte_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["a", "b"] {
        common::run_in(
            dir.path(),
            &["init-model", name, "--preset", "tiny", "--seed", "0"],
        );
    }
    let mut files: Vec<_> = std::fs::read_dir(dir.path().join("a"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    files.sort();
    assert!(files.iter().any(|f| f == "tokenizer.json"), "{files:?}");
    for f in files {
        let a = std::fs::read(dir.path().join("a").join(&f)).unwrap();
        let b = std::fs::read(dir.path().join("b").join(&f)).unwrap();
        assert!(a == b, "{f:?} differs between two init-model runs");
    }
}

/// Weights holding NaN or infinity are refused when loaded, naming the tensor.
#[test]
fn non_finite_weights_are_refused() {
    for bad in [f64::NAN, f64::INFINITY] {
        let d = tempfile::tempdir().unwrap();
        tiny(d.path());
        rewrite(d.path(), |t| {
            for (n, v) in t.iter_mut() {
                if n == "vision_model.encoder.layers.1.mlp.fc2.weight" {
                    let full = Tensor::zeros([64, 256], (tch::Kind::Float, Device::Cpu));
                    let _ = full.narrow(0, 3, 1).fill_(bad);
                    *v = full;
                }
            }
        });
        let e = load_err(d.path(), &[]);
        assert!(
            e.contains(
                "tensor vision_model.encoder.layers.1.mlp.fc2.weight holds NaN or infinite values"
            ),
            "{e}"
        );
    }
}

/// The tensors the planner expects of a checkpoint are exactly the variables the model builds,
/// for uniform and per-layer shapes.
#[test]
fn expected_tensor_shapes_match_the_model() {
    let mut config = orchestrate::model::create::preset("tiny").unwrap();
    config.text.vocab_size = 64;
    let check = |config: &orchestrate::model::ClipConfig| {
        let model = Clip::new(config, Device::Cpu);
        let built: std::collections::BTreeMap<String, Vec<i64>> = model
            .vs
            .variables()
            .into_iter()
            .map(|(k, v)| (k, v.size()))
            .collect();
        assert_eq!(config.tensor_shapes(), built);
    };
    check(&config);
    let mut shapes = config.vision.shapes();
    shapes[1].heads = 0;
    shapes[2].intermediate_size = 7;
    shapes[0].head_dim = 5;
    config.vision.layer_shapes = Some(shapes);
    check(&config);
}
