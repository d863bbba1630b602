//! A serde mirror of Hugging Face's `config.json` for CLIP (`CLIPConfig`) and for vision-only
//! checkpoints (`CLIPVisionConfig`), with transformers' defaults and its legacy
//! `text_config_dict` / `vision_config_dict` override rule (spec clip.md §3).
//!
//! Pure data, no libtorch: the planner reads it to reject a model that cannot be pruned as asked
//! (no layers, widths an n:m pattern does not divide) before anything runs, and the model
//! (`crate::model::config`, a re-export) builds its towers from it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use std::path::Path;

/// Tensors some exports carry that are no weights (position-id buffers): ignored when checked
/// and loaded.
pub fn ignored_tensor(name: &str) -> bool {
    name.ends_with("embeddings.position_ids")
}

/// A `config.json` that cannot be read or describes no usable CLIP.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Invalid {
        path: std::path::PathBuf,
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    QuickGelu,
    Gelu,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextConfig {
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub max_position_embeddings: i64,
    pub vocab_size: i64,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
    pub bos_token_id: Option<i64>,
    pub eos_token_id: Option<i64>,
    pub pad_token_id: Option<i64>,
    /// Per-layer shapes of a structurally pruned tower (`None`: every layer as above).
    pub layer_shapes: Option<Vec<LayerShape>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VisionConfig {
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub image_size: i64,
    pub patch_size: i64,
    pub num_channels: i64,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
    /// Per-layer shapes of a structurally pruned tower (`None`: every layer as above).
    pub layer_shapes: Option<Vec<LayerShape>>,
}

/// One encoder layer's shape. A structurally pruned model has its own per layer: any number of
/// attention heads (0: the attention branch adds only `out_proj`'s bias), any head dimension,
/// any MLP width (0: the MLP adds only `fc2`'s bias). `attention_scale` replaces attention's
/// `1/√head_dim` (UPop keeps the unpruned head's scale, spec §6e).
///
/// In `config.json` it is the project's extension `layer_shapes`, a list with one object per
/// layer under `vision_config` / `text_config`; transformers ignores the key and cannot load
/// such a model, whose weights have these shapes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerShape {
    pub heads: i64,
    pub head_dim: i64,
    pub intermediate_size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_scale: Option<f64>,
}

impl LayerShape {
    /// The width of the attention's inner space (`q`, `k`, `v` outputs, `out_proj` input).
    pub fn inner(&self) -> i64 {
        self.heads * self.head_dim
    }
}

/// The shape of every layer: the explicit list, or `layers` copies of the uniform shape.
fn layer_shapes(
    explicit: &Option<Vec<LayerShape>>,
    layers: i64,
    hidden: i64,
    heads: i64,
    intermediate: i64,
) -> Vec<LayerShape> {
    match explicit {
        Some(list) => list.clone(),
        None => (0..layers)
            .map(|_| LayerShape {
                heads,
                head_dim: hidden / heads,
                intermediate_size: intermediate,
                attention_scale: None,
            })
            .collect(),
    }
}

impl TextConfig {
    pub fn shapes(&self) -> Vec<LayerShape> {
        layer_shapes(
            &self.layer_shapes,
            self.num_hidden_layers,
            self.hidden_size,
            self.num_attention_heads,
            self.intermediate_size,
        )
    }
}

impl VisionConfig {
    pub fn shapes(&self) -> Vec<LayerShape> {
        layer_shapes(
            &self.layer_shapes,
            self.num_hidden_layers,
            self.hidden_size,
            self.num_attention_heads,
            self.intermediate_size,
        )
    }
}

