//! The decoder: token embedding, a stack of layers (attention + SwiGLU MLP, each with a
//! residual), a final RMSNorm, and the language-model head. Qwen2's layers are pre-norm;
//! EXAONE 4's put the norms on the blocks' outputs (and slide a window in some layers);
//! HyperCLOVA X's have both and scale embeddings, residuals and logits (µP).
//!
//! Module and field names follow `Qwen2ForCausalLM` / `Exaone4ForCausalLM` /
//! `HyperCLOVAXForCausalLM` (`model.embed_tokens`, `model.layers.N.self_attn.q_proj`,
//! `model.layers.N.post_feedforward_layernorm`, `model.norm`, `lm_head`), so the tree is the
//! weight map.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig};

use crate::linear::Linear;
use burn::tensor::{Bool, Device, Int, Tensor};

use crate::attention::{Attention, AttentionConfig};
use crate::config::{ConfigError, NormLayout, TextConfig};
use crate::init::{linear, normal_init};
use crate::kv_cache::{KvCache, LayerCache};
use crate::linear::Project;
use crate::mask::{
    causal_padding_mask, position_ids_from_mask, sliding_window_mask, text_position_ids,
};
use crate::mlp::{Mlp, MlpConfig};
use crate::norm::{RmsNorm, RmsNormConfig};
use crate::rope::{MultimodalRotary, RotaryTables};

/// Most prompt tokens one pass of the decoder takes when it fills a KV cache; a longer
/// prompt is run in chunks of this many (chunked prefill).
pub const PREFILL_CHUNK: usize = 512;

/// The blocks of one decoder layer.
#[derive(Config, Debug, PartialEq)]
pub struct DecoderLayerConfig {
    pub attention: AttentionConfig,
    pub mlp: MlpConfig,
    /// Epsilon of the RMSNorms.
    pub rms_norm_eps: f64,
    /// Where the norms sit.
    #[config(default = "NormLayout::Pre")]
    pub norm_layout: NormLayout,
    /// µP: each block's output is multiplied by this before the residual add.
    #[config(default = 1.0)]
    pub residual_multiplier: f64,
}

impl DecoderLayerConfig {
    /// A randomly initialized layer (full attention, rotary; see [`DecoderLayer::window`]).
    pub fn init(&self, device: &Device) -> DecoderLayer {
        let norm = || {
            RmsNormConfig::new(self.attention.hidden_size)
                .with_epsilon(self.rms_norm_eps)
                .init(device)
        };
        let (pre, post, peri) = match self.norm_layout {
            NormLayout::Pre => (true, false, false),
            NormLayout::Post => (false, true, false),
            NormLayout::Peri => (true, false, true),
        };
        DecoderLayer {
            self_attn: self.attention.init(device),
            mlp: self.mlp.init(device),
            input_layernorm: pre.then(norm),
            post_attention_layernorm: norm(),
            post_feedforward_layernorm: post.then(norm),
            post_norm1: peri.then(norm),
            post_norm2: peri.then(norm),
            residual_multiplier: self.residual_multiplier,
            window: None,
            rotary: true,
        }
    }
}

/// One decoder layer. Which norms it has says where they sit: with `input_layernorm`,
/// `post_attention_layernorm` normalizes the MLP's input (pre-norm, Qwen2) and `post_norm1` /
/// `post_norm2`, when present, the two blocks' outputs (Peri-LN, HyperCLOVA X); without it,
/// `post_attention_layernorm` and `post_feedforward_layernorm` normalize the blocks' outputs
/// (EXAONE 4).
#[derive(Module, Debug)]
pub struct DecoderLayer {
    pub self_attn: Attention,
    pub mlp: Mlp,
    pub input_layernorm: Option<RmsNorm>,
    pub post_attention_layernorm: RmsNorm,
    pub post_feedforward_layernorm: Option<RmsNorm>,
    pub post_norm1: Option<RmsNorm>,
    pub post_norm2: Option<RmsNorm>,
    /// µP residual scale (1 elsewhere).
    pub residual_multiplier: f64,
    /// `Some(tokens)`: a sliding-window layer that sees its last `tokens` positions.
    pub window: Option<usize>,
    /// Whether the layer rotates queries and keys (not EXAONE 4's global layers).
    pub rotary: bool,
}

fn norm_opt<const D: usize>(norm: &Option<RmsNorm>, x: Tensor<D>) -> Tensor<D> {
    match norm {
        Some(norm) => norm.forward(x),
        None => x,
    }
}

