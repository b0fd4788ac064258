//! `nuri eval --benchmark FILE`: a benchmark in the field's formats asked, scored and
//! reported. Writes into `--out`: `run.json` (what the predictions come from),
//! `predictions.jsonl` (appended as answers come; a killed run resumes from it),
//! `scored.jsonl` (each prediction with the letter read from it and its score),
//! `report.json` and `report.md`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::ValueEnum;
use serde_json::{Value as Json, json};

use super::items::{Item, Task, items};
use super::prompt::PromptStyle;
use super::run::{Asking, ask, open};
use super::score::{Summary, Tallies, lines, score, summarize};
use super::table::{read_rows, sha256};
use super::vqa::Metric;
use crate::cli::TemplateArgs;
use crate::generate::Loaded;

/// `nuri eval --benchmark`'s flags.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct BenchmarkArgs {
    /// multiple-choice or vqa; by default multiple choice when the file has option columns
    /// (A, B, …) or an `options` list.
    #[arg(long, value_enum)]
    pub task: Option<Task>,
    /// How short answers are scored (vqa: VQAv2's normalized match; anls: DocVQA's); by
    /// default anls for a file named like DocVQA or InfoVQA, else vqa.
    #[arg(long, value_enum)]
    pub metric: Option<Metric>,
    /// How a question is written: VLMEvalKit's prompt, or the question alone.
    #[arg(long, value_enum, default_value = "vlmevalkit")]
    pub prompt: PromptStyle,
    /// MMBench's CircularEval: each multiple-choice question is asked once per rotation of
    /// its options (the file's own rotated copies where it has them) and counts as right
    /// only when every answer is.
    #[arg(long)]
    pub circular: bool,
    /// Where predictions and the report go (default: runs/eval/<benchmark file's name>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Drop the predictions already in --out instead of resuming from them.
    #[arg(long)]
    pub restart: bool,
    /// Only the first N rows.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Relative image and video paths are read from here (default: the file's folder).
    #[arg(long)]
    pub media_root: Option<PathBuf>,
    /// Force the end of a reasoning block after N thinking tokens.
    #[arg(long)]
    pub max_thinking_tokens: Option<usize>,
    #[command(flatten)]
    pub template: TemplateArgs,
    /// Also write each question's request as an OpenAI chat-completions body, one JSON line
    /// each (`{"key", "body"}`), to send to a server.
    #[arg(long)]
    pub requests: Option<PathBuf>,
}

/// What a benchmark run gave.
#[derive(Debug, Clone)]
pub struct BenchmarkRun {
    pub summary: Summary,
    /// The report in Markdown.
    pub markdown: String,
    /// Where predictions and the report are.
    pub out: PathBuf,
}

/// A benchmark file read into its questions.
#[derive(Debug, Clone)]
pub struct Benchmark {
    pub file: PathBuf,
    pub sha256: String,
    /// Rows in the file (before `--limit`).
    pub rows: usize,
    pub task: Task,
    /// How short answers are scored: `--metric`, else ANLS for a file named like DocVQA or
    /// InfoVQA (as VLMEvalKit picks it by the dataset), else VQAv2's match.
    pub metric: Metric,
    pub items: Vec<Item>,
}

/// Reads `file` into its questions (before any model is loaded: a bad file fails fast).
pub fn read_benchmark(file: &Path, args: &BenchmarkArgs) -> Result<Benchmark> {
    let rows = read_rows(file)?;
    let root = match &args.media_root {
        Some(r) => r.clone(),
        None => file.parent().unwrap_or(Path::new(".")).to_path_buf(),
    };
    let (task, items) = items(&rows, &root, args.task, args.circular, args.limit)?;
    let name = file.file_name().map(|n| n.to_string_lossy().to_lowercase());
    let metric = args.metric.unwrap_or(match name {
        Some(n) if n.contains("docvqa") || n.contains("infovqa") => Metric::Anls,
        _ => Metric::Vqa,
    });
    Ok(Benchmark {
        file: file.to_path_buf(),
        sha256: sha256(file)?,
        rows: rows.len(),
        task,
        metric,
        items,
    })
}

