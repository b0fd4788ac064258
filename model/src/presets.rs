//! The published checkpoints' configurations, by name (`nuri config --preset`): what a model
//! of that size is, for sizing memory and benchmarks with random weights. Each says where its
//! numbers come from.

use burn::module::Module;
use burn::tensor::Device;

use crate::config::{LayerType, NormLayout, RopeScaling, TextConfig};
use crate::family::Family;
use crate::multimodal::{ModelError, NuriConfig, NuriModel};
use crate::vision::{VisionConfig, VisionVariant};

/// A configuration's parameters, counted from the module tree it builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParameterCounts {
    /// The language model with its embedding and head.
    pub language: usize,
    /// The vision tower, merger and projector.
    pub vision: usize,
}

impl ParameterCounts {
    /// Counts the parameters of `config`'s model without allocating them (Burn's parameters
    /// are drawn lazily; their shapes are known before).
    pub fn of(config: &NuriConfig) -> Result<Self, ModelError> {
        let model = NuriModel::new(config, &Device::flex())?;
        let vision = model.model.visual.as_ref().map_or(0, Module::num_params)
            + model.model.projector.as_ref().map_or(0, Module::num_params);
        Ok(Self {
            language: model.num_params() - vision,
            vision,
        })
    }

    /// All parameters.
    pub fn total(&self) -> usize {
        self.language + self.vision
    }

    /// One line: the counts and the memory of the weights in bf16.
    pub fn summary(&self, name: &str) -> String {
        let billions = |n: usize| n as f64 / 1e9;
        format!(
            "{name}: {:.2}B parameters (language model {:.2}B, vision {:.2}B); weights in bf16: {:.1} GiB",
            billions(self.total()),
            billions(self.language),
            billions(self.vision),
            (self.total() * 2) as f64 / (1u64 << 30) as f64
        )
    }
}

/// The names [`published`] knows.
pub const PUBLISHED: [&str; 7] = [
    "qwen2-vl-2b",
    "qwen2-vl-7b",
    "qwen2.5-vl-3b",
    "qwen2.5-vl-7b",
    "exaone-4.5-33b",
    "exaone-4.0-1.2b",
    "hyperclovax-seed-think-32b",
];

/// EXAONE 4's llama3 rope scaling (its 4.0 and 4.5 configs: factor 16 over 8192 positions).
fn exaone_rope() -> RopeScaling {
    RopeScaling::Llama3 {
        factor: 16.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 8192,
    }
}

/// EXAONE 4's decoder switches: no biases, QK-norm, norms on the blocks' outputs.
fn exaone_text(base: TextConfig) -> TextConfig {
    TextConfig {
        qkv_bias: false,
        qk_norm: true,
        norm_layout: NormLayout::Post,
        rms_norm_eps: 1e-5,
        rope_theta: 1_000_000.0,
        rope_scaling: exaone_rope(),
        mrope_section: Vec::new(),
        ..base
    }
}

