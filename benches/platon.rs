//! `make bench` — PLATON's cost during fine-tuning on the ViT-B/32 architecture (random weights,
//! both towers, batch 32, 2 threads unless BENCH_THREADS says otherwise): seconds per training
//! step (zero-shot cross-entropy with the class head through the text tower, backward, AdamW)
//! without and with PLATON's scoring of every masked tensor (out_proj, fc1, fc2 weights and
//! biases, both towers) and its masking every ΔT = 10 steps, alternated in one process; the
//! overhead (target ≤ 15 %), and a masking event (threshold + floor) on its own.

use orchestrate::analysis::representation::LINEARS;
use orchestrate::model::{Clip, TokenBatch, Tower, create, layerwise, zeroshot};
use orchestrate::prune::platon::{Importance, Pruner, Schedule, Scores, Smoothing};
use orchestrate::train::AdamW;
use orchestrate::train::contrastive::class_head;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

mod common;
use common::peak_rss_mib;

const BATCH: i64 = 32;
const CLASSES: i64 = 10;
const ROUNDS: usize = 3;

fn threads() -> i32 {
    std::env::var("BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    tch::set_num_threads(threads());
    tch::manual_seed(0);
    let config = create::preset("vit-b32").expect("preset");
    let model = Clip::new(&config, Device::Cpu);
    let vars = model.vs.variables();
    let mut masked = vec![];
    for tower in [Tower::Vision, Tower::Text] {
        for i in 0..layerwise::layers(&model, tower).len() {
            for linear in LINEARS {
                for p in ["weight", "bias"] {
                    let name = format!("{}encoder.layers.{i}.{linear}.{p}", tower.prefix());
                    masked.push(vars[&name].shallow_clone());
                }
            }
        }
    }
    let entries: i64 = masked.iter().map(|t| t.numel() as i64).sum();
    let tensors: Vec<Tensor> = vars.values().map(Tensor::shallow_clone).collect();
    for t in &tensors {
        let _ = t.shallow_clone().set_requires_grad(true);
    }
    let mut opt = AdamW::new(&tensors, 1e-5, 0.2);
    // One prompt per class, 77 tokens, EOS last.
    let ids = Tensor::randint(
        config.text.vocab_size - 1,
        [CLASSES, 77],
        (Kind::Int64, Device::Cpu),
    );
    let prompts = TokenBatch {
        ids,
        mask: Tensor::ones([CLASSES, 77], (Kind::Int64, Device::Cpu)),
        eos: Tensor::full([CLASSES], 76, (Kind::Int64, Device::Cpu)),
    };
    let size = config.vision.image_size;
    let pixels = Tensor::randn([BATCH, 3, size, size], (Kind::Float, Device::Cpu));
    let labels = Tensor::randint(CLASSES, [BATCH], (Kind::Int64, Device::Cpu));
    let total = 1000;
    let mut pruner = Pruner {
        importance: Importance::Platon,
        smoothing: Smoothing {
            beta1: 0.85,
            beta2: 0.95,
            window: 10,
        },
        schedule: Schedule {
            initial: 1.0,
            last: 0.2,
            initial_warmup: 0,
            final_warmup: 200,
            total,
            window: 10,
            epoch_length: None,
        },
        floor: true,
        ids: None,
        sparsity: 0.8,
        scores: masked.iter().map(Scores::zeros_like).collect(),
    };
    let mut step = |scoring: bool, t: u64| -> f64 {
        let clock = Instant::now();
        let head = class_head(&model, &prompts, CLASSES, None);
        let loss = zeroshot::logits(&model.image_features(&pixels), &head)
            .cross_entropy_for_logits(&labels);
        loss.backward();
        opt.step(&tensors);
        if scoring {
            pruner.step(&masked, t).expect("a schedule that prunes");
        }
        AdamW::zero_grad(&tensors);
        clock.elapsed().as_secs_f64()
    };
    // Warm-up, then alternate plain and scored steps; scored steps run t = 1…, so every tenth
    // masks (the schedule's interval).
    step(false, 0);
    let (mut plain, mut scored) = (vec![], vec![]);
    for r in 0..ROUNDS * 10 {
        if r % 10 < 5 {
            plain.push(step(false, 0));
        }
        scored.push(step(true, r as u64 + 1));
    }
    let (p, s) = (
        median(plain),
        scored.iter().sum::<f64>() / scored.len() as f64,
    );
    println!(
        "PLATON on ViT-B/32 (random weights), both towers, batch {BATCH}, {} threads; {entries} masked entries",
        threads()
    );
    println!("plain fine-tuning step        {p:>8.2} s (median)");
    println!(
        "step + PLATON scoring/masking {s:>8.2} s (mean over {} steps, masking every 10th)  overhead {:+.1} %",
        scored.len(),
        100.0 * (s / p - 1.0)
    );
    let clock = Instant::now();
    let scores: Vec<Tensor> = pruner
        .scores
        .iter()
        .map(|s| s.score(pruner.smoothing))
        .collect();
    let thr = orchestrate::prune::platon::threshold(&scores, 0.5).unwrap();
    let _ = orchestrate::prune::platon::mask(&masked, &scores, thr, true);
    println!(
        "one masking event (global threshold + floor) {:>6.2} s   peak RSS {:.0} MiB",
        clock.elapsed().as_secs_f64(),
        peak_rss_mib()
    );
}
