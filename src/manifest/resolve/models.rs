//! The `[models.NAME]` section: where the weights of a model come from.

use super::Cx;
use super::getters::join;
use crate::manifest::tree::{Entry, Span, Table};
use crate::manifest::types::*;
use std::collections::BTreeMap;

impl Cx<'_> {
    pub(super) fn source(
        &mut self,
        table: &Table,
        path: &str,
        what: &str,
    ) -> Option<(InputSource, Span)> {
        match (table.get("path"), table.get("hf")) {
            (Some(p), None) => self
                .string(&p.node, &join(path, "path"))
                .map(|s| (InputSource::Path(s), p.node.span.clone())),
            (None, Some(h)) => {
                let s = self.string(&h.node, &join(path, "hf"))?;
                let repo = s.strip_prefix("hf:").unwrap_or(&s).to_string();
                if repo.split('/').count() != 2 || repo.split('/').any(str::is_empty) {
                    self.d.error_hint(
                        &h.node.span,
                        &join(path, "hf"),
                        format!("invalid hub repository \"{s}\""),
                        "write it as \"org/name\"",
                    );
                    return None;
                }
                Some((InputSource::Hub(repo), h.node.span.clone()))
            }
            (Some(_), Some(h)) => {
                self.d.error(
                    &h.key_span,
                    path,
                    format!("{what} has both `path` and `hf`; give one"),
                );
                None
            }
            (None, None) => None,
        }
    }

    pub(super) fn model(&mut self, entry: &Entry, t: &Table, path: &str) -> Option<ModelDef> {
        let mut allowed = vec!["path", "hf", "vision"];
        if cfg!(feature = "test-stages") {
            allowed.push("test");
        }
        self.known_keys(t, path, &allowed);
        let test = cfg!(feature = "test-stages")
            && t.get("test")
                .and_then(|e| self.boolean(&e.node, &join(path, "test")))
                .unwrap_or(false);
        let base = self.source(t, path, "a model");
        let vision = match t.get("vision") {
            Some(e) => {
                let s = self.string(&e.node, &join(path, "vision"))?;
                Some(match s.strip_prefix("hf:") {
                    Some(repo) => InputSource::Hub(repo.to_string()),
                    None => InputSource::Path(s),
                })
            }
            None => None,
        };
        let base = match base {
            Some((b, _)) => b,
            None if test => InputSource::Path(String::new()),
            None => {
                self.d.error_hint(
                    &entry.key_span,
                    path,
                    "model has no weights",
                    "add `hf = \"org/name\"` (local Hugging Face cache) or `path = \"dir\"`",
                );
                return None;
            }
        };
        Some(ModelDef {
            name: entry.key.clone(),
            base,
            vision,
            resolved: BTreeMap::new(),
            test,
        })
    }
}
