//! Flags that several commands share, and the small commands that need no module of their
//! own (`nuri devices`, `nuri config`, `nuri convert`, `nuri plot`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use burn::tensor::{DType, Device};
use nuri_infer::SamplingParams;
use nuri_model::{NuriConfig, TextConfig, load_pretrained, save_pretrained};

use crate::DeviceChoice;

/// Decoding flags shared by `generate` and `chat`.
#[derive(clap::Args, Debug, Clone)]
pub struct SamplingArgs {
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Keep the k most likely tokens (0 = all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Nucleus sampling mass (1 = off).
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Drop tokens under min_p × the top probability (0 = off).
    #[arg(long, default_value_t = 0.0)]
    min_p: f32,
    /// Above 1 discourages repeating tokens.
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// Stop when the answer contains this text (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// A reasoning model's thinking budget: after this many tokens of thinking, its end
    /// marker comes next.
    #[arg(long)]
    max_thinking_tokens: Option<usize>,
}

impl SamplingArgs {
    pub fn params(&self) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repetition_penalty: self.repetition_penalty,
            seed: self.seed,
            max_new_tokens: self.max_new_tokens,
            stop: self.stop.clone(),
            ignore_eos: false,
            max_thinking_tokens: self.max_thinking_tokens,
        }
    }
}

/// Keyword arguments for the chat template, shared by `generate` and `chat`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TemplateArgs {
    /// Thinking mode on (`enable_thinking=true`), for templates with one (EXAONE 4.5,
    /// HyperCLOVA X Think, Qwen3).
    #[arg(long, conflicts_with = "no_think")]
    think: bool,
    /// Thinking mode off (`enable_thinking=false`).
    #[arg(long)]
    no_think: bool,
    /// Any other template argument, KEY=VALUE (repeatable); VALUE is read as JSON when it is
    /// JSON (`true`, `3`, `"text"`), else as text.
    #[arg(long = "template-arg", value_name = "KEY=VALUE", value_parser = template_arg)]
    template_args: Vec<(String, serde_json::Value)>,
}

impl TemplateArgs {
    /// The arguments as the template receives them (`--think`/`--no-think` over a
    /// `--template-arg enable_thinking=…`).
    pub fn kwargs(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut map: serde_json::Map<_, _> = self.template_args.iter().cloned().collect();
        if self.think || self.no_think {
            map.insert("enable_thinking".into(), self.think.into());
        }
        map
    }
}

/// `KEY=VALUE` → the key and VALUE as JSON (or as text when it is not JSON).
fn template_arg(s: &str) -> Result<(String, serde_json::Value), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            let value = serde_json::from_str(value)
                .unwrap_or_else(|_| serde_json::Value::String(value.to_string()));
            Ok((key.trim().to_string(), value))
        }
        _ => Err(format!("expected KEY=VALUE, got `{s}`")),
    }
}

/// Where the model comes from and on which device it runs.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// A checkpoint directory (Hugging Face layout of Qwen2-VL, Qwen2.5-VL, EXAONE 4.5 / 4.0 or
    /// HyperCLOVA X Vision / text; or a Nuri run directory).
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceChoice,
    /// The weights' dtype: f32, bf16 or f16. On the CPU the linear layers and embeddings are
    /// kept in it and computed in f32 (half the bytes read per token); on a GPU everything is
    /// computed in it. A bf16 checkpoint loads as bf16 without an f32 copy.
    #[arg(long, default_value = "f32", value_parser = parse_dtype)]
    pub dtype: DType,
    /// The same as `--dtype bf16`.
    #[arg(long, conflicts_with = "dtype")]
    pub bf16: bool,
    /// Say what loading took: time, bytes, peak memory.
    #[arg(long)]
    pub verbose: bool,
    /// On the CPU, use the weights in place from the memory-mapped checkpoint when they are
    /// already in the chosen dtype: loading is instant and the memory is the page cache's,
    /// but decoding was ~12% slower than from the loader's own copies on the benchmark machine.
    #[arg(long)]
    pub mmap: bool,
    /// Keep the language model's linear layers in 8 or 4 bits (q8: 8.5 bits per weight, q4:
    /// 4.75), quantized as the checkpoint is read, on the CPU. The output layer stays at 8
    /// bits at most, the vision tower in `--dtype` unless `--quantize-vision`. A checkpoint
    /// already quantized (`nuri quantize`, AWQ) loads as it is without this flag.
    #[arg(long, value_parser = parse_scheme)]
    pub quantize: Option<nuri_kernels::quant::Scheme>,
    /// With `--quantize`: the vision tower and its projector too.
    #[arg(long, requires = "quantize")]
    pub quantize_vision: bool,
}

