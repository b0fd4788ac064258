//! From samples to training batches: each conversation through the processor (decoding its
//! media), labels that count only assistant tokens, right-padded batches, and a loader whose
//! worker threads prepare the next batches while the current one trains.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use nuri_processor::{PaddingSide, Processor, ProcessorOutput};
use serde_json::Value as Json;

use crate::config::DataConfig;
use crate::data::{BadSample, Sample};

/// Label value the loss ignores.
pub const IGNORE: i64 = -100;

/// One processed conversation.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub out: ProcessorOutput,
    /// Per token: the id to predict at this position (the token itself), or [`IGNORE`].
    pub labels: Vec<i64>,
}

/// Marks the tokens of assistant turns (ChatML: after `<|im_start|>assistant\n`, through the
/// turn's `<|im_end|>`), every turn or only the last.
pub fn assistant_labels(ids: &[i64], prefix: &[i64], end: i64, last_only: bool) -> Vec<i64> {
    let mut spans = Vec::new();
    let mut i = 0;
    while i + prefix.len() <= ids.len() {
        if ids[i..i + prefix.len()] == *prefix {
            let start = i + prefix.len();
            let stop = ids[start..]
                .iter()
                .position(|&t| t == end)
                .map_or(ids.len(), |p| start + p + 1);
            spans.push(start..stop);
            i = stop;
        } else {
            i += 1;
        }
    }
    if last_only && spans.len() > 1 {
        spans.drain(..spans.len() - 1);
    }
    let mut labels = vec![IGNORE; ids.len()];
    for span in spans {
        for j in span {
            labels[j] = ids[j];
        }
    }
    labels
}

/// Takes the labels off every reasoning block inside an answer: from its opening marker
/// through its closing one.
pub fn mask_reasoning(ids: &[i64], labels: &mut [i64], open: i64, close: i64) {
    let mut inside = false;
    for (id, label) in ids.iter().zip(labels.iter_mut()) {
        if *label == IGNORE {
            inside = false;
            continue;
        }
        inside |= *id == open;
        if inside {
            *label = IGNORE;
            inside = *id != close;
        }
    }
}

/// Whether an assistant turn carries reasoning (a `reasoning_content` field or a `<think>`
/// block in its text).
fn has_reasoning(messages: &Json) -> bool {
    messages.as_array().is_some_and(|list| {
        list.iter().any(|m| {
            m["role"] == "assistant"
                && (m["reasoning_content"].is_string()
                    || m["content"].to_string().contains("</think>"))
        })
    })
}

/// The tokens around an assistant turn: what opens it and the token that closes it — ChatML's
/// `<|im_start|>assistant\n` … `<|im_end|>` (Qwen, HyperCLOVA X), EXAONE 4.5's
/// `<|assistant|>\n` … `<|endofturn|>`, EXAONE 4.0's `[|assistant|]\n` … `[|endofturn|]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnMarks {
    pub prefix: Vec<i64>,
    pub end: i64,
    /// The tokens that open and close a reasoning block (`<think>`, `</think>`), where the
    /// vocabulary has them as tokens.
    pub think: Option<(i64, i64)>,
}

