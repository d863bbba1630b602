//! The CLIP network (spec clip.md §5): pre-LN encoder layers shared by both towers, the vision
//! tower with CLS pooling, the text tower with causal + padding attention and EOS pooling.
//!
//! The patch embedding runs as a matmul over unfolded patches (stride = kernel), which keeps
//! cuDNN and its TF32 setting out of the numerics. Attention uses libtorch's fused
//! `scaled_dot_product_attention`; its internal `d^-1/2` scaling equals HF's scaling of `Q`
//! after the bias up to rounding.

use super::ModelError;
use super::config::{Activation, ClipConfig, LayerShape, TextConfig, VisionConfig};
use super::tokenizer::TokenBatch;
use super::weights;
use std::path::Path;
use tch::nn::{self, Init, Module};
use tch::{Device, Kind, Tensor};

/// `x · σ(1.702 x)`. The sigmoid runs in place on its temporary (the activation is a layer's
/// widest tensor); autograd saves only its output, which nothing changes afterwards.
pub fn quick_gelu(x: &Tensor) -> Tensor {
    x * (x * 1.702).sigmoid_()
}

/// Quick-GELU or exact GELU, per the tower's `hidden_act`.
fn activate(x: &Tensor, act: Activation) -> Tensor {
    match act {
        Activation::QuickGelu => quick_gelu(x),
        Activation::Gelu => x.gelu("none"),
    }
}

fn linear(p: nn::Path, d_in: i64, d_out: i64, bias: bool) -> nn::Linear {
    nn::linear(
        p,
        d_in,
        d_out,
        nn::LinearConfig {
            ws_init: Init::Randn {
                mean: 0.0,
                stdev: (d_in as f64).powf(-0.5),
            },
            bs_init: bias.then_some(Init::Const(0.0)),
            bias,
        },
    )
}

/// A Linear whose input may have no features left (a layer pruned to no heads or no neurons):
/// then its output is its bias, never what a product with an empty inner dimension returns.
fn project(l: &nn::Linear, x: &Tensor) -> Tensor {
    if l.ws.size()[1] > 0 {
        return l.forward(x);
    }
    let mut shape = x.size();
    *shape.last_mut().expect("a batch of rows") = l.ws.size()[0];
    let zeros = x.new_zeros(shape.as_slice(), (x.kind(), x.device()));
    match &l.bs {
        Some(b) => zeros + b,
        None => zeros,
    }
}

fn layer_norm(p: nn::Path, d: i64, eps: f64) -> nn::LayerNorm {
    nn::layer_norm(
        p,
        vec![d],
        nn::LayerNormConfig {
            eps,
            ..Default::default()
        },
    )
}

fn embedding(p: nn::Path, n: i64, d: i64, stdev: f64) -> nn::Embedding {
    nn::embedding(
        p,
        n,
        d,
        nn::EmbeddingConfig {
            ws_init: Init::Randn { mean: 0.0, stdev },
            ..Default::default()
        },
    )
}

/// Multi-head self-attention with HF's projection names, of any head count and dimension.
#[derive(Debug)]
pub struct Attention {
    pub k_proj: nn::Linear,
    pub v_proj: nn::Linear,
    pub q_proj: nn::Linear,
    pub out_proj: nn::Linear,
    pub heads: i64,
    pub head_dim: i64,
    /// Replaces `1/√head_dim` (a structurally pruned head keeps its unpruned scale).
    pub scale: Option<f64>,
}

impl Attention {
    fn new(p: nn::Path, d: i64, shape: &LayerShape) -> Self {
        let inner = shape.inner();
        Attention {
            k_proj: linear(&p / "k_proj", d, inner, true),
            v_proj: linear(&p / "v_proj", d, inner, true),
            q_proj: linear(&p / "q_proj", d, inner, true),
            out_proj: linear(&p / "out_proj", inner, d, true),
            heads: shape.heads,
            head_dim: shape.head_dim,
            scale: shape.attention_scale,
        }
    }

