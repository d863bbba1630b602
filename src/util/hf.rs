//! The local Hugging Face hub cache, read without any network: `hf:org/name` → snapshot directory.
//!
//! Layout (huggingface_hub): `<cache>/models--org--name/refs/main` holds a commit hash and
//! `<cache>/models--org--name/snapshots/<hash>/` the files (symlinks into `blobs/`). Datasets use
//! the `datasets--` prefix. The cache is `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//! `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`.

use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoType {
    Model,
    Dataset,
}

/// The hub cache directory the environment points at.
pub fn hub_cache_dir() -> PathBuf {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = var("HF_HUB_CACHE") {
        return dir;
    }
    if let Some(home) = var("HF_HOME") {
        return home.join("hub");
    }
    if let Some(xdg) = var("XDG_CACHE_HOME") {
        return xdg.join("huggingface").join("hub");
    }
    var("HOME")
        .unwrap_or_else(|| PathBuf::from("/"))
        .join(".cache")
        .join("huggingface")
        .join("hub")
}

/// Resolves `org/name` to its snapshot directory, or says exactly what is missing.
pub fn resolve(repo: &str, repo_type: RepoType) -> Result<PathBuf, String> {
    let prefix = match repo_type {
        RepoType::Model => "models",
        RepoType::Dataset => "datasets",
    };
    let repo_dir = hub_cache_dir().join(format!("{prefix}--{}", repo.replace('/', "--")));
    if !repo_dir.is_dir() {
        return Err(format!(
            "hf:{repo} is not in the local Hugging Face cache (no {})",
            repo_dir.display()
        ));
    }
    let snapshots = repo_dir.join("snapshots");
    if let Ok(commit) = std::fs::read_to_string(repo_dir.join("refs").join("main")) {
        let dir = snapshots.join(commit.trim());
        if dir.is_dir() {
            return Ok(dir);
        }
    }
    // No usable `refs/main`: accept a single snapshot, as the hub library does offline.
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&snapshots)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    match dirs.len() {
        1 => Ok(dirs.remove(0)),
        0 => Err(format!(
            "hf:{repo} has no snapshot in the local Hugging Face cache ({} is empty)",
            snapshots.display()
        )),
        n => Err(format!(
            "hf:{repo} has {n} snapshots and no refs/main in {}; cannot tell which to use",
            repo_dir.display()
        )),
    }
}
