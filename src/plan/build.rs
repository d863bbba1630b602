//! Grid → DAG. Nodes are created bottom-up and deduplicated by key, so identical upstream work
//! is shared without special cases: one calibration per (model, dataset, size, seed) for every
//! method that needs one, one dense evaluation per (model, dataset), and a magnitude prune
//! (which reads no calibration data) shared by every calibration size and seed.

use super::fingerprint::FingerprintCache;
use super::key::{canonical, node_key, object};
use super::kind::StageKind;
use crate::manifest::schema::{self, DefaultValue, MethodInput, ParamType, SparsityAxis};
use crate::manifest::{Experiment, GridPoint, MethodDef, Params};
use serde_json::{Value as Json, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub type NodeId = usize;

/// An external input of a node: a file or directory and its content fingerprint.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    /// `model`, `model.vision` or `dataset`.
    pub role: String,
    pub path: PathBuf,
    pub fingerprint: String,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub kind: StageKind,
    pub key: String,
    /// Human-readable identity, e.g. `prune clip/mnist wanda@0.5 n=250 seed=0`.
    pub label: String,
    /// Stable logical identity (names, not content): used to explain *why* a key changed.
    pub slot: String,
    /// Resolved parameters as canonical JSON text (what the key hashes; compact in memory).
    pub params: String,
    pub upstream: Vec<NodeId>,
    pub inputs: Vec<Input>,
}

/// The nodes that make up one grid point's result.
#[derive(Debug, Clone, Default)]
pub struct PointNodes {
    pub finetune: Option<NodeId>,
    pub calibrate: Option<NodeId>,
    pub prune: Option<NodeId>,
    pub retrain: Option<NodeId>,
    pub evaluate: Option<NodeId>,
    pub intrinsic_dimension: Option<NodeId>,
    /// The per-Linear measurement a method reads (dense models only).
    pub linear_intrinsic_dimension: Option<NodeId>,
}

/// A dense baseline: the unpruned model's evaluation on one dataset.
#[derive(Debug, Clone)]
pub struct DenseNodes {
    pub model: String,
    pub dataset: String,
    pub nodes: PointNodes,
}

#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub nodes: Vec<Node>,
    /// Parallel to `Experiment::points`.
    pub points: Vec<PointNodes>,
    pub dense: Vec<DenseNodes>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}: {source}")]
pub struct PlanError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl Node {
    /// The parameters as a JSON value.
    pub fn params_json(&self) -> Json {
        serde_json::from_str(&self.params).expect("canonical JSON parses")
    }
}

impl Plan {
    /// For each node, the nodes that read its output.
    pub fn dependents(&self) -> Vec<Vec<NodeId>> {
        let mut out = vec![Vec::new(); self.nodes.len()];
        for (id, node) in self.nodes.iter().enumerate() {
            for &up in &node.upstream {
                out[up].push(id);
            }
        }
        out
    }

    pub fn count(&self, kind: StageKind) -> usize {
        self.nodes.iter().filter(|n| n.kind == kind).count()
    }
}

/// Where a stage gets its model: the manifest's files, or a fine-tuning node's output.
#[derive(Clone)]
struct ModelRef {
    inputs: Vec<Input>,
    finetune: Option<NodeId>,
}

struct Builder<'e> {
    exp: &'e Experiment,
    plan: Plan,
    by_key: HashMap<String, NodeId>,
    fingerprints: HashMap<PathBuf, String>,
    models: HashMap<(String, String), (ModelRef, DenseNodes)>,
    dataset_specs: HashMap<String, String>,
    stage_params: StageParams,
}

/// Canonical JSON of each configurable stage's parameters, computed once.
struct StageParams {
    evaluate: String,
    intrinsic_dimension: String,
    finetune: String,
}

