//! Hugging Face `config.json` ↔ [`NuriConfig`] for every family: the flat layout of
//! transformers 4.x checkpoints (and of text-only models) and the nested `text_config` /
//! `vision_config` layout of 5.x.

use std::fs;
use std::path::Path;

use crate::vision::{VisionConfig, VisionVariant};
use serde_json::{Value, json};

use crate::config::{LayerType, NormLayout, RopeScaling, TextConfig};
use crate::family::Family;
use crate::multimodal::{ModelError, NuriConfig};
use crate::weights::WeightsError;

mod write;

pub use write::hf_config_json;

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

/// Reads a Hugging Face `config.json` of any supported family: `model_type` (or
/// `architectures`) picks it; transformers 4.x's flat layout and 5.x's `text_config` /
/// `vision_config` layout both read. A field that changes the numerics in a way Nuri does
/// not implement is an error that names it.
pub fn read_hf_config(path: &Path) -> Result<NuriConfig, WeightsError> {
    let root = read_json(path)?;
    let empty = json!({});
    let top = Fields {
        path,
        primary: &root,
        fallback: &empty,
    };
    let family = family_of(&top)?;
    let text_obj = root.get("text_config").unwrap_or(&root);
    let text = Fields {
        path,
        primary: text_obj,
        fallback: &root,
    };
    let text_config = read_text_config(&text, family)?;
    let vision_config = if family.has_vision() {
        let vision_obj = root
            .get("vision_config")
            .ok_or_else(|| text.error("vision_config", "missing"))?;
        let vision = Fields {
            path,
            primary: vision_obj,
            fallback: &empty,
        };
        Some(read_vision_config(&vision, family)?)
    } else {
        None
    };
    let token = |field: &str, default: i64| -> Result<i64, WeightsError> {
        match text.get(field) {
            None | Some(Value::Null) if !family.mrope() || !family.has_vision() => Ok(default),
            _ => text.i64(field),
        }
    };
    let config = NuriConfig {
        text: text_config,
        vision: vision_config,
        image_token_id: token("image_token_id", -1)?,
        video_token_id: token("video_token_id", -1)?,
        vision_start_token_id: token("vision_start_token_id", -1)?,
        vision_end_token_id: token("vision_end_token_id", -1)?,
        family,
    };
    config.text.validate().map_err(ModelError::from)?;
    if let Some(vision) = &config.vision {
        vision.validate().map_err(ModelError::from)?;
    }
    Ok(config)
}

/// The family `config.json` names, or an error listing the supported ones.
fn family_of(top: &Fields) -> Result<Family, WeightsError> {
    let model_type = top.get("model_type").and_then(Value::as_str);
    if let Some(family) = model_type.and_then(Family::from_model_type) {
        return Ok(family);
    }
    let architecture = top
        .get("architectures")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_str);
    if model_type.is_none()
        && let Some(family) = architecture.and_then(Family::from_architecture)
    {
        return Ok(family);
    }
    let named = match (model_type, architecture) {
        (Some(m), _) => format!("model_type '{m}'"),
        (None, Some(a)) => format!("architecture '{a}'"),
        (None, None) => "no model_type or architectures".into(),
    };
    Err(top.error(
        "model_type",
        format!(
            "{named} is not a family Nuri loads (supported model_type: {})",
            Family::supported()
        ),
    ))
}

/// Refuses a field whose value is not what Nuri implements.
fn refuse_unless(
    fields: &Fields,
    field: &str,
    accepted: impl Fn(&Value) -> bool,
    what: &str,
) -> Result<(), WeightsError> {
    match fields.get(field) {
        Some(value) if !value.is_null() && !accepted(value) => Err(fields.error(
            field,
            format!("{value} is not supported (Nuri implements {what})"),
        )),
        _ => Ok(()),
    }
}

fn read_rope(
    text: &Fields,
    family: Family,
) -> Result<(f64, RopeScaling, Vec<usize>), WeightsError> {
    let empty = json!({});
    // transformers 5 keeps RoPE settings in `rope_parameters`, 4.x in `rope_scaling`.
    let rope = text
        .get("rope_parameters")
        .filter(|v| v.is_object())
        .or_else(|| text.get("rope_scaling").filter(|v| v.is_object()))
        .unwrap_or(&empty);
    let rope_fields = Fields {
        path: text.path,
        primary: rope,
        fallback: &empty,
    };
    let default_theta = if family.mrope() {
        1_000_000.0
    } else {
        10_000.0
    };
    let theta = match rope.get("rope_theta").and_then(Value::as_f64) {
        Some(theta) => theta,
        None => text.f64_or("rope_theta", default_theta)?,
    };
    let kind = rope
        .get("rope_type")
        .or_else(|| rope.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let scaling = match kind {
        // Qwen2-VL's 4.x configs say `"type": "mrope"` for the default frequencies.
        "default" | "mrope" => RopeScaling::Default,
        "linear" => RopeScaling::Linear {
            factor: rope_fields.f64_or("factor", 1.0)?,
        },
        "llama3" => RopeScaling::Llama3 {
            factor: rope_fields.f64_or("factor", 8.0)?,
            low_freq_factor: rope_fields.f64_or("low_freq_factor", 1.0)?,
            high_freq_factor: rope_fields.f64_or("high_freq_factor", 4.0)?,
            original_max_position_embeddings: rope_fields
                .usize_or("original_max_position_embeddings", 8192)?,
        },
        other => {
            return Err(text.error(
                "rope_parameters.rope_type",
                format!("'{other}' is not supported (default, linear and llama3 are)"),
            ));
        }
    };
    refuse_unless(
        &rope_fields,
        "partial_rotary_factor",
        |v| v.as_f64() == Some(1.0),
        "a full rotary dimension",
    )?;
    let mrope_section = match rope.get("mrope_section") {
        Some(Value::Array(items)) if family.mrope() => items
            .iter()
            .map(|v| v.as_u64().map(|v| v as usize))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| text.error("mrope_section", "expected a list of integers"))?,
        _ if family.mrope() => return Err(text.error("rope_scaling.mrope_section", "missing")),
        _ => Vec::new(),
    };
    Ok((theta, scaling, mrope_section))
}

