//! Fisher structured pruning (spec structured-and-analysis.md §3, §7.3–7.5, §7.9): the ETH
//! port's stored masks decode to their published counts and MAC identities; the physically
//! smaller model equals the masked full-size model on a ViT-B/32-shaped tower with each stored
//! mask pair and with masks that empty one layer's heads and another's neurons; mask gradients
//! equal finite differences of the loss in f64; the whole pipeline stays within its budget,
//! keeps per-layer counts through rearrangement and tuning, and tuning lowers every layer's
//! reconstruction error.

use orchestrate::model::layerwise::{self, Tower};
use orchestrate::model::{Clip, create};
use orchestrate::prune::fisher::{self, Objective, Pool, Samples, Settings, stored};
use orchestrate::prune::structured::{Structured, apply};
use orchestrate::util::macs;
use std::path::PathBuf;
use tch::nn::Module;
use tch::{Device, Kind, Tensor};

static SEEDED: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SEEDED.lock().unwrap_or_else(|e| e.into_inner())
}

fn masks_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/fisher-eth-masks")
}

fn load(name: &str) -> (Tensor, Tensor) {
    stored::read(&masks_dir().join(name), 12, 12, 3072).unwrap()
}

fn per_layer(t: &Tensor) -> Vec<i64> {
    Vec::<i64>::try_from(t.ne(0.0).sum_dim_intlist(1, false, Kind::Int64)).unwrap()
}

fn kept_values(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.masked_select(&t.ne(0.0))).unwrap()
}

fn range(v: &[f32]) -> (f32, f32) {
    v.iter()
        .fold((f32::MAX, f32::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)))
}

fn close(a: f32, b: f64) -> bool {
    (a as f64 - b).abs() < 5e-5
}

/// Spec §7.3–7.5.
#[test]
fn stored_masks_decode_to_their_published_counts() {
    let b32 = |s| macs::unit_cost(s, 768, 64);
    let full = |s| macs::encoder(b32(s), 144, 12 * 3072);
    let count = |t: &Tensor| per_layer(t).iter().sum::<i64>();

    let (h, n) = load("mac_0.5_seed_5.safetensors");
    assert_eq!(per_layer(&h), [2, 2, 1, 6, 8, 10, 11, 11, 8, 11, 6, 8]);
    assert_eq!(
        per_layer(&n),
        [
            802, 1546, 1963, 2116, 2100, 2130, 1960, 1734, 886, 633, 392, 434
        ]
    );
    assert_eq!((count(&h), count(&n)), (84, 16_696));
    assert!(kept_values(&n).iter().all(|&v| v == 1.0));
    let (lo, hi) = range(&kept_values(&h));
    assert!(close(lo, 0.5832) && close(hi, 1.4040), "{lo} {hi}");
    let layer0 = Vec::<f32>::try_from(h.get(0)).unwrap();
    assert!(
        close(layer0[6], 1.0761) && close(layer0[8], 1.4040),
        "{layer0:?}"
    );
    assert_eq!(macs::encoder(b32(200), 84, 16_696), 8_862_105_600);
    assert_eq!(2 * 8_862_105_600, full(200));
    assert_eq!(
        16_696,
        (full(200) / 2 - 84 * b32(200).head) / b32(200).neuron
    );
    let at50 = macs::encoder(b32(50), 84, 16_696) as f64 / full(50) as f64;
    assert_eq!(format!("{at50:.4}"), "0.4973");

    let (h, n) = load("0.65_seed_123.safetensors");
    assert_eq!(per_layer(&h), [2, 4, 4, 8, 11, 11, 12, 12, 12, 12, 12, 11]);
    assert_eq!(
        per_layer(&n),
        [
            1134, 1798, 2641, 2717, 2639, 2589, 2441, 2352, 1305, 874, 563, 608
        ]
    );
    assert_eq!((count(&h), count(&n)), (111, 21_661));
    let budget = 0.65 * full(50) as f64;
    assert_eq!(
        21_661,
        ((budget - 111.0 * b32(50).head as f64) / b32(50).neuron as f64) as i64
    );
    let layer0 = Vec::<f32>::try_from(h.get(0)).unwrap();
    let kept0: Vec<usize> = (0..12).filter(|&i| layer0[i] != 0.0).collect();
    assert_eq!(kept0, [5, 8]);
    assert!(kept0.iter().all(|&i| layer0[i] == 1.0));
    let (lo, hi) = range(&kept_values(&n));
    assert!(close(lo, -10.8564) && close(hi, 26.0831), "{lo} {hi}");

    let (h, n) = load("0.5_seed_501.safetensors");
    assert_eq!(per_layer(&h), [2, 3, 1, 7, 10, 10, 11, 10, 10, 12, 10, 7]);
    assert_eq!(
        per_layer(&n),
        [
            746, 1480, 1904, 1984, 1975, 1960, 1767, 1588, 841, 621, 371, 419
        ]
    );
    assert_eq!((count(&h), count(&n)), (93, 15_656));
    assert_eq!(15_656, (2_146_406_400 - 93 * b32(50).head) / b32(50).neuron);
    assert_eq!(full(50) / 2, 2_146_406_400);
    let layer0 = Vec::<f32>::try_from(h.get(0)).unwrap();
    let kept0: Vec<usize> = (0..12).filter(|&i| layer0[i] != 0.0).collect();
    assert_eq!(kept0, [6, 8]);
    assert!(kept0.iter().all(|&i| layer0[i] == 1.0));
    let heads = kept_values(&h);
    assert_eq!(heads.iter().filter(|&&v| v < 0.0).count(), 7);
    let (lo, hi) = range(&heads);
    assert!(close(lo, -0.2831) && close(hi, 1.4783), "{lo} {hi}");
    let (lo, hi) = range(&kept_values(&n));
    assert!(close(lo, -18.9349) && close(hi, 38.4722), "{lo} {hi}");
}

