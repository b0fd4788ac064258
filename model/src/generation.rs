//! The one generation loop: a prefill of the whole prompt (the vision tower runs once, here),
//! then one cached decoding step per new token, every row of the batch choosing its own next
//! token and stopping on its own. Sampling, stop strings and streaming are the caller's
//! (`nuri-infer`); greedy decoding is the caller that always takes the [`argmax`].

use burn::tensor::{DType, Device, Int, Tensor, TensorData};

use crate::kv_cache::KvCache;
use crate::multimodal::{ModelError, MultimodalInput, NuriModel, int_vec};

/// The index of the largest logit, the first of equals (as `torch.argmax`): greedy
/// decoding's choice.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// The logits of each row's last position, on the host.
///
/// # Shapes
/// - `logits`: `[batch, seq, vocab]` → `batch` rows of `vocab`
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

/// Rows decoded together (the running batch of continuous batching): their KV cache, how
/// many padding positions each row has at the front of it, and each row's rope delta.
/// Padding is lengths here; the mask the attention needs is built from them, only when
/// some row is padded.
#[derive(Debug, Clone)]
pub struct Batch {
    cache: KvCache,
    pads: Vec<usize>,
    rope_deltas: Vec<i64>,
}

impl Batch {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.pads.len()
    }

    /// The rows' KV cache.
    pub fn cache(&self) -> &KvCache {
        &self.cache
    }

    /// Positions cached per row, padding included.
    pub fn seq_len(&self) -> usize {
        self.cache.seq_len()
    }

    /// Real (unpadded) tokens row `row` has seen.
    pub fn tokens(&self, row: usize) -> usize {
        self.seq_len() - self.pads[row]
    }

    /// The padding mask over the cached positions and `new` more (1 = token), or `None`
    /// when no row is padded.
    ///
    /// # Shapes
    /// - returns `[rows, cached + new]`
    fn mask(&self, new: usize, device: &Device) -> Option<Tensor<2, Int>> {
        if self.pads.iter().all(|&p| p == 0) {
            return None;
        }
        let t = self.seq_len() + new;
        let flags: Vec<i64> = self
            .pads
            .iter()
            .flat_map(|&p| (0..t).map(move |j| i64::from(j >= p)))
            .collect();
        Some(Tensor::from_data(
            TensorData::new(flags, [self.rows(), t]),
            device,
        ))
    }

    /// Keeps the rows `rows` (in that order; at least one), and drops the front positions
    /// that are padding in every one of them.
    pub fn retain(&mut self, rows: &[usize]) {
        let pads: Vec<usize> = rows.iter().map(|&r| self.pads[r]).collect();
        let front = pads.iter().copied().min().unwrap_or(0);
        self.cache.retain(rows, front);
        self.pads = pads.into_iter().map(|p| p - front).collect();
        self.rope_deltas = rows.iter().map(|&r| self.rope_deltas[r]).collect();
    }

    /// Appends the rows of `other` after this batch's; the shorter of the two is padded at
    /// the front to the longer's length.
    pub fn merge(&mut self, other: Batch) {
        let (mine, theirs) = (self.seq_len(), other.seq_len());
        let len = mine.max(theirs);
        self.cache.merge(&other.cache);
        for p in &mut self.pads {
            *p += len - mine;
        }
        self.pads
            .extend(other.pads.into_iter().map(|p| p + len - theirs));
        self.rope_deltas.extend(other.rope_deltas);
    }
}

/// A prompt being run through the language model chunk by chunk (its vision tower has
/// already run), so that a long prompt can share the model with the running batch.
#[derive(Debug, Clone)]
pub struct PendingPrompt {
    /// `[rows, seq, hidden]`
    embeds: Tensor<3>,
    /// `[3, rows, seq]`
    position_ids: Tensor<3, Int>,
    /// Prompt positions already in the cache.
    done: usize,
    batch: Batch,
}

impl PendingPrompt {
    /// Prompt positions (per row, padding included) still to run.
    pub fn remaining(&self) -> usize {
        self.embeds.dims()[1] - self.done
    }

    /// KV-cache positions it holds so far (rows × positions).
    pub fn cached(&self) -> usize {
        self.batch.rows() * self.done
    }
}

/// What a chunk of prefill leaves.
#[derive(Debug)]
pub enum Prefilled {
    /// More of the prompt is to run.
    Pending(Box<PendingPrompt>),
    /// The prompt is in the cache: the batch to decode, and each row's logits at its last
    /// position.
    Ready(Batch, Vec<Vec<f32>>),
}

impl NuriModel {
    /// Starts a prompt: runs the vision tower and the fusion, and counts each row's left
    /// padding (rows must be left-padded, as the processor pads for generation).
    pub fn begin_prompt(&self, input: &MultimodalInput) -> Result<PendingPrompt, ModelError> {
        let (embeds, position_ids, rope_deltas) = self.prompt_embeddings(input)?;
        let [b, s] = input.input_ids.dims();
        let pads = match &input.attention_mask {
            Some(mask) => int_vec(mask.clone())
                .chunks(s)
                .map(|row| row.iter().take_while(|&&m| m == 0).count())
                .collect(),
            None => vec![0; b],
        };
        Ok(PendingPrompt {
            embeds,
            position_ids,
            done: 0,
            batch: Batch {
                cache: self.new_cache(),
                pads,
                rope_deltas,
            },
        })
    }

