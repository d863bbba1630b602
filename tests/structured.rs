//! Per-layer shapes: a physically smaller model (any heads, head dimension and MLP width per
//! layer, including none) computes what the full-size model with those units masked computes,
//! for both towers, and it saves, loads and round-trips through a structured prune artifact.

mod common;

use orchestrate::model::{Clip, TokenBatch, Tower, create};
use orchestrate::prune::artifact;
use orchestrate::prune::structured::{LayerUnits, Structured, apply};
use std::collections::BTreeMap;
use tch::{Device, Kind, Tensor};

const CPU: (Kind, Device) = (Kind::Float, Device::Cpu);

/// libtorch's generator is global and tests run in parallel: each test holds this while it
/// draws (random inits included), so its seeded models are the same every time.
static SEEDED: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SEEDED.lock().unwrap_or_else(|e| e.into_inner())
}

/// The tiny preset (vocabulary cut to 64) with non-zero biases.
fn tiny() -> Clip {
    let mut config = create::preset("tiny").unwrap();
    config.text.vocab_size = 64;
    common::seeded_model(&config, 11)
}

/// Irregular units: per tower one layer without heads, one without neurons, pruned head
/// dimensions, and scales ≠ 1. (tiny: 4 heads of 16, MLP 256; 3 vision and 2 text layers.)
fn units() -> Structured {
    let neurons = |step: i64| (0..256).step_by(step as usize).collect::<Vec<i64>>();
    let scales = |n: usize, base: f32| (0..n).map(|i| base + 0.01 * i as f32).collect::<Vec<f32>>();
    let layer = |tower, layer, heads: Vec<i64>, head_dims: Option<Vec<i64>>, neurons: Vec<i64>| {
        LayerUnits {
            tower,
            layer,
            head_scales: scales(heads.len(), 0.7),
            neuron_scales: scales(neurons.len(), 1.1),
            heads,
            head_dims,
            neurons,
        }
    };
    Structured {
        layers: vec![
            layer(Tower::Vision, 0, vec![0, 2], None, neurons(3)),
            layer(Tower::Vision, 1, vec![], None, neurons(2)),
            layer(
                Tower::Vision,
                2,
                vec![1, 2, 3],
                Some(vec![0, 3, 5, 6, 9, 15]),
                vec![],
            ),
            layer(Tower::Text, 0, vec![3], Some((0..8).collect()), neurons(5)),
            layer(Tower::Text, 1, vec![], None, vec![]),
        ],
        ..Default::default()
    }
}

/// The full-size model with the dropped units zeroed and the kept ones scaled: q/k/v rows of
/// dropped head dimensions (weights and biases) and the `out_proj` columns reading them; fc1
/// rows of dropped neurons and the fc2 columns reading them.
fn masked(model: &Clip, s: &Structured) -> BTreeMap<String, Tensor> {
    let mut vars: BTreeMap<String, Tensor> = model
        .vs
        .variables()
        .into_iter()
        .map(|(k, v)| (k, v.detach().copy()))
        .collect();
    for u in &s.layers {
        let p = format!("{}encoder.layers.{}.", u.tower.prefix(), u.layer);
        let (heads, head_dim, width) = (4i64, 16i64, 256i64);
        let mut inner_scale = vec![0f32; (heads * head_dim) as usize];
        for (k, &h) in u.heads.iter().enumerate() {
            for d in 0..head_dim {
                if u.head_dims.as_ref().is_none_or(|dims| dims.contains(&d)) {
                    inner_scale[(h * head_dim + d) as usize] = u.head_scales[k];
                }
            }
        }
        let keep_inner = Tensor::from_slice(&inner_scale)
            .ne(0.0)
            .to_kind(Kind::Float);
        let mut neuron_scale = vec![0f32; width as usize];
        for (k, &n) in u.neurons.iter().enumerate() {
            neuron_scale[n as usize] = u.neuron_scales[k];
        }
        let keep_neuron = Tensor::from_slice(&neuron_scale)
            .ne(0.0)
            .to_kind(Kind::Float);
        let mut scale_rows = |name: &str, keep: &Tensor| {
            let t = &vars[&format!("{p}{name}")];
            let shaped = if t.dim() == 2 {
                keep.view([-1, 1])
            } else {
                keep.shallow_clone()
            };
            vars.insert(format!("{p}{name}"), t * shaped);
        };
        for proj in ["q_proj", "k_proj", "v_proj"] {
            scale_rows(&format!("self_attn.{proj}.weight"), &keep_inner);
            scale_rows(&format!("self_attn.{proj}.bias"), &keep_inner);
        }
        scale_rows("mlp.fc1.weight", &keep_neuron);
        scale_rows("mlp.fc1.bias", &keep_neuron);
        let mut scale_columns = |name: &str, scale: Vec<f32>| {
            let t = &vars[&format!("{p}{name}")];
            vars.insert(
                format!("{p}{name}"),
                t * Tensor::from_slice(&scale).view([1, -1]),
            );
        };
        scale_columns("self_attn.out_proj.weight", inner_scale);
        scale_columns("mlp.fc2.weight", neuron_scale);
    }
    vars
}

