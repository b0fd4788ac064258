//! `nuri check`: runs the language backbone on a device with random weights and checks it
//! against itself — greedy decoding with the KV cache must give the logits of one full
//! forward over the same tokens — while timing prefill and decode.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::{Device, Int, Tensor, TensorData};
use nuri_model::{CausalLm, ConfigError, TextConfig};

use crate::DeviceChoice;
use crate::cli::Preset;

/// `nuri check`'s flags.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// A configuration's language model (see `nuri config --help` for the names).
    #[arg(long, default_value = "tiny")]
    preset: Preset,
    /// cpu, wgpu or cuda (the last two need the Cargo feature of the same name).
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
    #[arg(long, default_value_t = 1)]
    batch: usize,
    #[arg(long, default_value_t = 32)]
    prompt_len: usize,
    #[arg(long, default_value_t = 32)]
    new_tokens: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Largest accepted |cached − full| logit difference.
    #[arg(long, default_value_t = 1e-3)]
    tolerance: f32,
}

impl CheckArgs {
    /// Runs the check and prints its report; an error when the cache and the full forward
    /// disagree beyond the tolerance.
    pub fn run(self) -> Result<()> {
        let (batch, prompt_len, new_tokens) = (self.batch, self.prompt_len, self.new_tokens);
        if batch == 0 || prompt_len == 0 || new_tokens < 2 {
            bail!("--batch and --prompt-len must be at least 1 and --new-tokens at least 2");
        }
        let device = self.device.device()?;
        let shape = CheckShape {
            batch,
            prompt_len,
            new_tokens,
            seed: self.seed,
        };
        let report = run_check(&self.preset.config(), shape, &device)
            .with_context(|| format!("building the {} model", self.preset.name))?;
        println!("device            {}", self.device);
        println!("parameters        {}", report.params);
        println!(
            "prefill           {:.1} tokens/s",
            report.prefill_tokens_per_s
        );
        println!(
            "decode            {:.1} tokens/s",
            report.decode_tokens_per_s
        );
        println!("max |cached-full| {:.3e}", report.max_abs_diff);
        println!("first row         {:?}", report.generated[0]);
        if report.max_abs_diff > self.tolerance {
            bail!(
                "cached decoding differs from the full forward by {:.3e} (> {:.1e})",
                report.max_abs_diff,
                self.tolerance
            );
        }
        Ok(())
    }
}

/// What `nuri check` measured.
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// Number of scalar parameters of the model.
    pub params: usize,
    /// Prompt tokens processed per second in the prefill (all rows together).
    pub prefill_tokens_per_s: f64,
    /// New tokens per second in cached decoding (all rows together).
    pub decode_tokens_per_s: f64,
    /// Largest |cached − full| over the logits of every decoded position.
    pub max_abs_diff: f32,
    /// The generated token ids, one row per batch entry.
    pub generated: Vec<Vec<i64>>,
}

/// Shape of one check run.
#[derive(Debug, Clone, Copy)]
pub struct CheckShape {
    pub batch: usize,
    pub prompt_len: usize,
    pub new_tokens: usize,
    pub seed: u64,
}

/// Runs the check; see the module docs.
pub fn run_check(
    config: &TextConfig,
    shape: CheckShape,
    device: &Device,
) -> Result<CheckReport, ConfigError> {
    device.seed(shape.seed);
    let model = CausalLm::new(config, device)?;
    let params = burn::module::Module::num_params(&model);
    let CheckShape {
        batch,
        prompt_len,
        new_tokens,
        seed,
    } = shape;

    let prompt = pseudo_random_ids(batch * prompt_len, config.vocab_size, seed);
    let prompt = Tensor::<2, Int>::from_data(TensorData::new(prompt, [batch, prompt_len]), device);

    let mut cache = model.new_cache();
    let started = Instant::now();
    let prefill = model.forward(prompt.clone(), None, None, Some(&mut cache)); // [b, p, vocab]
    let mut next = last_argmax(prefill.clone());
    let _ = next.to_data(); // waits for the device
    let prefill_secs = started.elapsed().as_secs_f64();

    let mut step_logits = vec![prefill.narrow(1, prompt_len - 1, 1)];
    let mut tokens = vec![next.clone()];
    let started = Instant::now();
    for _ in 1..new_tokens {
        let logits = model.forward(next, None, None, Some(&mut cache)); // [b, 1, vocab]
        next = last_argmax(logits.clone());
        let _ = next.to_data();
        step_logits.push(logits);
        tokens.push(next.clone());
    }
    let decode_secs = started.elapsed().as_secs_f64();

    // The full forward sees the prompt and every generated token but the last.
    let generated = Tensor::cat(tokens, 1); // [b, new_tokens]
    let inputs = Tensor::cat(
        vec![prompt, generated.clone().narrow(1, 0, new_tokens - 1)],
        1,
    );
    let full = model.forward(inputs, None, None, None);
    let full = full.narrow(1, prompt_len - 1, new_tokens);
    let cached = Tensor::cat(step_logits, 1);
    let max_abs_diff = (full - cached).abs().max().into_scalar::<f32>();

    let flat = generated
        .into_data()
        .try_to_vec_as::<i64>()
        .unwrap_or_default();
    Ok(CheckReport {
        params,
        prefill_tokens_per_s: (batch * prompt_len) as f64 / prefill_secs.max(1e-9),
        decode_tokens_per_s: (batch * (new_tokens - 1)) as f64 / decode_secs.max(1e-9),
        max_abs_diff,
        generated: flat.chunks(new_tokens).map(<[i64]>::to_vec).collect(),
    })
}

/// The argmax of the last position's logits.
///
/// # Shapes
/// - `logits`: `[batch, seq, vocab]` → `[batch, 1]`
fn last_argmax(logits: Tensor<3>) -> Tensor<2, Int> {
    let [b, s, _] = logits.dims();
    logits.narrow(1, s - 1, 1).argmax(2).reshape([b, 1])
}

/// Token ids in `0..vocab` from a fixed-seed linear congruential generator.
fn pseudo_random_ids(n: usize, vocab: usize, seed: u64) -> Vec<i64> {
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 33) % vocab as u64) as i64
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_on_cpu_agrees_with_itself() {
        let shape = CheckShape {
            batch: 2,
            prompt_len: 6,
            new_tokens: 5,
            seed: 1,
        };
        let report = run_check(&TextConfig::tiny(), shape, &Device::flex()).expect("valid");
        assert!(report.max_abs_diff < 1e-4, "{report:?}");
        assert_eq!(report.generated.len(), 2);
        assert!(report.generated.iter().all(|row| row.len() == 5));
        assert!(report.params > 0);
    }
}
