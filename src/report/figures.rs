//! The figures an experiment's tables support, as data: which panels, series and points, in
//! the units they are drawn in. Each builder reads the rows the tables hold (done points only)
//! and returns nothing when the table has nothing for it, so every figure in a report is one
//! the experiment actually measured. Drawing is [`super::render`]'s job.
//!
//! - accuracy against sparsity, one panel per (model, dataset), one series per method (and
//!   calibration size when a sweep has several; n:m patterns separately), the dense model as a
//!   dashed line, error bars (standard deviation) over seeds;
//! - intrinsic dimension per layer, one panel per (model, dataset, tower), one series per
//!   method and sparsity;
//! - the calibration-size ablation (log-scaled size axis), when a sweep has several sizes;
//! - accuracy against vision MACs, non-zero parameters and measured throughput;
//! - accuracy before and after retraining, when the retrain stage ran.

use crate::tables::{IdRow, Row, RowStatus};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub x: f64,
    pub y: f64,
    /// Standard deviation of `y` over the seeds averaged into it.
    pub err: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub label: String,
    pub points: Vec<Point>,
    /// A reference line (the dense model).
    pub dashed: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    pub title: String,
    pub series: Vec<Series>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    pub label: String,
    pub log: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// File stem under `figures/`.
    pub name: String,
    pub title: String,
    pub x: Axis,
    pub y: Axis,
    pub panels: Vec<Panel>,
    /// Connect a series' points (false: a scatter, for axes that are measurements).
    pub lines: bool,
}

impl Panel {
    /// The data's extent over every series, `((x_min, x_max), (y_min, y_max))`, error bars
    /// included.
    pub fn extent(&self) -> ((f64, f64), (f64, f64)) {
        let mut x = (f64::INFINITY, f64::NEG_INFINITY);
        let mut y = (f64::INFINITY, f64::NEG_INFINITY);
        for p in self.series.iter().flat_map(|s| &s.points) {
            let e = p.err.unwrap_or(0.0);
            x = (x.0.min(p.x), x.1.max(p.x));
            y = (y.0.min(p.y - e), y.1.max(p.y + e));
        }
        (x, y)
    }
}

/// The accuracy a row is plotted by: zero-shot top-1, or image→text R@1 on retrieval data, in
/// percent.
fn accuracy(r: &Row) -> Option<f64> {
    r.top1.or(r.retrieval[0]).map(|v| 100.0 * v)
}

fn accuracy_label(rows: &[&Row]) -> &'static str {
    if rows.iter().all(|r| r.top1.is_none()) {
        "image→text R@1 (%)"
    } else {
        "top-1 (%)"
    }
}

fn mean_std(values: &[f64]) -> (f64, Option<f64>) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, None);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, Some(var.sqrt()))
}

/// Points from `(x, y)` samples: one per distinct x (ascending), averaged, with the spread.
fn points(samples: Vec<(f64, f64)>) -> Vec<Point> {
    let mut by_x: BTreeMap<u64, (f64, Vec<f64>)> = BTreeMap::new();
    for (x, y) in samples {
        // Non-negative floats order like their bit patterns.
        by_x.entry(x.to_bits()).or_insert((x, Vec::new())).1.push(y);
    }
    let mut out: Vec<Point> = by_x
        .into_values()
        .map(|(x, ys)| {
            let (y, err) = mean_std(&ys);
            Point { x, y, err }
        })
        .collect();
    out.sort_by(|a, b| a.x.total_cmp(&b.x));
    out
}

/// Items in first-seen order.
fn ordered<T: PartialEq + Clone>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut out = Vec::new();
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

fn done(rows: &[Row]) -> Vec<&Row> {
    rows.iter()
        .filter(|r| r.status == RowStatus::Done)
        .collect()
}

