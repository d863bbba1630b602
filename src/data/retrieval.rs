//! COCO / Flickr30k retrieval data in the Karpathy-split layout: one JSON file
//! (`{"images": [{"filename", "filepath"?, "split", "sentences": [{"raw"}]}]}`) and an image
//! directory. A split is a list of images, each with its captions.

use super::DataError;
use super::preprocess::decode;
use image::RgbImage;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Deserialize)]
struct KarpathyFile {
    images: Vec<KarpathyImage>,
}

#[derive(Deserialize)]
struct KarpathyImage {
    filename: String,
    #[serde(default)]
    filepath: Option<String>,
    split: String,
    sentences: Vec<KarpathySentence>,
}

#[derive(Deserialize)]
struct KarpathySentence {
    raw: String,
}

pub struct RetrievalSet {
    pub images: Vec<PathBuf>,
    /// Captions of each image.
    pub captions: Vec<Vec<String>>,
}

impl RetrievalSet {
    /// The images of `split` (`restval` counts as `train`).
    pub fn open(
        annotations: &Path,
        image_dir: &Path,
        split: &str,
    ) -> Result<RetrievalSet, DataError> {
        let text = std::fs::read_to_string(annotations).map_err(|e| DataError::Io {
            path: annotations.to_path_buf(),
            reason: e.to_string(),
        })?;
        let file: KarpathyFile = serde_json::from_str(&text).map_err(|e| DataError::Invalid {
            path: annotations.to_path_buf(),
            reason: format!("not a Karpathy-split annotation file ({e})"),
        })?;
        let mut images = Vec::new();
        let mut captions = Vec::new();
        for (row, img) in file.images.into_iter().enumerate() {
            let s = if img.split == "restval" {
                "train"
            } else {
                img.split.as_str()
            };
            if s != split {
                continue;
            }
            if img.sentences.is_empty() {
                return Err(DataError::Row {
                    path: annotations.to_path_buf(),
                    row,
                    reason: format!("image {} has no captions", img.filename),
                });
            }
            let mut path = image_dir.to_path_buf();
            if let Some(fp) = &img.filepath {
                path.push(fp);
            }
            path.push(&img.filename);
            images.push(path);
            captions.push(img.sentences.into_iter().map(|s| s.raw).collect());
        }
        if images.is_empty() {
            return Err(DataError::Invalid {
                path: annotations.to_path_buf(),
                reason: format!("no images in split `{split}`"),
            });
        }
        Ok(RetrievalSet { images, captions })
    }

    pub fn image(&self, i: usize) -> Result<RgbImage, DataError> {
        let p = &self.images[i];
        let bytes = std::fs::read(p).map_err(|e| DataError::Io {
            path: p.clone(),
            reason: e.to_string(),
        })?;
        decode(&bytes).map_err(|reason| DataError::Invalid {
            path: p.clone(),
            reason,
        })
    }
}
