//! Chat messages in the OpenAI shape: `{"role": ..., "content": "text" | [parts]}` where a
//! part is `{"type": "text", "text": ...}`, `{"type": "image", "image": SOURCE}`,
//! `{"type": "image_url", "image_url": {"url": SOURCE}}` or `{"type": "video", "video":
//! SOURCE}`, with `qwen_vl_utils`' per-item keys (`min_pixels`, `max_pixels`, `fps`,
//! `nframes`, `min_frames`, `max_frames`, `total_pixels`). A source is a path, a `file://`
//! URL or (images) a `data:` URL.

use std::path::{Path, PathBuf};

use base64::Engine;
use nuri_media::video::{FrameSampling, VideoOptions};
use serde_json::Value as Json;

use crate::ProcessorError;

/// Where media bytes come from.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaSource {
    Path(PathBuf),
    /// Bytes from a `data:` URL.
    Bytes(Vec<u8>),
}

/// One image or video a conversation refers to, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaItem {
    Image {
        source: MediaSource,
        /// Per-image bounds on the resized area.
        min_pixels: Option<usize>,
        max_pixels: Option<usize>,
        /// Names the item in errors (`message 0, part 1`).
        label: String,
    },
    Video {
        source: PathBuf,
        options: VideoOptions,
        label: String,
    },
}

fn bad(message: usize, part: Option<usize>, what: String) -> ProcessorError {
    ProcessorError::Message {
        message,
        part,
        what,
    }
}

