//! The paper layout: one block per model; rows method × sparsity (dense first; calibration size
//! in the label when a sweep has several); columns datasets in manifest order, plus the mean over
//! datasets. Cells are one metric (top-1 accuracy in percent by default, or an efficiency
//! column), averaged over seeds; `–` where missing.

use super::collect::{Row, RowStatus};
use crate::manifest::Reference;

/// What a pivot's cells show.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metric {
    /// The table column.
    pub name: &'static str,
    pub title: &'static str,
    /// Cells are `scale · value` with `decimals` decimals.
    scale: f64,
    decimals: usize,
}

/// The metrics a pivot can show.
pub const METRICS: &[Metric] = &[
    Metric {
        name: "image_to_text_r1",
        title: "image→text R@1 (%)",
        scale: 100.0,
        decimals: 2,
    },
    Metric {
        name: "text_to_image_r1",
        title: "text→image R@1 (%)",
        scale: 100.0,
        decimals: 2,
    },
    Metric {
        name: "r_mean",
        title: "retrieval R mean (%)",
        scale: 100.0,
        decimals: 2,
    },
    Metric {
        name: "retrain_image_to_text_r1",
        title: "image→text R@1 after retraining (%)",
        scale: 100.0,
        decimals: 2,
    },
    Metric {
        name: "retrain_text_to_image_r1",
        title: "text→image R@1 after retraining (%)",
        scale: 100.0,
        decimals: 2,
    },
    Metric {
        name: "retrain_r_mean",
        title: "retrieval R mean after retraining (%)",
        scale: 100.0,
        decimals: 2,
    },
    Metric {
        name: "top1",
        title: "zero-shot top-1 (%)",
        scale: 100.0,
        decimals: 2,
    },
    Metric {
        name: "retrain_best_top1",
        title: "top-1 after retraining (%)",
        scale: 100.0,
        decimals: 2,
    },
    Metric {
        name: "loss",
        title: "zero-shot cross-entropy",
        scale: 1.0,
        decimals: 4,
    },
    Metric {
        name: "params_nonzero",
        title: "non-zero parameters (M)",
        scale: 1e-6,
        decimals: 2,
    },
    Metric {
        name: "vision_macs",
        title: "vision MACs per image (G)",
        scale: 1e-9,
        decimals: 3,
    },
    Metric {
        name: "mac_fraction",
        title: "vision MACs (% of dense)",
        scale: 100.0,
        decimals: 1,
    },
    Metric {
        name: "latency_ms",
        title: "latency, batch 1 (ms)",
        scale: 1.0,
        decimals: 2,
    },
    Metric {
        name: "throughput",
        title: "throughput (images/s)",
        scale: 1.0,
        decimals: 1,
    },
    Metric {
        name: "speedup",
        title: "throughput speed-up over dense (×)",
        scale: 1.0,
        decimals: 2,
    },
];

impl Metric {
    pub fn named(name: &str) -> Option<Metric> {
        METRICS.iter().copied().find(|m| m.name == name)
    }