/// Spec §7.1: the MAC model's token count comes from the config.
#[test]
fn tokens_come_from_the_config() {
    let tokens = |p: &str| create::preset(p).unwrap().vision.tokens();
    assert_eq!(tokens("vit-b32"), 50);
    assert_eq!(tokens("vit-b16"), 197);
}

#[test]
fn mask_files_that_do_not_fit_are_named() {
    let file = masks_dir().join("0.5_seed_501.safetensors");
    let err = stored::check_header(&file, 3, 4, 256).unwrap_err();
    assert!(
        err.contains("head_mask") && err.contains("[12, 12]") && err.contains("[3, 4]"),
        "{err}"
    );
}

/// A seeded model of a preset with non-zero biases (so a branch reduced to its bias shows).
fn model(preset: &str, seed: i64) -> Clip {
    common::seeded_model(&create::preset(preset).unwrap(), seed)
}

fn vision_samples(model: &Clip, n: i64) -> Samples {
    let size = model.config.vision.image_size;
    let pixels = Tensor::randn([n, 3, size, size], (Kind::Float, Device::Cpu));
    Samples {
        inputs: layerwise::pixel_inputs(model, &pixels),
        valid: None,
        pool: Pool::Vision,
    }
}

/// The physical model's embeddings equal the masked model's within §6e's tolerance, and the
/// exported shapes carry the mask-derived MACs.
fn check_physical(model: &Clip, samples: &Samples, heads: &Tensor, neurons: &Tensor) {
    let units = fisher::units(Tower::Vision, heads, neurons).unwrap();
    let small = apply(
        model,
        &Structured {
            layers: units,
            ..Default::default()
        },
    )
    .unwrap();
    let masked = fisher::masked_embeddings(model, Tower::Vision, samples, heads, neurons);
    let physical = fisher::embeddings(&small, Tower::Vision, samples);
    let (diff, tol) = fisher::deviation(&masked, &physical);
    assert!(diff <= tol, "max |Δ| {diff} > {tol}");
    let tokens = model.config.vision.tokens();
    let d = model.config.vision.hidden_size;
    let shapes = small.config.vision.shapes();
    let head_dim = shapes[0].head_dim;
    let from_masks = fisher::masked_macs(macs::unit_cost(tokens, d, head_dim), heads, neurons);
    assert_eq!(macs::tower(tokens, d, &shapes, 0), from_masks);
}

/// Spec §7.9 on a ViT-B/32-shaped vision tower (random weights): the three stored mask pairs and
/// a synthetic pair with layer 3 at no heads and layer 7 at no neurons.
#[test]
fn physical_model_equals_masked_model_at_vit_b32_size() {
    let _s = serial();
    let model = model("vit-b32", 5);
    let samples = vision_samples(&model, 3);
    for file in [
        "mac_0.5_seed_5.safetensors",
        "0.65_seed_123.safetensors",
        "0.5_seed_501.safetensors",
    ] {
        let (h, n) = load(file);
        check_physical(&model, &samples, &h, &n);
    }
    let (h, n) = load("0.5_seed_501.safetensors");
    let _ = h.get(3).fill_(0.0);
    let _ = n.get(7).fill_(0.0);
    check_physical(&model, &samples, &h, &n);
}

