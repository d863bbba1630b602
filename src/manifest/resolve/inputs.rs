//! Every file-system and Hugging Face cache lookup of a manifest: model and dataset directories,
//! the model configs read for plan-time checks, index files.

use super::Cx;
use crate::manifest::tree::{Span, Table, Value};
use crate::manifest::types::*;
use crate::util::clip_config::{self, ClipConfig, LayerShape};
use crate::util::hf;
use crate::util::safetensors_header;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The input widths of each tower's pruned Linears, each with what sets it (for messages):
/// `hidden_size` (q, k, v, fc1), and per layer the attention width (out_proj) and the MLP width
/// (fc2).
#[derive(Debug, Clone, Default)]
pub(super) struct TowerWidths {
    pub(super) vision: Vec<(String, i64)>,
    pub(super) text: Vec<(String, i64)>,
    /// The config they come from (the base with its vision overlay).
    pub(super) config: Option<ClipConfig>,
}

impl TowerWidths {
    pub(super) fn of(c: &ClipConfig) -> Self {
        let (v, t) = (&c.vision, &c.text);
        TowerWidths {
            vision: widths(v.hidden_size, &v.shapes(), v.layer_shapes.is_some()),
            text: widths(t.hidden_size, &t.shapes(), t.layer_shapes.is_some()),
            config: Some(c.clone()),
        }
    }
}

/// The widths a tower's shapes give its pruned Linears' inputs.
fn widths(hidden: i64, shapes: &[LayerShape], per_layer: bool) -> Vec<(String, i64)> {
    let mut out = vec![("`hidden_size`".to_string(), hidden)];
    for (i, s) in shapes.iter().enumerate() {
        if per_layer {
            out.push((format!("layer {i}'s heads × `head_dim`"), s.inner()));
            out.push((
                format!("layer {i}'s `intermediate_size`"),
                s.intermediate_size,
            ));
        } else if i == 0 {
            out.push(("`intermediate_size`".to_string(), s.intermediate_size));
        }
    }
    out
}

/// The config of the model directory `dir`: a full CLIP config, or (an `overlay`) the base's
/// with this vision-only checkpoint's tower, which must match the base's. `None`: an overlay
/// whose base could not be read (that error is reported already).
pub(super) fn read_model(
    dir: &Path,
    overlay: bool,
    base: Option<&ClipConfig>,
) -> Result<Option<ClipConfig>, String> {
    let file = dir.join("config.json");
    if !overlay {
        return ClipConfig::read(&file).map(Some).map_err(|e| e.to_string());
    }
    let vision = ClipConfig::read_vision(&file).map_err(|e| e.to_string())?;
    let Some(base) = base else { return Ok(None) };
    if vision != base.vision {
        return Err(format!(
            "{}: the vision tower ({} layers × {} wide, patch {}, image {}) does not match the base model's ({} layers × {} wide, patch {}, image {})",
            file.display(),
            vision.num_hidden_layers,
            vision.hidden_size,
            vision.patch_size,
            vision.image_size,
            base.vision.num_hidden_layers,
            base.vision.hidden_size,
            base.vision.patch_size,
            base.vision.image_size
        ));
    }
    Ok(Some(base.clone()))
}

