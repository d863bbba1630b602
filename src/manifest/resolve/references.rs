//! `[[reference]]`: numbers a paper reports for points of the grid, shown next to ours in the
//! pivots and the report. Each entry names a grid point (model, dataset, method, sparsity), the
//! metric and the published value in percent; a point the grid does not have is an error (a
//! typo would otherwise silently show nothing).

use super::Cx;
use crate::manifest::schema::{DefaultValue, ParamSpec, ParamType};
use crate::manifest::tree::{Span, Table, Value};
use crate::manifest::types::*;
use serde_json::Value as Json;

/// The metrics a published number can be compared on (table columns, in percent).
pub const REFERENCE_METRICS: &[&str] = &crate::util::columns::REFERENCE;

const SPECS: &[ParamSpec] = &[
    ParamSpec {
        name: "model",
        ty: ParamType::Str,
        default: DefaultValue::Derived,
        doc: "the grid's model name",
    },
    ParamSpec {
        name: "dataset",
        ty: ParamType::Str,
        default: DefaultValue::Derived,
        doc: "the grid's dataset name",
    },
    ParamSpec {
        name: "method",
        ty: ParamType::Str,
        default: DefaultValue::Derived,
        doc: "the grid's method name, or `dense`",
    },
    ParamSpec {
        name: "metric",
        ty: ParamType::Choice(REFERENCE_METRICS),
        default: DefaultValue::Str("top1"),
        doc: "the table column compared",
    },
    ParamSpec {
        name: "value",
        ty: ParamType::Float {
            min: 0.0,
            max: 100.0,
            min_exclusive: false,
        },
        default: DefaultValue::Derived,
        doc: "the published number, in percent",
    },
    ParamSpec {
        name: "source",
        ty: ParamType::Str,
        default: DefaultValue::Derived,
        doc: "where it is published (paper, table)",
    },
];

impl Cx<'_> {
    pub(super) fn references(&mut self, top: &Table, points: &[GridPoint]) -> Vec<Reference> {
        let Some(entry) = top.get("reference") else {
            return Vec::new();
        };
        let Value::Array(items) = &entry.node.value else {
            self.d.error_hint(
                &entry.node.span,
                "reference",
                "expected [[reference]] entries",
                "write each published number as its own [[reference]] table",
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("reference[{i}]");
            let Some(t) = self.table(item, &path) else {
                continue;
            };
            let params = self.params(t, &path, &[SPECS], &["sparsity"]);
            let text = |k: &str| params.get(k).and_then(Json::as_str).map(str::to_string);
            let sparsity = match t.get("sparsity") {
                Some(e) => self.sparsity(&e.node, &format!("{path}.sparsity")),
                None => Some(Sparsity::Fraction(0.0)),
            };
            let (Some(model), Some(dataset), Some(method), Some(value), Some(sparsity)) = (
                text("model"),
                text("dataset"),
                text("method"),
                params.get("value").and_then(Json::as_f64),
                sparsity,
            ) else {
                let missing: Vec<&str> = ["model", "dataset", "method", "value"]
                    .into_iter()
                    .filter(|k| !params.contains_key(*k) && t.get(k).is_none())
                    .collect();
                if !missing.is_empty() {
                    self.d.error_hint(
                        &item.span,
                        &path,
                        format!("missing {}", missing.join(", ")),
                        "a reference names model, dataset, method, sparsity (0 for dense), metric and value",
                    );
                }
                continue;
            };
            let known = method == "dense"
                || points.iter().any(|p| {
                    p.model == model
                        && p.dataset == dataset
                        && p.method == method
                        && p.sparsity == sparsity
                });
            let dense_known = points
                .iter()
                .any(|p| p.model == model && p.dataset == dataset);
            if !known || !dense_known {
                let span: Span = t
                    .get("method")
                    .map_or(item.span.clone(), |e| e.node.span.clone());
                self.d.error_hint(
                    &span,
                    &path,
                    format!(
                        "the grid has no point {model} / {dataset} / {method} @ {sparsity}"
                    ),
                    "name a point of [grid] exactly (model, dataset and method names as the manifest spells them)",
                );
                continue;
            }
            out.push(Reference {
                model,
                dataset,
                method,
                sparsity,
                metric: text("metric").unwrap_or_else(|| "top1".into()),
                value,
                source: text("source"),
            });
        }
        out
    }
}
