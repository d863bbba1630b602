//! Records → rows. Reads the cache only.

use crate::cache::{Cache, Lookup, Record};
use crate::manifest::{Experiment, Sparsity};
use crate::plan::{NodeId, Plan, PointNodes};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowStatus {
    Done,
    Failed,
    Pending,
}

impl RowStatus {
    pub fn name(self) -> &'static str {
        match self {
            RowStatus::Done => "done",
            RowStatus::Failed => "failed",
            RowStatus::Pending => "pending",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub model: String,
    pub dataset: String,
    pub method: String,
    pub sparsity: String,
    /// Fraction of weights removed (n/m for n:m).
    pub target_sparsity: f64,
    pub calibration_size: Option<i64>,
    pub seed: Option<i64>,
    pub status: RowStatus,
    pub top1: Option<f64>,
    pub top5: Option<f64>,
    pub n_eval: Option<i64>,
    pub achieved_sparsity: Option<f64>,
    /// Vision blocks kept by SLS depth pruning.
    pub vision_depth: Option<i64>,
    pub prune_seconds: Option<f64>,
    pub eval_seconds: Option<f64>,
    pub retrain_best_top1: Option<f64>,
    pub retrain_last_top1: Option<f64>,
    /// Recall@k of retrieval datasets and their mean, in [`RETRIEVAL_METRICS`] order.
    pub retrieval: [Option<f64>; 7],
    /// The same after retraining (at the selected epoch), in [`RETRAIN_RETRIEVAL`] order.
    pub retrain_retrieval: [Option<f64>; 7],
    /// Per-tower intrinsic-dimension summaries, in [`ID_SUMMARY`] order.
    pub intrinsic_dimension: [Option<f64>; 6],
    /// Mean zero-shot cross-entropy on the evaluation split.
    pub loss: Option<f64>,
    /// The model as evaluated against its dense model, in [`EFFICIENCY`] order.
    pub efficiency: [Option<f64>; 10],
    /// The stage that failed, its error and its log, for failed rows.
    pub failed_stage: Option<String>,
    pub error: Option<String>,
    pub log: Option<PathBuf>,
}

impl Row {
    /// A numeric column by its table name (`top1`, `loss`, `image_to_text_r1`, `speedup`, …).
    pub fn metric(&self, name: &str) -> Option<f64> {
        let at = |names: &[&str], values: &[Option<f64>]| {
            names
                .iter()
                .position(|n| *n == name)
                .and_then(|i| values[i])
        };
        match name {
            "top1" => self.top1,
            "top5" => self.top5,
            "loss" => self.loss,
            "achieved_sparsity" => self.achieved_sparsity,
            "retrain_best_top1" => self.retrain_best_top1,
            "retrain_last_top1" => self.retrain_last_top1,
            _ => at(&RETRIEVAL_METRICS, &self.retrieval)
                .or_else(|| at(&RETRAIN_RETRIEVAL, &self.retrain_retrieval))
                .or_else(|| at(&EFFICIENCY, &self.efficiency))
                .or_else(|| at(&ID_SUMMARY, &self.intrinsic_dimension)),
        }
    }
}

/// The evaluate stage's retrieval metrics, which are also table columns.
pub use crate::util::columns::RETRIEVAL as RETRIEVAL_METRICS;

/// The retrain stage's retrieval metrics at its selected epoch (`metrics.best`), as table
/// columns.
pub use crate::util::columns::RETRAIN_RETRIEVAL;

/// The evaluate stage's efficiency measurements (`metrics.efficiency`), which are also table
/// columns.
pub const EFFICIENCY: [&str; 10] = [
    "params_total",
    "params_nonzero",
    "vision_macs",
    "text_macs",
    "mac_fraction",
    "latency_ms",
    "throughput",
    "dense_latency_ms",
    "dense_throughput",
    "speedup",
];

/// The intrinsic-dimension stage's per-tower summaries, which are also table columns.
pub const ID_SUMMARY: [&str; 6] = [
    "vision_id_mean",
    "vision_id_max",
    "vision_id_last",
    "text_id_mean",
    "text_id_max",
    "text_id_last",
];

/// One row of the long intrinsic-dimension table: a grid point's measurement of one tower's
/// layer, or (layer `None`) a point whose measurement is not done, with its status.
#[derive(Debug, Clone, PartialEq)]
pub struct IdRow {
    pub point: Row,
    pub tower: Option<String>,
    pub layer: Option<i64>,
    /// The module measured (`…encoder.layers.3` or, per Linear, `…encoder.layers.3.mlp.fc1`).
    pub module: Option<String>,
    pub dimension: Option<f64>,
    pub std: Option<f64>,
    pub kept: Option<i64>,
    pub duplicates: Option<i64>,
    pub degenerate: Option<i64>,
    pub samples: Option<i64>,
}

/// The long table: one row per grid point × tower × layer (dense baselines first); points
/// without a finished measurement keep one row with their status.
/// `rows` are [`collect`]'s, in its order.
pub fn collect_id(plan: &Plan, cache: &Cache, rows: &[Row]) -> Vec<IdRow> {
    let nodes = plan
        .dense
        .iter()
        .map(|d| &d.nodes)
        .chain(plan.points.iter());
    let mut out = Vec::new();
    // Each point's measurement, and a dense model's per-Linear one (what PLATON + ID reads).
    let measured = rows.iter().zip(nodes).flat_map(|(row, nodes)| {
        [nodes.intrinsic_dimension, nodes.linear_intrinsic_dimension]
            .into_iter()
            .flatten()
            .map(move |id| (row, id))
    });
    for (row, id) in measured {
        let record = match cache.lookup(&plan.nodes[id].key, false) {
            Lookup::Done(r) | Lookup::Evicted(r) => Some(r),
            _ => None,
        };
        let towers = record
            .as_ref()
            .and_then(|r| r.metrics["towers"].as_array().cloned())
            .unwrap_or_default();
        if towers.is_empty() {
            let mut point = row.clone();
            if point.status == RowStatus::Done {
                point.status = match cache.failure(&plan.nodes[id].key) {
                    Some(_) => RowStatus::Failed,
                    None => RowStatus::Pending,
                };
            }
            out.push(IdRow {
                point,
                tower: None,
                layer: None,
                module: None,
                dimension: None,
                std: None,
                kept: None,
                duplicates: None,
                degenerate: None,
                samples: None,
            });
            continue;
        }
        for t in &towers {
            for l in t["layers"].as_array().into_iter().flatten() {
                out.push(IdRow {
                    point: row.clone(),
                    tower: t["tower"].as_str().map(str::to_string),
                    layer: l["layer"].as_i64(),
                    module: l["module"].as_str().map(str::to_string),
                    dimension: l["dimension"].as_f64(),
                    std: l["std"].as_f64(),
                    kept: l["kept"].as_i64(),
                    duplicates: l["duplicates"].as_i64(),
                    degenerate: l["degenerate"].as_i64(),
                    samples: t["samples"].as_i64(),
                });
            }
        }
    }
    out
}

/// One row per grid point, dense baselines first.
pub fn collect(exp: &Experiment, plan: &Plan, cache: &Cache) -> Vec<Row> {
    let record = |id: Option<NodeId>| -> Option<Record> {
        match cache.lookup(&plan.nodes[id?].key, false) {
            Lookup::Done(r) | Lookup::Evicted(r) => Some(*r),
            _ => None,
        }
    };
    let mut rows = Vec::with_capacity(plan.dense.len() + plan.points.len());
    for dense in &plan.dense {
        rows.push(row(
            cache,
            plan,
            &dense.nodes,
            &record,
            RowId {
                model: &dense.model,
                dataset: &dense.dataset,
                method: "dense",
                sparsity: Sparsity::Fraction(0.0),
                calibration_size: None,
                seed: None,
            },
        ));
    }
    for (p, nodes) in exp.points.iter().zip(&plan.points) {
        let calibrated = nodes.calibrate.is_some();
        // A method that draws training samples by the point's seed has a seed too.
        let seeded = calibrated
            || exp
                .method_spec(&p.method)
                .is_some_and(|s| s.needs(crate::manifest::schema::MethodInput::TrainingSplit));
        rows.push(row(
            cache,
            plan,
            nodes,
            &record,
            RowId {
                model: &p.model,
                dataset: &p.dataset,
                method: &p.method,
                sparsity: p.sparsity,
                calibration_size: calibrated.then_some(p.calibration_size as i64),
                seed: seeded.then_some(p.seed as i64),
            },
        ));
    }
    rows
}

struct RowId<'a> {
    model: &'a str,
    dataset: &'a str,
    method: &'a str,
    sparsity: Sparsity,
    calibration_size: Option<i64>,
    seed: Option<i64>,
}