    /// The merged per-head context (the input of `out_proj`), `[B, T, heads · head_dim]`. With
    /// no heads it is empty, and the branch adds only `out_proj`'s bias.
    pub fn context(&self, a: &Tensor, mask: Option<&Tensor>) -> Tensor {
        self.context_gated(a, mask, None)
    }

    /// [`Attention::context`] with UPop's ζ_a (`[head_dim]`, shared by all heads) multiplying
    /// q, k and v per head dimension (spec structured-and-analysis.md §4.1).
    pub fn context_gated(
        &self,
        a: &Tensor,
        mask: Option<&Tensor>,
        dims: Option<&Tensor>,
    ) -> Tensor {
        let (b, t, _) = a.size3().expect("attention input is [B, T, D]");
        if self.heads == 0 {
            return a.new_zeros([b, t, 0], (a.kind(), a.device()));
        }
        let split = |x: Tensor| {
            let x = x.view([b, t, self.heads, self.head_dim]).transpose(1, 2);
            match dims {
                Some(z) => x * z.to_kind(a.kind()),
                None => x,
            }
        };
        let q = split(self.q_proj.forward(a));
        let k = split(self.k_proj.forward(a));
        let v = split(self.v_proj.forward(a));
        Tensor::scaled_dot_product_attention(&q, &k, &v, mask, 0.0, false, self.scale, false)
            .transpose(1, 2)
            .reshape([b, t, self.heads * self.head_dim])
    }

    /// `out_proj` of a context (only its bias when no heads are left).
    pub fn project(&self, context: &Tensor) -> Tensor {
        project(&self.out_proj, context)
    }

    pub fn forward(&self, a: &Tensor, mask: Option<&Tensor>) -> Tensor {
        self.project(&self.context(a, mask))
    }
}

#[derive(Debug)]
pub struct Mlp {
    pub fc1: nn::Linear,
    pub fc2: nn::Linear,
    pub act: Activation,
}

impl Mlp {
    /// The activated hidden layer (the input of `fc2`), `[B, T, F]`.
    pub fn hidden(&self, m: &Tensor) -> Tensor {
        activate(&self.fc1.forward(m), self.act)
    }

    /// The activation applied to `fc1`'s output.
    pub fn activation(&self, z: &Tensor) -> Tensor {
        activate(z, self.act)
    }

    /// [`Mlp::hidden`] with UPop's ζ_m (`[F]`) multiplying `fc1`'s output before the activation.
    pub fn hidden_gated(&self, m: &Tensor, neurons: Option<&Tensor>) -> Tensor {
        match neurons {
            Some(z) => activate(&(self.fc1.forward(m) * z.to_kind(m.kind())), self.act),
            None => self.hidden(m),
        }
    }

    /// `fc2` of the hidden layer (only its bias when no neurons are left).
    pub fn output(&self, hidden: &Tensor) -> Tensor {
        project(&self.fc2, hidden)
    }
}

/// UPop's trainable masks of one layer (spec structured-and-analysis.md §0.3, §4.1): `dims`
/// `[head_dim]` scales q, k and v per head dimension, shared by all heads; `neurons` `[F]`
/// scales `fc1`'s output before the activation.
#[derive(Debug, Clone, Copy)]
pub struct Gates<'a> {
    pub dims: &'a Tensor,
    pub neurons: &'a Tensor,
}

