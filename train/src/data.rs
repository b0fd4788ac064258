//! Training data: JSON Lines of conversations, in the LLaVA/ShareGPT shape Qwen-VL
//! fine-tuning scripts accept —
//! `{"id", "image"|"images"|"video"|"videos", "conversations": [{"from": "human"|"gpt"|"system",
//! "value": "...<image>..."}]}` — or OpenAI-style `{"messages": [...]}` with content parts.
//! Every line becomes OpenAI-style messages; a line that cannot is reported with its file
//! and line number.

use std::path::{Path, PathBuf};

use nuri_processor::media_items;
use serde_json::{Value as Json, json};

use crate::TrainError;

/// One usable conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// `file:line`, for reports.
    pub origin: String,
    pub id: Option<String>,
    /// OpenAI-style messages, media paths absolute.
    pub messages: Json,
    /// A cheap length estimate (characters + media) for grouping by length.
    pub length_hint: usize,
}

/// A line that was not used, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct BadSample {
    pub origin: String,
    pub reason: String,
}

impl std::fmt::Display for BadSample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.origin, self.reason)
    }
}

/// Approximate characters a media item is worth in the length estimate.
const MEDIA_LENGTH_HINT: usize = 256;

fn role(from: &str) -> Option<&'static str> {
    match from {
        "human" | "user" => Some("user"),
        "gpt" | "assistant" => Some("assistant"),
        "system" => Some("system"),
        _ => None,
    }
}

/// A list of strings from `key` (a string) or `plural` (a list of strings).
fn paths(line: &Json, key: &str, plural: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for k in [key, plural] {
        match line.get(k) {
            None | Some(Json::Null) => {}
            Some(Json::String(s)) => out.push(s.clone()),
            Some(Json::Array(items)) => {
                for item in items {
                    out.push(
                        item.as_str()
                            .ok_or_else(|| format!("`{k}`: expected strings, got {item}"))?
                            .to_string(),
                    );
                }
            }
            Some(other) => return Err(format!("`{k}`: expected a path or a list, got {other}")),
        }
    }
    Ok(out)
}

/// Converts one ShareGPT/LLaVA record to OpenAI-style messages.
fn from_sharegpt(line: &Json) -> Result<Json, String> {
    let images = paths(line, "image", "images")?;
    let videos = paths(line, "video", "videos")?;
    let turns = line["conversations"]
        .as_array()
        .ok_or("`conversations`: expected a list of turns")?;
    let tags = |tag: &str| {
        turns
            .iter()
            .filter_map(|t| t.get("value").and_then(Json::as_str))
            .map(|v| v.matches(tag).count())
            .sum::<usize>()
    };
    let (image_tags, video_tags) = (tags("<image>"), tags("<video>"));
    // No tags at all: the media go before the first user turn's text (a common shorthand).
    let prepend = image_tags == 0 && video_tags == 0;
    if !prepend {
        if image_tags != images.len() {
            return Err(format!(
                "{image_tags} <image> tags but {} images",
                images.len()
            ));
        }
        if video_tags != videos.len() {
            return Err(format!(
                "{video_tags} <video> tags but {} videos",
                videos.len()
            ));
        }
    }
    let (mut next_image, mut next_video) = (images.iter(), videos.iter());
    let mut messages = Vec::new();
    let mut first_user = true;
    for (i, turn) in turns.iter().enumerate() {
        let from = turn
            .get("from")
            .and_then(Json::as_str)
            .ok_or_else(|| format!("turn {i}: `from` must be \"human\", \"gpt\" or \"system\""))?;
        let role = role(from).ok_or_else(|| format!("turn {i}: unknown speaker `{from}`"))?;
        let value = turn
            .get("value")
            .and_then(Json::as_str)
            .ok_or_else(|| format!("turn {i}: `value` must be a string"))?;
        let mut parts = Vec::new();
        if prepend && role == "user" && first_user {
            parts.extend(images.iter().map(|p| json!({"type": "image", "image": p})));
            parts.extend(videos.iter().map(|p| json!({"type": "video", "video": p})));
        }
        if role == "user" {
            first_user = false;
        }
        let rest = split_at_tags(value, &mut next_image, &mut next_video, &mut parts);
        if !rest.is_empty() || parts.is_empty() {
            parts.push(json!({"type": "text", "text": rest}));
        }
        let content = if parts.len() == 1 && parts[0]["type"] == "text" {
            parts[0]["text"].clone()
        } else {
            Json::Array(parts)
        };
        let mut message = json!({"role": role, "content": content});
        if let Some(reasoning) = reasoning_of(turn).filter(|_| role == "assistant") {
            message["reasoning_content"] = reasoning;
        }
        messages.push(message);
    }
    Ok(Json::Array(messages))
}