/// (model, dataset) pairs in table order, with their rows.
fn by_pair<'a>(rows: &[&'a Row]) -> Vec<((String, String), Vec<&'a Row>)> {
    let pairs = ordered(rows.iter().map(|r| (r.model.clone(), r.dataset.clone())));
    pairs
        .into_iter()
        .map(|p| {
            let mine = rows
                .iter()
                .copied()
                .filter(|r| (r.model.clone(), r.dataset.clone()) == p)
                .collect();
            (p, mine)
        })
        .collect()
}

/// The method series of a panel: one per method (and calibration size when several, and
/// per n:m pattern), points from `xy`.
fn method_series(
    rows: &[&Row],
    several_sizes: bool,
    xy: impl Fn(&Row) -> Option<(f64, f64)>,
) -> Vec<Series> {
    let label = |r: &Row| {
        let mut l = r.method.clone();
        if r.sparsity.contains(':') {
            l = format!("{l} ({})", r.sparsity);
        }
        if several_sizes && let Some(n) = r.calibration_size {
            l = format!("{l}, n={n}");
        }
        l
    };
    let pruned: Vec<&Row> = rows
        .iter()
        .copied()
        .filter(|r| r.method != "dense")
        .collect();
    ordered(pruned.iter().map(|r| label(r)))
        .into_iter()
        .filter_map(|l| {
            let samples: Vec<(f64, f64)> = pruned
                .iter()
                .filter(|r| label(r) == l)
                .filter_map(|r| xy(r))
                .collect();
            (!samples.is_empty()).then(|| Series {
                label: l,
                points: points(samples),
                dashed: false,
            })
        })
        .collect()
}

/// The dense model's accuracy as a dashed line across `x`'s range.
fn dense_line(rows: &[&Row], (x0, x1): (f64, f64)) -> Option<Series> {
    let ys: Vec<f64> = rows
        .iter()
        .filter(|r| r.method == "dense")
        .filter_map(|r| accuracy(r))
        .collect();
    if ys.is_empty() || !x0.is_finite() {
        return None;
    }
    let (y, err) = mean_std(&ys);
    Some(Series {
        label: "dense".into(),
        points: vec![Point { x: x0, y, err }, Point { x: x1, y, err }],
        dashed: true,
    })
}

fn several_sizes(rows: &[&Row]) -> bool {
    ordered(rows.iter().filter_map(|r| r.calibration_size)).len() > 1
}

/// Accuracy against sparsity. `data_driven(method)`: the method decides its own sparsity (SLS,
/// stored masks), so its achieved sparsity is its x.
pub fn accuracy_vs_sparsity(rows: &[Row], data_driven: &dyn Fn(&str) -> bool) -> Option<Figure> {
    let rows = done(rows);
    let sizes = several_sizes(&rows);
    let mut panels = Vec::new();
    for ((model, dataset), mine) in by_pair(&rows) {
        let mut series = method_series(&mine, sizes, |r| {
            let x = if data_driven(&r.method) {
                r.achieved_sparsity?
            } else {
                r.target_sparsity
            };
            Some((x, accuracy(r)?))
        });
        if series.is_empty() {
            continue;
        }
        let panel = Panel {
            title: format!("{model} · {dataset}"),
            series: series.clone(),
        };
        let ((x0, x1), _) = panel.extent();
        series.extend(dense_line(&mine, (0.0f64.min(x0), x1)));
        panels.push(Panel {
            title: panel.title,
            series,
        });
    }
    (!panels.is_empty()).then(|| Figure {
        name: "accuracy_vs_sparsity".into(),
        title: "Accuracy against sparsity".into(),
        x: Axis {
            label: "sparsity (fraction removed)".into(),
            log: false,
        },
        y: Axis {
            label: accuracy_label(&rows).into(),
            log: false,
        },
        panels,
        lines: true,
    })
}

