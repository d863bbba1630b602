//! A safetensors checkpoint's layout without reading its tensor data: the files of a checkpoint
//! directory (single file or sharded index), and each file's header — names, dtypes, shapes —
//! checked against the file's size, so a truncated or malformed file is caught before any
//! stage loads it.
//!
//! Format: an 8-byte little-endian header length `n`, `n` bytes of JSON mapping each tensor name
//! to `{dtype, shape, data_offsets: [begin, end]}` (offsets into the data that follows), and an
//! optional `__metadata__` entry.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

pub const SINGLE: &str = "model.safetensors";
pub const INDEX: &str = "model.safetensors.index.json";

/// The largest header read (real checkpoints have tens of KiB).
const HEADER_LIMIT: u64 = 64 << 20;

/// The safetensors files of a checkpoint directory: `model.safetensors`, or the shards its
/// index names.
pub fn checkpoint_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let single = dir.join(SINGLE);
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join(INDEX);
    if !index.is_file() {
        return Err(format!("no {SINGLE} or {INDEX}"));
    }
    let text = std::fs::read_to_string(&index).map_err(|e| format!("{}: {e}", index.display()))?;
    let parsed: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", index.display()))?;
    let map = parsed
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| format!("{}: no `weight_map` object", index.display()))?;
    let shards: BTreeSet<&str> = map.values().filter_map(|v| v.as_str()).collect();
    Ok(shards.into_iter().map(|s| dir.join(s)).collect())
}

/// Bytes per element of a safetensors dtype.
fn dtype_size(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "F64" | "I64" | "U64" => 8,
        "F32" | "I32" | "U32" => 4,
        "F16" | "BF16" | "I16" | "U16" => 2,
        "I8" | "U8" | "BOOL" | "F8_E4M3" | "F8_E5M2" => 1,
        _ => return None,
    })
}

/// Each tensor's shape, from the header of `file`, after checking that every tensor's bytes
/// fit its dtype and shape and lie inside the file.
pub fn tensor_shapes(file: &Path) -> Result<BTreeMap<String, Vec<i64>>, String> {
    let bad = |reason: String| format!("{}: {reason}", file.display());
    let mut f = std::fs::File::open(file).map_err(|e| bad(e.to_string()))?;
    let size = f.metadata().map_err(|e| bad(e.to_string()))?.len();
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|_| bad("not a safetensors file (shorter than its header length)".into()))?;
    let n = u64::from_le_bytes(len);
    if n > HEADER_LIMIT || 8 + n > size {
        return Err(bad(format!(
            "not a safetensors file, or truncated (a header of {n} bytes in a file of {size})"
        )));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(|e| bad(e.to_string()))?;
    let json: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|e| bad(format!("not a safetensors file (header: {e})")))?;
    let data = size - 8 - n;
    let mut out = BTreeMap::new();
    for (name, info) in json {
        if name == "__metadata__" {
            continue;
        }
        let dtype = info["dtype"].as_str().unwrap_or_default();
        let shape: Option<Vec<i64>> = info["shape"]
            .as_array()
            .and_then(|s| s.iter().map(|d| d.as_i64()).collect());
        let offsets: Option<Vec<u64>> = info["data_offsets"]
            .as_array()
            .and_then(|s| s.iter().map(|d| d.as_u64()).collect());
        let (Some(elem), Some(shape), Some(offsets)) = (dtype_size(dtype), shape, offsets) else {
            return Err(bad(format!("tensor {name} has a malformed header entry")));
        };
        let bytes = shape.iter().map(|&d| d.max(0) as u64).product::<u64>() * elem;
        match offsets.as_slice() {
            [begin, end] if end >= begin && end - begin == bytes => {
                if *end > data {
                    return Err(bad(format!(
                        "truncated: tensor {name} ends at byte {end} of the data, which has {data}"
                    )));
                }
            }
            _ => {
                return Err(bad(format!(
                    "tensor {name}: its offsets do not hold a {dtype} tensor of shape {shape:?}"
                )));
            }
        }
        out.insert(name, shape);
    }
    Ok(out)
}