/// Splits a turn's text at its `<image>` / `<video>` tags into content parts, each tag taking
/// the next medium of its kind (the tags were counted against the media before); returns the
/// text after the last tag.
pub fn split_at_tags<'a>(
    value: &'a str,
    images: &mut std::slice::Iter<'_, String>,
    videos: &mut std::slice::Iter<'_, String>,
    parts: &mut Vec<Json>,
) -> &'a str {
    let mut rest = value;
    loop {
        let at_image = rest.find("<image>");
        let at_video = rest.find("<video>");
        let (at, tag, part) = match (at_image, at_video) {
            (None, None) => return rest,
            (Some(a), v) if v.is_none_or(|v| a < v) => (
                a,
                "<image>",
                json!({"type": "image", "image": images.next().expect("counted")}),
            ),
            (_, Some(v)) => (
                v,
                "<video>",
                json!({"type": "video", "video": videos.next().expect("counted")}),
            ),
            _ => unreachable!(),
        };
        // LLaVA data puts a newline after a leading tag; it belongs to the tag.
        let text = &rest[..at];
        if !text.trim().is_empty() {
            parts.push(json!({"type": "text", "text": text}));
        }
        parts.push(part);
        rest = &rest[at + tag.len()..];
        rest = rest.strip_prefix('\n').unwrap_or(rest);
    }
}

/// Checks a conversation: it has an assistant turn, and its media are regular files (or, for
/// a video, a folder of frames): opening anything else, a FIFO say, could block the run.
fn check(messages: &Json, root: &Path) -> Result<usize, String> {
    let list = messages.as_array().ok_or("messages must be a list")?;
    if !list.iter().any(|m| m["role"] == "assistant") {
        return Err("no assistant turn to learn from".into());
    }
    let items = media_items(messages, root).map_err(|e| e.to_string())?;
    for item in &items {
        let (path, folder_too) = match item {
            nuri_processor::MediaItem::Image {
                source: nuri_processor::MediaSource::Path(p),
                ..
            } => (p, false),
            nuri_processor::MediaItem::Video { source, .. } => (source, true),
            _ => continue,
        };
        if !path.exists() {
            return Err(format!("{}: no such file", path.display()));
        }
        if !(folder_too && path.is_dir()) {
            nuri_media::check_regular_file(path).map_err(|e| e.to_string())?;
        }
    }
    let chars = messages.to_string().chars().count();
    Ok(chars + items.len() * MEDIA_LENGTH_HINT)
}

/// Makes relative media paths absolute against `root`.
fn absolutize(messages: &mut Json, root: &Path) {
    let Some(list) = messages.as_array_mut() else {
        return;
    };
    for message in list {
        let Some(parts) = message.get_mut("content").and_then(Json::as_array_mut) else {
            continue;
        };
        for part in parts {
            for key in ["image", "video"] {
                if let Some(Json::String(p)) = part.get(key) {
                    let path = Path::new(p.strip_prefix("file://").unwrap_or(p));
                    if !p.starts_with("data:") && path.is_relative() {
                        part[key] = Json::String(root.join(path).display().to_string());
                    }
                }
            }
        }
    }
}

/// The absolute directory media paths of `path` are relative to: `media_root`, or else the
/// file's own folder (so the paths written into the samples do not depend on a later
/// resolution).
fn media_root_of(path: &Path, media_root: Option<&Path>) -> Result<PathBuf, TrainError> {
    let root: PathBuf = media_root
        .map(Path::to_path_buf)
        .unwrap_or_else(|| match path.parent() {
            // A bare `data.jsonl` has the parent `""`, which `absolute` refuses.
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        });
    std::path::absolute(&root).map_err(|source| TrainError::Io {
        path: root.clone(),
        source,
    })
}

/// An assistant turn's reasoning, under any of the names datasets give it: OpenAI-style
/// `reasoning_content`, `reasoning`, `thinking`. It goes to the chat template as
/// `reasoning_content`, the name the reasoning families' templates read (a `<think>` block
/// in the text is left where it is: those templates split it off themselves).
fn reasoning_of(turn: &Json) -> Option<Json> {
    ["reasoning_content", "reasoning", "thinking"]
        .iter()
        .find_map(|k| turn.get(*k).filter(|v| v.is_string()).cloned())
}

/// One line's conversation: its messages (media paths absolute), id and length hint.
fn parse_line(line: &str, root: &Path) -> Result<(Json, Option<String>, usize), String> {
    let record = serde_json::from_str::<Json>(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let mut messages = match (record.get("messages"), record.get("conversations")) {
        (Some(m), _) => m.clone(),
        (None, Some(_)) => from_sharegpt(&record)?,
        (None, None) => {
            return Err("expected `conversations` (ShareGPT) or `messages` (OpenAI)".into());
        }
    };
    if let Some(list) = messages.as_array_mut() {
        for m in list.iter_mut().filter(|m| m["role"] == "assistant") {
            if let Some(reasoning) = reasoning_of(m)
                && let Some(obj) = m.as_object_mut()
            {
                obj.remove("reasoning");
                obj.remove("thinking");
                obj.insert("reasoning_content".into(), reasoning);
            }
        }
    }
    absolutize(&mut messages, root);
    let length_hint = check(&messages, root)?;
    let id = record.get("id").map(|v| match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    });
    Ok((messages, id, length_hint))
}