/// `q8` or `q4`.
pub fn parse_scheme(name: &str) -> Result<nuri_kernels::quant::Scheme, String> {
    use nuri_kernels::quant::Scheme;
    match name.to_ascii_lowercase().as_str() {
        "q8" | "int8" | "8" => Ok(Scheme::Q8),
        "q4" | "int4" | "4" => Ok(Scheme::Q4),
        _ => Err(format!("unknown quantization `{name}` (q8 or q4)")),
    }
}

/// `f32`, `bf16` or `f16`.
pub fn parse_dtype(name: &str) -> Result<DType, String> {
    match name {
        "f32" | "fp32" | "float32" => Ok(DType::F32),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        "f16" | "fp16" | "float16" => Ok(DType::F16),
        _ => Err(format!("unknown dtype `{name}` (f32, bf16 or f16)")),
    }
}

/// The dtypes parameters are kept in for weights of `dtype` on `device`: on the CPU the
/// matrices in `dtype` and the rest (and the activations) in f32, since the CPU's f32
/// arithmetic is as fast and the bytes that decoding reads are the matrices'; elsewhere all
/// in `dtype`.
pub fn load_dtypes(dtype: DType, device: &Device) -> nuri_model::LoadOptions {
    if nuri_kernels::on_flex(device) {
        nuri_model::LoadOptions {
            matrices: dtype,
            rest: DType::F32,
            mmap: false,
            quantize: None,
        }
    } else {
        nuri_model::LoadOptions::all(dtype)
    }
}

impl ModelArgs {
    /// The weights' dtype the flags ask for.
    pub fn dtype(&self) -> DType {
        if self.bf16 { DType::BF16 } else { self.dtype }
    }

    /// The quantization the flags ask for.
    pub fn quantize(&self) -> Option<nuri_model::Quantize> {
        self.quantize.map(|scheme| nuri_model::Quantize {
            scheme,
            vision: self.quantize_vision,
        })
    }

    pub fn load(&self) -> Result<crate::generate::Loaded> {
        let device = self.device.device()?;
        let dtypes = load_dtypes(self.dtype(), &device)
            .with_mmap(self.mmap)
            .with_quantize(self.quantize());
        let loaded = crate::generate::load(&self.model, device.clone(), dtypes)?;
        if self.verbose {
            let r = &loaded.report;
            eprintln!(
                "loaded {} tensors ({:.2} GB in {:?}, {:.2} GB of them read in place from the memory-mapped files) from {} file(s) in {:.2} s; loader's own peak {:.2} GB, process peak RSS {}",
                r.tensors,
                r.bytes as f64 / 1e9,
                self.dtype(),
                r.mapped_bytes as f64 / 1e9,
                r.files,
                r.seconds,
                r.peak_bytes as f64 / 1e9,
                crate::bench::peak_rss_mib().map_or("unknown".into(), |m| format!(
                    "{:.2} GB",
                    m * 1.048_576 / 1e3
                )),
            );
        }
        Ok(loaded)
    }
}

/// A model configuration by name: our presets (`tiny`, `quickstart`, `small-100m`) and the
/// published checkpoints' (`nuri_model::presets::PUBLISHED`).
#[derive(Debug, Clone)]
pub struct Preset {
    pub name: String,
    pub config: nuri_model::NuriConfig,
}

