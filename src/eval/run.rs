//! Asking a benchmark's questions: batched greedy generation, every answer appended to
//! `predictions.jsonl` as its batch finishes, so a killed evaluation resumes where it
//! stopped. `run.json` holds what the predictions were made from (the file's checksum and
//! the settings); a resumed run must match it.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use nuri_infer::SamplingParams;
use nuri_infer::generate::{Generated, GenerationRequest, generate};
use serde_json::{Map, Value as Json, json};

use super::items::Item;
use super::prompt::{self, PromptStyle};
use crate::generate::Loaded;

/// How each question is asked.
#[derive(Debug, Clone)]
pub struct Asking {
    pub style: PromptStyle,
    pub max_new_tokens: usize,
    pub max_thinking_tokens: Option<usize>,
    pub template_kwargs: Map<String, Json>,
    pub batch_size: usize,
}

impl Asking {
    /// The request for `item`, as `generate` takes it.
    pub fn request(&self, item: &Item) -> GenerationRequest {
        GenerationRequest {
            messages: prompt::messages(item, self.style, false),
            params: SamplingParams {
                max_new_tokens: self.max_new_tokens,
                max_thinking_tokens: self.max_thinking_tokens,
                ..Default::default()
            },
            template_kwargs: self.template_kwargs.clone(),
        }
    }

    /// The same request as an OpenAI chat-completions body (greedy), for a server.
    pub fn openai_body(&self, item: &Item, model: &str) -> Json {
        let mut body = json!({
            "model": model,
            "messages": prompt::messages(item, self.style, true),
            "max_tokens": self.max_new_tokens,
            "temperature": 0.0,
        });
        if !self.template_kwargs.is_empty() {
            body["chat_template_kwargs"] = Json::Object(self.template_kwargs.clone());
        }
        if let Some(n) = self.max_thinking_tokens {
            body["max_thinking_tokens"] = json!(n);
        }
        body
    }
}

/// The predictions made so far, by key, and the file to append new ones to. `header` is
/// what this run's predictions are made from; `restart` drops earlier predictions.
pub fn open(out: &Path, header: &Json, restart: bool) -> Result<(HashMap<String, Json>, File)> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let run = out.join("run.json");
    let predictions = out.join("predictions.jsonl");
    if restart {
        let _ = std::fs::remove_file(&predictions);
    } else if let Ok(text) = std::fs::read_to_string(&run) {
        let before: Json =
            serde_json::from_str(&text).with_context(|| format!("{}: not JSON", run.display()))?;
        for (what, at) in [
            ("model", "/model"),
            ("settings", "/settings"),
            ("benchmark file (sha256)", "/benchmark/sha256"),
        ] {
            if before.pointer(at) != header.pointer(at) {
                bail!(
                    "{} holds predictions made with another {what} ({} vs now {}); choose \
                     another --out, or --restart to replace them",
                    out.display(),
                    before.pointer(at).unwrap_or(&Json::Null),
                    header.pointer(at).unwrap_or(&Json::Null)
                );
            }
        }
    }
    // Written whole or not at all: a kill here leaves the previous one.
    let tmp = out.join("run.json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(header)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &run).with_context(|| format!("writing {}", run.display()))?;
    let mut done = HashMap::new();
    if let Ok(bytes) = std::fs::read(&predictions) {
        // A run killed while writing leaves a partial last line: it is dropped (its
        // question is asked again).
        let whole = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        if whole < bytes.len() {
            OpenOptions::new()
                .write(true)
                .open(&predictions)?
                .set_len(whole as u64)?;
        }
        let text = std::str::from_utf8(&bytes[..whole])
            .with_context(|| format!("{}: not UTF-8", predictions.display()))?;
        for (i, line) in text.lines().enumerate() {
            let p: Json = serde_json::from_str(line)
                .with_context(|| format!("{}:{}: not JSON", predictions.display(), i + 1))?;
            let key = p["key"]
                .as_str()
                .with_context(|| format!("{}:{}: no key", predictions.display(), i + 1))?
                .to_string();
            // A question whose generation failed is asked again (the later line wins).
            if p.get("error").is_some_and(|e| !e.is_null()) {
                done.remove(&key);
            } else {
                done.insert(key, p);
            }
        }
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&predictions)
        .with_context(|| format!("opening {}", predictions.display()))?;
    Ok((done, file))
}

