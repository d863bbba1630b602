//! `orchestrate export`: one computed grid point's model as a complete Hugging Face CLIP
//! directory (config, safetensors weights with the prune applied, tokenizer and preprocessing
//! files of the base model), loadable by transformers' `CLIPModel.from_pretrained`. A structured
//! prune exports at full size with its pruned units zeroed and its scales folded (the same
//! outputs), or with `--physical` as the smaller model in the project's per-layer-shape format.

use super::{CliError, Loaded, exit, io_context, load};
use crate::cache::{Lookup, Reason, State};
use crate::manifest::GridPoint;
use crate::plan::NodeId;
use crate::plan::{JobSpec, StageKind};
use crate::prune::artifact;
use crate::stages::context;
use std::path::Path;

/// Files of the base model directory that travel with an export.
const COMPANIONS: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "preprocessor_config.json",
];

/// Which grid point to export.
pub struct Selector {
    pub model: String,
    pub dataset: String,
    pub method: String,
    pub sparsity: String,
    pub calibration_size: Option<u32>,
    pub seed: Option<u64>,
}

impl Selector {
    fn matches(&self, p: &GridPoint) -> bool {
        let sparsity = p.sparsity.to_string() == self.sparsity
            || matches!(
                (self.sparsity.parse::<f64>(), p.sparsity),
                (Ok(a), crate::manifest::Sparsity::Fraction(b)) if a == b
            );
        p.model == self.model
            && p.dataset == self.dataset
            && p.method == self.method
            && sparsity
            && self
                .calibration_size
                .is_none_or(|n| n == p.calibration_size)
            && self.seed.is_none_or(|s| s == p.seed)
    }
}

fn describe(p: &GridPoint) -> String {
    format!(
        "--model {} --dataset {} --method {} --sparsity {} --calibration-size {} --seed {}",
        p.model, p.dataset, p.method, p.sparsity, p.calibration_size, p.seed
    )
}

pub fn run(
    results: &Path,
    manifest: &Path,
    select: &Selector,
    out: &Path,
    force: bool,
    physical: bool,
) -> Result<i32, CliError> {
    let l = load(results, manifest, false)?;
    let found: Vec<usize> = (0..l.exp.points.len())
        .filter(|&i| select.matches(&l.exp.points[i]))
        .collect();
    let index = match found.as_slice() {
        [one] => *one,
        [] => {
            return Err(CliError::Usage(format!(
                "{}: no grid point matches --model {} --dataset {} --method {} --sparsity {}{}",
                manifest.display(),
                select.model,
                select.dataset,
                select.method,
                select.sparsity,
                l.exp
                    .points
                    .first()
                    .map_or(String::new(), |p| format!(" (e.g. {})", describe(p)))
            )));
        }
        many => {
            return Err(CliError::Usage(format!(
                "{}: {} grid points match; add --calibration-size and --seed to pick one of: {}",
                manifest.display(),
                many.len(),
                many.iter()
                    .take(4)
                    .map(|&i| describe(&l.exp.points[i]))
                    .collect::<Vec<_>>()
                    .join("; ")
            )));
        }
    };
    let nodes = &l.plan.points[index];
    let eval = nodes.evaluate.expect("every point is evaluated");
    let node = &l.plan.nodes[eval];
    if out.exists()
        && std::fs::read_dir(out)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
        && !force
    {
        return Err(CliError::Usage(format!(
            "{} exists and is not empty; choose another --out or pass --force",
            out.display()
        )));
    }
    let recomputed = recompute_evicted(&l, results, manifest, &node.upstream)?;
    let job = JobSpec::new(&l.plan, node, results);
    let model = if physical {
        context::load_model(&job, &l.cache, tch::Device::Cpu)?
    } else {
        // transformers needs one shape per tower: structured prunes export at full size.
        let mut model = context::load_dense(&job, &l.cache, tch::Device::Cpu)?;
        for up in job.upstream.iter().filter(|u| u.kind == StageKind::Prune) {
            artifact::apply_full_size(&mut model, &l.cache.artifacts_dir(&up.key))?;
        }
        model
    };
    model.save(out)?;
    let base = context::base_dir(&job)?;
    for name in COMPANIONS {
        let src = base.join(name);
        if src.is_file() {
            std::fs::copy(&src, out.join(name))
                .map_err(io_context(format!("cannot copy {}", src.display())))?;
        }
    }
    // Recomputed only for this export: the retention policy drops them again.
    for key in recomputed {
        if let Lookup::Done(record) = l.cache.lookup(&key, false) {
            let _ = l.cache.evict_transient(&record);
        }
    }
    println!(
        "wrote {} ({})",
        out.display(),
        describe(&l.exp.points[index])
    );
    Ok(exit::OK)
}

/// Makes the model nodes in `wanted` (and everything they read) available: an entry whose
/// transient artifacts the retention policy dropped is recomputed; one never computed is an
/// error. Returns the keys recomputed.
fn recompute_evicted(
    l: &Loaded,
    results: &Path,
    manifest: &Path,
    wanted: &[NodeId],
) -> Result<Vec<String>, CliError> {
    let mut states = vec![State::Cached; l.plan.nodes.len()];
    let mut stack = wanted.to_vec();
    let mut recompute = Vec::new();
    while let Some(id) = stack.pop() {
        let n = &l.plan.nodes[id];
        match l.cache.lookup(&n.key, false) {
            Lookup::Done(_) => {}
            Lookup::Evicted(_) if states[id] == State::Cached => {
                states[id] = State::Run(Reason::Evicted);
                recompute.push(n.key.clone());
                stack.extend(n.upstream.iter().copied());
            }
            Lookup::Evicted(_) => {}
            _ => {
                return Err(CliError::Usage(format!(
                    "{}: `{}` is not computed yet; run `orchestrate run {}` first",
                    manifest.display(),
                    n.label,
                    manifest.display()
                )));
            }
        }
    }
    if recompute.is_empty() {
        return Ok(recompute);
    }
    println!(
        "recomputing {} stage(s) whose weights were dropped (keep_pruned = false)",
        recompute.len()
    );
    let (summary, run_dir) = super::run::execute(l, results, &states, 0, false, true)?;
    if summary.failed > 0 || summary.interrupted {
        return Err(CliError::Stage(crate::stages::StageError::Failed(format!(
            "recomputing the dropped weights failed; see the logs in {}",
            run_dir.display()
        ))));
    }
    Ok(recompute)
}
