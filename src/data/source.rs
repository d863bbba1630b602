//! Image-classification splits: Hugging Face parquet shards (an image struct with PNG/JPEG
//! `bytes` + an integer label column), ImageFolder directories (one sub-directory per class) and
//! the synthetic generator, behind one indexable [`ImageSet`].
//!
//! Parquet splits are found the way the Hub lays them out: a file `…/<split>-NNNNN-of-NNNNN.parquet`
//! or `…/<split>.parquet`, or any file under a directory named `<split>`. Opening a split reads
//! its labels only; [`ImageSet::load`] then reads the encoded bytes of the rows a stage uses, one
//! row group at a time (a 2,000-image sample of a 100,000-image split never holds the rest), and
//! [`ImageSet::open`] loads every row. Decoding happens per batch, in parallel.

use super::DataError;
use super::preprocess::decode;
use super::synthetic::Synthetic;
use crate::util::parquet_split;
use image::RgbImage;
use polars::prelude::*;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    Parquet {
        dir: PathBuf,
        image_column: String,
        label_column: String,
    },
    Folder {
        dir: PathBuf,
    },
    Synthetic {
        generator: Synthetic,
        train_size: usize,
        test_size: usize,
    },
}

enum Items {
    Parquet {
        files: Vec<PathBuf>,
        image_column: String,
        /// (file index, row within the file) per item.
        rows: Vec<(u32, u32)>,
        /// Encoded image per item, once [`ImageSet::load`]ed.
        bytes: Vec<Option<Vec<u8>>>,
    },
    Folder {
        paths: Vec<PathBuf>,
    },
    Synthetic {
        generator: Synthetic,
        split: String,
    },
}

/// One split of a classification dataset.
pub struct ImageSet {
    items: Items,
    labels: Vec<i64>,
    /// Class names the data itself carries (folder names, generator names).
    pub found_classnames: Option<Vec<String>>,
    /// Where the split lives, for messages.
    pub origin: PathBuf,
}

impl ImageSet {
    /// Opens a split with every image loaded.
    pub fn open(spec: &SourceSpec, split: &str) -> Result<ImageSet, DataError> {
        let mut set = Self::open_labels(spec, split)?;
        set.load(&(0..set.len()).collect::<Vec<_>>())?;
        Ok(set)
    }