impl std::str::FromStr for Preset {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        NuriConfig::preset(name)
            .or_else(|| nuri_model::presets::published(name))
            .map(|config| Preset {
                name: name.to_string(),
                config,
            })
            .ok_or_else(|| format!("unknown preset '{name}' (known: {})", Preset::names()))
    }
}

impl Preset {
    /// Every name, comma-separated.
    pub fn names() -> String {
        NuriConfig::PRESETS
            .iter()
            .chain(nuri_model::presets::PUBLISHED.iter())
            .copied()
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The language model's configuration.
    pub fn config(&self) -> TextConfig {
        self.config.text.clone()
    }
}

/// `nuri devices`: the devices this build can use.
pub fn devices() {
    for choice in DeviceChoice::available() {
        println!("{choice}");
    }
}

/// `nuri config`: a configuration's `config.json` and its size.
#[derive(clap::Args, Debug)]
pub struct ConfigArgs {
    /// tiny, quickstart, small-100m, or a published checkpoint's: qwen2-vl-2b, qwen2-vl-7b,
    /// qwen2.5-vl-3b, qwen2.5-vl-7b, exaone-4.5-33b, exaone-4.0-1.2b,
    /// hyperclovax-seed-think-32b.
    #[arg(long, default_value = "tiny")]
    preset: Preset,
}

impl ConfigArgs {
    /// Prints the `config.json` a checkpoint of this configuration has (stdout) and its
    /// parameter count and weight memory (stderr).
    pub fn run(self) -> Result<()> {
        let config = &self.preset.config;
        println!(
            "{}",
            serde_json::to_string_pretty(&nuri_model::hf_config_json(config))?
        );
        let counts = nuri_model::ParameterCounts::of(config)?;
        eprintln!("{}", counts.summary(&self.preset.name));
        Ok(())
    }
}

/// `nuri convert`: load a Hugging Face checkpoint directory of any family strictly and write it
/// back out as transformers lays it out.
#[derive(clap::Args, Debug)]
pub struct ConvertArgs {
    /// Checkpoint directory to read (config.json, model.safetensors or sharded).
    #[arg(long)]
    from: PathBuf,
    /// Directory to write.
    #[arg(long)]
    to: PathBuf,
}

impl ConvertArgs {
    pub fn run(self) -> Result<()> {
        let (config, model) = load_pretrained(&self.from, &Device::flex(), DType::F32)
            .with_context(|| format!("loading {}", self.from.display()))?;
        save_pretrained(&model, &config, &self.to)
            .with_context(|| format!("writing {}", self.to.display()))?;
        println!("wrote {}", self.to.display());
        Ok(())
    }
}

/// `nuri quantize`: a checkpoint with its language model's linear layers packed in 8 or 4
/// bits, which loads directly (no `--quantize` needed).
#[derive(clap::Args, Debug)]
pub struct QuantizeArgs {
    /// Checkpoint directory to read (any supported family, float weights).
    #[arg(long)]
    from: PathBuf,
    /// Directory to write (config.json with a `quantization_config`, model.safetensors, and
    /// the tokenizer and processor files copied from `--from`).
    #[arg(long)]
    to: PathBuf,
    /// q8 (8.5 bits per weight) or q4 (4.75). The output layer stays at 8 bits at most.
    #[arg(long, value_parser = parse_scheme)]
    quantize: nuri_kernels::quant::Scheme,
    /// The vision tower and its projector too (by default kept in `--dtype`).
    #[arg(long)]
    quantize_vision: bool,
    /// The dtype of everything not quantized (embeddings, norms, the vision tower).
    #[arg(long, default_value = "bf16", value_parser = parse_dtype)]
    dtype: DType,
}

impl QuantizeArgs {
    pub fn run(self) -> Result<()> {
        let same = |a: &std::path::Path, b: &std::path::Path| matches!((a.canonicalize(), b.canonicalize()), (Ok(a), Ok(b)) if a == b);
        if same(&self.from, &self.to) {
            anyhow::bail!(
                "--to {} is the checkpoint being read; write the quantized one to another directory",
                self.to.display()
            );
        }
        let dtypes =
            nuri_model::LoadOptions::all(self.dtype).with_quantize(Some(nuri_model::Quantize {
                scheme: self.quantize,
                vision: self.quantize_vision,
            }));
        let (config, model, report) =
            nuri_model::load_pretrained_with(&self.from, &Device::flex(), dtypes)
                .with_context(|| format!("loading {}", self.from.display()))?;
        save_pretrained(&model, &config, &self.to)
            .with_context(|| format!("writing {}", self.to.display()))?;
        let copied = nuri_train::setup::copy_processor_files(&self.from, &self.to)?;
        println!(
            "wrote {} ({:.1} MB of weights; {} other file(s) copied)",
            self.to.display(),
            report.bytes as f64 / 1e6,
            copied
        );
        Ok(())
    }
}

/// `nuri plot`: a run's curves to `RUN_DIR/curves.png`.
#[derive(clap::Args, Debug)]
pub struct PlotArgs {
    /// The run's out_dir.
    run: PathBuf,
}

impl PlotArgs {
    pub fn run(self) -> Result<()> {
        let path = nuri_train::plot::plot_run(&self.run)?;
        println!("wrote {}", path.display());
        Ok(())
    }
}

/// `nuri train`: train or fine-tune from a run config.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// The run config (`.toml` or `.json`).
    #[arg(long)]
    config: PathBuf,
    /// Override a config field: `--set optim.lr=5e-4` (repeatable; TOML values).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Continue from the newest whole checkpoint in the run's out_dir.
    #[arg(long)]
    resume: bool,
}

