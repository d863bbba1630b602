//! Efficiency of the model as evaluated, next to the dense model it came from, measured in the
//! same process so the ratios come from one run: parameters (total and non-zero), MACs per
//! input per tower (the cost model of spec structured-and-analysis.md §3.4 over the layers the
//! model actually has, plus the patch embedding and the output projection), and measured
//! latency (batch 1) and throughput (inputs/s at the evaluation batch size) of the vision tower
//! on fixed random pixels.
//!
//! Cost: the model and its dense model each run `timing_repeats` evaluation batches (plus a
//! warm-up batch on CUDA) and a few single images; on two CPU cores and ViT-B/32 at batch 256
//! that is ~25 s per evaluation with the default of one repeat.
//!
//! Unstructured zeros are counted as parameters that are zero; their MACs are counted as run
//! (dense kernels), so only structured and depth pruning lower the MAC columns.

use crate::model::Clip;
use crate::util::clip_config::ClipConfig;
use crate::util::macs;
use serde_json::{Value as Json, json};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// MACs of one image through the vision tower and of one caption (at the context length)
/// through the text tower of a model with `config` (whose shapes follow slicing and depth
/// truncation).
pub fn macs(config: &ClipConfig) -> (i64, i64) {
    let v = &config.vision;
    let patches = v.tokens() - 1;
    let patch_embedding = patches * v.num_channels * v.patch_size * v.patch_size * v.hidden_size;
    let projection = v.hidden_size * config.projection_dim;
    let vision = macs::tower(
        v.tokens(),
        v.hidden_size,
        &v.shapes(),
        patch_embedding + projection,
    );
    let t = &config.text;
    let text = macs::tower(
        t.max_position_embeddings,
        t.hidden_size,
        &t.shapes(),
        t.hidden_size * config.projection_dim,
    );
    (vision, text)
}

/// `(total, non-zero)` parameters.
pub fn parameters(model: &Clip) -> (i64, i64) {
    let _g = tch::no_grad_guard();
    model.vs.variables().values().fold((0, 0), |(t, nz), v| {
        (
            t + v.numel() as i64,
            nz + v.count_nonzero(None::<i64>).int64_value(&[]),
        )
    })
}

/// Median seconds of `repeats` calls, after one warm-up call where the first call does more
/// than later ones (CUDA: kernel selection and caching allocator). On the CPU there is none to
/// pay for: a warm-up batch of ViT-B/32 at 256 images costs ~12 s on two cores.
fn median_seconds(repeats: usize, warm_up: bool, mut f: impl FnMut()) -> f64 {
    if warm_up {
        f();
    }
    let mut times: Vec<f64> = (0..repeats.max(1))
        .map(|_| {
            let clock = Instant::now();
            f();
            clock.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Batch-1 latency (seconds) and throughput (images/s at `batch`) of the vision tower.
pub fn speed(model: &Clip, kind: Kind, batch: usize, repeats: usize) -> (f64, f64) {
    let _g = tch::no_grad_guard();
    let device = model.vs.device();
    let size = model.config.vision.image_size;
    let pixels = |n: i64| {
        Tensor::randn([n, 3, size, size], (Kind::Float, Device::Cpu))
            .to_device(device)
            .to_kind(kind)
    };
    let sync = || {
        if let Device::Cuda(i) = device {
            tch::Cuda::synchronize(i as i64);
        }
    };
    let warm_up = device.is_cuda();
    let one = pixels(1);
    let latency = median_seconds(repeats, true, || {
        let _ = model.image_features(&one);
        sync();
    });
    let many = pixels(batch as i64);
    let per_batch = median_seconds(repeats, warm_up, || {
        let _ = model.image_features(&many);
        sync();
    });
    (latency, batch as f64 / per_batch)
}

/// Parameters and MACs of `model`, and its MAC fraction of the dense model (`dense`: its
/// config): cheap, recorded for every evaluation.
pub fn counts(model: &Clip, dense: &ClipConfig) -> Json {
    let (total, nonzero) = parameters(model);
    let (vision, text) = macs(&model.config);
    json!({
        "params_total": total,
        "params_nonzero": nonzero,
        "vision_macs": vision,
        "text_macs": text,
        "mac_fraction": vision as f64 / macs(dense).0 as f64,
    })
}

/// Adds the measured latency and throughput of `model` and of `dense` (`None`: the model is
/// the dense one), both as evaluated (same device, dtype, batch size), and the speed-up.
pub fn add_timing(
    metrics: &mut Json,
    model: &Clip,
    dense: Option<&Clip>,
    kind: Kind,
    batch: usize,
    repeats: usize,
) {
    let (latency, throughput) = speed(model, kind, batch, repeats);
    let (dense_latency, dense_throughput) = match dense {
        Some(d) => speed(d, kind, batch, repeats),
        None => (latency, throughput),
    };
    for (k, v) in [
        ("latency_ms", json!(1e3 * latency)),
        ("throughput", json!(throughput)),
        ("dense_latency_ms", json!(1e3 * dense_latency)),
        ("dense_throughput", json!(dense_throughput)),
        ("speedup", json!(throughput / dense_throughput)),
        ("timing_batch_size", json!(batch)),
        ("timing_repeats", json!(repeats)),
    ] {
        metrics[k] = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ViT-B/32's vision tower: the §3.4 encoder count plus the patch embedding and projection.
    #[test]
    fn vit_b32_macs() {
        let config = crate::model::create::preset("vit-b32").unwrap();
        let model = Clip::new(&config, Device::Cpu);
        let (vision, _) = macs(&model.config);
        let heads = macs::unit_cost(50, 768, 64);
        let expected = macs::encoder(heads, 144, 12 * 3072) + 49 * 3 * 32 * 32 * 768 + 768 * 512;
        assert_eq!(vision, expected);
        let (total, nonzero) = parameters(&model);
        assert!(total > 150_000_000 && nonzero <= total);
    }
}
