//! `config.json` as transformers 5 writes it for each family (the reading side is the
//! parent module).

use serde_json::{Value, json};

use crate::config::{NormLayout, RopeScaling, TextConfig};
use crate::family::Family;
use crate::multimodal::NuriConfig;
use crate::vision::{VisionConfig, VisionVariant};

/// The `config.json` transformers 5 writes for this configuration (its family's layout).
pub fn hf_config_json(config: &NuriConfig) -> Value {
    let family = config.family;
    let t = &config.text;
    let text = text_config_json(t, family);
    if !family.has_vision() {
        let mut root = text;
        root["architectures"] = json!([family.architecture()]);
        root["dtype"] = json!("float32");
        return root;
    }
    let vision = config
        .vision
        .as_ref()
        .map(|v| vision_config_json(v, family));
    let mut root = json!({
        "architectures": [family.architecture()],
        "model_type": family.model_type(),
        "dtype": "float32",
        "image_token_id": config.image_token_id,
        "video_token_id": config.video_token_id,
        "tie_word_embeddings": t.tie_word_embeddings,
        "text_config": text,
        "vision_config": vision,
    });
    if family.mrope() {
        root["vision_start_token_id"] = json!(config.vision_start_token_id);
        root["vision_end_token_id"] = json!(config.vision_end_token_id);
    }
    root
}

fn text_config_json(t: &TextConfig, family: Family) -> Value {
    let mut rope = match &t.rope_scaling {
        RopeScaling::Default => json!({"rope_type": "default"}),
        RopeScaling::Linear { factor } => json!({"rope_type": "linear", "factor": factor}),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => json!({
            "rope_type": "llama3",
            "factor": factor,
            "low_freq_factor": low_freq_factor,
            "high_freq_factor": high_freq_factor,
            "original_max_position_embeddings": original_max_position_embeddings,
        }),
    };
    rope["rope_theta"] = json!(t.rope_theta);
    if family.mrope() {
        rope["type"] = json!("mrope");
        rope["mrope_section"] = json!(t.mrope_section);
    }
    let model_type = match family {
        Family::Qwen2Vl => "qwen2_vl_text",
        Family::Qwen2_5Vl => "qwen2_5_vl_text",
        Family::Exaone4 | Family::Exaone4_5 => "exaone4",
        Family::HyperClovaX | Family::HyperClovaXVisionV2 => "hyperclovax",
    };
    let mut text = json!({
        "model_type": model_type,
        "vocab_size": t.vocab_size,
        "hidden_size": t.hidden_size,
        "intermediate_size": t.intermediate_size,
        "num_hidden_layers": t.num_hidden_layers,
        "num_attention_heads": t.num_attention_heads,
        "num_key_value_heads": t.num_key_value_heads,
        "head_dim": t.head_dim(),
        "hidden_act": "silu",
        "rms_norm_eps": t.rms_norm_eps,
        "max_position_embeddings": t.max_position_embeddings,
        "rope_theta": t.rope_theta,
        "rope_parameters": rope,
        "tie_word_embeddings": t.tie_word_embeddings,
        "use_cache": true,
        "attention_dropout": 0.0,
    });
    match family {
        Family::Qwen2Vl | Family::Qwen2_5Vl => {
            text["rope_scaling"] = rope;
        }
        Family::Exaone4 | Family::Exaone4_5 => {
            text["sliding_window"] = json!(t.sliding_window);
            text["layer_types"] = json!(
                (0..t.num_hidden_layers)
                    .map(|i| t.layer_type(i))
                    .collect::<Vec<_>>()
            );
        }
        Family::HyperClovaX | Family::HyperClovaXVisionV2 => {
            text["attention_bias"] = json!(t.qkv_bias);
            text["mlp_bias"] = json!(t.mlp_bias);
            text["use_post_norm"] = json!(t.norm_layout == NormLayout::Peri);
            text["embedding_multiplier"] = json!(t.embedding_multiplier);
            text["residual_multiplier"] = json!(t.residual_multiplier);
            text["logits_scaling"] = json!(t.logits_scaling);
            text["attention_multiplier"] = json!(
                t.attention_multiplier
                    .unwrap_or(1.0 / (t.head_dim() as f64).sqrt())
            );
        }
    }
    text
}

fn vision_config_json(v: &VisionConfig, family: Family) -> Value {
    if v.variant == VisionVariant::Qwen2Vl {
        return json!({
            "model_type": "qwen2_vl",
            "depth": v.depth,
            "embed_dim": v.embed_dim,
            "num_heads": v.num_heads,
            "mlp_ratio": v.mlp_ratio,
            "hidden_size": v.hidden_size,
            "hidden_act": "quick_gelu",
            "in_channels": v.in_channels,
            "in_chans": v.in_channels,
            "patch_size": v.patch_size,
            "spatial_merge_size": v.spatial_merge_size,
            "temporal_patch_size": v.temporal_patch_size,
        });
    }
    let model_type = match family {
        Family::Exaone4_5 => "exaone4_5_vision",
        _ => "qwen2_5_vl",
    };
    let mut vision = json!({
        "model_type": model_type,
        "depth": v.depth,
        "hidden_size": v.embed_dim,
        "num_heads": v.num_heads,
        "intermediate_size": v.intermediate_size,
        "out_hidden_size": v.hidden_size,
        "hidden_act": "silu",
        "in_channels": v.in_channels,
        "patch_size": v.patch_size,
        "spatial_merge_size": v.spatial_merge_size,
        "temporal_patch_size": v.temporal_patch_size,
        "window_size": v.window_size,
        "fullatt_block_indexes": v.fullatt_block_indexes,
    });
    match family {
        Family::Exaone4_5 => vision["num_key_value_heads"] = json!(v.kv_heads()),
        // transformers' config takes an integer (it refuses `2.0`).
        _ if v.tokens_per_second.fract() == 0.0 => {
            vision["tokens_per_second"] = json!(v.tokens_per_second as i64)
        }
        _ => vision["tokens_per_second"] = json!(v.tokens_per_second),
    }
    vision
}