fn contrastive(model: &Clip, n: i64) -> Objective {
    let e = model.config.projection_dim;
    Objective::Contrastive {
        targets: orchestrate::model::zeroshot::normalize(&Tensor::randn(
            [n, e],
            (Kind::Float, Device::Cpu),
        )),
        scale: 100.0,
    }
}

/// The model, its vision samples and a contrastive objective, all in f64.
fn in_f64(model: &mut Clip, samples: Samples, objective: Objective) -> (Samples, Objective) {
    model.vs.double();
    let samples = Samples {
        inputs: layerwise::TowerInputs {
            x: samples.inputs.x.to_kind(Kind::Double),
            mask: None,
        },
        ..samples
    };
    let objective = match objective {
        Objective::Contrastive { targets, scale } => Objective::Contrastive {
            targets: targets.to_kind(Kind::Double),
            scale,
        },
        o => o,
    };
    (samples, objective)
}

/// The mask gradients autograd gives equal central finite differences of the loss, in f64.
#[test]
fn mask_gradients_equal_finite_differences() {
    let _s = serial();
    let mut model = model("tiny", 3);
    let samples = vision_samples(&model, 6);
    let objective = contrastive(&model, 6);
    let (samples, objective) = in_f64(&mut model, samples, objective);
    let g = fisher::gradients::collect(&model, Tower::Vision, &samples, &objective, 6).unwrap();
    let opts = (Kind::Double, Device::Cpu);
    let loss = |heads: &Tensor, neurons: &Tensor| {
        let emb = fisher::masked::embed(
            &model,
            Tower::Vision,
            &samples.inputs.x,
            None,
            (heads, neurons),
            &samples.pool,
            (0, 6),
        );
        let l = objective.loss(&emb, (0, 6));
        l.double_value(&[])
    };
    let eps = 1e-6;
    for (layer, head) in [(0, 1), (2, 3)] {
        let bump = |d: f64| {
            let h = Tensor::ones([3, 4], opts);
            let _ = h.get(layer).get(head).fill_(1.0 + d);
            loss(&h, &Tensor::ones([3, 256], opts))
        };
        let fd = (bump(eps) - bump(-eps)) / (2.0 * eps);
        let ad = g.heads[0][layer as usize * 4 + head as usize];
        assert!(
            (fd - ad).abs() <= 1e-6 * fd.abs().max(1.0),
            "head ({layer},{head}): {fd} vs {ad}"
        );
    }
    for (layer, neuron) in [(1, 17), (2, 200)] {
        let bump = |d: f64| {
            let n = Tensor::ones([3, 256], opts);
            let _ = n.get(layer).get(neuron).fill_(1.0 + d);
            loss(&Tensor::ones([3, 4], opts), &n)
        };
        let fd = (bump(eps) - bump(-eps)) / (2.0 * eps);
        let ad = g.neurons[0][layer as usize * 256 + neuron as usize];
        assert!(
            (fd - ad).abs() <= 1e-6 * fd.abs().max(1.0),
            "neuron ({layer},{neuron}): {fd} vs {ad}"
        );
    }
}

