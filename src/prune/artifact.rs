//! A prune's result on disk, and applying it to a freshly loaded model.
//!
//! - `masks.safetensors`: one bit-packed mask per pruned matrix ([`super::mask::pack`]), named by
//!   the weight's HF name. Always written (1 bit per weight).
//! - `weights.safetensors`, for methods that change surviving weights: `kept.<name>` holds the
//!   surviving values of a pruned matrix in row-major order (so storage shrinks with sparsity),
//!   and `<name>` a full tensor the method changed besides (Slide-CLIP's LayerNorm γ).
//!
//! - `depth.json`, for SLS: `{"vision_layers": D}`, the vision blocks kept.
//! - `structured.json`, for structured methods: the units each layer keeps, with their scales
//!   ([`super::structured::Structured`]); applying it makes a physically smaller model.
//! - `artifact.json`: `{"kind": "masks" | "depth" | "structured"}`, what the entry holds, declared by the method
//!   that wrote it; [`apply`] reads it and never guesses from which files exist.
//!
//! Applying = zero the masked entries, scatter the kept values, copy the changed tensors, drop
//! the vision blocks past the depth. The result is bit-identical to the pruned model that wrote
//! the files.

use super::structured::Structured;
use super::{Outcome, mask};
use crate::model::{Clip, ModelError, weights};
use std::collections::HashMap;
use std::path::Path;
use tch::{Device, Tensor};

pub const MASKS: &str = "masks.safetensors";
pub const KIND: &str = "artifact.json";
pub const WEIGHTS: &str = "weights.safetensors";
pub const DEPTH: &str = "depth.json";
pub const STRUCTURED: &str = "structured.json";
const KEPT: &str = "kept.";

/// What a prune entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// One mask per pruned matrix, and surviving values for methods that update them.
    Masks,
    /// The number of vision blocks kept (SLS).
    Depth,
    /// Heads and neurons kept per layer, with their scales.
    Structured,
}

fn io(dir: &Path) -> impl Fn(std::io::Error) -> ModelError + '_ {
    move |e| ModelError::Io {
        path: dir.to_path_buf(),
        source: e,
    }
}

/// Declares what the entry in `dir` holds (the writers below call it).
fn write_kind(dir: &Path, kind: Kind) -> Result<(), ModelError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let text = serde_json::json!({ "kind": kind }).to_string();
    crate::util::fsx::write_atomic(&dir.join(KIND), text.as_bytes()).map_err(io(dir))
}

/// What the entry in `dir` holds, as its writer declared.
pub fn read_kind(dir: &Path) -> Result<Kind, ModelError> {
    let path = dir.join(KIND);
    let bad = |reason: String| ModelError::Weights {
        path: path.clone(),
        reason,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| bad(format!("unreadable ({e})")))?;
    #[derive(serde::Deserialize)]
    struct Declared {
        kind: Kind,
    }
    serde_json::from_str::<Declared>(&text)
        .map(|d| d.kind)
        .map_err(|e| bad(format!("not an artifact declaration ({e})")))
}

/// Writes the masks (and, when the method changed weights, the surviving values) of `outcome`,
/// reading current values from `model`.
pub fn write(model: &Clip, outcome: &Outcome, dir: &Path) -> Result<(), ModelError> {
    let vars = model.vs.variables();
    let var = |name: &str| {
        vars.get(name).ok_or_else(|| ModelError::Weights {
            path: dir.to_path_buf(),
            reason: format!("the model has no tensor {name}"),
        })
    };
    let mut masks = Vec::with_capacity(outcome.matrices.len());
    let mut values = Vec::new();
    for m in &outcome.matrices {
        masks.push((m.name.clone(), mask::pack(&m.mask).to_device(Device::Cpu)));
        if m.updated {
            let kept = var(&m.name)?.masked_select(&m.mask.logical_not());
            values.push((format!("{KEPT}{}", m.name), kept.to_device(Device::Cpu)));
        }
    }
    for name in &outcome.changed {
        values.push((name.clone(), var(name)?.to_device(Device::Cpu)));
    }
    std::fs::create_dir_all(dir).map_err(|e| ModelError::Io {
        path: dir.to_path_buf(),
        source: e,
    })?;
    weights::write_file(&dir.join(MASKS), &masks)?;
    if !values.is_empty() {
        weights::write_file(&dir.join(WEIGHTS), &values)?;
    }
    write_kind(dir, Kind::Masks)
}

