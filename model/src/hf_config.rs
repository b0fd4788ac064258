//! Hugging Face `config.json` ↔ [`NuriConfig`]: the flat layout of transformers 4.x
//! checkpoints and the nested `text_config` / `vision_config` layout of 5.x.

use std::fs;
use std::path::Path;

use crate::vision::VisionConfig;
use serde_json::{Value, json};

use crate::config::TextConfig;
use crate::multimodal::{ModelError, NuriConfig};
use crate::weights::WeightsError;

/// Reads a JSON file (a checkpoint's or a processor's config), naming it in errors.
pub fn read_json(path: &Path) -> Result<Value, WeightsError> {
    let text = fs::read_to_string(path).map_err(|source| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| WeightsError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads fields from a config object, falling back to a parent object, and names the file
/// and field in every error.
struct Fields<'a> {
    path: &'a Path,
    primary: &'a Value,
    fallback: &'a Value,
}

impl Fields<'_> {
    fn get(&self, field: &str) -> Option<&Value> {
        self.primary.get(field).or_else(|| self.fallback.get(field))
    }

    fn error(&self, field: &str, problem: impl Into<String>) -> WeightsError {
        WeightsError::Field {
            path: self.path.to_path_buf(),
            field: field.to_string(),
            problem: problem.into(),
        }
    }

    fn usize(&self, field: &str) -> Result<usize, WeightsError> {
        self.get(field)
            .ok_or_else(|| self.error(field, "missing"))?
            .as_u64()
            .map(|v| v as usize)
            .ok_or_else(|| self.error(field, "expected a non-negative integer"))
    }

    fn i64(&self, field: &str) -> Result<i64, WeightsError> {
        self.get(field)
            .ok_or_else(|| self.error(field, "missing"))?
            .as_i64()
            .ok_or_else(|| self.error(field, "expected an integer"))
    }

    fn f64_or(&self, field: &str, default: f64) -> Result<f64, WeightsError> {
        match self.get(field) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| self.error(field, "expected a number")),
        }
    }

    fn usize_or(&self, field: &str, default: usize) -> Result<usize, WeightsError> {
        match self.get(field) {
            None | Some(Value::Null) => Ok(default),
            Some(_) => self.usize(field),
        }
    }

    fn bool_or(&self, field: &str, default: bool) -> Result<bool, WeightsError> {
        match self.get(field) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.error(field, "expected true or false")),
        }
    }
}

/// Reads a Hugging Face Qwen2-VL `config.json` (transformers 4.x flat layout or 5.x
/// `text_config` / `vision_config` layout).
pub fn read_hf_config(path: &Path) -> Result<NuriConfig, WeightsError> {
    let root = read_json(path)?;
    let empty = json!({});
    let text_obj = root.get("text_config").unwrap_or(&root);
    let text = Fields {
        path,
        primary: text_obj,
        fallback: &root,
    };
    // transformers 5 keeps RoPE settings in `rope_parameters`, 4.x in `rope_scaling`.
    let rope = text
        .get("rope_parameters")
        .filter(|v| v.is_object())
        .or_else(|| text.get("rope_scaling").filter(|v| v.is_object()))
        .unwrap_or(&empty);
    let mrope_section = match rope.get("mrope_section") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_u64().map(|v| v as usize))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| text.error("mrope_section", "expected a list of integers"))?,
        _ => return Err(text.error("rope_scaling.mrope_section", "missing")),
    };
    let rope_theta = match rope.get("rope_theta").and_then(Value::as_f64) {
        Some(theta) => theta,
        None => text.f64_or("rope_theta", 1_000_000.0)?,
    };
    let text_config = TextConfig {
        vocab_size: text.usize("vocab_size")?,
        hidden_size: text.usize("hidden_size")?,
        intermediate_size: text.usize("intermediate_size")?,
        num_hidden_layers: text.usize("num_hidden_layers")?,
        num_attention_heads: text.usize("num_attention_heads")?,
        num_key_value_heads: text.usize("num_key_value_heads")?,
        mrope_section,
        rms_norm_eps: text.f64_or("rms_norm_eps", 1e-6)?,
        rope_theta,
        max_position_embeddings: text.usize_or("max_position_embeddings", 32768)?,
        tie_word_embeddings: text.bool_or("tie_word_embeddings", false)?,
    };

    let vision_obj = root
        .get("vision_config")
        .ok_or_else(|| text.error("vision_config", "missing"))?;
    let vision = Fields {
        path,
        primary: vision_obj,
        fallback: &empty,
    };
    if let Some(act) = vision.get("hidden_act").and_then(Value::as_str)
        && act != "quick_gelu"
    {
        return Err(vision.error(
            "vision_config.hidden_act",
            format!("'{act}' is not supported (quick_gelu is)"),
        ));
    }
    let in_channels = match vision.get("in_channels") {
        Some(_) => vision.usize("in_channels")?,
        None => vision.usize_or("in_chans", 3)?,
    };
    let vision_config = VisionConfig {
        depth: vision.usize("depth")?,
        embed_dim: vision.usize("embed_dim")?,
        num_heads: vision.usize("num_heads")?,
        mlp_ratio: vision.usize_or("mlp_ratio", 4)?,
        hidden_size: vision.usize("hidden_size")?,
        in_channels,
        patch_size: vision.usize_or("patch_size", 14)?,
        spatial_merge_size: vision.usize_or("spatial_merge_size", 2)?,
        temporal_patch_size: vision.usize_or("temporal_patch_size", 2)?,
    };
    let config = NuriConfig {
        text: text_config,
        vision: vision_config,
        image_token_id: text.i64("image_token_id")?,
        video_token_id: text.i64("video_token_id")?,
        vision_start_token_id: text.i64("vision_start_token_id")?,
        vision_end_token_id: text.i64("vision_end_token_id")?,
    };
    config.text.validate().map_err(ModelError::from)?;
    config.vision.validate().map_err(ModelError::from)?;
    Ok(config)
}

/// The `config.json` transformers 5 writes for this configuration.
pub fn hf_config_json(config: &NuriConfig) -> Value {
    let t = &config.text;
    let v = &config.vision;
    let rope = json!({
        "rope_type": "default",
        "type": "mrope",
        "mrope_section": t.mrope_section,
        "rope_theta": t.rope_theta,
    });
    json!({
        "architectures": ["Qwen2VLForConditionalGeneration"],
        "model_type": "qwen2_vl",
        "dtype": "float32",
        "image_token_id": config.image_token_id,
        "video_token_id": config.video_token_id,
        "vision_start_token_id": config.vision_start_token_id,
        "vision_end_token_id": config.vision_end_token_id,
        "tie_word_embeddings": t.tie_word_embeddings,
        "text_config": {
            "model_type": "qwen2_vl_text",
            "vocab_size": t.vocab_size,
            "hidden_size": t.hidden_size,
            "intermediate_size": t.intermediate_size,
            "num_hidden_layers": t.num_hidden_layers,
            "num_attention_heads": t.num_attention_heads,
            "num_key_value_heads": t.num_key_value_heads,
            "hidden_act": "silu",
            "rms_norm_eps": t.rms_norm_eps,
            "max_position_embeddings": t.max_position_embeddings,
            "rope_theta": t.rope_theta,
            "rope_scaling": rope,
            "rope_parameters": rope,
            "tie_word_embeddings": t.tie_word_embeddings,
            "use_cache": true,
            "attention_dropout": 0.0,
        },
        "vision_config": {
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
        },
    })
}