fn read_text_config(text: &Fields, family: Family) -> Result<TextConfig, WeightsError> {
    refuse_unless(text, "hidden_act", |v| v == "silu", "silu")?;
    // Dropout would change training's numerics; the published checkpoints have none.
    refuse_unless(
        text,
        "attention_dropout",
        |v| v.as_f64() == Some(0.0),
        "no attention dropout",
    )?;
    let (rope_theta, rope_scaling, mrope_section) = read_rope(text, family)?;
    let heads = text.usize("num_attention_heads")?;
    let mut config = TextConfig {
        vocab_size: text.usize("vocab_size")?,
        hidden_size: text.usize("hidden_size")?,
        intermediate_size: text.usize("intermediate_size")?,
        num_hidden_layers: text.usize("num_hidden_layers")?,
        num_attention_heads: heads,
        num_key_value_heads: text.usize_or("num_key_value_heads", heads)?,
        mrope_section,
        rms_norm_eps: text.f64_or("rms_norm_eps", 1e-6)?,
        rope_theta,
        max_position_embeddings: text.usize_or("max_position_embeddings", 32768)?,
        tie_word_embeddings: text.bool_or("tie_word_embeddings", false)?,
        head_dim: match text.get("head_dim") {
            None | Some(Value::Null) => None,
            Some(_) => Some(text.usize("head_dim")?),
        },
        qkv_bias: true,
        o_bias: false,
        mlp_bias: false,
        qk_norm: false,
        norm_layout: NormLayout::Pre,
        layer_types: Vec::new(),
        sliding_window: None,
        rope_in_full_layers: true,
        rope_scaling,
        embedding_multiplier: 1.0,
        residual_multiplier: 1.0,
        attention_multiplier: None,
        logits_scaling: 1.0,
    };
    // An explicit head_dim equal to the derived one is the same model.
    if config.head_dim == Some(config.hidden_size / heads.max(1))
        && config.hidden_size.is_multiple_of(heads.max(1))
    {
        config.head_dim = None;
    }
    match family {
        Family::Qwen2Vl | Family::Qwen2_5Vl => {
            refuse_unless(
                text,
                "use_sliding_window",
                |v| v == false,
                "no sliding window in Qwen2",
            )?;
        }
        Family::Exaone4 | Family::Exaone4_5 => {
            config.rms_norm_eps = text.f64_or("rms_norm_eps", 1e-5)?;
            config.qkv_bias = false;
            config.qk_norm = true;
            config.norm_layout = NormLayout::Post;
            config.sliding_window = match text.get("sliding_window") {
                None => Some(4096),
                Some(Value::Null) => None,
                Some(_) => Some(text.usize("sliding_window")?),
            };
            // EXAONE 4's global layers use no positional encoding when a window is set.
            config.rope_in_full_layers = config.sliding_window.is_none();
            config.layer_types = exaone_layer_types(text, &config)?;
        }
        Family::HyperClovaX | Family::HyperClovaXVisionV2 => {
            let bias = text.bool_or("attention_bias", false)?;
            config.qkv_bias = bias;
            config.o_bias = bias;
            config.mlp_bias = text.bool_or("mlp_bias", false)?;
            config.norm_layout = if text.bool_or("use_post_norm", true)? {
                NormLayout::Peri
            } else {
                NormLayout::Pre
            };
            config.embedding_multiplier = text.f64_or("embedding_multiplier", 1.0)?;
            config.residual_multiplier = text.f64_or("residual_multiplier", 1.0)?;
            config.logits_scaling = text.f64_or("logits_scaling", 1.0)?;
            config.attention_multiplier = match text.get("attention_multiplier") {
                None | Some(Value::Null) => None,
                Some(_) => Some(text.f64_or("attention_multiplier", 1.0)?),
            };
        }
    }
    // A multimodal config's own `tie_word_embeddings` decides (transformers ties the
    // top-level model's head); HyperCLOVA X Vision's default is tied.
    if let Some(top) = text
        .fallback
        .get("tie_word_embeddings")
        .filter(|v| !v.is_null())
    {
        config.tie_word_embeddings = top
            .as_bool()
            .ok_or_else(|| text.error("tie_word_embeddings", "expected true or false"))?;
    } else if family == Family::HyperClovaXVisionV2 {
        config.tie_word_embeddings = true;
    }
    Ok(config)
}