/// Reads a JSONL file. Usable lines become samples; the others are returned as bad samples
/// (or, with `fail_fast`, the first one is an error). The file is read as bytes, so that a
/// line of invalid UTF-8 is one bad sample, not a bad file.
pub fn load_jsonl(
    path: &Path,
    media_root: Option<&Path>,
    fail_fast: bool,
) -> Result<(Vec<Sample>, Vec<BadSample>), TrainError> {
    let bytes = std::fs::read(path).map_err(|source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let root = media_root_of(path, media_root)?;
    let (mut samples, mut bad) = (Vec::new(), Vec::new());
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let origin = format!("{}:{}", path.display(), i + 1);
        let parsed = match std::str::from_utf8(line) {
            Ok(text) if text.trim().is_empty() => continue,
            Ok(text) => parse_line(text, &root),
            Err(_) => Err("invalid UTF-8".to_string()),
        };
        match parsed {
            Ok((messages, id, length_hint)) => samples.push(Sample {
                origin,
                id,
                messages,
                length_hint,
            }),
            Err(reason) => {
                let b = BadSample { origin, reason };
                if fail_fast {
                    return Err(TrainError::BadSample(b.to_string()));
                }
                bad.push(b);
            }
        }
    }
    Ok((samples, bad))
}

/// A small deterministic generator (SplitMix64): shuffling must not depend on a crate's
/// version, so a seed means the same order forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

/// The batches of one epoch, as sample indices: a seeded permutation, cut into windows of
/// `batch × bucket_batches`, each window sorted by length and cut into batches, the batches
/// of the epoch shuffled. The same seed and epoch give the same plan.
pub fn epoch_plan(
    lengths: &[usize],
    batch: usize,
    bucket_batches: usize,
    seed: u64,
    epoch: u64,
) -> Vec<Vec<usize>> {
    let mut rng = SplitMix64(seed ^ epoch.wrapping_mul(0xA24B_AED4_963E_E407));
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    rng.shuffle(&mut order);
    let mut batches = Vec::new();
    for window in order.chunks(batch * bucket_batches) {
        let mut window = window.to_vec();
        window.sort_by_key(|&i| (lengths[i], i));
        batches.extend(window.chunks(batch).map(<[usize]>::to_vec));
    }
    rng.shuffle(&mut batches);
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_of_a_bare_file_name_are_relative_to_the_working_directory() {
        let cwd = std::env::current_dir().expect("a working directory");
        let root = media_root_of(Path::new("data.jsonl"), None).expect("resolves");
        assert_eq!(root, cwd.join("."));
        let root = media_root_of(Path::new("sets/data.jsonl"), None).expect("resolves");
        assert_eq!(root, cwd.join("sets"));
        let root = media_root_of(Path::new("data.jsonl"), Some(Path::new("/srv/media")));
        assert_eq!(root.expect("resolves"), PathBuf::from("/srv/media"));
    }

    #[test]
    fn sharegpt_tags_become_parts_in_order() {
        let line = json!({"id": 1, "images": ["a.png", "b.png"], "video": "c.gif", "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": "<image>\nLeft, <image> right and <video> clip?"},
            {"from": "gpt", "value": "Yes."}
        ]});
        let m = from_sharegpt(&line).expect("valid");
        assert_eq!(m[0], json!({"role": "system", "content": "Be brief."}));
        assert_eq!(
            m[1]["content"],
            json!([
                {"type": "image", "image": "a.png"},
                {"type": "text", "text": "Left, "},
                {"type": "image", "image": "b.png"},
                {"type": "text", "text": " right and "},
                {"type": "video", "video": "c.gif"},
                {"type": "text", "text": " clip?"}
            ])
        );
        assert_eq!(m[2], json!({"role": "assistant", "content": "Yes."}));
        // Without tags, the media lead the first user turn.
        let m = from_sharegpt(&json!({"image": "a.png", "conversations": [
            {"from": "human", "value": "What?"}, {"from": "gpt", "value": "A."}]}))
        .expect("valid");
        assert_eq!(
            m[0]["content"][0],
            json!({"type": "image", "image": "a.png"})
        );
        let err = from_sharegpt(&json!({"image": "a.png", "conversations": [
            {"from": "human", "value": "<image><image>"}, {"from": "gpt", "value": "A."}]}))
        .unwrap_err();
        assert!(err.contains("2 <image> tags but 1 images"), "{err}");
    }

    #[test]
    fn plans_are_deterministic_and_cover_every_sample_once() {
        let lengths: Vec<usize> = (0..50).map(|i| (i * 37) % 11).collect();
        let a = epoch_plan(&lengths, 4, 2, 7, 0);
        assert_eq!(a, epoch_plan(&lengths, 4, 2, 7, 0));
        assert_ne!(a, epoch_plan(&lengths, 4, 2, 7, 1));
        let mut all: Vec<usize> = a.iter().flatten().copied().collect();
        all.sort();
        assert_eq!(all, (0..50).collect::<Vec<_>>());
        // Within a batch, lengths are close (sorted windows).
        for b in &a {
            let l: Vec<usize> = b.iter().map(|&i| lengths[i]).collect();
            assert!(l.windows(2).all(|w| w[0] <= w[1]), "{l:?}");
        }
    }
}