    fn value(&self, r: &Row) -> Option<f64> {
        r.metric(self.name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PivotFormat {
    Markdown,
    Latex,
}

/// One model's pivot: a header and rows of formatted cells (`–` where missing).
pub struct Block {
    pub model: String,
    pub header: Vec<String>,
    pub body: Vec<Vec<String>>,
}

/// The pivot of `rows` for `metric`, one block per model. A cell with a published number
/// (`references`) shows it and the difference: `70.10 (paper 71.00, −0.90)`.
pub fn blocks(rows: &[Row], metric: Metric, references: &[Reference]) -> Vec<Block> {
    let models = ordered(rows.iter().map(|r| r.model.clone()));
    let datasets = ordered(rows.iter().map(|r| r.dataset.clone()));
    let several_sizes = ordered(rows.iter().filter_map(|r| r.calibration_size)).len() > 1;
    let mut out = Vec::new();
    for model in models {
        let mine: Vec<&Row> = rows.iter().filter(|r| r.model == model).collect();
        let labels = ordered(mine.iter().map(|r| label(r, several_sizes)));
        let mut header = vec!["method".to_string(), "sparsity".to_string()];
        header.extend(datasets.iter().cloned());
        header.push("mean".into());
        let mut body: Vec<Vec<String>> = Vec::new();
        for (method, sparsity) in &labels {
            let mut cells = vec![method.clone(), sparsity.clone()];
            let mut values = Vec::new();
            for d in &datasets {
                let accs: Vec<f64> = mine
                    .iter()
                    .filter(|r| {
                        &r.dataset == d
                            && label(r, several_sizes) == (method.clone(), sparsity.clone())
                            && r.status == RowStatus::Done
                    })
                    .filter_map(|r| metric.value(r))
                    .collect();
                let published = mine
                    .iter()
                    .find(|r| {
                        &r.dataset == d
                            && label(r, several_sizes) == (method.clone(), sparsity.clone())
                    })
                    .and_then(|r| reference(references, r, metric.name));
                let mut cell = if accs.is_empty() {
                    "–".to_string()
                } else {
                    let mean = metric.scale * accs.iter().sum::<f64>() / accs.len() as f64;
                    values.push(mean);
                    format!("{mean:.*}", metric.decimals)
                };
                if let Some(p) = published {
                    let diff = values
                        .last()
                        .filter(|_| !accs.is_empty())
                        .map(|ours| format!(", {:+.*}", metric.decimals, ours - p.value))
                        .unwrap_or_default();
                    cell = format!("{cell} (paper {:.*}{diff})", metric.decimals, p.value);
                }
                cells.push(cell);
            }
            // The mean is only meaningful over every dataset.
            cells.push(if values.len() == datasets.len() {
                let mean = values.iter().sum::<f64>() / values.len() as f64;
                format!("{mean:.*}", metric.decimals)
            } else {
                "–".into()
            });
            body.push(cells);
        }
        out.push(Block {
            model,
            header,
            body,
        });
    }
    out
}

/// The published number for a row's point and `metric`, if the manifest gives one.
pub fn reference<'a>(references: &'a [Reference], r: &Row, metric: &str) -> Option<&'a Reference> {
    references.iter().find(|p| {
        p.metric == metric
            && p.model == r.model
            && p.dataset == r.dataset
            && p.method == r.method
            && (p.sparsity.to_string() == r.sparsity || r.method == "dense")
    })
}

/// Whether any row has a value for `metric` (a pivot of nothing is not shown).
pub fn has(rows: &[Row], metric: Metric) -> bool {
    rows.iter().any(|r| metric.value(r).is_some())
}

/// Renders the pivot of `rows` in `format`.
pub fn render(
    rows: &[Row],
    format: PivotFormat,
    metric: Metric,
    references: &[Reference],
) -> String {
    let mut out = String::new();
    for Block {
        model,
        header,
        body,
    } in blocks(rows, metric, references)
    {
        match format {
            PivotFormat::Markdown => {
                out.push_str(&format!("**{model}** — {}\n\n", metric.title));
                out.push_str(&format!("| {} |\n", header.join(" | ")));
                out.push_str(&format!(
                    "|{}\n",
                    header
                        .iter()
                        .enumerate()
                        .map(|(i, _)| if i < 2 { "---|" } else { "---:|" })
                        .collect::<String>()
                ));
                for r in body {
                    out.push_str(&format!("| {} |\n", r.join(" | ")));
                }
                out.push('\n');
            }
            PivotFormat::Latex => {
                let esc = |s: &str| {
                    s.replace('_', "\\_")
                        .replace('%', "\\%")
                        .replace('&', "\\&")
                        .replace('–', "--")
                };
                out.push_str(&format!(
                    "% {model}: {}\n\\begin{{tabular}}{{ll{}}}\n\\toprule\n",
                    metric.title,
                    "r".repeat(header.len() - 2)
                ));
                out.push_str(&format!(
                    "{} \\\\\n\\midrule\n",
                    header
                        .iter()
                        .map(|h| esc(h))
                        .collect::<Vec<_>>()
                        .join(" & ")
                ));
                for r in body {
                    out.push_str(&format!(
                        "{} \\\\\n",
                        r.iter().map(|c| esc(c)).collect::<Vec<_>>().join(" & ")
                    ));
                }
                out.push_str("\\bottomrule\n\\end{tabular}\n\n");
            }
        }
    }
    out
}

fn label(r: &Row, with_size: bool) -> (String, String) {
    let method = match (with_size, r.calibration_size) {
        (true, Some(n)) => format!("{} (n={n})", r.method),
        _ => r.method.clone(),
    };
    (
        method,
        if r.method == "dense" {
            "0".into()
        } else {
            r.sparsity.clone()
        },
    )
}

/// Distinct values in first-seen order.
fn ordered<T: PartialEq>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}
