//! Safetensors checkpoints: single-file or sharded (`model.safetensors.index.json`), read into a
//! [`VarStore`] strictly — a missing tensor, an unexpected tensor or a shape mismatch is an error
//! naming the file and the tensor. Other dtypes are converted to the variable's (fp32). Pickle
//! checkpoints are never read.

use super::ModelError;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use tch::Tensor;
use tch::nn::VarStore;

pub use crate::util::safetensors_header::{INDEX, SINGLE};

/// Buffers some exports carry that the model does not need (positions are always `0..T`).
use crate::util::clip_config::ignored_tensor as ignored;

/// The safetensors files of a checkpoint directory.
pub fn files(dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    crate::util::safetensors_header::checkpoint_files(dir).map_err(|reason| {
        let pickle = ["pytorch_model.bin", "model.bin"]
            .iter()
            .any(|f| dir.join(f).exists());
        ModelError::Weights {
            path: dir.to_path_buf(),
            reason: if pickle {
                "has only a pickle checkpoint; orchestrate loads safetensors only (convert it with transformers: `CLIPModel.from_pretrained(dir).save_pretrained(dir, safe_serialization=True)`)".to_string()
            } else {
                reason
            },
        }
    })
}

/// Reads every tensor of a checkpoint directory, remembering which file each came from.
fn read_all(dir: &Path) -> Result<BTreeMap<String, (Tensor, PathBuf)>, ModelError> {
    let mut out = BTreeMap::new();
    for file in files(dir)? {
        let tensors = Tensor::read_safetensors(&file).map_err(|e| ModelError::Weights {
            path: file.clone(),
            reason: format!("not a readable safetensors file ({e})"),
        })?;
        for (name, t) in tensors {
            if !ignored(&name) {
                out.insert(name, (t, file.clone()));
            }
        }
    }
    Ok(out)
}

fn list(names: &[&String]) -> String {
    let shown: Vec<&str> = names.iter().take(5).map(|s| s.as_str()).collect();
    let more = names.len().saturating_sub(shown.len());
    if more > 0 {
        format!("{} (and {more} more)", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

/// Copies the checkpoint in `dir` into the variables of `vs` whose names start with `prefix`;
/// the checkpoint must hold exactly those.
pub fn load_into(vs: &VarStore, dir: &Path, prefix: &str) -> Result<(), ModelError> {
    let tensors = read_all(dir)?;
    let vars = vs.variables();
    let expected: BTreeSet<&String> = vars.keys().filter(|k| k.starts_with(prefix)).collect();
    let missing: Vec<&String> = expected
        .iter()
        .copied()
        .filter(|k| !tensors.contains_key(*k))
        .collect();
    if !missing.is_empty() {
        return Err(ModelError::Weights {
            path: dir.to_path_buf(),
            reason: format!(
                "missing tensor{} {} (the config describes a model this checkpoint does not hold)",
                if missing.len() == 1 { "" } else { "s" },
                list(&missing)
            ),
        });
    }
    let unexpected: Vec<&String> = tensors.keys().filter(|k| !expected.contains(k)).collect();
    if let Some(first) = unexpected.first() {
        return Err(ModelError::Weights {
            path: tensors[*first].1.clone(),
            reason: format!(
                "unexpected tensor{} {}{}",
                if unexpected.len() == 1 { "" } else { "s" },
                list(&unexpected),
                if prefix.is_empty() {
                    String::new()
                } else {
                    format!(" (a vision-only checkpoint holds only `{prefix}*`)")
                }
            ),
        });
    }
    tch::no_grad(|| -> Result<(), ModelError> {
        for name in expected {
            let var = &vars[name];
            let (t, file) = &tensors[name];
            if t.size() != var.size() {
                return Err(ModelError::Weights {
                    path: file.clone(),
                    reason: format!(
                        "tensor {name} has shape {:?}, the config needs {:?}",
                        t.size(),
                        var.size()
                    ),
                });
            }
            // A NaN or infinity would only show later as a meaningless accuracy.
            if t.is_floating_point() && !bool::try_from(t.isfinite().all())? {
                return Err(ModelError::Weights {
                    path: file.clone(),
                    reason: format!("tensor {name} holds NaN or infinite values"),
                });
            }
            let mut var = var.shallow_clone();
            var.f_copy_(t)?;
        }
        Ok(())
    })
}

/// Writes the variables under `prefix` as `model.safetensors` plus `config.json`, atomically
/// per file.
pub fn save(
    vs: &VarStore,
    dir: &Path,
    prefix: &str,
    config: &serde_json::Value,
) -> Result<(), ModelError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |e: std::io::Error| ModelError::Io { path, source: e }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let vars = vs.variables();
    let named: Vec<(String, Tensor)> = vars
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(k, v)| {
            (
                k.clone(),
                v.detach().to_device(tch::Device::Cpu).contiguous(),
            )
        })
        .collect::<BTreeMap<_, _>>()
        .into_iter()
        .collect();
    write_file(&dir.join(SINGLE), &named)?;
    let cfg = dir.join("config.json");
    let text = serde_json::to_string_pretty(config).expect("config serialises");
    crate::util::fsx::write_atomic(&cfg, text.as_bytes()).map_err(io(&cfg))
}

/// Writes named CPU tensors (fp32 or uint8) as one safetensors file, atomically, with the
/// `{"format": "pt"}` header metadata transformers requires of `model.safetensors`.
pub fn write_file(path: &Path, tensors: &[(String, Tensor)]) -> Result<(), ModelError> {
    let fail = |reason: String| ModelError::Weights {
        path: path.to_path_buf(),
        reason,
    };
    let mut bytes = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let t = t.to_device(tch::Device::Cpu).contiguous();
        let (dtype, data) = match t.kind() {
            tch::Kind::Float => {
                let values = Vec::<f32>::try_from(t.flatten(0, -1))?;
                let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                (safetensors::Dtype::F32, data)
            }
            tch::Kind::Uint8 => (
                safetensors::Dtype::U8,
                Vec::<u8>::try_from(t.flatten(0, -1))?,
            ),
            other => {
                return Err(fail(format!(
                    "tensor {name} has unsupported dtype {other:?}"
                )));
            }
        };
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        bytes.push((name.as_str(), dtype, shape, data));
    }
    let views = bytes
        .iter()
        .map(|(name, dtype, shape, data)| {
            safetensors::tensor::TensorView::new(*dtype, shape.clone(), data)
                .map(|view| (*name, view))
                .map_err(|e| fail(format!("tensor {name}: {e:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let metadata = Some(std::collections::HashMap::from([(
        "format".to_string(),
        "pt".to_string(),
    )]));
    let tmp = path.with_extension("safetensors.tmp");
    safetensors::tensor::serialize_to_file(views, &metadata, &tmp)
        .map_err(|e| fail(format!("cannot write: {e:?}")))?;
    std::fs::rename(&tmp, path).map_err(|e| ModelError::Io {
        path: path.to_path_buf(),
        source: e,
    })
}
