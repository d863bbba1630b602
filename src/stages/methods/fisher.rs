//! Fisher retraining-free structured pruning (spec structured-and-analysis.md §3, project
//! decisions §6a/6b/6e/6f): whole attention heads and MLP neurons of a tower under a MAC budget
//! (the grid's `sparsity` is the fraction of the tower's MACs removed, `c = 1 − sparsity`), on
//! samples drawn with replacement from the training split by the point's seed (or an explicit
//! index list). The loss is the ETH port's symmetric InfoNCE against the unpruned model's
//! embeddings of the paired captions on a retrieval dataset, or the cross-entropy of the
//! zero-shot logits on a classification dataset. The artifact is the physically smaller model's
//! kept units; the stage checks that model against the masked one on its own samples.

use super::{Method, decode};
use crate::data::{Preprocessor, loader};
use crate::manifest::params::int;
use crate::manifest::schema::{
    DefaultValue, MethodInput, MethodSpec, ParamType, PointCheck, Problem, SparsityAxis,
    TOWER_CHOICES, Towers, TypedParams,
};
use crate::manifest::types::Sparsity;
use crate::model::layerwise::{self, Tower};
use crate::model::{Clip, zeroshot};
use crate::prune::artifact::Kind;
use crate::prune::fisher::{
    self, Objective, OnFailure, Pool, Samples, Settings, Target, Teacher, TowerPrune, Tuning,
    search::Feasibility,
};
use crate::stages::StageError;
use crate::stages::context::{self, Dataset};
use crate::stages::prune::{Pruned, Pruning, StructuredTower};
use crate::util::clip_config::ClipConfig;
use crate::util::macs;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value as Json, json};
use tch::{Kind as DType, Tensor};

crate::params! {
    pub struct Params {
        /// which towers are pruned, each to the same MAC fraction (the text tower needs a retrieval dataset)
        towers: Towers = (TOWER_CHOICES, DefaultValue::Str("vision")),
        /// training samples, drawn with replacement by the point's seed
        num_samples: usize = (int(1, 1 << 24), DefaultValue::Int(8192)),
        /// samples per gradient batch (one Fisher sample per batch)
        batch_size: usize = (int(1, 1 << 16), DefaultValue::Int(32)),
        /// explicit training-split indices (repeats allowed), replacing the seeded draw: a list or a file
        indices: Option<Vec<u64>> = (ParamType::IndexList { repeats: true }, DefaultValue::Derived),
        /// tokens of the MAC model; default: from the config ((image_size / patch_size)² + 1; the text context length)
        mac_tokens: Option<i64> = (int(1, 1 << 20), DefaultValue::Derived),
        /// `project` skips head counts over the budget; `reference` reproduces the reference's over-budget results
        feasibility: Feasibility = (ParamType::Choice(&["project", "reference"]), DefaultValue::Str("project")),
        /// per-layer greedy rearrangement of the searched masks
        rearrange: bool = (ParamType::Bool, DefaultValue::Bool(true)),
        /// layer-wise least-squares mask tuning
        tune: bool = (ParamType::Bool, DefaultValue::Bool(true)),
        /// the tuning teacher: the unpruned model (ETH) or binary masks searched at √c (KW)
        teacher: Teacher = (ParamType::Choice(&["full", "sqrt"]), DefaultValue::Str("full")),
        /// attention target: teacher output plus the residual difference (ETH HEAD), or the branch alone (early ETH)
        attention_target: Target = (ParamType::Choice(&["residual", "branch"]), DefaultValue::Str("residual")),
        /// MLP target, as `attention_target`
        mlp_target: Target = (ParamType::Choice(&["residual", "branch"]), DefaultValue::Str("residual")),
        /// also tune layer 0's head scales (ETH 8cd50ab; HEAD skips them)
        tune_first_layer_heads: bool = (ParamType::Bool, DefaultValue::Bool(false)),
        /// after a failed solve: keep going (ETH) or stop tuning, also on a scale outside ±10 (KW)
        on_failure: OnFailure = (ParamType::Choice(&["continue", "stop"]), DefaultValue::Str("continue")),
        /// samples on which the physical model is checked against the masked model
        check_samples: usize = (int(1, 1 << 20), DefaultValue::Int(256)),
    }
}

