//! Validation during training: the loss over labelled tokens and the exact-match accuracy
//! of greedy answers to each conversation's last question.

use burn::module::Module;
use burn::tensor::Device;
use nuri_model::NuriModel;
use nuri_model::generation::argmax;
use nuri_processor::{PaddingSide, Processor, exact_match, split_last_answer};

use crate::TrainError;
use crate::collate::{EncodeOptions, TurnMarks, encode};
use crate::config::TrainConfig;
use crate::data::Sample;
use crate::loss::batch_loss;

/// Validation results.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Validation {
    /// Mean loss per labelled token.
    pub loss: f64,
    /// Share of conversations whose last assistant turn greedy decoding reproduces exactly
    /// (after trimming whitespace).
    pub exact_match: f64,
    pub conversations: usize,
}

/// Most tokens greedy decoding may add beyond the reference answer's length (it stops
/// earlier at an end-of-turn token).
const EM_SLACK_TOKENS: usize = 4;

/// Loss and exact-match accuracy over at most `max_batches` validation batches.
pub fn validate(
    model: &NuriModel,
    processor: &Processor,
    marks: &TurnMarks,
    samples: &[Sample],
    config: &TrainConfig,
    device: &Device,
    max_batches: usize,
) -> Result<Option<Validation>, TrainError> {
    let model = model.valid();
    let device = &device.clone().without_autodiff();
    let pad = i64::from(processor.tokenizer.special.pad);
    let (mut total, mut count) = (0.0, 0usize);
    let (mut matched, mut asked) = (0usize, 0usize);
    let options = EncodeOptions::of(&config.data);
    for chunk in samples.chunks(config.batch_size).take(max_batches) {
        // Only the samples that encode (within `max_seq_len`) are scored or prompted.
        let (items, chunk): (Vec<_>, Vec<&Sample>) = chunk
            .iter()
            .filter_map(|s| encode(processor, marks, s, options).ok().map(|e| (e, s)))
            .unzip();
        if items.is_empty() {
            continue;
        }
        let batch = crate::collate::collate(items, pad);
        let (loss, n) = batch_loss(&model, &batch, device, false)?;
        total += f64::from(loss.into_scalar::<f32>()) * n as f64;
        count += n;
        // Exact match: the conversation up to its last assistant turn, generated greedily.
        let mut prompts = Vec::new();
        let mut answers = Vec::new();
        for sample in &chunk {
            if let Some((prompt, answer)) = split_last_answer(&sample.messages) {
                prompts.push(prompt);
                answers.push(answer);
            }
        }
        if prompts.is_empty() {
            continue;
        }
        let Ok(input) = processor.process(&prompts, true, PaddingSide::Left) else {
            continue;
        };
        let longest = answers
            .iter()
            .map(|a| processor.tokenizer.encode(a).map(|t| t.len()).unwrap_or(0))
            .max()
            .unwrap_or(0);
        let limit = longest + EM_SLACK_TOKENS;
        let eos = &processor.tokenizer.special.eos;
        let mut generated = vec![Vec::new(); prompts.len()];
        model
            .generate(&input.to_model_input(device), &mut |row, logits| {
                let token = argmax(logits);
                if eos.contains(&token) {
                    return None;
                }
                generated[row].push(token);
                (generated[row].len() < limit).then_some(token)
            })
            .map_err(|e| TrainError::Model(e.to_string()))?;
        for (ids, answer) in generated.iter().zip(&answers) {
            let text = processor.tokenizer.decode(ids, true)?;
            matched += usize::from(exact_match(&text, answer));
            asked += 1;
        }
    }
    Ok((count > 0).then(|| Validation {
        loss: total / count as f64,
        exact_match: matched as f64 / asked.max(1) as f64,
        conversations: asked,
    }))
}
