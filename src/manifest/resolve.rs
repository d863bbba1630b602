//! Pass 2: walk the spanned tree against the schema, collecting every problem, and build the
//! resolved [`Experiment`] (grid expanded, defaults filled in, input paths resolved).

use super::diag::{Diags, ManifestError, did_you_mean};
use super::schema::{
    self, EvaluateParams, FinetuneParams, IntrinsicDimensionParams, MethodInput, MethodSpec,
    Methods, ParamSpec, ParamType, RetrainParams, SparsityAxis, TypedParams,
};
use super::tree::{self, Entry, Node, Span, Table, Value};
use super::types::*;
use crate::util::clip_config::ClipConfig;
use crate::util::hf;
use serde_json::Value as Json;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The internal method name of a dense-only grid's points (reserved: no user method has it).
const DENSE: &str = "dense";

/// The grid axes, in expansion (nesting) order.
pub const AXES: &[&str] = &[
    "model",
    "dataset",
    "method",
    "sparsity",
    "calibration_size",
    "seed",
];

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

struct Cx<'s> {
    d: Diags<'s>,
    base_dir: PathBuf,
    registry: Methods,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl Cx<'_> {
    fn experiment(&mut self, root: &Node, manifest_path: &Path) -> Option<Experiment> {
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
        let mut models = models;
        if let Some(points) = &grid {
            let shapes = self.resolve_model_inputs(top, &mut models, points);
            self.check_nm_widths(top, &methods, points, &shapes);
            self.check_calibration_indices(top, &datasets, &methods, points);
            self.check_convpass(top, &stages, &datasets, points);
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
            registry: self.registry,
        })
    }

    /// The registered method called `name`.
    fn method_spec(&self, name: &str) -> Option<&'static MethodSpec> {
        self.registry.iter().copied().find(|m| m.name == name)
    }

    fn method_names(&self) -> Vec<&'static str> {
        self.registry.iter().map(|m| m.name).collect()
    }

    // ---- generic helpers -------------------------------------------------------------------

    fn table<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n Table> {
        match &node.value {
            Value::Table(t) => Some(t),
            other => {
                self.d.error(
                    &node.span,
                    path,
                    format!("expected a table, found {}", other.type_name()),
                );
                None
            }
        }
    }

    /// Reports every key of `table` not in `allowed`, with a did-you-mean.
    fn known_keys(&mut self, table: &Table, path: &str, allowed: &[&str]) {
        for e in &table.entries {
            if !allowed.contains(&e.key.as_str()) {
                let msg = format!("unknown key `{}`", e.key);
                match did_you_mean(&e.key, allowed.iter().copied()) {
                    Some(s) => self.d.error_hint(
                        &e.key_span,
                        &join(path, &e.key),
                        msg,
                        format!("did you mean `{s}`?"),
                    ),
                    None => self.d.error_hint(
                        &e.key_span,
                        &join(path, &e.key),
                        msg,
                        format!("expected one of: {}", allowed.join(", ")),
                    ),
                }
            }
        }
    }

    fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        match &node.value {
            Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
            Value::String(_) => {
                self.d
                    .error(&node.span, path, "expected a non-empty string");
                None
            }
            other => {
                self.d.error(
                    &node.span,
                    path,
                    format!("expected a string, found {}", other.type_name()),
                );
                None
            }
        }
    }

    fn boolean(&mut self, node: &Node, path: &str) -> Option<bool> {
        match node.value {
            Value::Bool(b) => Some(b),
            ref other => {
                self.d.error(
                    &node.span,
                    path,
                    format!("expected true or false, found {}", other.type_name()),
                );
                None
            }
        }
    }

    fn integer(&mut self, node: &Node, path: &str, min: i64, max: i64) -> Option<i64> {
        match node.value {
            Value::Integer(v) if (min..=max).contains(&v) => Some(v),
            Value::Integer(v) => {
                let range = if max == i64::MAX {
                    format!("at least {min}")
                } else {
                    format!("between {min} and {max}")
                };
                self.d.error(
                    &node.span,
                    path,
                    format!("{v} is out of range: expected an integer {range}"),
                );
                None
            }
            ref other => {
                self.d.error(
                    &node.span,
                    path,
                    format!("expected an integer, found {}", other.type_name()),
                );
                None
            }
        }
    }

    /// A scalar or an array of scalars, as a list of nodes.
    fn list<'n>(&mut self, node: &'n Node, path: &str) -> Vec<&'n Node> {
        match &node.value {
            Value::Array(items) => {
                if items.is_empty() {
                    self.d
                        .error(&node.span, path, "empty list: give at least one value");
                }
                items.iter().collect()
            }
            _ => vec![node],
        }
    }

    /// Validates `table` against `specs` (keys in `extra` are handled by the caller) and
    /// returns the resolved parameters with defaults filled in.
    fn params(
        &mut self,
        table: &Table,
        path: &str,
        specs: &[&[ParamSpec]],
        extra: &[&str],
    ) -> Params {
        let all: Vec<&ParamSpec> = specs.iter().flat_map(|s| s.iter()).collect();
        let mut allowed: Vec<&str> = all.iter().map(|s| s.name).collect();
        allowed.extend_from_slice(extra);
        self.known_keys(table, path, &allowed);
        let mut out = Params::new();
        for spec in all {
            match table.get(spec.name) {
                Some(e) => {
                    if let Some(v) = self.param_value(&e.node, &join(path, spec.name), spec) {
                        out.insert(spec.name.to_string(), v);
                    }
                }
                None => {
                    if let Some(v) = spec.default.to_json() {
                        out.insert(spec.name.to_string(), v);
                    }
                }
            }
        }
        out
    }

    fn param_value(&mut self, node: &Node, path: &str, spec: &ParamSpec) -> Option<Json> {
        match spec.ty {
            ParamType::Float {
                min,
                max,
                min_exclusive,
            } => {
                let v = match node.value {
                    Value::Float(v) => v,
                    Value::Integer(v) => v as f64,
                    ref other => {
                        self.d.error(
                            &node.span,
                            path,
                            format!("expected a number, found {}", other.type_name()),
                        );
                        return None;
                    }
                };
                let low_ok = if min_exclusive { v > min } else { v >= min };
                if !(v.is_finite() && low_ok && v <= max) {
                    let open = if min_exclusive { "(" } else { "[" };
                    self.d.error(
                        &node.span,
                        path,
                        format!("{v} is out of range: expected a number in {open}{min}, {max}]"),
                    );
                    return None;
                }
                Some(Json::from(v))
            }
            ParamType::Int { min, max } => self.integer(node, path, min, max).map(Json::from),
            ParamType::Bool => self.boolean(node, path).map(Json::from),
            ParamType::Str => self.string(node, path).map(Json::from),
            ParamType::Choice(choices) => {
                let s = self.string(node, path)?;
                if choices.contains(&s.as_str()) {
                    Some(Json::from(s))
                } else {
                    let hint = match did_you_mean(&s, choices.iter().copied()) {
                        Some(c) => format!("did you mean \"{c}\"?"),
                        None => format!("expected one of: {}", choices.join(", ")),
                    };
                    self.d
                        .error_hint(&node.span, path, format!("invalid value \"{s}\""), hint);
                    None
                }
            }
            ParamType::StrList => {
                let Value::Array(items) = &node.value else {
                    self.d.error(
                        &node.span,
                        path,
                        format!("expected an array, found {}", node.value.type_name()),
                    );
                    return None;
                };
                if items.is_empty() {
                    self.d
                        .error(&node.span, path, "empty list: give at least one value");
                    return None;
                }
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    out.extend(self.string(item, &p).map(Json::from));
                }
                (out.len() == items.len()).then_some(Json::Array(out))
            }
            ParamType::IndexList => {
                let indices = match &node.value {
                    Value::Array(items) => {
                        let mut out = Vec::with_capacity(items.len());
                        for (i, item) in items.iter().enumerate() {
                            let p = format!("{path}[{i}]");
                            out.push(self.integer(item, &p, 0, i64::MAX)? as u64);
                        }
                        out
                    }
                    Value::String(file) => {
                        let file = self.base_dir.join(file);
                        match read_index_file(&file) {
                            Ok(v) => v,
                            Err(msg) => {
                                self.d.error_hint(
                                    &node.span,
                                    path,
                                    msg,
                                    "give integers separated by whitespace or commas",
                                );
                                return None;
                            }
                        }
                    }
                    other => {
                        self.d.error(
                            &node.span,
                            path,
                            format!(
                                "expected a list of indices or a file name, found {}",
                                other.type_name()
                            ),
                        );
                        return None;
                    }
                };
                if indices.is_empty() {
                    self.d.error(&node.span, path, "no indices given");
                    return None;
                }
                let mut seen = std::collections::HashSet::with_capacity(indices.len());
                if let Some(dup) = indices.iter().find(|&&i| !seen.insert(i)) {
                    self.d.error_hint(
                        &node.span,
                        path,
                        format!("index {dup} appears twice"),
                        "calibration images are drawn without replacement",
                    );
                    return None;
                }
                Some(Json::from(indices))
            }
        }
    }

    // ---- sections ------------------------------------------------------------------------

    fn experiment_section(&mut self, top: &Table) -> (Option<String>, String, bool) {
        let Some(entry) = top.get("experiment") else {
            self.d.error_hint(
                &(0..0),
                "experiment",
                "missing [experiment] section",
                "add [experiment] with name = \"...\"",
            );
            return (None, String::new(), false);
        };
        let Some(t) = self.table(&entry.node, "experiment") else {
            return (None, String::new(), false);
        };
        self.known_keys(t, "experiment", &["name", "description", "keep_pruned"]);
        let name = match t.get("name") {
            Some(e) => self.string(&e.node, "experiment.name").filter(|n| {
                let ok = n
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                    && !n.starts_with('.');
                if !ok {
                    self.d.error_hint(
                        &e.node.span,
                        "experiment.name",
                        format!("invalid name \"{n}\""),
                        "use letters, digits, '-', '_' and '.' (it names the results directory)",
                    );
                }
                ok
            }),
            None => {
                self.d
                    .error(&entry.key_span, "experiment.name", "missing key `name`");
                None
            }
        };
        let description = t
            .get("description")
            .and_then(|e| self.string(&e.node, "experiment.description"))
            .unwrap_or_default();
        let keep = t
            .get("keep_pruned")
            .and_then(|e| self.boolean(&e.node, "experiment.keep_pruned"))
            .unwrap_or(false);
        (name, description, keep)
    }

    /// `[section.NAME]` tables → map of NAME → (key span, definition).
    fn named_section<T>(
        &mut self,
        top: &Table,
        section: &str,
        mut each: impl FnMut(&mut Self, &Entry, &Table, &str) -> Option<T>,
    ) -> BTreeMap<String, (Span, T)> {
        let mut out = BTreeMap::new();
        let Some(entry) = top.get(section) else {
            return out;
        };
        let Some(t) = self.table(&entry.node, section) else {
            return out;
        };
        for e in &t.entries {
            let path = join(section, &e.key);
            if let Some(def_table) = self.table(&e.node, &path)
                && let Some(def) = each(self, e, def_table, &path)
            {
                out.insert(e.key.clone(), (e.key_span.clone(), def));
            }
        }
        out
    }

    fn source(&mut self, table: &Table, path: &str, what: &str) -> Option<(InputSource, Span)> {
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

    fn model(&mut self, entry: &Entry, t: &Table, path: &str) -> Option<ModelDef> {
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

    fn dataset(&mut self, entry: &Entry, t: &Table, path: &str) -> Option<DatasetDef> {
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
    fn dataset_defaults(
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

    fn method(&mut self, entry: &Entry, t: &Table, path: &str) -> Option<MethodDef> {
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

    fn stages(&mut self, entry: Option<&Entry>) -> StageSettings {
        let empty = Table::default();
        let t = entry
            .and_then(|e| self.table(&e.node, "stages"))
            .unwrap_or(&empty);
        self.known_keys(
            t,
            "stages",
            &["evaluate", "retrain", "intrinsic_dimension", "finetune"],
        );
        let toggle = |cx: &mut Self, key: &str, specs: &[ParamSpec]| -> (bool, Params) {
            let path = join("stages", key);
            match t.get(key) {
                None => (false, cx.params(&empty, &path, &[specs], &[])),
                Some(e) => match &e.node.value {
                    Value::Bool(b) => (*b, cx.params(&empty, &path, &[specs], &[])),
                    Value::Table(sub) => {
                        let enabled = sub
                            .get("enabled")
                            .and_then(|x| cx.boolean(&x.node, &join(&path, "enabled")))
                            .unwrap_or(true);
                        (enabled, cx.params(sub, &path, &[specs], &["enabled"]))
                    }
                    other => {
                        cx.d.error(
                            &e.node.span,
                            &path,
                            format!(
                                "expected true, false or a table, found {}",
                                other.type_name()
                            ),
                        );
                        (false, Params::new())
                    }
                },
            }
        };
        let (_, evaluate_params) = toggle(self, "evaluate", EvaluateParams::SPECS);
        let (retrain, retrain_params) = toggle(self, "retrain", RetrainParams::SPECS);
        let (intrinsic_dimension, intrinsic_dimension_params) =
            toggle(self, "intrinsic_dimension", IntrinsicDimensionParams::SPECS);
        let (finetune, finetune_params) = toggle(self, "finetune", FinetuneParams::SPECS);
        StageSettings {
            retrain,
            intrinsic_dimension,
            finetune,
            evaluate_params,
            retrain_params,
            intrinsic_dimension_params,
            finetune_params,
        }
    }

    fn resources(&mut self, entry: Option<&Entry>) -> Resources {
        let mut r = Resources::default();
        let Some(entry) = entry else { return r };
        let Some(t) = self.table(&entry.node, "resources") else {
            return r;
        };
        self.known_keys(t, "resources", &["devices", "jobs_per_device", "threads"]);
        if let Some(e) = t.get("devices") {
            match &e.node.value {
                Value::String(s) if s == "auto" => {}
                Value::Array(items) if !items.is_empty() => {
                    let mut devices = Vec::new();
                    for (i, item) in items.iter().enumerate() {
                        let p = format!("resources.devices[{i}]");
                        if let Some(s) = self.string(item, &p) {
                            match Device::parse(&s) {
                                Some(d) if devices.contains(&d) => self.d.error(
                                    &item.span,
                                    &p,
                                    format!("device \"{s}\" is listed twice"),
                                ),
                                Some(d) => devices.push(d),
                                None => self.d.error_hint(
                                    &item.span,
                                    &p,
                                    format!("invalid device \"{s}\""),
                                    "write \"cpu\" or \"cuda:N\"",
                                ),
                            }
                        }
                    }
                    r.devices = DeviceRequest::List(devices);
                }
                _ => self.d.error_hint(
                    &e.node.span,
                    "resources.devices",
                    "expected \"auto\" or a non-empty list of devices",
                    "e.g. devices = [\"cuda:0\", \"cuda:1\"]",
                ),
            }
        }
        if let Some(e) = t.get("jobs_per_device") {
            r.jobs_per_device = self
                .integer(&e.node, "resources.jobs_per_device", 1, 256)
                .unwrap_or(1) as u32;
        }
        if let Some(e) = t.get("threads") {
            r.threads = self
                .integer(&e.node, "resources.threads", 0, 4096)
                .unwrap_or(0) as u32;
        }
        r
    }

    // ---- grid ----------------------------------------------------------------------------

    fn grid(
        &mut self,
        entry: &Entry,
        models: &BTreeMap<String, (Span, ModelDef)>,
        datasets: &BTreeMap<String, (Span, DatasetDef)>,
        methods: &BTreeMap<String, (Span, MethodDef)>,
    ) -> Option<Vec<GridPoint>> {
        let t = self.table(&entry.node, "grid")?;
        let mut allowed: Vec<&str> = AXES.to_vec();
        allowed.extend(["zip", "exclude", "include"]);
        self.known_keys(t, "grid", &allowed);
        let names = Names {
            models,
            datasets,
            methods,
        };

        let dense_only = t.get("method").is_none() && t.get("sparsity").is_none();
        // Each axis: its values with their spans.
        let mut axes: BTreeMap<&str, Vec<(AxisValue, Span)>> = BTreeMap::new();
        let mut ok = true;
        for &axis in AXES {
            let path = join("grid", axis);
            let values = match t.get(axis) {
                Some(e) => {
                    let mut values: Vec<(AxisValue, Span)> = Vec::new();
                    for (i, node) in self.list(&e.node, &path).into_iter().enumerate() {
                        let p = if matches!(e.node.value, Value::Array(_)) {
                            format!("{path}[{i}]")
                        } else {
                            path.clone()
                        };
                        match self.axis_value(axis, node, &p, &names) {
                            Some(v) if values.iter().any(|(w, _)| *w == v) => {
                                self.d.error(
                                    &node.span,
                                    &p,
                                    format!("duplicate value {v} on axis `{axis}`"),
                                );
                                ok = false;
                            }
                            Some(v) => values.push((v, node.span.clone())),
                            None => ok = false,
                        }
                    }
                    ok &= !values.is_empty();
                    values
                }
                // A grid without `method` and `sparsity` evaluates (and fine-tunes) the dense
                // models only.
                None if dense_only && axis == "method" => {
                    vec![(AxisValue::Name(DENSE.into()), entry.key_span.clone())]
                }
                None if dense_only && axis == "sparsity" => {
                    vec![(
                        AxisValue::Sparsity(Sparsity::Fraction(0.0)),
                        entry.key_span.clone(),
                    )]
                }
                None => match axis {
                    "calibration_size" => vec![(AxisValue::Int(250), entry.key_span.clone())],
                    "seed" => vec![(AxisValue::Int(0), entry.key_span.clone())],
                    _ => {
                        self.d.error_hint(
                            &entry.key_span,
                            &path,
                            format!("missing grid axis `{axis}`"),
                            format!("add `{axis} = [...]` under [grid]"),
                        );
                        ok = false;
                        vec![]
                    }
                },
            };
            axes.insert(axis, values);
        }

        let groups = self.zip_groups(t, &axes);
        let excludes = self.selectors(t, "exclude", &axes, &names, false);
        let includes = self.selectors(t, "include", &axes, &names, true);
        if !ok || groups.is_none() {
            return None;
        }
        let groups = groups?;

        // Cartesian product over factors (a zip group is one factor).
        let mut points: Vec<BTreeMap<&str, AxisValue>> = vec![BTreeMap::new()];
        for group in &groups {
            // The factor's rows: one assignment of every axis in the group per position.
            let rows: Vec<Vec<(&str, &AxisValue)>> = (0..axes[group[0]].len())
                .map(|i| group.iter().map(|&axis| (axis, &axes[axis][i].0)).collect())
                .collect();
            let mut next = Vec::with_capacity(points.len() * rows.len());
            for p in &points {
                for row in &rows {
                    let mut q = p.clone();
                    for &(axis, value) in row {
                        q.insert(axis, value.clone());
                    }
                    next.push(q);
                }
            }
            points = next;
        }
        let mut out: Vec<GridPoint> = points
            .into_iter()
            .filter(|p| {
                !excludes
                    .iter()
                    .any(|(sel, _)| sel.iter().all(|(k, v)| p.get(k.as_str()) == Some(v)))
            })
            .map(|p| to_point(&p, Params::new()))
            .collect();
        for (sel, overrides) in includes {
            let mut full: BTreeMap<&str, AxisValue> = BTreeMap::new();
            for &axis in AXES {
                match sel.get(axis) {
                    Some(v) => {
                        full.insert(axis, v.clone());
                    }
                    None => {
                        full.insert(axis, axes[axis][0].0.clone());
                    }
                }
            }
            let point = to_point(&full, overrides);
            if !out.contains(&point) {
                out.push(point);
            }
        }
        self.check_sparsity_axis(&out, &axes, &names, &entry.key_span);
        if out.is_empty() {
            self.d.error_hint(
                &entry.key_span,
                "grid",
                "the grid is empty after exclusions",
                "remove a [[grid.exclude]] entry or add values",
            );
        }
        Some(out)
    }

    /// How each method reads the sparsity axis: 0 prunes nothing, so only a data-driven method
    /// (SLS), which ignores the axis, may take it; an n:m pattern is a weight pattern.
    fn check_sparsity_axis(
        &mut self,
        points: &[GridPoint],
        axes: &BTreeMap<&str, Vec<(AxisValue, Span)>>,
        names: &Names,
        grid_span: &Span,
    ) {
        let zero = AxisValue::Sparsity(Sparsity::Fraction(0.0));
        let mut reported = BTreeSet::new();
        for p in points {
            if p.method == DENSE {
                continue;
            }
            let spec = match names.methods.get(&p.method) {
                Some((_, d)) => Some(d.spec),
                None => self.method_spec(&p.method),
            };
            let axis = spec.map_or(SparsityAxis::Weights, |m| m.sparsity);
            if axis == SparsityAxis::MacsRemoved
                && let Sparsity::NM { .. } = p.sparsity
                && reported.insert(p.method.clone())
            {
                let span = axes["sparsity"]
                    .iter()
                    .find(|(v, _)| *v == AxisValue::Sparsity(p.sparsity))
                    .map_or_else(|| grid_span.clone(), |(_, s)| s.clone());
                self.d.error_hint(
                    &span,
                    "grid.sparsity",
                    format!(
                        "method `{}` removes a fraction of the multiply-accumulates; an n:m pattern means nothing to it",
                        p.method
                    ),
                    "give fractions, e.g. 0.5",
                );
                continue;
            }
            if p.sparsity != Sparsity::Fraction(0.0) {
                continue;
            }
            if axis == SparsityAxis::DataDriven || !reported.insert(p.method.clone()) {
                continue;
            }
            let span = axes["sparsity"]
                .iter()
                .find(|(v, _)| *v == zero)
                .map_or_else(|| grid_span.clone(), |(_, s)| s.clone());
            self.d.error_hint(
                &span,
                "grid.sparsity",
                format!("sparsity 0 with method `{}` prunes nothing", p.method),
                "every grid evaluates the dense model already: remove 0, or leave it to `sls` with [[grid.exclude]]",
            );
        }
    }

    fn axis_value(
        &mut self,
        axis: &str,
        node: &Node,
        path: &str,
        names: &Names,
    ) -> Option<AxisValue> {
        match axis {
            "model" | "dataset" | "method" => {
                let s = self.string(node, path)?;
                let (defined, section): (Vec<&str>, &str) = match axis {
                    "model" => (names.models.keys().map(String::as_str).collect(), "models"),
                    "dataset" => (
                        names.datasets.keys().map(String::as_str).collect(),
                        "datasets",
                    ),
                    _ => {
                        let mut v: Vec<&str> = names.methods.keys().map(String::as_str).collect();
                        v.extend(self.method_names());
                        (v, "methods")
                    }
                };
                if defined.contains(&s.as_str()) {
                    return Some(AxisValue::Name(s));
                }
                let hint = match did_you_mean(&s, defined.iter().copied()) {
                    Some(c) => format!("did you mean \"{c}\"?"),
                    None => format!("define it as [{section}.{s}]"),
                };
                self.d
                    .error_hint(&node.span, path, format!("undefined {axis} \"{s}\""), hint);
                None
            }
            "sparsity" => self.sparsity(node, path).map(AxisValue::Sparsity),
            "calibration_size" => self
                .integer(node, path, 1, u32::MAX as i64)
                .map(AxisValue::Int),
            _ => self.integer(node, path, 0, i64::MAX).map(AxisValue::Int),
        }
    }

    fn sparsity(&mut self, node: &Node, path: &str) -> Option<Sparsity> {
        match &node.value {
            Value::Float(v) if (0.0..1.0).contains(v) => Some(Sparsity::Fraction(*v)),
            Value::Integer(0) => Some(Sparsity::Fraction(0.0)),
            Value::Float(v) => {
                self.d.error_hint(
                    &node.span,
                    path,
                    format!("sparsity {v} is out of range"),
                    "a fraction of weights removed, in [0, 1)",
                );
                None
            }
            Value::Integer(v) => {
                self.d.error_hint(
                    &node.span,
                    path,
                    format!("sparsity {v} is out of range"),
                    "a fraction of weights removed, in [0, 1), e.g. 0.5",
                );
                None
            }
            Value::String(s) => {
                let parsed = s.split_once(':').and_then(|(n, m)| {
                    Some((n.trim().parse::<u32>().ok()?, m.trim().parse::<u32>().ok()?))
                });
                match parsed {
                    Some((n, m)) if n >= 1 && n < m && m <= 1024 => Some(Sparsity::NM { n, m }),
                    _ => {
                        self.d.error_hint(
                            &node.span,
                            path,
                            format!("malformed n:m sparsity \"{s}\""),
                            "write \"n:m\" with 0 < n < m ≤ 1024, e.g. \"2:4\"",
                        );
                        None
                    }
                }
            }
            other => {
                self.d.error(
                    &node.span,
                    path,
                    format!(
                        "expected a fraction or an \"n:m\" string, found {}",
                        other.type_name()
                    ),
                );
                None
            }
        }
    }

    /// `zip = [["a", "b"], ...]` → factors in axis order, zip groups as one factor each.
    fn zip_groups(
        &mut self,
        t: &Table,
        axes: &BTreeMap<&str, Vec<(AxisValue, Span)>>,
    ) -> Option<Vec<Vec<&'static str>>> {
        let mut zipped: Vec<Vec<&'static str>> = Vec::new();
        let mut ok = true;
        if let Some(e) = t.get("zip") {
            let Value::Array(groups) = &e.node.value else {
                self.d.error_hint(
                    &e.node.span,
                    "grid.zip",
                    "expected a list of axis-name lists",
                    "e.g. zip = [[\"sparsity\", \"calibration_size\"]]",
                );
                return None;
            };
            for (gi, g) in groups.iter().enumerate() {
                let path = format!("grid.zip[{gi}]");
                let Value::Array(members) = &g.value else {
                    self.d
                        .error(&g.span, &path, "expected a list of axis names");
                    ok = false;
                    continue;
                };
                let mut group = Vec::new();
                for (mi, m) in members.iter().enumerate() {
                    let p = format!("{path}[{mi}]");
                    let Some(name) = self.string(m, &p) else {
                        ok = false;
                        continue;
                    };
                    match AXES.iter().find(|a| **a == name) {
                        Some(a) if zipped.iter().flatten().chain(group.iter()).any(|x| x == a) => {
                            self.d.error(
                                &m.span,
                                &p,
                                format!("axis `{a}` appears in more than one zip group"),
                            );
                            ok = false;
                        }
                        Some(a) => group.push(*a),
                        None => {
                            let hint = did_you_mean(&name, AXES.iter().copied())
                                .map(|c| format!("did you mean \"{c}\"?"))
                                .unwrap_or_else(|| format!("axes: {}", AXES.join(", ")));
                            self.d.error_hint(
                                &m.span,
                                &p,
                                format!("unknown axis \"{name}\""),
                                hint,
                            );
                            ok = false;
                        }
                    }
                }
                if group.len() < 2 {
                    self.d
                        .error(&g.span, &path, "a zip group needs at least two axes");
                    ok = false;
                    continue;
                }
                let lens: Vec<usize> = group
                    .iter()
                    .map(|a| axes.get(a).map_or(0, Vec::len))
                    .collect();
                if lens.iter().any(|l| *l != lens[0]) {
                    let desc: Vec<String> = group
                        .iter()
                        .zip(&lens)
                        .map(|(a, l)| format!("{a} has {l}"))
                        .collect();
                    self.d.error(
                        &g.span,
                        &path,
                        format!("zipped axes must have equal lengths ({})", desc.join(", ")),
                    );
                    ok = false;
                }
                zipped.push(group);
            }
        }
        if !ok {
            return None;
        }
        let mut factors: Vec<Vec<&'static str>> = Vec::new();
        for &axis in AXES {
            if let Some(g) = zipped.iter().find(|g| g.contains(&axis)) {
                if !factors.contains(g) {
                    factors.push(g.clone());
                }
            } else {
                factors.push(vec![axis]);
            }
        }
        Some(factors)
    }

    /// `[[grid.exclude]]` (partial assignments) or `[[grid.include]]` (extra points, with
    /// optional `params` overrides of the method's parameters).
    fn selectors(
        &mut self,
        t: &Table,
        key: &str,
        axes: &BTreeMap<&str, Vec<(AxisValue, Span)>>,
        names: &Names,
        include: bool,
    ) -> Vec<(BTreeMap<String, AxisValue>, Params)> {
        let mut out = Vec::new();
        let Some(e) = t.get(key) else { return out };
        let path = join("grid", key);
        let Value::Array(items) = &e.node.value else {
            self.d.error_hint(
                &e.node.span,
                &path,
                format!(
                    "expected an array of tables, found {}",
                    e.node.value.type_name()
                ),
                format!("write each entry as [[grid.{key}]]"),
            );
            return out;
        };
        for (i, item) in items.iter().enumerate() {
            let p = format!("{path}[{i}]");
            let Some(sel_table) = self.table(item, &p) else {
                continue;
            };
            let mut allowed: Vec<&str> = AXES.to_vec();
            if include {
                allowed.push("params");
            }
            self.known_keys(sel_table, &p, &allowed);
            let mut sel = BTreeMap::new();
            let mut ok = true;
            for &axis in AXES {
                let Some(v) = sel_table.get(axis) else {
                    if include && axes.get(axis).is_some_and(|vals| vals.len() > 1) {
                        self.d.error_hint(&item.span, &p, format!("missing `{axis}`"), format!("an included point names every axis with more than one value; `{axis}` has several"));
                        ok = false;
                    }
                    continue;
                };
                let vp = join(&p, axis);
                match self.axis_value(axis, &v.node, &vp, names) {
                    Some(value) => {
                        if !include
                            && !axes
                                .get(axis)
                                .is_some_and(|vals| vals.iter().any(|(x, _)| *x == value))
                        {
                            self.d.error_hint(&v.node.span, &vp, format!("{value} is not a value of axis `{axis}`, so this exclusion matches nothing"), "fix the value or remove the exclusion");
                            ok = false;
                        }
                        sel.insert(axis.to_string(), value);
                    }
                    None => ok = false,
                }
            }
            if !include && sel.is_empty() && ok {
                self.d.error(
                    &item.span,
                    &p,
                    "an exclusion needs at least one axis value (it would exclude everything)",
                );
                ok = false;
            }
            let mut overrides = Params::new();
            if let Some(pe) = sel_table.get("params") {
                let pp = join(&p, "params");
                let method = sel
                    .get("method")
                    .or_else(|| axes.get("method").and_then(|v| v.first()).map(|(v, _)| v));
                let kind = match method {
                    Some(AxisValue::Name(m)) => names
                        .methods
                        .get(m)
                        .map(|(_, d)| d.spec)
                        .or_else(|| self.method_spec(m)),
                    _ => None,
                };
                if let (Some(kind), Some(pt)) = (kind, self.table(&pe.node, &pp)) {
                    // Only the keys given override; defaults come from the method definition.
                    let given = self.params(pt, &pp, &[kind.params], &[]);
                    for entry in &pt.entries {
                        if let Some(v) = given.get(&entry.key) {
                            overrides.insert(entry.key.clone(), v.clone());
                        }
                    }
                }
            }
            if ok {
                out.push((sel, overrides));
            }
        }
        out
    }

    /// Resolves each model's weight directories for every dataset it is used with.
    /// Locates each model's directories per dataset and reads their configs; returns the
    /// pruned Linears' input widths per (model, dataset).
    fn resolve_model_inputs(
        &mut self,
        top: &Table,
        models: &mut BTreeMap<String, (Span, ModelDef)>,
        points: &[GridPoint],
    ) -> BTreeMap<(String, String), TowerWidths> {
        let mut shapes = BTreeMap::new();
        let mut pairs: BTreeSet<(&str, &str)> = BTreeSet::new();
        for p in points {
            pairs.insert((&p.model, &p.dataset));
        }
        let model_tables = top.get("models").and_then(|e| {
            if let Value::Table(t) = &e.node.value {
                Some(t)
            } else {
                None
            }
        });
        let mut reported = BTreeSet::new();
        for (model, dataset) in pairs {
            let Some((_, def)) = models.get_mut(model) else {
                continue;
            };
            if def.test {
                def.resolved.insert(dataset.to_string(), vec![]);
                continue;
            }
            let mut widths = TowerWidths::default();
            let mt = model_tables.and_then(|t| t.get(model)).and_then(|e| {
                if let Value::Table(t) = &e.node.value {
                    Some(t)
                } else {
                    None
                }
            });
            let span_of = |key: &str| {
                mt.and_then(|t| t.get(key))
                    .map(|e| e.node.span.clone())
                    .unwrap_or(0..0)
            };
            let mut dirs = Vec::new();
            let base_key = if matches!(def.base, InputSource::Hub(_)) {
                "hf"
            } else {
                "path"
            };
            let sources = [
                (Some(def.base.clone()), base_key),
                (def.vision.clone(), "vision"),
            ];
            for (source, key) in sources {
                let Some(source) = source else { continue };
                let source = substitute(&source, dataset);
                match self
                    .locate(&source, hf::RepoType::Model)
                    .and_then(|dir| check_model_dir(&dir).map(|_| dir))
                {
                    Ok(dir) => {
                        if let Err(msg) = read_shapes(&dir, key == "vision", &mut widths)
                            && reported.insert(msg.clone())
                        {
                            self.d.error_hint(
                                &span_of(key),
                                &format!("models.{model}.{key}"),
                                format!("model `{model}`: {msg}"),
                                "the model's config.json must describe a CLIP that transformers can load",
                            );
                        }
                        dirs.push(dir)
                    }
                    Err(msg) => {
                        if reported.insert(msg.clone()) {
                            let what = if key == "vision" {
                                format!("vision checkpoint for dataset `{dataset}`")
                            } else {
                                "weights".to_string()
                            };
                            self.d.error_hint(
                                &span_of(key),
                                &format!("models.{model}.{key}"),
                                format!("model `{model}`: {what} not found: {msg}"),
                                "put the files in the local Hugging Face cache (huggingface-cli download on a machine with network access) or point `path` at a local directory",
                            );
                        }
                    }
                }
            }
            def.resolved.insert(dataset.to_string(), dirs);
            shapes.insert((model.to_string(), dataset.to_string()), widths);
        }
        shapes
    }

    /// An n:m pattern must divide the input width of every Linear it prunes: `hidden_size`
    /// (q, k, v, out_proj, fc1) and `intermediate_size` (fc2) of each pruned tower.
    fn check_nm_widths(
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
            let pruned = [("vision", widths.vision), ("text", widths.text)]
                .into_iter()
                .filter(|(t, _)| towers == "both" || towers == *t);
            for (tower, (hidden, intermediate)) in pruned {
                let bad = [("hidden_size", hidden), ("intermediate_size", intermediate)]
                    .into_iter()
                    .find(|(_, w)| *w % m as i64 != 0);
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
                        "{n}:{m} sparsity cannot prune model `{}`: its {tower} tower's `{field}` {width} is not divisible by {m}",
                        p.model
                    ),
                    "choose an m that divides the layer widths, or prune only the other tower (`towers`)",
                );
            }
        }
    }

    /// A dataset's explicit calibration indices must cover the largest calibration size a
    /// calibrated method asks of it.
    fn check_calibration_indices(
        &mut self,
        top: &Table,
        datasets: &BTreeMap<String, (Span, DatasetDef)>,
        methods: &BTreeMap<String, (Span, MethodDef)>,
        points: &[GridPoint],
    ) {
        let registry = self.registry;
        let calibrated = |name: &str| {
            let spec = match methods.get(name) {
                Some((_, m)) => Some(m.spec),
                None => registry.iter().copied().find(|m| m.name == name),
            };
            spec.is_some_and(|m| m.needs(MethodInput::Calibration))
        };
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
    fn check_convpass(
        &mut self,
        top: &Table,
        stages: &StageSettings,
        datasets: &BTreeMap<String, (Span, DatasetDef)>,
        points: &[GridPoint],
    ) {
        let p = &stages.retrain_params;
        let convpass = p.get("trainable").and_then(Json::as_str) == Some("head+convpass");
        let given = p.contains_key("convpass_scale") && p.contains_key("convpass_xavier");
        if !stages.retrain || !convpass || given {
            return;
        }
        let used: BTreeSet<&str> = points
            .iter()
            .filter(|pt| pt.method != DENSE)
            .map(|pt| pt.dataset.as_str())
            .collect();
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
        let span = top
            .get("stages")
            .and_then(|e| match &e.node.value {
                Value::Table(t) => t.get("retrain"),
                _ => None,
            })
            .map(|e| e.key_span.clone())
            .unwrap_or(0..0);
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

    fn locate(&self, source: &InputSource, repo_type: hf::RepoType) -> Result<PathBuf, String> {
        match source {
            InputSource::Hub(repo) => hf::resolve(repo, repo_type),
            InputSource::Path(p) => {
                let path = self.base_dir.join(p);
                if path.exists() {
                    Ok(path)
                } else {
                    Err(format!("{} does not exist", path.display()))
                }
            }
        }
    }
}

struct Names<'a> {
    models: &'a BTreeMap<String, (Span, ModelDef)>,
    datasets: &'a BTreeMap<String, (Span, DatasetDef)>,
    methods: &'a BTreeMap<String, (Span, MethodDef)>,
}

#[derive(Debug, Clone, PartialEq)]
enum AxisValue {
    Name(String),
    Sparsity(Sparsity),
    Int(i64),
}

impl std::fmt::Display for AxisValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AxisValue::Name(s) => write!(f, "\"{s}\""),
            AxisValue::Sparsity(s) => write!(f, "{s}"),
            AxisValue::Int(i) => write!(f, "{i}"),
        }
    }
}