pub const METHOD: Method = Method {
    spec: MethodSpec {
        name: "fisher",
        doc: "Fisher retraining-free structured pruning of heads and MLP neurons under a MAC budget (sparsity = fraction of the tower's MACs removed); a physically smaller model",
        params: Params::SPECS,
        inputs: &[MethodInput::TrainingSplit],
        sparsity: SparsityAxis::MacsRemoved,
        check: Some(check),
    },
    artifact: Kind::Structured,
    prune,
};

fn towers_of(params: &serde_json::Map<String, Json>) -> Vec<Tower> {
    let set = match params.get("towers").and_then(Json::as_str) {
        Some("both") => Towers::Both,
        Some("text") => Towers::Text,
        _ => Towers::Vision,
    };
    context::towers(set)
}

/// The MAC model's token count for a tower: the config's, unless the manifest sets one.
pub fn tokens(config: &ClipConfig, tower: Tower, explicit: Option<i64>) -> i64 {
    explicit.unwrap_or(match tower {
        Tower::Vision => config.vision.tokens(),
        Tower::Text => config.text.max_position_embeddings,
    })
}

/// `(layers, heads, head_dim, neurons, width)` of a tower with one layer shape, or why not.
pub fn uniform(config: &ClipConfig, tower: Tower) -> Result<(i64, i64, i64, i64, i64), String> {
    let (shapes, d) = match tower {
        Tower::Vision => (config.vision.shapes(), config.vision.hidden_size),
        Tower::Text => (config.text.shapes(), config.text.hidden_size),
    };
    let first = shapes.first().cloned().ok_or("the tower has no layers")?;
    if shapes.iter().any(|s| s != &first) {
        return Err("its layers differ in shape (already structurally pruned)".into());
    }
    if first.heads == 0 {
        return Err("it has no attention heads to prune".into());
    }
    Ok((
        shapes.len() as i64,
        first.heads,
        first.head_dim,
        first.intermediate_size,
        d,
    ))
}

/// Plan-time: a tower the method can prune, a budget that holds at least one head, a dataset
/// with captions for the text tower.
fn check(p: &PointCheck) -> Result<(), Problem> {
    let Sparsity::Fraction(sparsity) = p.sparsity else {
        return Err(Problem {
            message: "Fisher pruning reads `sparsity` as the fraction of MACs removed, not an n:m pattern".into(),
            hint: "give fractions in [grid] sparsity for this method".into(),
        });
    };
    let explicit = p.params.get("mac_tokens").and_then(Json::as_i64);
    for tower in towers_of(p.params) {
        if tower == Tower::Text && !p.retrieval {
            return Err(Problem {
                message: "the text tower is pruned on captions, and this dataset has classes".into(),
                hint: "set `towers = \"vision\"` for classification datasets, or use a retrieval dataset".into(),
            });
        }
        let (layers, heads, head_dim, neurons, d) =
            uniform(p.model, tower).map_err(|why| Problem {
                message: format!("the {} tower cannot be pruned: {why}", tower.name()),
                hint: "start from the unpruned model".into(),
            })?;
        let cost = macs::unit_cost(tokens(p.model, tower, explicit), d, head_dim);
        let full = macs::encoder(cost, layers * heads, layers * neurons);
        let most = 1.0 - cost.head as f64 / full as f64;
        if 1.0 - sparsity < cost.head as f64 / full as f64 {
            return Err(Problem {
                message: format!(
                    "sparsity {sparsity} leaves the {} tower {:.0} MACs, less than one attention head ({} MACs)",
                    tower.name(),
                    (1.0 - sparsity) * full as f64,
                    cost.head
                ),
                hint: format!("the most this tower can lose is {most:.4} of its MACs"),
            });
        }
    }
    Ok(())
}