/// A published configuration by name (see [`PUBLISHED`]).
pub fn published(name: &str) -> Option<NuriConfig> {
    let qwen_tokens = |config: NuriConfig| NuriConfig {
        image_token_id: 151_655,
        video_token_id: 151_656,
        vision_start_token_id: 151_652,
        vision_end_token_id: 151_653,
        ..config
    };
    Some(match name {
        "qwen2-vl-2b" => NuriConfig::qwen2_vl_2b(),
        // Qwen/Qwen2-VL-7B-Instruct's config.json.
        "qwen2-vl-7b" => qwen_tokens(
            NuriConfig::new(TextConfig::qwen2_vl_7b(), 0, 0, 0, 0)
                .with_vision(Some(VisionConfig::qwen2_vl(3584))),
        ),
        // Qwen/Qwen2.5-VL-3B-Instruct's config.json.
        "qwen2.5-vl-3b" => qwen_tokens(
            NuriConfig::new(
                TextConfig::new(151_936, 2048, 11_008, 36, 16, 2, vec![16, 24, 24])
                    .with_tie_word_embeddings(true)
                    .with_max_position_embeddings(128_000),
                0,
                0,
                0,
                0,
            )
            .with_vision(Some(VisionConfig::qwen2_5_vl(2048)))
            .with_family(Family::Qwen2_5Vl),
        ),
        // Qwen/Qwen2.5-VL-7B-Instruct's config.json.
        "qwen2.5-vl-7b" => qwen_tokens(
            NuriConfig::new(
                TextConfig::new(152_064, 3584, 18_944, 28, 28, 4, vec![16, 24, 24])
                    .with_max_position_embeddings(128_000),
                0,
                0,
                0,
                0,
            )
            .with_vision(Some(VisionConfig::qwen2_5_vl(3584)))
            .with_family(Family::Qwen2_5Vl),
        ),
        // LGAI-EXAONE/EXAONE-4.5-33B, as its pre-release config appears in TensorRT-LLM's
        // tests (tests/unittest/_torch/modeling/test_modeling_exaone4_5.py): the EXAONE 4.0
        // 32B decoder (64 layers, 3 local : 1 global, window 4096) with a 153,600 vocabulary,
        // and a 28-block, 2048-wide Qwen2.5-VL tower with 8 key/value heads.
        "exaone-4.5-33b" => {
            let layers = 64;
            let text = exaone_text(
                TextConfig::new(153_600, 5120, 27_392, layers, 40, 8, Vec::new())
                    .with_max_position_embeddings(131_072),
            );
            let text = TextConfig {
                layer_types: (0..layers)
                    .map(|i| {
                        if (i + 1) % 4 == 0 {
                            LayerType::Full
                        } else {
                            LayerType::Sliding
                        }
                    })
                    .collect(),
                sliding_window: Some(4096),
                rope_in_full_layers: false,
                ..text
            };
            let vision = VisionConfig::new(28, 2048, 32, 4, 5120)
                .with_variant(VisionVariant::Qwen2_5Vl)
                .with_intermediate_size(5120)
                .with_window_size(112)
                .with_fullatt_block_indexes(vec![6, 13, 20, 27])
                .with_num_key_value_heads(Some(8))
                .with_tokens_per_second(2.0);
            NuriConfig::new(text, 67, 68, 73, 74)
                .with_vision(Some(vision))
                .with_family(Family::Exaone4_5)
        }
        // LGAI-EXAONE/EXAONE-4.0-1.2B (its model card: 30 layers, 32 query / 8 key-value
        // heads, 102,400 vocabulary, tied embeddings, global attention only, 65,536 context).
        "exaone-4.0-1.2b" => {
            let text = exaone_text(
                TextConfig::new(102_400, 2048, 4096, 30, 32, 8, Vec::new())
                    .with_tie_word_embeddings(true)
                    .with_max_position_embeddings(65_536),
            );
            NuriConfig::new(text, -1, -1, -1, -1).with_family(Family::Exaone4)
        }
        // naver-hyperclovax/HyperCLOVAX-SEED-Think-32B (its config.json as published
        // analyses quote it: 72 layers of 5120, 40 / 8 heads of 128, 24,192 MLP, 128,256
        // vocabulary, rope_theta 5e7, attention_multiplier 1/sqrt(128); a Qwen2.5-VL tower
        // into 5120 and a linear projector). The other µP multipliers do not change the size.
        "hyperclovax-seed-think-32b" => {
            let text = TextConfig {
                qkv_bias: false,
                norm_layout: NormLayout::Peri,
                rms_norm_eps: 1e-5,
                rope_theta: 50_000_000.0,
                attention_multiplier: Some(1.0 / 128f64.sqrt()),
                ..TextConfig::new(128_256, 5120, 24_192, 72, 40, 8, Vec::new())
                    .with_max_position_embeddings(131_072)
            };
            let vision = VisionConfig::qwen2_5_vl(5120);
            NuriConfig::new(text, 128_060, 128_061, -1, -1)
                .with_vision(Some(vision))
                .with_family(Family::HyperClovaXVisionV2)
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_published_preset_is_valid() {
        for name in PUBLISHED {
            let config = published(name).expect("known");
            config.text.validate().expect(name);
            assert_eq!(
                config.vision.is_some(),
                config.family.has_vision(),
                "{name}"
            );
            if let Some(vision) = &config.vision {
                vision.validate().expect(name);
            }
        }
        assert!(published("gpt-5").is_none());
    }

    /// The counts of the published sizes, from the module tree, against the sizes their
    /// publishers state (Qwen2.5-VL-7B: 8.29B; EXAONE 4.5: 33B; HyperCLOVA X Think: 33B).
    #[test]
    fn published_sizes_count_as_their_publishers_say() {
        let count = |name: &str| ParameterCounts::of(&published(name).expect(name)).expect(name);
        let qwen7 = count("qwen2.5-vl-7b");
        assert_eq!(qwen7.total(), 8_292_166_656, "{qwen7:?}");
        let exaone = count("exaone-4.5-33b").total() as f64 / 1e9;
        assert!((33.0..34.5).contains(&exaone), "{exaone}");
        let hcx = count("hyperclovax-seed-think-32b").total() as f64 / 1e9;
        assert!((32.5..34.0).contains(&hcx), "{hcx}");
        let exaone_small = count("exaone-4.0-1.2b").total() as f64 / 1e9;
        assert!((1.2..1.35).contains(&exaone_small), "{exaone_small}");
    }
}
