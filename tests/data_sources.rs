//! Dataset readers on files the tests write themselves: HF-layout parquet shards (image struct
//! with PNG bytes + label), ImageFolder trees, Karpathy retrieval JSON; and their error messages.

use orchestrate::data::retrieval::RetrievalSet;
use orchestrate::data::{ImageSet, SourceSpec};
use polars::prelude::*;
use std::path::Path;

fn png(seed: u8, w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([seed, (x * 7) as u8, (y * 13) as u8])
    });
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

/// Writes one shard the way `datasets` does: `image` = struct{bytes, path}, `label` = int.
fn write_shard(path: &Path, images: Vec<Option<Vec<u8>>>, labels: Vec<i64>, label_name: &str) {
    write_shard_grouped(path, images, labels, label_name, None)
}

fn write_shard_grouped(
    path: &Path,
    images: Vec<Option<Vec<u8>>>,
    labels: Vec<i64>,
    label_name: &str,
    row_group: Option<usize>,
) {
    let n = labels.len();
    let bytes = Series::new(
        "bytes".into(),
        images.iter().map(|b| b.as_deref()).collect::<Vec<_>>(),
    );
    let paths = Series::new("path".into(), vec![None::<&str>; n]);
    let image = StructChunked::from_series("image".into(), n, [bytes, paths].iter())
        .unwrap()
        .into_series();
    let label = Series::new(label_name.into(), labels);
    let mut df = DataFrame::new(n, vec![image.into(), label.into()]).unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    ParquetWriter::new(std::fs::File::create(path).unwrap())
        .with_row_group_size(row_group)
        .finish(&mut df)
        .unwrap();
}

fn parquet(dir: &Path, label_column: &str) -> SourceSpec {
    SourceSpec::Parquet {
        dir: dir.to_path_buf(),
        image_column: "image".into(),
        label_column: label_column.into(),
    }
}

#[test]
fn parquet_splits_shards_and_rows() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_shard(
        &d.join("data/train-00000-of-00002.parquet"),
        vec![Some(png(1, 8, 8)), Some(png(2, 9, 7))],
        vec![0, 1],
        "label",
    );
    write_shard(
        &d.join("data/train-00001-of-00002.parquet"),
        vec![Some(png(3, 5, 5))],
        vec![2],
        "label",
    );
    write_shard(
        &d.join("data/test-00000-of-00001.parquet"),
        vec![Some(png(4, 6, 6)), None, Some(b"not an image".to_vec())],
        vec![1, 0, 7],
        "label",
    );
    let train = ImageSet::open(&parquet(d, "label"), "train").unwrap();
    assert_eq!(train.len(), 3);
    assert_eq!(train.labels(), &[0, 1, 2]);
    assert_eq!(train.image(2).unwrap().dimensions(), (5, 5));
    assert_eq!(train.image(0).unwrap().get_pixel(0, 0).0[0], 1);
    let (file, row) = train.locate(2);
    assert!(file.ends_with("train-00001-of-00002.parquet") && row == 0);

    // A null image cell is an error naming the file and row.
    let e = ImageSet::open(&parquet(d, "label"), "test")
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("test-00000-of-00001.parquet, row 1") && e.contains("null"),
        "{e}"
    );

    let e = ImageSet::open(&parquet(d, "fine_label"), "train")
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("no column `fine_label`") && e.contains("columns: image, label"),
        "{e}"
    );
    let e = ImageSet::open(&parquet(d, "label"), "validation")
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("no split `validation` (found: test, train)"),
        "{e}"
    );
}