    /// Opens a split reading its labels only; [`ImageSet::load`] brings in the images used.
    pub fn open_labels(spec: &SourceSpec, split: &str) -> Result<ImageSet, DataError> {
        match spec {
            SourceSpec::Parquet {
                dir,
                image_column,
                label_column,
            } => open_parquet(dir, split, image_column, label_column),
            SourceSpec::Folder { dir } => open_folder(dir, split),
            SourceSpec::Synthetic {
                generator,
                train_size,
                test_size,
            } => {
                let n = if split == "train" {
                    *train_size
                } else {
                    *test_size
                };
                Ok(ImageSet {
                    labels: (0..n).map(|i| generator.label(i) as i64).collect(),
                    found_classnames: Some(generator.classnames()),
                    origin: PathBuf::from(format!("synthetic:{split}")),
                    items: Items::Synthetic {
                        generator: generator.clone(),
                        split: split.to_string(),
                    },
                })
            }
        }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn label(&self, i: usize) -> i64 {
        self.labels[i]
    }

    pub fn labels(&self) -> &[i64] {
        &self.labels
    }

    /// Where item `i` comes from: (file, row).
    pub fn locate(&self, i: usize) -> (PathBuf, usize) {
        match &self.items {
            Items::Parquet { files, rows, .. } => {
                let (f, r) = rows[i];
                (files[f as usize].clone(), r as usize)
            }
            Items::Folder { paths } => (paths[i].clone(), 0),
            Items::Synthetic { .. } => (self.origin.clone(), i),
        }
    }

    /// Reads the encoded images of `indices` (parquet splits; other kinds read per image).
    /// Rows are fetched one row group at a time, so memory holds only what is asked for.
    pub fn load(&mut self, indices: &[usize]) -> Result<(), DataError> {
        let Items::Parquet {
            files,
            image_column,
            rows,
            bytes,
        } = &mut self.items
        else {
            return Ok(());
        };
        // Per file, the wanted rows (sorted) with their item indices.
        let mut wanted: Vec<Vec<(u32, usize)>> = vec![Vec::new(); files.len()];
        for &i in indices {
            if bytes[i].is_none() {
                let (f, r) = rows[i];
                wanted[f as usize].push((r, i));
            }
        }
        for (file, want) in files.iter().zip(&mut wanted) {
            if want.is_empty() {
                continue;
            }
            want.sort_unstable();
            want.dedup();
            read_image_rows(file, image_column, want, bytes)?;
        }
        Ok(())
    }

    /// Item `i` decoded to 8-bit RGB.
    pub fn image(&self, i: usize) -> Result<RgbImage, DataError> {
        match &self.items {
            Items::Parquet { bytes, .. } => {
                let encoded = bytes[i].as_deref().ok_or_else(|| {
                    let (path, row) = self.locate(i);
                    DataError::Row {
                        path,
                        row,
                        reason: "image not loaded (a bug: ImageSet::load was not called)".into(),
                    }
                })?;
                decode(encoded).map_err(|reason| {
                    let (path, row) = self.locate(i);
                    DataError::Row { path, row, reason }
                })
            }
            Items::Folder { paths } => {
                let bytes = std::fs::read(&paths[i]).map_err(|e| DataError::Io {
                    path: paths[i].clone(),
                    reason: e.to_string(),
                })?;
                decode(&bytes).map_err(|reason| DataError::Invalid {
                    path: paths[i].clone(),
                    reason,
                })
            }
            Items::Synthetic { generator, split } => Ok(generator.image(split, i)),
        }
    }

    /// Every label must be a class index in `0..classes`.
    pub fn check_labels(&self, classes: usize) -> Result<(), DataError> {
        match self
            .labels
            .iter()
            .position(|&l| l < 0 || l as usize >= classes)
        {
            None => Ok(()),
            Some(i) => {
                let (path, row) = self.locate(i);
                Err(DataError::Row {
                    path,
                    row,
                    reason: format!(
                        "label {} is out of range for {classes} classes",
                        self.labels[i]
                    ),
                })
            }
        }
    }
}

fn open_parquet(
    dir: &Path,
    split: &str,
    image_column: &str,
    label_column: &str,
) -> Result<ImageSet, DataError> {
    let files = parquet_split::split_files(dir, split).map_err(|reason| DataError::Invalid {
        path: dir.to_path_buf(),
        reason,
    })?;
    let mut rows = Vec::new();
    let mut labels = Vec::new();
    for (fi, file) in files.iter().enumerate() {
        let bad = |reason: String| DataError::Invalid {
            path: file.clone(),
            reason,
        };
        let open = || {
            std::fs::File::open(file).map_err(|e| DataError::Io {
                path: file.clone(),
                reason: e.to_string(),
            })
        };
        let schema = ParquetReader::new(open()?)
            .schema()
            .map_err(|e| bad(format!("not a readable parquet file ({e})")))?;
        for col in [image_column, label_column] {
            if schema.get(col).is_none() {
                let names: Vec<String> = schema.iter_names().map(|n| n.to_string()).collect();
                return Err(bad(format!(
                    "no column `{col}` (columns: {}); set `image_column`/`label_column` in the dataset's manifest entry",
                    names.join(", ")
                )));
            }
        }
        let df = ParquetReader::new(open()?)
            .with_columns(Some(vec![label_column.to_string()]))
            .finish()
            .map_err(|e| bad(format!("cannot read ({e})")))?;
        let label = df
            .column(label_column)
            .and_then(|c| c.cast(&DataType::Int64))
            .map_err(|_| bad(format!("column `{label_column}` is not an integer label")))?;
        let label = label
            .i64()
            .map_err(|_| bad(format!("column `{label_column}` is not an integer label")))?;
        for row in 0..df.height() {
            let lab = label.get(row).ok_or_else(|| DataError::Row {
                path: file.clone(),
                row,
                reason: format!("{label_column} is null"),
            })?;
            labels.push(lab);
            rows.push((fi as u32, row as u32));
        }
    }
    Ok(ImageSet {
        items: Items::Parquet {
            files,
            image_column: image_column.to_string(),
            bytes: vec![None; rows.len()],
            rows,
        },
        labels,
        found_classnames: None,
        origin: dir.to_path_buf(),
    })
}

/// Reads the images of the sorted, distinct rows `want` (row, item) of one parquet file into
/// `bytes`: the whole column when every row is wanted, else each row group holding a wanted row.
fn read_image_rows(
    file: &Path,
    image_column: &str,
    want: &[(u32, usize)],
    bytes: &mut [Option<Vec<u8>>],
) -> Result<(), DataError> {
    let bad = |reason: String| DataError::Invalid {
        path: file.to_path_buf(),
        reason,
    };
    let open = || {
        std::fs::File::open(file).map_err(|e| DataError::Io {
            path: file.to_path_buf(),
            reason: e.to_string(),
        })
    };
    let mut reader = ParquetReader::new(open()?);
    let metadata = reader
        .get_metadata()
        .map_err(|e| bad(format!("not a readable parquet file ({e})")))?
        .clone();
    // Row ranges to read: each row group that holds a wanted row, one at a time, so memory
    // holds one group's images besides the rows kept (the whole file when every row is wanted).
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    if want.len() == metadata.num_rows {
        ranges.push((0, metadata.num_rows));
    } else {
        let mut start = 0usize;
        let mut next = want.iter().peekable();
        for group in &metadata.row_groups {
            let end = start + group.num_rows();
            let mut hit = false;
            while next.peek().is_some_and(|(r, _)| (*r as usize) < end) {
                next.next();
                hit = true;
            }
            if hit {
                ranges.push((start, end - start));
            }
            start = end;
        }
    }
    let mut want = want.iter().peekable();
    for (offset, len) in ranges {
        let mut reader = ParquetReader::new(open()?)
            .with_columns(Some(vec![image_column.to_string()]))
            .with_slice(Some((offset, len)));
        reader.set_metadata(metadata.clone());
        let df = reader
            .finish()
            .map_err(|e| bad(format!("cannot read ({e})")))?;
        let images = df
            .column(image_column)
            .and_then(|c| c.struct_().cloned())
            .and_then(|s| s.field_by_name("bytes"))
            .map_err(|_| {
                bad(format!(
                    "column `{image_column}` is not an image struct with a `bytes` field"
                ))
            })?;
        let images = images
            .binary()
            .map_err(|_| bad(format!("`{image_column}.bytes` is not binary")))?;
        while let Some(&&(row, item)) = want.peek() {
            let row = row as usize;
            if row >= offset + len {
                break;
            }
            want.next();
            let img = images.get(row - offset).ok_or_else(|| DataError::Row {
                path: file.to_path_buf(),
                row,
                reason: format!("{image_column} is null"),
            })?;
            bytes[item] = Some(img.to_vec());
        }
    }
    Ok(())
}

const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "bmp", "gif", "webp", "tif", "tiff"];

