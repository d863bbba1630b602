//! The `[datasets.NAME]` section, with what a known dataset implies.

use super::Cx;
use super::getters::join;
use crate::manifest::diag::did_you_mean;
use crate::manifest::schema::{self, ParamSpec};
use crate::manifest::tree::{Entry, Table};
use crate::manifest::types::*;
use crate::util::hf;
use serde_json::Value as Json;

impl Cx<'_> {
    pub(super) fn dataset(&mut self, entry: &Entry, t: &Table, path: &str) -> Option<DatasetDef> {
        let source = self.source(t, path, "a dataset");
        let kind = match t.get("kind") {
            Some(e) => {
                let s = self.string(&e.node, &join(path, "kind"))?;
                match DatasetKind::from_name(&s) {
                    Some(k) => k,
                    None => {
                        let hint = did_you_mean(&s, DatasetKind::NAMES.iter().copied())
                            .map(|c| format!("did you mean \"{c}\"?"))
                            .unwrap_or_else(|| {
                                format!("expected one of: {}", DatasetKind::NAMES.join(", "))
                            });
                        self.d.error_hint(
                            &e.node.span,
                            &join(path, "kind"),
                            format!("unknown dataset kind \"{s}\""),
                            hint,
                        );
                        return None;
                    }
                }
            }
            None if source.is_some() => DatasetKind::HfParquet,
            None => {
                self.d.error_hint(
                    &entry.key_span,
                    path,
                    "dataset has no data",
                    "add `hf = \"org/name\"`, `path = \"dir\"`, or `kind = \"synthetic\"`",
                );
                return None;
            }
        };
        let extra: &[ParamSpec] = match kind {
            DatasetKind::HfParquet => schema::DATASET_PARQUET_PARAMS,
            DatasetKind::Synthetic => schema::DATASET_SYNTHETIC_PARAMS,
            DatasetKind::Retrieval => schema::DATASET_RETRIEVAL_PARAMS,
            DatasetKind::ImageFolder => &[],
        };
        let mut params = self.params(
            t,
            path,
            &[schema::DATASET_COMMON_PARAMS, extra],
            &["kind", "path", "hf"],
        );
        self.dataset_defaults(entry, t, path, kind, &mut params);
        let resolved = match (&source, kind) {
            (Some(_), DatasetKind::Synthetic) => {
                self.d.error(
                    &entry.key_span,
                    path,
                    "a synthetic dataset takes no `path` or `hf`",
                );
                None
            }
            (None, DatasetKind::Synthetic) => None,
            (None, _) => {
                self.d.error_hint(
                    &entry.key_span,
                    path,
                    format!("a {} dataset needs its files", kind.name()),
                    "add `hf = \"org/name\"` or `path = \"dir\"`",
                );
                None
            }
            (Some((src, span)), _) => {
                let repo_type = hf::RepoType::Dataset;
                match self.locate(src, repo_type) {
                    Ok(dir) => Some(dir),
                    Err(msg) => {
                        self.d.error_hint(span, &join(path, if matches!(src, InputSource::Hub(_)) { "hf" } else { "path" }), msg, "download it on a machine with network access, or point `path` at a local copy");
                        None
                    }
                }
            }
        };
        Some(DatasetDef {
            name: entry.key.clone(),
            kind,
            source: source.map(|(s, _)| s),
            resolved,
            params,
        })
    }

    /// Fills what a known dataset implies (its built-in prompts, the split and columns of its HF
    /// copy) where the manifest is silent, and checks that every dataset can name its classes.
    pub(super) fn dataset_defaults(
        &mut self,
        entry: &Entry,
        t: &Table,
        path: &str,
        kind: DatasetKind,
        params: &mut Params,
    ) {
        let prompts = match params.get("prompts").and_then(|v| v.as_str()) {
            Some(p) => Some(p.to_string()),
            None => schema::known_dataset(&entry.key).map(|k| k.name.to_string()),
        };
        if let Some(name) = &prompts {
            params.insert("prompts".into(), Json::from(name.clone()));
            let known = schema::known_dataset(name).expect("prompts names a known dataset");
            for (key, value) in [
                ("split", known.split),
                ("image_column", known.image_column),
                ("label_column", known.label_column),
            ] {
                if t.get(key).is_none() && params.contains_key(key) {
                    params.insert(key.into(), Json::from(value));
                }
            }
        }
        let names_classes = prompts.is_some()
            || params.contains_key("classnames")
            || matches!(
                kind,
                DatasetKind::ImageFolder | DatasetKind::Synthetic | DatasetKind::Retrieval
            );
        if !names_classes {
            self.d.error_hint(
                &entry.key_span,
                path,
                format!("dataset `{}` has no class names", entry.key),
                format!(
                    "add `classnames = [...]` (and `templates`), or `prompts = \"NAME\"` with NAME one of: {}",
                    schema::KNOWN_DATASET_NAMES.join(", ")
                ),
            );
        }
    }
}
