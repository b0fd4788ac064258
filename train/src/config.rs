//! A training run's configuration: TOML or JSON, every field overridable from the command line
//! (`--set optim.lr=1e-3`), saved beside the checkpoints as the effective config.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::TrainError;

/// Where the model comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSource {
    /// A preset of our own (`tiny`, `quickstart`, `small-100m`) or the path of a Hugging Face
    /// Qwen2-VL `config.json` (an architecture to draw fresh: e.g. `nuri bench
    /// --export-config` edited), its vocabulary and special token ids taken from the
    /// tokenizer.
    #[serde(default)]
    pub preset: Option<String>,
    /// A Hugging Face checkpoint directory of any supported family (weights, tokenizer, template, processor
    /// configs).
    #[serde(default)]
    pub checkpoint: Option<PathBuf>,
    /// For a preset: a directory with `tokenizer.json` (and optionally the chat template and
    /// processor configs).
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
}

/// What to do with a sample that cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BadSamplePolicy {
    /// Report it (file and line) and go on; the run's summary counts them.
    Skip,
    /// Report it and stop.
    Fail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// JSONL training file.
    pub train: PathBuf,
    /// JSONL validation file (optional).
    pub val: Option<PathBuf>,
    /// Relative media paths resolve against this folder (default: the JSONL file's folder).
    pub media_root: Option<PathBuf>,
    pub on_bad_sample: BadSamplePolicy,
    /// Loss on the last assistant turn only (else on every assistant turn).
    pub last_turn_only: bool,
    /// Loss on an answer's reasoning too (an assistant turn's `reasoning_content` /
    /// `reasoning` / `thinking`, or a `<think>` block in its text, as the chat template
    /// renders it); `false` learns only what follows the reasoning, given it. Excluding
    /// needs a tokenizer whose thinking markers are tokens (EXAONE 4.5, HyperCLOVA X Think,
    /// Qwen3).
    pub train_on_reasoning: bool,
    /// Threads decoding and preprocessing media ahead of the training step.
    pub workers: usize,
    /// Samples per batch are drawn from windows of `batch_size × bucket_batches` samples and
    /// grouped by length within each window.
    pub bucket_batches: usize,
    /// Upper bound on the resized pixels of an image or a video frame (default: the
    /// processor's).
    pub max_pixels: Option<usize>,
    /// The most tokens a sample may have (text and visual tokens after the chat template); a
    /// longer one is a bad sample (skipped and reported, or the run stops under
    /// `on_bad_sample = "fail"`), as is one whose per-item `min_pixels` alone asks for more.
    pub max_seq_len: usize,
}

/// Default [`DataConfig::max_seq_len`]: Qwen2-VL's fine-tuning length, and far below what
/// exhausts memory (attention's scores grow with its square).
pub const DEFAULT_MAX_SEQ_LEN: usize = 8192;

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            train: PathBuf::new(),
            val: None,
            media_root: None,
            on_bad_sample: BadSamplePolicy::Skip,
            last_turn_only: false,
            train_on_reasoning: true,
            workers: 2,
            bucket_batches: 8,
            max_pixels: None,
            max_seq_len: DEFAULT_MAX_SEQ_LEN,
        }
    }
}

/// AdamW with one learning rate per parameter group; 0 freezes a group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    /// Peak learning rate of the language model (and `lm_head`).
    pub lr: f64,
    /// Peak learning rate of the vision encoder (patch embedding and blocks).
    pub lr_vision: f64,
    /// Peak learning rate of the merger (projector).
    pub lr_merger: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Linear warmup steps, then cosine decay to `min_lr_ratio × lr` at the last step.
    pub warmup_steps: usize,
    pub min_lr_ratio: f64,
    /// Clip the global gradient norm (over all trained parameters) to this; 0 disables.
    pub max_grad_norm: f64,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            lr_vision: 1e-3,
            lr_merger: 1e-3,
            weight_decay: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            warmup_steps: 10,
            min_lr_ratio: 0.1,
            max_grad_norm: 1.0,
        }
    }
}

