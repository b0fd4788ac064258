//! A benchmark's rows as questions: multiple choice (VLMEvalKit's MMBench-style TSV: `index,
//! question, hint, A…, answer, category, l2-category, image`; or Video-MME-style rows with a
//! `video` and an `options` list) or short answer (VQA: `question`, `answer` — one string
//! or a list of them). MMBench's CircularEval copies (index ≥ 1 000 000, the same question
//! with its options rotated) are grouped with their question, or made here when the file
//! has none.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::table::Row;

/// VLMEvalKit's offset of a CircularEval copy's index (`index % 1e6` is its question's).
pub const CIRCULAR_OFFSET: u64 = 1_000_000;

/// The letters options are named by.
const LETTERS: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// An image or video a question shows.
#[derive(Debug, Clone, PartialEq)]
pub enum Media {
    /// A `data:` URL (a TSV's base64 image) or an absolute path.
    Image(String),
    Video(PathBuf),
}

/// What kind of answer a benchmark asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Task {
    /// Options named by letters; the answer is a letter.
    MultipleChoice,
    /// A short free answer, scored against one or more references.
    Vqa,
}

/// One question to ask.
#[derive(Debug, Clone)]
pub struct Item {
    /// Unique within the run: the row's index, `@k` for the k-th rotation made here.
    pub key: String,
    /// The question a CircularEval rotation belongs to (its own key otherwise).
    pub group: String,
    /// `file:line` of its row.
    pub at: String,
    pub question: String,
    pub hint: Option<String>,
    /// `(letter, text)`, in letter order; empty for VQA.
    pub options: Vec<(char, String)>,
    /// The right letter (multiple choice) or the reference answers (VQA); empty when the
    /// file does not say (a test split): asked, not scored.
    pub answers: Vec<String>,
    pub category: Option<String>,
    pub l2: Option<String>,
    pub media: Vec<Media>,
}

impl Item {
    /// Korean: the question or an option has Hangul (VLMEvalKit switches its instruction by
    /// the script the same way for Chinese).
    pub fn korean(&self) -> bool {
        let hangul = |s: &str| {
            s.chars()
                .any(|c| matches!(c, '\u{ac00}'..='\u{d7a3}' | '\u{1100}'..='\u{11ff}' | '\u{3130}'..='\u{318f}'))
        };
        hangul(&self.question) || self.options.iter().any(|(_, t)| hangul(t))
    }

    /// The same question with its options turned by `k` places: the option at letter `i`
    /// is the one that was at `i + k`, and the answer letter follows its text.
    pub fn rotated(&self, k: usize) -> Item {
        let n = self.options.len();
        let letters: Vec<char> = self.options.iter().map(|(l, _)| *l).collect();
        let options = (0..n)
            .map(|i| (letters[i], self.options[(i + k) % n].1.clone()))
            .collect();
        let answers = self
            .answers
            .iter()
            .map(|a| match letters.iter().position(|l| a.starts_with(*l)) {
                Some(p) => letters[(p + n - k % n) % n].to_string(),
                None => a.clone(),
            })
            .collect();
        Item {
            key: format!("{}@{k}", self.key),
            group: self.group.clone(),
            options,
            answers,
            ..self.clone()
        }
    }
}

/// The questions of a benchmark's rows. `root` resolves relative media paths (the file's
/// folder unless `--media-root`); `circular` adds each multiple-choice question's rotations
/// when the file does not already hold them.
pub fn items(
    rows: &[Row],
    root: &Path,
    task: Option<Task>,
    circular: bool,
) -> Result<(Task, Vec<Item>)> {
    let task = task.unwrap_or_else(|| detect(rows));
    // Images by index, for the rows that point at another row's image.
    let mut images: HashMap<String, String> = HashMap::new();
    for row in rows {
        if let (Some(index), Some(image)) = (row.text("index"), row.text("image"))
            && image.len() > 64
        {
            images.insert(index, image);
        }
    }
    let mut out = Vec::with_capacity(rows.len());
    let mut keys = HashMap::new();
    for (i, row) in rows.iter().enumerate() {
        let item = item(row, i, root, task, &images)?;
        if let Some(first) = keys.insert(item.key.clone(), row.at.clone()) {
            bail!(
                "{}: index `{}` is also the index of {first}",
                row.at,
                item.key
            );
        }
        out.push(item);
    }
    let has_copies = out.iter().any(|it| it.key != it.group);
    if circular && task == Task::MultipleChoice && !has_copies {
        out = out
            .into_iter()
            .flat_map(|it| {
                let n = it.options.len().max(1);
                let mut all = vec![Item {
                    key: format!("{}@0", it.key),
                    ..it.clone()
                }];
                all.extend((1..n).map(|k| it.rotated(k)));
                all
            })
            .collect();
    }
    Ok((task, out))
}

/// Multiple choice when the rows have an `A` column or an `options` list.
fn detect(rows: &[Row]) -> Task {
    if rows
        .iter()
        .any(|r| r.fields.contains_key("A") || r.fields.contains_key("options"))
    {
        Task::MultipleChoice
    } else {
        Task::Vqa
    }
}