/// A stage using a sample of a split reads only the row groups holding it, across shards; the
/// images it reads equal those of a full read, and reading an image it did not load is an error
/// naming the row, not a wrong image.
#[test]
fn parquet_rows_load_by_row_group() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for shard in 0..2u8 {
        let images = (0..25u8)
            .map(|i| Some(png(shard * 100 + i, 5, 5)))
            .collect();
        write_shard_grouped(
            &d.join(format!("data/train-0000{shard}-of-00002.parquet")),
            images,
            (0..25).collect(),
            "label",
            Some(4),
        );
    }
    let spec = parquet(d, "label");
    let full = ImageSet::open(&spec, "train").unwrap();
    let mut part = ImageSet::open_labels(&spec, "train").unwrap();
    assert_eq!((part.len(), part.labels()), (50, full.labels()));
    let wanted = [3, 4, 17, 24, 25, 49];
    part.load(&wanted).unwrap();
    for i in wanted {
        assert_eq!(part.image(i).unwrap(), full.image(i).unwrap(), "item {i}");
    }
    let e = part.image(10).unwrap_err().to_string();
    assert!(
        e.contains("train-00000-of-00002.parquet, row 10") && e.contains("not loaded"),
        "{e}"
    );
}

#[test]
fn parquet_bad_images_and_labels_name_the_row() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_shard(
        &d.join("test/0000.parquet"),
        vec![Some(png(4, 6, 6)), Some(b"not an image".to_vec())],
        vec![1, 7],
        "label",
    );
    let set = ImageSet::open(&parquet(d, "label"), "test").unwrap();
    let e = set.image(1).unwrap_err().to_string();
    assert!(e.contains("0000.parquet, row 1: undecodable image"), "{e}");
    let e = set.check_labels(5).unwrap_err().to_string();
    assert!(
        e.contains("row 1: label 7 is out of range for 5 classes"),
        "{e}"
    );
    set.check_labels(8).unwrap();
}

#[test]
fn imagefolder_classes_are_sorted_directories() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (class, n) in [("zebra_crossing", 2), ("apple", 1)] {
        std::fs::create_dir_all(d.join("test").join(class)).unwrap();
        for i in 0..n {
            std::fs::write(
                d.join("test").join(class).join(format!("{i}.png")),
                png(i, 4, 4),
            )
            .unwrap();
        }
    }
    std::fs::write(d.join("test/apple/notes.txt"), "ignored").unwrap();
    let set = ImageSet::open(
        &SourceSpec::Folder {
            dir: d.to_path_buf(),
        },
        "test",
    )
    .unwrap();
    assert_eq!(set.labels(), &[0, 1, 1]);
    assert_eq!(
        set.found_classnames.as_deref().unwrap(),
        &["apple".to_string(), "zebra crossing".to_string()]
    );
    assert_eq!(set.image(1).unwrap().dimensions(), (4, 4));
}

#[test]
fn karpathy_retrieval_split() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("images/val2014")).unwrap();
    std::fs::write(d.join("images/val2014/a.png"), png(1, 4, 4)).unwrap();
    let json = r#"{"images": [
        {"filename": "a.png", "filepath": "val2014", "split": "test", "sentences": [{"raw": "a cat"}, {"raw": "a small cat"}]},
        {"filename": "b.png", "filepath": "val2014", "split": "restval", "sentences": [{"raw": "a dog"}]}
    ]}"#;
    std::fs::write(d.join("dataset.json"), json).unwrap();
    let set = RetrievalSet::open(&d.join("dataset.json"), &d.join("images"), "test").unwrap();
    assert_eq!(
        set.captions,
        vec![vec!["a cat".to_string(), "a small cat".to_string()]]
    );
    assert_eq!(set.image(0).unwrap().dimensions(), (4, 4));
    let train = RetrievalSet::open(&d.join("dataset.json"), &d.join("images"), "train").unwrap();
    assert_eq!(train.images.len(), 1);
    let e = train.image(0).unwrap_err().to_string();
    assert!(e.contains("b.png"), "{e}");
}

#[test]
fn manifest_known_datasets_are_the_builtin_prompt_sets() {
    let mut known: Vec<&str> = orchestrate::manifest::schema::KNOWN_DATASETS
        .iter()
        .map(|k| k.name)
        .collect();
    let mut names = orchestrate::manifest::schema::KNOWN_DATASET_NAMES.to_vec();
    let mut builtin: Vec<&str> = orchestrate::data::Prompts::builtin_names().collect();
    known.sort();
    names.sort();
    builtin.sort();
    assert_eq!(known, builtin);
    assert_eq!(names, builtin);
}