/// Intrinsic dimension per layer: one panel per (model, dataset, tower).
pub fn intrinsic_dimension(rows: &[IdRow]) -> Option<Figure> {
    let rows: Vec<&IdRow> = rows
        .iter()
        .filter(|r| r.point.status == RowStatus::Done && r.dimension.is_some())
        .collect();
    let keys = ordered(rows.iter().map(|r| {
        (
            r.point.model.clone(),
            r.point.dataset.clone(),
            r.tower.clone().unwrap_or_default(),
        )
    }));
    let mut panels = Vec::new();
    for (model, dataset, tower) in keys {
        let mine: Vec<&IdRow> = rows
            .iter()
            .copied()
            .filter(|r| {
                r.point.model == model
                    && r.point.dataset == dataset
                    && r.tower.as_deref().unwrap_or_default() == tower
            })
            .collect();
        let label = |r: &IdRow| {
            if r.point.method == "dense" {
                "dense".to_string()
            } else {
                format!("{} @ {}", r.point.method, r.point.sparsity)
            }
        };
        let series = ordered(mine.iter().map(|r| label(r)))
            .into_iter()
            .map(|l| Series {
                points: points(
                    mine.iter()
                        .filter(|r| label(r) == l)
                        .filter_map(|r| Some((r.layer? as f64, r.dimension?)))
                        .collect(),
                ),
                dashed: l == "dense",
                label: l,
            })
            .collect();
        panels.push(Panel {
            title: format!("{model} · {dataset} · {tower}"),
            series,
        });
    }
    (!panels.is_empty()).then(|| Figure {
        name: "intrinsic_dimension".into(),
        title: "Intrinsic dimension per layer (TwoNN)".into(),
        x: Axis {
            label: "layer".into(),
            log: false,
        },
        y: Axis {
            label: "intrinsic dimension".into(),
            log: false,
        },
        panels,
        lines: true,
    })
}

/// Accuracy against the calibration size (log axis): one panel per (model, dataset,
/// sparsity), when the sweep has several sizes.
pub fn calibration_ablation(rows: &[Row]) -> Option<Figure> {
    let rows = done(rows);
    if !several_sizes(&rows) {
        return None;
    }
    let mut panels = Vec::new();
    for ((model, dataset), mine) in by_pair(&rows) {
        let sparsities = ordered(
            mine.iter()
                .filter(|r| r.calibration_size.is_some())
                .map(|r| r.sparsity.clone()),
        );
        for sparsity in sparsities {
            let at: Vec<&Row> = mine
                .iter()
                .copied()
                .filter(|r| r.sparsity == sparsity && r.calibration_size.is_some())
                .collect();
            let series = method_series(&at, false, |r| {
                Some((r.calibration_size? as f64, accuracy(r)?))
            });
            if series.iter().all(|s| s.points.len() < 2) {
                continue;
            }
            panels.push(Panel {
                title: format!("{model} · {dataset} · {sparsity}"),
                series,
            });
        }
    }
    (!panels.is_empty()).then(|| Figure {
        name: "calibration_ablation".into(),
        title: "Calibration-size ablation".into(),
        x: Axis {
            label: "calibration samples".into(),
            log: true,
        },
        y: Axis {
            label: accuracy_label(&rows).into(),
            log: false,
        },
        panels,
        lines: true,
    })
}

/// The efficiency axes: table column, file stem, axis label, scale.
const EFFICIENCY_AXES: [(&str, &str, &str, f64); 3] = [
    (
        "mac_fraction",
        "accuracy_vs_macs",
        "vision MACs (% of dense)",
        100.0,
    ),
    (
        "params_nonzero",
        "accuracy_vs_parameters",
        "non-zero parameters (M)",
        1e-6,
    ),
    (
        "throughput",
        "accuracy_vs_throughput",
        "throughput (images/s)",
        1.0,
    ),
];