/// Expands the experiment's grid into the stage DAG.
pub fn build(exp: &Experiment, fp: &mut FingerprintCache) -> Result<Plan, PlanError> {
    let mut b = Builder {
        exp,
        plan: Plan::default(),
        by_key: HashMap::new(),
        fingerprints: HashMap::new(),
        models: HashMap::new(),
        dataset_specs: HashMap::new(),
        stage_params: StageParams {
            evaluate: canonical(&Json::Object(exp.stages.evaluate_params.clone())),
            intrinsic_dimension: canonical(&Json::Object(
                exp.stages.intrinsic_dimension_params.clone(),
            )),
            finetune: canonical(&Json::Object(exp.stages.finetune_params.clone())),
        },
    };
    let mut points = Vec::with_capacity(exp.points.len());
    for point in &exp.points {
        points.push(b.point(point, fp)?);
    }
    for (model, dataset) in &exp.dense_pairs {
        b.model(model, dataset, fp)?;
    }
    let mut plan = b.plan;
    plan.points = points;
    let mut dense: Vec<DenseNodes> = b.models.into_values().map(|(_, d)| d).collect();
    dense.sort_by(|a, b| (&a.model, &a.dataset).cmp(&(&b.model, &b.dataset)));
    plan.dense = dense;
    Ok(plan)
}

