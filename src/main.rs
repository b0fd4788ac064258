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

/// Decoding flags shared by `generate` and `chat`.
#[derive(clap::Args, Debug, Clone)]
struct SamplingArgs {
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
}

impl SamplingArgs {
    fn params(&self) -> nuri_infer::SamplingParams {
        nuri_infer::SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repetition_penalty: self.repetition_penalty,
            seed: self.seed,
            max_new_tokens: self.max_new_tokens,
            stop: self.stop.clone(),
        }
    }
}

/// Where the model comes from and how media are sized.
#[derive(clap::Args, Debug, Clone)]
struct ModelArgs {
    /// A checkpoint directory (Hugging Face Qwen2-VL layout, or a Nuri run directory).
    #[arg(long)]
    model: PathBuf,
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
    /// Load the weights in bf16 instead of fp32.
    #[arg(long)]
    bf16: bool,
}

impl ModelArgs {
    fn load(&self) -> Result<nuri::generate::Loaded> {
        let dtype = if self.bf16 { DType::BF16 } else { DType::F32 };
        nuri::generate::load(&self.model, self.device.device()?, dtype)
    }
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
    Preprocess(nuri::preprocess::PreprocessArgs),
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
    /// Answer a question about images and/or a video, streaming the answer.
    Generate {
        #[command(flatten)]
        model: ModelArgs,
        /// An image (repeatable).
        #[arg(long)]
        image: Vec<PathBuf>,
        /// A video file or folder of frames (repeatable).
        #[arg(long)]
        video: Vec<PathBuf>,
        /// Frames per second to sample from videos.
        #[arg(long)]
        fps: Option<f64>,
        /// Upper bound on resized pixels per image / video frame.
        #[arg(long)]
        max_pixels: Option<usize>,
        /// Put the question before the images and videos in the message (as the quickstart
        /// model is trained) instead of after them.
        #[arg(long)]
        text_first: bool,
        /// The question.
        prompt: String,
        #[command(flatten)]
        sampling: SamplingArgs,
    },
    /// An interactive chat: /image PATH, /video PATH, /reset, /exit.
    Chat {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long)]
        fps: Option<f64>,
        #[arg(long)]
        max_pixels: Option<usize>,
        #[command(flatten)]
        sampling: SamplingArgs,
    },
    /// Exact-match accuracy of greedy answers on a QA JSONL file (the training format), per
    /// category.
    Eval {
        #[command(flatten)]
        model: ModelArgs,
        /// The QA JSONL file.
        #[arg(long)]
        data: PathBuf,
        /// The field of each line that names its category.
        #[arg(long, default_value = "category")]
        category_field: String,
        #[arg(long, default_value_t = 8)]
        batch_size: usize,
        #[arg(long, default_value_t = 32)]
        max_new_tokens: usize,
        /// Write a JSON report here.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Serve the model over an OpenAI-compatible HTTP API until SIGINT/SIGTERM.
    Serve {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long, default_value = "127.0.0.1:8000")]
        addr: std::net::SocketAddr,
        /// The `model` name clients use (default: the directory's name).
        #[arg(long)]
        served_model_name: Option<String>,
        /// Allow `file://` media inside this folder (and nowhere else).
        #[arg(long)]
        allow_local_media: Option<PathBuf>,
        #[arg(long, default_value_t = 20 << 20)]
        max_body_bytes: usize,
        /// Most images and videos per request.
        #[arg(long, default_value_t = 8)]
        max_images: usize,
        /// Largest decoded image, in pixels.
        #[arg(long, default_value_t = nuri_encoders::image::DEFAULT_DECODE_LIMIT)]
        max_image_pixels: usize,
        /// Waiting requests beyond this get 429.
        #[arg(long, default_value_t = 64)]
        queue_limit: usize,
        /// Most requests answered in one batch.
        #[arg(long, default_value_t = 8)]
        max_batch: usize,
        /// Longest prompt in tokens.
        #[arg(long, default_value_t = 32_768)]
        context_length: usize,
        /// `max_tokens` when a request gives none.
        #[arg(long, default_value_t = 256)]
        default_max_tokens: usize,
    },
    /// Plot a run's loss and learning-rate curves (`RUN_DIR/metrics.jsonl`) to
    /// `RUN_DIR/curves.png`.
    Plot {
        /// The run's out_dir.
        run: PathBuf,
    },
    /// Make the shapes data, train a model from scratch on the CPU, evaluate it, answer.
    Quickstart(nuri::quickstart::QuickstartOptions),
    /// Speed of a preset's phases (training step, vision encoder, prefill, decode) and the
    /// device's matmul rate; a table and JSON.
    Bench(nuri::bench::BenchOptions),
    /// Generate a dataset.
    #[command(subcommand)]
    Data(DataCommand),
    /// Tokenizers.
    #[command(subcommand)]
    Tokenizer(TokenizerCommand),
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

