//! What the quickstart shows and writes: the loss curve from the run's metrics, the
//! evaluation splits tabulated per family and language, sample answers, the report table and
//! `report.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{Value as Json, json};

use super::{Cell, QuickstartReport};
use crate::eval::Scored;
use crate::shapes::text::Family;

/// The run's `metrics.jsonl`, one value per line.
pub(super) fn read_metrics(run_dir: &Path) -> Result<Vec<Json>> {
    let path = run_dir.join("metrics.jsonl");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<Json>(l).ok())
        .collect())
}

/// Validation exact match against training time, from the run's metrics.
pub(super) fn print_curve(metrics: &[Json]) {
    let points: Vec<(f64, usize, f64, f64)> = metrics
        .iter()
        .filter_map(|v| {
            Some((
                v.get("seconds")?.as_f64()?,
                v.get("step")?.as_u64()? as usize,
                v.get("val_loss")?.as_f64()?,
                v.get("val_exact_match")?.as_f64()?,
            ))
        })
        .collect();
    if points.is_empty() {
        return;
    }
    println!("      validation as training goes (all families, both languages):");
    println!(
        "      {:>7} {:>6} {:>9} {:>12}",
        "minutes", "step", "val loss", "exact match"
    );
    for (s, step, loss, em) in points {
        let bar = "█".repeat((em * 30.0).round() as usize);
        println!(
            "      {:>7.1} {step:>6} {loss:>9.3} {:>11.1}% {bar}",
            s / 60.0,
            100.0 * em
        );
    }
}

/// `split.jsonl`, or a copy holding at most `limit` scenes per family (both languages).
pub(super) fn limited(data: &Path, split: &str, limit: usize) -> Result<PathBuf> {
    let file = data.join(format!("{split}.jsonl"));
    if limit == 0 {
        return Ok(file);
    }
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            let v: Json = serde_json::from_str(l).unwrap_or(Json::Null);
            let key = format!("{}/{}", v["family"], v["lang"]);
            let n = seen.entry(key).or_default();
            *n += 1;
            *n <= limit
        })
        .collect();
    let out = data.join(format!("{split}.first{limit}.jsonl"));
    std::fs::write(&out, kept.join("\n") + "\n")
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(out)
}

pub(super) fn field(s: &Scored, name: &str) -> String {
    s.record
        .get(name)
        .and_then(Json::as_str)
        .unwrap_or("?")
        .to_string()
}

pub(super) fn tabulate(scored: &[Scored]) -> BTreeMap<(String, String), Cell> {
    let mut cells: BTreeMap<(String, String), Cell> = BTreeMap::new();
    for s in scored {
        let cell = cells
            .entry((field(s, "family"), field(s, "lang")))
            .or_default();
        cell.right += usize::from(s.correct);
        cell.total += 1;
        cell.chance_sum += s.record.get("chance").and_then(Json::as_f64).unwrap_or(0.0);
    }
    cells
}

/// Two answers per language from different families, wrong ones included when there are.
pub(super) fn pick_samples(scored: &[Scored]) -> Vec<Scored> {
    let mut out: Vec<Scored> = Vec::new();
    for lang in ["en", "ko"] {
        let mut families = Vec::new();
        for s in scored.iter().filter(|s| field(s, "lang") == lang) {
            let family = field(s, "family");
            if !families.contains(&family) && families.len() < 3 {
                families.push(family);
                out.push(s.clone());
            }
        }
        if let Some(wrong) = scored.iter().find(|s| {
            field(s, "lang") == lang && !s.correct && !out.iter().any(|o| o.origin == s.origin)
        }) {
            out.push(wrong.clone());
        }
    }
    out
}

pub(super) fn family_order(name: &str) -> usize {
    Family::from_name(name).map_or(99, |f| f as usize)
}