/// Accuracy against each efficiency measurement the table holds (dense included, as a point).
pub fn accuracy_vs_efficiency(rows: &[Row]) -> Vec<Figure> {
    let rows = done(rows);
    let mut out = Vec::new();
    for (column, name, label, scale) in EFFICIENCY_AXES {
        let mut panels = Vec::new();
        for ((model, dataset), mine) in by_pair(&rows) {
            let xy = |r: &Row| Some((scale * r.metric(column)?, accuracy(r)?));
            let mut series = method_series(&mine, several_sizes(&mine), xy);
            let dense: Vec<(f64, f64)> = mine
                .iter()
                .filter(|r| r.method == "dense")
                .filter_map(|r| xy(r))
                .collect();
            if series.is_empty() {
                continue;
            }
            if !dense.is_empty() {
                series.insert(
                    0,
                    Series {
                        label: "dense".into(),
                        points: points(dense),
                        dashed: false,
                    },
                );
            }
            panels.push(Panel {
                title: format!("{model} · {dataset}"),
                series,
            });
        }
        if !panels.is_empty() {
            out.push(Figure {
                name: name.into(),
                title: format!(
                    "Accuracy against {}",
                    label.split(" (").next().unwrap_or(label)
                ),
                x: Axis {
                    label: label.into(),
                    log: false,
                },
                y: Axis {
                    label: accuracy_label(&rows).into(),
                    log: false,
                },
                panels,
                lines: false,
            });
        }
    }
    out
}

/// The retrained model's accuracy: top-1, or image→text R@1 on retrieval data (as [`accuracy`]
/// reads the model before retraining).
fn retrained(r: &Row) -> Option<f64> {
    r.retrain_best_top1.or(r.retrain_retrieval[0])
}

/// Accuracy before and after retraining against sparsity: per method, "before" solid and
/// "retrained" dashed.
pub fn retraining(rows: &[Row], data_driven: &dyn Fn(&str) -> bool) -> Option<Figure> {
    let rows = done(rows);
    let mut panels = Vec::new();
    for ((model, dataset), mine) in by_pair(&rows) {
        let x = |r: &Row| {
            if data_driven(&r.method) {
                r.achieved_sparsity
            } else {
                Some(r.target_sparsity)
            }
        };
        let after = method_series(&mine, false, |r| Some((x(r)?, 100.0 * retrained(r)?)));
        if after.is_empty() {
            continue;
        }
        let mut series = Vec::new();
        for a in after {
            let before = method_series(&mine, false, |r| {
                retrained(r)?;
                Some((x(r)?, accuracy(r)?))
            })
            .into_iter()
            .find(|b| b.label == a.label);
            series.extend(before.map(|b| Series {
                label: format!("{}, before", b.label),
                ..b
            }));
            series.push(Series {
                label: format!("{}, retrained", a.label),
                dashed: true,
                ..a
            });
        }
        panels.push(Panel {
            title: format!("{model} · {dataset}"),
            series,
        });
    }
    (!panels.is_empty()).then(|| Figure {
        name: "retraining".into(),
        title: "Accuracy before and after retraining".into(),
        x: Axis {
            label: "sparsity (fraction removed)".into(),
            log: false,
        },
        y: Axis {
            label: "top-1 (%)".into(),
            log: false,
        },
        panels,
        lines: true,
    })
}

