//! Head and neuron masks computed elsewhere (the ETH CLIP port's layout, converted to
//! safetensors): `head_mask` `[L, H]` and `neuron_mask` `[L, I]`, float, 0 = pruned and any
//! other value = kept with that scale (tuned scales may be negative).

use crate::prune::PruneError;
use std::path::Path;
use tch::{Kind, Tensor};

pub const HEAD_MASK: &str = "head_mask";
pub const NEURON_MASK: &str = "neuron_mask";

/// Why a mask file's header does not fit a tower of `layers` layers with `heads` heads and
/// `neurons` neurons each (a plan-time check: only the header is read).
pub fn check_header(file: &Path, layers: i64, heads: i64, neurons: i64) -> Result<(), String> {
    let shapes = crate::util::safetensors_header::tensor_shapes(file)?;
    for (name, want) in [
        (HEAD_MASK, [layers, heads]),
        (NEURON_MASK, [layers, neurons]),
    ] {
        match shapes.get(name) {
            None => {
                return Err(format!(
                    "no tensor `{name}` (it holds: {})",
                    shapes.keys().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
            Some(s) if s.as_slice() != want => {
                return Err(format!(
                    "`{name}` has shape {s:?}, the model's tower needs {want:?}"
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Reads the masks (f32, CPU), checking names, shapes and finiteness.
pub fn read(
    file: &Path,
    layers: i64,
    heads: i64,
    neurons: i64,
) -> Result<(Tensor, Tensor), PruneError> {
    let bad = |reason: String| PruneError::Invalid(format!("{}: {reason}", file.display()));
    check_header(file, layers, heads, neurons).map_err(bad)?;
    let tensors = Tensor::read_safetensors(file)
        .map_err(|e| bad(format!("not a readable safetensors file ({e})")))?;
    let get = |name: &str| -> Result<Tensor, PruneError> {
        let t = tensors
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.to_kind(Kind::Float))
            .ok_or_else(|| bad(format!("no tensor `{name}`")))?;
        if !bool::try_from(t.isfinite().all())? {
            return Err(bad(format!("`{name}` holds NaN or infinite values")));
        }
        Ok(t)
    };
    Ok((get(HEAD_MASK)?, get(NEURON_MASK)?))
}

/// Writes masks in the same layout (what a Fisher prune entry stores, so other tools and the
/// `stored-masks` method can read it back).
pub fn write(
    file: &Path,
    heads: &Tensor,
    neurons: &Tensor,
) -> Result<(), crate::model::ModelError> {
    crate::model::weights::write_file(
        file,
        &[
            (HEAD_MASK.to_string(), heads.to_kind(Kind::Float)),
            (NEURON_MASK.to_string(), neurons.to_kind(Kind::Float)),
        ],
    )
}
