//! Hugging Face checkpoints: `config.json` ↔ [`NuriConfig`], and `model.safetensors` (or
//! sharded `model-0000x-of-0000y.safetensors` with `model.safetensors.index.json`) ↔
//! [`NuriModel`], through `burn::store`.
//!
//! Loading is strict: a tensor the model lacks, a tensor the checkpoint lacks, or one of the
//! wrong shape is an error that names it. The one renaming table, [`IMPORT_TABLE`], maps
//! both key layouts transformers uses (on disk: `model.layers…`, `visual…`; in memory in
//! 5.x: `model.language_model.layers…`, `model.visual…`) onto the module tree; export writes
//! the on-disk layout, as `save_pretrained` does.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, Param};
use burn::store::{
    ApplyError, BurnToPyTorchAdapter, KeyRemapper, ModuleSnapshot, PyTorchToBurnAdapter,
    SafetensorsStore,
};
use burn::tensor::{DType, Device, Tensor};
use nuri_encoders::VisionConfig;
use serde_json::{Value, json};
use thiserror::Error;

use crate::config::TextConfig;
use crate::multimodal::{ModelError, NuriConfig, NuriModel};

/// Checkpoint key (either transformers layout) → module path. Applied in order.
pub const IMPORT_TABLE: [(&str, &str); 4] = [
    (r"^visual\.", "model.visual."),
    (
        r"^model\.(embed_tokens|layers|norm)\.",
        "model.language_model.$1.",
    ),
    // The merger's MLP is an nn.Sequential(Linear, GELU, Linear) in the reference.
    (
        r"^model\.visual\.merger\.mlp\.0\.",
        "model.visual.merger.fc1.",
    ),
    (
        r"^model\.visual\.merger\.mlp\.2\.",
        "model.visual.merger.fc2.",
    ),
];

/// Module path → checkpoint key, for export: the layout transformers itself writes
/// (`model.layers…`, `visual…`, `lm_head…`). Applied in order.
pub const EXPORT_TABLE: [(&str, &str); 4] = [
    (r"^model\.visual\.merger\.fc1\.", "visual.merger.mlp.0."),
    (r"^model\.visual\.merger\.fc2\.", "visual.merger.mlp.2."),
    (r"^model\.visual\.", "visual."),
    (r"^model\.language_model\.", "model."),
];

const CONFIG_FILE: &str = "config.json";
const SINGLE_FILE: &str = "model.safetensors";
const INDEX_FILE: &str = "model.safetensors.index.json";

/// What went wrong reading or writing a checkpoint.
#[derive(Debug, Error)]
pub enum WeightsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: field `{field}`: {problem}")]
    Field {
        path: PathBuf,
        field: String,
        problem: String,
    },
    #[error("{dir}: no {SINGLE_FILE} or {INDEX_FILE}")]
    NoWeights { dir: PathBuf },
    #[error("{path}: {message}")]
    Store { path: PathBuf, message: String },
    #[error("{dir}: the checkpoint lacks {} tensor(s) the model needs: {}", .names.len(), .names.join(", "))]
    Missing { dir: PathBuf, names: Vec<String> },
    #[error("{dir}: the checkpoint has {} tensor(s) the model does not: {}", .names.len(), .names.join(", "))]
    Unexpected { dir: PathBuf, names: Vec<String> },
    #[error("{dir}: {}", .problems.join("; "))]
    Mismatch { dir: PathBuf, problems: Vec<String> },
    #[error(transparent)]
    Model(#[from] ModelError),
}

fn read_json(path: &Path) -> Result<Value, WeightsError> {
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

/// The weight files of a checkpoint directory: the index's shards, or the single file.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, WeightsError> {
    let index = dir.join(INDEX_FILE);
    if index.exists() {
        let value = read_json(&index)?;
        let map = value
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| WeightsError::Field {
                path: index.clone(),
                field: "weight_map".into(),
                problem: "missing or not an object".into(),
            })?;
        let shards: BTreeSet<&str> = map.values().filter_map(Value::as_str).collect();
        return Ok(shards.into_iter().map(|shard| dir.join(shard)).collect());
    }
    let single = dir.join(SINGLE_FILE);
    if single.exists() {
        return Ok(vec![single]);
    }
    Err(WeightsError::NoWeights {
        dir: dir.to_path_buf(),
    })
}

fn remapper(table: &[(&str, &str)]) -> KeyRemapper {
    KeyRemapper::from_patterns(table.to_vec()).expect("the remapping tables are valid regexes")
}

