//! Every file-system and Hugging Face cache lookup of a manifest: model and dataset directories,
//! the model configs read for plan-time checks, index files.

use super::Cx;
use crate::manifest::tree::{Span, Table, Value};
use crate::manifest::types::*;
use crate::util::clip_config::{ClipConfig, LayerShape};
use crate::util::hf;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The input widths of each tower's pruned Linears, each with what sets it (for messages):
/// `hidden_size` (q, k, v, fc1), and per layer the attention width (out_proj) and the MLP width
/// (fc2).
#[derive(Debug, Clone, Default)]
pub(super) struct TowerWidths {
    pub(super) vision: Vec<(String, i64)>,
    pub(super) text: Vec<(String, i64)>,
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

pub(super) fn read_shapes(dir: &Path, overlay: bool, out: &mut TowerWidths) -> Result<(), String> {
    let file = dir.join("config.json");
    let tower = |hidden, shapes: Vec<LayerShape>, explicit: bool| widths(hidden, &shapes, explicit);
    if overlay {
        let v = ClipConfig::read_vision(&file).map_err(|e| e.to_string())?;
        out.vision = tower(v.hidden_size, v.shapes(), v.layer_shapes.is_some());
    } else {
        let c = ClipConfig::read(&file).map_err(|e| e.to_string())?;
        let (v, t) = (&c.vision, &c.text);
        out.vision = tower(v.hidden_size, v.shapes(), v.layer_shapes.is_some());
        out.text = tower(t.hidden_size, t.shapes(), t.layer_shapes.is_some());
    }
    Ok(())
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
            for (source, key) in sources {
                let Some(source) = source else { continue };
                let source = substitute(&source, dataset);
                match self
                    .locate(&source, hf::RepoType::Model)
                    .and_then(|dir| check_model_dir(&dir).map(|_| dir))
                {
                    Ok(dir) => {
                        if let Err(msg) = read_shapes(&dir, key == "vision", &mut widths)
                            && reported.insert(msg.clone())
                        {
                            self.d.error_hint(
                                &span_of(key),
                                &format!("models.{model}.{key}"),
                                format!("model `{model}`: {msg}"),
                                "the model's config.json must describe a CLIP that transformers can load",
                            );
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