fn inputs() -> (Tensor, TokenBatch) {
    tch::manual_seed(3);
    let pixels = Tensor::randn([5, 3, 32, 32], CPU);
    let ids = Tensor::from_slice(&[62i64, 7, 9, 63, 63, 62, 3, 4, 5, 63]).view([2, 5]);
    let mask = Tensor::from_slice(&[1i64, 1, 1, 1, 0, 1, 1, 1, 1, 1]).view([2, 5]);
    let tokens = TokenBatch {
        ids,
        mask,
        eos: Tensor::from_slice(&[3i64, 4]),
    };
    (pixels, tokens)
}

fn features(m: &Clip) -> (Tensor, Tensor) {
    let (pixels, tokens) = inputs();
    tch::no_grad(|| (m.image_features(&pixels), m.text_features(&tokens)))
}

fn max_rel(a: &Tensor, b: &Tensor) -> f64 {
    let diff = (a - b).abs().max().double_value(&[]);
    diff / b.abs().max().double_value(&[])
}

#[test]
fn smaller_models_equal_the_masked_full_size_model() {
    let _serial = serial();
    let model = tiny();
    let s = units();
    let small = apply(&model, &s).unwrap();
    // The shapes are physical.
    let shapes = small.config.vision.shapes();
    assert_eq!((shapes[0].heads, shapes[0].intermediate_size), (2, 86));
    assert_eq!(
        (
            shapes[1].heads,
            shapes[2].head_dim,
            shapes[2].intermediate_size
        ),
        (0, 6, 0)
    );
    assert_eq!(small.vision.layers[2].self_attn.q_proj.ws.size(), [18, 64]);
    assert_eq!(small.text.layers[1].mlp.fc2.ws.size(), [64, 0]);

    let mut full = tiny();
    tch::no_grad(|| {
        for (name, mut v) in full.vs.variables() {
            v.copy_(&masked(&model, &s)[&name]);
        }
    });
    full.set_eval();
    let (img_small, txt_small) = features(&small);
    let (img_full, txt_full) = features(&full);
    assert!(
        max_rel(&img_small, &img_full) < 1e-5,
        "vision: {}",
        max_rel(&img_small, &img_full)
    );
    assert!(
        max_rel(&txt_small, &txt_full) < 1e-5,
        "text: {}",
        max_rel(&txt_small, &txt_full)
    );
    // The dense model differs: the test would notice a prune that did nothing.
    let (img_dense, _) = features(&model);
    assert!(max_rel(&img_small, &img_dense) > 1e-2);
}

#[test]
fn smaller_models_save_load_and_apply_from_an_artifact() {
    let _serial = serial();
    let model = tiny();
    let s = units();
    let dir = tempfile::tempdir().unwrap();
    artifact::write_structured(dir.path(), &s).unwrap();
    let mut applied = tiny();
    artifact::apply(&mut applied, dir.path()).unwrap();
    let direct = apply(&model, &s).unwrap();
    let (a, b) = (features(&applied), features(&direct));
    assert!(
        a.0.equal(&b.0) && a.1.equal(&b.1),
        "{} {}",
        max_rel(&a.0, &b.0),
        max_rel(&a.1, &b.1)
    );

    // Saved with its per-layer shapes, loaded strictly: the same model.
    let out = tempfile::tempdir().unwrap();
    direct.save(out.path()).unwrap();
    let config = std::fs::read_to_string(out.path().join("config.json")).unwrap();
    assert!(config.contains("layer_shapes"), "{config}");
    let loaded = Clip::load(out.path(), &[], Device::Cpu).unwrap();
    let c = features(&loaded);
    assert!(c.0.equal(&b.0) && c.1.equal(&b.1));

    // A unit out of range is refused with the layer named.
    let mut bad = units();
    bad.layers[0].heads = vec![0, 9];
    let e = apply(&model, &bad).unwrap_err().to_string();
    assert!(e.contains("vision layer 0: heads"), "{e}");
}

