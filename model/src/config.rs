//! The language model's configuration: the fields of a Hugging Face Qwen2 / Qwen2-VL
//! `text_config`, under the same names, so a `config.json` maps onto it one to one.

use burn::config::Config;
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
    }

    /// The widths of every decoder layer's MLP.
    pub fn mlp(&self) -> MlpConfig {
        MlpConfig::new(self.hidden_size, self.intermediate_size)
    }

    /// One decoder layer's blocks.
    pub fn decoder_layer(&self) -> DecoderLayerConfig {
        DecoderLayerConfig::new(self.attention(), self.mlp(), self.rms_norm_eps)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
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
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
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
        if self.mrope_section.len() != 3 || self.mrope_section.iter().sum::<usize>() != head_dim / 2
        {
            return Err(ConfigError::BadMropeSection {
                section: self.mrope_section.clone(),
                half: head_dim / 2,
            });
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
