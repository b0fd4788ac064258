//! `nuri bench`: speed of a preset's (random weights) or a checkpoint's (`--model DIR`) phases
//! on a device — loading, the training step (forward, backward and AdamW over a batch of
//! samples, each an image and text), the vision encoder at 224² and 448², prefill, cached
//! decoding at batch 1 and 8 — and the device's own fp32 matmul rate and streaming read
//! bandwidth, so that each phase's model FLOPs utilization, and each decode phase's share of
//! the memory roofline (weight bytes per step ÷ bandwidth), can be read off. Warm-up runs,
//! then measured runs: median, min and max. `tools/reference/bench_torch.py` runs the same
//! shapes through transformers.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{DType, Device, Distribution, Tensor};
use nuri_model::generation::argmax;
use nuri_model::{MultimodalInput, NuriConfig, NuriModel, keep_as_loaded, load_pretrained_with};

use crate::DeviceChoice;

/// What to measure.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchOptions {
    /// tiny, quickstart, small-100m or a published size (qwen2-vl-2b, …): random weights.
    #[arg(long, default_value = "quickstart")]
    pub preset: String,
    /// A checkpoint directory to measure instead of a preset (its loading is measured too;
    /// the training step is left out unless `--only train` asks for it).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// The weights' dtype (f32, bf16, f16); on the CPU the activations stay f32.
    #[arg(long, default_value = "f32", value_parser = crate::cli::parse_dtype)]
    pub dtype: DType,
    /// With `--model`: use the weights in place from the memory-mapped files (the CPU).
    #[arg(long)]
    pub mmap: bool,
    /// Keep the language model's linear layers in 8 or 4 bits (q8, q4), as `nuri generate
    /// --quantize` does.
    #[arg(long, value_parser = crate::cli::parse_scheme)]
    pub quantize: Option<nuri_kernels::quant::Scheme>,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceChoice,
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Samples per training step.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Side of each training sample's image, in pixels.
    #[arg(long, default_value_t = 112)]
    pub image: usize,
    /// Text tokens per training sample (after the image).
    #[arg(long, default_value_t = 64)]
    pub text_tokens: usize,
    /// Prompt length for prefill.
    #[arg(long, default_value_t = 256)]
    pub prefill_tokens: usize,
    /// New tokens per decoding run (and the prompt length of decode1/decode8; decode512
    /// and decode2048 decode after prompts of 512 and 2,048 tokens).
    #[arg(long, default_value_t = 64)]
    pub decode_tokens: usize,
    /// Only these phases (comma-separated: bandwidth, matmul, train, vision224, vision448,
    /// prefill, decode1, decode8, decode512, decode2048).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Side of the square fp32 matmul that measures the device's own rate (1024 suits a
    /// CPU; a large GPU needs 4096 or more to be busy).
    #[arg(long, default_value_t = 1024)]
    pub matmul_size: usize,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the preset's Hugging Face config.json here (for bench_torch.py) and stop.
    #[arg(long)]
    pub export_config: Option<PathBuf>,
    /// With `--model`: instead of speed, how far bf16, q8 and q4 are from f32 on this JSONL's
    /// answers (perplexity, top-1 agreement, per-token logit error).
    #[arg(long, requires = "model")]
    pub quality: Option<PathBuf>,
    /// Samples of `--quality`'s file to score.
    #[arg(long, default_value_t = 64)]
    pub quality_samples: usize,
}

mod inputs;
mod memory;
mod quality;
mod report;

pub use report::{Phase, peak_rss_mib};

use inputs::{Sizes, image_text_batch, random_images, random_text, sizes};
use report::{print_table, time_runs, to_json};

/// Runs the benchmark and prints the table.
pub fn run(o: &BenchOptions) -> Result<Vec<Phase>> {
    crate::on_compute_pool(|| run_phases(o))
}