impl Builder<'_> {
    fn add(
        &mut self,
        kind: StageKind,
        params: String,
        upstream: Vec<NodeId>,
        inputs: Vec<Input>,
        label: impl FnOnce() -> String,
        slot: impl FnOnce() -> String,
    ) -> NodeId {
        let key = node_key(
            kind.name(),
            kind.version(),
            &params,
            upstream.iter().map(|&u| self.plan.nodes[u].key.as_str()),
            inputs
                .iter()
                .map(|i| (i.role.as_str(), i.fingerprint.as_str())),
        );
        if let Some(&id) = self.by_key.get(&key) {
            return id;
        }
        let id = self.plan.nodes.len();
        self.plan.nodes.push(Node {
            kind,
            key: key.clone(),
            label: label(),
            slot: slot(),
            params,
            upstream,
            inputs,
        });
        self.by_key.insert(key, id);
        id
    }

    fn input(
        &mut self,
        role: &str,
        path: &Path,
        fp: &mut FingerprintCache,
    ) -> Result<Input, PlanError> {
        let fingerprint = match self.fingerprints.get(path) {
            Some(f) => f.clone(),
            None => {
                let f = fp.fingerprint(path).map_err(|source| PlanError {
                    path: path.to_path_buf(),
                    source,
                })?;
                self.fingerprints.insert(path.to_path_buf(), f.clone());
                f
            }
        };
        Ok(Input {
            role: role.to_string(),
            path: path.to_path_buf(),
            fingerprint,
        })
    }

    /// The dataset's defining parameters as canonical JSON (its files' fingerprint is an input).
    fn dataset_spec(&mut self, dataset: &str) -> String {
        if let Some(s) = self.dataset_specs.get(dataset) {
            return s.clone();
        }
        let d = &self.exp.datasets[dataset];
        // Explicit calibration indices define the calibration only (its key carries them), so
        // editing them leaves evaluations and fine-tuning cached.
        let mut options = d.params.clone();
        options.remove("calibration_indices");
        let spec = canonical(&json!({ "kind": d.kind.name(), "options": options }));
        self.dataset_specs.insert(dataset.to_string(), spec.clone());
        spec
    }

    fn dataset_inputs(
        &mut self,
        dataset: &str,
        fp: &mut FingerprintCache,
    ) -> Result<Vec<Input>, PlanError> {
        match self.exp.datasets[dataset].resolved.clone() {
            Some(dir) => Ok(vec![self.input("dataset", &dir, fp)?]),
            None => Ok(vec![]),
        }
    }

    /// The model for (model, dataset) and its dense baseline nodes, built once per pair.
    fn model(
        &mut self,
        model: &str,
        dataset: &str,
        fp: &mut FingerprintCache,
    ) -> Result<ModelRef, PlanError> {
        let pair = (model.to_string(), dataset.to_string());
        if let Some((m, _)) = self.models.get(&pair) {
            return Ok(m.clone());
        }
        let def = &self.exp.models[model];
        let mut inputs = Vec::new();
        if def.test {
            // Simulated model: its identity is its name (no files).
            inputs.push(Input {
                role: "model".into(),
                path: PathBuf::new(),
                fingerprint: format!("test-model:{model}"),
            });
        }
        for (i, dir) in def
            .resolved
            .get(dataset)
            .cloned()
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            inputs.push(self.input(if i == 0 { "model" } else { "model.vision" }, dir, fp)?);
        }
        let ds_inputs = self.dataset_inputs(dataset, fp)?;
        let ds_spec = self.dataset_spec(dataset);
        let stages = &self.exp.stages;
        let mut mref = ModelRef {
            inputs,
            finetune: None,
        };
        let mut dense = PointNodes::default();
        if stages.finetune {
            let params = object(&[
                ("dataset", &ds_spec),
                ("train", &self.stage_params.finetune),
            ]);
            let id = self.add(
                StageKind::Finetune,
                params,
                vec![],
                [mref.inputs.clone(), ds_inputs.clone()].concat(),
                || format!("finetune {model}/{dataset}"),
                || format!("finetune|{model}|{dataset}"),
            );
            mref = ModelRef {
                inputs: mref.inputs,
                finetune: Some(id),
            };
            dense.finetune = Some(id);
        }
        let up: Vec<NodeId> = mref.finetune.into_iter().collect();
        let inputs = [mref.inputs.clone(), ds_inputs.clone()].concat();
        let (what, slot) = dense_names(model, dataset);
        (dense.evaluate, dense.intrinsic_dimension) =
            self.measure(&ds_spec, up, inputs, &what, &slot);
        let dn = DenseNodes {
            model: model.to_string(),
            dataset: dataset.to_string(),
            nodes: dense,
        };
        self.models.insert(pair, (mref.clone(), dn));
        Ok(mref)
    }

    fn point(&mut self, p: &GridPoint, fp: &mut FingerprintCache) -> Result<PointNodes, PlanError> {
        let mref = self.model(&p.model, &p.dataset, fp)?;
        let ds_inputs = self.dataset_inputs(&p.dataset, fp)?;
        let ds_spec = self.dataset_spec(&p.dataset);
        let mut method = resolve_method(self.exp, p);
        let calibrated = method.spec.needs(MethodInput::Calibration);
        let mut out = PointNodes {
            finetune: mref.finetune,
            ..Default::default()
        };
        let base_up: Vec<NodeId> = mref.finetune.into_iter().collect();
        let (m, d, name) = (&p.model, &p.dataset, &p.method);
        let (sp, n, seed) = (p.sparsity, p.calibration_size, p.seed);

        let mut prune_up = base_up.clone();
        if calibrated {
            // With an explicit list the point's seed plays no part: the first `n` listed images.
            let draw = match self.exp.datasets[d].params.get("calibration_indices") {
                Some(Json::Array(listed)) => ("indices", canonical(&json!(listed[..n as usize]))),
                _ => ("seed", seed.to_string()),
            };
            let id = self.add(
                StageKind::Calibrate,
                object(&[
                    ("dataset", &ds_spec),
                    ("size", &n.to_string()),
                    (draw.0, &draw.1),
                ]),
                base_up.clone(),
                [mref.inputs.clone(), ds_inputs.clone()].concat(),
                || format!("calibrate {m}/{d} n={n} seed={seed}"),
                || format!("calibrate|{m}|{d}|{n}|{seed}"),
            );
            out.calibrate = Some(id);
            prune_up.push(id);
        }
        let trains = method.spec.needs(MethodInput::TrainingSplit);
        let calib_label = if calibrated {
            format!(" n={n} seed={seed}")
        } else if trains {
            format!(" seed={seed}")
        } else {
            String::new()
        };
        // A data-driven method (SLS) ignores the axis: one node for every sparsity of the grid.
        let sparsity = match method.spec.sparsity {
            SparsityAxis::DataDriven => "data-driven".to_string(),
            SparsityAxis::Weights | SparsityAxis::MacsRemoved | SparsityAxis::UnitsRemoved => {
                sp.to_string()
            }
        };
        let kind = Json::from(method.kind()).to_string();
        let params_json = std::mem::take(&mut method.params);
        let params = canonical(&Json::Object(params_json.clone()));
        let sparsity = Json::from(sparsity).to_string();
        let mut prune_params = vec![
            ("method", kind.as_str()),
            ("params", params.as_str()),
            ("sparsity", sparsity.as_str()),
        ];
        let mut prune_inputs = mref.inputs.clone();
        // A method that trains reads the training split, drawn by the point's seed: the dataset
        // and the seed are part of its key.
        let seed_json = seed.to_string();
        if trains {
            prune_params.push(("dataset", &ds_spec));
            prune_params.push(("seed", &seed_json));
            prune_inputs.extend(ds_inputs.iter().cloned());
        }
        // A file a method reads (stored masks) is an input: its content is part of the key.
        for spec in method.spec.params {
            if let (ParamType::File, Some(Json::String(path))) =
                (spec.ty, params_json.get(spec.name))
            {
                prune_inputs.push(self.input(
                    &format!("method.{}", spec.name),
                    Path::new(path),
                    fp,
                )?);
            }
        }
        // A method scored by the dense model's intrinsic dimension reads that measurement.
        // A method that can weight its scores by the dense model's per-Linear intrinsic dimension
        // reads it when its `use_id` is on.
        if method.spec.needs(MethodInput::DenseIntrinsicDimension)
            && params_json.get("use_id").and_then(Json::as_bool) == Some(true)
        {
            let id = self.dense_linear_intrinsic_dimension(m, d, &ds_inputs, &params_json);
            prune_up.push(id);
        }
        let prune = self.add(
            StageKind::Prune,
            object(&prune_params),
            prune_up,
            prune_inputs,
            || format!("prune {m}/{d} {name}@{sp}{calib_label}"),
            || format!("prune|{m}|{d}|{name}|{sp}|{calib_label}"),
        );
        out.prune = Some(prune);
        let stages = &self.exp.stages;
        // Retraining is measured by its own stage (accuracy before, best, last); evaluation and
        // intrinsic dimension read the pruned model, so a table shows both sides.
        if stages.retrain {
            let searched = params_json.get("epochs").and_then(Json::as_u64);
            let train = retrain_params(self.exp, d, searched);
            let id = self.add(
                StageKind::Retrain,
                object(&[("dataset", &ds_spec), ("train", &train)]),
                [base_up.clone(), vec![prune]].concat(),
                [mref.inputs.clone(), ds_inputs.clone()].concat(),
                || format!("retrain {m}/{d} {name}@{sp}{calib_label}"),
                || format!("retrain|{m}|{d}|{name}|{sp}|{calib_label}"),
            );
            out.retrain = Some(id);
        }
        let inputs = [mref.inputs.clone(), ds_inputs].concat();
        let what = format!("{m}/{d} {name}@{sp}{calib_label}");
        let slot = format!("{m}|{d}|{name}|{sp}|{calib_label}");
        // The fine-tuned tower is the base the prune's masks and weights apply to.
        let model_up = [base_up.clone(), vec![prune]].concat();
        (out.evaluate, out.intrinsic_dimension) =
            self.measure(&ds_spec, model_up, inputs, &what, &slot);
        Ok(out)
    }

    /// The dense model's intrinsic-dimension node for (model, dataset), planned even when the
    /// manifest does not enable the stage (a method reads it).
    /// The dense model's intrinsic dimension per pruned Linear (`layers = "linears"`, both towers),
    /// with the [stages.intrinsic_dimension] estimator settings and the method's sample count and
    /// representation (`id_samples`, `id_representation`). Shared by every point that reads it.
    fn dense_linear_intrinsic_dimension(
        &mut self,
        model: &str,
        dataset: &str,
        ds_inputs: &[Input],
        method: &serde_json::Map<String, Json>,
    ) -> NodeId {
        let pair = (model.to_string(), dataset.to_string());
        let (mref, _) = self.models[&pair].clone();
        let ds_spec = self.dataset_spec(dataset);
        let mut params = self.exp.stages.intrinsic_dimension_params.clone();
        params.insert("layers".into(), Json::from("linears"));
        params.insert("towers".into(), Json::from("both"));
        for (own, theirs) in [("id_samples", "n"), ("id_representation", "representation")] {
            if let Some(v) = method.get(own) {
                params.insert(theirs.into(), v.clone());
            }
        }
        let measure = canonical(&Json::Object(params));
        let upstream = mref.finetune.into_iter().collect();
        let inputs = [mref.inputs.as_slice(), ds_inputs].concat();
        let (what, slot) = dense_names(model, dataset);
        let id = self.add(
            StageKind::IntrinsicDimension,
            object(&[("dataset", &ds_spec), ("measure", &measure)]),
            upstream,
            inputs,
            || format!("intrinsic-dimension {what} per Linear"),
            || format!("intrinsic-dimension|{slot}|linears"),
        );
        if let Some((_, d)) = self.models.get_mut(&pair) {
            d.nodes.linear_intrinsic_dimension = Some(id);
        }
        id
    }

    /// The evaluation of a model node (and its intrinsic-dimension measurement when enabled).
    fn measure(
        &mut self,
        ds_spec: &str,
        upstream: Vec<NodeId>,
        inputs: Vec<Input>,
        what: &str,
        slot: &str,
    ) -> (Option<NodeId>, Option<NodeId>) {
        let evaluate = self.add(
            StageKind::Evaluate,
            object(&[
                ("dataset", ds_spec),
                ("evaluate", &self.stage_params.evaluate),
            ]),
            upstream.clone(),
            inputs.clone(),
            || format!("evaluate {what}"),
            || format!("evaluate|{slot}"),
        );
        let intrinsic_dimension = self
            .exp
            .stages
            .intrinsic_dimension
            .then(|| self.intrinsic_dimension(ds_spec, upstream, inputs, what, slot));
        (Some(evaluate), intrinsic_dimension)
    }

    fn intrinsic_dimension(
        &mut self,
        ds_spec: &str,
        upstream: Vec<NodeId>,
        inputs: Vec<Input>,
        what: &str,
        slot: &str,
    ) -> NodeId {
        self.add(
            StageKind::IntrinsicDimension,
            object(&[
                ("dataset", ds_spec),
                ("measure", &self.stage_params.intrinsic_dimension),
            ]),
            upstream,
            inputs,
            || format!("intrinsic-dimension {what}"),
            || format!("intrinsic-dimension|{slot}"),
        )
    }
}