/// The training-split samples: indices (drawn with replacement, or listed) into the split's
/// pairs (captions of a retrieval set, images of a classification set).
fn draw(len: usize, params: &Params, seed: u64) -> Result<Vec<usize>, StageError> {
    match &params.indices {
        Some(list) => {
            let out: Vec<usize> = list.iter().map(|&i| i as usize).collect();
            match out.iter().find(|&&i| i >= len) {
                Some(bad) => Err(StageError::Failed(format!(
                    "method `fisher`: index {bad} is outside the training split ({len} samples); fix `indices`"
                ))),
                None => Ok(out),
            }
        }
        None => {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            Ok((0..params.num_samples)
                .map(|_| rng.random_range(0..len))
                .collect())
        }
    }
}

/// Preprocessed pixels of samples at some positions of the draw.
type Decode = dyn Fn(&[usize]) -> Result<Vec<f32>, crate::data::DataError> + Sync + Send;

/// What the samples are: pixels per sample (decoded on demand), and their captions or labels.
struct Drawn {
    /// `f(positions)`: preprocessed pixels of those samples.
    images: Box<Decode>,
    captions: Option<Vec<String>>,
    labels: Option<Vec<i64>>,
    prompts: Option<crate::data::Prompts>,
}

fn drawn(p: &Pruning, params: &Params, pre: Preprocessor) -> Result<(Drawn, usize), StageError> {
    let seed = p.job.params["seed"].as_u64().unwrap_or(0);
    if p.job.params["dataset"]["kind"].as_str() == Some("retrieval") {
        let set = context::retrieval_set(p.job, true)?;
        let pairs: Vec<(usize, &String)> = set
            .captions
            .iter()
            .enumerate()
            .flat_map(|(i, caps)| caps.iter().map(move |c| (i, c)))
            .collect();
        if pairs.is_empty() {
            return Err(StageError::Failed(
                "the retrieval training split has no captions".into(),
            ));
        }
        let picks = draw(pairs.len(), params, seed)?;
        let images: Vec<usize> = picks.iter().map(|&k| pairs[k].0).collect();
        let captions = picks.iter().map(|&k| pairs[k].1.clone()).collect();
        let n = picks.len();
        Ok((
            Drawn {
                images: Box::new(move |pos: &[usize]| {
                    let idx: Vec<usize> = pos.iter().map(|&q| images[q]).collect();
                    pre.batch(&idx, |i| set.image(i))
                }),
                captions: Some(captions),
                labels: None,
                prompts: None,
            },
            n,
        ))
    } else {
        let dataset = Dataset::from_job(p.job)?;
        let (mut set, prompts) = dataset.open_labels(true)?;
        let picks = draw(set.len(), params, seed)?;
        let mut unique = picks.clone();
        unique.sort_unstable();
        unique.dedup();
        set.load(&unique)?;
        let labels = picks.iter().map(|&i| set.label(i)).collect();
        let n = picks.len();
        Ok((
            Drawn {
                images: Box::new(move |pos: &[usize]| {
                    let idx: Vec<usize> = pos.iter().map(|&q| picks[q]).collect();
                    pre.batch(&idx, |i| set.image(i))
                }),
                captions: None,
                labels: Some(labels),
                prompts: Some(prompts),
            },
            n,
        ))
    }
}