#[derive(Subcommand, Debug)]
enum DataCommand {
    /// The bilingual shapes dataset: PNG pictures and GIF clips of colored shapes with
    /// English and Korean questions (train / val / test / compositional / reversed splits).
    Shapes {
        #[arg(long, default_value = "data/shapes")]
        out: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// 1: one object per scene; 2: adds scenes of 1–3 objects and their families.
        #[arg(long, default_value_t = 1)]
        level: u8,
        /// Training conversations.
        #[arg(long, default_value_t = 20_000)]
        train: usize,
        /// Questions per training conversation (1–3; after the first, only color, shape and
        /// count).
        #[arg(long, default_value_t = 1, value_parser = nuri::shapes::parse_turns)]
        turns: usize,
        /// Validation scenes per family (each asked in both languages).
        #[arg(long, default_value_t = 16)]
        val: usize,
        /// Test and compositional scenes per family (each asked in both languages).
        #[arg(long, default_value_t = 100)]
        test: usize,
    },
}

#[derive(Subcommand, Debug)]
enum TokenizerCommand {
    /// Learn a byte-level BPE tokenizer.json (with the chat template's special tokens) from
    /// the text of JSONL conversations.
    Train {
        /// JSONL files of conversations (repeatable).
        #[arg(long, required = true)]
        data: Vec<PathBuf>,
        #[arg(long, default_value_t = 1024)]
        vocab_size: usize,
        /// Directory to write tokenizer.json, tokenizer_config.json and the chat template to.
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> Result<()> {
    nuri::alloc::tune();
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
        Command::Preprocess(args) => {
            if args.images.is_empty() && args.videos.is_empty() && args.prompt.is_none() {
                bail!("give at least one of --image, --video or --prompt");
            }
            nuri::preprocess::run(&args)?;
        }
        Command::Train {
            config,
            set,
            resume,
        } => {
            let config = nuri_train::TrainConfig::load(&config, &set)?;
            let choice: DeviceChoice = config.device.parse()?;
            let devices = choice.devices(config.devices)?;
            let summary = nuri::on_compute_pool(|| {
                nuri_train::train(&config, &devices, resume, &mut |line| eprintln!("{line}"))
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
        }
        Command::Generate {
            model,
            image,
            video,
            fps,
            max_pixels,
            text_first,
            prompt,
            sampling,
        } => {
            let loaded = model.load()?;
            let media = nuri::generate::TurnMedia {
                images: image,
                videos: video,
                fps,
                max_pixels,
                text_first,
                ..Default::default()
            };
            nuri::generate::run_generate(&loaded, &media, &prompt, sampling.params())?;
        }
        Command::Chat {
            model,
            fps,
            max_pixels,
            sampling,
        } => {
            let loaded = model.load()?;
            let media = nuri::generate::TurnMedia {
                fps,
                max_pixels,
                ..Default::default()
            };
            nuri::generate::run_chat(&loaded, sampling.params(), &media)?;
        }
        Command::Eval {
            model,
            data,
            category_field,
            batch_size,
            max_new_tokens,
            report,
        } => {
            let loaded = model.load()?;
            nuri::generate::run_eval(
                &loaded,
                &data,
                &category_field,
                batch_size,
                max_new_tokens,
                report.as_deref(),
            )?;
        }
        Command::Serve {
            model,
            addr,
            served_model_name,
            allow_local_media,
            max_body_bytes,
            max_images,
            max_image_pixels,
            queue_limit,
            max_batch,
            context_length,
            default_max_tokens,
        } => {
            let name = served_model_name.unwrap_or_else(|| {
                model
                    .model
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "nuri".into())
            });
            let allow_local_media = allow_local_media
                .map(|d| {
                    std::fs::canonicalize(&d)
                        .with_context(|| format!("--allow-local-media {}", d.display()))
                })
                .transpose()?;
            let loaded = model.load()?;
            let options = nuri_infer::server::ServeOptions {
                model_name: name.clone(),
                max_body_bytes,
                max_images,
                max_image_pixels,
                queue_limit,
                max_batch,
                allow_local_media,
                context_length,
                default_max_tokens,
            };
            let server = nuri_infer::server::start(
                loaded.model,
                loaded.processor,
                loaded.device,
                options,
                addr,
                true,
            )?;
            eprintln!(
                "serving `{name}` on http://{} (Ctrl-C to stop)",
                server.addr
            );
            server.wait()?;
            eprintln!("stopped");
        }
        Command::Plot { run } => {
            let path = nuri_train::plot::plot_run(&run)?;
            println!("wrote {}", path.display());
        }
        Command::Bench(options) => {
            nuri::bench::run(&options)?;
        }
        Command::Quickstart(options) => {
            nuri::quickstart::run(&options)?;
        }
        Command::Data(DataCommand::Shapes {
            out,
            seed,
            level,
            train,
            turns,
            val,
            test,
        }) => {
            let options = nuri::shapes::ShapesOptions {
                out: out.clone(),
                seed,
                level,
                train,
                turns,
                val,
                test,
            };
            let started = std::time::Instant::now();
            let summary = nuri::shapes::generate(&options)?;
            println!(
                "wrote {} pictures and {} clips to {} in {:.1} s",
                summary.pictures,
                summary.clips,
                out.display(),
                started.elapsed().as_secs_f64()
            );
            for (file, n) in &summary.lines {
                println!("  {file:<20} {n:>6} lines");
            }
        }
        Command::Tokenizer(TokenizerCommand::Train {
            data,
            vocab_size,
            out,
        }) => {
            nuri::tokenizer_train::run(&data, vocab_size, &out)?;
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
