//! `make bench` — pruning figures on this machine's CPU (printed, not asserted): Wanda and
//! SparseGPT on the ViT-B/32 architecture (random weights, both towers, 128 calibration pairs),
//! seconds and peak RSS, next to a per-sample baseline that mirrors the reference code's loops
//! (one sample per forward, statistics updated as running means per sample, Wanda's selection by
//! a full stable sort of every row, SparseGPT's column loop as one tensor call per step).
//! Target: ≥ 2×.
//!
//! Each case runs in its own process (this binary re-executed with `--case`) so peak RSS is
//! per case.

use orchestrate::model::Tower;
use orchestrate::model::clip::EncoderLayer;
use orchestrate::model::layerwise::{self, TowerInputs};
use orchestrate::model::{Clip, TokenBatch, create};
use orchestrate::prune::sequential::{self, LayerRule};
use orchestrate::prune::{Calibration, Pattern, mask, over_towers, sparsegpt};
use std::process::Command;
use std::time::Instant;
use tch::nn::Module;
use tch::{Device, Kind, Tensor};

mod common;
use common::peak_rss_mib;

const SAMPLES: i64 = 128;

fn setup() -> (Clip, Calibration) {
    tch::manual_seed(0);
    let config = create::preset("vit-b32").expect("preset");
    let mut model = Clip::new(&config, Device::Cpu);
    model.set_eval();
    let pixels = Tensor::randn([SAMPLES, 3, 224, 224], (Kind::Float, Device::Cpu));
    let t = 16;
    let lens = Tensor::randint_low(6, t + 1, [SAMPLES], (Kind::Int64, Device::Cpu));
    let pos = Tensor::arange(t, (Kind::Int64, Device::Cpu)).view([1, t]);
    let mask = pos.lt_tensor(&lens.view([SAMPLES, 1])).to_kind(Kind::Int64);
    let ids = Tensor::randint_low(1, 49_000, [SAMPLES, t], (Kind::Int64, Device::Cpu));
    let eos = &lens - 1;
    let ids = ids.scatter(
        1,
        &eos.view([SAMPLES, 1]),
        &Tensor::full([SAMPLES, 1], 49_407, (Kind::Int64, Device::Cpu)),
    );
    let tokens = TokenBatch { ids, mask, eos };
    (model, Calibration { pixels, tokens })
}

/// The reference's loop: per sample, a forward of the layer with hooks that update the
/// statistic as a running mean (`add_batch` with one sample), then per-sample recompute.
fn per_sample_layer(layer: &EncoderLayer, inputs: &TowerInputs, rule: LayerRule, pattern: Pattern) {
    let _g = tch::no_grad_guard();
    let n = inputs.x.size()[0];
    let mut stats: Vec<Option<Tensor>> = vec![None, None, None, None];
    for j in 0..n {
        let x = inputs.x.narrow(0, j, 1);
        let m = inputs.mask.as_ref().map(|m| m.narrow(0, j, 1));
        let a = layer.layer_norm1.forward(&x);
        let ctx = layer.self_attn.context(&a, m.as_ref());
        let h = &x + layer.self_attn.project(&ctx);
        let ln2 = layer.layer_norm2.forward(&h);
        let hid = layer.mlp.hidden(&ln2);
        // q, k and v each carry their own hook in the reference: three identical updates.
        for (slot, z) in [(0, &a), (0, &a), (0, &a), (1, &ctx), (2, &ln2), (3, &hid)] {
            let z = z.flatten(0, 1);
            let done = j as f64;
            let update = match rule {
                LayerRule::Wanda => {
                    z.square().sum_dim_intlist(0, false, Kind::Float) / (done + 1.0)
                }
                LayerRule::SparseGpt(_) => {
                    let z = &z * (2.0 / (done + 1.0)).sqrt();
                    z.tr().matmul(&z)
                }
            };
            let s = stats[slot].take();
            stats[slot] = Some(match s {
                None => update,
                Some(prev) => prev * (done / (done + 1.0)) + update,
            });
        }
    }
    for (j, (_, linear)) in layer.linears().into_iter().enumerate() {
        let stat = stats[[0, 0, 0, 1, 2, 3][j]].as_ref().unwrap();
        let mut ws = linear.ws.shallow_clone();
        let m = match rule {
            LayerRule::Wanda => reference_wanda_mask(&ws, stat, pattern),
            LayerRule::SparseGpt(s) => {
                let (w, m) = reference_sparsegpt(&ws, stat, pattern, s);
                ws.copy_(&w);
                m
            }
        };
        let _ = ws.masked_fill_(&m, 0.0);
        let _ = mask::pack(&m);
    }
}

/// The reference's Wanda selection: a full stable sort of every row's scores (n:m patterns are
/// not benchmarked).
fn reference_wanda_mask(w: &Tensor, a: &Tensor, pattern: Pattern) -> Tensor {
    let Pattern::Unstructured(s) = pattern else {
        unreachable!("the bench prunes 50 % unstructured")
    };
    let scores = w.abs() * a.sqrt().view([1, -1]);
    let (_, order) = scores.sort_stable(true, -1, false);
    let k = mask::int_fraction(scores.size()[1], s);
    Tensor::zeros(scores.size(), (Kind::Bool, Device::Cpu)).scatter_value(
        -1,
        &order.narrow(-1, 0, k),
        1,
    )
}