/// Problems of the safetensors checkpoint in `dir` against what `config` describes (only the
/// vision tower for an `overlay`): malformed or truncated files, missing and unexpected
/// tensors, wrong shapes. Only the headers are read.
pub(super) fn check_weights(dir: &Path, config: &ClipConfig, overlay: bool) -> Vec<String> {
    let files = match safetensors_header::checkpoint_files(dir) {
        Ok(f) => f,
        Err(e) => return vec![format!("{}: {e}", dir.display())],
    };
    let mut expected = config.tensor_shapes();
    if overlay {
        expected.retain(|name, _| name.starts_with("vision_model."));
    }
    let mut problems = Vec::new();
    let mut found: BTreeMap<String, (Vec<i64>, PathBuf)> = BTreeMap::new();
    for file in files {
        match safetensors_header::tensor_shapes(&file) {
            Ok(tensors) => {
                for (name, shape) in tensors {
                    if !clip_config::ignored_tensor(&name) {
                        found.insert(name, (shape, file.clone()));
                    }
                }
            }
            Err(e) => problems.push(e),
        }
    }
    if !problems.is_empty() {
        return problems;
    }
    let names = |v: Vec<&String>| {
        let shown: Vec<&str> = v.iter().take(5).map(|s| s.as_str()).collect();
        match v.len() - shown.len() {
            0 => shown.join(", "),
            more => format!("{} (and {more} more)", shown.join(", ")),
        }
    };
    let missing: Vec<&String> = expected
        .keys()
        .filter(|k| !found.contains_key(*k))
        .collect();
    if !missing.is_empty() {
        problems.push(format!(
            "{}: missing tensors {} (config.json describes a model these weights do not hold)",
            dir.display(),
            names(missing)
        ));
    }
    let unexpected: Vec<&String> = found
        .keys()
        .filter(|k| !expected.contains_key(*k))
        .collect();
    if !unexpected.is_empty() {
        problems.push(format!(
            "{}: unexpected tensors {}",
            dir.display(),
            names(unexpected)
        ));
    }
    for (name, (shape, file)) in &found {
        if let Some(want) = expected.get(name)
            && want != shape
        {
            problems.push(format!(
                "{}: tensor {name} has shape {shape:?}, config.json needs {want:?}",
                file.display()
            ));
        }
    }
    problems
}

/// A Hugging Face model directory: `config.json` plus safetensors weights (single or sharded).
pub(super) fn check_model_dir(dir: &Path) -> Result<(), String> {
    if !dir.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    if !dir.join("config.json").is_file() {
        return Err(format!("{} has no config.json", dir.display()));
    }
    let has_weights = dir.join("model.safetensors").is_file()
        || dir.join("model.safetensors.index.json").is_file();
    if !has_weights {
        return Err(format!(
            "{} has no model.safetensors (nor a sharded index); only safetensors are loaded",
            dir.display()
        ));
    }
    Ok(())
}

/// The integers of an index file: separated by whitespace or commas, optionally inside `[ ]`.
/// The largest index file read (16 MiB: millions of indices).
const INDEX_FILE_LIMIT: u64 = 16 << 20;

pub(super) fn read_index_file(file: &Path) -> Result<Vec<u64>, String> {
    // Checked before opening: a FIFO would block the open, a device never ends.
    let meta = std::fs::metadata(file)
        .map_err(|e| format!("cannot read index file {}: {e}", file.display()))?;
    if !meta.is_file() {
        return Err(format!(
            "index file {} is not a regular file",
            file.display()
        ));
    }
    if meta.len() > INDEX_FILE_LIMIT {
        return Err(format!(
            "index file {} has {} bytes; at most {INDEX_FILE_LIMIT} are read",
            file.display(),
            meta.len()
        ));
    }
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut std::io::Read::take(
            std::fs::File::open(file)
                .map_err(|e| format!("cannot read index file {}: {e}", file.display()))?,
            INDEX_FILE_LIMIT,
        ),
        &mut text,
    )
    .map_err(|e| format!("cannot read index file {}: {e}", file.display()))?;
    let body = text.trim();
    let body = body
        .strip_prefix('[')
        .and_then(|b| b.strip_suffix(']'))
        .unwrap_or(body);
    body.split(|c: char| c.is_whitespace() || c == ',')
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<u64>()
                .map_err(|_| format!("{}: `{t}` is not a non-negative integer", file.display()))
        })
        .collect()
}

pub(super) fn substitute(source: &InputSource, dataset: &str) -> InputSource {
    match source {
        InputSource::Path(p) => InputSource::Path(p.replace("{dataset}", dataset)),
        InputSource::Hub(r) => InputSource::Hub(r.replace("{dataset}", dataset)),
    }
}

