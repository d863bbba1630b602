//! Magnitude: the smallest |W| of each pruned matrix (no data).

use super::{Method, decode};
use crate::manifest::schema::{
    DefaultValue, MethodSpec, SparsityAxis, TOWER_CHOICES, Towers, TypedParams,
};
use crate::prune::artifact::Kind;
use crate::prune::sequential;
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
        name: "magnitude",
        doc: "smallest |W| per layer",
        params: Params::SPECS,
        inputs: &[],
        sparsity: SparsityAxis::Weights,
        check: None,
    },
    artifact: Kind::Masks,
    prune,
};

fn prune(p: &Pruning, params: &Json) -> Result<Pruned, StageError> {
    let params: Params = decode("magnitude", params)?;
    p.masks_over_towers(params.towers, |model, tower, pattern, out| {
        out.matrices
            .extend(sequential::prune_magnitude(model, tower, pattern));
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
