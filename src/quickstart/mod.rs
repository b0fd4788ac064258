//! `nuri quickstart`: make the bilingual shapes dataset, learn a tokenizer from it, train the
//! `quickstart` model from scratch on a time budget, evaluate it by greedy generation on the
//! test, compositional and reversed-clip splits, and print what it learned.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::tensor::DType;
use serde_json::{Value as Json, json};

use crate::DeviceChoice;
use crate::eval::{Scored, score_file};
use crate::generate::load;
use crate::shapes::{ShapesOptions, generate};
use crate::tokenizer_train::{fertility, save_tokenizer_dir, texts_of, train_tokenizer};

mod report;

pub use report::print_report;
use report::{limited, pick_samples, print_curve, read_metrics, tabulate, write_report};

/// What the quickstart does (the defaults are the README's command).
#[derive(clap::Args, Debug, Clone)]
pub struct QuickstartOptions {
    /// Where the data, tokenizer, run, model and report go.
    #[arg(long, default_value = "runs/quickstart")]
    pub out: PathBuf,
    /// 1: one object per scene (color, shape, position, direction); 2: adds scenes of 1–3
    /// objects (color of a named shape, count, which moved, which appeared first).
    #[arg(long, default_value_t = 1)]
    pub level: u8,
    /// Training time budget in minutes (default: 10 at level 1, 40 at level 2); the run stops
    /// at the first step after it.
    #[arg(long)]
    pub minutes: Option<f64>,
    /// Stop after this many steps instead (if it comes before the time budget): the same
    /// run on any machine.
    #[arg(long)]
    pub steps: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Training conversations to generate (default: 20000 at level 1, 40000 at level 2).
    #[arg(long)]
    pub train: Option<usize>,
    /// Test (and compositional) scenes per family, each asked in both languages.
    #[arg(long, default_value_t = 100)]
    pub test: usize,
    /// Questions per training conversation (1–3; after the first, only color and shape).
    /// More turns teach color and shape sooner, but keep this small model from learning
    /// position and direction in the budget.
    #[arg(long, default_value_t = 1, value_parser = crate::shapes::parse_turns)]
    pub turns: usize,
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Peak learning rate of every group (AdamW). At 3e-3 the vision path stays at chance;
    /// at 3e-4 color is learned first and position and direction stay at chance in 10 min,
    /// at 5e-4 the other way round.
    #[arg(long, default_value_t = 5e-4)]
    pub lr: f64,
    /// Peak learning rate of the vision tower and the merger (default: `--lr`).
    #[arg(long)]
    pub lr_vision: Option<f64>,
    /// Validate every this many steps (the accuracy-over-time curve; 0: never).
    #[arg(long, default_value_t = 100)]
    pub eval_every: usize,
    #[arg(long, default_value_t = 768)]
    pub vocab_size: usize,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceChoice,
    /// Evaluate on at most this many scenes per family and split (0: all).
    #[arg(long, default_value_t = 0)]
    pub eval_limit: usize,
}

impl QuickstartOptions {
    pub fn minutes(&self) -> f64 {
        self.minutes
            .unwrap_or(if self.level >= 2 { 40.0 } else { 10.0 })
    }

    pub fn train_conversations(&self) -> usize {
        self.train
            .unwrap_or(if self.level >= 2 { 40_000 } else { 20_000 })
    }
}

/// Exact-match results of one family in one language.
#[derive(Debug, Clone, Default)]
pub struct Cell {
    pub right: usize,
    pub total: usize,
    chance_sum: f64,
}

impl Cell {
    pub fn rate(&self) -> f64 {
        self.right as f64 / self.total.max(1) as f64
    }
    pub fn chance(&self) -> f64 {
        self.chance_sum / self.total.max(1) as f64
    }
}

/// The quickstart's measurements.
#[derive(Debug, Clone)]
pub struct QuickstartReport {
    /// (family, lang) → results, per split (`test`, `compositional`).
    pub splits: BTreeMap<String, BTreeMap<(String, String), Cell>>,
    /// Reversed clips: share answered with the reversed direction, and with the forward one.
    pub reversed: Option<(f64, f64)>,
    pub parameters: usize,
    pub train_seconds: f64,
    pub steps: usize,
    pub first_loss: f64,
    pub last_loss: f64,
    pub model_dir: PathBuf,
    /// The test split asked again as a VLMEvalKit-style multiple-choice TSV through
    /// `nuri eval --benchmark` (the question as trained, its answer read as an option).
    pub benchmark: Option<BenchmarkCheck>,
}