fn row(
    cache: &Cache,
    plan: &Plan,
    nodes: &PointNodes,
    record: &dyn Fn(Option<NodeId>) -> Option<Record>,
    id: RowId,
) -> Row {
    let eval = record(nodes.evaluate);
    let prune = record(nodes.prune);
    let retrain = record(nodes.retrain);
    let measured = record(nodes.intrinsic_dimension);
    let chain = [
        nodes.finetune,
        nodes.calibrate,
        nodes.prune,
        nodes.retrain,
        nodes.evaluate,
        nodes.intrinsic_dimension,
    ];
    let failure = chain.iter().flatten().find_map(|&n| {
        cache
            .failure(&plan.nodes[n].key)
            .map(|f| (plan.nodes[n].kind.name().to_string(), f.error, f.log))
    });
    // Done when every stage of the point is: evaluated, and retrained and measured when the
    // manifest asks for it. (The ID table, `status` and the exit code agree with this.)
    let complete = eval.is_some()
        && (nodes.retrain.is_none() || retrain.is_some())
        && (nodes.intrinsic_dimension.is_none() || measured.is_some());
    let status = match (complete, &failure) {
        (true, _) => RowStatus::Done,
        (false, Some(_)) => RowStatus::Failed,
        (false, None) => RowStatus::Pending,
    };
    let (failed_stage, error, log) = match (status, failure) {
        (RowStatus::Failed, Some((stage, error, log))) => (Some(stage), Some(error), Some(log)),
        _ => (None, None, None),
    };
    let metric = |r: &Option<Record>, name: &str| r.as_ref().and_then(|r| r.metric(name));
    Row {
        model: id.model.to_string(),
        dataset: id.dataset.to_string(),
        method: id.method.to_string(),
        sparsity: id.sparsity.to_string(),
        target_sparsity: id.sparsity.fraction(),
        calibration_size: id.calibration_size,
        seed: id.seed,
        status,
        top1: metric(&eval, "top1"),
        top5: metric(&eval, "top5"),
        n_eval: metric(&eval, "n_eval").map(|v| v as i64),
        achieved_sparsity: if nodes.prune.is_some() {
            metric(&prune, "achieved_sparsity")
        } else {
            eval.as_ref().map(|_| 0.0)
        },
        vision_depth: metric(&prune, "depth").map(|d| d as i64),
        prune_seconds: prune.as_ref().map(|r| r.timing.seconds),
        eval_seconds: eval.as_ref().map(|r| r.timing.seconds),
        retrain_best_top1: metric(&retrain, "best_top1"),
        retrain_last_top1: metric(&retrain, "last_top1"),
        retrieval: RETRIEVAL_METRICS.map(|name| metric(&eval, name)),
        retrain_retrieval: RETRAIN_RETRIEVAL.map(|name| {
            let own = name.trim_start_matches("retrain_");
            retrain
                .as_ref()
                .and_then(|r| r.metrics["best"][own].as_f64())
        }),
        intrinsic_dimension: ID_SUMMARY.map(|name| {
            measured
                .as_ref()
                .and_then(|r| r.metrics["summary"][name].as_f64())
        }),
        loss: metric(&eval, "loss"),
        efficiency: EFFICIENCY.map(|name| {
            eval.as_ref()
                .and_then(|r| r.metrics["efficiency"][name].as_f64())
        }),
        failed_stage,
        error,
        log,
    }
}