/// Asks every question of `items` that `done` has no prediction for, `batch_size` at a
/// time, appending each prediction to `file` (and to `done`). A batch that fails is asked
/// again one question at a time, so one bad image costs its own question only (its
/// prediction records the error, and a resumed run asks it again).
pub fn ask(
    loaded: &Loaded,
    items: &[Item],
    asking: &Asking,
    done: &mut HashMap<String, Json>,
    file: &mut File,
) -> Result<()> {
    let todo: Vec<&Item> = items
        .iter()
        .filter(|i| !done.contains_key(&i.key))
        .collect();
    if todo.is_empty() {
        return Ok(());
    }
    if !done.is_empty() {
        eprintln!(
            "resuming: {} of {} questions already answered",
            items.len() - todo.len(),
            items.len()
        );
    }
    let tty = std::io::stderr().is_terminal();
    let bar = if tty {
        ProgressBar::new(todo.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} questions, {per_sec}, ETA {eta}")
            .expect("a valid template"),
    );
    let start = Instant::now();
    let mut said = start;
    let mut asked = 0;
    for chunk in todo.chunks(asking.batch_size.max(1)) {
        let answers = match answer(loaded, chunk, asking) {
            Ok(a) => a.into_iter().map(Ok).collect(),
            Err(_) if chunk.len() > 1 => chunk
                .iter()
                .map(|item| answer(loaded, &[*item], asking).map(|mut a| a.remove(0)))
                .collect(),
            Err(e) => vec![Err(e)],
        };
        let mut lines = String::new();
        for (item, answer) in chunk.iter().zip(answers) {
            let p = match answer {
                Ok(g) => json!({
                    "key": item.key,
                    "prediction": g.text.trim(),
                    "reasoning": g.reasoning,
                    "tokens": g.tokens.len(),
                    "finish_reason": g.finish_reason.as_str(),
                }),
                Err(e) => json!({"key": item.key, "error": format!("{e:#}")}),
            };
            lines += &format!("{p}\n");
            done.insert(item.key.clone(), p);
        }
        file.write_all(lines.as_bytes())?;
        file.sync_data()?;
        asked += chunk.len();
        bar.inc(chunk.len() as u64);
        if !tty && (said.elapsed().as_secs() >= 10 || asked == todo.len()) {
            said = Instant::now();
            let rate = asked as f64 / start.elapsed().as_secs_f64().max(1e-9);
            let left = (todo.len() - asked) as f64 / rate;
            eprintln!(
                "{asked}/{} questions, {rate:.2}/s, ETA {:.0}s",
                todo.len(),
                left
            );
        }
    }
    bar.finish_and_clear();
    Ok(())
}

fn answer(loaded: &Loaded, items: &[&Item], asking: &Asking) -> Result<Vec<Generated>> {
    let requests: Vec<GenerationRequest> = items.iter().map(|i| asking.request(i)).collect();
    Ok(generate(
        &loaded.model,
        &loaded.processor,
        &requests,
        &loaded.device,
        &mut |_, _| {},
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resuming_keeps_whole_answers_and_asks_failures_again() {
        let out = std::env::temp_dir().join(format!("nuri-eval-open-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let header =
            json!({"model": {"path": "m"}, "benchmark": {"sha256": "ab"}, "settings": {"x": 1}});
        let (done, _) = open(&out, &header, false).expect("a new folder");
        assert!(done.is_empty());
        let predictions = out.join("predictions.jsonl");
        // An answer, a failure, then a line cut by a kill.
        std::fs::write(
            &predictions,
            "{\"key\":\"1\",\"prediction\":\"A\"}\n{\"key\":\"2\",\"error\":\"bad image\"}\n{\"key\":\"3\",\"predi",
        )
        .expect("write");
        let (done, _) = open(&out, &header, false).expect("resumes");
        assert_eq!(done.keys().collect::<Vec<_>>(), ["1"]);
        let kept = std::fs::read_to_string(&predictions).expect("read");
        assert!(kept.ends_with("\"bad image\"}\n"), "{kept}");
        // Another model or other settings: refused, the predictions kept.
        for (what, other) in [
            (
                "model",
                json!({"model": {"path": "n"}, "benchmark": {"sha256": "ab"}, "settings": {"x": 1}}),
            ),
            (
                "settings",
                json!({"model": {"path": "m"}, "benchmark": {"sha256": "ab"}, "settings": {"x": 2}}),
            ),
            (
                "benchmark file",
                json!({"model": {"path": "m"}, "benchmark": {"sha256": "cd"}, "settings": {"x": 1}}),
            ),
        ] {
            let err = open(&out, &other, false).expect_err("refused").to_string();
            assert!(err.contains(what) && err.contains("--restart"), "{err}");
        }
        assert_eq!(std::fs::read_to_string(&predictions).expect("read"), kept);
        let (done, _) = open(&out, &header, true).expect("restarts");
        assert!(done.is_empty());
        let _ = std::fs::remove_dir_all(&out);
    }
}
