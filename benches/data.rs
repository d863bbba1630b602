//! `make bench` — data figures (printed, not asserted): what reading a 2,000-image sample of a
//! 100,000-image parquet split costs, as a calibration or intrinsic-dimension stage reads it.
//! "whole split" loads every image's bytes and then uses the sample (what those stages did
//! before); "rows" reads the labels, then only the row groups holding a sampled row. Each case
//! runs in its own process (this binary re-executed with `--case`), so peak RSS is per case.
//!
//! The split (32×32 PNGs of the synthetic shapes, row groups of 1,000 rows, as `datasets`
//! writes them) is generated once under the target directory.

use orchestrate::data::synthetic::Synthetic;
use orchestrate::data::{ImageSet, SourceSpec};
use orchestrate::stages::calibrate::draw;
use polars::prelude::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

mod common;
use common::peak_rss_mib;

const IMAGES: usize = 100_000;
const SAMPLE: usize = 2_000;

fn split_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-parquet-100k")
}

fn generate(dir: &Path) {
    let file = dir.join("train-00000-of-00001.parquet");
    if file.is_file() {
        return;
    }
    let clock = Instant::now();
    let shapes = Synthetic {
        classes: 10,
        image_size: 32,
        seed: 0,
    };
    let mut bytes = Vec::with_capacity(IMAGES);
    let mut labels = Vec::with_capacity(IMAGES);
    for i in 0..IMAGES {
        let mut png = Vec::new();
        image::DynamicImage::ImageRgb8(shapes.image("train", i))
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .expect("png encodes");
        bytes.push(png);
        labels.push(shapes.label(i) as i64);
    }
    let n = IMAGES;
    let b = Series::new(
        "bytes".into(),
        bytes.iter().map(Vec::as_slice).collect::<Vec<_>>(),
    );
    let paths = Series::new("path".into(), vec![None::<&str>; n]);
    let image = StructChunked::from_series("image".into(), n, [b, paths].iter())
        .expect("struct")
        .into_series();
    let label = Series::new("label".into(), labels);
    let mut df = DataFrame::new(n, vec![image.into(), label.into()]).expect("frame");
    std::fs::create_dir_all(dir).expect("bench dir");
    let tmp = dir.join("partial.parquet.tmp");
    ParquetWriter::new(std::fs::File::create(&tmp).expect("create"))
        .with_row_group_size(Some(1_000))
        .finish(&mut df)
        .expect("write parquet");
    std::fs::rename(&tmp, &file).expect("publish");
    eprintln!(
        "generated {} ({} MiB) in {:.0} s",
        file.display(),
        std::fs::metadata(&file).map_or(0, |m| m.len() >> 20),
        clock.elapsed().as_secs_f64()
    );
}

fn case(variant: &str) {
    let spec = SourceSpec::Parquet {
        dir: split_dir(),
        image_column: "image".into(),
        label_column: "label".into(),
    };
    let clock = Instant::now();
    let mut set = if variant == "whole" {
        ImageSet::open(&spec, "train").expect("open")
    } else {
        ImageSet::open_labels(&spec, "train").expect("open")
    };
    let indices = draw(set.len(), SAMPLE, 0);
    set.load(&indices).expect("load");
    let pixels: usize = indices
        .iter()
        .map(|&i| set.image(i).expect("decodes").len())
        .sum();
    assert_eq!(pixels, SAMPLE * 32 * 32 * 3);
    println!("{} {}", clock.elapsed().as_secs_f64(), peak_rss_mib());
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--case") {
        return case(&args[i + 1]);
    }
    generate(&split_dir());
    let exe = std::env::current_exe().expect("own path");
    for variant in ["whole", "rows"] {
        let out = Command::new(&exe)
            .args(["--case", variant])
            .output()
            .expect("child runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let v: Vec<f64> = text
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(f64::NAN))
            .collect();
        println!(
            "data: {SAMPLE} of {IMAGES} parquet images ({variant}): {:.2} s, {:.0} MiB peak",
            v.first().copied().unwrap_or(f64::NAN),
            v.get(1).copied().unwrap_or(f64::NAN)
        );
    }
}