fn prune(p: &Pruning, params: &Json) -> Result<Pruned, StageError> {
    let params: Params = decode("fisher", params)?;
    let model = &p.model;
    let device = model.vs.device();
    let sparsity = p.fraction()?;
    let towers = context::towers(params.towers);
    let pre = context::preprocessor(p.job, model)?;
    let (drawn, n) = drawn(p, &params, pre.clone())?;
    let tokenizer = context::tokenizer(p.job)?;
    let needs_vision = towers.contains(&Tower::Vision);
    let needs_text = towers.contains(&Tower::Text);

    // Layer-0 inputs of the vision tower and the unpruned image embeddings, decoded in batches.
    let guard = tch::no_grad_guard();
    let order: Vec<usize> = (0..n).collect();
    let mut vision_x = Vec::new();
    let mut image_emb = Vec::new();
    loader::pipeline(
        &loader::chunks(&order, layerwise::CHUNK as usize),
        |chunk| (drawn.images)(chunk).map(|px| (chunk.len(), px)),
        |(len, px): (usize, Vec<f32>)| -> Result<(), StageError> {
            let pixels = context::pixels(&px, len, &pre, device, DType::Float);
            let x = model.vision.embed(&pixels);
            if needs_text {
                image_emb.push(zeroshot::normalize(&model.image_features(&pixels)));
            }
            if needs_vision {
                vision_x.push(x);
            }
            Ok(())
        },
    )?;
    drop(guard);
    let text = match &drawn.captions {
        Some(captions) => Some(tokenizer.encode(captions, device)?),
        None => None,
    };
    let settings = |tower: Tower| Settings {
        constraint: 1.0 - sparsity,
        feasibility: params.feasibility,
        tokens: tokens(&model.config, tower, params.mac_tokens),
        batch: params.batch_size as i64,
        rearrange: params.rearrange,
        tuning: params.tune.then_some(Tuning {
            teacher: params.teacher,
            attention_target: params.attention_target,
            mlp_target: params.mlp_target,
            first_layer_heads: params.tune_first_layer_heads,
            on_failure: params.on_failure,
        }),
    };
    let mut results = Vec::new();
    for tower in towers {
        let (samples, objective) = match tower {
            Tower::Vision => {
                let samples = Samples {
                    inputs: layerwise::TowerInputs {
                        x: Tensor::cat(&vision_x, 0),
                        mask: None,
                    },
                    valid: None,
                    pool: Pool::Vision,
                };
                let objective = match (&text, &drawn.labels, &drawn.prompts) {
                    (Some(tokens), _, _) => Objective::Contrastive {
                        targets: text_embeddings(model, tokens),
                        scale: model.logit_scale.exp().double_value(&[]),
                    },
                    (None, Some(labels), Some(prompts)) => Objective::ZeroShot {
                        head: zeroshot::head(model, &tokenizer, prompts)?,
                        labels: Tensor::from_slice(labels).to_device(device),
                    },
                    _ => unreachable!("a drawn sample set has captions or labels"),
                };
                vision_x.clear();
                (samples, objective)
            }
            Tower::Text => {
                let tokens = text.as_ref().ok_or_else(|| {
                    StageError::Failed(
                        "method `fisher`: the text tower is pruned on captions; this dataset has none (set `towers = \"vision\"`)"
                            .into(),
                    )
                })?;
                let inputs = layerwise::token_inputs(model, tokens);
                let samples = Samples {
                    inputs,
                    valid: Some(tokens.mask.ne(0)),
                    pool: Pool::Text {
                        eos: tokens.eos.shallow_clone(),
                    },
                };
                let objective = Objective::Contrastive {
                    targets: Tensor::cat(&image_emb, 0).detach(),
                    scale: model.logit_scale.exp().double_value(&[]),
                };
                (samples, objective)
            }
        };
        let pruned = fisher::prune_tower(model, tower, &samples, &objective, &settings(tower))?;
        let check = params.check_samples.min(n) as i64;
        let checked = Samples {
            inputs: layerwise::TowerInputs {
                x: samples.inputs.x.narrow(0, 0, check),
                mask: samples.inputs.mask.as_ref().map(|m| m.narrow(0, 0, check)),
            },
            valid: None,
            pool: match &samples.pool {
                Pool::Vision => Pool::Vision,
                Pool::Text { eos } => Pool::Text {
                    eos: eos.narrow(0, 0, check),
                },
            },
        };
        results.push(tower_result(model, pruned, &checked)?);
    }
    Ok(Pruned::Structured {
        towers: results,
        attention_scale: Default::default(),
        trained: None,
        extra: json!({ "samples": n, "drawn": params.indices.is_none() }),
    })
}

/// Unit-norm text embeddings of the captions, in chunks.
fn text_embeddings(model: &Clip, tokens: &crate::model::TokenBatch) -> Tensor {
    let _g = tch::no_grad_guard();
    let parts: Vec<Tensor> = layerwise::ranges(tokens.ids.size()[0], layerwise::CHUNK)
        .map(|(s, b)| zeroshot::normalize(&model.text_features(&tokens.narrow(s, b))))
        .collect();
    Tensor::cat(&parts, 0)
}