/// Resolves a media reference against `root` (relative paths).
fn source(
    text: &str,
    root: &Path,
    allow_data: bool,
    at: (usize, usize),
) -> Result<MediaSource, ProcessorError> {
    if let Some(rest) = text.strip_prefix("data:") {
        if !allow_data {
            return Err(bad(
                at.0,
                Some(at.1),
                "videos must be files, not data URLs".into(),
            ));
        }
        let (meta, payload) = rest.split_once(',').ok_or_else(|| {
            bad(
                at.0,
                Some(at.1),
                "a data URL needs a comma before its payload".into(),
            )
        })?;
        if !meta.ends_with(";base64") {
            return Err(bad(
                at.0,
                Some(at.1),
                format!("data URL `data:{meta},...` is not base64-encoded"),
            ));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(payload.trim())
            .map_err(|e| bad(at.0, Some(at.1), format!("data URL: invalid base64: {e}")))?;
        return Ok(MediaSource::Bytes(bytes));
    }
    if text.starts_with("http://") || text.starts_with("https://") {
        return Err(bad(
            at.0,
            Some(at.1),
            format!("`{text}`: Nuri does not fetch URLs; give a file path or a data URL"),
        ));
    }
    let path = Path::new(text.strip_prefix("file://").unwrap_or(text));
    Ok(MediaSource::Path(if path.is_absolute() {
        path.to_path_buf()
    } else {
        root.join(path)
    }))
}

/// The file extensions HyperCLOVA X's chat template reads as videos (any other `image_url` is
/// an image to it).
pub const HYPERCLOVAX_VIDEO_EXTENSIONS: [&str; 8] = [
    ".mp4", ".avi", ".mov", ".mkv", ".webm", ".flv", ".wmv", ".m4v",
];

/// `messages` with every media part in Nuri's own shape: for HyperCLOVA X, whose template
/// reads an OpenAI `image_url` whose URL has a video extension as a video, such a part
/// becomes `{"type": "video", "video": URL, …}` (its other keys kept), so the media list and
/// the template agree on its kind. Other families' parts are left as they are.
pub fn canonical_parts(messages: &Json, family: nuri_model::Family) -> Json {
    use nuri_model::Family;
    if !matches!(family, Family::HyperClovaXVisionV2 | Family::HyperClovaX) {
        return messages.clone();
    }
    let mut messages = messages.clone();
    for message in messages.as_array_mut().into_iter().flatten() {
        let Some(parts) = message.get_mut("content").and_then(Json::as_array_mut) else {
            continue;
        };
        for part in parts.iter_mut() {
            let url = match part.get("image_url") {
                Some(Json::String(s)) => s.clone(),
                Some(Json::Object(o)) => match o.get("url").and_then(Json::as_str) {
                    Some(u) => u.to_string(),
                    None => continue,
                },
                _ => continue,
            };
            let lower = url.to_lowercase();
            if !HYPERCLOVAX_VIDEO_EXTENSIONS
                .iter()
                .any(|e| lower.ends_with(e))
            {
                continue;
            }
            if let Some(map) = part.as_object_mut() {
                map.remove("image_url");
                map.insert("type".into(), Json::String("video".into()));
                map.insert("video".into(), Json::String(url));
            }
        }
    }
    messages
}

/// `messages` with their media parts in the shape `family`'s chat template reads:
/// - Qwen2-VL / Qwen2.5-VL: as they are (their template reads every shape);
/// - EXAONE 4.5: `{"type": "image"}` / `{"type": "video"}`, as transformers' processor
///   rewrites OpenAI `image_url` parts before rendering (the template prints nothing for
///   them);
/// - HyperCLOVA X: OpenAI `image_url` parts (its template reads only those; a URL with a
///   video extension is a video), so an image or video part becomes one — a video whose
///   file has no video extension is shown with `.mp4` appended; an image whose file has one
///   is an error naming the part, since the template would count it as a video.
pub fn parts_for_template(
    messages: &Json,
    family: nuri_model::Family,
) -> Result<Json, ProcessorError> {
    use nuri_model::Family;
    if matches!(family, Family::Qwen2Vl | Family::Qwen2_5Vl) {
        return Ok(messages.clone());
    }
    let mut messages = messages.clone();
    let Some(list) = messages.as_array_mut() else {
        return Ok(messages);
    };
    for (m, message) in list.iter_mut().enumerate() {
        let Some(parts) = message.get_mut("content").and_then(Json::as_array_mut) else {
            continue;
        };
        for (p, part) in parts.iter_mut().enumerate() {
            let kind = part.get("type").and_then(Json::as_str).unwrap_or_default();
            let url = |key: &str| match part.get(key) {
                Some(Json::String(s)) => Some(s.clone()),
                Some(Json::Object(o)) => o.get("url").and_then(Json::as_str).map(str::to_string),
                _ => None,
            };
            let (image, video) = (
                url("image").or_else(|| url("image_url")),
                url("video").or_else(|| url("video_url")),
            );
            let is_video_file = |u: &str| {
                let lower = u.to_lowercase();
                HYPERCLOVAX_VIDEO_EXTENSIONS
                    .iter()
                    .any(|e| lower.ends_with(e))
            };
            match family {
                Family::Exaone4_5 | Family::Exaone4 => {
                    if let Some(u) = image.filter(|_| kind != "video") {
                        *part = serde_json::json!({"type": "image", "url": u});
                    } else if let Some(u) = video {
                        *part = serde_json::json!({"type": "video", "url": u});
                    }
                }
                Family::HyperClovaXVisionV2 | Family::HyperClovaX => {
                    let (u, want_video) = match (image, video) {
                        (_, Some(u)) if kind != "image" && kind != "image_url" => (u, true),
                        (Some(u), _) => (u, false),
                        _ => continue,
                    };
                    // The template tells a video from an image by the URL's extension
                    // only; a video in another container (a GIF, frames) is shown to it
                    // with `.mp4` appended, so it counts as the video it is (its
                    // `filename` line then reads `clip.gif.mp4`). The media are read
                    // from the original parts.
                    let u = match (want_video, is_video_file(&u)) {
                        (true, false) => format!("{u}.mp4"),
                        (false, true) => {
                            return Err(bad(
                                m,
                                Some(p),
                                format!(
                                    "HyperCLOVA X's chat template reads a media URL ending in {} as a video; `{u}` is given as an image",
                                    HYPERCLOVAX_VIDEO_EXTENSIONS.join(" "),
                                ),
                            ));
                        }
                        _ => u,
                    };
                    *part = serde_json::json!({"type": "image_url", "image_url": {"url": u}});
                }
                Family::Qwen2Vl | Family::Qwen2_5Vl => {}
            }
        }
    }
    Ok(messages)
}

/// Checks the messages' shape and lists their media in order. Relative paths are resolved
/// against `root`.
pub fn media_items(messages: &Json, root: &Path) -> Result<Vec<MediaItem>, ProcessorError> {
    let list = messages.as_array().ok_or_else(|| ProcessorError::Message {
        message: 0,
        part: None,
        what: format!("messages must be a JSON array, got {messages}"),
    })?;
    let mut items = Vec::new();
    for (m, message) in list.iter().enumerate() {
        for (p, part) in content_parts(m, message)?.iter().enumerate() {
            let part = Part { json: part, m, p };
            if let Some(item) = part.media(root)? {
                items.push(item);
            } else {
                part.check_text()?;
            }
        }
    }
    Ok(items)
}

/// A message's content parts (none when its content is a plain string), after checking its
/// `role`.
fn content_parts(m: usize, message: &Json) -> Result<&[Json], ProcessorError> {
    match message.get("role") {
        Some(Json::String(_)) => {}
        other => {
            return Err(bad(
                m,
                None,
                format!("field `role`: expected a string, got {other:?}"),
            ));
        }
    }
    match message.get("content") {
        Some(Json::String(_)) | Some(Json::Null) | None => Ok(&[]),
        Some(Json::Array(parts)) => Ok(parts),
        Some(other) => Err(bad(
            m,
            None,
            format!("field `content`: expected a string or a list of parts, got {other}"),
        )),
    }
}

/// Part `p` of message `m`.
struct Part<'a> {
    json: &'a Json,
    m: usize,
    p: usize,
}

