//! The entry point: read, parse and resolve a manifest, section by section, then the checks
//! that span sections.

use super::{Cx, DENSE};
use crate::manifest::diag::{Diags, ManifestError};
use crate::manifest::schema::{MethodSpec, Methods};
use crate::manifest::tree::{self, Node, Span};
use crate::manifest::types::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Reads, parses and validates a manifest against the registered pruning `methods`; every
/// problem is reported at once.
pub fn load(path: &Path, methods: Methods) -> Result<Experiment, ManifestError> {
    let src = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) => {
            let mut d = Diags::new(path, "");
            d.error_hint(
                &(0..0),
                "",
                format!("cannot read manifest: {e}"),
                "check the path; manifests usually live in experiments/",
            );
            return Err(d.finish().unwrap_err());
        }
    };
    let mut cx = Cx {
        d: Diags::new(path, &src),
        base_dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
        registry: methods,
        max_points: super::MAX_POINTS,
    };
    let root = match tree::parse(&src) {
        Ok(root) => root,
        Err((span, msg)) => {
            cx.d.error(&span, "", format!("invalid TOML: {msg}"));
            return Err(cx.d.finish().unwrap_err());
        }
    };
    let experiment = cx.experiment(&root, path);
    cx.d.finish()?;
    Ok(experiment.expect("a manifest without diagnostics resolves"))
}

impl Cx<'_> {
    pub(super) fn experiment(&mut self, root: &Node, manifest_path: &Path) -> Option<Experiment> {
        let top = self.table(root, "")?;
        self.known_keys(
            top,
            "",
            &[
                "experiment",
                "grid",
                "models",
                "datasets",
                "methods",
                "stages",
                "resources",
                "reference",
            ],
        );

        let (name, description, keep_pruned) = self.experiment_section(top);
        let models = self.named_section(top, "models", Self::model);
        let datasets = self.named_section(top, "datasets", Self::dataset);
        let methods = self.named_section(top, "methods", Self::method);
        let stages = self.stages(top.get("stages"));
        let resources = self.resources(top.get("resources"));
        let grid = match top.get("grid") {
            Some(e) => self.grid(e, &models, &datasets, &methods),
            None => {
                self.d.error_hint(
                    &(0..0),
                    "grid",
                    "missing [grid] section",
                    "add [grid] with model, dataset, method and sparsity lists",
                );
                None
            }
        };
        let references = match &grid {
            Some(points) => self.references(top, points),
            None => Vec::new(),
        };
        let mut models = models;
        if let Some(points) = &grid {
            let shapes = self.resolve_model_inputs(top, &mut models, points);
            self.check_nm_widths(top, &methods, points, &shapes);
            self.check_method_points(top, &methods, &datasets, points, &shapes);
            self.check_calibration_indices(top, &datasets, &methods, points);
            self.check_convpass(top, &stages, &datasets, points);
            self.check_parquet_datasets(&datasets, &methods, &stages, points);
        }
        // A dense-only grid keeps its (model, dataset) pairs and has no pruning points.
        let (grid, dense_pairs) = match grid {
            Some(points) if points.iter().all(|p| p.method == DENSE) => {
                let pairs: BTreeSet<(String, String)> =
                    points.into_iter().map(|p| (p.model, p.dataset)).collect();
                (Some(vec![]), pairs.into_iter().collect())
            }
            other => (other, vec![]),
        };
        let methods = methods.into_iter().map(|(k, (_, m))| (k, m)).collect();
        Some(Experiment {
            name: name?,
            description,
            manifest_path: manifest_path.to_path_buf(),
            keep_pruned,
            models: models.into_iter().map(|(k, (_, m))| (k, m)).collect(),
            datasets: datasets.into_iter().map(|(k, (_, d))| (k, d)).collect(),
            methods,
            points: grid?,
            dense_pairs,
            stages,
            resources,
            references,
            registry: self.registry,
        })
    }

    /// The registered method called `name`.
    pub(super) fn method_spec(&self, name: &str) -> Option<&'static MethodSpec> {
        self.registry.iter().copied().find(|m| m.name == name)
    }

    /// The registered method a grid's method name means: its definition's, or a built-in.
    pub(super) fn spec_of(
        &self,
        methods: &BTreeMap<String, (Span, MethodDef)>,
        name: &str,
    ) -> Option<&'static MethodSpec> {
        match methods.get(name) {
            Some((_, m)) => Some(m.spec),
            None => self.method_spec(name),
        }
    }

    pub(super) fn method_names(&self) -> Vec<&'static str> {
        self.registry.iter().map(|m| m.name).collect()
    }
}
