//! The pruning methods a manifest can name. Each file declares one method — its name, its
//! parameters as one typed struct (the defaults written once), the inputs it needs, how it reads
//! the grid's `sparsity` axis and the kind of artifact it produces — beside the glue that runs
//! it. Adding a method is one new file here plus one line in [`METHODS`]; the manifest, the
//! planner, the prune stage and the tables follow from the declaration.

mod fisher;
mod magnitude;
mod platon;
mod slide;
mod sls;
mod sparsegpt;
mod training;
mod upop;
mod wanda;

use super::StageError;
use super::prune::{Pruned, Pruning};
use crate::manifest::schema::{MethodSpec, Methods, TypedParams};
use crate::prune::artifact::Kind;
use serde_json::Value as Json;
use std::sync::LazyLock;

/// A registered method: its declaration, its implementation and what it writes.
pub struct Method {
    pub spec: MethodSpec,
    /// Prunes the loaded model from the point's resolved parameters.
    pub prune: fn(&Pruning, &Json) -> Result<Pruned, StageError>,
    /// The kind of artifact its prune entries hold.
    pub artifact: Kind,
}

/// Every method, in the order `orchestrate` lists them.
pub const METHODS: &[&Method] = &[
    &magnitude::METHOD,
    &wanda::METHOD,
    &sparsegpt::METHOD,
    &slide::SLIDE,
    &slide::PROGRESSIVE,
    &sls::METHOD,
    &fisher::METHOD,
    &fisher::STORED,
    &upop::METHOD,
    &platon::METHOD,
];

static SPECS: LazyLock<Vec<&'static MethodSpec>> =
    LazyLock::new(|| METHODS.iter().map(|m| &m.spec).collect());

/// The declarations, as the manifest loader takes them.
pub fn specs() -> Methods {
    SPECS.as_slice()
}

pub fn find(name: &str) -> Option<&'static Method> {
    METHODS.iter().copied().find(|m| m.spec.name == name)
}

/// Decodes a method's resolved parameters; a mismatch means the job spec was written by another
/// version of orchestrate.
fn decode<T: TypedParams>(method: &str, params: &Json) -> Result<T, StageError> {
    T::decode(params).map_err(|e| {
        StageError::Failed(format!(
            "method `{method}`: {e}; re-plan the manifest with this version of orchestrate"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::params::{ParamType, defaults_json};

    #[test]
    fn every_method_is_declared_consistently() {
        let mut names = std::collections::BTreeSet::new();
        for m in METHODS {
            assert!(
                names.insert(m.spec.name),
                "{} registered twice",
                m.spec.name
            );
            assert_ne!(m.spec.name, "dense", "`dense` is reserved for the baseline");
            assert!(find(m.spec.name).is_some());
            assert!(!m.spec.doc.is_empty());
            // Choices are spelled as the manifest spells them.
            for p in m.spec.params {
                if let ParamType::Choice(values) = p.ty {
                    assert!(!values.is_empty(), "{}.{}", m.spec.name, p.name);
                }
            }
            let _ = defaults_json(m.spec.params, 250);
        }
        assert_eq!(specs().len(), METHODS.len());
    }
}
