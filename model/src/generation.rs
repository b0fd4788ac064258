//! The one generation loop: a prefill of the whole prompt (the vision tower runs once, here),
//! then one cached decoding step per new token, every row of the batch choosing its own next
//! token and stopping on its own. Sampling, stop strings and streaming are the caller's
//! (`nuri-infer`); greedy decoding is the caller that always takes the [`argmax`].

use burn::tensor::{DType, Int, Tensor, TensorData};

use crate::multimodal::{ModelError, MultimodalInput, NuriModel};

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

impl NuriModel {
    /// Generates after every row of `input` (left-padded when the rows differ in length).
    ///
    /// `next(row, logits)` receives an unfinished row's logits over the vocabulary at its
    /// last position and returns the token to feed it, or `None` once the row is done; a
    /// done row is fed `pad` from then on and not asked again. Returns when every row is
    /// done. Only the last position's logits are computed in the prefill.
    pub fn generate(
        &self,
        input: &MultimodalInput,
        pad: u32,
        next: &mut dyn FnMut(usize, &[f32]) -> Option<u32>,
    ) -> Result<(), ModelError> {
        let [b, s] = input.input_ids.dims();
        let device = input.input_ids.device();
        let mut cache = self.new_cache();
        let (hidden, _, rope_deltas) = self.hidden_states(input, Some(&mut cache))?;
        let mut logits = last_logits(self.logits(hidden.narrow(1, s - 1, 1)));
        let mut mask = input
            .attention_mask
            .clone()
            .unwrap_or_else(|| Tensor::ones([b, s], &device));
        let mut done = vec![false; b];
        loop {
            let mut feed = Vec::with_capacity(b);
            for (row, row_logits) in logits.iter().enumerate() {
                let token = if done[row] {
                    None
                } else {
                    next(row, row_logits)
                };
                done[row] = token.is_none();
                feed.push(i64::from(token.unwrap_or(pad)));
            }
            if done.iter().all(|&d| d) {
                return Ok(());
            }
            let tokens = Tensor::<2, Int>::from_data(TensorData::new(feed, [b, 1]), &device);
            mask = Tensor::cat(vec![mask, Tensor::ones([b, 1], &device)], 1);
            let step = self.decode_step(tokens, Some(mask.clone()), &rope_deltas, &mut cache);
            logits = last_logits(step);
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
        self.generate(input, 0, &mut |row, logits| {
            let token = argmax(logits);
            generated[row].push(i64::from(token));
            (generated[row].len() < max_new_tokens).then_some(token)
        })?;
        Ok(generated)
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
