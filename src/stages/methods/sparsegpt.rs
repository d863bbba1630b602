//! SparseGPT: OBS-style reconstruction of each layer's outputs, layer-sequential.

use super::{Method, decode};
use crate::manifest::params::{int, positive};
use crate::manifest::schema::{
    DefaultValue, MethodInput, MethodSpec, SparsityAxis, TOWER_CHOICES, Towers, TypedParams,
};
use crate::prune::artifact::Kind;
use crate::prune::sequential::{self, LayerRule};
use crate::prune::sparsegpt;
use crate::stages::StageError;
use crate::stages::prune::{Pruned, Pruning};
use serde_json::Value as Json;

crate::params! {
    pub struct Params {
        /// which encoder towers are pruned
        towers: Towers = (TOWER_CHOICES, DefaultValue::Str("both")),
        /// SparseGPT column block size (rounded down to a multiple of m for n:m)
        blocksize: i64 = (int(1, 1 << 20), DefaultValue::Int(128)),
        /// Hessian dampening as a fraction of its mean diagonal
        percdamp: f64 = (positive(0.0, 1.0), DefaultValue::Float(0.01)),
    }
}

pub const METHOD: Method = Method {
    spec: MethodSpec {
        name: "sparsegpt",
        doc: "OBS-style reconstruction (SparseGPT)",
        params: Params::SPECS,
        inputs: &[MethodInput::Calibration],
        sparsity: SparsityAxis::Weights,
        check: None,
    },
    artifact: Kind::Masks,
    prune,
};

fn prune(p: &Pruning, params: &Json) -> Result<Pruned, StageError> {
    let params: Params = decode("sparsegpt", params)?;
    let rule = LayerRule::SparseGpt(sparsegpt::Settings {
        blocksize: params.blocksize,
        percdamp: params.percdamp,
    });
    let calib = p.calibration()?;
    let pruned = p.masks_over_towers(params.towers, |model, tower, pattern, out| {
        out.matrices
            .extend(sequential::prune_tower(model, tower, calib, rule, pattern)?);
        Ok(())
    })?;
    Ok(pruned.with_blocksize(params.blocksize))
}

#[cfg(test)]
mod tests {
    #[test]
    fn declaration_decodes() {
        crate::manifest::params::check_declaration::<super::Params>().unwrap();
    }
}