/// The gates of layer `i`, if any.
fn gate<'a>(gates: Option<&'a [Gates<'a>]>, i: usize) -> Option<Gates<'a>> {
    gates.map(|g| g[i])
}

/// One pre-LN encoder layer (spec §5.1).
#[derive(Debug)]
pub struct EncoderLayer {
    pub self_attn: Attention,
    pub layer_norm1: nn::LayerNorm,
    pub mlp: Mlp,
    pub layer_norm2: nn::LayerNorm,
}

impl EncoderLayer {
    fn new(p: nn::Path, d: i64, shape: &LayerShape, act: Activation, eps: f64) -> Self {
        let f = shape.intermediate_size;
        EncoderLayer {
            self_attn: Attention::new(&p / "self_attn", d, shape),
            layer_norm1: layer_norm(&p / "layer_norm1", d, eps),
            mlp: Mlp {
                fc1: linear(&p / "mlp" / "fc1", d, f, true),
                fc2: linear(&p / "mlp" / "fc2", f, d, true),
                act,
            },
            layer_norm2: layer_norm(&p / "layer_norm2", d, eps),
        }
    }

    pub fn forward(&self, h: &Tensor, mask: Option<&Tensor>) -> Tensor {
        self.forward_gated(h, mask, None)
    }

    /// [`EncoderLayer::forward`] under UPop's ζ of this layer.
    pub fn forward_gated(&self, h: &Tensor, mask: Option<&Tensor>, gates: Option<Gates>) -> Tensor {
        let a = self.layer_norm1.forward(h);
        let context = self
            .self_attn
            .context_gated(&a, mask, gates.map(|g| g.dims));
        let h = h + self.self_attn.project(&context);
        let m = self.layer_norm2.forward(&h);
        &h + self
            .mlp
            .output(&self.mlp.hidden_gated(&m, gates.map(|g| g.neurons)))
    }

    /// The six linear layers in HF registration order (spec §4), with their names within the
    /// layer.
    pub fn linears(&self) -> [(&'static str, &nn::Linear); 6] {
        [
            ("self_attn.k_proj", &self.self_attn.k_proj),
            ("self_attn.v_proj", &self.self_attn.v_proj),
            ("self_attn.q_proj", &self.self_attn.q_proj),
            ("self_attn.out_proj", &self.self_attn.out_proj),
            ("mlp.fc1", &self.mlp.fc1),
            ("mlp.fc2", &self.mlp.fc2),
        ]
    }
}

/// The `encoder.layers.{i}` stack of a tower, one layer per shape.
fn encoder(
    p: &nn::Path,
    d: i64,
    shapes: &[LayerShape],
    act: Activation,
    eps: f64,
) -> Vec<EncoderLayer> {
    shapes
        .iter()
        .enumerate()
        .map(|(i, shape)| {
            EncoderLayer::new(p / "encoder" / "layers" / i as i64, d, shape, act, eps)
        })
        .collect()
}

#[derive(Debug)]
pub struct VisionTower {
    pub config: VisionConfig,
    pub class_embedding: Tensor,
    /// `[D, C, P, P]`, no bias.
    pub patch_embedding: Tensor,
    pub position_embedding: nn::Embedding,
    pub pre_layrnorm: nn::LayerNorm,
    pub layers: Vec<EncoderLayer>,
    pub post_layernorm: nn::LayerNorm,
}

impl VisionTower {
    fn new(p: nn::Path, c: &VisionConfig) -> Self {
        let d = c.hidden_size;
        let e = &p / "embeddings";
        let std = (d as f64).powf(-0.5);
        VisionTower {
            class_embedding: e.var(
                "class_embedding",
                &[d],
                Init::Randn {
                    mean: 0.0,
                    stdev: std,
                },
            ),
            patch_embedding: (&e / "patch_embedding").var(
                "weight",
                &[d, c.num_channels, c.patch_size, c.patch_size],
                Init::Randn {
                    mean: 0.0,
                    stdev: ((c.num_channels * c.patch_size * c.patch_size) as f64).powf(-0.5),
                },
            ),
            position_embedding: embedding(&e / "position_embedding", c.tokens(), d, std),
            pre_layrnorm: layer_norm(&p / "pre_layrnorm", d, c.layer_norm_eps),
            layers: encoder(&p, d, &c.shapes(), c.hidden_act, c.layer_norm_eps),
            post_layernorm: layer_norm(&p / "post_layernorm", d, c.layer_norm_eps),
            config: c.clone(),
        }
    }

    /// Patch + CLS + position embeddings and `pre_layrnorm`: the input of encoder layer 0.
    pub fn embed(&self, pixels: &Tensor) -> Tensor {
        let c = &self.config;
        let (b, ch, hgt, wid) = pixels.size4().expect("pixels are [B, C, H, W]");
        let p = c.patch_size;
        let (gh, gw) = (hgt / p, wid / p);
        // Unfold into [B·N, C·P·P] in (channel, row, column) order, the weight's flatten order.
        let patches = pixels
            .view([b, ch, gh, p, gw, p])
            .permute([0, 2, 4, 1, 3, 5])
            .reshape([b, gh * gw, ch * p * p]);
        let w = self.patch_embedding.view([c.hidden_size, ch * p * p]);
        let tokens = patches.matmul(&w.tr());
        let cls = self
            .class_embedding
            .to_kind(tokens.kind())
            .view([1, 1, c.hidden_size])
            .expand([b, 1, c.hidden_size], false);
        let h = Tensor::cat(&[cls, tokens], 1) + &self.position_embedding.ws;
        self.pre_layrnorm.forward(&h)
    }

    /// Post-LayerNorm of the CLS token of the last hidden state.
    pub fn pool(&self, h: &Tensor) -> Tensor {
        self.post_layernorm.forward(&h.select(1, 0))
    }

    pub fn forward(&self, pixels: &Tensor) -> Tensor {
        self.forward_gated(pixels, None)
    }

    /// [`VisionTower::forward`] under UPop's ζ (one [`Gates`] per layer).
    pub fn forward_gated(&self, pixels: &Tensor, gates: Option<&[Gates]>) -> Tensor {
        let mut h = self.embed(pixels);
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward_gated(&h, None, gate(gates, i));
        }
        self.pool(&h)
    }
}

#[derive(Debug)]
pub struct TextTower {
    pub config: TextConfig,
    pub token_embedding: nn::Embedding,
    pub position_embedding: nn::Embedding,
    pub layers: Vec<EncoderLayer>,
    pub final_layer_norm: nn::LayerNorm,
}

impl TextTower {
    fn new(p: nn::Path, c: &TextConfig) -> Self {
        let d = c.hidden_size;
        let e = &p / "embeddings";
        TextTower {
            token_embedding: embedding(&e / "token_embedding", c.vocab_size, d, 0.02),
            position_embedding: embedding(
                &e / "position_embedding",
                c.max_position_embeddings,
                d,
                0.01,
            ),
            layers: encoder(&p, d, &c.shapes(), c.hidden_act, c.layer_norm_eps),
            final_layer_norm: layer_norm(&p / "final_layer_norm", d, c.layer_norm_eps),
            config: c.clone(),
        }
    }

    /// Token + position embeddings: the input of encoder layer 0, `[B, L, D]`.
    pub fn embed(&self, ids: &Tensor) -> Tensor {
        let l = ids.size()[1];
        let pos = self.position_embedding.ws.narrow(0, 0, l);
        self.token_embedding.forward(ids) + pos
    }

    /// The attention visibility for a batch (spec §5.5): key `k` is visible to query `q` iff
    /// `k ≤ q` and `k` is not padding. Boolean `[B, 1, L, L]`, true = attend.
    pub fn attention_mask(tokens: &TokenBatch) -> Tensor {
        let (b, l) = tokens.ids.size2().expect("ids are [B, L]");
        let causal = Tensor::ones([l, l], (Kind::Bool, tokens.ids.device())).tril(0);
        let keys = tokens.mask.ne(0).view([b, 1, 1, l]);
        causal.view([1, 1, l, l]).logical_and(&keys)
    }

    /// Final LayerNorm at each sequence's first EOS (spec §5.4).
    pub fn pool(&self, h: &Tensor, tokens: &TokenBatch) -> Tensor {
        self.final_layer_norm.forward(&Self::eos_rows(h, tokens))
    }

    /// The hidden state at each sequence's first EOS, `[B, D]`.
    pub fn eos_rows(h: &Tensor, tokens: &TokenBatch) -> Tensor {
        let (b, _, d) = h.size3().expect("hidden states are [B, L, D]");
        let idx = tokens.eos.view([b, 1, 1]).expand([b, 1, d], false);
        h.gather(1, &idx, false).squeeze_dim(1)
    }

    pub fn forward(&self, tokens: &TokenBatch) -> Tensor {
        self.pool(&self.hidden(tokens, None), tokens)
    }

    /// The last encoder layer's output `[B, L, D]` (before the final LayerNorm), under UPop's ζ
    /// when given.
    pub fn hidden(&self, tokens: &TokenBatch, gates: Option<&[Gates]>) -> Tensor {
        let mask = Self::attention_mask(tokens);
        let mut h = self.embed(&tokens.ids);
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward_gated(&h, Some(&mask), gate(gates, i));
        }
        h
    }
}