/// The table: per family and language, test and compositional exact match, chance; then the
/// gaps the targets speak of.
pub fn print_report(r: &QuickstartReport, level: u8) {
    let empty = BTreeMap::new();
    let test = r.splits.get("test").unwrap_or(&empty);
    let comp = r.splits.get("compositional").unwrap_or(&empty);
    let mut keys: Vec<&(String, String)> = test.keys().collect();
    keys.sort_by_key(|(f, l)| (family_order(f), l.clone()));
    println!(
        "\nExact match by question family and language (level {level}; {} steps, {:.1} min of training, {:.2}M parameters):",
        r.steps,
        r.train_seconds / 60.0,
        r.parameters as f64 / 1e6
    );
    println!(
        "  {:<16} {:<4} {:>6} {:>8} {:>14} {:>8}",
        "family", "lang", "n", "test", "compositional", "chance"
    );
    for key in keys {
        let t = &test[key];
        let c = comp
            .get(key)
            .map_or("-".to_string(), |c| format!("{:.1}%", 100.0 * c.rate()));
        println!(
            "  {:<16} {:<4} {:>6} {:>7.1}% {:>14} {:>7.1}%",
            key.0,
            key.1,
            t.total,
            100.0 * t.rate(),
            c,
            100.0 * t.chance()
        );
    }
    // Gaps: Korean vs English, compositional vs test.
    let mut families: Vec<&String> = test.keys().map(|(f, _)| f).collect();
    families.dedup();
    families.sort_by_key(|f| family_order(f));
    families.dedup();
    println!(
        "\n  {:<16} {:>12} {:>20}",
        "family", "ko − en", "compositional − test"
    );
    for f in families {
        let rate = |m: &BTreeMap<(String, String), Cell>, l: &str| {
            m.get(&(f.clone(), l.to_string())).map(Cell::rate)
        };
        let (en, ko) = (rate(test, "en"), rate(test, "ko"));
        let both = |m: &BTreeMap<(String, String), Cell>| {
            let cells: Vec<&Cell> = ["en", "ko"]
                .iter()
                .filter_map(|l| m.get(&(f.clone(), l.to_string())))
                .collect();
            let (r, n) = cells
                .iter()
                .fold((0, 0), |a, c| (a.0 + c.right, a.1 + c.total));
            (n > 0).then(|| r as f64 / n as f64)
        };
        let gap = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => format!("{:+.1} pts", 100.0 * (a - b)),
            _ => "-".into(),
        };
        println!(
            "  {:<16} {:>12} {:>20}",
            f,
            gap(ko, en),
            gap(both(comp), both(test))
        );
    }
    if let Some(b) = &r.benchmark {
        let (right, total) = test
            .values()
            .fold((0, 0), |a, c| (a.0 + c.right, a.1 + c.total));
        println!(
            "\n  The test split as a VLMEvalKit-style multiple-choice TSV (`nuri eval --benchmark {} --prompt question`): {:.1}% of {} (exact match above: {:.1}% of {total}).",
            b.file.display(),
            100.0 * b.accuracy,
            b.n,
            100.0 * right as f64 / total.max(1) as f64,
        );
    }
    if let Some((flipped, forward)) = r.reversed {
        println!(
            "\n  Reversed clips (direction questions, frames played backwards): {:.1}% answered the reversed direction, {:.1}% the original one.",
            100.0 * flipped,
            100.0 * forward
        );
    }
}

pub(super) fn write_report(r: &QuickstartReport, path: &Path) -> Result<()> {
    let splits: serde_json::Map<String, Json> = r
        .splits
        .iter()
        .map(|(split, cells)| {
            let cells: serde_json::Map<String, Json> = cells
                .iter()
                .map(|((f, l), c)| {
                    (
                        format!("{f}/{l}"),
                        json!({"n": c.total, "exact_match": c.rate(), "chance": c.chance()}),
                    )
                })
                .collect();
            (split.clone(), Json::Object(cells))
        })
        .collect();
    let json = json!({
        "parameters": r.parameters,
        "train_seconds": r.train_seconds,
        "steps": r.steps,
        "first_loss": r.first_loss,
        "last_loss": r.last_loss,
        "splits": splits,
        "reversed": r.reversed.map(|(a, b)| json!({"reversed_direction": a, "original_direction": b})),
        "model": r.model_dir,
        "benchmark_tsv": r.benchmark.as_ref().map(|b| json!({"file": b.file, "n": b.n, "accuracy": b.accuracy})),
    });
    std::fs::write(path, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("writing {}", path.display()))
}
