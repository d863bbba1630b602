//! Slide-CLIP: sliding SparseGPT with local distillation of the next layer (spec §8), and its
//! progressive variant (§8.4: 50 % first, then the target).

use super::{Method, decode};
use crate::manifest::params::{float, int, positive};
use crate::manifest::schema::{
    DefaultValue, MethodInput, MethodSpec, SparsityAxis, TOWER_CHOICES, Towers, TypedParams,
};
use crate::prune::artifact::Kind;
use crate::prune::{slide, sparsegpt};
use crate::stages::StageError;
use crate::stages::prune::{Pruned, Pruning};
use serde_json::Value as Json;

crate::params! {
    pub struct Params {
        /// which encoder towers are pruned
        towers: Towers = (TOWER_CHOICES, DefaultValue::Str("both")),
        /// SparseGPT column block size; default = the calibration size
        blocksize: i64 = (int(1, 1 << 20), DefaultValue::CalibrationSize),
        /// Hessian dampening as a fraction of its mean diagonal
        percdamp: f64 = (positive(0.0, 1.0), DefaultValue::Float(0.01)),
        /// local-distillation epochs per layer (upper bound)
        epochs: usize = (int(0, 10_000), DefaultValue::Int(5)),
        /// AdamW learning rate of the distillation
        lr: f64 = (positive(0.0, 1.0), DefaultValue::Float(1e-5)),
        /// AdamW weight decay of the distillation
        weight_decay: f64 = (float(0.0, 1.0), DefaultValue::Float(0.01)),
        /// early stop when an epoch's mean loss falls below this
        threshold: f64 = (float(0.0, 1e6), DefaultValue::Float(0.01)),
    }
}

const SPEC: MethodSpec = MethodSpec {
    name: "slide",
    doc: "Slide-CLIP sliding SparseGPT with local distillation",
    params: Params::SPECS,
    inputs: &[MethodInput::Calibration],
    sparsity: SparsityAxis::Weights,
    check: None,
};

pub const SLIDE: Method = Method {
    spec: SPEC,
    prune: |p, params| run(p, params, false),
    artifact: Kind::Masks,
};

pub const PROGRESSIVE: Method = Method {
    spec: MethodSpec {
        name: "slide-progressive",
        doc: "Slide-CLIP with a progressive sparsity schedule",
        ..SPEC
    },
    prune: |p, params| run(p, params, true),
    artifact: Kind::Masks,
};

fn run(p: &Pruning, params: &Json, progressive: bool) -> Result<Pruned, StageError> {
    let params: Params = decode("slide", params)?;
    let settings = slide::Settings {
        sparsegpt: sparsegpt::Settings {
            blocksize: params.blocksize,
            percdamp: params.percdamp,
        },
        epochs: params.epochs,
        lr: params.lr,
        weight_decay: params.weight_decay,
        threshold: params.threshold,
    };
    let calib = p.calibration()?;
    let pruned = p.masks_over_towers(params.towers, |model, tower, pattern, out| {
        if progressive {
            slide::prune_tower_progressive(model, tower, calib, settings, pattern, out)
        } else {
            slide::prune_tower_once(model, tower, calib, settings, pattern, out)
        }
    })?;
    Ok(pruned
        .with_blocksize(params.blocksize)
        .with_deviation("early stop on the true epoch mean (Decision 3)"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn declaration_decodes() {
        crate::manifest::params::check_declaration::<super::Params>().unwrap();
    }
}