/// An explicit shape list must have one valid entry per layer.
fn check_shapes(
    shapes: &Option<Vec<LayerShape>>,
    layers: i64,
    file: &Path,
    s: &str,
) -> Result<(), ConfigError> {
    let Some(list) = shapes else { return Ok(()) };
    let bad = |reason: String| ConfigError::Invalid {
        path: file.to_path_buf(),
        reason: format!("`{s}layer_shapes`: {reason}"),
    };
    if list.len() as i64 != layers {
        return Err(bad(format!(
            "{} entries for {layers} layers (`num_hidden_layers`)",
            list.len()
        )));
    }
    for (i, l) in list.iter().enumerate() {
        if l.heads < 0 || l.intermediate_size < 0 || (l.heads > 0 && l.head_dim < 1) {
            return Err(bad(format!(
                "layer {i} has a negative or empty shape {l:?}"
            )));
        }
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClipConfig {
    pub text: TextConfig,
    pub vision: VisionConfig,
    pub projection_dim: i64,
    pub logit_scale_init_value: f64,
}

impl Default for TextConfig {
    fn default() -> Self {
        TextConfig {
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            vocab_size: 49408,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
            bos_token_id: Some(49406),
            eos_token_id: Some(49407),
            pad_token_id: Some(1),
            layer_shapes: None,
        }
    }
}

impl Default for VisionConfig {
    fn default() -> Self {
        VisionConfig {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            image_size: 224,
            patch_size: 32,
            num_channels: 3,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
            layer_shapes: None,
        }
    }
}

impl VisionConfig {
    /// Tokens per image: patches plus CLS.
    pub fn tokens(&self) -> i64 {
        let side = self.image_size / self.patch_size;
        side * side + 1
    }
}

/// Reads an integer/float/string field into `slot` when present; type errors name the field.
fn take<T: serde::de::DeserializeOwned>(
    obj: &Map<String, Json>,
    field: &str,
    slot: &mut T,
    file: &Path,
    section: &str,
) -> Result<(), ConfigError> {
    match obj.get(field) {
        None | Some(Json::Null) => Ok(()),
        Some(v) => {
            *slot = serde_json::from_value(v.clone()).map_err(|e| ConfigError::Invalid {
                path: file.to_path_buf(),
                reason: format!("`{section}{field}`: {e}"),
            })?;
            Ok(())
        }
    }
}

fn activation(
    obj: &Map<String, Json>,
    slot: &mut Activation,
    file: &Path,
    section: &str,
) -> Result<(), ConfigError> {
    match obj.get("hidden_act").and_then(Json::as_str) {
        None => Ok(()),
        Some("quick_gelu") => {
            *slot = Activation::QuickGelu;
            Ok(())
        }
        Some("gelu") => {
            *slot = Activation::Gelu;
            Ok(())
        }
        Some(other) => Err(ConfigError::Invalid {
            path: file.to_path_buf(),
            reason: format!(
                "`{section}hidden_act` is \"{other}\"; supported: \"quick_gelu\", \"gelu\""
            ),
        }),
    }
}

/// Reads each named field of `$c` from `$obj` when present (see [`take`]).
macro_rules! take_fields {
    ($obj:expr, $c:expr, $file:expr, $s:expr; $($field:ident),+) => {
        $(take($obj, stringify!($field), &mut $c.$field, $file, $s)?;)+
    };
}

fn text_from(obj: &Map<String, Json>, file: &Path, s: &str) -> Result<TextConfig, ConfigError> {
    let mut c = TextConfig::default();
    take_fields!(obj, c, file, s; hidden_size, intermediate_size, num_hidden_layers,
        num_attention_heads, max_position_embeddings, vocab_size, layer_norm_eps, bos_token_id,
        eos_token_id, pad_token_id, layer_shapes);
    activation(obj, &mut c.hidden_act, file, s)?;
    check_layers(c.num_hidden_layers, file, s)?;
    check_heads(c.hidden_size, c.num_attention_heads, file, s)?;
    check_shapes(&c.layer_shapes, c.num_hidden_layers, file, s)?;
    Ok(c)
}

fn vision_from(obj: &Map<String, Json>, file: &Path, s: &str) -> Result<VisionConfig, ConfigError> {
    let mut c = VisionConfig::default();
    take_fields!(obj, c, file, s; hidden_size, intermediate_size, num_hidden_layers,
        num_attention_heads, image_size, patch_size, num_channels, layer_norm_eps, layer_shapes);
    activation(obj, &mut c.hidden_act, file, s)?;
    check_layers(c.num_hidden_layers, file, s)?;
    check_heads(c.hidden_size, c.num_attention_heads, file, s)?;
    check_shapes(&c.layer_shapes, c.num_hidden_layers, file, s)?;
    if c.patch_size <= 0 || c.image_size % c.patch_size != 0 {
        return Err(ConfigError::Invalid {
            path: file.to_path_buf(),
            reason: format!(
                "`{s}image_size` {} is not a multiple of `patch_size` {}",
                c.image_size, c.patch_size
            ),
        });
    }
    Ok(c)
}

fn check_layers(layers: i64, file: &Path, s: &str) -> Result<(), ConfigError> {
    if layers < 1 {
        return Err(ConfigError::Invalid {
            path: file.to_path_buf(),
            reason: format!("`{s}num_hidden_layers` is {layers}; a tower needs at least one layer"),
        });
    }
    Ok(())
}

fn check_heads(hidden: i64, heads: i64, file: &Path, s: &str) -> Result<(), ConfigError> {
    if heads <= 0 || hidden % heads != 0 {
        return Err(ConfigError::Invalid {
            path: file.to_path_buf(),
            reason: format!(
                "`{s}hidden_size` {hidden} is not divisible by `num_attention_heads` {heads}"
            ),
        });
    }
    Ok(())
}

fn read_object(path: &Path) -> Result<Map<String, Json>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    match serde_json::from_str::<Json>(&text) {
        Ok(Json::Object(m)) => Ok(m),
        Ok(_) => Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            reason: "not a JSON object".into(),
        }),
        Err(e) => Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

/// `section` merged with its legacy `*_dict` (whose entries win), as transformers does.
fn section(top: &Map<String, Json>, name: &str) -> Map<String, Json> {
    let mut merged = match top.get(name) {
        Some(Json::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    if let Some(Json::Object(legacy)) = top.get(&format!("{name}_dict")) {
        for (k, v) in legacy {
            merged.insert(k.clone(), v.clone());
        }
    }
    merged
}

impl ClipConfig {
    /// Reads a full CLIP `config.json`.
    pub fn read(path: &Path) -> Result<ClipConfig, ConfigError> {
        let top = read_object(path)?;
        if let Some(kind) = top.get("model_type").and_then(Json::as_str)
            && kind != "clip"
        {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                reason: format!(
                    "model_type is \"{kind}\", expected \"clip\" (a vision-only checkpoint goes in the model's `vision` key)"
                ),
            });
        }
        let mut projection_dim = 512;
        let mut logit_scale_init_value = 2.6592;
        take(&top, "projection_dim", &mut projection_dim, path, "")?;
        take(
            &top,
            "logit_scale_init_value",
            &mut logit_scale_init_value,
            path,
            "",
        )?;
        Ok(ClipConfig {
            text: text_from(&section(&top, "text_config"), path, "text_config.")?,
            vision: vision_from(&section(&top, "vision_config"), path, "vision_config.")?,
            projection_dim,
            logit_scale_init_value,
        })
    }

    /// Reads a vision-only checkpoint's `config.json` (`CLIPVisionConfig`, or a full CLIP config
    /// whose vision section is used).
    pub fn read_vision(path: &Path) -> Result<VisionConfig, ConfigError> {
        let top = read_object(path)?;
        if top.get("model_type").and_then(Json::as_str) == Some("clip") {
            return vision_from(&section(&top, "vision_config"), path, "vision_config.");
        }
        vision_from(&top, path, "")
    }

    /// Every tensor a checkpoint of this configuration holds, with its shape (HF names). The
    /// planner checks checkpoint headers against it; `tests/clip_loading.rs` checks it against
    /// the variables the model builds.
    pub fn tensor_shapes(&self) -> std::collections::BTreeMap<String, Vec<i64>> {
        let mut out = std::collections::BTreeMap::new();
        let mut put = |name: String, shape: Vec<i64>| {
            out.insert(name, shape);
        };
        let encoder =
            |put: &mut dyn FnMut(String, Vec<i64>), p: &str, d: i64, shapes: &[LayerShape]| {
                for (i, s) in shapes.iter().enumerate() {
                    let l = format!("{p}encoder.layers.{i}.");
                    let (inner, f) = (s.inner(), s.intermediate_size);
                    for proj in ["q_proj", "k_proj", "v_proj"] {
                        put(format!("{l}self_attn.{proj}.weight"), vec![inner, d]);
                        put(format!("{l}self_attn.{proj}.bias"), vec![inner]);
                    }
                    put(format!("{l}self_attn.out_proj.weight"), vec![d, inner]);
                    put(format!("{l}self_attn.out_proj.bias"), vec![d]);
                    put(format!("{l}mlp.fc1.weight"), vec![f, d]);
                    put(format!("{l}mlp.fc1.bias"), vec![f]);
                    put(format!("{l}mlp.fc2.weight"), vec![d, f]);
                    put(format!("{l}mlp.fc2.bias"), vec![d]);
                    for ln in ["layer_norm1", "layer_norm2"] {
                        put(format!("{l}{ln}.weight"), vec![d]);
                        put(format!("{l}{ln}.bias"), vec![d]);
                    }
                }
            };
        let (v, t) = (&self.vision, &self.text);
        let (vd, td) = (v.hidden_size, t.hidden_size);
        let vp = "vision_model.";
        put(format!("{vp}embeddings.class_embedding"), vec![vd]);
        put(
            format!("{vp}embeddings.patch_embedding.weight"),
            vec![vd, v.num_channels, v.patch_size, v.patch_size],
        );
        put(
            format!("{vp}embeddings.position_embedding.weight"),
            vec![v.tokens(), vd],
        );
        for ln in ["pre_layrnorm", "post_layernorm"] {
            put(format!("{vp}{ln}.weight"), vec![vd]);
            put(format!("{vp}{ln}.bias"), vec![vd]);
        }
        encoder(&mut put, vp, vd, &v.shapes());
        let tp = "text_model.";
        put(
            format!("{tp}embeddings.token_embedding.weight"),
            vec![t.vocab_size, td],
        );
        put(
            format!("{tp}embeddings.position_embedding.weight"),
            vec![t.max_position_embeddings, td],
        );
        put(format!("{tp}final_layer_norm.weight"), vec![td]);
        put(format!("{tp}final_layer_norm.bias"), vec![td]);
        encoder(&mut put, tp, td, &t.shapes());
        put(
            "visual_projection.weight".into(),
            vec![self.projection_dim, vd],
        );
        put(
            "text_projection.weight".into(),
            vec![self.projection_dim, td],
        );
        put("logit_scale".into(), vec![]);
        out
    }

    /// The `config.json` transformers writes for this configuration.
    pub fn to_json(&self) -> Json {
        serde_json::json!({
            "architectures": ["CLIPModel"],
            "model_type": "clip",
            "projection_dim": self.projection_dim,
            "logit_scale_init_value": self.logit_scale_init_value,
            "initializer_factor": 1.0,
            "torch_dtype": "float32",
            "text_config": text_json(&self.text),
            "vision_config": vision_json(&self.vision),
        })
    }
}

fn act_name(a: Activation) -> &'static str {
    match a {
        Activation::QuickGelu => "quick_gelu",
        Activation::Gelu => "gelu",
    }
}

