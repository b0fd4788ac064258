//! Choosing the next token from logits: greedy, or sampled with temperature, top-k, top-p
//! (nucleus), min-p and a repetition penalty, in the order transformers applies its logits
//! processors (penalty, temperature, top-k, top-p, min-p), from a seeded generator so that a
//! seed gives the same tokens every time.

use nuri_model::generation::argmax;

/// Decoding settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches `top_p` (1: all).
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` × the most likely one's probability (0: none).
    pub min_p: f32,
    /// Above 1 it discourages tokens already in the prompt or the answer (CTRL's penalty,
    /// as transformers applies it: positive logits divided, negative multiplied).
    pub repetition_penalty: f32,
    pub seed: u64,
    pub max_new_tokens: usize,
    /// Generation stops when the text contains one of these (it is cut before it).
    pub stop: Vec<String>,
    /// Go on past end-of-turn tokens until `max_new_tokens` or a stop string (vLLM's
    /// `ignore_eos`: for benchmarks and load tests).
    pub ignore_eos: bool,
    /// A reasoning model's thinking budget: after this many tokens inside a reasoning block,
    /// the end marker is the next token, whatever the model would say (`None`: no budget).
    pub max_thinking_tokens: Option<usize>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            seed: 0,
            max_new_tokens: 256,
            stop: Vec::new(),
            ignore_eos: false,
            max_thinking_tokens: None,
        }
    }
}

impl SamplingParams {
    /// Checks the ranges; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(format!("temperature must be ≥ 0, got {}", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(format!("min_p must be in [0, 1], got {}", self.min_p));
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return Err(format!(
                "repetition_penalty must be > 0, got {}",
                self.repetition_penalty
            ));
        }
        Ok(())
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0 || self.top_k == 1
    }
}

/// A seeded sampler for one sequence.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    state: u64,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let state = params.seed;
        Self { params, state }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// SplitMix64, as a uniform float in [0, 1).
    fn uniform(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The next token given the vocabulary's `logits` and the tokens so far (prompt and
    /// answer) that the repetition penalty looks at.
    pub fn sample(&mut self, logits: &[f32], seen: &[u32]) -> u32 {
        let p = &self.params;
        let mut logits = logits.to_vec();
        if p.repetition_penalty != 1.0 {
            let mut done = vec![false; logits.len()];
            for &t in seen {
                let t = t as usize;
                if t < logits.len() && !done[t] {
                    done[t] = true;
                    let l = &mut logits[t];
                    *l = if *l > 0.0 {
                        *l / p.repetition_penalty
                    } else {
                        *l * p.repetition_penalty
                    };
                }
            }
        }
        if p.is_greedy() {
            return argmax(&logits);
        }
        // Candidates by descending logit (ties by id, so the order is deterministic).
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        if p.top_k > 0 {
            order.truncate(p.top_k);
        }
        let max = f64::from(logits[order[0]]) / f64::from(p.temperature);
        let mut probs: Vec<f64> = order
            .iter()
            .map(|&i| (f64::from(logits[i]) / f64::from(p.temperature) - max).exp())
            .collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|x| *x /= total);
        if p.top_p < 1.0 {
            // Keep tokens until the kept mass reaches top_p (at least one).
            let mut mass = 0.0;
            let keep = probs
                .iter()
                .position(|&x| {
                    mass += x;
                    mass >= f64::from(p.top_p)
                })
                .map_or(probs.len(), |i| i + 1);
            order.truncate(keep);
            probs.truncate(keep);
        }
        if p.min_p > 0.0 {
            let floor = probs[0] * f64::from(p.min_p);
            let keep = probs.iter().take_while(|&&x| x >= floor).count().max(1);
            order.truncate(keep);
            probs.truncate(keep);
        }
        let total: f64 = probs.iter().sum();
        let mut r = self.uniform() * total;
        for (&i, &x) in order.iter().zip(&probs) {
            if r < x {
                return i as u32;
            }
            r -= x;
        }
        order[order.len() - 1] as u32
    }
}

/// Turns a growing list of token ids into text pieces that never end inside a UTF-8
/// character: a byte-level tokenizer can split a Korean syllable (3 bytes) across tokens,
/// and the decoded text then ends in U+FFFD until the rest arrives.
#[derive(Debug, Default, Clone)]
pub struct StreamDecoder {
    ids: Vec<u32>,
    emitted: usize,
}

impl StreamDecoder {
    /// Adds a token; returns the new complete text, if any. `decode` turns ids into text.
    pub fn push(&mut self, id: u32, decode: impl Fn(&[u32]) -> String) -> Option<String> {
        self.ids.push(id);
        let text = decode(&self.ids);
        if text.ends_with('\u{FFFD}') || text.len() <= self.emitted {
            return None;
        }
        let piece = text.get(self.emitted..)?.to_string();
        self.emitted = text.len();
        Some(piece)
    }

    /// Whatever is left at the end (an unfinished character stays U+FFFD).
    pub fn finish(&mut self, decode: impl Fn(&[u32]) -> String) -> Option<String> {
        let text = decode(&self.ids);
        let piece = text
            .get(self.emitted..)
            .filter(|p| !p.is_empty())?
            .to_string();
        self.emitted = text.len();
        Some(piece)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Vec<f32> {
        (0..50).map(|i| ((i * 37) % 11) as f32 * 0.3).collect()
    }

    #[test]
    fn a_seed_gives_fixed_tokens_and_top_k_1_is_greedy() {
        let params = SamplingParams {
            temperature: 1.0,
            seed: 7,
            ..Default::default()
        };
        let draw = |params: &SamplingParams| {
            let mut s = Sampler::new(params.clone());
            (0..20)
                .map(|_| s.sample(&logits(), &[]))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(&params), draw(&params));
        let other = SamplingParams {
            seed: 8,
            ..params.clone()
        };
        assert_ne!(draw(&params), draw(&other));
        let greedy = Sampler::new(SamplingParams::default()).sample(&logits(), &[]);
        let top1 = SamplingParams { top_k: 1, ..params };
        assert!(draw(&top1).iter().all(|&t| t == greedy));
    }

    #[test]
    fn filters_keep_only_likely_tokens() {
        let l = logits();
        let best = Sampler::new(SamplingParams::default()).sample(&l, &[]);
        let max = l.iter().cloned().fold(f32::MIN, f32::max);
        for params in [
            SamplingParams {
                temperature: 1.0,
                top_k: 3,
                ..Default::default()
            },
            SamplingParams {
                temperature: 1.0,
                top_p: 0.05,
                ..Default::default()
            },
            SamplingParams {
                temperature: 1.0,
                min_p: 0.99,
                ..Default::default()
            },
        ] {
            let mut s = Sampler::new(params.clone());
            for _ in 0..50 {
                let t = s.sample(&l, &[]) as usize;
                assert!(l[t] >= max - 0.31, "{params:?} drew {t}");
            }
        }
        // A strong repetition penalty moves greedy off the repeated token.
        let mut s = Sampler::new(SamplingParams {
            repetition_penalty: 100.0,
            ..Default::default()
        });
        assert_ne!(s.sample(&l, &[best]), best);
    }

    #[test]
    fn streaming_never_splits_a_syllable() {
        // "한" is ED 95 9C: three byte tokens, then "국".
        let bytes: Vec<Vec<u8>> =
            vec![vec![0xED], vec![0x95], vec![0x9C], "국".as_bytes().to_vec()];
        let decode = |ids: &[u32]| {
            let all: Vec<u8> = ids
                .iter()
                .flat_map(|&i| bytes[i as usize].clone())
                .collect();
            String::from_utf8_lossy(&all).into_owned()
        };
        let mut d = StreamDecoder::default();
        let pieces: Vec<Option<String>> = (0..4).map(|i| d.push(i, decode)).collect();
        assert_eq!(pieces, [None, None, Some("한".into()), Some("국".into())]);
    }
}
