//! Generation: several conversations at once (left-padded), the vision encoder run once in
//! the prefill and the KV cache carrying the rest, each row sampled with its own settings and
//! stopped on its own (EOS / `<|im_end|>`, a stop string, or its token budget), text streamed
//! piece by piece on UTF-8 boundaries.

use std::time::Instant;

use burn::tensor::Device;
use nuri_model::NuriModel;
use serde_json::Value as Json;

use crate::reasoning::{Part, ReasoningSplit, decode_keeping_markers, joined, prompt_opens_block};
use crate::sampling::{Sampler, SamplingParams, StreamDecoder};
use nuri_processor::{PaddingSide, Processor};

use nuri_processor::ProcessorError;

/// One conversation to answer.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    /// OpenAI-style messages; the answer continues after the generation prompt.
    pub messages: Json,
    pub params: SamplingParams,
    /// Keyword arguments for this request's chat template (`enable_thinking`, …; vLLM's
    /// `chat_template_kwargs`), over the processor's own.
    pub template_kwargs: serde_json::Map<String, Json>,
}

/// Why a row stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-turn token or a stop string.
    Stop,
    /// `max_new_tokens` reached.
    Length,
}

impl FinishReason {
    /// OpenAI's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// One answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    pub text: String,
    /// Tokens generated (without the end-of-turn token).
    pub tokens: Vec<u32>,
    pub finish_reason: FinishReason,
    pub prompt_tokens: usize,
    /// The call's time, where [`generate`] made it (the server's engine does not).
    pub timing: Option<Timing>,
    /// The answer's reasoning block, where the model has thinking markers and [`generate`]
    /// split it off (`text` is then what came after it).
    pub reasoning: Option<String>,
}

/// Where a [`generate`] call's time went, for all its rows together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// From the prompts (and their images and videos) to the first tokens: the prefill.
    pub prefill_seconds: f64,
    /// From the first tokens to the last.
    pub decode_seconds: f64,
    /// Decode steps after the first tokens (each gives every unfinished row one token).
    pub decode_steps: usize,
}

impl Timing {
    /// Decode steps per second (tokens per second of one row).
    pub fn steps_per_second(&self) -> f64 {
        if self.decode_seconds > 0.0 {
            self.decode_steps as f64 / self.decode_seconds
        } else {
            0.0
        }
    }
}

/// Why generation failed.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error(transparent)]
    Processor(#[from] ProcessorError),
    #[error("model: {0}")]
    Model(String),
    #[error("{0}")]
    Params(String),
    #[error("the prompt is {tokens} tokens, over the context length of {limit}")]
    ContextLength { tokens: usize, limit: usize },
}

/// Per-row decoding state: its sampler, the tokens it has seen (for the repetition
/// penalty), its text so far and what of it the caller has had.
pub(crate) struct Row {
    sampler: Sampler,
    seen: Vec<u32>,
    tokens: Vec<u32>,
    stream: StreamDecoder,
    text: String,
    /// Bytes of `text` handed to the caller; the rest may be the start of a stop string.
    emitted: usize,
    finished: Option<FinishReason>,
    /// The thinking markers' ids `[start, end]` where the model has them, and whether the
    /// row is inside a block with how many tokens it has thought there.
    thinking: Option<Thinking>,
}

/// Where a row stands in its reasoning (for the thinking budget).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Thinking {
    pub(crate) markers: [u32; 2],
    pub(crate) inside: bool,
    pub(crate) spent: usize,
}

/// How many bytes at the end of `text` could be the start of one of `stops` (and so must
/// wait for the next piece before being shown).
fn held_back(text: &str, stops: &[String]) -> usize {
    stops
        .iter()
        .filter_map(|stop| {
            (1..stop.len())
                .rev()
                .filter(|&k| stop.is_char_boundary(k))
                .find(|&k| text.ends_with(&stop[..k]))
        })
        .max()
        .unwrap_or(0)
}

impl Row {
    /// A row about to answer a prompt of `prompt` token ids.
    pub(crate) fn new(params: SamplingParams, prompt: Vec<u32>) -> Self {
        let finished = (params.max_new_tokens == 0).then_some(FinishReason::Length);
        Self {
            sampler: Sampler::new(params),
            seen: prompt,
            tokens: Vec::new(),
            stream: StreamDecoder::default(),
            text: String::new(),
            emitted: 0,
            finished,
            thinking: None,
        }
    }

    /// Marks the row's reasoning for the thinking budget: the markers' ids, and whether the
    /// prompt opened a block.
    pub(crate) fn think(&mut self, markers: [u32; 2], inside: bool) {
        self.thinking = Some(Thinking {
            markers,
            inside,
            spent: 0,
        });
    }