fn text_json(t: &TextConfig) -> Json {
    with_shapes(
        &t.layer_shapes,
        serde_json::json!({
            "model_type": "clip_text_model",
            "hidden_size": t.hidden_size,
            "intermediate_size": t.intermediate_size,
            "num_hidden_layers": t.num_hidden_layers,
            "num_attention_heads": t.num_attention_heads,
            "max_position_embeddings": t.max_position_embeddings,
            "vocab_size": t.vocab_size,
            "hidden_act": act_name(t.hidden_act),
            "layer_norm_eps": t.layer_norm_eps,
            "bos_token_id": t.bos_token_id,
            "eos_token_id": t.eos_token_id,
            "pad_token_id": t.pad_token_id,
            "projection_dim": Json::Null,
        }),
    )
}

/// Adds `layer_shapes` to a tower's config object when the tower has per-layer shapes.
fn with_shapes(shapes: &Option<Vec<LayerShape>>, mut json: Json) -> Json {
    if let Some(list) = shapes {
        json["layer_shapes"] = serde_json::to_value(list).expect("shapes serialise");
    }
    json
}

/// The `config.json` of a vision-only checkpoint (`CLIPVisionModel`).
pub fn vision_json(v: &VisionConfig) -> Json {
    with_shapes(
        &v.layer_shapes,
        serde_json::json!({
            "architectures": ["CLIPVisionModel"],
            "model_type": "clip_vision_model",
            "hidden_size": v.hidden_size,
            "intermediate_size": v.intermediate_size,
            "num_hidden_layers": v.num_hidden_layers,
            "num_attention_heads": v.num_attention_heads,
            "image_size": v.image_size,
            "patch_size": v.patch_size,
            "num_channels": v.num_channels,
            "hidden_act": act_name(v.hidden_act),
            "layer_norm_eps": v.layer_norm_eps,
            "torch_dtype": "float32",
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(json: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        std::fs::write(&p, json).unwrap();
        (dir, p)
    }

    #[test]
    fn defaults_are_vit_b32() {
        let (_d, p) = write(r#"{"model_type": "clip"}"#);
        let c = ClipConfig::read(&p).unwrap();
        assert_eq!(c.vision.tokens(), 50);
        assert_eq!(c.text.hidden_size, 512);
        assert_eq!(c.projection_dim, 512);
    }

    #[test]
    fn legacy_dict_overrides_section() {
        let (_d, p) = write(
            r#"{"text_config": {"hidden_size": 64, "num_attention_heads": 4},
                "text_config_dict": {"hidden_size": 128},
                "vision_config_dict": null}"#,
        );
        let c = ClipConfig::read(&p).unwrap();
        assert_eq!(c.text.hidden_size, 128);
        assert_eq!(c.text.num_attention_heads, 4);
    }

    #[test]
    fn bad_fields_name_the_field() {
        let (_d, p) = write(r#"{"vision_config": {"hidden_act": "relu"}}"#);
        let e = ClipConfig::read(&p).unwrap_err().to_string();
        assert!(e.contains("vision_config.hidden_act"), "{e}");
        let (_d, p) = write(r#"{"vision_config": {"patch_size": "big"}}"#);
        let e = ClipConfig::read(&p).unwrap_err().to_string();
        assert!(e.contains("vision_config.patch_size"), "{e}");
        let (_d, p) = write(r#"{"text_config": {"num_hidden_layers": 0}}"#);
        let e = ClipConfig::read(&p).unwrap_err().to_string();
        assert!(e.contains("`text_config.num_hidden_layers` is 0"), "{e}");
    }

    #[test]
    fn per_layer_shapes_round_trip_and_are_checked() {
        let mut c = ClipConfig {
            text: TextConfig::default(),
            vision: VisionConfig::default(),
            projection_dim: 512,
            logit_scale_init_value: 2.6592,
        };
        let mut shapes = c.vision.shapes();
        assert_eq!(shapes.len(), 12);
        assert_eq!((shapes[0].heads, shapes[0].head_dim), (12, 64));
        shapes[3].heads = 0;
        shapes[5].intermediate_size = 0;
        shapes[7].head_dim = 40;
        shapes[7].attention_scale = Some(0.125);
        c.vision.layer_shapes = Some(shapes.clone());
        let (_d, p) = write(&c.to_json().to_string());
        let read = ClipConfig::read(&p).unwrap();
        assert_eq!(read, c);
        assert_eq!(read.vision.shapes(), shapes);
        c.vision.layer_shapes = Some(shapes[..5].to_vec());
        let (_d, p) = write(&c.to_json().to_string());
        let e = ClipConfig::read(&p).unwrap_err().to_string();
        assert!(e.contains("5 entries for 12 layers"), "{e}");
    }

    #[test]
    fn round_trips_through_json() {
        let c = ClipConfig {
            text: TextConfig::default(),
            vision: VisionConfig::default(),
            projection_dim: 512,
            logit_scale_init_value: 2.6592,
        };
        let (_d, p) = write(&c.to_json().to_string());
        assert_eq!(ClipConfig::read(&p).unwrap(), c);
        let (_d, p) = write(&vision_json(&c.vision).to_string());
        assert_eq!(ClipConfig::read_vision(&p).unwrap(), c.vision);
    }
}