/// `nuri eval --benchmark` on the test split's TSV.
#[derive(Debug, Clone)]
pub struct BenchmarkCheck {
    pub file: PathBuf,
    pub n: usize,
    pub accuracy: f64,
}

/// `preprocessor_config.json` and `video_preprocessor_config.json` for the quickstart
/// model: 8-pixel patches; a 64×64 picture or frame is kept at its size.
fn write_processor_configs(dir: &Path, patch: usize) -> Result<()> {
    let config = json!({
        "image_processor_type": "Qwen2VLImageProcessor",
        "patch_size": patch,
        "merge_size": 2,
        "temporal_patch_size": 2,
        "min_pixels": 32 * 32,
        "max_pixels": 128 * 128,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
    });
    for file in ["preprocessor_config.json", "video_preprocessor_config.json"] {
        let path = dir.join(file);
        std::fs::write(&path, serde_json::to_string_pretty(&config)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Runs the whole quickstart, printing as it goes: data, tokenizer, training, evaluation.
pub fn run(o: &QuickstartOptions) -> Result<QuickstartReport> {
    let minutes = o.minutes();
    if minutes <= 0.0 || !minutes.is_finite() {
        bail!("--minutes must be positive, got {minutes}");
    }
    let data = make_data(o)?;
    let tok_dir = make_tokenizer(o, &data)?;
    let trained = train_model(o, &data, &tok_dir, minutes)?;
    let report = evaluate(o, &data, trained)?;
    print_report(&report.report, o.level);
    print_samples(&report.samples);
    write_report(&report.report, &o.out.join("report.json"))?;
    print_ask_command(&data, &report.report.model_dir, &report.samples);
    println!("Report: {}", o.out.join("report.json").display());
    Ok(report.report)
}

/// Step 1: the shapes dataset under `OUT/data`.
fn make_data(o: &QuickstartOptions) -> Result<PathBuf> {
    let data = o.out.join("data");
    let started = Instant::now();
    let shapes = ShapesOptions {
        out: data.clone(),
        seed: o.seed,
        level: o.level,
        train: o.train_conversations(),
        turns: o.turns,
        val: 16,
        test: o.test,
    };
    let summary = generate(&shapes)?;
    println!(
        "[1/4] data: {} pictures and {} clips of colored shapes, questions in English and Korean, in {} ({:.1} s)",
        summary.pictures,
        summary.clips,
        data.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(data)
}

/// Step 2: a byte-level BPE learned from the training text only, with the processor's
/// configs, under `OUT/tokenizer`.
fn make_tokenizer(o: &QuickstartOptions, data: &Path) -> Result<PathBuf> {
    let tok_dir = o.out.join("tokenizer");
    let texts = texts_of(&data.join("train.jsonl"))?;
    let trained = train_tokenizer(&texts, o.vocab_size)?;
    save_tokenizer_dir(&trained.tokenizer, &tok_dir)?;
    let patch = nuri_model::VisionConfig::quickstart().patch_size;
    write_processor_configs(&tok_dir, patch)?;
    let (ko, en) = fertility(&trained.tokenizer, &texts)?;
    println!(
        "[2/4] tokenizer: byte-level BPE, {} tokens; {ko:.2} tokens per Korean character, {en:.2} per English word",
        trained.vocab_size
    );
    Ok(tok_dir)
}

/// What training left for the evaluation.
struct Trained {
    summary: nuri_train::RunSummary,
    parameters: usize,
    /// Seconds of training (from the metrics).
    seconds: f64,
    model_dir: PathBuf,
}

/// The quickstart's run config: the `quickstart` preset from scratch on a time budget.
fn train_config(
    o: &QuickstartOptions,
    data: &Path,
    tok_dir: &Path,
    run_dir: &Path,
    minutes: f64,
) -> Result<nuri_train::TrainConfig> {
    let lr_vision = o.lr_vision.unwrap_or(o.lr);
    let config: nuri_train::TrainConfig = serde_json::from_value(json!({
        "out_dir": run_dir,
        "seed": o.seed,
        "steps": o.steps.unwrap_or(1_000_000),
        "max_minutes": minutes,
        "batch_size": o.batch_size,
        "checkpoint_every": 500,
        "keep_checkpoints": 1,
        "eval_every": o.eval_every,
        "device": o.device.to_string(),
        "model": {"preset": "quickstart", "tokenizer": tok_dir},
        "data": {
            "train": data.join("train.jsonl"),
            "val": data.join("val.jsonl"),
            "workers": 1,
            "bucket_batches": 4,
        },
        "optim": {
            "lr": o.lr,
            "lr_vision": lr_vision,
            "lr_merger": lr_vision,
            "weight_decay": 0.01, "warmup_steps": 30, "min_lr_ratio": 0.05,
            "max_grad_norm": 1.0,
        },
    }))
    .context("the quickstart's training config")?;
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("the quickstart's training config: {e}"))?;
    Ok(config)
}

/// Step 3: training, then the final model moved to `OUT/model`.
fn train_model(
    o: &QuickstartOptions,
    data: &Path,
    tok_dir: &Path,
    minutes: f64,
) -> Result<Trained> {
    let run_dir = o.out.join("run");
    if run_dir.exists() {
        std::fs::remove_dir_all(&run_dir)
            .with_context(|| format!("removing the previous run {}", run_dir.display()))?;
    }
    let config = train_config(o, data, tok_dir, &run_dir, minutes)?;
    let params = nuri_model::NuriModel::new(
        &tokenizer_fitted_config(tok_dir)?,
        &burn::tensor::Device::flex(),
    )?
    .num_params();
    println!(
        "[3/4] training the `quickstart` model ({:.2}M parameters) from scratch on {} for {} min",
        params as f64 / 1e6,
        o.device,
        minutes
    );
    let devices = o.device.devices(1)?;
    let trained = crate::on_compute_pool(|| {
        nuri_train::train(&config, &devices, false, &mut |line| {
            tracing::info!("{line}")
        })
    })?;
    let metrics = read_metrics(&run_dir)?;
    let state = metrics
        .iter()
        .filter_map(|v| v.get("seconds").and_then(Json::as_f64))
        .next_back()
        .unwrap_or(0.0);
    println!(
        "      {} steps in {:.1} min: loss {:.3} -> {:.3}, {:.0} tokens/s",
        trained.steps,
        state / 60.0,
        trained.first_loss,
        trained.last_loss,
        trained.tokens_per_second
    );
    print_curve(&metrics);
    let model_dir = o.out.join("model");
    if model_dir.exists() {
        std::fs::remove_dir_all(&model_dir)
            .with_context(|| format!("removing {}", model_dir.display()))?;
    }
    std::fs::rename(&trained.final_dir, &model_dir).with_context(|| {
        format!(
            "moving {} to {}",
            trained.final_dir.display(),
            model_dir.display()
        )
    })?;

    Ok(Trained {
        summary: trained,
        parameters: params,
        seconds: state,
        model_dir,
    })
}

/// The report and the sample answers to show.
struct Evaluated {
    report: QuickstartReport,
    samples: Vec<Scored>,
}

/// Questions answered together, and the most tokens an answer may have, when the
/// quickstart evaluates (its JSONL splits and the test split's TSV alike).
const EVAL_BATCH: usize = 64;
const EVAL_TOKENS: usize = 12;

/// Step 4: greedy answers on the test, compositional and reversed splits.
fn evaluate(o: &QuickstartOptions, data: &Path, trained: Trained) -> Result<Evaluated> {
    println!("[4/4] evaluating by greedy generation (exact match)");
    let loaded = load(
        &trained.model_dir,
        o.device.device()?,
        nuri_model::LoadOptions::all(DType::F32),
    )?;
    let mut splits = BTreeMap::new();
    let mut samples = Vec::new();
    let mut benchmark = None;
    for split in ["test", "compositional"] {
        let file = limited(data, split, o.eval_limit)?;
        let scored = score_file(&loaded, &file, EVAL_BATCH, EVAL_TOKENS)?;
        if split == "test" {
            samples = pick_samples(&scored);
            benchmark = benchmark_check(o, data, &file, &trained.model_dir, &loaded)?;
        }
        splits.insert(split.to_string(), tabulate(&scored));
    }
    let reversed = {
        let file = limited(data, "reversed", o.eval_limit)?;
        let scored = score_file(&loaded, &file, EVAL_BATCH, EVAL_TOKENS)?;
        let n = scored.len().max(1) as f64;
        let flipped = scored.iter().filter(|s| s.correct).count() as f64 / n;
        let forward = scored
            .iter()
            .filter(|s| s.record.get("forward_answer").and_then(Json::as_str) == Some(&s.got))
            .count() as f64
            / n;
        (!scored.is_empty()).then_some((flipped, forward))
    };
    let summary = &trained.summary;
    let report = QuickstartReport {
        benchmark,
        splits,
        reversed,
        parameters: trained.parameters,
        train_seconds: trained.seconds,
        steps: summary.steps,
        first_loss: summary.first_loss,
        last_loss: summary.last_loss,
        model_dir: trained.model_dir,
    };
    Ok(Evaluated { report, samples })
}

/// The evaluated test questions (`file`) as a VLMEvalKit-style multiple-choice TSV (the
/// data step writes the whole split's; a limited evaluation writes its own), asked by
/// `nuri eval --benchmark` with the same batches and token budget as the table's. `None`
/// where the split is too small to make choices from (a family with one answer in it).
fn benchmark_check(
    o: &QuickstartOptions,
    data: &Path,
    file: &Path,
    model_dir: &Path,
    loaded: &crate::generate::Loaded,
) -> Result<Option<BenchmarkCheck>> {
    let tsv = if o.eval_limit == 0 && data.join("test.tsv").is_file() {
        data.join("test.tsv")
    } else {
        match crate::shapes::tsv::write_choice_tsv(file)? {
            Some(tsv) => tsv,
            None => return Ok(None),
        }
    };
    let args = crate::eval::benchmark::BenchmarkArgs {
        prompt: crate::eval::prompt::PromptStyle::Question,
        out: Some(o.out.join("eval-test-tsv")),
        restart: true,
        ..crate::eval::benchmark::BenchmarkArgs::default()
    };
    let model = serde_json::json!({"path": model_dir, "dtype": "F32"});
    let bench = crate::eval::benchmark::read_benchmark(&tsv, &args)?;
    let run = crate::eval::benchmark::run_benchmark(
        loaded,
        &model,
        &bench,
        &args,
        EVAL_BATCH,
        EVAL_TOKENS,
    )?;
    let overall = run.summary.vanilla.overall;
    Ok(Some(BenchmarkCheck {
        file: tsv,
        n: overall.n,
        accuracy: overall.mean(),
    }))
}

fn print_samples(samples: &[Scored]) {
    println!("\nSample answers (test split):");
    for s in samples {
        let q = s.record["conversations"][0]["value"]
            .as_str()
            .unwrap_or_default()
            .replace(['\n'], " ");
        println!(
            "  {} {q}\n      -> {} (expected {}){}",
            s.record["lang"].as_str().unwrap_or("?"),
            s.got,
            s.expected,
            if s.correct { "" } else { "  ✗" }
        );
    }
}

/// The `nuri generate` command that asks the model about a test picture.
fn print_ask_command(data: &Path, model_dir: &Path, samples: &[Scored]) {
    println!(
        "\nThe model (Hugging Face layout): {}\nAsk it about a test picture:",
        model_dir.display()
    );
    if let Some(s) = samples.iter().find(|s| s.record.get("image").is_some()) {
        let image = data.join(s.record["image"].as_str().unwrap_or_default());
        let q = s.record["conversations"][0]["value"]
            .as_str()
            .unwrap_or_default()
            .trim_end_matches("\n<image>");
        println!(
            "  cargo run --release -- generate --model {} --image {} --text-first \"{q}\"",
            model_dir.display(),
            image.display()
        );
    }
}

/// The config the trainer will build for the quickstart preset with this tokenizer.
fn tokenizer_fitted_config(dir: &Path) -> Result<nuri_model::NuriConfig> {
    let processor = nuri_processor::Processor::from_dir(dir)?;
    Ok(processor.fit_config(nuri_model::NuriConfig::quickstart()))
}