/// Asks, scores and reports `bench`. `model` describes the model for the report (`path`,
/// `dtype`, `quantize`); predictions made by another are not resumed from.
pub fn run_benchmark(
    loaded: &Loaded,
    model: &Json,
    bench: &Benchmark,
    args: &BenchmarkArgs,
    batch_size: usize,
    max_new_tokens: usize,
) -> Result<BenchmarkRun> {
    let (file, task, metric, items) = (&bench.file, bench.task, bench.metric, &bench.items);
    let asking = Asking {
        style: args.prompt,
        max_new_tokens,
        max_thinking_tokens: args.max_thinking_tokens,
        template_kwargs: args.template.kwargs(),
        batch_size,
    };
    let settings = json!({
        "task": value_name(&task),
        "metric": value_name(&metric),
        "prompt": value_name(&args.prompt),
        "circular": args.circular,
        "limit": args.limit,
        "max_new_tokens": max_new_tokens,
        "max_thinking_tokens": args.max_thinking_tokens,
        "template_kwargs": asking.template_kwargs,
    });
    let header = json!({
        "model": model,
        "benchmark": {"file": file, "sha256": bench.sha256, "rows": bench.rows},
        "settings": settings,
    });
    let out = args.out.clone().unwrap_or_else(|| {
        let stem = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("benchmark");
        Path::new("runs/eval").join(stem)
    });
    if let Some(path) = &args.requests {
        let mut text = String::new();
        for item in items {
            let body = asking.openai_body(item, model["path"].as_str().unwrap_or("nuri"));
            text += &format!("{}\n", json!({"key": item.key, "body": body}));
        }
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    let thinking = asking.template_kwargs.get("enable_thinking") == Some(&Json::Bool(true));
    if thinking && args.max_thinking_tokens.is_none_or(|n| n >= max_new_tokens) {
        eprintln!(
            "warning: thinking is on and --max-new-tokens {max_new_tokens} does not leave room \
             for an answer after the reasoning; an answer cut inside its reasoning reads as no \
             answer (set --max-thinking-tokens below --max-new-tokens, or raise the latter)"
        );
    }
    let (mut done, mut predictions) = open(&out, &header, args.restart)?;
    ask(loaded, items, &asking, &mut done, &mut predictions)?;
    let cut_off = items
        .iter()
        .filter(|i| {
            done.get(&i.key)
                .is_some_and(|p| p["finish_reason"] == "length")
        })
        .count();

    let scored = score(items, &done, task, metric);
    let summary = summarize(&scored, args.circular && task == Task::MultipleChoice);
    write(&out.join("scored.jsonl"), &lines(&scored))?;
    let mut report = header.clone();
    report["counts"] = json!({
        "questions": items.len(),
        "asked": summary.asked,
        "failed": summary.failed,
        "no_answer": summary.no_answer,
        "unscored": summary.unscored,
        "cut_off": cut_off,
    });
    report["results"] = summary.vanilla.json();
    if let Some(c) = &summary.circular {
        report["circular"] = c.json();
    }
    write(
        &out.join("report.json"),
        &serde_json::to_string_pretty(&report)?,
    )?;
    let markdown = markdown(&report, &summary);
    write(&out.join("report.md"), &markdown)?;
    Ok(BenchmarkRun {
        summary,
        markdown,
        out,
    })
}

/// A flag value's name as the command line spells it (`multiple-choice`, `anls`).
fn value_name(v: &impl ValueEnum) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// The report as Markdown: what was run, the counts, and a table per category.
fn markdown(report: &Json, summary: &Summary) -> String {
    let b = &report["benchmark"];
    let c = &report["counts"];
    let mut md = format!(
        "# {}\n\n- model: `{}`\n- file: `{}` (sha256 `{}`, {} rows)\n- settings: `{}`\n- questions {}, asked {}, failed {}, no answer read {}, without a reference {}, stopped at --max-new-tokens {}\n\n",
        Path::new(b["file"].as_str().unwrap_or(""))
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default(),
        report["model"]["path"].as_str().unwrap_or(""),
        b["file"].as_str().unwrap_or(""),
        b["sha256"].as_str().unwrap_or(""),
        b["rows"],
        report["settings"],
        c["questions"],
        c["asked"],
        c["failed"],
        c["no_answer"],
        c["unscored"],
        c["cut_off"],
    );
    let circular = summary.circular.as_ref();
    for (title, l2) in [("category", false), ("l2-category", true)] {
        let rows = table_rows(&summary.vanilla, l2);
        if rows.is_empty() {
            continue;
        }
        let circ = circular.map(|c| table_rows(c, l2)).unwrap_or_default();
        let (head, rule) = if circular.is_some() {
            (" circular |", "---:|")
        } else {
            ("", "")
        };
        md += &format!("| {title} | n | accuracy |{head}\n|---|---:|---:|{rule}\n");
        for (name, n, acc) in rows {
            let c = match circ.iter().find(|(k, _, _)| *k == name) {
                Some((_, _, a)) => format!(" {:.1}% |", 100.0 * a),
                None if circular.is_some() => " - |".into(),
                None => String::new(),
            };
            md += &format!("| {name} | {n} | {:.1}% |{c}\n", 100.0 * acc);
        }
        md += "\n";
    }
    md
}

/// A table's rows: each category (and `overall`), or each second-level category.
fn table_rows(t: &Tallies, l2: bool) -> Vec<(String, usize, f64)> {
    let named = if l2 { &t.l2 } else { &t.categories };
    let mut rows: Vec<_> = named
        .iter()
        .map(|(k, x)| (k.clone(), x.n, x.mean()))
        .collect();
    if !l2 {
        rows.push(("overall".into(), t.overall.n, t.overall.mean()));
    }
    rows
}
