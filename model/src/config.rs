//! The language model's configuration: the fields of a Hugging Face `text_config` (Qwen2 /
//! Qwen2-VL, EXAONE 4, HyperCLOVA X), under the same names, so a `config.json` maps onto it
//! one to one. A family is these numbers plus a few switches (norm layout, QK-norm, sliding
//! windows, µP multipliers), each defaulting to Qwen2's behaviour.

use burn::config::Config;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::attention::AttentionConfig;
use crate::decoder::DecoderLayerConfig;
use crate::mlp::MlpConfig;

/// A configuration that cannot describe a model.
#[derive(Debug, Error, PartialEq)]
pub enum ConfigError {
    #[error("{field} must be positive, got 0")]
    Zero { field: &'static str },
    #[error("hidden_size ({hidden}) must be divisible by num_attention_heads ({heads})")]
    HeadsDoNotDivideHidden { hidden: usize, heads: usize },
    #[error("num_attention_heads ({heads}) must be divisible by num_key_value_heads ({kv_heads})")]
    KvHeadsDoNotDivideHeads { heads: usize, kv_heads: usize },
    #[error("head_dim ({head_dim}) must be even for rotary embeddings")]
    OddHeadDim { head_dim: usize },
    #[error(
        "mrope_section {section:?} must have 3 entries (temporal, height, width) summing to \
         head_dim / 2 = {half}"
    )]
    BadMropeSection { section: Vec<usize>, half: usize },
    #[error("layer_types has {got} entries for {layers} layers")]
    LayerTypes { got: usize, layers: usize },
    #[error("layer {layer} is a sliding-window layer but sliding_window is not set (or 0)")]
    NoSlidingWindow { layer: usize },
    #[error("{field} must be a positive finite number, got {value}")]
    BadNumber { field: &'static str, value: f64 },
}

/// Where each decoder layer's RMSNorms sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum NormLayout {
    /// Qwen2, Llama, Granite: `x + attn(norm(x))`, `x + mlp(norm(x))` (`input_layernorm`,
    /// `post_attention_layernorm`).
    #[default]
    Pre,
    /// EXAONE 4 ("QK-Reorder-Norm", as OLMo 2): `x + norm(attn(x))`, `x + norm(mlp(x))`
    /// (`post_attention_layernorm`, `post_feedforward_layernorm`); no norm on the input.
    Post,
    /// HyperCLOVA X ("Peri-LN"): both, `x + norm(attn(norm(x)))`, `x + norm(mlp(norm(x)))`
    /// (`input_layernorm`, `post_norm1`, `post_attention_layernorm`, `post_norm2`).
    Peri,
}

/// The attention pattern of one decoder layer (`layer_types` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LayerType {
    /// Every earlier token (`"full_attention"`).
    #[serde(rename = "full_attention")]
    Full,
    /// The last `sliding_window` tokens, itself included (`"sliding_attention"`).
    #[serde(rename = "sliding_attention")]
    Sliding,
}

/// How the rotary frequencies are rescaled for long contexts (`rope_parameters.rope_type`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "rope_type", rename_all = "lowercase")]
pub enum RopeScaling {
    /// `inv_freq[i] = theta^(-2i / d)`.
    #[default]
    Default,
    /// Positions divided by `factor` (every frequency divided by it).
    Linear { factor: f64 },
    /// Llama 3.1's: low frequencies divided by `factor`, high ones kept, a smooth blend
    /// between (`_compute_llama3_parameters` in transformers); EXAONE 4.0 uses it.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
}

