//! A hybrid reasoning model's answer, split into its reasoning and its content: the text
//! between the thinking markers (`<think>` … `</think>`, as EXAONE 4.5, HyperCLOVA X Think and
//! Qwen3 write them) is the reasoning, the rest the content, as vLLM's reasoning parsers give
//! them (`reasoning_content` next to `content`).
//!
//! With thinking on, these templates end the generation prompt inside the block (`<think>\n`),
//! so the answer starts as reasoning and only its end marker shows; an answer may also open
//! the block itself. The split works on streamed pieces: a marker cut across pieces is held
//! back until it is whole (or cannot be), and the content's leading whitespace after the end
//! marker is dropped.

/// The markers around a reasoning block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Markers {
    pub start: String,
    pub end: String,
}

impl Default for Markers {
    fn default() -> Self {
        Self {
            start: "<think>".into(),
            end: "</think>".into(),
        }
    }
}

impl Markers {
    /// Whether a prompt whose text ends with `prompt_tail` leaves the answer inside a
    /// reasoning block (the generation prompt opened it).
    pub fn opened_by(&self, prompt_tail: &str) -> bool {
        let tail = prompt_tail.trim_end();
        tail.ends_with(&self.start)
    }
}

/// The thinking markers where the tokenizer has each as one token (the reasoning families'
/// tokenizers do), with their ids `[start, end]`.
pub fn tokenizer_markers(tokenizer: &nuri_processor::TextTokenizer) -> Option<(Markers, [u32; 2])> {
    let m = Markers::default();
    let ids = [
        tokenizer.tokenizer.token_to_id(&m.start)?,
        tokenizer.tokenizer.token_to_id(&m.end)?,
    ];
    Some((m, ids))
}

/// The text of `ids` without special tokens, except the thinking markers, which stay as their
/// text: EXAONE 4.5's are special tokens, and dropping them would leave no place to split.
pub fn decode_keeping_markers(
    tokenizer: &nuri_processor::TextTokenizer,
    ids: &[u32],
    markers: Option<&(Markers, [u32; 2])>,
) -> String {
    let decode = |ids: &[u32]| tokenizer.decode(ids, true).unwrap_or_default();
    let Some((m, [start, end])) = markers else {
        return decode(ids);
    };
    let mut text = String::new();
    for segment in ids.split_inclusive(|t| t == start || t == end) {
        match segment.split_last() {
            Some((t, body)) if t == start || t == end => {
                text.push_str(&decode(body));
                text.push_str(if t == start { &m.start } else { &m.end });
            }
            _ => text.push_str(&decode(segment)),
        }
    }
    text
}

/// Whether the prompt `prompt` (token ids) leaves the answer inside a reasoning block: the
/// text of its last tokens, markers kept, ends with the start marker.
pub fn prompt_opens_block(
    tokenizer: &nuri_processor::TextTokenizer,
    prompt: &[u32],
    markers: &(Markers, [u32; 2]),
) -> bool {
    let tail = &prompt[prompt.len().saturating_sub(8)..];
    markers
        .0
        .opened_by(&decode_keeping_markers(tokenizer, tail, Some(markers)))
}

/// A piece of a split answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Reasoning(String),
    Content(String),
}

/// The streaming split of one answer.
#[derive(Debug, Clone)]
pub struct ReasoningSplit {
    markers: Markers,
    inside: bool,
    /// Whether the answer has shown anything but whitespace outside a block (a start marker
    /// after that is content).
    spoke: bool,
    /// Whether content has started since the last end marker (its leading whitespace is
    /// dropped until then).
    content_started: bool,
    held: String,
}

impl ReasoningSplit {
    /// A split of an answer that starts inside a reasoning block when `starts_inside`.
    pub fn new(markers: Markers, starts_inside: bool) -> Self {
        Self {
            markers,
            inside: starts_inside,
            spoke: false,
            content_started: true,
            held: String::new(),
        }
    }

    /// The parts that `piece` completes (text that may be the start of a marker waits).
    pub fn push(&mut self, piece: &str) -> Vec<Part> {
        self.held.push_str(piece);
        let mut parts = Vec::new();
        loop {
            if self.inside {
                if let Some(at) = self.held.find(&self.markers.end) {
                    let reasoning = self.held[..at].to_string();
                    self.held.drain(..at + self.markers.end.len());
                    push_part(&mut parts, Part::Reasoning(reasoning));
                    self.inside = false;
                    self.content_started = false;
                    continue;
                }
                let keep = partial_suffix(&self.held, &self.markers.end);
                let ready: String = self.held.drain(..self.held.len() - keep).collect();
                push_part(&mut parts, Part::Reasoning(ready));
                return parts;
            }
            if !self.content_started {
                let trimmed = self.held.trim_start().len();
                self.held.drain(..self.held.len() - trimmed);
                if self.held.is_empty() {
                    return parts;
                }
                self.content_started = true;
            }
            if !self.spoke {
                let lead = self.held.len() - self.held.trim_start().len();
                let rest = &self.held[lead..];
                if rest.starts_with(&self.markers.start) {
                    self.held.drain(..lead + self.markers.start.len());
                    self.inside = true;
                    continue;
                }
                if self.markers.start.starts_with(rest) {
                    // Whitespace, or the start marker still arriving.
                    return parts;
                }
                self.spoke = true;
            }
            let content = std::mem::take(&mut self.held);
            push_part(&mut parts, Part::Content(content));
            return parts;
        }
    }