/// The label fragment and slot of the dense model of (model, dataset).
fn dense_names(model: &str, dataset: &str) -> (String, String) {
    (
        format!("{model}/{dataset} dense"),
        format!("{model}|{dataset}|dense"),
    )
}

/// The retraining parameters for `dataset`: the manifest's, with the Convpass scale and Xavier
/// flag of a built-in VTAB-1k dataset filled in where the manifest leaves them out, and with
/// `search_epochs` the epochs of a method that searched for some (`searched`, UPop's rule), so
/// all are part of the key.
pub fn retrain_params(exp: &Experiment, dataset: &str, searched: Option<u64>) -> String {
    let mut params = exp.stages.retrain_params.clone();
    if params.get("search_epochs").and_then(Json::as_bool) == Some(true)
        && let Some(epochs) = searched
    {
        params.insert("epochs".into(), Json::from(epochs));
    }
    let vtab = exp.datasets[dataset]
        .params
        .get("prompts")
        .and_then(Json::as_str)
        .and_then(schema::known_dataset)
        .and_then(|k| k.convpass);
    if let Some((scale, xavier)) = vtab {
        params.entry("convpass_scale").or_insert(Json::from(scale));
        params
            .entry("convpass_xavier")
            .or_insert(Json::from(xavier));
    }
    canonical(&Json::Object(params))
}

/// The method of a grid point: its definition (or a built-in kind with defaults), the point's
/// overrides applied, and derived defaults made explicit so they are part of the key.
pub fn resolve_method(exp: &Experiment, p: &GridPoint) -> MethodDef {
    let mut def = exp.methods.get(&p.method).cloned().unwrap_or_else(|| {
        let spec = exp.method_spec(&p.method).expect("validated method name");
        let params: Params = spec
            .params
            .iter()
            .filter_map(|s| Some((s.name.to_string(), s.default.to_json()?)))
            .collect();
        MethodDef {
            name: p.method.clone(),
            spec,
            params,
        }
    });
    for (k, v) in &p.overrides {
        def.params.insert(k.clone(), v.clone());
    }
    for spec in def.spec.params {
        if matches!(spec.default, DefaultValue::CalibrationSize)
            && !def.params.contains_key(spec.name)
        {
            def.params
                .insert(spec.name.into(), Json::from(p.calibration_size));
        }
    }
    def
}
