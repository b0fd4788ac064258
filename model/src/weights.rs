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

use burn::store::{BurnToPyTorchAdapter, KeyRemapper, ModuleSnapshot, SafetensorsStore};
use burn::tensor::{DType, Device};
use serde_json::Value;
use thiserror::Error;

use crate::family::Family;
use crate::hf_config::{hf_config_json, read_hf_config, read_json};
use crate::load::{LoadOptions, LoadReport, load_into};
use crate::multimodal::{ModelError, NuriConfig, NuriModel};

/// Checkpoint key (any family's layouts) → module path. Applied in order. Naver's original
/// HyperCLOVA X Vision layout (`model.language_model.model.…`, `model.language_model.lm_head`,
/// `model.vision_projector`) and transformers' (`model.vision_model`, `model.projector`) both
/// map onto the one tree, as transformers' own conversion mapping does.
pub const IMPORT_TABLE: [(&str, &str); 8] = [
    (r"^model\.language_model\.model\.", "model.language_model."),
    (r"^model\.language_model\.lm_head\.", "lm_head."),
    (r"^model\.vision_projector\.", "model.projector."),
    (r"^model\.vision_model\.", "model.visual."),
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

/// Module path → checkpoint key, for export of Qwen2-VL and Qwen2.5-VL: the layout
/// transformers itself writes (`model.layers…`, `visual…`, `lm_head…`). Applied in order.
pub const EXPORT_TABLE: [(&str, &str); 4] = [
    (r"^model\.visual\.merger\.fc1\.", "visual.merger.mlp.0."),
    (r"^model\.visual\.merger\.fc2\.", "visual.merger.mlp.2."),
    (r"^model\.visual\.", "visual."),
    (r"^model\.language_model\.", "model."),
];

/// Export of EXAONE 4.5: the tree as transformers 5 holds and saves it.
const EXPORT_EXAONE4_5: [(&str, &str); 2] = [
    (
        r"^model\.visual\.merger\.fc1\.",
        "model.visual.merger.mlp.0.",
    ),
    (
        r"^model\.visual\.merger\.fc2\.",
        "model.visual.merger.mlp.2.",
    ),
];

/// Export of HyperCLOVA X Vision: the names transformers 5 writes (its conversion mapping
/// reversed: `model.vision_model`, `model.vision_projector`, `model.language_model.lm_head`).
const EXPORT_HYPERCLOVAX_VISION: [(&str, &str); 5] = [
    (r"^lm_head\.", "model.language_model.lm_head."),
    (r"^model\.projector\.", "model.vision_projector."),
    (
        r"^model\.visual\.merger\.fc1\.",
        "model.vision_model.merger.mlp.0.",
    ),
    (
        r"^model\.visual\.merger\.fc2\.",
        "model.vision_model.merger.mlp.2.",
    ),
    (r"^model\.visual\.", "model.vision_model."),
];

/// Export of a text-only model: `model.layers…`, `lm_head…`.
const EXPORT_TEXT: [(&str, &str); 1] = [(r"^model\.language_model\.", "model.")];

/// The export renaming for `family`.
pub fn export_table(family: Family) -> &'static [(&'static str, &'static str)] {
    match family {
        Family::Qwen2Vl | Family::Qwen2_5Vl => &EXPORT_TABLE,
        Family::Exaone4_5 => &EXPORT_EXAONE4_5,
        Family::HyperClovaXVisionV2 => &EXPORT_HYPERCLOVAX_VISION,
        Family::Exaone4 | Family::HyperClovaX => &EXPORT_TEXT,
    }
}

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

/// Loads a Hugging Face checkpoint directory of any supported family onto `device`, with every
/// float parameter in `dtype`.
pub fn load_pretrained(
    dir: &Path,
    device: &Device,
    dtype: DType,
) -> Result<(NuriConfig, NuriModel), WeightsError> {
    load_pretrained_with(dir, device, LoadOptions::all(dtype)).map(|(c, m, _)| (c, m))
}

/// Loads a checkpoint directory with the matrices (linear weights, embeddings) and the rest
/// in the dtypes of `dtypes` — e.g. bf16 matrices and f32 activations on the CPU — and says
/// what it read (see [`crate::load`]).
pub fn load_pretrained_with(
    dir: &Path,
    device: &Device,
    dtypes: LoadOptions,
) -> Result<(NuriConfig, NuriModel, LoadReport), WeightsError> {
    let config = read_hf_config(&dir.join(CONFIG_FILE))?;
    let (model, report) = load_weights(&config, dir, device, dtypes)?;
    Ok((config, model, report))
}

/// The weights of the checkpoint directory `dir` for `config` (its `config.json`, already
/// read), as [`load_pretrained_with`] loads them.
pub fn load_weights(
    config: &NuriConfig,
    dir: &Path,
    device: &Device,
    dtypes: LoadOptions,
) -> Result<(NuriModel, LoadReport), WeightsError> {
    let model = NuriModel::new(config, device)?;
    let files = weight_files(dir)?;
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
    }
    // A tied checkpoint may still carry lm_head.weight (a copy of the embedding).
    let tied_copy = config.text.tie_word_embeddings.then_some("lm_head.weight");
    load_into(model, dir, &files, &IMPORT_TABLE, tied_copy, device, dtypes)
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
        .remap(remapper(export_table(config.family)))
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
