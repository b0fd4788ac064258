//! The Qwen2 decoder: token embedding, a stack of pre-norm layers (attention + SwiGLU MLP,
//! each with a residual), a final RMSNorm, and the language-model head.
//!
//! Module and field names follow `Qwen2ForCausalLM` (`model.embed_tokens`,
//! `model.layers.N.self_attn.q_proj`, `model.norm`, `lm_head`), so the tree is the weight map.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Linear};
use burn::tensor::module::linear as linear_op;
use burn::tensor::{Bool, Device, Int, Tensor};

use crate::attention::{Attention, AttentionConfig};
use crate::config::{ConfigError, TextConfig};
use crate::init::{linear, normal_init};
use crate::kv_cache::{KvCache, LayerCache};
use crate::mask::{causal_padding_mask, position_ids_from_mask, text_position_ids};
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
    /// Epsilon of both RMSNorms.
    pub rms_norm_eps: f64,
}

impl DecoderLayerConfig {
    /// A randomly initialized layer.
    pub fn init(&self, device: &Device) -> DecoderLayer {
        let norm = RmsNormConfig::new(self.attention.hidden_size).with_epsilon(self.rms_norm_eps);
        DecoderLayer {
            self_attn: self.attention.init(device),
            mlp: self.mlp.init(device),
            input_layernorm: norm.init(device),
            post_attention_layernorm: norm.init(device),
        }
    }
}

/// One pre-norm decoder layer.
#[derive(Module, Debug)]
pub struct DecoderLayer {
    pub self_attn: Attention,
    pub mlp: Mlp,
    pub input_layernorm: RmsNorm,
    pub post_attention_layernorm: RmsNorm,
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
        let attended =
            self.self_attn
                .forward(self.input_layernorm.forward(x.clone()), rotary, mask, cache);
        let x = x + attended;
        let mlp_out = self
            .mlp
            .forward(self.post_attention_layernorm.forward(x.clone()));
        x + mlp_out
    }
}

/// The decoder stack without the head (`Qwen2Model`).
#[derive(Module, Debug)]
pub struct TextModel {
    pub embed_tokens: Embedding,
    pub layers: Vec<DecoderLayer>,
    pub norm: RmsNorm,
    pub rotary: MultimodalRotary,
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
                .map(|_| config.decoder_layer().init(device))
                .collect(),
            norm: RmsNormConfig::new(config.hidden_size)
                .with_epsilon(config.rms_norm_eps)
                .init(device),
            rotary: MultimodalRotary::new(
                config.rope_theta,
                config.head_dim(),
                config.mrope_section.clone(),
            ),
        })
    }

    /// Token embeddings.
    ///
    /// # Shapes
    /// - `input_ids`: `[batch, seq]` → `[batch, seq, hidden]`
    pub fn embed(&self, input_ids: Tensor<2, Int>) -> Tensor<3> {
        self.embed_tokens.forward(input_ids)
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
        let rotary = self.rotary.tables(position_ids);
        let mask = attention_mask.map(|m| causal_padding_mask(m, s)); // [b, 1, s, t]
        let mut x = embeds;
        for (index, layer) in self.layers.iter().enumerate() {
            let layer_cache = cache.as_deref_mut().map(|c| c.layer_mut(index));
            x = layer.forward(x, &rotary, mask.clone(), layer_cache);
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
}

impl CausalLm {
    /// A randomly initialized language model.
    pub fn new(config: &TextConfig, device: &Device) -> Result<Self, ConfigError> {
        let model = TextModel::new(config, device)?;
        let lm_head = (!config.tie_word_embeddings)
            .then(|| linear(config.hidden_size, config.vocab_size, false, device));
        Ok(Self { model, lm_head })
    }

    /// A fresh cache sized for this model.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.model.layers.len())
    }

    /// Projects hidden states to vocabulary logits.
    ///
    /// # Shapes
    /// - `hidden`: `[batch, seq, hidden]` → `[batch, seq, vocab]`
    pub fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        lm_logits(hidden, self.lm_head.as_ref(), &self.model.embed_tokens)
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
/// map when the two are tied.
///
/// # Shapes
/// - `hidden`: `[batch, seq, hidden]` → `[batch, seq, vocab]`
pub fn lm_logits(hidden: Tensor<3>, lm_head: Option<&Linear>, embed: &Embedding) -> Tensor<3> {
    match lm_head {
        Some(head) => head.forward(hidden),
        None => linear_op(hidden, embed.weight.val().transpose(), None),
    }
}