/// The whole pipeline on a tiny tower: within budget, counts fixed after the search, every
/// solve lowers its layer's reconstruction error, and the physical model matches.
#[test]
fn fisher_stays_in_budget_and_tuning_lowers_every_layer_error() {
    let _s = serial();
    let model = model("tiny", 8);
    let samples = vision_samples(&model, 64);
    let objective = contrastive(&model, 64);
    let settings = Settings {
        batch: 16,
        ..Settings::head(0.5, model.config.vision.tokens())
    };
    let out = fisher::prune_tower(&model, Tower::Vision, &samples, &objective, &settings).unwrap();
    assert_eq!(out.batches, 4);
    let kept = fisher::masked_macs(out.cost, &out.heads, &out.neurons);
    assert_eq!(kept, out.selection.macs);
    assert!(kept as f64 <= 0.5 * out.full_macs as f64);
    // Per-layer counts are the search's: rearrangement swaps units within a layer.
    let counts = |flags: &[bool], w: usize| -> Vec<usize> {
        flags
            .chunks(w)
            .map(|c| c.iter().filter(|k| **k).count())
            .collect()
    };
    let sel_heads = counts(&out.selection.heads, 4);
    let sel_neurons = counts(&out.selection.neurons, 256);
    assert_eq!(
        per_layer(&out.heads)
            .iter()
            .map(|&c| c as usize)
            .collect::<Vec<_>>(),
        sel_heads
    );
    assert_eq!(
        per_layer(&out.neurons)
            .iter()
            .map(|&c| c as usize)
            .collect::<Vec<_>>(),
        sel_neurons
    );
    assert!(!out.tuning.is_empty());
    for t in &out.tuning {
        assert!(t.failure.is_none(), "{t:?}");
        assert!(
            t.error_after < t.error_before,
            "layer {} {:?}: {} → {}",
            t.layer,
            t.part,
            t.error_before,
            t.error_after
        );
    }
    // Layer 0's heads are not tuned (ETH HEAD).
    assert!(
        out.tuning
            .iter()
            .all(|t| t.layer > 0 || t.part == fisher::tune::Part::Neurons)
    );
    check_physical(&model, &samples, &out.heads, &out.neurons);
}

mod common;

const MANIFEST: &str = r#"
[experiment]
name = "fisher"

[models.tiny]
path = "models/tiny"

[datasets.shapes]
kind = "synthetic"
classes = 10
train_size = 1000
test_size = 200
image_size = 48
seed = 0

[grid]
model = ["tiny"]
dataset = ["shapes"]
method = ["fisher"]
sparsity = [0.5]

[methods.fisher]
num_samples = 256

[stages.finetune]
steps = 150
batch_size = 64
lr = 2e-3
weight_decay = 0.1
warmup_steps = 25
"#;

fn column(csv: &str, method: &str, name: &str) -> String {
    let mut rows = csv::Reader::from_reader(csv.as_bytes());
    let headers = rows.headers().unwrap().clone();
    let at = |n: &str| {
        headers
            .iter()
            .position(|h| h == n)
            .unwrap_or_else(|| panic!("no column {n}"))
    };
    let row = rows
        .records()
        .map(Result::unwrap)
        .find(|r| &r[at("method")] == method)
        .unwrap_or_else(|| panic!("no {method} row"));
    row[at(name)].to_string()
}