    /// Samples the next token from `logits` and takes it (see [`take`](Self::take));
    /// returns the token to feed the model, or `None` when the row has stopped.
    pub(crate) fn next(
        &mut self,
        logits: &[f32],
        eos: &[u32],
        decode: &dyn Fn(&[u32]) -> String,
        on_piece: &mut dyn FnMut(&str),
    ) -> Option<u32> {
        if self.finished.is_some() {
            return None;
        }
        let mut token = self.sampler.sample(logits, &self.seen);
        let budget = self.sampler.params().max_thinking_tokens;
        if let Some(t) = &mut self.thinking {
            let [start, end] = t.markers;
            if t.inside && budget.is_some_and(|b| t.spent >= b) {
                // Out of thinking budget: the block ends here.
                token = end;
            }
            if token == start {
                t.inside = true;
            } else if token == end {
                t.inside = false;
            } else if t.inside {
                t.spent += 1;
            }
        }
        let end_of_turn = eos.contains(&token) && !self.sampler.params().ignore_eos;
        self.take(token, end_of_turn, decode, on_piece)
            .then_some(token)
    }

    /// The answer, once the row has stopped.
    pub(crate) fn into_generated(self, prompt_tokens: usize) -> Generated {
        Generated {
            text: self.text,
            tokens: self.tokens,
            finish_reason: self.finished.unwrap_or(FinishReason::Length),
            prompt_tokens,
            timing: None,
            reasoning: None,
        }
    }

    /// Hands the caller the text it has not seen, up to `end`.
    fn emit(&mut self, end: usize, on_piece: &mut dyn FnMut(&str)) {
        if end > self.emitted {
            on_piece(&self.text[self.emitted..end]);
            self.emitted = end;
        }
    }

    /// Takes the sampled `token` (an end-of-turn token when `end_of_turn`): streams the text
    /// it completes, holding back what may be the start of a stop string, and finishes the
    /// row on an end of turn, a stop string or its token budget. Returns whether the row
    /// goes on (and so the token is fed to the model).
    fn take(
        &mut self,
        token: u32,
        end_of_turn: bool,
        decode: &dyn Fn(&[u32]) -> String,
        on_piece: &mut dyn FnMut(&str),
    ) -> bool {
        if !end_of_turn {
            self.seen.push(token);
            self.tokens.push(token);
            if let Some(piece) = self.stream.push(token, decode) {
                self.text.push_str(&piece);
                // A stop string ends the answer just before it.
                let stops = &self.sampler.params().stop;
                let stop_at = stops
                    .iter()
                    .filter(|stop| !stop.is_empty())
                    .filter_map(|stop| self.text.find(stop.as_str()))
                    .min();
                if let Some(at) = stop_at {
                    self.emit(at, on_piece);
                    self.text.truncate(at);
                    self.finished = Some(FinishReason::Stop);
                    return false;
                }
                let hold = held_back(&self.text[self.emitted..], stops);
                self.emit(self.text.len() - hold, on_piece);
            }
        }
        let out_of_budget = self.tokens.len() >= self.sampler.params().max_new_tokens;
        if !(end_of_turn || out_of_budget) {
            return true;
        }
        self.finished = Some(if end_of_turn {
            FinishReason::Stop
        } else {
            FinishReason::Length
        });
        if let Some(rest) = self.stream.finish(decode) {
            self.text.push_str(&rest);
        }
        self.emit(self.text.len(), on_piece);
        false
    }
}

/// Answers `requests` together. `on_piece(row, text)` receives each row's text as it is
/// generated, never ending inside a UTF-8 character. The model runs on rayon's pool
/// ([`nuri_kernels::on_compute_pool`]), so `on_piece` is called from one of its threads.
pub fn generate(
    model: &NuriModel,
    processor: &Processor,
    requests: &[GenerationRequest],
    device: &Device,
    on_piece: &mut (dyn FnMut(usize, &str) + Send),
) -> Result<Vec<Generated>, GenerateError> {
    generate_limited(model, processor, requests, device, None, on_piece)
}

/// [`generate`], refusing prompts longer than `context_length` tokens (before any work on
/// the model). A model's reasoning (see [`generate_parts`]) is not streamed.
pub fn generate_limited(
    model: &NuriModel,
    processor: &Processor,
    requests: &[GenerationRequest],
    device: &Device,
    context_length: Option<usize>,
    on_piece: &mut (dyn FnMut(usize, &str) + Send),
) -> Result<Vec<Generated>, GenerateError> {
    let mut on_part = |row: usize, part: Part| {
        if let Part::Content(text) = part {
            on_piece(row, &text);
        }
    };
    generate_parts(
        model,
        processor,
        requests,
        device,
        context_length,
        &mut on_part,
    )
}

