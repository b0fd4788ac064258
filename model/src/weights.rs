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
use crate::linear::EachLinear;
use crate::load::{Checkpoint, Declared, LoadOptions, LoadReport, attach, load_into};
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
    let declared = declared_quantization(&dir.join(CONFIG_FILE))?;
    if dtypes.quantize.is_some() && !nuri_kernels::on_flex(device) {
        return Err(WeightsError::Store {
            path: dir.to_path_buf(),
            message: "quantized linear layers (--quantize) run on the CPU's kernels; on a GPU \
                      load the weights in bf16 or f16 (--dtype)"
                .into(),
        });
    }
    // A tied checkpoint may still carry lm_head.weight (a copy of the embedding).
    let tied_copy = config.text.tie_word_embeddings.then_some("lm_head.weight");
    let checkpoint = Checkpoint {
        dir,
        files: &files,
        table: &IMPORT_TABLE,
        tied_copy,
        declared,
    };
    let loaded = load_into(model, checkpoint, device, dtypes)?;
    let mut model = loaded.model;
    attach(&mut model, loaded.packed, device).map_err(|layers| WeightsError::Mismatch {
        dir: dir.to_path_buf(),
        problems: vec![format!(
            "packed weights for no layer of the model: {layers:?}"
        )],
    })?;
    Ok((model, loaded.report))
}

/// `config.json`'s `quantization_config` for a model with packed layers (`(path, row
/// bytes)`): informational, since packed rows describe themselves to the loader. The bits of a
/// layer follow from its row bytes where only one scheme fits them.
fn quantization_config(packed: &[(String, usize)]) -> Value {
    use nuri_kernels::quant::Scheme;
    let bits = |rb: usize| -> Option<u32> {
        let fits = |s: Scheme| rb.is_multiple_of(s.block_bytes());
        match (fits(Scheme::Q8), fits(Scheme::Q4)) {
            (true, false) => Some(8),
            (false, true) => Some(4),
            _ => None,
        }
    };
    let body: BTreeSet<u32> = packed
        .iter()
        .filter(|(p, _)| !p.ends_with("lm_head"))
        .filter_map(|&(_, rb)| bits(rb))
        .collect();
    serde_json::json!({
        "quant_method": "nuri",
        "bits": body.iter().min(),
        "group_size": nuri_kernels::quant::BLOCK,
        "format": "rows of blocks of 32 weights: f16 scale, then 32 int8 codes (8-bit) or a uint8 zero point and 16 bytes of 4-bit codes (4-bit); see nuri_kernels::quant",
        "packed_layers": packed.len(),
        "modules_not_converted": "layers without a .weight_packed tensor",
    })
}

/// What `config.json`'s `quantization_config` declares: nothing, Nuri's own packed rows
/// (which describe themselves), or AWQ's 4-bit GEMM format. Any other method (GPTQ,
/// bitsandbytes, …) is refused by name: their tensors pack differently.
fn declared_quantization(path: &Path) -> Result<Declared, WeightsError> {
    let value = read_json(path)?;
    let Some(q) = value.get("quantization_config").filter(|q| !q.is_null()) else {
        return Ok(Declared::None);
    };
    let field = |field: &str, problem: String| WeightsError::Field {
        path: path.to_path_buf(),
        field: format!("quantization_config.{field}"),
        problem,
    };
    let method = q.get("quant_method").and_then(Value::as_str).unwrap_or("");
    match method.to_ascii_lowercase().as_str() {
        "nuri" => Ok(Declared::None),
        "awq" => {
            if q.get("bits").and_then(Value::as_u64) != Some(4) {
                return Err(field(
                    "bits",
                    format!("{:?}: AWQ is read at 4 bits", q.get("bits")),
                ));
            }
            let version = q.get("version").and_then(Value::as_str).unwrap_or("gemm");
            if !version.eq_ignore_ascii_case("gemm") {
                return Err(field(
                    "version",
                    format!("{version:?}: Nuri reads AWQ's GEMM packing (the common one)"),
                ));
            }
            if q.get("zero_point").and_then(Value::as_bool) == Some(false) {
                return Err(field(
                    "zero_point",
                    "false: AWQ is read with zero points".into(),
                ));
            }
            Ok(Declared::Awq)
        }
        other => Err(field(
            "quant_method",
            format!(
                "{other:?} is not supported: Nuri reads its own quantized checkpoints (`nuri quantize`) and AWQ's 4-bit GEMM format"
            ),
        )),
    }
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
    // Layers kept quantized are written as `<layer>.weight_packed` (their packed rows), without
    // the float weight's empty place holder.
    let mut packed = Vec::new();
    model.clone().each_linear("", &mut |path, linear| {
        if let Some(p) = &linear.packed {
            packed.push((path.to_string(), p.val().dims()[1]));
        }
    });
    let mut table = export_table(config.family).to_vec();
    table.push((r"\.packed$", ".weight_packed"));
    let mut store = SafetensorsStore::from_file(&partial)
        .with_to_adapter(BurnToPyTorchAdapter)
        .remap(remapper(&table))
        .metadata("format", "pt")
        .overwrite(true);
    if !packed.is_empty() {
        let holders: BTreeSet<String> = packed.iter().map(|(p, _)| format!("{p}.weight")).collect();
        let keep: Vec<String> = model
            .collect(None, None, false)
            .into_iter()
            .map(|t| t.name)
            .filter(|name| !holders.contains(name))
            .collect();
        store = store.with_full_paths(keep);
    }
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
    let mut json = hf_config_json(config);
    if !packed.is_empty() {
        json["quantization_config"] = quantization_config(&packed);
    }
    let text = serde_json::to_string_pretty(&json).expect("a JSON value serializes");
    let mut file = fs::File::create(&partial).map_err(io(&partial))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io(&partial))?;
    fs::rename(&partial, &config_path).map_err(io(&config_path))?;
    Ok(())
}
