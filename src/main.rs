//! The `nuri` command line: parses the arguments and hands each subcommand to its module.

use anyhow::Result;
use clap::{Parser, Subcommand};
use nuri::bench::BenchOptions;
use nuri::check::CheckArgs;
use nuri::cli::{ConfigArgs, ConvertArgs, PlotArgs, QuantizeArgs, TrainArgs};
use nuri::eval::EvalArgs;
use nuri::generate::{ChatArgs, GenerateArgs};
use nuri::preprocess::PreprocessArgs;
use nuri::quickstart::QuickstartOptions;
use nuri::serve::ServeArgs;
use nuri::shapes::ShapesOptions;
use nuri::tokenizer_train::TokenizerTrainArgs;

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

#[derive(Subcommand, Debug)]
enum Command {
    /// List the devices this build of nuri can use.
    Devices,
    /// Print a preset's language-model configuration as JSON.
    Config(ConfigArgs),
    /// Run the language backbone with random weights on a device: greedy decoding with the
    /// KV cache must match one full forward; prints prefill and decode speed.
    Check(CheckArgs),
    /// Run the input pipeline as the model sees it: resized sizes, sampled video frames,
    /// patch grids and visual token counts; with --model's tokenizer, the rendered prompt and
    /// its token ids.
    Preprocess(PreprocessArgs),
    /// Train (or fine-tune) a model from a run config (TOML or JSON); see the README.
    Train(TrainArgs),
    /// Answer a question about images and/or a video, streaming the answer.
    Generate(GenerateArgs),
    /// An interactive chat: /image PATH, /video PATH, /reset, /exit.
    Chat(ChatArgs),
    /// Score a model on a benchmark (VLMEvalKit's TSV, VQA, video multiple choice; --benchmark)
    /// or by exact match on a QA JSONL file in the training format (--data), per category.
    Eval(EvalArgs),
    /// Serve the model over an OpenAI-compatible HTTP API until SIGINT/SIGTERM.
    Serve(ServeArgs),
    /// Plot a run's loss and learning-rate curves (`RUN_DIR/metrics.jsonl`) to
    /// `RUN_DIR/curves.png`.
    Plot(PlotArgs),
    /// Make the shapes data, train a model from scratch on the CPU, evaluate it, answer.
    Quickstart(QuickstartOptions),
    /// Speed of a preset's phases (training step, vision encoder, prefill, decode) and the
    /// device's matmul rate; a table and JSON.
    Bench(BenchOptions),
    /// Generate a dataset.
    #[command(subcommand)]
    Data(DataCommand),
    /// Tokenizers.
    #[command(subcommand)]
    Tokenizer(TokenizerCommand),
    /// Load a Hugging Face checkpoint directory of any supported family (Qwen2-VL, Qwen2.5-VL,
    /// EXAONE 4.5 / 4.0, HyperCLOVA X Vision / text; strictly: every tensor must match)
    /// and write it back out (config.json + model.safetensors), as transformers lays it out.
    Convert(ConvertArgs),
    /// Write a checkpoint with the language model's linear layers in 8 or 4 bits (Nuri's block
    /// formats), which `generate`, `chat`, `serve` and `eval` load directly.
    Quantize(QuantizeArgs),
}

#[derive(Subcommand, Debug)]
enum DataCommand {
    /// The bilingual shapes dataset: PNG pictures and GIF clips of colored shapes with
    /// English and Korean questions (train / val / test / compositional / reversed splits).
    Shapes(ShapesOptions),
}

#[derive(Subcommand, Debug)]
enum TokenizerCommand {
    /// Learn a byte-level BPE tokenizer.json (with the chat template's special tokens) from
    /// the text of JSONL conversations.
    Train(TokenizerTrainArgs),
}

fn main() -> Result<()> {
    nuri::alloc::tune();
    nuri::logging::init();
    match Cli::parse().command {
        Command::Devices => nuri::cli::devices(),
        Command::Config(args) => args.run()?,
        Command::Check(args) => args.run()?,
        Command::Preprocess(args) => nuri::preprocess::run(&args)?,
        Command::Train(args) => args.run()?,
        Command::Generate(args) => args.run()?,
        Command::Chat(args) => args.run()?,
        Command::Eval(args) => args.run()?,
        Command::Serve(args) => args.run()?,
        Command::Plot(args) => args.run()?,
        Command::Quickstart(options) => nuri::quickstart::run(&options).map(drop)?,
        Command::Bench(options) => nuri::bench::run(&options).map(drop)?,
        Command::Data(DataCommand::Shapes(options)) => options.run()?,
        Command::Tokenizer(TokenizerCommand::Train(args)) => args.run()?,
        Command::Convert(args) => args.run()?,
        Command::Quantize(args) => args.run()?,
    }
    Ok(())
}