fn item(
    row: &Row,
    i: usize,
    root: &Path,
    task: Task,
    images: &HashMap<String, String>,
) -> Result<Item> {
    let at = &row.at;
    let index = row
        .first(&["index", "id", "question_id"])
        .unwrap_or_else(|| i.to_string());
    let group = match index.parse::<u64>() {
        Ok(n) if n >= CIRCULAR_OFFSET => (n % CIRCULAR_OFFSET).to_string(),
        _ => index.clone(),
    };
    // Kept as written (a trailing newline before an `<image>` tag is part of the layout).
    let question = match row.fields.get("question") {
        Some(serde_json::Value::String(q)) if !q.trim().is_empty() => q.clone(),
        _ => row
            .text("question")
            .with_context(|| format!("{at}: no `question`"))?,
    };
    let options = match task {
        Task::Vqa => Vec::new(),
        Task::MultipleChoice => options(row)?,
    };
    if task == Task::MultipleChoice && options.len() < 2 {
        bail!("{at}: a multiple-choice question needs at least two options (columns A, B, …)");
    }
    let answers = match task {
        Task::MultipleChoice => match row.text("answer") {
            None => Vec::new(),
            Some(a) => vec![answer_letter(&a, &options).with_context(|| {
                format!("{at}: the answer `{a}` is neither an option's letter nor its text")
            })?],
        },
        Task::Vqa => row.list("answer")?.unwrap_or_default(),
    };
    Ok(Item {
        key: index,
        group,
        at: at.clone(),
        question,
        hint: row.text("hint"),
        options,
        answers,
        category: row.first(&["category", "task_type", "domain", "question_type"]),
        l2: row.first(&["l2-category", "l2_category", "sub_category", "duration"]),
        media: media(row, root, images)?,
    })
}

/// Options from the letter columns that have a value (a question may have fewer than the
/// file's widest), or from an `options` list (`A. text` items keep their letters).
fn options(row: &Row) -> Result<Vec<(char, String)>> {
    let from_columns: Vec<(char, String)> = LETTERS
        .chars()
        .filter_map(|l| row.text(&l.to_string()).map(|t| (l, t)))
        .collect();
    if !from_columns.is_empty() {
        return Ok(from_columns);
    }
    let Some(list) = row.list("options")? else {
        return Ok(Vec::new());
    };
    Ok(list
        .iter()
        .zip(LETTERS.chars())
        .map(|(text, l)| {
            let t = text.trim();
            let stripped = t
                .strip_prefix(l)
                .and_then(|r| r.strip_prefix(['.', ')', ':']))
                .map(str::trim);
            (l, stripped.unwrap_or(t).to_string())
        })
        .collect())
}

/// The answer as a letter: a letter among the options, or an option's exact text.
fn answer_letter(answer: &str, options: &[(char, String)]) -> Option<String> {
    let a = answer.trim();
    let letter = a.trim_end_matches(['.', ')']);
    if let Some((l, _)) = options
        .iter()
        .find(|(l, _)| letter.len() == 1 && letter.starts_with(*l))
    {
        return Some(l.to_string());
    }
    options
        .iter()
        .find(|(_, t)| t == a)
        .map(|(l, _)| l.to_string())
}

/// The row's images (`image`: base64, a list of them, or the index of a row whose image it
/// shares; `image_path`) and video (`video`: a path, or a Video-MME id found as
/// `video/ID.mp4`).
fn media(row: &Row, root: &Path, images: &HashMap<String, String>) -> Result<Vec<Media>> {
    let at = &row.at;
    let mut out = Vec::new();
    if let Some(list) = row.list("image")? {
        for image in list {
            let data = if image.len() <= 64 {
                images.get(image.trim()).with_context(|| {
                    format!(
                        "{at}: `image` refers to row index `{image}`, which has no image of its own"
                    )
                })?
            } else {
                &image
            };
            out.push(Media::Image(data_url(data)));
        }
    } else if let Some(list) = row.list("image_path")? {
        for p in list {
            let path = resolve(root, &p);
            if !path.is_file() {
                bail!("{at}: image_path {} is not a file", path.display());
            }
            out.push(Media::Image(path.display().to_string()));
        }
    }
    if let Some(v) = row.first(&["video", "video_path"]) {
        let direct = resolve(root, &v);
        let by_id = root.join("video").join(format!("{v}.mp4"));
        let path = if direct.is_file() {
            direct
        } else if by_id.is_file() {
            by_id
        } else {
            bail!(
                "{at}: video `{v}` is neither {} nor {}",
                direct.display(),
                by_id.display()
            );
        };
        out.push(Media::Video(path));
    }
    Ok(out)
}

fn resolve(root: &Path, p: &str) -> PathBuf {
    let p = p.strip_prefix("file://").unwrap_or(p);
    if Path::new(p).is_absolute() {
        PathBuf::from(p)
    } else {
        root.join(p)
    }
}

/// A base64 image as a `data:` URL, its type read from the first bytes.
fn data_url(b64: &str) -> String {
    let b64 = b64.trim();
    if b64.starts_with("data:") {
        return b64.to_string();
    }
    let mime = [
        ("iVBO", "image/png"),
        ("/9j/", "image/jpeg"),
        ("R0lG", "image/gif"),
        ("UklG", "image/webp"),
        ("Qk", "image/bmp"),
    ]
    .iter()
    .find(|(magic, _)| b64.starts_with(magic))
    .map_or("image/png", |(_, mime)| mime);
    format!("data:{mime};base64,{b64}")
}