/// EXAONE 4's `layer_types`, or the ones `sliding_window_pattern` implies
/// (`Exaone4Config.__post_init__`): layer `i` slides unless `(i + 1) % pattern == 0`; a
/// pattern string like "LLLG" repeats over the layers.
fn exaone_layer_types(text: &Fields, config: &TextConfig) -> Result<Vec<LayerType>, WeightsError> {
    let layers = config.num_hidden_layers;
    if let Some(Value::Array(items)) = text.get("layer_types") {
        return items
            .iter()
            .map(|v| match v.as_str() {
                Some("full_attention") => Ok(LayerType::Full),
                Some("sliding_attention") => Ok(LayerType::Sliding),
                _ => Err(text.error(
                    "layer_types",
                    format!("{v} is not full_attention or sliding_attention"),
                )),
            })
            .collect();
    }
    if config.sliding_window.is_none() {
        return Ok(vec![LayerType::Full; layers]);
    }
    let kinds = match text.get("sliding_window_pattern") {
        None => (0..layers).map(|i| (i + 1) % 4 != 0).collect::<Vec<bool>>(),
        Some(Value::String(pattern)) if !pattern.is_empty() => {
            let chars: Vec<char> = pattern.chars().collect();
            (0..layers)
                .map(|i| chars[i % chars.len()] == 'L' && i + 1 != layers)
                .collect()
        }
        Some(v) => match v.as_u64() {
            Some(0) | None => {
                return Err(text.error(
                    "sliding_window_pattern",
                    format!("{v} is not a positive period or an L/G string"),
                ));
            }
            Some(p) => (0..layers).map(|i| (i + 1) % p as usize != 0).collect(),
        },
    };
    Ok(kinds
        .into_iter()
        .map(|sliding| {
            if sliding {
                LayerType::Sliding
            } else {
                LayerType::Full
            }
        })
        .collect())
}

fn read_vision_config(vision: &Fields, family: Family) -> Result<VisionConfig, WeightsError> {
    let in_channels = match vision.get("in_channels") {
        Some(_) => vision.usize("in_channels")?,
        None => vision.usize_or("in_chans", 3)?,
    };
    if family == Family::Qwen2Vl {
        refuse_unless(vision, "hidden_act", |v| v == "quick_gelu", "quick_gelu")?;
        return Ok(VisionConfig {
            depth: vision.usize("depth")?,
            embed_dim: vision.usize("embed_dim")?,
            num_heads: vision.usize("num_heads")?,
            mlp_ratio: vision.usize_or("mlp_ratio", 4)?,
            hidden_size: vision.usize("hidden_size")?,
            in_channels,
            patch_size: vision.usize_or("patch_size", 14)?,
            spatial_merge_size: vision.usize_or("spatial_merge_size", 2)?,
            temporal_patch_size: vision.usize_or("temporal_patch_size", 2)?,
            ..VisionConfig::tiny()
        });
    }
    // Qwen2.5-VL's tower (`Qwen2_5_VLVisionConfig`): `hidden_size` is the ViT's width,
    // `out_hidden_size` the merger's output.
    refuse_unless(vision, "hidden_act", |v| v == "silu", "silu")?;
    let fullatt = match vision.get("fullatt_block_indexes") {
        None | Some(Value::Null) => vec![7, 15, 23, 31],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_u64().map(|v| v as usize))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                vision.error("vision_config.fullatt_block_indexes", "expected integers")
            })?,
        Some(_) => {
            return Err(vision.error(
                "vision_config.fullatt_block_indexes",
                "expected a list of integers",
            ));
        }
    };
    Ok(VisionConfig {
        depth: vision.usize("depth")?,
        embed_dim: vision.usize("hidden_size")?,
        num_heads: vision.usize("num_heads")?,
        mlp_ratio: 4,
        hidden_size: vision.usize("out_hidden_size")?,
        in_channels,
        patch_size: vision.usize_or("patch_size", 14)?,
        spatial_merge_size: vision.usize_or("spatial_merge_size", 2)?,
        temporal_patch_size: vision.usize_or("temporal_patch_size", 2)?,
        variant: VisionVariant::Qwen2_5Vl,
        intermediate_size: vision.usize("intermediate_size")?,
        window_size: vision.usize_or("window_size", 112)?,
        fullatt_block_indexes: fullatt,
        num_key_value_heads: match family {
            Family::Exaone4_5 => Some(vision.usize_or("num_key_value_heads", 8)?),
            _ => None,
        },
        tokens_per_second: vision.f64_or("tokens_per_second", 4.0)?,
    })
}