/// The full-size export of a structured prune (what transformers loads) holds exactly the
/// masked tensors and computes what the smaller model computes.
#[test]
fn full_size_export_zeroes_dropped_units_and_folds_scales() {
    let _serial = serial();
    let model = tiny();
    let s = units();
    let expected = masked(&model, &s);
    let mut full = tiny();
    orchestrate::prune::structured::apply_full_size(&mut full, &s).unwrap();
    for (name, v) in full.vs.variables() {
        let diff = (&v - &expected[&name]).abs().max().double_value(&[]);
        assert!(diff <= 1e-7, "{name}: {diff}");
    }
    let small = apply(&model, &s).unwrap();
    let (img_small, txt_small) = features(&small);
    let (img_full, txt_full) = features(&full);
    assert!(max_rel(&img_small, &img_full) < 1e-5);
    assert!(max_rel(&txt_small, &txt_full) < 1e-5);
}

/// UPop's compression (spec §4.5, §6e, check 9): a binary ζ on both towers — some head
/// dimensions and neurons dropped in every layer, at least one kept — sliced to a physically
/// smaller model computes what the ζ-masked full-size model computes: within 1e-4 (relative) in
/// f32 and 1e-9 in f64 with `attn_scale = original`; `reduced` changes the attention scale, so it
/// differs, and has no full-size export.
#[test]
fn upop_compression_equals_the_masked_model() {
    fn as_gates(g: &[(Tensor, Tensor)]) -> Vec<orchestrate::model::clip::Gates<'_>> {
        g.iter()
            .map(|(dims, neurons)| orchestrate::model::clip::Gates { dims, neurons })
            .collect()
    }
    use orchestrate::prune::structured::{AttentionScale, apply_full_size};
    use orchestrate::prune::upop::TowerZeta;
    let _serial = serial();
    for kind in [Kind::Float, Kind::Double] {
        let mut model = tiny();
        if kind == Kind::Double {
            model.vs.double();
        }
        tch::manual_seed(5);
        let zetas: Vec<TowerZeta> = [Tower::Vision, Tower::Text]
            .into_iter()
            .map(|tower| {
                let z = TowerZeta::ones(&model, tower);
                tch::no_grad(|| {
                    for t in z.dims.iter().chain(&z.neurons) {
                        let keep = Tensor::rand_like(t).lt(0.6).to_kind(Kind::Float);
                        let _ = keep.get(0).fill_(1.0); // at least one kept
                        t.shallow_clone().copy_(&keep);
                    }
                });
                z
            })
            .collect();
        let layers: Vec<LayerUnits> = zetas
            .iter()
            .flat_map(|z| z.units(&model).unwrap())
            .collect();
        assert!(
            layers.iter().all(|u| u.head_dims.is_some()),
            "every layer loses some dims"
        );
        let (pixels, tokens) = inputs();
        let pixels = pixels.to_kind(kind);
        let gates = |z: &TowerZeta| -> Vec<(Tensor, Tensor)> {
            z.dims
                .iter()
                .zip(&z.neurons)
                .map(|(d, n)| (d.detach().to_kind(kind), n.detach().to_kind(kind)))
                .collect()
        };
        let (gv, gt) = (gates(&zetas[0]), gates(&zetas[1]));
        let (masked_img, masked_txt) = tch::no_grad(|| {
            let img = model
                .visual_projection
                .forward(&model.vision.forward_gated(&pixels, Some(&as_gates(&gv))));
            let h = model.text.hidden(&tokens, Some(&as_gates(&gt)));
            let txt = model.text_projection.forward(&model.text.pool(&h, &tokens));
            (img, txt)
        });
        use tch::nn::Module;
        let tolerance = if kind == Kind::Double { 1e-9 } else { 1e-4 };
        let prune = Structured {
            layers: layers.clone(),
            attention_scale: AttentionScale::Original,
        };
        let small = apply(&model, &prune).unwrap();
        let (img, txt) =
            tch::no_grad(|| (small.image_features(&pixels), small.text_features(&tokens)));
        assert!(
            max_rel(&img, &masked_img) < tolerance,
            "{kind:?} vision: {}",
            max_rel(&img, &masked_img)
        );
        assert!(
            max_rel(&txt, &masked_txt) < tolerance,
            "{kind:?} text: {}",
            max_rel(&txt, &masked_txt)
        );
        // The full-size export computes the same.
        let mut full = tiny();
        if kind == Kind::Double {
            full.vs.double();
        }
        apply_full_size(&mut full, &prune).unwrap();
        let img_full = tch::no_grad(|| full.image_features(&pixels));
        assert!(max_rel(&img_full, &masked_img) < tolerance);

        let reduced = Structured {
            layers,
            attention_scale: AttentionScale::Reduced,
        };
        let small = apply(&model, &reduced).unwrap();
        let img = tch::no_grad(|| small.image_features(&pixels));
        assert!(
            max_rel(&img, &masked_img) > 1e-3,
            "reduced scale changes the model"
        );
        assert!(apply_full_size(&mut tiny(), &reduced).is_err());
    }
}
