//! `results/<experiment>/report.html`: one self-contained file (no network, no other file):
//! the pivots of every metric the table holds and every point as sortable tables, the figures
//! (SVG as data URIs, so their internal ids cannot collide), every failed or pending point with
//! its error and log, and provenance — versions, devices and hosts from the records, time per
//! stage kind, and the manifest itself.
//!
//! The page's script sorts a table when a header is clicked (numbers as numbers, `–` last).
//! Opened with `#selftest`, it also checks itself — every table sorts, every figure decoded, no
//! script error — and writes the verdict into `<pre id="selftest">`, which a headless browser
//! can read back.

use super::figures::Figure;
use crate::manifest::Reference;
use crate::tables::pivot::{self, Metric};
use crate::tables::{Row, RowStatus};
use base64::Engine;
use std::fmt::Write;

/// Time spent per stage kind.
pub struct StageTime {
    pub kind: String,
    pub count: usize,
    pub seconds: f64,
    /// The slowest stage of the kind and its seconds.
    pub slowest: (String, f64),
}

/// Where and with what the results were computed (distinct values over the records).
#[derive(Default)]
pub struct Provenance {
    pub versions: Vec<String>,
    pub revisions: Vec<String>,
    pub libraries: Vec<String>,
    pub devices: Vec<String>,
    pub hosts: Vec<String>,
}

