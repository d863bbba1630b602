//! Checks that span sections: n:m widths against the model configs, calibration index lists
//! against the grid, Convpass scales against the datasets.

use super::grid::grid_value_span;
use super::inputs::TowerWidths;
use super::{Cx, DENSE};
use crate::manifest::schema::{self, MethodInput};
use crate::manifest::tree::{Span, Table, Value};
use crate::manifest::types::*;
use crate::util::parquet_split;
use polars::prelude::{ParquetReader, SerReader};
use serde_json::Value as Json;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

impl Cx<'_> {
    /// An n:m pattern must divide the input width of every Linear it prunes: `hidden_size`
    /// (q, k, v, out_proj, fc1) and `intermediate_size` (fc2) of each pruned tower.
    pub(super) fn check_nm_widths(
        &mut self,
        top: &Table,
        methods: &BTreeMap<String, (Span, MethodDef)>,
        points: &[GridPoint],
        shapes: &BTreeMap<(String, String), TowerWidths>,
    ) {
        let mut reported = BTreeSet::new();
        for p in points {
            let Sparsity::NM { n, m } = p.sparsity else {
                continue;
            };
            let Some(widths) = shapes.get(&(p.model.clone(), p.dataset.clone())) else {
                continue;
            };
            let params = methods.get(&p.method).map(|(_, d)| &d.params);
            let towers = p
                .overrides
                .get("towers")
                .or_else(|| params.and_then(|q| q.get("towers")))
                .and_then(Json::as_str)
                .unwrap_or("both");
            let pruned = [("vision", &widths.vision), ("text", &widths.text)]
                .into_iter()
                .filter(|(t, _)| towers == "both" || towers == *t);
            for (tower, widths) in pruned {
                let bad = widths.iter().find(|(_, w)| *w % m as i64 != 0);
                let Some((field, width)) = bad else { continue };
                if !reported.insert((p.model.clone(), tower, m)) {
                    continue;
                }
                let span = grid_value_span(
                    top,
                    "sparsity",
                    |v| matches!(v, Value::String(s) if s.replace(' ', "") == format!("{n}:{m}")),
                );
                self.d.error_hint(
                    &span,
                    "grid.sparsity",
                    format!(
                        "{n}:{m} sparsity cannot prune model `{}`: its {tower} tower's {field} {width} is not divisible by {m}",
                        p.model
                    ),
                    "choose an m that divides the layer widths, or prune only the other tower (`towers`)",
                );
            }
        }
    }

    /// Each method's own plan-time check ([`schema::MethodSpec::check`]) on every point that
    /// names it, reported once per distinct problem at the method's table (or the grid).
    pub(super) fn check_method_points(
        &mut self,
        top: &Table,
        methods: &BTreeMap<String, (Span, MethodDef)>,
        datasets: &BTreeMap<String, (Span, DatasetDef)>,
        points: &[GridPoint],
        shapes: &BTreeMap<(String, String), TowerWidths>,
    ) {
        let mut reported = BTreeSet::new();
        for p in points {
            let Some(spec) = self.spec_of(methods, &p.method) else {
                continue;
            };
            let Some(check) = spec.check else { continue };
            // A method table that is already wrong has said so (a parameter that did not
            // resolve would read as missing here).
            let table = format!("methods.{}", p.method);
            if self.d.list.iter().any(|d| d.key_path.starts_with(&table)) {
                continue;
            }
            let Some(model) = shapes
                .get(&(p.model.clone(), p.dataset.clone()))
                .and_then(|w| w.config.as_ref())
            else {
                continue;
            };
            let mut params: serde_json::Map<String, Json> = match methods.get(&p.method) {
                Some((_, def)) => def.params.clone().into_iter().collect(),
                None => spec
                    .params
                    .iter()
                    .filter_map(|s| Some((s.name.to_string(), s.default.to_json()?)))
                    .collect(),
            };
            for (k, v) in &p.overrides {
                params.insert(k.clone(), v.clone());
            }
            let retrieval = datasets
                .get(&p.dataset)
                .is_some_and(|(_, d)| d.kind == DatasetKind::Retrieval);
            let point = schema::PointCheck {
                model,
                sparsity: p.sparsity,
                params: &params,
                retrieval,
            };
            let Err(problem) = check(&point) else {
                continue;
            };
            let message = format!(
                "method `{}` on model `{}`, dataset `{}`: {}",
                p.method, p.model, p.dataset, problem.message
            );
            if !reported.insert(message.clone()) {
                continue;
            }
            let (span, path) = match methods.get(&p.method) {
                Some((span, _)) => (span.clone(), format!("methods.{}", p.method)),
                None => (
                    grid_value_span(
                        top,
                        "method",
                        |v| matches!(v, Value::String(s) if s == &p.method),
                    ),
                    "grid.method".to_string(),
                ),
            };
            self.d.error_hint(&span, &path, message, problem.hint);
        }
    }

    /// A dataset's explicit calibration indices must cover the largest calibration size a
    /// calibrated method asks of it.
    pub(super) fn check_calibration_indices(
        &mut self,
        top: &Table,
        datasets: &BTreeMap<String, (Span, DatasetDef)>,
        methods: &BTreeMap<String, (Span, MethodDef)>,
        points: &[GridPoint],
    ) {
        let calibrated: BTreeSet<&str> = points
            .iter()
            .map(|p| p.method.as_str())
            .filter(|m| {
                self.spec_of(methods, m)
                    .is_some_and(|s| s.needs(MethodInput::Calibration))
            })
            .collect();
        let calibrated = |name: &str| calibrated.contains(name);
        for (name, (_, def)) in datasets {
            let Some(listed) = def
                .params
                .get("calibration_indices")
                .and_then(Json::as_array)
            else {
                continue;
            };
            let largest = points
                .iter()
                .filter(|p| &p.dataset == name && calibrated(&p.method))
                .map(|p| p.calibration_size as usize)
                .max();
            let Some(largest) = largest.filter(|&n| n > listed.len()) else {
                continue;
            };
            let node = top
                .get("datasets")
                .and_then(|e| match &e.node.value {
                    Value::Table(t) => t.get(name),
                    _ => None,
                })
                .and_then(|e| match &e.node.value {
                    Value::Table(t) => t.get("calibration_indices"),
                    _ => None,
                });
            let path = format!("datasets.{name}.calibration_indices");
            if let Some(e) = node {
                self.d.error_hint(
                    &e.node.span,
                    &path,
                    format!(
                        "{} calibration indices, but the grid asks for calibration_size = {largest}",
                        listed.len()
                    ),
                    "list at least that many indices, or lower `calibration_size`",
                );
            }
        }
    }

    /// Convpass retraining needs a scale per dataset: the manifest's, or the VTAB-1k value of a
    /// built-in dataset.
    pub(super) fn check_convpass(
        &mut self,
        top: &Table,
        stages: &StageSettings,
        datasets: &BTreeMap<String, (Span, DatasetDef)>,
        points: &[GridPoint],
    ) {
        let p = &stages.retrain_params;
        if !stages.retrain {
            return;
        }
        let retrain_span = || {
            top.get("stages")
                .and_then(|e| match &e.node.value {
                    Value::Table(t) => t.get("retrain"),
                    _ => None,
                })
                .map(|e| e.key_span.clone())
                .unwrap_or(0..0)
        };
        let used: BTreeSet<&str> = points
            .iter()
            .filter(|pt| pt.method != DENSE)
            .map(|pt| pt.dataset.as_str())
            .collect();
        // Retrieval data has no classes: retraining trains the model with the contrastive loss.
        let trainable = p.get("trainable").and_then(Json::as_str).unwrap_or("");
        let retrieval: Vec<&str> = used
            .iter()
            .copied()
            .filter(|name| datasets[*name].1.kind == DatasetKind::Retrieval)
            .collect();
        if !retrieval.is_empty() && !matches!(trainable, "vision" | "all") {
            self.d.error_hint(
                &retrain_span(),
                "stages.retrain",
                format!(
                    "retraining on retrieval dataset {} trains the model with the contrastive loss, not `trainable = \"{trainable}\"`",
                    retrieval.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", ")
                ),
                "set `trainable = \"all\"` (UPop's retraining) or \"vision\" in [stages.retrain]",
            );
            return;
        }
        let convpass = trainable == "head+convpass";
        let given = p.contains_key("convpass_scale") && p.contains_key("convpass_xavier");
        if !convpass || given {
            return;
        }
        let missing: Vec<&str> = used
            .into_iter()
            .filter(|name| {
                datasets[*name]
                    .1
                    .params
                    .get("prompts")
                    .and_then(Json::as_str)
                    .and_then(schema::known_dataset)
                    .and_then(|k| k.convpass)
                    .is_none()
            })
            .collect();
        if missing.is_empty() {
            return;
        }
        let span = retrain_span();
        let with_values: Vec<&str> = schema::KNOWN_DATASETS
            .iter()
            .filter(|k| k.convpass.is_some())
            .map(|k| k.name)
            .collect();
        self.d.error_hint(
            &span,
            "stages.retrain",
            format!(
                "Convpass retraining has no scale for dataset {}",
                missing.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", ")
            ),
            format!(
                "set `convpass_scale` and `convpass_xavier` in [stages.retrain] (the VTAB-1k values are built in for {})",
                with_values.join(", ")
            ),
        );
    }

    /// Every parquet split the grid reads is there, and each of its files has a readable footer
    /// and the image and label columns (only footers are read, so `plan` stays fast). The
    /// evaluation split is read by every point; the training split by calibration, fine-tuning,
    /// retraining, intrinsic dimension and methods that train.
    pub(super) fn check_parquet_datasets(
        &mut self,
        datasets: &BTreeMap<String, (Span, DatasetDef)>,
        methods: &BTreeMap<String, (Span, MethodDef)>,
        stages: &StageSettings,
        points: &[GridPoint],
    ) {
        let trains: BTreeSet<&str> = points
            .iter()
            .map(|p| p.method.as_str())
            .filter(|m| {
                self.spec_of(methods, m).is_some_and(|s| {
                    s.needs(MethodInput::Calibration) || s.needs(MethodInput::TrainingSplit)
                })
            })
            .collect();
        let trains = |name: &str| trains.contains(name);
        let whole_grid = stages.finetune || stages.retrain || stages.intrinsic_dimension;
        for (name, (span, def)) in datasets {
            let (DatasetKind::HfParquet, Some(dir)) = (def.kind, &def.resolved) else {
                continue;
            };
            let used: Vec<&GridPoint> = points.iter().filter(|p| &p.dataset == name).collect();
            if used.is_empty() {
                continue;
            }
            let option = |key: &str, default: &str| {
                def.params
                    .get(key)
                    .and_then(Json::as_str)
                    .unwrap_or(default)
                    .to_string()
            };
            let mut splits = vec![option("split", "test")];
            if whole_grid || used.iter().any(|p| trains(&p.method)) {
                splits.push(option("train_split", "train"));
            }
            splits.dedup();
            let columns = [
                option("image_column", "image"),
                option("label_column", "label"),
            ];
            for split in splits {
                for problem in parquet_problems(dir, &split, &columns) {
                    self.d.error_hint(
                        span,
                        &format!("datasets.{name}"),
                        format!("dataset `{name}`: {problem}"),
                        "download the dataset again, or fix `split`, `train_split` and the column names in its manifest entry",
                    );
                }
            }
        }
    }
}

/// What is wrong with a parquet split: missing, or files whose footer cannot be read or whose
/// schema lacks a column.
fn parquet_problems(dir: &Path, split: &str, columns: &[String]) -> Vec<String> {
    let files = match parquet_split::split_files(dir, split) {
        Ok(f) => f,
        Err(e) => return vec![format!("{}: {e}", dir.display())],
    };
    let mut out = Vec::new();
    for file in files {
        let schema = std::fs::File::open(&file)
            .map_err(|e| e.to_string())
            .and_then(|f| ParquetReader::new(f).schema().map_err(|e| e.to_string()));
        match schema {
            Err(e) => out.push(format!(
                "{}: not a readable parquet file ({e})",
                file.display()
            )),
            Ok(schema) => {
                for col in columns {
                    if schema.get(col.as_str()).is_none() {
                        let names: Vec<String> =
                            schema.iter_names().map(|n| n.to_string()).collect();
                        out.push(format!(
                            "{}: no column `{col}` (columns: {})",
                            file.display(),
                            names.join(", ")
                        ));
                    }
                }
            }
        }
    }
    out
}
