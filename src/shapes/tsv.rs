//! An evaluation split also as a VLMEvalKit-style multiple-choice TSV (`index, question,
//! A, B, C, D, answer, category, l2-category, image | video`): each question's options are
//! its answer and up to three other answers its family has in that language in the split,
//! the right one at a position that varies; pictures inline as base64 PNG, clips by path.
//! `nuri eval --benchmark` on it (`--prompt question`, the question as the model was
//! trained on it) measures what the quickstart's exact-match table does.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use base64::Engine;
use serde_json::Value as Json;

const LETTERS: [&str; 4] = ["A", "B", "C", "D"];

/// Writes `jsonl` (a split in the training format, one question per line) as a TSV beside
/// it; returns the TSV's path, or `None` where a family has a single answer in the split
/// (too small a split to make choices from).
pub fn write_choice_tsv(jsonl: &Path) -> Result<Option<PathBuf>> {
    let dir = jsonl.parent().unwrap_or(Path::new("."));
    let text =
        std::fs::read_to_string(jsonl).with_context(|| format!("reading {}", jsonl.display()))?;
    let lines: Vec<Json> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{}:{}", jsonl.display(), i + 1))
        })
        .collect::<Result<_>>()?;
    let str_of = |v: &Json, k: &str| v[k].as_str().unwrap_or("").to_string();
    // The answers each (family, language) has in the split, in a fixed order.
    let mut answers: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for l in &lines {
        let list = answers
            .entry((str_of(l, "family"), str_of(l, "lang")))
            .or_default();
        let a = str_of(l, "answer");
        if !list.contains(&a) {
            list.push(a);
        }
    }
    for list in answers.values_mut() {
        list.sort();
    }
    if answers.values().any(|list| list.len() < 2) {
        return Ok(None);
    }
    let tsv = jsonl.with_extension("tsv");
    let mut w = std::io::BufWriter::new(
        std::fs::File::create(&tsv).with_context(|| format!("writing {}", tsv.display()))?,
    );
    writeln!(
        w,
        "index\tquestion\tA\tB\tC\tD\tanswer\tcategory\tl2-category\timage\tvideo"
    )?;
    for (i, l) in lines.iter().enumerate() {
        let (family, lang, answer) = (str_of(l, "family"), str_of(l, "lang"), str_of(l, "answer"));
        let all = &answers[&(family.clone(), lang.clone())];
        let at = all.iter().position(|a| *a == answer).expect("collected");
        let n = all.len().min(4);
        // The answer and the next n-1 answers in order, turned so the answer is at i % n.
        let mut options: Vec<&String> = (0..n).map(|k| &all[(at + k) % all.len()]).collect();
        options.rotate_right(i % n);
        let letter = LETTERS[i % n];
        let question = l["conversations"][0]["value"].as_str().unwrap_or("");
        let mut row = vec![i.to_string(), quote(question)];
        row.extend((0..4).map(|k| options.get(k).map_or(String::new(), |o| quote(o))));
        row.extend([letter.to_string(), family, lang]);
        match (l["image"].as_str(), l["video"].as_str()) {
            (Some(image), _) => {
                let bytes = std::fs::read(dir.join(image))
                    .with_context(|| format!("reading {}", dir.join(image).display()))?;
                row.push(base64::engine::general_purpose::STANDARD.encode(bytes));
                row.push(String::new());
            }
            (None, Some(video)) => row.extend([String::new(), video.to_string()]),
            (None, None) => row.extend([String::new(), String::new()]),
        }
        writeln!(w, "{}", row.join("\t"))?;
    }
    w.flush()?;
    Ok(Some(tsv))
}

/// A field as pandas writes it: quoted when it holds a tab, a quote or a newline.
pub fn quote(field: &str) -> String {
    if field.contains(['\t', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}