pub struct ReportData<'a> {
    pub experiment: &'a str,
    pub description: Option<&'a str>,
    pub manifest_path: &'a str,
    pub manifest_text: &'a str,
    pub generated: String,
    pub rows: &'a [Row],
    /// Published numbers for points of the grid.
    pub references: &'a [Reference],
    /// Each figure with its SVG.
    pub figures: &'a [(Figure, String)],
    pub times: &'a [StageTime],
    pub provenance: &'a Provenance,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn table(out: &mut String, caption: &str, header: &[String], body: &[Vec<String>]) {
    let _ = write!(
        out,
        "<table class=\"sortable\"><caption>{}</caption><thead><tr>",
        esc(caption)
    );
    for h in header {
        let _ = write!(out, "<th scope=\"col\" tabindex=\"0\">{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    for row in body {
        out.push_str("<tr>");
        for c in row {
            let _ = write!(out, "<td>{}</td>", esc(c));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>\n");
}

fn cell(v: Option<f64>, scale: f64, decimals: usize) -> String {
    v.map_or("–".into(), |v| format!("{:.*}", decimals, scale * v))
}

/// The report's pivots: accuracy first, then every efficiency measurement present.
const PIVOTS: [&str; 14] = [
    "top1",
    "retrain_best_top1",
    "image_to_text_r1",
    "text_to_image_r1",
    "r_mean",
    "retrain_image_to_text_r1",
    "retrain_text_to_image_r1",
    "retrain_r_mean",
    "loss",
    "mac_fraction",
    "params_nonzero",
    "throughput",
    "latency_ms",
    "speedup",
];

pub fn render(d: &ReportData) -> String {
    let mut body = String::new();
    let _ = write!(body, "<h1>{}</h1>", esc(d.experiment));
    if let Some(desc) = d.description {
        let _ = write!(body, "<p class=\"lead\">{}</p>", esc(desc));
    }
    let done = d
        .rows
        .iter()
        .filter(|r| r.status == RowStatus::Done)
        .count();
    let failed = d
        .rows
        .iter()
        .filter(|r| r.status == RowStatus::Failed)
        .count();
    let pending = d.rows.len() - done - failed;
    let _ = write!(
        body,
        "<p>{} points: {done} done, {failed} failed, {pending} pending. Generated {} from <code>{}</code>.</p>",
        d.rows.len(),
        esc(&d.generated),
        esc(d.manifest_path)
    );
    body.push_str("<nav><a href=\"#tables\">Tables</a> · <a href=\"#figures\">Figures</a> · <a href=\"#problems\">Failed and pending</a> · <a href=\"#provenance\">Provenance</a></nav>");

    body.push_str("<section id=\"tables\"><h2>Tables</h2>");
    for name in PIVOTS {
        let metric = Metric::named(name).expect("a pivot metric");
        if !pivot::has(d.rows, metric) {
            continue;
        }
        for b in pivot::blocks(d.rows, metric, d.references) {
            table(
                &mut body,
                &format!("{} — {}", b.model, metric.title),
                &b.header,
                &b.body,
            );
        }
    }
    let header: Vec<String> = [
        "model",
        "dataset",
        "method",
        "sparsity",
        "calibration",
        "seed",
        "status",
        "top-1 (%)",
        "R@1 i→t (%)",
        "achieved sparsity",
        "MACs (% dense)",
        "speed-up",
        "prune s",
    ]
    .map(String::from)
    .to_vec();
    let points: Vec<Vec<String>> = d
        .rows
        .iter()
        .map(|r| {
            vec![
                r.model.clone(),
                r.dataset.clone(),
                r.method.clone(),
                r.sparsity.clone(),
                r.calibration_size.map_or("–".into(), |n| n.to_string()),
                r.seed.map_or("–".into(), |n| n.to_string()),
                r.status.name().into(),
                cell(r.top1, 100.0, 2),
                cell(r.retrieval[0], 100.0, 2),
                cell(r.achieved_sparsity, 1.0, 4),
                cell(r.efficiency[4], 100.0, 1),
                cell(r.efficiency[9], 1.0, 2),
                cell(r.prune_seconds, 1.0, 1),
            ]
        })
        .collect();
    table(&mut body, "Every point", &header, &points);
    if !d.references.is_empty() {
        let header = ["point", "metric", "ours", "paper", "difference", "source"].map(String::from);
        let published: Vec<Vec<String>> = d
            .references
            .iter()
            .map(|p| {
                let ours: Vec<f64> = d
                    .rows
                    .iter()
                    .filter(|r| {
                        r.status == RowStatus::Done
                            && pivot::reference(std::slice::from_ref(p), r, &p.metric).is_some()
                    })
                    .filter_map(|r| r.metric(&p.metric))
                    .collect();
                let ours = (!ours.is_empty())
                    .then(|| 100.0 * ours.iter().sum::<f64>() / ours.len() as f64);
                vec![
                    format!(
                        "{} / {} / {} @ {}",
                        p.model, p.dataset, p.method, p.sparsity
                    ),
                    p.metric.clone(),
                    cell(ours, 1.0, 2),
                    format!("{:.2}", p.value),
                    cell(ours.map(|o| o - p.value), 1.0, 2),
                    p.source.clone().unwrap_or_else(|| "–".into()),
                ]
            })
            .collect();
        table(
            &mut body,
            "Published numbers (percent)",
            &header,
            &published,
        );
    }
    body.push_str("</section>");

    body.push_str("<section id=\"figures\"><h2>Figures</h2>");
    if d.figures.is_empty() {
        body.push_str("<p>No figure yet: nothing is done.</p>");
    }
    for (f, svg) in d.figures {
        let data = base64::engine::general_purpose::STANDARD.encode(svg.as_bytes());
        let _ = write!(
            body,
            "<figure id=\"fig-{}\"><img alt=\"{}\" src=\"data:image/svg+xml;base64,{data}\"><figcaption>{}</figcaption></figure>",
            esc(&f.name),
            esc(&f.title),
            esc(&f.title)
        );
    }
    body.push_str("</section>");

    body.push_str("<section id=\"problems\"><h2>Failed and pending points</h2>");
    let problems: Vec<Vec<String>> = d
        .rows
        .iter()
        .filter(|r| r.status != RowStatus::Done)
        .map(|r| {
            vec![
                format!(
                    "{} / {} / {} @ {}",
                    r.model, r.dataset, r.method, r.sparsity
                ),
                r.status.name().into(),
                r.failed_stage.clone().unwrap_or_else(|| "–".into()),
                r.error.clone().unwrap_or_else(|| "–".into()),
                r.log
                    .as_ref()
                    .map_or("–".into(), |p| p.display().to_string()),
            ]
        })
        .collect();
    if problems.is_empty() {
        body.push_str("<p>None: every point is done.</p>");
    } else {
        let header = ["point", "status", "stage", "error", "log"].map(String::from);
        table(&mut body, "Points not done", &header, &problems);
        body.push_str(
            "<p>Run the manifest again to retry the failed points and finish the pending ones.</p>",
        );
    }
    body.push_str("</section>");

    body.push_str("<section id=\"provenance\"><h2>Provenance</h2><dl>");
    let p = d.provenance;
    for (term, values) in [
        ("orchestrate", &p.versions),
        ("git revision", &p.revisions),
        ("libraries", &p.libraries),
        ("devices", &p.devices),
        ("hosts", &p.hosts),
    ] {
        let shown = if values.is_empty() {
            "–".to_string()
        } else {
            values.join(", ")
        };
        let _ = write!(body, "<dt>{term}</dt><dd>{}</dd>", esc(&shown));
    }
    body.push_str("</dl>");
    let times: Vec<Vec<String>> = d
        .times
        .iter()
        .map(|t| {
            vec![
                t.kind.clone(),
                t.count.to_string(),
                format!("{:.1}", t.seconds),
                format!("{} ({:.1} s)", t.slowest.0, t.slowest.1),
            ]
        })
        .collect();
    let header = ["stage", "computed", "seconds", "slowest"].map(String::from);
    table(&mut body, "Time per stage kind", &header, &times);
    let _ = write!(
        body,
        "<details><summary>The manifest ({})</summary><pre>{}</pre></details></section>",
        esc(d.manifest_path),
        esc(d.manifest_text)
    );

    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>{} — orchestrate report</title><style>{STYLE}</style></head><body>{body}<pre id=\"selftest\" hidden></pre><script>{SCRIPT}</script></body></html>\n",
        esc(d.experiment)
    )
}

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}\
h1{margin-bottom:.2em}.lead{color:#555}nav{margin:1em 0}table{border-collapse:collapse;margin:1em 0;font-variant-numeric:tabular-nums}\
caption{text-align:left;font-weight:600;padding:.3em 0}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}\
th:first-child,td:first-child,th:nth-child(2),td:nth-child(2){text-align:left}th{background:#f3f3f3;cursor:pointer;user-select:none}\
th[aria-sort=ascending]::after{content:' ▲'}th[aria-sort=descending]::after{content:' ▼'}\
figure{margin:1.5em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{color:#555}dt{font-weight:600}dd{margin:0 0 .5em 1em}\
pre{background:#f6f6f6;padding:1em;overflow:auto}";

const SCRIPT: &str = r#"
'use strict';
const errors = [];
window.addEventListener('error', e => errors.push(String(e.message)));
window.addEventListener('unhandledrejection', e => errors.push(String(e.reason)));
const consoleError = console.error.bind(console);
console.error = (...args) => { errors.push(args.map(String).join(' ')); consoleError(...args); };
function key(text) {
  const t = text.trim();
  if (t === '–' || t === '') return null;
  const n = Number(t.replace(/[^0-9eE.+-]/g, ''));
  return /^[-+]?[0-9]/.test(t) && !Number.isNaN(n) ? n : t.toLowerCase();
}
function compare(a, b, dir) {
  if (a === null) return b === null ? 0 : 1;
  if (b === null) return -1;
  if (typeof a !== typeof b) return (typeof a === 'number' ? -1 : 1) * dir;
  return (a < b ? -1 : a > b ? 1 : 0) * dir;
}
function sortBy(table, col, dir) {
  const body = table.tBodies[0];
  const rows = Array.from(body.rows);
  rows.sort((r, s) => compare(key(r.cells[col].textContent), key(s.cells[col].textContent), dir));
  rows.forEach(r => body.appendChild(r));
  Array.from(table.tHead.rows[0].cells).forEach((th, i) =>
    th.setAttribute('aria-sort', i === col ? (dir > 0 ? 'ascending' : 'descending') : 'none'));
}
for (const table of document.querySelectorAll('table.sortable')) {
  Array.from(table.tHead.rows[0].cells).forEach((th, col) => {
    const go = () => sortBy(table, col, th.getAttribute('aria-sort') === 'ascending' ? -1 : 1);
    th.addEventListener('click', go);
    th.addEventListener('keydown', e => { if (e.key === 'Enter') go(); });
  });
}
function sorted(table, col, dir) {
  const keys = Array.from(table.tBodies[0].rows).map(r => key(r.cells[col].textContent));
  return keys.every((k, i) => i === 0 || compare(keys[i - 1], k, dir) <= 0);
}
async function selftest() {
  const out = [];
  const images = Array.from(document.images);
  await Promise.all(images.map(img => img.decode().catch(() => null)));
  for (const img of images) {
    if (!(img.complete && img.naturalWidth > 0)) out.push('figure not rendered: ' + img.alt);
  }
  document.querySelectorAll('table.sortable').forEach((table, t) => {
    const cols = table.tHead.rows[0].cells.length;
    for (let col = 0; col < cols; col++) {
      for (const dir of [1, -1]) {
        sortBy(table, col, dir);
        if (!sorted(table, col, dir)) out.push('table ' + t + ' column ' + col + ' not sorted');
      }
    }
    table.tHead.rows[0].cells[cols - 1].click();
    if (!sorted(table, cols - 1, 1)) out.push('table ' + t + ': a click did not sort');
  });
  out.push(...errors.map(e => 'console error: ' + e));
  const pre = document.getElementById('selftest');
  pre.textContent = (out.length ? out.join('\n') : 'ok') +
    '\nfigures=' + images.length + ' tables=' + document.querySelectorAll('table.sortable').length;
  pre.hidden = false;
}
if (location.hash === '#selftest') selftest();
"#;