fn to_point(p: &BTreeMap<&str, AxisValue>, overrides: Params) -> GridPoint {
    let name = |k: &str| match &p[k] {
        AxisValue::Name(s) => s.clone(),
        other => other.to_string(),
    };
    let int = |k: &str| match p[k] {
        AxisValue::Int(i) => i,
        _ => 0,
    };
    let sparsity = match p["sparsity"] {
        AxisValue::Sparsity(s) => s,
        _ => Sparsity::Fraction(0.0),
    };
    GridPoint {
        model: name("model"),
        dataset: name("dataset"),
        method: name("method"),
        sparsity,
        calibration_size: int("calibration_size") as u32,
        seed: int("seed") as u64,
        overrides,
    }
}

/// The integers of an index file: separated by whitespace or commas, optionally inside `[ ]`.
fn read_index_file(file: &Path) -> Result<Vec<u64>, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read index file {}: {e}", file.display()))?;
    let body = text.trim();
    let body = body
        .strip_prefix('[')
        .and_then(|b| b.strip_suffix(']'))
        .unwrap_or(body);
    body.split(|c: char| c.is_whitespace() || c == ',')
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<u64>()
                .map_err(|_| format!("{}: `{t}` is not a non-negative integer", file.display()))
        })
        .collect()
}

fn substitute(source: &InputSource, dataset: &str) -> InputSource {
    match source {
        InputSource::Path(p) => InputSource::Path(p.replace("{dataset}", dataset)),
        InputSource::Hub(r) => InputSource::Hub(r.replace("{dataset}", dataset)),
    }
}

