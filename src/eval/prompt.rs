//! A question as chat messages, built as VLMEvalKit builds them: the images (or the video)
//! first, then `Hint: …`, `Question: …`, the options one per line and the instruction to
//! answer with a letter (in Korean for a Korean question); a short-answer question gets
//! the short-answer instruction.

use serde_json::{Value as Json, json};

use super::items::{Item, Media};

/// How the text of a question is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum PromptStyle {
    /// Hint, question, options and instruction, as VLMEvalKit writes them.
    #[default]
    Vlmevalkit,
    /// The question alone, as a model trained on plain questions was (the options still
    /// decide which one its answer names).
    Question,
}

/// The instruction after a multiple-choice question's options.
pub const LETTER_INSTRUCTION: &str =
    "Answer with the option's letter from the given choices directly.";
/// The same in Korean (K-MMBench and the other Korean sets).
pub const LETTER_INSTRUCTION_KO: &str = "주어진 선택지 중 해당 옵션의 문자로 직접 답하세요.";
/// The instruction after a short-answer question.
pub const SHORT_INSTRUCTION: &str =
    "Please try to answer the question with short words or phrases if possible.";
pub const SHORT_INSTRUCTION_KO: &str = "가능하면 짧은 단어나 구로 답하세요.";

/// The user's text for `item`.
pub fn text(item: &Item, style: PromptStyle) -> String {
    if style == PromptStyle::Question {
        return item.question.clone();
    }
    let ko = item.korean();
    if item.options.is_empty() {
        let instruction = if ko {
            SHORT_INSTRUCTION_KO
        } else {
            SHORT_INSTRUCTION
        };
        return format!("{}\n{instruction}", item.question);
    }
    let mut prompt = String::new();
    if let Some(hint) = &item.hint {
        prompt += &format!("{} {hint}\n", if ko { "힌트:" } else { "Hint:" });
    }
    prompt += &format!(
        "{} {}\n",
        if ko { "질문:" } else { "Question:" },
        item.question
    );
    prompt += "Options:\n";
    for (letter, option) in &item.options {
        prompt += &format!("{letter}. {option}\n");
    }
    prompt += if ko {
        LETTER_INSTRUCTION_KO
    } else {
        LETTER_INSTRUCTION
    };
    prompt.trim_end().to_string()
}

/// The conversation for `item`: one user turn, media first — or where the text has
/// `<image>` / `<video>` tags, one per medium, at the tags (LLaVA's layout, as the training
/// data reads it). `openai` writes media as the OpenAI API's `image_url` / `video_url`
/// parts (what a server receives); otherwise as the processor's `image` / `video` parts.
pub fn messages(item: &Item, style: PromptStyle, openai: bool) -> Json {
    let text = text(item, style);
    let images: Vec<String> = item
        .media
        .iter()
        .filter_map(|m| match m {
            Media::Image(src) => Some(src.to_string()),
            Media::Video(_) => None,
        })
        .collect();
    let videos: Vec<String> = item
        .media
        .iter()
        .filter_map(|m| match m {
            Media::Video(p) => Some(p.display().to_string()),
            Media::Image(_) => None,
        })
        .collect();
    let tagged = text.matches("<image>").count() == images.len()
        && text.matches("<video>").count() == videos.len()
        && !item.media.is_empty()
        && (text.contains("<image>") || text.contains("<video>"));
    let mut parts = Vec::new();
    if tagged {
        let rest = nuri_train::data::split_at_tags(
            &text,
            &mut images.iter(),
            &mut videos.iter(),
            &mut parts,
        );
        if !rest.is_empty() {
            parts.push(json!({"type": "text", "text": rest}));
        }
    } else {
        parts.extend(images.iter().map(|s| json!({"type": "image", "image": s})));
        parts.extend(videos.iter().map(|s| json!({"type": "video", "video": s})));
        parts.push(json!({"type": "text", "text": text}));
    }
    if openai {
        for part in &mut parts {
            *part = match (
                part["type"].as_str(),
                part["image"].as_str(),
                part["video"].as_str(),
            ) {
                (Some("image"), Some(src), _) => {
                    let url = if src.starts_with("data:") {
                        src.to_string()
                    } else {
                        format!("file://{src}")
                    };
                    json!({"type": "image_url", "image_url": {"url": url}})
                }
                (Some("video"), _, Some(path)) => {
                    json!({"type": "video_url", "video_url": {"url": format!("file://{path}")}})
                }
                _ => part.clone(),
            };
        }
    }
    json!([{"role": "user", "content": parts}])
}
