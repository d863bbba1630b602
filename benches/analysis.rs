//! `make bench` — analysis figures on this machine's CPU (printed, not asserted): TwoNN on
//! 2000 × 768 points (distances included) and exact t-SNE on 1000 points.

use orchestrate::analysis::{tsne, twonn};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

fn main() {
    let threads = std::env::var("BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get() as i32));
    tch::set_num_threads(threads);
    tch::manual_seed(0);
    let x = Tensor::randn([2000, 768], (Kind::Float, Device::Cpu));
    let clock = Instant::now();
    let m = twonn::measure(&x, twonn::Estimator::Reference { fraction: 0.9 }).unwrap();
    println!(
        "twonn 2000 × 768 (reference estimator, f64 direct distances): {:.2} s (ID {:.1})",
        clock.elapsed().as_secs_f64(),
        m.dimension
    );
    let clock = Instant::now();
    twonn::measure(&x, twonn::Estimator::Idvl { seed: 0 }).unwrap();
    println!(
        "twonn 2000 × 768 (IDVL block analysis, 1…20 blocks): {:.2} s",
        clock.elapsed().as_secs_f64()
    );
    let centres = Tensor::randn([10, 768], (Kind::Float, Device::Cpu)) * 0.5;
    let x = centres.repeat_interleave_self_int(100, 0, None)
        + Tensor::randn([1000, 768], (Kind::Float, Device::Cpu));
    let clock = Instant::now();
    let e = tsne::embed(&x, tsne::Settings::default()).unwrap();
    println!(
        "t-SNE 1000 × 768 → 2 (exact, {} iterations): {:.2} s",
        e.iterations,
        clock.elapsed().as_secs_f64()
    );
}
