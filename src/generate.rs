//! `nuri generate`, `nuri chat` and `nuri eval`: a checkpoint directory (a Nuri run's
//! `final/`, the run directory itself, or any Hugging Face Qwen2-VL directory) answering
//! questions about images and clips.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::{DType, Device};
use nuri_infer::generate::{GenerationRequest, generate};
use nuri_infer::{Processor, SamplingParams};
use nuri_model::{NuriModel, load_pretrained};
use serde_json::{Value as Json, json};

/// A model and its processor, loaded from a directory.
pub struct Loaded {
    pub model: NuriModel,
    pub processor: Processor,
    pub device: Device,
}

/// Loads `dir` (or `dir/final` for a training run's directory).
pub fn load(dir: &Path, device: Device, dtype: DType) -> Result<Loaded> {
    let has_weights = |d: &Path| {
        d.join("model.safetensors").is_file() || d.join("model.safetensors.index.json").is_file()
    };
    let dir = if !has_weights(dir) && has_weights(&dir.join("final")) {
        dir.join("final")
    } else {
        dir.to_path_buf()
    };
    let processor = Processor::from_dir(&dir)
        .with_context(|| format!("loading the processor of {}", dir.display()))?
        .with_media_root(std::env::current_dir()?);
    let (_, model) = load_pretrained(&dir, &device, dtype)
        .with_context(|| format!("loading the model of {}", dir.display()))?;
    Ok(Loaded {
        model,
        processor,
        device,
    })
}

/// Media and options of one user turn.
#[derive(Debug, Clone, Default)]
pub struct TurnMedia {
    pub images: Vec<PathBuf>,
    pub videos: Vec<PathBuf>,
    pub fps: Option<f64>,
    pub nframes: Option<usize>,
    pub min_pixels: Option<usize>,
    pub max_pixels: Option<usize>,
    /// The text before the media instead of after them.
    pub text_first: bool,
}

/// A user message with content parts: the images, the videos, then the text (if any; first
/// with `text_first`). A
/// `max_pixels` without `min_pixels` lowers the lower bound with it when it is below the
/// default.
pub fn user_message(media: &TurnMedia, text: &str) -> Json {
    let min_pixels = media.min_pixels.or_else(|| {
        media
            .max_pixels
            .map(|m| m.min(nuri_encoders::image::DEFAULT_MIN_PIXELS))
    });
    let bounds = |part: &mut Json| {
        if let Some(m) = media.max_pixels {
            part["max_pixels"] = json!(m);
        }
        if let Some(m) = min_pixels {
            part["min_pixels"] = json!(m);
        }
    };
    let mut parts = Vec::new();
    for image in &media.images {
        let mut part = json!({"type": "image", "image": image});
        bounds(&mut part);
        parts.push(part);
    }
    for video in &media.videos {
        let mut part = json!({"type": "video", "video": video});
        bounds(&mut part);
        if let Some(fps) = media.fps {
            part["fps"] = json!(fps);
        }
        if let Some(n) = media.nframes {
            part["nframes"] = json!(n);
        }
        parts.push(part);
    }
    if !text.is_empty() {
        let part = json!({"type": "text", "text": text});
        if media.text_first {
            parts.insert(0, part);
        } else {
            parts.push(part);
        }
    }
    json!({"role": "user", "content": parts})
}

/// Answers one question, printing the answer as it streams.
pub fn run_generate(
    loaded: &Loaded,
    media: &TurnMedia,
    prompt: &str,
    params: SamplingParams,
) -> Result<()> {
    let messages = json!([user_message(media, prompt)]);
    let mut stdout = std::io::stdout();
    let out = generate(
        &loaded.model,
        &loaded.processor,
        &[GenerationRequest { messages, params }],
        &loaded.device,
        &mut |_, piece| {
            let _ = write!(stdout, "{piece}");
            let _ = stdout.flush();
        },
    )?;
    println!();
    let g = &out[0];
    eprintln!(
        "[{} prompt tokens, {} generated, finish: {}]",
        g.prompt_tokens,
        g.tokens.len(),
        g.finish_reason.as_str()
    );
    Ok(())
}

/// An interactive conversation on stdin/stdout.
pub fn run_chat(loaded: &Loaded, params: SamplingParams, media_template: &TurnMedia) -> Result<()> {
    let mut messages: Vec<Json> = Vec::new();
    let mut pending = TurnMedia {
        fps: media_template.fps,
        max_pixels: media_template.max_pixels,
        ..Default::default()
    };
    eprintln!("nuri chat — /image PATH, /video PATH (attach to your next message), /reset, /exit");
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(command) = line.strip_prefix('/') {
            let (name, arg) = command.split_once(' ').unwrap_or((command, ""));
            match name {
                "exit" | "quit" => break,
                "reset" => {
                    messages.clear();
                    pending.images.clear();
                    pending.videos.clear();
                    eprintln!("(conversation cleared)");
                }
                "image" | "video" if !arg.trim().is_empty() => {
                    let path = PathBuf::from(arg.trim());
                    if !path.exists() {
                        eprintln!("{}: no such file", path.display());
                        continue;
                    }
                    if name == "image" {
                        pending.images.push(path);
                    } else {
                        pending.videos.push(path);
                    }
                    eprintln!("(attached to your next message)");
                }
                _ => eprintln!("unknown command /{name}: /image PATH, /video PATH, /reset, /exit"),
            }
            continue;
        }
        messages.push(user_message(&pending, line));
        pending.images.clear();
        pending.videos.clear();
        let request = GenerationRequest {
            messages: Json::Array(messages.clone()),
            params: params.clone(),
        };
        let result = generate(
            &loaded.model,
            &loaded.processor,
            &[request],
            &loaded.device,
            &mut |_, piece| {
                let _ = write!(stdout, "{piece}");
                let _ = stdout.flush();
            },
        );
        println!();
        match result {
            Ok(out) => messages.push(json!({"role": "assistant", "content": out[0].text})),
            Err(e) => {
                eprintln!("error: {e}");
                messages.pop();
            }
        }
    }
    Ok(())
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
        eprintln!("skipped {b}");
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
            let Some((prompt, answer)) = nuri_infer::split_last_answer(&sample.messages) else {
                continue;
            };
            requests.push(GenerationRequest {
                messages: prompt,
                params: SamplingParams {
                    max_new_tokens,
                    ..Default::default()
                },
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
                correct: got == expected,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_goes_after_the_media_unless_asked_first() {
        let mut media = TurnMedia {
            images: vec![PathBuf::from("a.png")],
            videos: vec![PathBuf::from("b.gif")],
            ..Default::default()
        };
        let kinds = |m: &Json| -> Vec<String> {
            m["content"]
                .as_array()
                .expect("parts")
                .iter()
                .map(|p| p["type"].as_str().unwrap_or("?").to_string())
                .collect()
        };
        assert_eq!(
            kinds(&user_message(&media, "Which way?")),
            ["image", "video", "text"]
        );
        media.text_first = true;
        assert_eq!(
            kinds(&user_message(&media, "Which way?")),
            ["text", "image", "video"]
        );
        assert_eq!(kinds(&user_message(&media, "")), ["image", "video"]);
    }
}
