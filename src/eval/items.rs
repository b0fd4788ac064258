//! A benchmark's rows as questions: multiple choice (VLMEvalKit's MMBench-style TSV: `index,
//! question, hint, A…, answer, category, l2-category, image`; or Video-MME-style rows with a
//! `video` and an `options` list) or short answer (VQA: `question`, `answer` — one string
//! or a list of them). MMBench's CircularEval copies (index ≥ 1 000 000, the same question
//! with its options rotated) are grouped with their question, or made here when the file
//! has none.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use super::table::Row;

/// VLMEvalKit's offset of a CircularEval copy's index (`index % 1e6` is its question's).
pub const CIRCULAR_OFFSET: u64 = 1_000_000;

/// The letters options are named by.
const LETTERS: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// An image or video a question shows.
#[derive(Debug, Clone, PartialEq)]
pub enum Media {
    /// A `data:` URL (a TSV's base64 image; shared by the rows that point at it and by a
    /// question's rotations) or an absolute path.
    Image(Arc<str>),
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
    /// Korean: the question, its hint or an option has Hangul (VLMEvalKit switches its
    /// instruction by the script the same way for Chinese).
    pub fn korean(&self) -> bool {
        let hangul = |s: &str| {
            s.chars()
                .any(|c| matches!(c, '\u{ac00}'..='\u{d7a3}' | '\u{1100}'..='\u{11ff}' | '\u{3130}'..='\u{318f}'))
        };
        hangul(&self.question)
            || self.hint.as_deref().is_some_and(hangul)
            || self.options.iter().any(|(_, t)| hangul(t))
    }

    /// Whether this is a question's first asking: its own row, or the unrotated form of the
    /// rotations made here (not a file's CircularEval copy, nor a later rotation).
    pub fn first_asking(&self) -> bool {
        self.key == self.group || self.key.ends_with("@0")
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

/// The questions of a benchmark's rows (the first `limit` rows'; an image reference may
/// point past them). `root` resolves relative media paths (the file's folder unless
/// `--media-root`); `circular` adds each multiple-choice question's rotations when the file
/// does not already hold them.
pub fn items(
    rows: &[Row],
    root: &Path,
    task: Option<Task>,
    circular: bool,
    limit: Option<usize>,
) -> Result<(Task, Vec<Item>)> {
    let task = task.unwrap_or_else(|| detect(rows));
    // Images by index, as data URLs made once: the rows that point at another row's image
    // share it.
    let mut images: HashMap<String, Arc<str>> = HashMap::new();
    for row in rows {
        if let (Some(index), Some(image)) = (row.text("index"), row.text("image"))
            && image.len() > 64
            && !image.starts_with('[')
        {
            images.insert(index, data_url(&image).into());
        }
    }
    let rows = &rows[..limit.unwrap_or(rows.len()).min(rows.len())];
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
            .flat_map(|it| (0..it.options.len()).map(move |k| it.rotated(k)))
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
    images: &HashMap<String, Arc<str>>,
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
    let letter = a.trim_start_matches('(').trim_end_matches(['.', ')']);
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
fn media(row: &Row, root: &Path, images: &HashMap<String, Arc<str>>) -> Result<Vec<Media>> {
    let at = &row.at;
    let mut out = Vec::new();
    let own = row.text("index").and_then(|i| images.get(&i));
    if let Some(list) = row.list("image")? {
        // `images` holds a row's own image where its field is one image, not a list.
        let single = !row.text("image").is_some_and(|i| i.starts_with('['));
        for image in list {
            let data = if image.len() <= 64 {
                images.get(image.trim()).cloned().with_context(|| {
                    format!(
                        "{at}: `image` refers to row index `{image}`, which has no image of its own"
                    )
                })?
            } else {
                match own {
                    // The row's own single image, already made into a data URL.
                    Some(url) if single => url.clone(),
                    _ => data_url(&image).into(),
                }
            };
            out.push(Media::Image(data));
        }
    } else if let Some(list) = row.list("image_path")? {
        for p in list {
            let path = resolve(root, &p);
            if !path.is_file() {
                bail!("{at}: image_path {} is not a file", path.display());
            }
            out.push(Media::Image(path.display().to_string().into()));
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(line: usize, fields: serde_json::Value) -> Row {
        Row {
            at: format!("t.tsv:{line}"),
            fields: fields.as_object().expect("object").clone(),
        }
    }

    #[test]
    fn rows_become_questions() {
        let image = "iVBOR".to_string() + &"A".repeat(80);
        let rows = vec![
            row(
                2,
                json!({"index": "5", "question": "Q?", "A": "x", "B": "y", "answer": "(B)", "image": image}),
            ),
            row(
                3,
                json!({"index": "6", "question": "무엇?", "hint": "h", "A": "x", "B": "y", "C": "z", "answer": "z", "image": "5"}),
            ),
        ];
        let (task, qs) = items(&rows, Path::new("/"), None, false, None).expect("items");
        assert_eq!(task, Task::MultipleChoice);
        // "(B)" is the letter B; an option's text names its letter.
        assert_eq!(qs[0].answers, ["B"]);
        assert_eq!(qs[1].answers, ["C"]);
        assert!(!qs[0].korean() && qs[1].korean());
        // Row 6 shares row 5's image: one data URL for both.
        let (Media::Image(a), Media::Image(b)) = (&qs[0].media[0], &qs[1].media[0]) else {
            panic!("images");
        };
        assert!(Arc::ptr_eq(a, b) && a.starts_with("data:image/png;base64,iVBOR"));
        // A reference resolves against the whole file, past --limit; row 6 alone has no
        // row 5 to point at.
        let reversed = vec![rows[1].clone(), rows[0].clone()];
        let (_, first) = items(&reversed, Path::new("/"), None, false, Some(1)).expect("limit");
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].media, qs[1].media);
        let err = items(&rows[1..], Path::new("/"), None, false, None)
            .expect_err("row 6 alone has no row 5 to point at");
        assert!(err.to_string().contains("t.tsv:3"), "{err}");
        let (_, limited) = items(&rows, Path::new("/"), None, true, Some(1)).expect("limited");
        // CircularEval made here: two rotations of the two-option question.
        assert_eq!(
            limited.iter().map(|i| i.key.as_str()).collect::<Vec<_>>(),
            ["5@0", "5@1"]
        );
        assert_eq!(limited[1].answers, ["A"]);
        assert_eq!(limited[1].options[0].1, "y");
        // A file's own copies (index + 1 000 000) are grouped with their question.
        let copies = vec![
            rows[0].clone(),
            row(
                4,
                json!({"index": "1000005", "question": "Q?", "A": "y", "B": "x", "answer": "A", "image": "5"}),
            ),
        ];
        let (_, grouped) = items(&copies, Path::new("/"), None, true, None).expect("copies");
        assert_eq!(grouped.len(), 2);
        assert_eq!(grouped[1].group, "5");
        // Bad rows are named.
        let bad = vec![row(
            7,
            json!({"index": "1", "question": "Q?", "A": "x", "answer": "A"}),
        )];
        let err = items(&bad, Path::new("/"), None, false, None).expect_err("one option");
        assert!(err.to_string().contains("t.tsv:7"), "{err}");
        let bad = vec![row(
            8,
            json!({"index": "1", "question": "Q?", "A": "x", "B": "y", "answer": "E"}),
        )];
        let err = items(&bad, Path::new("/"), None, false, None).expect_err("no such answer");
        assert!(
            err.to_string().contains("t.tsv:8") && err.to_string().contains("`E`"),
            "{err}"
        );
    }
}
