//! Wanda: |W|·‖X‖ per output row, layer-sequential on the calibration set.

use super::{Method, decode};
use crate::manifest::schema::{
    DefaultValue, MethodInput, MethodSpec, SparsityAxis, TOWER_CHOICES, Towers, TypedParams,
};
use crate::prune::artifact::Kind;
use crate::prune::sequential::{self, LayerRule};
use crate::stages::StageError;
use crate::stages::prune::{Pruned, Pruning};
use serde_json::Value as Json;

crate::params! {
    pub struct Params {
        /// which encoder towers are pruned
        towers: Towers = (TOWER_CHOICES, DefaultValue::Str("both")),
    }
}

pub const METHOD: Method = Method {
    spec: MethodSpec {
        name: "wanda",
        doc: "|W|·‖X‖ per output row (Wanda)",
        params: Params::SPECS,
        inputs: &[MethodInput::Calibration],
        sparsity: SparsityAxis::Weights,
        check: None,
    },
    artifact: Kind::Masks,
    prune,
};

fn prune(p: &Pruning, params: &Json) -> Result<Pruned, StageError> {
    let params: Params = decode("wanda", params)?;
    let calib = p.calibration()?;
    p.masks_over_towers(params.towers, |model, tower, pattern, out| {
        let pruned = sequential::prune_tower(model, tower, calib, LayerRule::Wanda, pattern)?;
        out.matrices.extend(pruned);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn declaration_decodes() {
        crate::manifest::params::check_declaration::<super::Params>().unwrap();
    }
}
