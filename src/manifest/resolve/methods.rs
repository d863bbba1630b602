//! The `[methods.NAME]` section: a registered method and its parameters.

use super::getters::join;
use super::{Cx, DENSE};
use crate::manifest::diag::did_you_mean;
use crate::manifest::tree::{Entry, Table};
use crate::manifest::types::*;

impl Cx<'_> {
    pub(super) fn method(&mut self, entry: &Entry, t: &Table, path: &str) -> Option<MethodDef> {
        if entry.key == DENSE {
            // A dense-only grid's points carry this name; a user method called so would turn
            // its points dense-only without a word.
            self.d.error_hint(
                &entry.key_span,
                path,
                "`dense` is reserved for the unpruned baseline",
                "rename the method, e.g. [methods.dense-magnitude]; every grid already evaluates the dense model",
            );
            return None;
        }
        let kind_name = match t.get("kind") {
            Some(e) => self
                .string(&e.node, &join(path, "kind"))
                .map(|s| (s, e.node.span.clone())),
            None if self.method_spec(&entry.key).is_some() => {
                Some((entry.key.clone(), entry.key_span.clone()))
            }
            None => {
                self.d.error_hint(
                    &entry.key_span,
                    path,
                    "method has no `kind`",
                    format!("add kind = one of: {}", self.method_names().join(", ")),
                );
                None
            }
        };
        let (kind_name, span) = kind_name?;
        let Some(spec) = self.method_spec(&kind_name) else {
            let names = self.method_names();
            let hint = did_you_mean(&kind_name, names.iter().copied())
                .map(|c| format!("did you mean \"{c}\"?"))
                .unwrap_or_else(|| format!("expected one of: {}", names.join(", ")));
            self.d.error_hint(
                &span,
                &join(path, "kind"),
                format!("unknown method kind \"{kind_name}\""),
                hint,
            );
            return None;
        };
        let params = self.params(t, path, &[spec.params], &["kind"]);
        Some(MethodDef {
            name: entry.key.clone(),
            spec,
            params,
        })
    }
}
