//! New randomly initialised CLIP models in HF layout (`config.json`, `model.safetensors`,
//! `tokenizer.json`, `tokenizer_config.json`, `preprocessor_config.json`): the demo's tiny model
//! and random-weight copies of the OpenAI architectures for benchmarks. The tokenizer is a
//! CLIP-format BPE trained on the project's prompts (every built-in class name and template, and
//! the synthetic dataset's class names).

use super::config::{ClipConfig, TextConfig, VisionConfig};
use super::tokenizer::build_tokenizer;
use super::{Clip, ModelError};
use crate::data::Prompts;
use crate::data::synthetic::Synthetic;
use std::path::Path;

pub const PRESETS: &[&str] = &["tiny", "vit-b32", "vit-b16", "vit-l14"];

/// The configuration of a preset; `vocab_size` is filled from the tokenizer for `tiny`.
pub fn preset(name: &str) -> Option<ClipConfig> {
    let openai = |vision: VisionConfig, text: TextConfig, projection_dim| ClipConfig {
        vision,
        text,
        projection_dim,
        logit_scale_init_value: 2.6592,
    };
    Some(match name {
        "tiny" => openai(
            VisionConfig {
                hidden_size: 64,
                intermediate_size: 256,
                num_hidden_layers: 3,
                num_attention_heads: 4,
                image_size: 32,
                patch_size: 8,
                ..VisionConfig::default()
            },
            TextConfig {
                hidden_size: 64,
                intermediate_size: 256,
                num_hidden_layers: 2,
                num_attention_heads: 4,
                ..TextConfig::default()
            },
            64,
        ),
        "vit-b32" => openai(VisionConfig::default(), TextConfig::default(), 512),
        "vit-b16" => openai(
            VisionConfig {
                patch_size: 16,
                ..VisionConfig::default()
            },
            TextConfig::default(),
            512,
        ),
        "vit-l14" => openai(
            VisionConfig {
                hidden_size: 1024,
                intermediate_size: 4096,
                num_hidden_layers: 24,
                num_attention_heads: 16,
                patch_size: 14,
                ..VisionConfig::default()
            },
            TextConfig {
                hidden_size: 768,
                intermediate_size: 3072,
                num_attention_heads: 12,
                ..TextConfig::default()
            },
            768,
        ),
        _ => return None,
    })
}

/// Every prompt the project knows: built-in datasets' and the synthetic classes'.
pub fn prompt_corpus() -> Vec<String> {
    let mut corpus = Vec::new();
    for name in Prompts::builtin_names() {
        let p = Prompts::builtin(name).expect("listed");
        for c in 0..p.classnames.len() {
            corpus.extend(p.class_prompts(c));
        }
    }
    let synthetic = Synthetic {
        classes: 120,
        image_size: 8,
        seed: 0,
    };
    for name in synthetic.classnames() {
        corpus.push(Prompts::render("a photo of a {c}.", &name));
    }
    corpus
}

/// Writes a new model to `dir`; returns its configuration.
pub fn create(dir: &Path, preset_name: &str, seed: i64) -> Result<ClipConfig, ModelError> {
    let mut config = preset(preset_name).ok_or_else(|| ModelError::Config {
        path: dir.to_path_buf(),
        reason: format!(
            "unknown preset `{preset_name}` (presets: {})",
            PRESETS.join(", ")
        ),
    })?;
    let vocab = build_tokenizer(&prompt_corpus(), config.text.vocab_size as usize, dir)?;
    let tok = super::ClipTokenizer::from_file(&dir.join("tokenizer.json"))?;
    if preset_name == "tiny" {
        config.text.vocab_size = vocab as i64;
    }
    let bos = tok.ids(&[String::new()])?[0][0] as i64;
    let eos = tok.eos_id() as i64;
    config.text.bos_token_id = Some(bos);
    config.text.eos_token_id = Some(eos);
    config.text.pad_token_id = Some(eos);
    tch::manual_seed(seed);
    let model = Clip::new(&config, tch::Device::Cpu);
    model.save(dir)?;
    let size = config.vision.image_size;
    let pre = serde_json::json!({
        "image_processor_type": "CLIPImageProcessor",
        "do_resize": true,
        "size": {"shortest_edge": size},
        "resample": 3,
        "do_center_crop": true,
        "crop_size": {"height": size, "width": size},
        "do_rescale": true,
        "rescale_factor": 1.0 / 255.0,
        "do_normalize": true,
        "image_mean": crate::data::preprocess::OPENAI_MEAN,
        "image_std": crate::data::preprocess::OPENAI_STD,
        "do_convert_rgb": true,
    });
    let path = dir.join("preprocessor_config.json");
    crate::util::fsx::write_atomic(
        &path,
        serde_json::to_string_pretty(&pre).expect("json").as_bytes(),
    )
    .map_err(|e| ModelError::Io { path, source: e })?;
    Ok(config)
}