/// (hidden_size, intermediate_size) of each tower: the input widths of its pruned Linears.
#[derive(Debug, Clone, Copy, Default)]
struct TowerWidths {
    vision: (i64, i64),
    text: (i64, i64),
}

/// Reads a model directory's `config.json` (a vision-only overlay replaces the vision widths).
fn read_shapes(dir: &Path, overlay: bool, widths: &mut TowerWidths) -> Result<(), String> {
    let file = dir.join("config.json");
    if overlay {
        let v = ClipConfig::read_vision(&file).map_err(|e| e.to_string())?;
        widths.vision = (v.hidden_size, v.intermediate_size);
    } else {
        let c = ClipConfig::read(&file).map_err(|e| e.to_string())?;
        widths.vision = (c.vision.hidden_size, c.vision.intermediate_size);
        widths.text = (c.text.hidden_size, c.text.intermediate_size);
    }
    Ok(())
}

/// The span of the first value of grid axis `axis` that `matches`, else of the `[grid]` table.
fn grid_value_span(top: &Table, axis: &str, matches: impl Fn(&Value) -> bool) -> Span {
    let Some(grid) = top.get("grid") else {
        return 0..0;
    };
    let Value::Table(t) = &grid.node.value else {
        return grid.key_span.clone();
    };
    let Some(e) = t.get(axis) else {
        return grid.key_span.clone();
    };
    let found = match &e.node.value {
        Value::Array(items) => items
            .iter()
            .find(|n| matches(&n.value))
            .map(|n| n.span.clone()),
        v if matches(v) => Some(e.node.span.clone()),
        _ => None,
    };
    found.unwrap_or_else(|| grid.key_span.clone())
}

/// A Hugging Face model directory: `config.json` plus safetensors weights (single or sharded).
fn check_model_dir(dir: &Path) -> Result<(), String> {
    if !dir.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    if !dir.join("config.json").is_file() {
        return Err(format!("{} has no config.json", dir.display()));
    }
    let has_weights = dir.join("model.safetensors").is_file()
        || dir.join("model.safetensors.index.json").is_file();
    if !has_weights {
        return Err(format!(
            "{} has no model.safetensors (nor a sharded index); only safetensors are loaded",
            dir.display()
        ));
    }
    Ok(())
}