fn run_phases(o: &BenchOptions) -> Result<Vec<Phase>> {
    let preset = match &o.model {
        Some(_) => None,
        None => Some(
            o.preset
                .parse::<crate::cli::Preset>()
                .map_err(|_| {
                    anyhow::anyhow!(
                        "unknown preset `{}` (known: {})",
                        o.preset,
                        crate::cli::Preset::names()
                    )
                })?
                .config,
        ),
    };
    if let Some(dir) = &o.export_config {
        let Some(config) = &preset else {
            bail!("--export-config writes a preset's config.json; --model already has one");
        };
        let device = Device::flex();
        let model = NuriModel::new(config, &device)?;
        nuri_model::save_pretrained(&model, config, dir)
            .with_context(|| format!("writing {}", dir.display()))?;
        println!("wrote {}", dir.join("config.json").display());
        return Ok(Vec::new());
    }
    if let (Some(data), Some(dir)) = (&o.quality, &o.model) {
        let rows = quality::run(dir, data, o.quality_samples, &o.device.device()?)?;
        if let Some(path) = &o.json {
            let json: Vec<serde_json::Value> = rows
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "form": r.name,
                        "perplexity": r.perplexity,
                        "top1_agreement": r.top1,
                        "logit_error_mean": r.logit_err_mean,
                        "logit_error_max": r.logit_err_max,
                    })
                })
                .collect();
            std::fs::write(path, serde_json::to_string_pretty(&json)?)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        return Ok(Vec::new());
    }
    if o.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let explicit = |name: &str| o.only.iter().any(|p| p == name);
    let want =
        |name: &str| o.only.is_empty() && !(name == "train" && o.model.is_some()) || explicit(name);
    let device = o.device.device()?;
    device.seed(0);
    let quantize = o.quantize.map(|scheme| nuri_model::Quantize {
        scheme,
        vision: false,
    });
    let dtypes = crate::cli::load_dtypes(o.dtype, &device)
        .with_mmap(o.mmap)
        .with_quantize(quantize);
    let mut phases = Vec::new();
    if want("bandwidth") {
        phases.push(bandwidth(o)?);
    }
    let (config, model) = match (&o.model, preset) {
        (Some(dir), _) => {
            let started = Instant::now();
            let (config, model, report) = load_pretrained_with(dir, &device, dtypes)
                .with_context(|| format!("loading {}", dir.display()))?;
            let seconds = started.elapsed().as_secs_f64();
            println!(
                "loaded {} in {seconds:.2} s: {} tensors, {:.2} GB ({:?} matrices; {:.2} GB read in place from the memory map), loader's own peak {:.2} GB, peak RSS {:.0} MiB",
                dir.display(),
                report.tensors,
                report.bytes as f64 / 1e9,
                o.dtype,
                report.mapped_bytes as f64 / 1e9,
                report.peak_bytes as f64 / 1e9,
                peak_rss_mib().unwrap_or(0.0),
            );
            phases.push(Phase {
                name: "load".into(),
                unit: "GB",
                units: report.bytes as f64 / 1e9,
                tokens: None,
                flops: 0.0,
                seconds: vec![seconds],
                decode_batch: None,
            });
            (config, model)
        }
        (None, Some(config)) => {
            let model = NuriModel::new(&config, &device)?;
            model.init_params_now();
            let mut model = if o.dtype == DType::F32 && quantize.is_none() {
                model
            } else {
                keep_as_loaded(model, dtypes)
            };
            if let Some(q) = quantize {
                nuri_model::quantize_model(&mut model, q);
            }
            (config, model)
        }
        (None, None) => unreachable!("a preset when there is no model"),
    };
    let bench = Bench {
        o,
        s: sizes(&config),
        config,
        device,
        model,
    };
    if want("matmul") {
        phases.push(bench.matmul()?);
    }
    if want("train") {
        phases.push(bench.train()?);
    }
    phases.extend(bench.vision(&want)?);
    if want("prefill") {
        phases.push(bench.prefill()?);
    }
    phases.extend(bench.decode(&want)?);
    // From the configuration: a packed layer's float weight is an empty place holder.
    let params = nuri_model::presets::ParameterCounts::of(&bench.config)
        .map_or_else(|_| bench.model.num_params(), |c| c.total());
    let step_bytes = memory::decode_bytes(&bench.model);
    print_table(o, &bench.config, params, step_bytes, &phases);
    if let Some(path) = &o.json {
        std::fs::write(
            path,
            serde_json::to_string_pretty(&to_json(o, params, step_bytes, &phases))?,
        )
        .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(phases)
}