impl Part<'_> {
    fn bad(&self, what: String) -> ProcessorError {
        bad(self.m, Some(self.p), what)
    }

    /// An optional non-negative integer field.
    fn uint(&self, key: &str) -> Result<Option<usize>, ProcessorError> {
        match self.json.get(key) {
            None | Some(Json::Null) => Ok(None),
            Some(v) => v.as_u64().map(|v| Some(v as usize)).ok_or_else(|| {
                self.bad(format!(
                    "field `{key}`: expected a non-negative integer, got {v}"
                ))
            }),
        }
    }

    /// An optional positive number field.
    fn float(&self, key: &str) -> Result<Option<f64>, ProcessorError> {
        match self.json.get(key) {
            None | Some(Json::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite() && *x > 0.0)
                .map(Some)
                .ok_or_else(|| {
                    self.bad(format!(
                        "field `{key}`: expected a positive number, got {v}"
                    ))
                }),
        }
    }

    fn kind(&self) -> Option<&str> {
        self.json.get("type").and_then(Json::as_str)
    }

    /// The image or video this part carries, if any.
    fn media(&self, root: &Path) -> Result<Option<MediaItem>, ProcessorError> {
        let (part, at) = (self.json, (self.m, self.p));
        let label = format!("message {}, part {}", self.m, self.p);
        let image_ref = match (self.kind(), part.get("image"), part.get("image_url")) {
            (_, Some(Json::String(s)), _) => Some(s.clone()),
            (_, _, Some(Json::String(s))) => Some(s.clone()),
            (_, _, Some(Json::Object(o))) => {
                o.get("url").and_then(Json::as_str).map(str::to_string)
            }
            (Some("image" | "image_url"), _, _) => {
                return Err(self.bad(
                    "an image part needs `image` (a path or data URL) or `image_url.url`".into(),
                ));
            }
            _ => None,
        };
        if let Some(image) = image_ref {
            return Ok(Some(MediaItem::Image {
                source: source(&image, root, true, at)?,
                min_pixels: self.uint("min_pixels")?,
                max_pixels: self.uint("max_pixels")?,
                label,
            }));
        }
        let video_ref = match (self.kind(), part.get("video"), part.get("video_url")) {
            (_, Some(Json::String(s)), _) => Some(s.clone()),
            (_, _, Some(Json::Object(o))) => {
                o.get("url").and_then(Json::as_str).map(str::to_string)
            }
            (_, _, Some(Json::String(s))) => Some(s.clone()),
            (Some("video" | "video_url"), _, _) => {
                return Err(self.bad("a video part needs `video` (a file or folder path)".into()));
            }
            _ => None,
        };
        let Some(video) = video_ref else {
            return Ok(None);
        };
        let MediaSource::Path(path) = source(&video, root, false, at)? else {
            unreachable!("data URLs are refused for videos");
        };
        Ok(Some(MediaItem::Video {
            source: path,
            options: self.video_options()?,
            label,
        }))
    }

    /// A video part's sampling and sizing options, as `qwen_vl_utils` reads them.
    fn video_options(&self) -> Result<VideoOptions, ProcessorError> {
        let sampling = match self.uint("nframes")? {
            Some(n) => FrameSampling::Count(n),
            None => FrameSampling::Fps {
                fps: self
                    .float("fps")?
                    .unwrap_or(nuri_media::video::sampling::DEFAULT_FPS),
                min_frames: self.uint("min_frames")?,
                max_frames: self.uint("max_frames")?,
            },
        };
        Ok(VideoOptions {
            sampling,
            min_pixels: self.uint("min_pixels")?,
            max_pixels: self.uint("max_pixels")?,
            total_pixels: self.float("total_pixels")?,
            folder_fps: self
                .float("sample_fps")?
                .unwrap_or(nuri_media::video::DEFAULT_FOLDER_FPS),
            // The processor's own limit replaces it.
            ..VideoOptions::default()
        })
    }

    /// A part without media must be a text part.
    fn check_text(&self) -> Result<(), ProcessorError> {
        match self.kind() {
            Some("text") | None if self.json.get("text").is_some_and(Json::is_string) => Ok(()),
            Some("text") => Err(self.bad("a text part needs a string `text`".into())),
            Some(other) => Err(self.bad(format!(
                "unknown part type `{other}` (expected text, image, image_url or video)"
            ))),
            None => Err(self.bad(format!("a part needs `type`, got {}", self.json))),
        }
    }
}