/// The MAC model's account of masks on a tower: unit costs, full and kept MACs, per-layer
/// counts.
fn mac_record(cost: macs::UnitCost, tokens: i64, heads: &Tensor, neurons: &Tensor) -> Json {
    let (layers, h) = heads.size2().unwrap_or((0, 0));
    let i = neurons.size().get(1).copied().unwrap_or(0);
    let full = macs::encoder(cost, layers * h, layers * i);
    let kept = fisher::masked_macs(cost, heads, neurons);
    let per_layer = |m: &Tensor| -> Vec<i64> {
        Vec::<i64>::try_from(m.ne(0.0).sum_dim_intlist(1, false, DType::Int64)).unwrap_or_default()
    };
    json!({
        "mac_tokens": tokens,
        "mac_per_head": cost.head,
        "mac_per_neuron": cost.neuron,
        "full_macs": full,
        "kept_macs": kept,
        "mac_fraction": kept as f64 / full.max(1) as f64,
        "heads_per_layer": per_layer(heads),
        "neurons_per_layer": per_layer(neurons),
    })
}

/// A pruned tower's units and record, after checking the physical model against the masked one.
fn tower_result(
    model: &Clip,
    t: TowerPrune,
    checked: &Samples,
) -> Result<StructuredTower, StageError> {
    let tokens = t.cost.neuron / (2 * hidden(model, t.tower));
    let mut record = mac_record(t.cost, tokens, &t.heads, &t.neurons);
    let extra = json!({
        "search": {
            "heads": t.selection.kept_heads,
            "neurons": t.selection.kept_neurons,
            "importance": t.selection.importance,
            "macs": t.selection.macs,
        },
        "teacher": t.teacher.as_ref().map(|s| json!({"heads": s.kept_heads, "neurons": s.kept_neurons, "macs": s.macs})),
        "tuning": t.tuning,
        "failed_solves": t.tuning.iter().filter(|s| s.failure.is_some()).count(),
        "seconds": t.phases,
        "batches": t.batches,
    });
    context::merge(&mut record, extra);
    StructuredTower::checked(model, t.tower, t.heads, t.neurons, checked, record)
}

crate::params! {
    pub struct StoredParams {
        /// a safetensors file with `head_mask` [L, H] and `neuron_mask` [L, I] (0 = pruned, else the kept unit's scale), relative to the manifest
        file: Option<String> = (ParamType::File, DefaultValue::Derived),
        /// the tower the masks apply to
        tower: Tower = (ParamType::Choice(&["vision", "text"]), DefaultValue::Str("vision")),
    }
}

pub const STORED: Method = Method {
    spec: MethodSpec {
        name: "stored-masks",
        doc: "head and neuron masks computed elsewhere (the ETH Fisher layout), applied as a physically smaller model; sparsity is ignored",
        params: StoredParams::SPECS,
        inputs: &[],
        sparsity: SparsityAxis::DataDriven,
        check: Some(check_stored),
    },
    artifact: Kind::Structured,
    prune: prune_stored,
};

fn stored_tower(params: &serde_json::Map<String, Json>) -> Tower {
    match params.get("tower").and_then(Json::as_str) {
        Some("text") => Tower::Text,
        _ => Tower::Vision,
    }
}

/// Plan-time: a file is named and its masks fit the tower.
fn check_stored(p: &PointCheck) -> Result<(), Problem> {
    let Some(file) = p.params.get("file").and_then(Json::as_str) else {
        return Err(Problem {
            message: "no mask file: set `file`".into(),
            hint: "add `file = \"masks.safetensors\"` to [methods.stored-masks] (relative to the manifest)".into(),
        });
    };
    let tower = stored_tower(p.params);
    let (layers, heads, _, neurons, _) = uniform(p.model, tower).map_err(|why| Problem {
        message: format!("the {} tower cannot take masks: {why}", tower.name()),
        hint: "start from the unpruned model".into(),
    })?;
    fisher::stored::check_header(std::path::Path::new(file), layers, heads, neurons).map_err(
        |why| Problem {
            message: format!("{file}: {why}"),
            hint: format!(
                "the file must hold `head_mask` [{layers}, {heads}] and `neuron_mask` [{layers}, {neurons}] for this model's {} tower",
                tower.name()
            ),
        },
    )
}