/// The machine's streaming read bandwidth (every core reading a 1 GiB buffer once).
fn bandwidth(o: &BenchOptions) -> Result<Phase> {
    let stream = memory::Stream::new();
    let mut sink = 0;
    let seconds = time_runs(o.warmup.max(1), o.runs, || {
        sink ^= stream.read();
        Ok(())
    })?;
    std::hint::black_box(sink);
    Ok(Phase {
        name: "memory read".into(),
        unit: "GB",
        units: stream.bytes() as f64 / 1e9,
        tokens: None,
        flops: 0.0,
        seconds,
        decode_batch: None,
    })
}

/// What every phase measures with: the options, the preset and its model on the device.
struct Bench<'a> {
    o: &'a BenchOptions,
    config: NuriConfig,
    s: Sizes,
    device: Device,
    model: NuriModel,
}

impl Bench<'_> {
    /// The device's own fp32 matmul rate.
    fn matmul(&self) -> Result<Phase> {
        let (o, device) = (self.o, &self.device);
        let n = o.matmul_size;
        let a = Tensor::<2>::random([n, n], Distribution::Normal(0.0, 1.0), device);
        let b = Tensor::<2>::random([n, n], Distribution::Normal(0.0, 1.0), device);
        let seconds = time_runs(o.warmup, o.runs, || {
            let _ = a.clone().matmul(b.clone()).sum().into_scalar::<f32>();
            Ok(())
        })?;
        let flops = 2.0 * (n * n * n) as f64;
        Ok(Phase {
            name: format!("matmul {n}³ fp32"),
            unit: "GFLOP",
            units: flops / 1e9,
            tokens: None,
            flops,
            seconds,
            decode_batch: None,
        })
    }

    /// Forward, backward and AdamW over a batch of image + text samples.
    fn train(&self) -> Result<Phase> {
        let (o, config, s, device) = (self.o, &self.config, &self.s, &self.device);
        let train_device = device.clone().autodiff();
        train_device.seed(0);
        let mut model = NuriModel::new(config, &train_device)?;
        model.init_params_now();
        let mut optim = AdamWConfig::new().with_weight_decay(0.01).init();
        let (input, seq) =
            image_text_batch(config, o.batch, o.image, o.text_tokens, &train_device)?;
        let labels: Vec<i64> = input
            .input_ids
            .clone()
            .into_data()
            .try_to_vec_as::<i64>()
            .unwrap_or_default();
        let seconds = time_runs(o.warmup, o.runs, || {
            let (hidden, _, _) = model.hidden_states(&input, None)?;
            let (loss, _) = nuri_train::loss::labelled_loss(&model, hidden, &labels, &train_device);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(1e-4, model.clone(), grads);
            // Waits for the update to finish.
            let _ = model
                .model
                .language_model
                .norm
                .weight
                .val()
                .sum()
                .into_scalar::<f32>();
            Ok(())
        })?;
        let tokens = (o.batch * seq) as f64;
        let g = o.image / config.vision()?.patch_size;
        let patches = (o.batch * g * g) as f64;
        Ok(Phase {
            name: "train step".into(),
            unit: "samples",
            units: o.batch as f64,
            tokens: Some(tokens),
            flops: 6.0 * (s.lm * tokens + s.vit * patches),
            seconds,
            decode_batch: None,
        })
    }

    /// The vision tower alone, on 224² and 448² images.
    fn vision(&self, want: &dyn Fn(&str) -> bool) -> Result<Vec<Phase>> {
        let (o, config, s, device, model) =
            (self.o, &self.config, &self.s, &self.device, &self.model);
        let mut phases = Vec::new();
        for (name, side, images, key) in [
            ("vision encoder 224²", 224, 4usize, "vision224"),
            ("vision encoder 448²", 448, 1, "vision448"),
        ] {
            if !want(key) {
                continue;
            }
            let (pixels, grids) = match random_images(config, images, side, device) {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("skipping {name}: {e}");
                    continue;
                }
            };
            let seconds = time_runs(o.warmup, o.runs, || {
                let out = model.encode_visual("image", pixels.clone(), &grids)?;
                let _ = out.sum().into_scalar::<f32>();
                Ok(())
            })?;
            let patches = (images * grids[0][1] * grids[0][2]) as f64;
            phases.push(Phase {
                name: name.into(),
                unit: "images",
                units: images as f64,
                tokens: None,
                flops: 2.0 * s.vit * patches,
                seconds,
                decode_batch: None,
            });
        }
        Ok(phases)
    }

    /// A prompt of `prefill_tokens` text tokens, batch 1, without a cache.
    fn prefill(&self) -> Result<Phase> {
        let (o, config, s, device, model) =
            (self.o, &self.config, &self.s, &self.device, &self.model);
        let ids = random_text(config, 1, o.prefill_tokens, device);
        let input = MultimodalInput::text(ids, None);
        let seconds = time_runs(o.warmup, o.runs, || {
            let out = model.prefill(&input, None)?;
            let _ = out.logits.sum().into_scalar::<f32>();
            Ok(())
        })?;
        let tokens = o.prefill_tokens as f64;
        Ok(Phase {
            name: "prefill".into(),
            unit: "tokens",
            units: tokens,
            tokens: None,
            flops: 2.0 * s.lm * tokens,
            seconds,
            decode_batch: None,
        })
    }

    /// Cached greedy decoding through the generation loop.
    fn decode(&self, want: &dyn Fn(&str) -> bool) -> Result<Vec<Phase>> {
        let (o, config, s, device, model) =
            (self.o, &self.config, &self.s, &self.device, &self.model);
        let mut phases = Vec::new();
        let n = o.decode_tokens.max(2);
        for (batch, context, key, name) in [
            (1usize, n, "decode1", "decode, batch 1".to_string()),
            (8, n, "decode8", "decode, batch 8".to_string()),
            (1, 512, "decode512", "decode, 512 cached".to_string()),
            (1, 2048, "decode2048", "decode, 2048 cached".to_string()),
        ] {
            if !want(key) {
                continue;
            }
            let input = MultimodalInput::text(random_text(config, batch, context, device), None);
            // Each run: a prefill of `context` tokens (not timed), then `n` cached greedy decode
            // steps through the generation loop, timed from its first choice of a token.
            let decode_once = || -> Result<f64> {
                let mut started = None;
                let mut steps = 0;
                model.generate(&input, &mut |_, logits| {
                    started.get_or_insert_with(Instant::now);
                    steps += 1;
                    (steps <= n * batch).then(|| argmax(logits))
                })?;
                Ok(started.map_or(0.0, |t| t.elapsed().as_secs_f64()))
            };
            for _ in 0..o.warmup {
                decode_once()?;
            }
            let decode = (0..o.runs)
                .map(|_| decode_once())
                .collect::<Result<Vec<f64>>>()?;
            let tokens = (batch * n) as f64;
            phases.push(Phase {
                name,
                unit: "tokens",
                units: tokens,
                tokens: None,
                flops: 2.0 * s.lm * tokens,
                seconds: decode,
                decode_batch: Some(batch),
            });
        }
        Ok(phases)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_measures_every_phase_of_the_tiny_preset() {
        let options = BenchOptions {
            preset: "tiny".into(),
            model: None,
            dtype: DType::F32,
            mmap: false,
            quantize: None,
            quality: None,
            quality_samples: 0,
            device: DeviceChoice::Cpu,
            warmup: 0,
            runs: 2,
            batch: 2,
            image: 56,
            text_tokens: 8,
            prefill_tokens: 16,
            decode_tokens: 4,
            only: Vec::new(),
            matmul_size: 1024,
            json: None,
            export_config: None,
        };
        let phases = run(&options).expect("bench runs");
        let names: Vec<&str> = phases.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "memory read",
                "matmul 1024³ fp32",
                "train step",
                "vision encoder 224²",
                "vision encoder 448²",
                "prefill",
                "decode, batch 1",
                "decode, batch 8",
                "decode, 512 cached",
                "decode, 2048 cached"
            ]
        );
        for p in &phases {
            assert_eq!(p.seconds.len(), 2, "{}", p.name);
            // The bandwidth moves bytes, not FLOPs.
            assert!(
                p.median() > 0.0 && (p.flops > 0.0 || p.unit == "GB"),
                "{}",
                p.name
            );
            assert_eq!(
                p.decode_batch.is_some(),
                p.name.starts_with("decode"),
                "{}",
                p.name
            );
        }
        let bad = BenchOptions {
            preset: "huge".into(),
            ..options
        };
        assert!(
            run(&bad)
                .unwrap_err()
                .to_string()
                .contains("unknown preset `huge`")
        );
    }
}
