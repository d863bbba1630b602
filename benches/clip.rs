//! `make bench` — CLIP figures on this machine's CPU (printed, not asserted):
//! 1. zero-shot evaluation throughput (image features + head logits, fp32, batch 64) of the
//!    ViT-B/32 architecture with random weights, next to transformers' `CLIPModel` on the same
//!    weights at the same thread count (target: at least as fast);
//! 2. decode + preprocess alone (PNG 500×375 → 224×224 normalised), images/s with rayon.

use orchestrate::data::Preprocessor;
use orchestrate::model::{Clip, ClipTokenizer, zeroshot};
use std::path::Path;
use std::process::Command;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

const BATCH: i64 = 64;
const BATCHES: usize = 4;

fn main() {
    let threads = std::env::var("BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    tch::set_num_threads(threads as i32);
    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("vit-b32");
    orchestrate::model::create::create(&model_dir, "vit-b32", 0).unwrap();
    let model = Clip::load(&model_dir, &[], Device::Cpu).unwrap();
    let tok = ClipTokenizer::from_file(&model_dir.join("tokenizer.json")).unwrap();
    let prompts = orchestrate::data::Prompts::builtin("cifar10").unwrap();
    let head = zeroshot::head(&model, &tok, prompts).unwrap();
    let _g = tch::no_grad_guard();
    tch::manual_seed(0);
    let pixels = Tensor::randn([BATCH, 3, 224, 224], (Kind::Float, Device::Cpu));
    let _ = zeroshot::logits(&model.image_features(&pixels), &head); // warm-up
    let clock = Instant::now();
    for _ in 0..BATCHES {
        let logits = zeroshot::logits(&model.image_features(&pixels), &head);
        assert_eq!(logits.size(), vec![BATCH, 10]);
    }
    let ours = (BATCH as usize * BATCHES) as f64 / clock.elapsed().as_secs_f64();

    let python = std::env::var("VIRTUAL_ENV")
        .map(|v| Path::new(&v).join("bin/python"))
        .unwrap_or_else(|_| "python3".into());
    let out = Command::new(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/transformers_clip.py"))
        .arg(&model_dir)
        .arg(threads.to_string())
        .arg(BATCH.to_string())
        .arg(BATCHES.to_string())
        .output()
        .expect("python runs");
    let theirs: Option<f64> = String::from_utf8_lossy(&out.stdout).trim().parse().ok();
    match theirs {
        Some(t) => println!(
            "zero-shot eval, ViT-B/32 fp32 CPU, {threads} threads, batch {BATCH}: orchestrate {ours:.1} images/s, transformers {t:.1} images/s ({:.2}×)  (target ≥ 1×)",
            ours / t
        ),
        None => println!(
            "zero-shot eval, ViT-B/32 fp32 CPU, {threads} threads: orchestrate {ours:.1} images/s; transformers did not run: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }

    // 2. Decode + preprocess alone.
    let mut png = Vec::new();
    let img = image::RgbImage::from_fn(500, 375, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x * y) % 251) as u8])
    });
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let pre = Preprocessor::for_image_size(224);
    let indices: Vec<usize> = (0..512).collect();
    let clock = Instant::now();
    let out = pre
        .batch(&indices, |_| {
            orchestrate::data::preprocess::decode(&png).map_err(|reason| {
                orchestrate::data::DataError::Invalid {
                    path: "bench.png".into(),
                    reason,
                }
            })
        })
        .unwrap();
    assert_eq!(out.len(), 512 * 3 * 224 * 224);
    let rate = indices.len() as f64 / clock.elapsed().as_secs_f64();
    println!(
        "decode + preprocess, PNG 500×375 → 3×224×224, {} rayon threads: {rate:.0} images/s",
        rayon::current_num_threads()
    );
}