/// A conversation that ends with an assistant turn of plain text, split into the messages
/// before that turn (the prompt) and the turn's text (the reference answer, trimmed).
pub fn split_last_answer(messages: &Json) -> Option<(Json, String)> {
    let (last, before) = messages.as_array()?.split_last()?;
    let answer = last["content"]
        .as_str()
        .filter(|_| last["role"] == "assistant")?;
    Some((Json::Array(before.to_vec()), answer.trim().to_string()))
}

/// Whether a generated answer counts as the reference answer: equal once whitespace is
/// trimmed from both ends (the exact match that validation and `nuri eval` score).
pub fn exact_match(generated: &str, reference: &str) -> bool {
    generated.trim() == reference.trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_parts_take_the_shape_each_family_template_reads() {
        use nuri_model::Family;
        let messages = serde_json::json!([{"role": "user", "content": [
            {"type": "image", "image": "a.png"},
            {"type": "video", "video": "clip.mp4"},
            {"type": "text", "text": "무엇인가요?"}
        ]}]);
        let qwen = parts_for_template(&messages, Family::Qwen2_5Vl).expect("as is");
        assert_eq!(qwen, messages);
        let exaone = parts_for_template(&messages, Family::Exaone4_5).expect("rewritten");
        assert_eq!(
            exaone[0]["content"][0],
            serde_json::json!({"type": "image", "url": "a.png"})
        );
        assert_eq!(
            exaone[0]["content"][1],
            serde_json::json!({"type": "video", "url": "clip.mp4"})
        );
        let hcx = parts_for_template(&messages, Family::HyperClovaXVisionV2).expect("rewritten");
        assert_eq!(
            hcx[0]["content"][1],
            serde_json::json!({"type": "image_url", "image_url": {"url": "clip.mp4"}})
        );
        assert_eq!(hcx[0]["content"][2]["text"], "무엇인가요?");
        // A GIF video would be an image to HyperCLOVA X's template: it sees `.mp4` appended.
        let gif =
            serde_json::json!([{"role": "user", "content": [{"type": "video", "video": "c.gif"}]}]);
        let hcx = parts_for_template(&gif, Family::HyperClovaXVisionV2).expect("a video");
        assert_eq!(hcx[0]["content"][0]["image_url"]["url"], "c.gif.mp4");
        // An image whose name says video cannot be shown to it as an image.
        let mp4 =
            serde_json::json!([{"role": "user", "content": [{"type": "image", "image": "x.mp4"}]}]);
        let err = parts_for_template(&mp4, Family::HyperClovaXVisionV2).unwrap_err();
        assert!(
            err.to_string().contains("part 0") && err.to_string().contains("as an image"),
            "{err}"
        );
    }

    #[test]
    fn parts_are_listed_in_order_with_their_options() {
        let messages = serde_json::json!([
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "text", "text": "and"},
                {"type": "video", "video": "file:///clips/a.mp4", "fps": 1.0, "max_pixels": 5000},
                {"type": "image", "image": "rel/b.jpg", "min_pixels": 100}
            ]}
        ]);
        let items = media_items(&messages, Path::new("/root")).expect("valid");
        assert_eq!(items.len(), 3);
        assert!(
            matches!(&items[0], MediaItem::Image { source: MediaSource::Bytes(b), .. } if b.starts_with(b"\x89PNG"))
        );
        match &items[1] {
            MediaItem::Video {
                source, options, ..
            } => {
                assert_eq!(source, Path::new("/clips/a.mp4"));
                assert_eq!(options.max_pixels, Some(5000));
                assert!(matches!(options.sampling, FrameSampling::Fps { fps, .. } if fps == 1.0));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(&items[2], MediaItem::Image { source: MediaSource::Path(p), min_pixels: Some(100), .. } if p == Path::new("/root/rel/b.jpg"))
        );
    }

    #[test]
    fn malformed_parts_name_the_message_and_part() {
        for (messages, needle) in [
            (serde_json::json!({"role": "user"}), "JSON array"),
            (serde_json::json!([{"content": "hi"}]), "`role`"),
            (
                serde_json::json!([{"role": "user", "content": 3}]),
                "`content`",
            ),
            (
                serde_json::json!([{"role": "user", "content": [{"type": "image"}]}]),
                "part 0",
            ),
            (
                serde_json::json!([{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "audio"}]}]),
                "part 1",
            ),
            (
                serde_json::json!([{"role": "user", "content": [{"type": "image", "image": "data:image/png;base64,@@"}]}]),
                "base64",
            ),
            (
                serde_json::json!([{"role": "user", "content": [{"type": "image", "image": "https://x/y.png"}]}]),
                "does not fetch",
            ),
            (
                serde_json::json!([{"role": "user", "content": [{"type": "video", "video": "a.gif", "fps": -1}]}]),
                "`fps`",
            ),
        ] {
            let err = media_items(&messages, Path::new(".")).unwrap_err();
            assert!(err.to_string().contains(needle), "{needle}: {err}");
        }
    }
}
