//! The `nuri` command line.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use nuri::DeviceChoice;
use nuri::check::{CheckShape, run_check};
use std::path::PathBuf;

use burn::tensor::{DType, Device};
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
    /// Run the input pipeline as the model sees it: resized sizes, sampled video frames,
    /// patch grids and visual token counts; with --model's tokenizer, the rendered prompt and
    /// its token ids.
    Preprocess {
        /// PNG, JPEG, WebP, GIF (first frame) or BMP file (repeatable).
        #[arg(long)]
        image: Vec<PathBuf>,
        /// Animated GIF/APNG/WebP, a folder of numbered frames, or (with the `ffmpeg`
        /// feature) any video file (repeatable).
        #[arg(long)]
        video: Vec<PathBuf>,
        /// A question; tokenized with the chat template when --model has a tokenizer.json.
        #[arg(long)]
        prompt: Option<String>,
        /// A checkpoint directory whose tokenizer, chat template and processor configs to use.
        #[arg(long)]
        model: Option<PathBuf>,
        /// Lower bound on resized pixels (per image / per video frame).
        #[arg(long)]
        min_pixels: Option<usize>,
        /// Upper bound on resized pixels (per image / per video frame).
        #[arg(long)]
        max_pixels: Option<usize>,
        /// Frames per second to sample from videos (default 2).
        #[arg(long, conflicts_with = "nframes")]
        fps: Option<f64>,
        /// A fixed number of frames to sample from videos.
        #[arg(long)]
        nframes: Option<usize>,
    },
    /// Train (or fine-tune) a model from a run config (TOML or JSON); see the README.
    Train {
        /// The run config (`.toml` or `.json`).
        #[arg(long)]
        config: PathBuf,
        /// Override a config field: `--set optim.lr=5e-4` (repeatable; TOML values).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Continue from the newest whole checkpoint in the run's out_dir.
        #[arg(long)]
        resume: bool,
    },
    /// Plot a run's loss and learning-rate curves (`RUN_DIR/metrics.jsonl`) to
    /// `RUN_DIR/curves.png`.
    Plot {
        /// The run's out_dir.
        run: PathBuf,
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
            video,
            prompt,
            model,
            min_pixels,
            max_pixels,
            fps,
            nframes,
        } => {
            if image.is_empty() && video.is_empty() && prompt.is_none() {
                bail!("give at least one of --image, --video or --prompt");
            }
            nuri::preprocess::run(&nuri::preprocess::PreprocessArgs {
                images: image,
                videos: video,
                prompt,
                model,
                min_pixels,
                max_pixels,
                fps,
                nframes,
            })?;
        }
        Command::Train {
            config,
            set,
            resume,
        } => {
            let config = nuri_train::TrainConfig::load(&config, &set)?;
            let choice: DeviceChoice = config.device.parse()?;
            let devices = choice.devices(config.devices)?;
            let summary =
                nuri_train::train(&config, &devices, resume, &mut |line| eprintln!("{line}"))?;
            println!(
                "trained {} steps: loss {:.4} -> {:.4}, {:.0} tokens/s, {} bad samples skipped",
                summary.steps,
                summary.first_loss,
                summary.last_loss,
                summary.tokens_per_second,
                summary.bad_samples
            );
            println!("model: {}", summary.final_dir.display());
        }
        Command::Plot { run } => {
            let path = nuri_train::plot::plot_run(&run)?;
            println!("wrote {}", path.display());
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