impl Cx<'_> {
    /// Resolves each model's weight directories for every dataset it is used with.
    /// Locates each model's directories per dataset and reads their configs; returns the
    /// pruned Linears' input widths per (model, dataset).
    pub(super) fn resolve_model_inputs(
        &mut self,
        top: &Table,
        models: &mut BTreeMap<String, (Span, ModelDef)>,
        points: &[GridPoint],
    ) -> BTreeMap<(String, String), TowerWidths> {
        let mut shapes = BTreeMap::new();
        let mut pairs: BTreeSet<(&str, &str)> = BTreeSet::new();
        for p in points {
            pairs.insert((&p.model, &p.dataset));
        }
        let model_tables = top.get("models").and_then(|e| {
            if let Value::Table(t) = &e.node.value {
                Some(t)
            } else {
                None
            }
        });
        let mut reported = BTreeSet::new();
        for (model, dataset) in pairs {
            let Some((_, def)) = models.get_mut(model) else {
                continue;
            };
            if def.test {
                def.resolved.insert(dataset.to_string(), vec![]);
                continue;
            }
            let mut widths = TowerWidths::default();
            let mt = model_tables.and_then(|t| t.get(model)).and_then(|e| {
                if let Value::Table(t) = &e.node.value {
                    Some(t)
                } else {
                    None
                }
            });
            let span_of = |key: &str| {
                mt.and_then(|t| t.get(key))
                    .map(|e| e.node.span.clone())
                    .unwrap_or(0..0)
            };
            let mut dirs = Vec::new();
            let base_key = if matches!(def.base, InputSource::Hub(_)) {
                "hf"
            } else {
                "path"
            };
            let sources = [
                (Some(def.base.clone()), base_key),
                (def.vision.clone(), "vision"),
            ];
            // The base's config, then with the overlay's vision tower.
            let mut config: Option<ClipConfig> = None;
            for (source, key) in sources {
                let Some(source) = source else { continue };
                let source = substitute(&source, dataset);
                match self
                    .locate(&source, hf::RepoType::Model)
                    .and_then(|dir| check_model_dir(&dir).map(|_| dir))
                {
                    Ok(dir) => {
                        let overlay = key == "vision";
                        let problems = match read_model(&dir, overlay, config.as_ref()) {
                            Ok(Some(c)) => {
                                let problems = check_weights(&dir, &c, overlay);
                                config = Some(c);
                                problems
                            }
                            Ok(None) => vec![],
                            Err(msg) => vec![msg],
                        };
                        for msg in problems {
                            if reported.insert(msg.clone()) {
                                self.d.error_hint(
                                    &span_of(key),
                                    &format!("models.{model}.{key}"),
                                    format!("model `{model}`: {msg}"),
                                    "the files must be a CLIP checkpoint transformers can load: config.json and safetensors weights that match it (download or export it again)",
                                );
                            }
                        }
                        dirs.push(dir)
                    }
                    Err(msg) => {
                        if reported.insert(msg.clone()) {
                            let what = if key == "vision" {
                                format!("vision checkpoint for dataset `{dataset}`")
                            } else {
                                "weights".to_string()
                            };
                            self.d.error_hint(
                                &span_of(key),
                                &format!("models.{model}.{key}"),
                                format!("model `{model}`: {what} not found: {msg}"),
                                "put the files in the local Hugging Face cache (huggingface-cli download on a machine with network access) or point `path` at a local directory",
                            );
                        }
                    }
                }
            }
            def.resolved.insert(dataset.to_string(), dirs);
            if let Some(c) = &config {
                widths = TowerWidths::of(c);
            }
            shapes.insert((model.to_string(), dataset.to_string()), widths);
        }
        shapes
    }

    pub(super) fn locate(
        &self,
        source: &InputSource,
        repo_type: hf::RepoType,
    ) -> Result<PathBuf, String> {
        match source {
            InputSource::Hub(repo) => hf::resolve(repo, repo_type),
            InputSource::Path(p) => {
                let path = self.base_dir.join(p);
                if path.exists() {
                    Ok(path)
                } else {
                    Err(format!("{} does not exist", path.display()))
                }
            }
        }
    }
}