impl TurnMarks {
    /// The marks in `processor`'s tokenizer, once per run: its family's turn markers when
    /// the vocabulary has their end token, else ChatML's.
    pub fn of(processor: &Processor) -> Result<Self, crate::TrainError> {
        use nuri_model::Family;
        const CHATML: (&str, &str) = ("<|im_start|>assistant\n", "<|im_end|>");
        const EXAONE4_5: (&str, &str) = ("<|assistant|>\n", "<|endofturn|>");
        const EXAONE4: (&str, &str) = ("[|assistant|]\n", "[|endofturn|]");
        // The family's own first, then any other whose end token the vocabulary has.
        let candidates = match processor.family {
            Family::Exaone4_5 => [EXAONE4_5, EXAONE4, CHATML],
            Family::Exaone4 => [EXAONE4, EXAONE4_5, CHATML],
            _ => [CHATML, EXAONE4_5, EXAONE4],
        };
        let tokenizer = &processor.tokenizer;
        for (open, close) in &candidates {
            let Some(end) = tokenizer.tokenizer.token_to_id(close) else {
                continue;
            };
            let prefix = tokenizer.encode(open)?.into_iter().map(i64::from).collect();
            let id = |t: &str| tokenizer.tokenizer.token_to_id(t).map(i64::from);
            return Ok(Self {
                prefix,
                end: i64::from(end),
                think: id("<think>").zip(id("</think>")),
            });
        }
        Err(crate::TrainError::Model(format!(
            "the tokenizer has none of {}, which mark where an answer ends",
            candidates
                .iter()
                .map(|(_, close)| *close)
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }
}

/// How samples are encoded for training: which turns count in the loss, and the longest
/// sample taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodeOptions {
    /// Labels on the last assistant turn only (else on every assistant turn).
    pub last_turn_only: bool,
    /// The most tokens a sample may have (`data.max_seq_len`).
    pub max_seq_len: usize,
    /// Labels on reasoning blocks too (`data.train_on_reasoning`).
    pub train_on_reasoning: bool,
}

impl EncodeOptions {
    /// The options a run's `[data]` section sets.
    pub fn of(data: &DataConfig) -> Self {
        Self {
            last_turn_only: data.last_turn_only,
            max_seq_len: data.max_seq_len,
            train_on_reasoning: data.train_on_reasoning,
        }
    }
}

/// The largest per-item `min_pixels` of a conversation's media parts, and the tokens it asks
/// for at the least: the processor resizes an image (a video frame) to at least that area,
/// and each `(patch × merge)²` pixels of it become one token. Read from the JSON, before the
/// processor allocates anything.
fn min_pixels_tokens(messages: &Json, processor: &Processor) -> Option<(u64, u64)> {
    let factor = (processor.image.patch_size * processor.image.merge_size).max(1) as u64;
    messages
        .as_array()?
        .iter()
        .filter_map(|m| m.get("content").and_then(Json::as_array))
        .flatten()
        .filter_map(|part| part.get("min_pixels").and_then(Json::as_u64))
        .max()
        .map(|pixels| (pixels, pixels / (factor * factor)))
}

/// The message of a caught panic.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Processes one sample for training. A sample that cannot be used — the processor's error
/// (a panic included), more than `max_seq_len` tokens, or a `min_pixels` that asks for more
/// — is a [`BadSample`] named by its origin.
pub fn encode(
    processor: &Processor,
    marks: &TurnMarks,
    sample: &Sample,
    options: EncodeOptions,
) -> Result<Encoded, BadSample> {
    let bad = |reason: String| BadSample {
        origin: sample.origin.clone(),
        reason,
    };
    let max = options.max_seq_len;
    if let Some((pixels, tokens)) = min_pixels_tokens(&sample.messages, processor)
        && tokens > max as u64
    {
        return Err(bad(format!(
            "min_pixels {pixels} asks for at least {tokens} visual tokens, over data.max_seq_len {max}"
        )));
    }
    let conversation = std::slice::from_ref(&sample.messages);
    let out = std::panic::catch_unwind(AssertUnwindSafe(|| {
        processor.process(conversation, false, PaddingSide::Right)
    }))
    .map_err(|payload| {
        bad(format!(
            "the processor panicked: {}",
            panic_message(&*payload)
        ))
    })?
    .map_err(|e| bad(e.to_string()))?;
    if out.seq_len > max {
        return Err(bad(format!(
            "{} tokens, over data.max_seq_len {max}",
            out.seq_len
        )));
    }
    let mut labels = assistant_labels(
        &out.input_ids,
        &marks.prefix,
        marks.end,
        options.last_turn_only,
    );
    if !options.train_on_reasoning {
        match marks.think {
            Some((open, close)) => mask_reasoning(&out.input_ids, &mut labels, open, close),
            None if has_reasoning(&sample.messages) => {
                return Err(bad(
                    "data.train_on_reasoning = false, but the tokenizer has no <think> and \
                     </think> tokens to find this sample's reasoning by"
                        .into(),
                ));
            }
            None => {}
        }
    }
    if labels.iter().all(|&l| l == IGNORE) {
        return Err(bad("no assistant tokens after the chat template".into()));
    }
    Ok(Encoded { out, labels })
}

/// A right-padded training batch.
#[derive(Debug, Clone)]
pub struct Batch {
    pub input: ProcessorOutput,
    /// `[batch, seq]`, [`IGNORE`] on padding and non-assistant tokens.
    pub labels: Vec<i64>,
    /// Tokens that count in the loss.
    pub target_tokens: usize,
}

/// Splits a batch's samples into `n` contiguous shards, one per device (fewer when there
/// are fewer samples).
pub fn shard(items: Vec<Encoded>, n: usize) -> Vec<Vec<Encoded>> {
    let per = items.len().div_ceil(n.max(1)).max(1);
    let mut shards = Vec::new();
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        shards.push(items.by_ref().take(per).collect());
    }
    shards
}

/// Pads encoded samples on the right into one batch.
pub fn collate(items: Vec<Encoded>, pad_id: i64) -> Batch {
    let seq = items.iter().map(|e| e.out.seq_len).max().unwrap_or(0);
    let mut input = ProcessorOutput::empty(items.len());
    input.seq_len = seq;
    let mut labels = Vec::with_capacity(items.len() * seq);
    for e in items {
        let fill = seq - e.out.seq_len;
        input.input_ids.extend(
            e.out
                .input_ids
                .iter()
                .copied()
                .chain(std::iter::repeat_n(pad_id, fill)),
        );
        input.attention_mask.extend(
            e.out
                .attention_mask
                .iter()
                .copied()
                .chain(std::iter::repeat_n(0, fill)),
        );
        labels.extend(
            e.labels
                .iter()
                .copied()
                .chain(std::iter::repeat_n(IGNORE, fill)),
        );
        input.pixel_values.extend(e.out.pixel_values);
        input.image_grid_thw.extend(e.out.image_grid_thw);
        input.pixel_values_videos.extend(e.out.pixel_values_videos);
        input.video_grid_thw.extend(e.out.video_grid_thw);
        input.rope_deltas.extend(e.out.rope_deltas);
    }
    let target_tokens = labels.iter().filter(|&&l| l != IGNORE).count();
    Batch {
        input,
        labels,
        target_tokens,
    }
}

/// What the loader hands the training loop for each planned batch.
pub struct Loaded {
    /// The batch's place in the epoch plan.
    pub index: usize,
    /// The batch's good samples, processed (empty when every one was bad).
    pub items: Vec<Encoded>,
    /// The bad ones, each with its index in the run's samples.
    pub bad: Vec<(usize, BadSample)>,
}

/// Prepares planned batches on `workers` threads, in order, at most two ahead.
pub fn spawn_loader(
    processor: Arc<Processor>,
    marks: TurnMarks,
    samples: Arc<Vec<Sample>>,
    plan: Vec<Vec<usize>>,
    start: usize,
    workers: usize,
    options: EncodeOptions,
) -> Receiver<Loaded> {
    let (tx, rx): (SyncSender<Loaded>, _) = sync_channel(2);
    std::thread::spawn(move || {
        for (index, batch) in plan.into_iter().enumerate().skip(start) {
            // Decode the batch's samples in parallel, keeping their order.
            let chunk = batch.len().div_ceil(workers.max(1));
            let results: Vec<Result<Encoded, BadSample>> = std::thread::scope(|scope| {
                let handles: Vec<_> = batch
                    .chunks(chunk.max(1))
                    .map(|ids| {
                        let (processor, marks, samples) = (&processor, &marks, &samples);
                        scope.spawn(move || {
                            ids.iter()
                                .map(|&i| encode(processor, marks, &samples[i], options))
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| h.join().expect("a loader worker panicked"))
                    .collect()
            });
            let (mut items, mut bad) = (Vec::new(), Vec::new());
            for (&i, r) in batch.iter().zip(results) {
                match r {
                    Ok(e) => items.push(e),
                    Err(b) => bad.push((i, b)),
                }
            }
            if tx.send(Loaded { index, items, bad }).is_err() {
                return; // the trainer stopped
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_assistant_turns_are_labelled() {
        // 1 = <|im_start|>, 7 8 = "assistant\n", 2 = <|im_end|>
        let ids = [1, 5, 6, 2, 1, 7, 8, 30, 31, 2, 1, 5, 2, 1, 7, 8, 40, 2];
        let all = assistant_labels(&ids, &[1, 7, 8], 2, false);
        let want: Vec<i64> = ids
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                if [7, 8, 9, 16, 17].contains(&i) {
                    t
                } else {
                    IGNORE
                }
            })
            .collect();
        assert_eq!(all, want);
        let last = assistant_labels(&ids, &[1, 7, 8], 2, true);
        assert_eq!(last.iter().filter(|&&l| l != IGNORE).count(), 2);
        assert_eq!(last[16], 40);
    }
}
