//! Generation: several conversations at once (left-padded), the vision encoder run once in
//! the prefill and the KV cache carrying the rest, each row sampled with its own settings and
//! stopped on its own (EOS / `<|im_end|>`, a stop string, or its token budget), text streamed
//! piece by piece on UTF-8 boundaries.

use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use nuri_model::NuriModel;
use serde_json::Value as Json;

use crate::processor::{PaddingSide, Processor};
use crate::sampling::{Sampler, SamplingParams, StreamDecoder};

use crate::ProcessorError;

/// One conversation to answer.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    /// OpenAI-style messages; the answer continues after the generation prompt.
    pub messages: Json,
    pub params: SamplingParams,
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

/// Per-row decoding state.
struct Row {
    sampler: Sampler,
    seen: Vec<u32>,
    tokens: Vec<u32>,
    stream: StreamDecoder,
    text: String,
    /// Bytes of `text` handed to the caller; the rest may be the start of a stop string.
    emitted: usize,
    finished: Option<FinishReason>,
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
    /// Hands the caller the text it has not seen, up to `end`.
    fn emit(&mut self, end: usize, row: usize, on_piece: &mut dyn FnMut(usize, &str)) {
        if end > self.emitted {
            on_piece(row, &self.text[self.emitted..end]);
            self.emitted = end;
        }
    }
}

/// The logits of each row's last position, on the host.
fn last_logits(logits: Tensor<3>) -> Vec<Vec<f32>> {
    let [b, s, v] = logits.dims();
    let data: Vec<f32> = logits
        .narrow(1, s - 1, 1)
        .reshape([b, v])
        .cast(DType::F32)
        .into_data()
        .try_to_vec()
        .expect("f32 logits");
    data.chunks(v).map(<[f32]>::to_vec).collect()
}

/// Answers `requests` together. `on_piece(row, text)` receives each row's text as it is
/// generated, never ending inside a UTF-8 character.
pub fn generate(
    model: &NuriModel,
    processor: &Processor,
    requests: &[GenerationRequest],
    device: &Device,
    on_piece: &mut dyn FnMut(usize, &str),
) -> Result<Vec<Generated>, GenerateError> {
    generate_limited(model, processor, requests, device, None, on_piece)
}

/// [`generate`], refusing prompts longer than `context_length` tokens (before any work on
/// the model).
pub fn generate_limited(
    model: &NuriModel,
    processor: &Processor,
    requests: &[GenerationRequest],
    device: &Device,
    context_length: Option<usize>,
    on_piece: &mut dyn FnMut(usize, &str),
) -> Result<Vec<Generated>, GenerateError> {
    for r in requests {
        r.params.validate().map_err(GenerateError::Params)?;
    }
    let conversations: Vec<Json> = requests.iter().map(|r| r.messages.clone()).collect();
    let out = processor.process(&conversations, true, PaddingSide::Left)?;
    let (b, s) = (out.batch, out.seq_len);
    let tokenizer = &processor.tokenizer;
    let eos = tokenizer.special.eos.clone();
    let decode = |ids: &[u32]| tokenizer.decode(ids, true).unwrap_or_default();
    let mut rows: Vec<Row> = requests
        .iter()
        .enumerate()
        .map(|(r, req)| Row {
            sampler: Sampler::new(req.params.clone()),
            seen: out.input_ids[r * s..(r + 1) * s]
                .iter()
                .zip(&out.attention_mask[r * s..(r + 1) * s])
                .filter(|(_, m)| **m == 1)
                .map(|(&t, _)| t as u32)
                .collect(),
            tokens: Vec::new(),
            stream: StreamDecoder::default(),
            text: String::new(),
            emitted: 0,
            finished: (req.params.max_new_tokens == 0).then_some(FinishReason::Length),
        })
        .collect();
    let prompt_tokens: Vec<usize> = rows.iter().map(|r| r.seen.len()).collect();
    if let Some(limit) = context_length
        && let Some(&tokens) = prompt_tokens.iter().find(|&&t| t > limit)
    {
        return Err(GenerateError::ContextLength { tokens, limit });
    }
    let input = out.to_model_input(device);
    let mut cache = model.new_cache();
    let prefill = model
        .prefill(&input, Some(&mut cache))
        .map_err(|e| GenerateError::Model(e.to_string()))?;
    let mut mask = input
        .attention_mask
        .clone()
        .unwrap_or_else(|| Tensor::ones([b, s], device));
    let mut logits = last_logits(prefill.logits);
    let pad = tokenizer.special.pad;
    while rows.iter().any(|r| r.finished.is_none()) {
        let mut next = Vec::with_capacity(b);
        for (i, row) in rows.iter_mut().enumerate() {
            if row.finished.is_some() {
                next.push(i64::from(pad));
                continue;
            }
            let token = row.sampler.sample(&logits[i], &row.seen);
            next.push(i64::from(token));
            let end_of_turn = eos.contains(&token);
            if !end_of_turn {
                row.seen.push(token);
                row.tokens.push(token);
                if let Some(piece) = row.stream.push(token, decode) {
                    row.text.push_str(&piece);
                    // A stop string ends the answer just before it.
                    let stops = &row.sampler.params().stop;
                    let stop_at = stops
                        .iter()
                        .filter(|stop| !stop.is_empty())
                        .filter_map(|stop| row.text.find(stop.as_str()))
                        .min();
                    if let Some(at) = stop_at {
                        row.emit(at, i, on_piece);
                        row.text.truncate(at);
                        row.finished = Some(FinishReason::Stop);
                        continue;
                    }
                    let hold = held_back(&row.text[row.emitted..], stops);
                    row.emit(row.text.len() - hold, i, on_piece);
                }
            }
            let out_of_budget = row.tokens.len() >= row.sampler.params().max_new_tokens;
            if end_of_turn || out_of_budget {
                row.finished = Some(if end_of_turn {
                    FinishReason::Stop
                } else {
                    FinishReason::Length
                });
                if let Some(rest) = row.stream.finish(decode) {
                    row.text.push_str(&rest);
                }
                row.emit(row.text.len(), i, on_piece);
            }
        }
        if rows.iter().all(|r| r.finished.is_some()) {
            break;
        }
        let tokens = Tensor::<2, Int>::from_data(TensorData::new(next, [b, 1]), device);
        mask = Tensor::cat(vec![mask, Tensor::ones([b, 1], device)], 1);
        let step = model.decode_step(tokens, Some(mask.clone()), &prefill.rope_deltas, &mut cache);
        logits = last_logits(step);
    }
    Ok(rows
        .into_iter()
        .zip(prompt_tokens)
        .map(|(row, prompt_tokens)| Generated {
            text: row.text,
            tokens: row.tokens,
            finish_reason: row.finished.unwrap_or(FinishReason::Length),
            prompt_tokens,
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