impl DecoderLayer {
    /// # Shapes
    /// - `x`: `[batch, seq, hidden]` → `[batch, seq, hidden]`
    pub fn forward(
        &self,
        x: Tensor<3>,
        rotary: &RotaryTables,
        mask: Option<Tensor<4, Bool>>,
        cache: Option<&mut LayerCache>,
    ) -> Tensor<3> {
        let rotary = self.rotary.then_some(rotary);
        let residual = |x: Tensor<3>, out: Tensor<3>| {
            if self.residual_multiplier == 1.0 {
                x + out
            } else {
                x + out * self.residual_multiplier
            }
        };
        if self.input_layernorm.is_none() {
            // Norms on the outputs (EXAONE 4).
            let attended = self.self_attn.forward(x.clone(), rotary, mask, cache);
            let x = residual(x, self.post_attention_layernorm.forward(attended));
            let mlp_out = self.mlp.forward(x.clone());
            return residual(x, norm_opt(&self.post_feedforward_layernorm, mlp_out));
        }
        let attended = self.self_attn.forward(
            norm_opt(&self.input_layernorm, x.clone()),
            rotary,
            mask,
            cache,
        );
        let x = residual(x, norm_opt(&self.post_norm1, attended));
        let mlp_out = self
            .mlp
            .forward(self.post_attention_layernorm.forward(x.clone()));
        residual(x, norm_opt(&self.post_norm2, mlp_out))
    }
}

/// The decoder stack without the head (`Qwen2Model`).
#[derive(Module, Debug)]
pub struct TextModel {
    pub embed_tokens: Embedding,
    pub layers: Vec<DecoderLayer>,
    pub norm: RmsNorm,
    pub rotary: MultimodalRotary,
    /// µP: token embeddings are multiplied by this (1 elsewhere).
    pub embedding_multiplier: f64,
}

impl TextModel {
    /// A randomly initialized decoder (the reference's init: normal(0, 0.02), norms at one).
    pub fn new(config: &TextConfig, device: &Device) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            embed_tokens: EmbeddingConfig::new(config.vocab_size, config.hidden_size)
                .with_initializer(normal_init())
                .init(device),
            layers: (0..config.num_hidden_layers)
                .map(|index| {
                    let mut layer = config.decoder_layer().init(device);
                    layer.window = config.layer_window(index);
                    layer.rotary = config.layer_rotates(index);
                    layer
                })
                .collect(),
            norm: RmsNormConfig::new(config.hidden_size)
                .with_epsilon(config.rms_norm_eps)
                .init(device),
            rotary: MultimodalRotary::new(
                config.rope_theta,
                config.head_dim(),
                config.mrope_section.clone(),
            )
            .with_scaling(config.rope_scaling.clone()),
            embedding_multiplier: config.embedding_multiplier,
        })
    }

    /// A fresh cache for this decoder (sliding-window layers keep only their window).
    pub fn new_cache(&self) -> KvCache {
        KvCache::with_windows(self.layers.iter().map(|l| l.window))
    }

    /// Token embeddings (the decoder's input before [`forward_embeds`](Self::forward_embeds)
    /// applies the µP embedding multiplier).
    ///
    /// # Shapes
    /// - `input_ids`: `[batch, seq]` → `[batch, seq, hidden]`
    pub fn embed(&self, input_ids: Tensor<2, Int>) -> Tensor<3> {
        let embeds = self.embed_tokens.forward(input_ids);
        // The table may be kept in a narrower dtype than the activations (bf16 on the CPU);
        // the activations' dtype is the norms'.
        let dtype = self.norm.weight.val().dtype();
        if embeds.dtype() == dtype {
            embeds
        } else {
            embeds.cast(dtype)
        }
    }

    /// The µP embedding multiplier applied to the decoder's input — text and spliced visual
    /// tokens alike, as `GraniteModel` does.
    fn scale_embeddings(&self, embeds: Tensor<3>) -> Tensor<3> {
        if self.embedding_multiplier == 1.0 {
            embeds
        } else {
            embeds * self.embedding_multiplier
        }
    }

    /// Runs the decoder over embeddings (text, or text with visual embeddings spliced in).
    ///
    /// `attention_mask` (1 = token, 0 = padding) covers the cached and the new tokens; without
    /// it every token is real. With a `cache`, the new tokens' keys and values are appended
    /// to it.
    ///
    /// # Shapes
    /// - `embeds`: `[batch, seq, hidden]`
    /// - `position_ids`: `[3, batch, seq]`
    /// - `attention_mask`: `[batch, cached + seq]`
    /// - returns the final-norm hidden states, `[batch, seq, hidden]`
    pub fn forward_embeds(
        &self,
        embeds: Tensor<3>,
        position_ids: Tensor<3, Int>,
        attention_mask: Option<Tensor<2, Int>>,
        mut cache: Option<&mut KvCache>,
    ) -> Tensor<3> {
        let [_, s, _] = embeds.dims();
        if let Some(cache) = cache.as_deref_mut()
            && s > PREFILL_CHUNK
        {
            // A long prompt over a cache goes in chunks: what one pass holds (the masks, the
            // MLP's activations) stays bounded by the chunk, whatever the prompt's length.
            let past = cache.seq_len();
            let parts = (0..s)
                .step_by(PREFILL_CHUNK)
                .map(|start| {
                    let n = PREFILL_CHUNK.min(s - start);
                    self.forward_embeds(
                        embeds.clone().narrow(1, start, n),
                        position_ids.clone().narrow(2, start, n),
                        attention_mask
                            .clone()
                            .map(|m| m.narrow(1, 0, past + start + n)),
                        Some(&mut *cache),
                    )
                })
                .collect();
            return Tensor::cat(parts, 1);
        }
        let [b, _, _] = embeds.dims();
        let device = embeds.device();
        let past = cache.as_deref().map_or(0, |c| c.seq_len());
        let rotary = self.rotary.tables(position_ids);
        let full_mask = attention_mask.clone().map(|m| causal_padding_mask(m, s)); // [b, 1, s, t]
        // Sliding-window layers' masks, one per (window, first held position).
        let mut window_masks: Vec<((usize, usize), Tensor<4, Bool>)> = Vec::new();
        let mut x = self.scale_embeddings(embeds);
        for (index, layer) in self.layers.iter().enumerate() {
            let mask = match layer.window {
                None => full_mask.clone(),
                Some(window) => {
                    let start = cache.as_deref().map_or(0, |c| c.layer(index).start());
                    let key = (window, start);
                    let found = window_masks.iter().find(|(k, _)| *k == key);
                    let mask = match found {
                        Some((_, mask)) => mask.clone(),
                        None => {
                            let mask = sliding_window_mask(
                                attention_mask.clone(),
                                [b, s, past + s],
                                start,
                                window,
                                &device,
                            ); // [b, 1, s, t - start]
                            window_masks.push((key, mask.clone()));
                            mask
                        }
                    };
                    Some(mask)
                }
            };
            let layer_cache = cache.as_deref_mut().map(|c| c.layer_mut(index));
            x = layer.forward(x, &rotary, mask, layer_cache);
        }
        self.norm.forward(x)
    }
}