/// Configuration of the decoder-only language model (Qwen2 numerics).
#[derive(Config, Debug, PartialEq)]
pub struct TextConfig {
    /// Number of token ids, including the special tokens.
    pub vocab_size: usize,
    /// Model width (`d_model`).
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP's inner layer.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Number of query heads.
    pub num_attention_heads: usize,
    /// Number of key/value heads (grouped-query attention when fewer than query heads).
    pub num_key_value_heads: usize,
    /// How the rotary dimensions (`head_dim / 2` frequencies) are split between the
    /// temporal, height and width position streams (M-RoPE, Qwen2-VL §2.1).
    pub mrope_section: Vec<usize>,
    /// RMSNorm epsilon.
    #[config(default = 1e-6)]
    pub rms_norm_eps: f64,
    /// RoPE base frequency.
    #[config(default = 1_000_000.0)]
    pub rope_theta: f64,
    /// Longest sequence the model is meant for (positions beyond it still compute).
    #[config(default = 32768)]
    pub max_position_embeddings: usize,
    /// Whether `lm_head` shares the token embedding's weight.
    #[config(default = false)]
    pub tie_word_embeddings: bool,
    /// Width of one attention head when the checkpoint sets it (else hidden / heads).
    #[config(default = "None")]
    pub head_dim: Option<usize>,
    /// Bias on the q/k/v projections (Qwen2: yes; EXAONE 4, HyperCLOVA X: `attention_bias`).
    #[config(default = true)]
    pub qkv_bias: bool,
    /// Bias on the attention's output projection (Llama-style `attention_bias` covers it).
    #[config(default = false)]
    pub o_bias: bool,
    /// Bias on the MLP's three projections (`mlp_bias`).
    #[config(default = false)]
    pub mlp_bias: bool,
    /// RMSNorm of each query and key head before RoPE (EXAONE 4's QK-norm).
    #[config(default = false)]
    pub qk_norm: bool,
    /// Where the RMSNorms sit in a layer.
    #[config(default = "NormLayout::Pre")]
    pub norm_layout: NormLayout,
    /// Per layer, full or sliding-window attention; empty: all full.
    #[config(default = "Vec::new()")]
    pub layer_types: Vec<LayerType>,
    /// Tokens a sliding-window layer sees, itself included.
    #[config(default = "None")]
    pub sliding_window: Option<usize>,
    /// Whether full-attention layers rotate queries and keys (EXAONE 4's hybrid models use
    /// no positional encoding in their global layers).
    #[config(default = true)]
    pub rope_in_full_layers: bool,
    /// Rescaling of the rotary frequencies.
    #[config(default = "RopeScaling::Default")]
    pub rope_scaling: RopeScaling,
    /// µP (Granite, HyperCLOVA X): token embeddings are multiplied by this.
    #[config(default = 1.0)]
    pub embedding_multiplier: f64,
    /// µP: each block's output is multiplied by this before the residual add.
    #[config(default = 1.0)]
    pub residual_multiplier: f64,
    /// µP: the attention logits' scale, in place of `1 / sqrt(head_dim)`.
    #[config(default = "None")]
    pub attention_multiplier: Option<f64>,
    /// µP: logits are multiplied by this (HyperCLOVA X's `logits_scaling`).
    #[config(default = 1.0)]
    pub logits_scaling: f64,
}

impl TextConfig {
    /// The shape of every decoder layer's attention.
    pub fn attention(&self) -> AttentionConfig {
        AttentionConfig::new(
            self.hidden_size,
            self.num_attention_heads,
            self.num_key_value_heads,
            self.head_dim(),
        )
        .with_qkv_bias(self.qkv_bias)
        .with_o_bias(self.o_bias)
        .with_qk_norm(self.qk_norm.then_some(self.rms_norm_eps))
        .with_scale(self.attention_multiplier)
    }

    /// The widths of every decoder layer's MLP.
    pub fn mlp(&self) -> MlpConfig {
        MlpConfig::new(self.hidden_size, self.intermediate_size).with_bias(self.mlp_bias)
    }