/// On the fine-tuned demo model, Fisher at 50 % of the MACs beats a random structured mask with
/// the same per-layer counts (applied through `stored-masks`) in accuracy and loss; the point
/// has a seed, a MAC fraction below one and timings; the entry stores its masks in the ETH layout.
#[test]
fn fisher_beats_a_random_mask_of_the_same_per_layer_counts() {
    let p = common::Project::new();
    let out = p.run(&["init-model", "models/tiny", "--preset", "tiny"]);
    assert!(out.status.success(), "{}", common::text(&out));
    p.write("fisher.toml", MANIFEST);
    let out = p.run(&["run", "fisher.toml"]);
    assert!(out.status.success(), "{}", common::text(&out));
    let entry = p
        .entries_with("\"fisher\"")
        .into_iter()
        .find(|e| e.join("artifacts/masks.vision.safetensors").exists())
        .expect("a fisher prune entry");
    let (heads, neurons) =
        stored::read(&entry.join("artifacts/masks.vision.safetensors"), 3, 4, 256).unwrap();
    // Mask tuning lowered every tuned layer's reconstruction error on the fine-tuned model, and
    // the physical model matched the masked one.
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(entry.join("record.json")).unwrap()).unwrap();
    let vision = &record["metrics"]["towers"]["vision"];
    let tuning = vision["tuning"].as_array().unwrap();
    assert!(tuning.len() >= 4, "{vision}");
    for t in tuning {
        assert!(t["failure"].is_null(), "{t}");
        assert!(
            t["error_after"].as_f64() < t["error_before"].as_f64(),
            "{t}"
        );
    }
    let check = &vision["physical_check"];
    assert!(
        check["max_abs_deviation"].as_f64() <= check["tolerance"].as_f64(),
        "{check}"
    );
    // Random binary masks with Fisher's per-layer counts.
    tch::manual_seed(1);
    let random = |m: &Tensor| {
        let out = Tensor::zeros_like(m);
        for (l, k) in per_layer(m).iter().enumerate() {
            let order = Tensor::randperm(m.size()[1], (Kind::Int64, Device::Cpu));
            let _ = out
                .get(l as i64)
                .index_fill_(0, &order.narrow(0, 0, *k), 1.0);
        }
        out
    };
    let (rh, rn) = (random(&heads), random(&neurons));
    assert_eq!(per_layer(&rh), per_layer(&heads));
    assert_eq!(per_layer(&rn), per_layer(&neurons));
    stored::write(&p.path().join("random.safetensors"), &rh, &rn).unwrap();
    let with_random = format!(
        "{MANIFEST}\n[[grid.include]]\nmethod = \"stored-masks\"\nsparsity = 0.5\n\n[methods.stored-masks]\nfile = \"random.safetensors\"\n"
    );
    p.write("fisher.toml", &with_random);
    let out = p.run(&["run", "fisher.toml"]);
    assert!(out.status.success(), "{}", common::text(&out));
    let csv = p.table_csv("fisher");
    let get = |m: &str, c: &str| -> f64 {
        column(&csv, m, c)
            .parse()
            .unwrap_or_else(|_| panic!("{m} {c}: {csv}"))
    };
    assert!(get("fisher", "top1") > get("stored-masks", "top1"), "{csv}");
    assert!(get("fisher", "loss") < get("stored-masks", "loss"), "{csv}");
    assert_eq!(column(&csv, "fisher", "seed"), "0");
    let achieved = get("fisher", "achieved_sparsity");
    assert!((0.5..0.51).contains(&achieved), "{achieved}");
    // Same per-layer counts: same MACs; fewer than dense.
    assert_eq!(
        get("fisher", "vision_macs"),
        get("stored-masks", "vision_macs")
    );
    assert!(get("fisher", "mac_fraction") < 0.75);
    assert_eq!(get("dense", "mac_fraction"), 1.0);
    for c in [
        "latency_ms",
        "throughput",
        "dense_throughput",
        "speedup",
        "params_nonzero",
    ] {
        assert!(get("fisher", c) > 0.0, "{c}");
    }
    assert!(get("fisher", "params_nonzero") < get("dense", "params_nonzero"));
}

/// Bad input is named at plan time: a budget below one head, a mask file that does not fit.
#[test]
fn impossible_budgets_and_misfit_mask_files_fail_at_plan_time() {
    let p = common::Project::new();
    let out = p.run(&["init-model", "models/tiny", "--preset", "tiny"]);
    assert!(out.status.success(), "{}", common::text(&out));
    p.write(
        "a.toml",
        &MANIFEST.replace("sparsity = [0.5]", "sparsity = [0.99]"),
    );
    let out = p.run(&["plan", "a.toml"]);
    let log = common::text(&out);
    assert_eq!(out.status.code(), Some(2), "{log}");
    assert!(
        log.contains("less than one attention head") && log.contains("a.toml:"),
        "{log}"
    );
    std::fs::copy(
        masks_dir().join("0.5_seed_501.safetensors"),
        p.path().join("b32.safetensors"),
    )
    .unwrap();
    let stored = format!(
        "{MANIFEST}\n[[grid.include]]\nmethod = \"stored-masks\"\nsparsity = 0.5\n\n[methods.stored-masks]\nfile = \"b32.safetensors\"\n"
    );
    p.write("b.toml", &stored);
    let out = p.run(&["plan", "b.toml"]);
    let log = common::text(&out);
    assert_eq!(out.status.code(), Some(2), "{log}");
    assert!(
        log.contains("b32.safetensors") && log.contains("[12, 12]") && log.contains("[3, 4]"),
        "{log}"
    );
}