    /// Runs up to `max_tokens` more positions of `prompt` into its cache.
    pub fn prefill_chunk(&self, mut prompt: PendingPrompt, max_tokens: usize) -> Prefilled {
        let n = prompt.remaining().min(max_tokens.max(1));
        let device = prompt.embeds.device();
        let start = prompt.done;
        let mask = prompt.batch.mask(n, &device); // [rows, start + n]
        let hidden = self.model.language_model.forward_embeds(
            prompt.embeds.clone().narrow(1, start, n),
            prompt.position_ids.clone().narrow(2, start, n),
            mask,
            Some(&mut prompt.batch.cache),
        );
        prompt.done += n;
        if prompt.remaining() > 0 {
            return Prefilled::Pending(Box::new(prompt));
        }
        let logits = last_logits(self.logits(hidden.narrow(1, n - 1, 1)));
        Prefilled::Ready(prompt.batch, logits)
    }

    /// Runs a whole prompt: the batch to decode and each row's last logits.
    pub fn prefill_all(
        &self,
        input: &MultimodalInput,
    ) -> Result<(Batch, Vec<Vec<f32>>), ModelError> {
        let mut prompt = self.begin_prompt(input)?;
        loop {
            match self.prefill_chunk(prompt, usize::MAX) {
                Prefilled::Ready(batch, logits) => return Ok((batch, logits)),
                Prefilled::Pending(p) => prompt = *p,
            }
        }
    }

    /// One decoding step: feeds each row its next token and returns each row's logits for
    /// the one after. Each row's position continues at its count of real tokens plus its
    /// rope delta.
    pub fn decode(&self, batch: &mut Batch, tokens: &[u32]) -> Vec<Vec<f32>> {
        let b = batch.rows();
        let device = self.lm_device();
        let positions: Vec<i64> = (0..3)
            .flat_map(|_| 0..b)
            .map(|row| batch.tokens(row) as i64 + batch.rope_deltas[row])
            .collect();
        let position_ids =
            Tensor::<3, Int>::from_data(TensorData::new(positions, [3, b, 1]), &device);
        let ids: Vec<i64> = tokens.iter().map(|&t| i64::from(t)).collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, 1]), &device);
        let mask = batch.mask(1, &device);
        let embeds = self.model.language_model.embed(ids);
        let hidden = self.model.language_model.forward_embeds(
            embeds,
            position_ids,
            mask,
            Some(&mut batch.cache),
        );
        last_logits(self.logits(hidden))
    }

    /// Generates after every row of `input` (left-padded when the rows differ in length).
    ///
    /// `next(row, logits)` receives an unfinished row's logits over the vocabulary at its
    /// last position and returns the token to feed it, or `None` once the row is done; a
    /// done row leaves the batch and is not asked again. Returns when every row is done.
    /// Only the last position's logits are computed in the prefill.
    pub fn generate(
        &self,
        input: &MultimodalInput,
        next: &mut dyn FnMut(usize, &[f32]) -> Option<u32>,
    ) -> Result<(), ModelError> {
        let (mut batch, mut logits) = self.prefill_all(input)?;
        // The input row of each batch row.
        let mut rows: Vec<usize> = (0..batch.rows()).collect();
        loop {
            let mut keep = Vec::with_capacity(rows.len());
            let mut feed = Vec::with_capacity(rows.len());
            for (i, row_logits) in logits.iter().enumerate() {
                if let Some(token) = next(rows[i], row_logits) {
                    keep.push(i);
                    feed.push(token);
                }
            }
            if keep.is_empty() {
                return Ok(());
            }
            if keep.len() < rows.len() {
                batch.retain(&keep);
                rows = keep.iter().map(|&i| rows[i]).collect();
            }
            logits = self.decode(&mut batch, &feed);
        }
    }

    /// Greedy decoding of exactly `max_new_tokens` tokens per row (no stop condition).
    /// Returns the new token ids.
    pub fn greedy(
        &self,
        input: &MultimodalInput,
        max_new_tokens: usize,
    ) -> Result<Vec<Vec<i64>>, ModelError> {
        let [b, _] = input.input_ids.dims();
        let mut generated = vec![Vec::with_capacity(max_new_tokens); b];
        if max_new_tokens == 0 {
            return Ok(generated);
        }
        self.generate(input, &mut |row, logits| {
            let token = argmax(logits);
            generated[row].push(i64::from(token));
            (generated[row].len() < max_new_tokens).then_some(token)
        })?;
        Ok(generated)
    }

    /// The device the language model's weights are on.
    fn lm_device(&self) -> Device {
        self.model.language_model.embed_tokens.weight.device()
    }
}

#[cfg(test)]
mod tests {
    use super::argmax;

    #[test]
    fn argmax_takes_the_first_of_equal_logits() {
        assert_eq!(argmax(&[0.5, 2.0, -1.0, 2.0]), 1);
        assert_eq!(argmax(&[f32::NEG_INFINITY, -3.0]), 1);
        assert_eq!(argmax(&[1.0]), 0);
    }
}