    /// One decoder layer's blocks.
    pub fn decoder_layer(&self) -> DecoderLayerConfig {
        DecoderLayerConfig::new(self.attention(), self.mlp(), self.rms_norm_eps)
            .with_norm_layout(self.norm_layout)
            .with_residual_multiplier(self.residual_multiplier)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Layer `index`'s attention pattern.
    pub fn layer_type(&self, index: usize) -> LayerType {
        self.layer_types
            .get(index)
            .copied()
            .unwrap_or(LayerType::Full)
    }

    /// The window of layer `index`: `Some(tokens)` for a sliding-window layer.
    pub fn layer_window(&self, index: usize) -> Option<usize> {
        match self.layer_type(index) {
            LayerType::Sliding => self.sliding_window,
            LayerType::Full => None,
        }
    }

    /// Whether layer `index` rotates its queries and keys.
    pub fn layer_rotates(&self, index: usize) -> bool {
        self.layer_type(index) == LayerType::Sliding || self.rope_in_full_layers
    }

    /// Whether positions are 1D (the same id in all three streams) rather than M-RoPE.
    pub fn is_1d_rope(&self) -> bool {
        self.mrope_section.is_empty()
    }

    /// A 2-layer model for tests: 4 query heads over 2 key/value heads (so GQA is
    /// exercised), head_dim 16 with an uneven M-RoPE split like the real one's 16/24/24.
    pub fn tiny() -> Self {
        Self::new(128, 64, 128, 2, 4, 2, vec![2, 3, 3])
    }

    /// The language model of Qwen2-VL-2B-Instruct (its `config.json`).
    pub fn qwen2_vl_2b() -> Self {
        Self::new(151_936, 1536, 8960, 28, 12, 2, vec![16, 24, 24]).with_tie_word_embeddings(true)
    }

    /// The language model of Qwen2-VL-7B-Instruct (its `config.json`).
    pub fn qwen2_vl_7b() -> Self {
        Self::new(152_064, 3584, 18944, 28, 28, 4, vec![16, 24, 24])
    }

    /// Checks that the numbers describe a buildable model.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, value) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero { field });
            }
        }
        if self.head_dim.is_none() && !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(ConfigError::HeadsDoNotDivideHidden {
                hidden: self.hidden_size,
                heads: self.num_attention_heads,
            });
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return Err(ConfigError::KvHeadsDoNotDivideHeads {
                heads: self.num_attention_heads,
                kv_heads: self.num_key_value_heads,
            });
        }
        let head_dim = self.head_dim();
        if !head_dim.is_multiple_of(2) {
            return Err(ConfigError::OddHeadDim { head_dim });
        }
        if !self.is_1d_rope()
            && (self.mrope_section.len() != 3
                || self.mrope_section.iter().sum::<usize>() != head_dim / 2)
        {
            return Err(ConfigError::BadMropeSection {
                section: self.mrope_section.clone(),
                half: head_dim / 2,
            });
        }
        if !self.layer_types.is_empty() && self.layer_types.len() != self.num_hidden_layers {
            return Err(ConfigError::LayerTypes {
                got: self.layer_types.len(),
                layers: self.num_hidden_layers,
            });
        }
        if let Some(layer) = self
            .layer_types
            .iter()
            .position(|&t| t == LayerType::Sliding)
            && self.sliding_window.is_none_or(|w| w == 0)
        {
            return Err(ConfigError::NoSlidingWindow { layer });
        }
        let mut numbers = vec![
            ("embedding_multiplier", self.embedding_multiplier),
            ("residual_multiplier", self.residual_multiplier),
            ("logits_scaling", self.logits_scaling),
            ("rope_theta", self.rope_theta),
        ];
        if let Some(m) = self.attention_multiplier {
            numbers.push(("attention_multiplier", m));
        }
        for (field, value) in numbers {
            if !(value.is_finite() && value > 0.0) {
                return Err(ConfigError::BadNumber { field, value });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_through_json() {
        for config in [
            TextConfig::tiny(),
            TextConfig::qwen2_vl_2b(),
            TextConfig::qwen2_vl_7b().with_rms_norm_eps(1e-5),
        ] {
            let json = serde_json::to_string(&config).expect("serialize");
            let back: TextConfig = serde_json::from_str(&json).expect("deserialize");
            assert_eq!(back, config, "round trip changed {json}");
            config.validate().expect("presets are valid");
        }
    }

    #[test]
    fn json_uses_hugging_face_field_names() {
        let json = serde_json::to_value(TextConfig::qwen2_vl_2b()).expect("serialize");
        assert_eq!(json["num_key_value_heads"], 2);
        assert_eq!(json["tie_word_embeddings"], true);
        assert_eq!(json["mrope_section"], serde_json::json!([16, 24, 24]));
    }

    #[test]
    fn validate_names_the_broken_field() {
        let bad = TextConfig {
            num_key_value_heads: 3,
            ..TextConfig::tiny()
        };
        assert_eq!(
            bad.validate(),
            Err(ConfigError::KvHeadsDoNotDivideHeads {
                heads: 4,
                kv_heads: 3
            })
        );
        let bad = TextConfig {
            mrope_section: vec![2, 3, 4],
            ..TextConfig::tiny()
        };
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::BadMropeSection { half: 8, .. })
        ));
        let bad = TextConfig {
            vocab_size: 0,
            ..TextConfig::tiny()
        };
        assert_eq!(
            bad.validate(),
            Err(ConfigError::Zero {
                field: "vocab_size"
            })
        );
    }
}