/// Fixed inputs for the physical-vs-masked check of masks that come with no data: seeded
/// random images, or a few captions.
fn probe(p: &Pruning, tower: Tower) -> Result<Samples, StageError> {
    let model = &p.model;
    let device = model.vs.device();
    Ok(match tower {
        Tower::Vision => {
            let size = model.config.vision.image_size;
            let pixels = Tensor::randn([8, 3, size, size], (DType::Float, tch::Device::Cpu));
            Samples {
                inputs: layerwise::pixel_inputs(model, &pixels.to_device(device)),
                valid: None,
                pool: Pool::Vision,
            }
        }
        Tower::Text => {
            let captions: Vec<String> = [
                "a photo of a cat.",
                "two dogs play in the snow",
                "a red car parked near a tree",
                "x",
            ]
            .map(str::to_string)
            .to_vec();
            let tokens = context::tokenizer(p.job)?.encode(&captions, device)?;
            Samples {
                inputs: layerwise::token_inputs(model, &tokens),
                valid: Some(tokens.mask.ne(0)),
                pool: Pool::Text {
                    eos: tokens.eos.shallow_clone(),
                },
            }
        }
    })
}

fn prune_stored(p: &Pruning, params: &Json) -> Result<Pruned, StageError> {
    let params: StoredParams = decode("stored-masks", params)?;
    let file = params.file.as_deref().ok_or_else(|| {
        StageError::Failed("method `stored-masks` needs `file`; re-plan the manifest".into())
    })?;
    let file = std::path::Path::new(file);
    let tower = params.tower;
    let model = &p.model;
    let (layers, heads, _, neurons, _) = uniform(&model.config, tower).map_err(|why| {
        StageError::Failed(format!(
            "the {} tower cannot take masks: {why}",
            tower.name()
        ))
    })?;
    let (head_mask, neuron_mask) = fisher::stored::read(file, layers, heads, neurons)?;
    let tokens = tokens(&model.config, tower, None);
    let head_dim = fisher::uniform_shape(model, tower)?.head_dim;
    let cost = macs::unit_cost(tokens, hidden(model, tower), head_dim);
    let mut record = mac_record(cost, tokens, &head_mask, &neuron_mask);
    context::merge(&mut record, json!({ "file": file }));
    tch::manual_seed(0);
    let samples = probe(p, tower)?;
    let t = StructuredTower::checked(model, tower, head_mask, neuron_mask, &samples, record)?;
    Ok(Pruned::Structured {
        towers: vec![t],
        attention_scale: Default::default(),
        trained: None,
        extra: json!({}),
    })
}

fn hidden(model: &Clip, tower: Tower) -> i64 {
    match tower {
        Tower::Vision => model.config.vision.hidden_size,
        Tower::Text => model.config.text.hidden_size,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declaration_decodes() {
        crate::manifest::params::check_declaration::<Params>().unwrap();
        crate::manifest::params::check_declaration::<StoredParams>().unwrap();
    }

    #[test]
    fn plan_time_checks() {
        let config = crate::model::create::preset("vit-b32").unwrap();
        let params = serde_json::Map::new();
        let point = |sparsity, retrieval, params| PointCheck {
            model: &config,
            sparsity: Sparsity::Fraction(sparsity),
            params,
            retrieval,
        };
        assert!(check(&point(0.5, false, &params)).is_ok());
        // One head of ViT-B/32 is 10,150,400 of 4,292,812,800 MACs.
        let e = check(&point(0.999, false, &params)).unwrap_err();
        assert!(e.message.contains("less than one attention head"), "{e:?}");
        assert!(e.hint.contains("0.9976"), "{e:?}");
        let mut text = serde_json::Map::new();
        text.insert("towers".into(), json!("both"));
        assert!(
            check(&point(0.5, false, &text))
                .unwrap_err()
                .message
                .contains("captions")
        );
        assert!(check(&point(0.5, true, &text)).is_ok());
    }
}
