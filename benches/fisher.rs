//! `make bench` — Fisher structured pruning on the ViT-B/32 architecture (random weights, vision
//! tower, 512 samples, batches of 32, 2 threads unless BENCH_THREADS says otherwise): seconds
//! per phase (gradients, search, rearrangement, tuning) and peak RSS; then images/s of the
//! physically pruned model at 50 % of the MACs against the dense model, measured side by side
//! in one process (alternating, medians). Expect ≥ 1.6×.
//!
//! The pruning runs in its own process (this binary re-executed with `--case`) so its peak RSS
//! is its own.

use orchestrate::model::layerwise::{self, Tower};
use orchestrate::model::{Clip, create, zeroshot};
use orchestrate::prune::fisher::{self, Objective, Pool, Samples, Settings};
use orchestrate::prune::structured::{Structured, apply};
use std::process::Command;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

mod common;
use common::peak_rss_mib;

const SAMPLES: i64 = 512;

fn threads() -> i32 {
    std::env::var("BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}

fn model() -> Clip {
    tch::manual_seed(0);
    let mut model = Clip::new(&create::preset("vit-b32").expect("preset"), Device::Cpu);
    model.set_eval();
    model
}

/// Prunes to 50 % of the MACs, prints the phases and peak RSS, writes the masks to `out`.
fn prune(out: &str) {
    tch::set_num_threads(threads());
    let model = model();
    let pixels = Tensor::randn([SAMPLES, 3, 224, 224], (Kind::Float, Device::Cpu));
    let samples = Samples {
        inputs: layerwise::pixel_inputs(&model, &pixels),
        valid: None,
        pool: Pool::Vision,
    };
    drop(pixels);
    let objective = Objective::Contrastive {
        targets: zeroshot::normalize(&Tensor::randn([SAMPLES, 512], (Kind::Float, Device::Cpu))),
        scale: 100.0,
    };
    let settings = Settings::head(0.5, 50);
    let clock = Instant::now();
    let r = fisher::prune_tower(&model, Tower::Vision, &samples, &objective, &settings).unwrap();
    let total = clock.elapsed().as_secs_f64();
    fisher::stored::write(std::path::Path::new(out), &r.heads, &r.neurons).unwrap();
    let p = r.phases;
    println!(
        "{} {} {} {} {total} {}",
        p.gradients,
        p.search,
        p.rearrange,
        p.tune,
        peak_rss_mib()
    );
}

/// Median images/s of `model` over `rounds` timed batches.
fn images_per_second(model: &Clip, batch: &Tensor) -> f64 {
    let _g = tch::no_grad_guard();
    let _ = model.image_features(batch);
    let clock = Instant::now();
    let _ = model.image_features(batch);
    batch.size()[0] as f64 / clock.elapsed().as_secs_f64()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--case") {
        return prune(&args[i + 1]);
    }
    let masks =
        std::env::temp_dir().join(format!("fisher-bench-{}.safetensors", std::process::id()));
    let out = Command::new(std::env::current_exe().expect("own path"))
        .args(["--case", &masks.to_string_lossy()])
        .envs(orchestrate::util::runtime::openmp_env())
        .output()
        .expect("child runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<f64> = text
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(f64::NAN))
        .collect();
    if v.len() < 6 {
        eprintln!(
            "fisher case failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    println!(
        "fisher, ViT-B/32 vision tower, {SAMPLES} samples, 50 % MACs, {} threads: gradients {:.1} s, search {:.3} s, rearrangement {:.2} s, tuning {:.1} s, total {:.1} s, peak RSS {:.0} MiB",
        threads(),
        v[0],
        v[1],
        v[2],
        v[3],
        v[4],
        v[5]
    );

    tch::set_num_threads(threads());
    let dense = model();
    let (heads, neurons) = fisher::stored::read(&masks, 12, 12, 3072).unwrap();
    let _ = std::fs::remove_file(&masks);
    let units = fisher::units(Tower::Vision, &heads, &neurons).unwrap();
    let pruned = apply(
        &dense,
        &Structured {
            layers: units,
            ..Default::default()
        },
    )
    .unwrap();
    let batch = Tensor::randn([32, 3, 224, 224], (Kind::Float, Device::Cpu));
    let (mut d, mut p) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        d.push(images_per_second(&dense, &batch));
        p.push(images_per_second(&pruned, &batch));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (d, p) = (median(&mut d), median(&mut p));
    println!(
        "physically pruned ViT-B/32 vision tower at 50 % MACs, batch 32, {} threads: {p:.1} images/s vs dense {d:.1} images/s ({:.2}×)  (expect ≥ 1.6×)",
        threads(),
        p / d
    );
}