/// Mask tuning against an independent construction, in f64: layer 1's attention and MLP
/// systems built explicitly from whole-model forwards (one column per kept unit, the spec's
/// targets with the full-model teacher) and solved by the §6b rule give the scales the
/// pipeline's chunked, in-place passes produced.
#[test]
fn tuned_scales_equal_an_explicit_least_squares_construction() {
    let _s = serial();
    let mut model = model("tiny", 21);
    let samples = vision_samples(&model, 16);
    let objective = contrastive(&model, 16);
    let (samples, objective) = in_f64(&mut model, samples, objective);
    let x = samples.inputs.x.shallow_clone();
    let settings = Settings {
        batch: 8,
        ..Settings::head(0.45, model.config.vision.tokens())
    };
    let out = fisher::prune_tower(&model, Tower::Vision, &samples, &objective, &settings).unwrap();
    let _g = tch::no_grad_guard();
    let opts = (Kind::Double, Device::Cpu);
    let heads = out.heads.to_kind(Kind::Double);
    let neurons = out.neurons.to_kind(Kind::Double);
    let layers = &model.vision.layers;
    let full = |t: &Tensor| Tensor::ones_like(t);
    let run = |l: usize, x: &Tensor, h: &Tensor, n: &Tensor| {
        fisher::masked::layer(
            &layers[l],
            x,
            None,
            &fisher::masked::LayerMasks { head: h, neuron: n },
        )
    };
    // Layer-1 inputs: the student's through its final layer-0 masks, the teacher's through all.
    let (h0, n0) = (heads.get(0), neurons.get(0));
    let sx = run(0, &x, &h0, &n0);
    let tx = run(0, &x, &full(&h0), &full(&n0));
    let layer = &layers[1];
    let attn = &layer.self_attn;
    let b_o = attn.out_proj.bs.as_ref().unwrap();
    let binary = |row: Tensor| row.ne(0.0).to_kind(Kind::Double);
    let kept_of = |row: &Tensor| -> Vec<i64> {
        (0..row.size()[0])
            .filter(|&i| row.double_value(&[i]) != 0.0)
            .collect()
    };
    let s_heads = binary(heads.get(1));
    let kept_heads = kept_of(&s_heads);
    assert!(!kept_heads.is_empty());
    // Column h: the attention branch with head h alone, without the bias; then the bias column.
    let a_ln = layer.layer_norm1.forward(&sx);
    let mut columns: Vec<Tensor> = kept_heads
        .iter()
        .map(|&h| {
            let only = Tensor::zeros([4], opts);
            let _ = only.get(h).fill_(1.0);
            (attn.project(&fisher::masked::context(layer, &a_ln, None, &only)) - b_o).flatten(0, -1)
        })
        .collect();
    let rows = columns[0].size()[0];
    columns.push(Tensor::ones([rows], opts));
    let a = Tensor::stack(&columns, 1);
    let t_attn = attn.project(&fisher::masked::context(
        layer,
        &layer.layer_norm1.forward(&tx),
        None,
        &full(&s_heads),
    ));
    let b = (&t_attn + &tx - b_o - &sx).flatten(0, -1);
    let x_heads = fisher::tune::solve(&a.tr().mm(&a), &a.tr().mv(&b)).unwrap();
    // A real correction, not the prior.
    assert!(
        x_heads.iter().any(|v| (v - 1.0).abs() > 1e-3),
        "{x_heads:?}"
    );
    for (i, &h) in kept_heads.iter().enumerate() {
        let got = heads.double_value(&[1, h]);
        assert!(
            (got - x_heads[i]).abs() <= 1e-5 * x_heads[i].abs().max(1.0),
            "head {h}: {got} vs {}",
            x_heads[i]
        );
    }
    // The MLP after the tuned attention: column k = h_k(t) · w_k for every token.
    let tuned_heads = heads.get(1);
    let res2 = fisher::masked::after_attention(layer, &sx, None, &tuned_heads);
    let hidden = layer
        .mlp
        .hidden(&layer.layer_norm2.forward(&res2))
        .flatten(0, 1);
    let kept_neurons = kept_of(&neurons.get(1));
    let w = &layer.mlp.fc2.ws;
    let columns: Vec<Tensor> = kept_neurons
        .iter()
        .map(|&k| (hidden.select(1, k).unsqueeze(1) * w.select(1, k).unsqueeze(0)).flatten(0, -1))
        .collect();
    let a = Tensor::stack(&columns, 1);
    let t_out = run(1, &tx, &full(&s_heads), &full(&neurons.get(1)));
    let b = (t_out - layer.mlp.fc2.bs.as_ref().unwrap() - &res2).flatten(0, -1);
    let x_neurons = fisher::tune::solve(&a.tr().mm(&a), &a.tr().mv(&b)).unwrap();
    assert!(x_neurons.iter().any(|v| (v - 1.0).abs() > 1e-3));
    for (i, &k) in kept_neurons.iter().enumerate() {
        let got = neurons.double_value(&[1, k]);
        assert!(
            (got - x_neurons[i]).abs() <= 1e-5 * x_neurons[i].abs().max(1.0),
            "neuron {k}: {got} vs {}",
            x_neurons[i]
        );
    }
}
