//! The `nuri` command line.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use nuri::DeviceChoice;
use nuri::check::{CheckShape, run_check};
use std::path::PathBuf;

use burn::tensor::{DType, Device};
use nuri_encoders::image::{DEFAULT_DECODE_LIMIT, ImageProcessorConfig, load_rgb};
use nuri_model::{TextConfig, load_pretrained, save_pretrained};

#[derive(Parser, Debug)]
#[command(
    name = "nuri",
    version,
    about = "Nuri: a multimodal (text, image, video) model on Burn"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Model configurations by name.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Preset {
    /// The 2-layer test model.
    Tiny,
    /// Qwen2-VL-2B's language model.
    #[value(name = "qwen2-vl-2b")]
    Qwen2Vl2b,
    /// Qwen2-VL-7B's language model.
    #[value(name = "qwen2-vl-7b")]
    Qwen2Vl7b,
}

impl Preset {
    fn config(self) -> TextConfig {
        match self {
            Preset::Tiny => TextConfig::tiny(),
            Preset::Qwen2Vl2b => TextConfig::qwen2_vl_2b(),
            Preset::Qwen2Vl7b => TextConfig::qwen2_vl_7b(),
        }
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the devices this build of nuri can use.
    Devices,
    /// Print a preset's language-model configuration as JSON.
    Config {
        #[arg(long, value_enum, default_value = "tiny")]
        preset: Preset,
    },
    /// Run the language backbone with random weights on a device: greedy decoding with the
    /// KV cache must match one full forward; prints prefill and decode speed.
    Check {
        #[arg(long, value_enum, default_value = "tiny")]
        preset: Preset,
        /// cpu, wgpu or cuda (the last two need the Cargo feature of the same name).
        #[arg(long, default_value = "cpu")]
        device: DeviceChoice,
        #[arg(long, default_value_t = 1)]
        batch: usize,
        #[arg(long, default_value_t = 32)]
        prompt_len: usize,
        #[arg(long, default_value_t = 32)]
        new_tokens: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Largest accepted |cached − full| logit difference.
        #[arg(long, default_value_t = 1e-3)]
        tolerance: f32,
    },
    /// Decode and preprocess an image as the model sees it: its resized size, patch grid and
    /// the number of visual tokens it costs.
    Preprocess {
        /// PNG, JPEG, WebP, GIF (first frame) or BMP file.
        #[arg(long)]
        image: PathBuf,
        /// A checkpoint directory whose preprocessor_config.json to honour.
        #[arg(long)]
        model: Option<PathBuf>,
        /// Lower bound on resized pixels (overrides the config).
        #[arg(long)]
        min_pixels: Option<usize>,
        /// Upper bound on resized pixels (overrides the config).
        #[arg(long)]
        max_pixels: Option<usize>,
    },
    /// Load a Hugging Face Qwen2-VL checkpoint directory (strictly: every tensor must match)
    /// and write it back out (config.json + model.safetensors), as transformers lays it out.
    Convert {
        /// Checkpoint directory to read (config.json, model.safetensors or sharded).
        #[arg(long)]
        from: PathBuf,
        /// Directory to write.
        #[arg(long)]
        to: PathBuf,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Devices => {
            for choice in DeviceChoice::available() {
                println!("{choice}");
            }
        }
        Command::Config { preset } => {
            println!("{}", serde_json::to_string_pretty(&preset.config())?);
        }
        Command::Check {
            preset,
            device,
            batch,
            prompt_len,
            new_tokens,
            seed,
            tolerance,
        } => {
            if batch == 0 || prompt_len == 0 || new_tokens < 2 {
                bail!("--batch and --prompt-len must be at least 1 and --new-tokens at least 2");
            }
            let burn_device = device.device()?;
            let config = preset.config();
            let shape = CheckShape {
                batch,
                prompt_len,
                new_tokens,
                seed,
            };
            let report = run_check(&config, shape, &burn_device)
                .with_context(|| format!("building the {preset:?} model"))?;
            println!("device            {device}");
            println!("parameters        {}", report.params);
            println!(
                "prefill           {:.1} tokens/s",
                report.prefill_tokens_per_s
            );
            println!(
                "decode            {:.1} tokens/s",
                report.decode_tokens_per_s
            );
            println!("max |cached-full| {:.3e}", report.max_abs_diff);
            println!("first row         {:?}", report.generated[0]);
            if report.max_abs_diff > tolerance {
                bail!(
                    "cached decoding differs from the full forward by {:.3e} (> {tolerance:.1e})",
                    report.max_abs_diff
                );
            }
        }
        Command::Preprocess {
            image,
            model,
            min_pixels,
            max_pixels,
        } => {
            let mut config = match model.map(|dir| dir.join("preprocessor_config.json")) {
                Some(path) if path.exists() => ImageProcessorConfig::from_preprocessor_json(&path)?,
                _ => ImageProcessorConfig::default(),
            };
            config.min_pixels = min_pixels.unwrap_or(config.min_pixels);
            config.max_pixels = max_pixels.unwrap_or(config.max_pixels);
            let rgb = load_rgb(&image, DEFAULT_DECODE_LIMIT)?;
            let name = image.display().to_string();
            let resized = config.resize(&rgb, &name)?;
            let patches = config.patchify(&[&resized]);
            let [t, h, w] = patches.grid_thw;
            let merge = config.merge_size * config.merge_size;
            println!("image             {name}");
            println!("decoded           {}×{}", rgb.width, rgb.height);
            println!("resized           {}×{}", resized.width, resized.height);
            println!("patch grid (thw)  {t}×{h}×{w} = {} patches", t * h * w);
            println!("visual tokens     {}", t * h * w / merge);
        }
        Command::Convert { from, to } => {
            let (config, model) = load_pretrained(&from, &Device::flex(), DType::F32)
                .with_context(|| format!("loading {}", from.display()))?;
            save_pretrained(&model, &config, &to)
                .with_context(|| format!("writing {}", to.display()))?;
            println!("wrote {}", to.display());
        }
    }
    Ok(())
}