/// `dir/<split>/<class>/*` when `dir/<split>` exists, else `dir/<class>/*`; classes sorted by
/// name (torchvision's rule), label = index.
fn open_folder(dir: &Path, split: &str) -> Result<ImageSet, DataError> {
    let root = if dir.join(split).is_dir() {
        dir.join(split)
    } else {
        dir.to_path_buf()
    };
    let io = |e: std::io::Error| DataError::Io {
        path: root.clone(),
        reason: e.to_string(),
    };
    let mut classes: Vec<String> = std::fs::read_dir(&root)
        .map_err(io)?
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    classes.sort();
    if classes.is_empty() {
        return Err(DataError::Invalid {
            path: root,
            reason: "no class sub-directories (an imagefolder dataset has one per class)".into(),
        });
    }
    let mut paths = Vec::new();
    let mut labels = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let mut files: Vec<PathBuf> = walkdir::WalkDir::new(root.join(class))
            .follow_links(true)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| {
                e.path()
                    .extension()
                    .and_then(|x| x.to_str())
                    .is_some_and(|x| IMAGE_EXTENSIONS.contains(&x.to_ascii_lowercase().as_str()))
            })
            .map(|e| e.into_path())
            .collect();
        files.sort();
        labels.extend(std::iter::repeat_n(label as i64, files.len()));
        paths.extend(files);
    }
    Ok(ImageSet {
        items: Items::Folder { paths },
        labels,
        found_classnames: Some(classes.iter().map(|c| c.replace('_', " ")).collect()),
        origin: root,
    })
}