/// The reference's SparseGPT (`fasterprune`): `sparsegpt::prune`'s preparation and arithmetic,
/// but its column loop makes one tensor call per step of every column (unstructured only).
fn reference_sparsegpt(
    w: &Tensor,
    h: &Tensor,
    pattern: Pattern,
    settings: sparsegpt::Settings,
) -> (Tensor, Tensor) {
    let Pattern::Unstructured(s) = pattern else {
        unreachable!("the bench prunes 50 % unstructured")
    };
    let (r, c) = w.size2().unwrap();
    let (w, u) = sparsegpt::prepare(w, h, settings.percdamp).unwrap();
    let mask_all = Tensor::zeros([r, c], (Kind::Bool, Device::Cpu));
    for i1 in (0..c).step_by(settings.blocksize as usize) {
        let width = settings.blocksize.min(c - i1);
        let w1 = w.narrow(1, i1, width).copy();
        let q1 = Tensor::zeros([r, width], (Kind::Float, Device::Cpu));
        let e1 = Tensor::zeros([r, width], (Kind::Float, Device::Cpu));
        let u1 = u.narrow(0, i1, width).narrow(1, i1, width);
        let d = u1.diagonal(0, 0, 1).copy();
        let saliency = w1.square() / d.square().view([1, width]);
        let (sorted, _) = saliency.flatten(0, -1).sort(0, false);
        let mask1 = saliency.le_tensor(&sorted.get(mask::int_fraction(r * width, s)));
        let diag: Vec<f32> = Vec::try_from(&d).unwrap();
        for col in 0..width {
            let v = w1.select(1, col);
            let q = v.masked_fill(&mask1.select(1, col), 0.0);
            let e = (&v - &q) / f64::from(diag[col as usize]);
            q1.select(1, col).copy_(&q);
            let rest = width - col;
            let _ = w1
                .narrow(1, col, rest)
                .g_sub_(&e.outer(&u1.select(0, col).narrow(0, col, rest)));
            e1.select(1, col).copy_(&e);
        }
        w.narrow(1, i1, width).copy_(&q1);
        mask_all.narrow(1, i1, width).copy_(&mask1);
        if i1 + width < c {
            let rest = c - i1 - width;
            let _ = w
                .narrow(1, i1 + width, rest)
                .g_sub_(&e1.matmul(&u.narrow(0, i1, width).narrow(1, i1 + width, rest)));
        }
    }
    (w, mask_all)
}

fn per_sample(model: &Clip, calib: &Calibration, rule: LayerRule, pattern: Pattern) {
    for tower in [Tower::Vision, Tower::Text] {
        let mut inputs = sequential::tower_inputs(model, tower, calib);
        for layer in layerwise::layers(model, tower) {
            per_sample_layer(layer, &inputs, rule, pattern);
            let _g = tch::no_grad_guard();
            let n = inputs.x.size()[0];
            let outs: Vec<Tensor> = (0..n)
                .map(|j| {
                    let m = inputs.mask.as_ref().map(|m| m.narrow(0, j, 1));
                    layer.forward(&inputs.x.narrow(0, j, 1), m.as_ref())
                })
                .collect();
            inputs.x = Tensor::cat(&outs, 0);
        }
    }
}

fn case(method: &str, variant: &str) {
    let threads = std::env::var("BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get() as i32));
    tch::set_num_threads(threads);
    let (model, calib) = setup();
    let settings = sparsegpt::Settings {
        blocksize: 128,
        percdamp: 0.01,
    };
    let pattern = Pattern::Unstructured(0.5);
    let clock = Instant::now();
    match (method, variant) {
        (_, "batched") => {
            let rule = if method == "wanda" {
                LayerRule::Wanda
            } else {
                LayerRule::SparseGpt(settings)
            };
            over_towers(
                &model,
                &[Tower::Vision, Tower::Text],
                pattern,
                |tower, out| {
                    let pruned = sequential::prune_tower(&model, tower, &calib, rule, pattern)?;
                    out.matrices.extend(pruned);
                    Ok(())
                },
            )
            .unwrap();
        }
        ("wanda", _) => per_sample(&model, &calib, LayerRule::Wanda, pattern),
        (_, _) => per_sample(&model, &calib, LayerRule::SparseGpt(settings), pattern),
    }
    println!("{} {}", clock.elapsed().as_secs_f64(), peak_rss_mib());
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--case") {
        return case(&args[i + 1], &args[i + 2]);
    }
    let exe = std::env::current_exe().expect("own path");
    let run = |method: &str, variant: &str| -> (f64, f64) {
        let out = Command::new(&exe)
            .args(["--case", method, variant])
            // As a stage process gets it; both variants run under it.
            .envs(orchestrate::util::runtime::openmp_env())
            .output()
            .expect("child runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut it = text
            .split_whitespace()
            .map(|v| v.parse::<f64>().unwrap_or(f64::NAN));
        (it.next().unwrap_or(f64::NAN), it.next().unwrap_or(f64::NAN))
    };
    // This machine's timings drift by ±15 % between runs: Wanda, whose margin is the thinner,
    // is measured as alternating pairs and reported as medians.
    for (method, pairs) in [("wanda", 5), ("sparsegpt", 1)] {
        let (mut batched, mut baseline) = (Vec::new(), Vec::new());
        for _ in 0..pairs {
            batched.push(run(method, "batched"));
            baseline.push(run(method, "per-sample"));
        }
        let (bs, br) = median(&batched);
        let (ps, pr) = median(&baseline);
        println!(
            "prune {method}, ViT-B/32 both towers, {SAMPLES} calibration pairs, 50 %, median of {pairs}: orchestrate {bs:.1} s / {br:.0} MiB peak, per-sample baseline {ps:.1} s / {pr:.0} MiB ({:.2}× faster)  (target ≥ 2×)",
            ps / bs
        );
    }
}

/// Component-wise medians of (seconds, MiB) runs.
fn median(runs: &[(f64, f64)]) -> (f64, f64) {
    let pick = |f: fn(&(f64, f64)) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (pick(|r| r.0), pick(|r| r.1))
}
