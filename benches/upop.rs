//! `make bench` — UPop on the ViT-B/32 architecture (random weights, both towers, micro-batches of
//! 32, two per step, 2 threads unless BENCH_THREADS says otherwise), through the real binary on a
//! generated retrieval dataset (128 training pairs at 224 px): seconds per search step (the
//! contrastive loss with the momentum model and the queue, ζ updated every step) and per
//! retraining step (every parameter, same loss), from the stages' records, and each phase's
//! peak RSS.
//!
//! Each phase runs in its own process (this binary re-executed with `--case`), so its peak RSS
//! is that of its own stage processes.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_orchestrate");

fn threads() -> u32 {
    std::env::var("BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}

/// The largest resident set of any finished child process (the stages), in MiB.
fn children_peak_rss_mib() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    usage.ru_maxrss as f64 / 1024.0
}

fn manifest(retrain: bool) -> String {
    let mut m = format!(
        r#"
[experiment]
name = "bench"

[models.b32]
path = "models/b32"

[datasets.pairs]
kind = "retrieval"
path = "pairs"

[grid]
model = ["b32"]
dataset = ["pairs"]
method = ["upop"]
sparsity = [0.5]

[methods.upop]
epochs = 2
interval = 1
batch_size = 32
accumulation = 2
queue_size = 128

[stages.evaluate]
timing = false

[resources]
threads = {}
"#,
        threads()
    );
    if retrain {
        m.push_str(
            r#"
[stages.retrain]
trainable = "all"
schedule = "epoch-cosine"
epochs = 2
batch_size = 32
accumulation = 2
queue_size = 128
train_size = 128
"#,
        );
    }
    m
}

fn setup(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
    };
    run(&["init-model", "models/b32", "--preset", "vit-b32"]);
    let images = dir.join("pairs/images");
    std::fs::create_dir_all(&images).unwrap();
    let mut entries = vec![];
    for i in 0..136u32 {
        let img = image::RgbImage::from_fn(224, 224, |x, y| {
            image::Rgb([
                ((x * (i % 7 + 1) + y) % 256) as u8,
                ((y * (i % 5 + 2) + i) % 256) as u8,
                ((x ^ y ^ i) % 256) as u8,
            ])
        });
        let name = format!("{i}.png");
        img.save(images.join(&name)).unwrap();
        entries.push(serde_json::json!({
            "filename": name,
            "split": if i < 8 { "test" } else { "train" },
            "sentences": [{"raw": format!("a pattern of stripes number {i}")}],
        }));
    }
    std::fs::write(
        dir.join("pairs/dataset.json"),
        serde_json::to_string(&serde_json::json!({ "images": entries })).unwrap(),
    )
    .unwrap();
}

fn record(dir: &Path, kind: &str) -> serde_json::Value {
    std::fs::read_dir(dir.join("results/cache/entries"))
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path().join("record.json");
            serde_json::from_slice::<serde_json::Value>(&std::fs::read(path).unwrap()).unwrap()
        })
        .find(|r| r["kind"] == kind)
        .unwrap()
}

fn case(name: &str, dir: &Path) {
    let retrain = name == "retrain";
    std::fs::write(dir.join("bench.toml"), manifest(retrain)).unwrap();
    let out = Command::new(BIN)
        .args(["run", "bench.toml"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let rss = children_peak_rss_mib();
    if retrain {
        let m = &record(dir, "retrain")["metrics"];
        let steps = m["steps"].as_f64().unwrap();
        println!(
            "upop retraining  {:>8.2} s/step  ({} steps of 2 × 32, every parameter)  peak RSS {rss:>7.0} MiB",
            m["train_seconds"].as_f64().unwrap() / steps,
            steps
        );
    } else {
        let m = &record(dir, "prune")["metrics"];
        let steps = m["steps"].as_f64().unwrap();
        println!(
            "upop search      {:>8.2} s/step  ({} steps of 2 × 32, ζ updated each)  peak RSS {rss:>7.0} MiB",
            m["search_seconds"].as_f64().unwrap() / steps,
            steps
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--case") {
        case(&args[i + 1], Path::new(&args[i + 2]));
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    setup(tmp.path());
    println!(
        "UPop, ViT-B/32 architecture (random weights), both towers, {} threads",
        threads()
    );
    for name in ["search", "retrain"] {
        let exe = std::env::current_exe().unwrap();
        let status = Command::new(exe)
            .args(["--case", name])
            .arg(tmp.path())
            .status()
            .unwrap();
        assert!(status.success(), "{name}");
    }
}
