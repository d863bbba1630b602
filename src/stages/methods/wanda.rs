//! Wanda: |W|·‖X‖ per output row, layer-sequential on the calibration set.

use super::{Method, decode};
use crate::manifest::schema::{
    DefaultValue, MethodInput, MethodSpec, SparsityAxis, TOWER_CHOICES, Towers, TypedParams,
};
use crate::prune::artifact::Kind;
use crate::prune::over_towers;
use crate::prune::sequential::{self, LayerRule};
use crate::stages::StageError;
use crate::stages::context::towers;
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
    },
    artifact: Kind::Masks,
    prune,
};

fn prune(p: &mut Pruning, params: &Json) -> Result<Pruned, StageError> {
    let params: Params = decode("wanda", params)?;
    let pattern = p.pattern()?;
    let (model, calib) = (&p.model, p.calibration()?);
    let outcome = over_towers(model, &towers(params.towers), pattern, |tower, out| {
        let pruned = sequential::prune_tower(model, tower, calib, LayerRule::Wanda, pattern)?;
        out.matrices.extend(pruned);
        Ok(())
    })?;
    Ok(Pruned::masks(outcome, pattern))
}

#[cfg(test)]
mod tests {
    #[test]
    fn declaration_decodes() {
        crate::manifest::params::check_declaration::<super::Params>().unwrap();
    }
}