/// The precision of the forward and backward passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// fp32 everywhere.
    #[default]
    Fp32,
    /// Mixed precision: fp32 master weights and optimizer state; each step casts the weights
    /// to bf16 for the forward and backward passes (the loss in fp32), and the gradients
    /// flow back through the casts to the fp32 weights.
    Bf16,
}

/// Low-rank adapters on the language model's projections (the base weights freeze); they are
/// merged into the weights on export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraSettings {
    pub rank: usize,
    /// The adapter's output is scaled by `alpha / rank`.
    pub alpha: f64,
    /// Weights whose path contains one of these get an adapter.
    pub targets: Vec<String>,
}

impl Default for LoraSettings {
    fn default() -> Self {
        Self {
            rank: 8,
            alpha: 16.0,
            targets: [
                "q_proj",
                "k_proj",
                "v_proj",
                "o_proj",
                "gate_proj",
                "up_proj",
                "down_proj",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub model: ModelSource,
    pub data: DataConfig,
    #[serde(default)]
    pub optim: OptimConfig,
    /// Where checkpoints, `metrics.jsonl` and the effective config go.
    pub out_dir: PathBuf,
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Optimizer steps in the run.
    pub steps: usize,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    #[serde(default = "one")]
    pub grad_accum: usize,
    /// Checkpoint every N steps (and at the end).
    #[serde(default = "default_every")]
    pub checkpoint_every: usize,
    /// Checkpoints kept (the newest).
    #[serde(default = "default_keep")]
    pub keep_checkpoints: usize,
    /// Validation loss every N steps (0: never).
    #[serde(default)]
    pub eval_every: usize,
    /// `cpu`, `wgpu` or `cuda`.
    #[serde(default = "default_device")]
    pub device: String,
    /// Recompute memory-bound activations in the backward pass instead of keeping them
    /// (Burn's balanced gradient checkpointing): less memory, more compute.
    #[serde(default)]
    pub gradient_checkpointing: bool,
    /// Devices to train on, data parallel (`cuda` 0..n, `wgpu` discrete GPUs 0..n; on the CPU
    /// the shards run on threads over the same cores).
    #[serde(default = "one")]
    pub devices: usize,
    /// LoRA on the language model instead of training its full weights.
    #[serde(default)]
    pub lora: Option<LoraSettings>,
    /// `fp32` or `bf16` (mixed precision).
    #[serde(default)]
    pub precision: Precision,
    /// A time budget: the run ends (checkpointed and exported) at the first step after this
    /// many minutes of training (validation included; a resumed run counts its earlier
    /// time), or at `steps`, whichever comes first. The schedule follows whichever of the
    /// two is further along, so a timed run still warms up and decays fully.
    #[serde(default)]
    pub max_minutes: Option<f64>,
}

fn default_seed() -> u64 {
    42
}
fn default_batch() -> usize {
    8
}
fn one() -> usize {
    1
}
fn default_every() -> usize {
    100
}
fn default_keep() -> usize {
    3
}
fn default_device() -> String {
    "cpu".into()
}

impl TrainConfig {
    /// Reads a `.toml` or `.json` config and applies `key.path=value` overrides (values in
    /// TOML syntax; a bare word is a string).
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|source| TrainError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let bad = |message: String| TrainError::Config {
            path: path.to_path_buf(),
            message,
        };
        let mut json: Json = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text).map_err(|e| bad(format!("invalid JSON: {e}")))?
        } else {
            let value: toml::Value =
                toml::from_str(&text).map_err(|e| bad(format!("invalid TOML: {e}")))?;
            serde_json::to_value(value).map_err(|e| bad(e.to_string()))?
        };
        for item in overrides {
            apply_override(&mut json, item).map_err(|m| bad(format!("--set {item}: {m}")))?;
        }
        let config: TrainConfig = serde_json::from_value(json).map_err(|e| bad(format!("{e}")))?;
        config.validate().map_err(bad)?;
        Ok(config)
    }

