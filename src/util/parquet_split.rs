//! Where a Hugging Face dataset's parquet files are and which split each belongs to: a file
//! `…/<split>-NNNNN-of-NNNNN.parquet` or `…/<split>.parquet`, or any file under a directory
//! named after a split. The planner checks a dataset's files with it; the data readers open
//! them with it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The split a parquet file belongs to, by HF naming.
pub fn split_of(dir: &Path, file: &Path) -> Option<String> {
    let stem = file.file_stem()?.to_str()?;
    let by_name = match stem.split_once('-') {
        Some((s, rest)) if rest.chars().next().is_some_and(|c| c.is_ascii_digit()) => s,
        _ => stem,
    };
    let rel = file.strip_prefix(dir).ok()?;
    let parents: Vec<String> = rel
        .parent()
        .map(|p| {
            p.components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    // A directory named after a split wins (e.g. `train/0000.parquet`).
    for p in parents.iter().rev() {
        if ["train", "test", "validation", "val", "valid"].contains(&p.as_str()) {
            return Some(p.clone());
        }
    }
    Some(by_name.to_string())
}

/// The parquet files of `split` under `dir`, sorted; else why there are none (naming the splits
/// that were found).
pub fn split_files(dir: &Path, split: &str) -> Result<Vec<PathBuf>, String> {
    let mut all: Vec<(String, PathBuf)> = walkdir::WalkDir::new(dir)
        .follow_links(true)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "parquet"))
        .filter_map(|e| split_of(dir, e.path()).map(|s| (s, e.path().to_path_buf())))
        .collect();
    all.sort_by(|a, b| a.1.cmp(&b.1));
    let files: Vec<PathBuf> = all
        .iter()
        .filter(|(s, _)| s == split)
        .map(|(_, p)| p.clone())
        .collect();
    if !files.is_empty() {
        return Ok(files);
    }
    let found: BTreeSet<&str> = all.iter().map(|(s, _)| s.as_str()).collect();
    Err(if found.is_empty() {
        "no parquet files".to_string()
    } else {
        format!(
            "no split `{split}` (found: {}); set `split`/`train_split` in the dataset's manifest entry",
            found.into_iter().collect::<Vec<_>>().join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_names_follow_the_hub_layout() {
        let d = Path::new("/d");
        let s = |p: &str| split_of(d, &d.join(p)).unwrap();
        assert_eq!(s("data/train-00000-of-00002.parquet"), "train");
        assert_eq!(s("mnist/test-00000-of-00001.parquet"), "test");
        assert_eq!(
            s("plain_text/validation-00003-of-00004.parquet"),
            "validation"
        );
        assert_eq!(s("train/0000.parquet"), "train");
        assert_eq!(s("test.parquet"), "test");
    }
}