/// Writes an SLS result: the number of vision blocks kept.
pub fn write_depth(dir: &Path, depth: usize) -> Result<(), ModelError> {
    let io = |e| ModelError::Io {
        path: dir.to_path_buf(),
        source: e,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let text = serde_json::json!({ "vision_layers": depth }).to_string();
    crate::util::fsx::write_atomic(&dir.join(DEPTH), text.as_bytes()).map_err(io)?;
    write_kind(dir, Kind::Depth)
}

/// Applies the prune stored in `dir` to `model` (loaded from the same base), by the kind the
/// entry declares.
pub fn apply(model: &mut Clip, dir: &Path) -> Result<(), ModelError> {
    match read_kind(dir)? {
        Kind::Depth => apply_depth(model, dir),
        Kind::Masks => apply_masks(model, dir),
        Kind::Structured => {
            let (prune, bad) = read_structured(dir)?;
            load_trained(model, dir)?;
            *model = super::structured::apply(model, &prune).map_err(|e| bad(e.to_string()))?;
            Ok(())
        }
    }
}

/// Overwrites the model's tensors with the full-size weights a structured method trained
/// (UPop), when the entry holds them.
fn load_trained(model: &mut Clip, dir: &Path) -> Result<(), ModelError> {
    let path = dir.join(WEIGHTS);
    if !path.is_file() {
        return Ok(());
    }
    let values: HashMap<String, Tensor> = Tensor::read_safetensors(&path)
        .map_err(|e| ModelError::Weights {
            path: path.clone(),
            reason: format!("not a readable safetensors file ({e})"),
        })?
        .into_iter()
        .collect();
    overwrite(model, values, &path)
}

/// Copies `values` into the model's tensors of the same names and shapes.
fn overwrite(
    model: &mut Clip,
    values: HashMap<String, Tensor>,
    file: &Path,
) -> Result<(), ModelError> {
    let vars = model.vs.variables();
    let bad = |reason: String| ModelError::Weights {
        path: file.to_path_buf(),
        reason,
    };
    let _g = tch::no_grad_guard();
    for (name, t) in values {
        let var = vars
            .get(&name)
            .ok_or_else(|| bad(format!("the model has no tensor {name}")))?;
        if var.size() != t.size() {
            return Err(bad(format!("tensor {name} has the wrong shape")));
        }
        var.shallow_clone().copy_(&t);
    }
    Ok(())
}

/// As [`apply`], except that a structured prune keeps the model's full shapes: its pruned
/// units are zeroed and its scales folded in ([`super::structured::apply_full_size`]), which
/// computes the same outputs in a layout every CLIP loader reads.
pub fn apply_full_size(model: &mut Clip, dir: &Path) -> Result<(), ModelError> {
    match read_kind(dir)? {
        Kind::Structured => {
            let (prune, bad) = read_structured(dir)?;
            load_trained(model, dir)?;
            super::structured::apply_full_size(model, &prune).map_err(|e| bad(e.to_string()))
        }
        _ => apply(model, dir),
    }
}

/// The structured prune in `dir`, and a way to name its file in an error.
fn read_structured(dir: &Path) -> Result<(Structured, impl Fn(String) -> ModelError), ModelError> {
    let path = dir.join(STRUCTURED);
    let bad = move |reason: String| ModelError::Weights {
        path: path.clone(),
        reason,
    };
    let text = std::fs::read_to_string(dir.join(STRUCTURED)).map_err(|e| bad(e.to_string()))?;
    let prune =
        serde_json::from_str(&text).map_err(|e| bad(format!("not a structured prune ({e})")))?;
    Ok((prune, bad))
}

/// Writes a structured prune (the units each layer keeps, with their scales).
pub fn write_structured(dir: &Path, prune: &Structured) -> Result<(), ModelError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let text = serde_json::to_vec(prune).expect("a structured prune serialises");
    crate::util::fsx::write_atomic(&dir.join(STRUCTURED), &text).map_err(io(dir))?;
    write_kind(dir, Kind::Structured)
}

fn apply_depth(model: &mut Clip, dir: &Path) -> Result<(), ModelError> {
    let depth_file = dir.join(DEPTH);
    {
        let bad = |reason: String| ModelError::Weights {
            path: depth_file.clone(),
            reason,
        };
        let text = std::fs::read_to_string(&depth_file).map_err(|e| bad(e.to_string()))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let depth = json["vision_layers"]
            .as_u64()
            .filter(|&d| d >= 1 && d as usize <= model.vision.layers.len())
            .ok_or_else(|| {
                bad(format!(
                    "`vision_layers` must be 1…{}",
                    model.vision.layers.len()
                ))
            })?;
        super::depth::truncate(model, depth as usize);
        Ok(())
    }
}

fn apply_masks(model: &mut Clip, dir: &Path) -> Result<(), ModelError> {
    let read = |file: &str| -> Result<HashMap<String, Tensor>, ModelError> {
        let path = dir.join(file);
        if !path.is_file() {
            return Ok(HashMap::new());
        }
        Ok(Tensor::read_safetensors(&path)
            .map_err(|e| ModelError::Weights {
                path: path.clone(),
                reason: format!("not a readable safetensors file ({e})"),
            })?
            .into_iter()
            .collect())
    };
    let masks = read(MASKS)?;
    if masks.is_empty() {
        return Err(ModelError::Weights {
            path: dir.join(MASKS),
            reason: "missing or empty".into(),
        });
    }
    let mut values = read(WEIGHTS)?;
    let vars = model.vs.variables();
    let bad = |file: &str, reason: String| ModelError::Weights {
        path: dir.join(file),
        reason,
    };
    let device = model.vs.device();
    tch::no_grad(|| -> Result<(), ModelError> {
        for (name, packed) in &masks {
            let mut w = vars
                .get(name)
                .ok_or_else(|| bad(MASKS, format!("the model has no tensor {name}")))?
                .shallow_clone();
            let shape = w.size();
            let numel: i64 = shape.iter().product();
            if packed.size() != [(numel + 7) / 8] {
                return Err(bad(
                    MASKS,
                    format!("mask {name} does not fit a {shape:?} weight"),
                ));
            }
            let m = mask::unpack(&packed.to_device(device), &shape);
            match values.remove(&format!("{KEPT}{name}")) {
                Some(kept) => {
                    let keep = m.logical_not();
                    let count = keep.sum(tch::Kind::Int64).int64_value(&[]);
                    if kept.size() != [count] {
                        return Err(bad(
                            WEIGHTS,
                            format!(
                                "{KEPT}{name} holds {:?} values, the mask keeps {count}",
                                kept.size()
                            ),
                        ));
                    }
                    let _ = w.zero_();
                    let _ = w.masked_scatter_(&keep, &kept.to_device(device));
                }
                None => {
                    let _ = w.masked_fill_(&m, 0.0);
                }
            }
        }
        Ok(())
    })?;
    overwrite(model, values, &dir.join(WEIGHTS))
}