/// Casts every float parameter to one dtype.
struct CastParams(DType);

impl ModuleMapper for CastParams {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let dtype = self.0;
        param.map(|t| t.cast(dtype))
    }
}

/// Loads a Hugging Face Qwen2-VL checkpoint directory onto `device`, with float parameters
/// in `dtype` (`DType::F32` or `DType::BF16`).
pub fn load_pretrained(
    dir: &Path,
    device: &Device,
    dtype: DType,
) -> Result<(NuriConfig, NuriModel), WeightsError> {
    let config = read_hf_config(&dir.join(CONFIG_FILE))?;
    let mut model = NuriModel::new(&config, device)?;
    let files = weight_files(dir)?;
    let mut applied = BTreeSet::new();
    let mut missing: Option<BTreeSet<String>> = None;
    let mut unexpected = Vec::new();
    let mut problems = Vec::new();
    for file in &files {
        if !file.exists() {
            return Err(WeightsError::Io {
                path: file.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "shard listed in the index is missing",
                ),
            });
        }
        let mut store = SafetensorsStore::from_file(file)
            .with_from_adapter(PyTorchToBurnAdapter)
            .remap(remapper(&IMPORT_TABLE))
            .allow_partial(true)
            .validate(false);
        let result = model
            .load_from(&mut store)
            .map_err(|e| WeightsError::Store {
                path: file.clone(),
                message: e.to_string(),
            })?;
        applied.extend(result.applied);
        let here: BTreeSet<String> = result.missing.into_iter().map(|(path, _)| path).collect();
        missing = Some(match missing {
            None => here,
            Some(before) => before.intersection(&here).cloned().collect(),
        });
        unexpected.extend(result.unused);
        for error in result.errors {
            problems.push(match error {
                ApplyError::ShapeMismatch {
                    path,
                    expected,
                    found,
                } => format!("tensor {path} has shape {found:?}, the model expects {expected:?}"),
                other => other.to_string(),
            });
        }
    }
    if !problems.is_empty() {
        return Err(WeightsError::Mismatch {
            dir: dir.to_path_buf(),
            problems,
        });
    }
    // A tied checkpoint may still carry lm_head.weight (a copy of the embedding).
    unexpected.retain(|name| !(config.text.tie_word_embeddings && name == "lm_head.weight"));
    if !unexpected.is_empty() {
        unexpected.sort();
        return Err(WeightsError::Unexpected {
            dir: dir.to_path_buf(),
            names: unexpected,
        });
    }
    let missing: Vec<String> = missing
        .unwrap_or_default()
        .into_iter()
        .filter(|name| !applied.contains(name))
        .collect();
    if !missing.is_empty() {
        return Err(WeightsError::Missing {
            dir: dir.to_path_buf(),
            names: missing,
        });
    }
    Ok((config, model.map(&mut CastParams(dtype))))
}

/// Writes `model` and `config` as a Hugging Face checkpoint directory (`config.json` and one
/// `model.safetensors`), each file written to a temporary name and renamed into place.
pub fn save_pretrained(
    model: &NuriModel,
    config: &NuriConfig,
    dir: &Path,
) -> Result<(), WeightsError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| WeightsError::Io { path, source }
    };
    fs::create_dir_all(dir).map_err(io(dir))?;

    let weights = dir.join(SINGLE_FILE);
    let partial = dir.join(format!("{SINGLE_FILE}.partial"));
    let mut store = SafetensorsStore::from_file(&partial)
        .with_to_adapter(BurnToPyTorchAdapter)
        .remap(remapper(&EXPORT_TABLE))
        .metadata("format", "pt")
        .overwrite(true);
    model
        .save_into(&mut store)
        .map_err(|e| WeightsError::Store {
            path: partial.clone(),
            message: e.to_string(),
        })?;
    fs::File::open(&partial)
        .and_then(|f| f.sync_all())
        .map_err(io(&partial))?;
    fs::rename(&partial, &weights).map_err(io(&weights))?;

    let config_path = dir.join(CONFIG_FILE);
    let partial = dir.join(format!("{CONFIG_FILE}.partial"));
    let text =
        serde_json::to_string_pretty(&hf_config_json(config)).expect("a JSON value serializes");
    let mut file = fs::File::create(&partial).map_err(io(&partial))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io(&partial))?;
    fs::rename(&partial, &config_path).map_err(io(&config_path))?;
    Ok(())
}