    /// Checks values that serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        let m = &self.model;
        if m.preset.is_some() == m.checkpoint.is_some() {
            return Err("model: give exactly one of `preset` or `checkpoint`".into());
        }
        if m.preset.is_some() && m.tokenizer.is_none() {
            return Err("model.tokenizer: a preset needs a tokenizer directory".into());
        }
        if let Some(m) = self.max_minutes
            && !(m.is_finite() && m > 0.0)
        {
            return Err(format!(
                "max_minutes: must be a positive number of minutes, got {m}"
            ));
        }
        for (name, v) in [
            ("steps", self.steps),
            ("batch_size", self.batch_size),
            ("grad_accum", self.grad_accum),
            ("checkpoint_every", self.checkpoint_every),
            ("keep_checkpoints", self.keep_checkpoints),
            ("data.bucket_batches", self.data.bucket_batches),
            ("data.max_seq_len", self.data.max_seq_len),
            ("devices", self.devices),
        ] {
            if v == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        let o = &self.optim;
        for (name, v) in [
            ("optim.lr", o.lr),
            ("optim.lr_vision", o.lr_vision),
            ("optim.lr_merger", o.lr_merger),
            ("optim.weight_decay", o.weight_decay),
            ("optim.max_grad_norm", o.max_grad_norm),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("{name} must be a finite number ≥ 0, got {v}"));
            }
        }
        if o.lr == 0.0 && o.lr_vision == 0.0 && o.lr_merger == 0.0 {
            return Err("optim: every learning rate is 0, so nothing would train".into());
        }
        if !(0.0..=1.0).contains(&o.min_lr_ratio) {
            return Err(format!(
                "optim.min_lr_ratio must be in [0, 1], got {}",
                o.min_lr_ratio
            ));
        }
        if let Some(lora) = &self.lora
            && (lora.rank == 0 || lora.targets.is_empty())
        {
            return Err("lora: rank must be at least 1 and targets non-empty".into());
        }
        if self.precision == Precision::Bf16 && self.lora.is_some() {
            return Err("precision = \"bf16\" with LoRA is not supported yet".into());
        }
        if self.data.train.as_os_str().is_empty() {
            return Err("data.train: a JSONL training file is required".into());
        }
        Ok(())
    }
}

/// Sets `a.b.c = value` in a JSON object tree.
fn apply_override(json: &mut Json, item: &str) -> Result<(), String> {
    let (key, raw) = item.split_once('=').ok_or("expected key.path=value")?;
    let value: Json = match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut table) => {
            serde_json::to_value(table.remove("v").expect("parsed v")).map_err(|e| e.to_string())?
        }
        Err(_) => Json::String(raw.to_string()),
    };
    let mut node = json;
    let parts: Vec<&str> = key.trim().split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let object = node
            .as_object_mut()
            .ok_or_else(|| format!("`{}` is not a table", parts[..i].join(".")))?;
        if i + 1 == parts.len() {
            object.insert(part.to_string(), value);
            return Ok(());
        }
        node = object
            .entry(part.to_string())
            .or_insert_with(|| Json::Object(Default::default()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_config_with_overrides() {
        let dir = std::env::temp_dir().join(format!("nuri-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("run.toml");
        std::fs::write(
            &path,
            "out_dir = \"runs/a\"\nsteps = 10\n[model]\npreset = \"tiny\"\ntokenizer = \"tok\"\n[data]\ntrain = \"t.jsonl\"\n",
        )
        .expect("write");
        let config = TrainConfig::load(
            &path,
            &[
                "optim.lr=5e-4".into(),
                "data.on_bad_sample=\"fail\"".into(),
                "seed=7".into(),
            ],
        )
        .expect("valid");
        assert_eq!(config.optim.lr, 5e-4);
        assert_eq!(config.data.on_bad_sample, BadSamplePolicy::Fail);
        assert_eq!((config.seed, config.steps, config.batch_size), (7, 10, 8));
        assert_eq!(config.data.max_seq_len, DEFAULT_MAX_SEQ_LEN);
        let err = TrainConfig::load(&path, &["data.max_seq_len=0".into()]).unwrap_err();
        assert!(err.to_string().contains("data.max_seq_len"), "{err}");
        let err = TrainConfig::load(&path, &["steps=0".into()]).unwrap_err();
        assert!(
            err.to_string().contains("steps") && err.to_string().contains("run.toml"),
            "{err}"
        );
        let err = TrainConfig::load(&path, &["optim.lrr=1".into()]).unwrap_err();
        assert!(err.to_string().contains("lrr"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
