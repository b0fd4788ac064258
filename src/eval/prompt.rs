//! A question as chat messages, built as VLMEvalKit builds them: the images (or the video)
//! first, then `Hint: …`, `Question: …`, the options one per line and the instruction to
//! answer with a letter (in Korean for a Korean question); a short-answer question gets
//! the short-answer instruction.

use serde_json::{Value as Json, json};

use super::items::{Item, Media};

/// How the text of a question is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PromptStyle {
    /// Hint, question, options and instruction, as VLMEvalKit writes them.
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

/// The conversation for `item`: one user turn, media first. `openai` writes media as the
/// OpenAI API's `image_url` / `video_url` parts (what a server receives); otherwise as the
/// processor's `image` / `video` parts.
pub fn messages(item: &Item, style: PromptStyle, openai: bool) -> Json {
    let mut content: Vec<Json> = item
        .media
        .iter()
        .map(|m| match (m, openai) {
            (Media::Image(src), true) => {
                let url = if src.starts_with("data:") {
                    src.clone()
                } else {
                    format!("file://{src}")
                };
                json!({"type": "image_url", "image_url": {"url": url}})
            }
            (Media::Image(src), false) => json!({"type": "image", "image": src}),
            (Media::Video(path), true) => {
                json!({"type": "video_url", "video_url": {"url": format!("file://{}", path.display())}})
            }
            (Media::Video(path), false) => json!({"type": "video", "video": path}),
        })
        .collect();
    content.push(json!({"type": "text", "text": text(item, style)}));
    json!([{"role": "user", "content": content}])
}