/// A CLIP model whose variables live in one [`nn::VarStore`] under their HF names.
pub struct Clip {
    pub vs: nn::VarStore,
    pub config: ClipConfig,
    pub vision: VisionTower,
    pub text: TextTower,
    pub visual_projection: nn::Linear,
    pub text_projection: nn::Linear,
    pub logit_scale: Tensor,
}

impl std::fmt::Debug for Clip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clip")
            .field("config", &self.config)
            .finish()
    }
}

impl Clip {
    /// A randomly initialised model (seeded through libtorch's generator).
    pub fn new(config: &ClipConfig, device: Device) -> Clip {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let c = config;
        Clip {
            vision: VisionTower::new(&root / "vision_model", &c.vision),
            text: TextTower::new(&root / "text_model", &c.text),
            visual_projection: linear(
                &root / "visual_projection",
                c.vision.hidden_size,
                c.projection_dim,
                false,
            ),
            text_projection: linear(
                &root / "text_projection",
                c.text.hidden_size,
                c.projection_dim,
                false,
            ),
            logit_scale: root.var("logit_scale", &[], Init::Const(c.logit_scale_init_value)),
            config: config.clone(),
            vs,
        }
    }

    /// Loads `base` (a CLIP directory) and overlays each vision-only checkpoint in turn
    /// (spec §8). Strict: every variable must be provided, nothing else may be.
    pub fn load(
        base: &Path,
        vision_overlays: &[&Path],
        device: Device,
    ) -> Result<Clip, ModelError> {
        let config = ClipConfig::read(&base.join("config.json"))?;
        let mut model = Clip::new(&config, device);
        weights::load_into(&model.vs, base, "")?;
        for overlay in vision_overlays {
            let cfg_path = overlay.join("config.json");
            let vision = ClipConfig::read_vision(&cfg_path)?;
            if vision != config.vision {
                return Err(ModelError::Config {
                    path: cfg_path,
                    reason: format!(
                        "vision config does not match the base model {} (overlay: {} layers × {} wide, patch {}, image {}; base: {} layers × {} wide, patch {}, image {})",
                        base.display(),
                        vision.num_hidden_layers,
                        vision.hidden_size,
                        vision.patch_size,
                        vision.image_size,
                        config.vision.num_hidden_layers,
                        config.vision.hidden_size,
                        config.vision.patch_size,
                        config.vision.image_size
                    ),
                });
            }
            weights::load_into(&model.vs, overlay, "vision_model.")?;
        }
        model.set_eval();
        Ok(model)
    }

    /// Turns autograd off for every variable (inference and pruning).
    pub fn set_eval(&mut self) {
        self.vs.freeze();
    }

    /// Image features `[B, E]`, not normalised (spec §5.2).
    pub fn image_features(&self, pixels: &Tensor) -> Tensor {
        self.visual_projection.forward(&self.vision.forward(pixels))
    }

    /// Text features `[B, E]`, not normalised (spec §5.3).
    pub fn text_features(&self, tokens: &TokenBatch) -> Tensor {
        self.text_projection.forward(&self.text.forward(tokens))
    }

    /// Writes `config.json` + `model.safetensors` (the full model, HF layout).
    pub fn save(&self, dir: &Path) -> Result<(), ModelError> {
        weights::save(&self.vs, dir, "", &self.config.to_json())
    }

    /// Writes a vision-only checkpoint (`CLIPVisionModel` layout, spec §8).
    pub fn save_vision(&self, dir: &Path) -> Result<(), ModelError> {
        weights::save(
            &self.vs,
            dir,
            "vision_model.",
            &super::config::vision_json(&self.config.vision),
        )
    }
}
