//! The paper layout: one block per model; rows method × sparsity (dense first; calibration size
//! in the label when a sweep has several); columns datasets in manifest order, plus the mean over
//! datasets. Cells are one metric (top-1 accuracy in percent by default, or an efficiency
//! column), averaged over seeds; `–` where missing.

use super::collect::{EFFICIENCY, Row, RowStatus};

/// What a pivot's cells show.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metric {
    /// The table column.
    pub name: &'static str,
    title: &'static str,
    /// Cells are `scale · value` with `decimals` decimals.
    scale: f64,
    decimals: usize,
}

/// The metrics a pivot can show.
pub const METRICS: &[Metric] = &[
    Metric {
        name: "top1",
        title: "zero-shot top-1 (%)",
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
        match self.name {
            "top1" => r.top1,
            "loss" => r.loss,
            name => EFFICIENCY
                .iter()
                .position(|e| *e == name)
                .and_then(|i| r.efficiency[i]),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PivotFormat {
    Markdown,
    Latex,
}

/// Renders the pivot of `rows` in `format`.
pub fn render(rows: &[Row], format: PivotFormat, metric: Metric) -> String {
    let mut out = String::new();
    let models = ordered(rows.iter().map(|r| r.model.clone()));
    let datasets = ordered(rows.iter().map(|r| r.dataset.clone()));
    let several_sizes = ordered(rows.iter().filter_map(|r| r.calibration_size)).len() > 1;
    for model in &models {
        let mine: Vec<&Row> = rows.iter().filter(|r| &r.model == model).collect();
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
                if accs.is_empty() {
                    cells.push("–".into());
                } else {
                    let mean = metric.scale * accs.iter().sum::<f64>() / accs.len() as f64;
                    values.push(mean);
                    cells.push(format!("{mean:.*}", metric.decimals));
                }
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
                    "r".repeat(datasets.len() + 1)
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