/// The language model with its head (`Qwen2ForCausalLM`).
#[derive(Module, Debug)]
pub struct CausalLm {
    pub model: TextModel,
    /// `None` when the head is tied to the token embedding.
    pub lm_head: Option<Linear>,
    /// µP: logits are multiplied by this (1 elsewhere).
    pub logits_scaling: f64,
}

impl CausalLm {
    /// A randomly initialized language model.
    pub fn new(config: &TextConfig, device: &Device) -> Result<Self, ConfigError> {
        let model = TextModel::new(config, device)?;
        let lm_head = (!config.tie_word_embeddings)
            .then(|| linear(config.hidden_size, config.vocab_size, false, device));
        Ok(Self {
            model,
            lm_head,
            logits_scaling: config.logits_scaling,
        })
    }

    /// A fresh cache sized for this model.
    pub fn new_cache(&self) -> KvCache {
        self.model.new_cache()
    }

    /// Projects hidden states to vocabulary logits.
    ///
    /// # Shapes
    /// - `hidden`: `[batch, seq, hidden]` → `[batch, seq, vocab]`
    pub fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        lm_logits(
            hidden,
            self.lm_head.as_ref(),
            &self.model.embed_tokens,
            self.logits_scaling,
        )
    }

    /// Next-token logits for every input position.
    ///
    /// Without `position_ids`, positions are counted from the padding mask (so a padded row
    /// sees the positions it would see alone) or, without a mask, continue from the cache.
    ///
    /// # Shapes
    /// - `input_ids`: `[batch, seq]`
    /// - `attention_mask`: `[batch, cached + seq]`
    /// - `position_ids`: `[3, batch, seq]`
    /// - returns `[batch, seq, vocab]`
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
        position_ids: Option<Tensor<3, Int>>,
        cache: Option<&mut KvCache>,
    ) -> Tensor<3> {
        let [b, s] = input_ids.dims();
        let past = cache.as_ref().map_or(0, |c| c.seq_len());
        let position_ids = position_ids.unwrap_or_else(|| match &attention_mask {
            Some(mask) => {
                let t = mask.dims()[1];
                position_ids_from_mask(mask.clone()).narrow(2, t - s, s) // [3, b, s]
            }
            None => text_position_ids(b, past, s, &input_ids.device()),
        });
        let embeds = self.model.embed(input_ids);
        let hidden = self
            .model
            .forward_embeds(embeds, position_ids, attention_mask, cache);
        self.logits(hidden)
    }
}

/// The language-model head: `lm_head`, or the token embedding read as a `[hidden, vocab]`
/// map when the two are tied; times `scaling` (µP's `logits_scaling`) unless it is 1.
///
/// # Shapes
/// - `hidden`: `[batch, seq, hidden]` → `[batch, seq, vocab]`
pub fn lm_logits(
    hidden: Tensor<3>,
    lm_head: Option<&Linear>,
    embed: &Embedding,
    scaling: f64,
) -> Tensor<3> {
    let logits = match lm_head {
        Some(head) => head.project(hidden),
        None => nuri_kernels::linear(hidden, embed.weight.val().transpose(), None),
    };
    if scaling == 1.0 {
        logits
    } else {
        logits * scaling
    }
}
