//! SLS depth pruning of the vision tower: t-SNE + silhouette of each block's CLS rows on the
//! calibration images and their labels, scanned top-down with `alpha` (spec
//! structured-and-analysis.md §2). The grid's sparsity is unused: the depth comes from the data.

use super::{Method, decode};
use crate::analysis::tsne;
use crate::manifest::params::float;
use crate::manifest::schema::{
    DefaultValue, MethodInput, MethodSpec, ParamType, SparsityAxis, TypedParams,
};
use crate::prune::artifact::Kind;
use crate::prune::depth;
use crate::stages::StageError;
use crate::stages::prune::{Pruned, Pruning};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OnNegative {
    #[serde(rename = "error")]
    Error,
    #[serde(rename = "keep-all")]
    KeepAll,
}

crate::params! {
    pub struct Params {
        /// a block is kept while its silhouette is ≥ alpha · the last block's
        alpha: f64 = (float(0.0, 1.0), DefaultValue::Float(0.3)),
        /// when the last block's silhouette is negative: fail, or keep every block
        on_negative: OnNegative = (ParamType::Choice(&["error", "keep-all"]), DefaultValue::Str("error")),
    }
}

pub const METHOD: Method = Method {
    spec: MethodSpec {
        name: "sls",
        doc: "SLS depth pruning of the vision tower (t-SNE + silhouette per block; the calibration images and their labels; sparsity is ignored)",
        params: Params::SPECS,
        inputs: &[MethodInput::Calibration],
        sparsity: SparsityAxis::DataDriven,
        check: None,
    },
    artifact: Kind::Depth,
    prune,
};

fn prune(p: &Pruning, params: &Json) -> Result<Pruned, StageError> {
    let params: Params = decode("sls", params)?;
    let settings = depth::Settings {
        alpha: params.alpha,
        on_negative: match params.on_negative {
            OnNegative::Error => depth::OnNegative::Error,
            OnNegative::KeepAll => depth::OnNegative::KeepAll,
        },
        tsne: tsne::Settings::default(),
    };
    let (pixels, labels) = (&p.calibration()?.pixels, p.labels()?);
    let selection = depth::select(&p.model, pixels, labels, settings).map_err(|e| {
        StageError::Failed(format!(
            "SLS depth selection failed: {e}; set `on_negative = \"keep-all\"` to keep every block instead"
        ))
    })?;
    Ok(Pruned::Depth {
        selection,
        alpha: params.alpha,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn declaration_decodes() {
        crate::manifest::params::check_declaration::<super::Params>().unwrap();
    }
}