/// [`generate_limited`], streaming each row's reasoning and content apart: for a model whose
/// tokenizer has thinking markers ([`crate::reasoning`]), the text inside a reasoning block
/// (which the generation prompt may have opened) comes as [`Part::Reasoning`], and each
/// [`Generated`] has it as `reasoning`, its `text` being the content after it.
pub fn generate_parts(
    model: &NuriModel,
    processor: &Processor,
    requests: &[GenerationRequest],
    device: &Device,
    context_length: Option<usize>,
    on_part: &mut (dyn FnMut(usize, Part) + Send),
) -> Result<Vec<Generated>, GenerateError> {
    for r in requests {
        r.params.validate().map_err(GenerateError::Params)?;
    }
    let conversations: Vec<Json> = requests.iter().map(|r| r.messages.clone()).collect();
    let kwargs: Vec<_> = requests.iter().map(|r| r.template_kwargs.clone()).collect();
    let out = processor.process_with(&conversations, &kwargs, true, PaddingSide::Left)?;
    let s = out.seq_len;
    let tokenizer = &processor.tokenizer;
    let eos = tokenizer.special.eos.clone();
    let markers = crate::reasoning::tokenizer_markers(tokenizer);
    let decode = |ids: &[u32]| decode_keeping_markers(tokenizer, ids, markers.as_ref());
    let mut rows: Vec<Row> = requests
        .iter()
        .enumerate()
        .map(|(r, req)| {
            let prompt = out.input_ids[r * s..(r + 1) * s]
                .iter()
                .zip(&out.attention_mask[r * s..(r + 1) * s])
                .filter(|(_, m)| **m == 1)
                .map(|(&t, _)| t as u32)
                .collect();
            Row::new(req.params.clone(), prompt)
        })
        .collect();
    let prompt_tokens: Vec<usize> = rows.iter().map(|r| r.seen.len()).collect();
    if let Some(limit) = context_length
        && let Some(&tokens) = prompt_tokens.iter().find(|&&t| t > limit)
    {
        return Err(GenerateError::ContextLength { tokens, limit });
    }
    // Each row's split, starting inside a block where its prompt opened one, and the parts
    // it has given (the answer's reasoning and text at the end).
    let mut splits: Vec<Option<(ReasoningSplit, Vec<Part>)>> = rows
        .iter_mut()
        .map(|row| {
            let found = markers.as_ref()?;
            let inside = prompt_opens_block(tokenizer, &row.seen, found);
            row.think(found.1, inside);
            Some((ReasoningSplit::new(found.0.clone(), inside), Vec::new()))
        })
        .collect();
    let mut give = |i: usize, parts: Vec<Part>, seen: &mut Vec<Part>| {
        for part in parts {
            seen.push(part.clone());
            on_part(i, part);
        }
    };
    let input = out.to_model_input(device);
    let start = Instant::now();
    // The first tokens end the prefill; a step's rows come in order, so a row index not
    // above the previous one starts the next step.
    let (mut first, mut last, mut previous): (Option<Instant>, _, Option<usize>) =
        (None, start, None);
    let mut steps = 0usize;
    nuri_kernels::on_compute_pool(|| {
        model.generate(&input, &mut |i, logits| {
            let now = Instant::now();
            if previous.is_none_or(|p| i <= p) {
                if first.is_none() {
                    first = Some(now);
                } else {
                    steps += 1;
                }
            }
            (previous, last) = (Some(i), now);
            let split = &mut splits[i];
            rows[i].next(logits, &eos, &decode, &mut |piece| match split {
                Some((s, seen)) => give(i, s.push(piece), seen),
                None => give(i, vec![Part::Content(piece.to_string())], &mut Vec::new()),
            })
        })
    })
    .map_err(|e| GenerateError::Model(e.to_string()))?;
    for (i, split) in splits.iter_mut().enumerate() {
        if let Some((s, seen)) = split {
            give(i, s.finish(), seen);
        }
    }
    let first = first.unwrap_or(last);
    let timing = Timing {
        prefill_seconds: (first - start).as_secs_f64(),
        decode_seconds: (last - first).as_secs_f64(),
        decode_steps: steps,
    };
    Ok(rows
        .into_iter()
        .zip(prompt_tokens)
        .zip(splits)
        .map(|((row, prompt_tokens), split)| {
            let mut g = Generated {
                timing: Some(timing),
                ..row.into_generated(prompt_tokens)
            };
            if let Some((_, seen)) = split {
                // The streamed pieces are the whole text, as split above.
                (g.reasoning, g.text) = joined(seen);
            }
            g
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::held_back;

    #[test]
    fn text_that_may_start_a_stop_string_waits() {
        let stops = vec!["</answer>".to_string(), "끝.".to_string()];
        assert_eq!(held_back("the answer</ans", &stops), 5);
        assert_eq!(held_back("the answer", &stops), 0);
        assert_eq!(held_back("그럼 끝", &stops), "끝".len());
    }
}