    /// What is still held once the answer has ended.
    pub fn finish(&mut self) -> Vec<Part> {
        let rest = std::mem::take(&mut self.held);
        let mut parts = Vec::new();
        if self.inside {
            push_part(&mut parts, Part::Reasoning(rest));
        } else if self.content_started || !rest.trim().is_empty() {
            let rest = if self.content_started {
                rest
            } else {
                rest.trim_start().to_string()
            };
            push_part(&mut parts, Part::Content(rest));
        }
        parts
    }

    /// A whole answer as `(reasoning, content)`; the reasoning is `None` when the answer had
    /// no reasoning block.
    pub fn split(markers: Markers, starts_inside: bool, text: &str) -> (Option<String>, String) {
        let mut split = Self::new(markers, starts_inside);
        let mut parts = split.push(text);
        parts.extend(split.finish());
        joined(parts)
    }
}

/// Parts put together as `(reasoning, content)` (`None` when no part was reasoning).
pub(crate) fn joined(parts: Vec<Part>) -> (Option<String>, String) {
    let (mut reasoning, mut content) = (None::<String>, String::new());
    for part in parts {
        match part {
            Part::Reasoning(r) => reasoning.get_or_insert_with(String::new).push_str(&r),
            Part::Content(c) => content.push_str(&c),
        }
    }
    (reasoning, content)
}

/// Adds `part` unless it is empty text.
fn push_part(parts: &mut Vec<Part>, part: Part) {
    let empty = match &part {
        Part::Reasoning(t) | Part::Content(t) => t.is_empty(),
    };
    if !empty {
        parts.push(part);
    }
}

/// The length of the longest end of `text` that begins `marker` (0 when none does).
fn partial_suffix(text: &str, marker: &str) -> usize {
    (1..marker.len().min(text.len() + 1))
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n) && marker.starts_with(&text[text.len() - n..])
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(starts_inside: bool, text: &str) -> (Option<String>, String) {
        ReasoningSplit::split(Markers::default(), starts_inside, text)
    }

    /// The same answer cut into pieces at every byte boundary gives the same split.
    fn streamed(starts_inside: bool, text: &str, cut: usize) -> (Option<String>, String) {
        let mut split = ReasoningSplit::new(Markers::default(), starts_inside);
        let mut parts = Vec::new();
        let mut at = 0;
        while at < text.len() {
            let mut end = (at + cut).min(text.len());
            while !text.is_char_boundary(end) {
                end += 1;
            }
            parts.extend(split.push(&text[at..end]));
            at = end;
        }
        parts.extend(split.finish());
        joined(parts)
    }

    #[test]
    fn the_cases_split_as_the_reasoning_parsers_do() {
        let cases: &[(bool, &str, Option<&str>, &str)] = &[
            // The prompt opened the block: reasoning up to the end marker.
            (
                true,
                "두 수를 더하면 4.\n</think>\n\n답은 4입니다.",
                Some("두 수를 더하면 4.\n"),
                "답은 4입니다.",
            ),
            // The answer opens it itself.
            (
                false,
                "<think>short</think>The answer is B.",
                Some("short"),
                "The answer is B.",
            ),
            (false, "\n<think>a</think>\n\nB", Some("a"), "B"),
            // No block: all content, a later marker included.
            (false, "Plain answer.", None, "Plain answer."),
            (false, "Use <think> tags.", None, "Use <think> tags."),
            // Cut off while thinking: all reasoning.
            (true, "still thinking", Some("still thinking"), ""),
            // An end marker inside the content stays content.
            (true, "r</think>c </think> d", Some("r"), "c </think> d"),
            // Thinking off: the template closed an empty block in the prompt.
            (false, "답: A", None, "답: A"),
        ];
        for &(inside, text, reasoning, content) in cases {
            let want = (reasoning.map(str::to_string), content.to_string());
            assert_eq!(whole(inside, text), want, "{text:?}");
            for cut in 1..=9 {
                assert_eq!(
                    streamed(inside, text, cut),
                    want,
                    "{text:?} in pieces of {cut}"
                );
            }
        }
    }

    #[test]
    fn a_prompt_opens_the_block_when_it_ends_with_the_start_marker() {
        let m = Markers::default();
        assert!(m.opened_by("<|assistant|>\n<think>\n"));
        assert!(!m.opened_by("<|assistant|>\n<think>\n\n</think>\n\n"));
        assert!(!m.opened_by("<|im_start|>assistant\n"));
    }
}
