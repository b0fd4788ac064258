//! `nuri eval`: a benchmark in the field's formats (`--benchmark`: VLMEvalKit's TSV, VQA,
//! video multiple choice; see [`benchmark`]), or exact-match accuracy of greedy answers to
//! the last question of every conversation in a QA JSONL file (`--data`, the training
//! format), per category.

pub mod benchmark;
pub mod extract;
pub mod items;
pub mod prompt;
pub mod run;
pub mod score;
pub mod table;
pub mod vqa;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use nuri_infer::SamplingParams;
use nuri_infer::generate::{GenerationRequest, generate};
use nuri_processor::{exact_match, split_last_answer};
use serde_json::{Value as Json, json};

use crate::cli::ModelArgs;
use crate::generate::Loaded;

/// The cases of a reference fixture under `fixtures/eval/` (written from VLMEvalKit's own
/// code by `tools/reference/`).
#[cfg(test)]
fn reference_cases(name: &str) -> Vec<Json> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/eval")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("fixture");
    let mut fixture: Json = serde_json::from_str(&text).expect("json");
    match fixture["cases"].take() {
        Json::Array(cases) => cases,
        other => panic!("{}: cases is {other}", path.display()),
    }
}

/// `nuri eval`'s flags.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["data", "benchmark"])))]
pub struct EvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A QA JSONL file in the training format: exact match of each conversation's last
    /// answer.
    #[arg(long)]
    data: Option<PathBuf>,
    /// A benchmark file: VLMEvalKit's multiple-choice TSV (MMBench, MMStar, SEED-Bench,
    /// K-MMBench, …), a short-answer VQA TSV/JSONL, or video multiple choice (Video-MME-style
    /// rows with a `video` and `options`).
    #[arg(long)]
    benchmark: Option<PathBuf>,
    #[command(flatten)]
    bench: benchmark::BenchmarkArgs,
    /// The field of each line that names its category (--data).
    #[arg(long, default_value = "category")]
    category_field: String,
    /// Questions generated together (greedy).
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// The most tokens an answer may have (its reasoning included).
    #[arg(long, default_value_t = 32)]
    max_new_tokens: usize,
    /// Write a JSON report here (--data).
    #[arg(long)]
    report: Option<PathBuf>,
}

impl EvalArgs {
    pub fn run(self) -> Result<()> {
        if let Some(file) = &self.benchmark {
            let bench = benchmark::read_benchmark(file, &self.bench)?;
            let loaded = self.model.load()?;
            let model = json!({
                "path": self.model.model,
                "dtype": format!("{:?}", self.model.dtype()),
                "quantize": self.model.quantize.map(|q| format!("{q:?}")),
            });
            let run = benchmark::run_benchmark(
                &loaded,
                &model,
                &bench,
                &self.bench,
                self.batch_size,
                self.max_new_tokens,
            )?;
            print!("{}", run.markdown);
            println!("\npredictions and report: {}", run.out.display());
            return Ok(());
        }
        let data = self
            .data
            .as_deref()
            .expect("clap requires --data or --benchmark");
        let loaded = self.model.load()?;
        run_eval(
            &loaded,
            data,
            &self.category_field,
            self.batch_size,
            self.max_new_tokens,
            self.report.as_deref(),
        )
    }
}

/// One question of a QA file, answered.
#[derive(Debug, Clone)]
pub struct Scored {
    /// `file:line`.
    pub origin: String,
    /// The whole JSONL line (its metadata fields: family, lang, ...).
    pub record: Json,
    pub expected: String,
    pub got: String,
    pub correct: bool,
}

/// Greedy answers to the last question of every conversation in a QA JSONL file (the
/// training format), `batch_size` at a time, compared with the reference answer (trimmed,
/// exact). Unusable lines are reported on stderr and skipped.
pub fn score_file(
    loaded: &Loaded,
    file: &Path,
    batch_size: usize,
    max_new_tokens: usize,
) -> Result<Vec<Scored>> {
    let (samples, bad) = nuri_train::data::load_jsonl(file, None, false)?;
    for b in &bad {
        tracing::warn!("skipped {b}");
    }
    if samples.is_empty() {
        bail!("{}: no usable samples", file.display());
    }
    let records = read_lines(file)?;
    let mut scored = Vec::new();
    for chunk in samples.chunks(batch_size.max(1)) {
        let mut requests = Vec::new();
        let mut wanted = Vec::new();
        for sample in chunk {
            let Some((prompt, answer)) = split_last_answer(&sample.messages) else {
                continue;
            };
            requests.push(GenerationRequest {
                messages: prompt,
                params: SamplingParams {
                    max_new_tokens,
                    ..Default::default()
                },
                template_kwargs: Default::default(),
            });
            let line = sample
                .origin
                .rsplit(':')
                .next()
                .and_then(|l| l.parse::<usize>().ok())
                .unwrap_or(0);
            let record = records.get(&line).cloned().unwrap_or(Json::Null);
            wanted.push((answer, record, sample.origin.clone()));
        }
        let out = generate(
            &loaded.model,
            &loaded.processor,
            &requests,
            &loaded.device,
            &mut |_, _| {},
        )?;
        for (g, (expected, record, origin)) in out.iter().zip(wanted) {
            let got = g.text.trim().to_string();
            scored.push(Scored {
                correct: exact_match(&got, &expected),
                origin,
                record,
                expected,
                got,
            });
        }
    }
    Ok(scored)
}

/// Exact-match accuracy of greedy answers over a QA JSONL file (the training format), per
/// category (`category_field` of each line) and overall; writes a JSON report.
pub fn run_eval(
    loaded: &Loaded,
    file: &Path,
    category_field: &str,
    batch_size: usize,
    max_new_tokens: usize,
    report: Option<&Path>,
) -> Result<()> {
    let scored = score_file(loaded, file, batch_size, max_new_tokens)?;
    let mut per: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut examples = Vec::new();
    for s in &scored {
        let category = match s.record.get(category_field) {
            Some(Json::String(c)) => c.clone(),
            Some(other) => other.to_string(),
            None => "all".into(),
        };
        let entry = per.entry(category.clone()).or_default();
        entry.0 += usize::from(s.correct);
        entry.1 += 1;
        if examples.len() < 20 {
            examples.push(json!({"origin": s.origin, "category": category, "expected": s.expected, "got": s.got, "correct": s.correct}));
        }
    }
    let (right, total) = per.values().fold((0, 0), |a, v| (a.0 + v.0, a.1 + v.1));
    println!("{:<24} {:>8} {:>8}", "category", "n", "exact");
    for (category, (r, n)) in &per {
        println!(
            "{category:<24} {n:>8} {:>7.1}%",
            100.0 * *r as f64 / *n as f64
        );
    }
    println!(
        "{:<24} {total:>8} {:>7.1}%",
        "all",
        100.0 * right as f64 / total.max(1) as f64
    );
    if let Some(path) = report {
        let json = json!({
            "file": file,
            "exact_match": right as f64 / total.max(1) as f64,
            "n": total,
            "categories": per.iter().map(|(k, (r, n))| (k.clone(), json!({"n": n, "exact_match": *r as f64 / *n as f64}))).collect::<serde_json::Map<_, _>>(),
            "examples": examples,
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("report: {}", path.display());
    }
    Ok(())
}

/// Each JSONL line that parses, by 1-based line number.
fn read_lines(file: &Path) -> Result<BTreeMap<usize, Json>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    Ok(text
        .lines()
        .enumerate()
        .filter_map(|(i, l)| Some((i + 1, serde_json::from_str(l).ok()?)))
        .collect())
}