/// Every figure the rows support, in report order.
pub fn all(rows: &[Row], id_rows: &[IdRow], data_driven: &dyn Fn(&str) -> bool) -> Vec<Figure> {
    let mut out: Vec<Figure> = accuracy_vs_sparsity(rows, data_driven)
        .into_iter()
        .chain(calibration_ablation(rows))
        .chain(intrinsic_dimension(id_rows))
        .collect();
    out.extend(accuracy_vs_efficiency(rows));
    out.extend(retraining(rows, data_driven));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn row(method: &str, sparsity: &str, seed: i64, top1: f64) -> Row {
        Row {
            model: "m".into(),
            dataset: "d".into(),
            method: method.into(),
            sparsity: sparsity.into(),
            target_sparsity: match sparsity.split_once(':') {
                Some((n, m)) => n.parse::<f64>().unwrap() / m.parse::<f64>().unwrap(),
                None => sparsity.parse().unwrap(),
            },
            calibration_size: (method != "dense").then_some(128),
            seed: Some(seed),
            status: RowStatus::Done,
            top1: Some(top1),
            top5: None,
            n_eval: Some(100),
            achieved_sparsity: Some(0.25),
            vision_depth: None,
            prune_seconds: None,
            eval_seconds: None,
            retrain_best_top1: None,
            retrain_last_top1: None,
            retrieval: [None; 7],
            retrain_retrieval: [None; 7],
            intrinsic_dimension: [None; 6],
            loss: None,
            efficiency: [None; 10],
            failed_stage: None,
            error: None,
            log: None,
        }
    }

    #[test]
    fn accuracy_figure_follows_the_table() {
        let mut rows = vec![
            row("dense", "0", 0, 0.9),
            row("wanda", "0.5", 0, 0.8),
            row("wanda", "0.5", 1, 0.6),
            row("wanda", "0.7", 0, 0.3),
            row("wanda", "2:4", 0, 0.5),
            row("sls", "0", 0, 0.4),
        ];
        let mut failed = row("magnitude", "0.5", 0, 0.1);
        failed.status = RowStatus::Failed;
        rows.push(failed);
        let f = accuracy_vs_sparsity(&rows, &|m| m == "sls").unwrap();
        assert_eq!(f.panels.len(), 1);
        let p = &f.panels[0];
        let labels: Vec<&str> = p.series.iter().map(|s| s.label.as_str()).collect();
        // Failed points are not drawn; n:m is its own series; dense is the dashed reference.
        assert_eq!(labels, ["wanda", "wanda (2:4)", "sls", "dense"]);
        let wanda = &p.series[0].points;
        assert_eq!(wanda.len(), 2);
        // Seeds averaged (80 and 60 %), with their standard deviation.
        assert!((wanda[0].y - 70.0).abs() < 1e-9);
        assert!((wanda[0].err.unwrap() - 200f64.sqrt()).abs() < 1e-9);
        assert_eq!(wanda[1].err, None);
        // SLS sits at its achieved sparsity.
        assert_eq!(p.series[2].points[0].x, 0.25);
        let dense = &p.series[3];
        assert!(dense.dashed);
        assert_eq!((dense.points[0].x, dense.points[1].x), (0.0, 0.7));
        assert!((dense.points[0].y - 90.0).abs() < 1e-9);
        let ((x0, x1), (y0, y1)) = p.extent();
        assert_eq!((x0, x1), (0.0, 0.7));
        // From wanda at 0.7 (30 %) to the dense line (90 %); error bars count.
        assert!((y0 - 30.0).abs() < 1e-9 && (y1 - 90.0).abs() < 1e-9);
        let at_half = &p.series[0].points[0];
        assert!(at_half.y + at_half.err.unwrap() < y1);
        // Nothing else is measured in these rows.
        assert!(calibration_ablation(&rows).is_none());
        assert!(accuracy_vs_efficiency(&rows).is_empty());
        assert!(retraining(&rows, &|_| false).is_none());
    }

    #[test]
    fn ablation_and_efficiency_need_their_columns() {
        let mut rows = vec![row("dense", "0", 0, 0.9)];
        for (n, acc) in [(64, 0.5), (256, 0.7), (1024, 0.8)] {
            let mut r = row("sparsegpt", "0.5", 0, acc);
            r.calibration_size = Some(n);
            r.efficiency[4] = Some(1.0);
            rows.push(r);
        }
        rows[0].efficiency[4] = Some(1.0);
        let f = calibration_ablation(&rows).unwrap();
        assert!(f.x.log);
        let pts = &f.panels[0].series[0].points;
        assert_eq!(
            pts.iter().map(|p| p.x).collect::<Vec<_>>(),
            [64.0, 256.0, 1024.0]
        );
        let eff = accuracy_vs_efficiency(&rows);
        assert_eq!(eff.len(), 1);
        assert_eq!(eff[0].name, "accuracy_vs_macs");
        assert_eq!(eff[0].panels[0].series[0].label, "dense");
        assert_eq!(eff[0].panels[0].series[0].points[0].x, 100.0);
    }
}