impl TrainArgs {
    pub fn run(self) -> Result<()> {
        let config = nuri_train::TrainConfig::load(&self.config, &self.set)?;
        let choice: DeviceChoice = config.device.parse()?;
        let devices = choice.devices(config.devices)?;
        let resume = self.resume;
        let summary = crate::on_compute_pool(|| {
            nuri_train::train(&config, &devices, resume, &mut |line| {
                tracing::info!("{line}")
            })
        })?;
        println!(
            "trained {} steps: loss {:.4} -> {:.4}, {:.0} tokens/s, {} bad samples skipped",
            summary.steps,
            summary.first_loss,
            summary.last_loss,
            summary.tokens_per_second,
            summary.bad_samples
        );
        println!("model: {}", summary.final_dir.display());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use serde_json::json;

    use super::TemplateArgs;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        template: TemplateArgs,
    }

    fn kwargs(args: &[&str]) -> Result<serde_json::Map<String, serde_json::Value>, clap::Error> {
        let cli = Cli::try_parse_from(std::iter::once("nuri").chain(args.iter().copied()))?;
        Ok(cli.template.kwargs())
    }

    #[test]
    fn thinking_flags_and_template_arguments_become_keyword_arguments() {
        assert!(kwargs(&[]).unwrap().is_empty());
        assert_eq!(
            kwargs(&["--think"]).unwrap()["enable_thinking"],
            json!(true)
        );
        assert_eq!(
            kwargs(&["--no-think"]).unwrap()["enable_thinking"],
            json!(false)
        );
        let k = kwargs(&[
            "--template-arg",
            "add_vision_id=true",
            "--template-arg",
            "reasoning_effort=high",
            "--template-arg",
            "enable_thinking=true",
            "--no-think",
        ])
        .unwrap();
        assert_eq!(k["add_vision_id"], json!(true));
        assert_eq!(k["reasoning_effort"], json!("high"));
        // The flag wins over the same key given as an argument.
        assert_eq!(k["enable_thinking"], json!(false));
        // Errors: both flags, no `=`, an empty key.
        assert!(kwargs(&["--think", "--no-think"]).is_err());
        let e = kwargs(&["--template-arg", "enable_thinking"]).unwrap_err();
        assert!(e.to_string().contains("KEY=VALUE"), "{e}");
        assert!(kwargs(&["--template-arg", "=1"]).is_err());
    }
}
