//! `nuri bench`: speed of a preset's phases on a device — the training step (forward,
//! backward and AdamW over a batch of image + text samples), the vision encoder at 224² and
//! 448², prefill, cached decoding at batch 1 and 8 — and the device's own fp32 matmul rate,
//! so that each phase's model FLOPs utilization can be read off. Warm-up runs, then measured
//! runs: median, min and max. `tools/reference/bench_torch.py` runs the same shapes through
//! transformers' Qwen2-VL.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use nuri_model::{MultimodalInput, NuriConfig, NuriModel};
use serde_json::{Value as Json, json};

use crate::DeviceChoice;

/// What to measure.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchOptions {
    /// tiny, quickstart or small-100m.
    #[arg(long, default_value = "quickstart")]
    pub preset: String,
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
    /// Prompt and new tokens for decoding.
    #[arg(long, default_value_t = 64)]
    pub decode_tokens: usize,
    /// Only these phases (comma-separated: matmul, train, vision224, vision448, prefill,
    /// decode1, decode8).
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
}

/// One phase's measurements: `units` per run, and seconds per run.
#[derive(Debug, Clone)]
pub struct Phase {
    pub name: String,
    /// What is counted ("samples", "images", "tokens", "GFLOP").
    pub unit: &'static str,
    /// Units per run.
    pub units: f64,
    /// Also reported: tokens per run (training step).
    pub tokens: Option<f64>,
    /// Model FLOPs per run (for the utilization column).
    pub flops: f64,
    pub seconds: Vec<f64>,
}

impl Phase {
    /// Rates (units/s) per measured run, sorted.
    pub fn rates(&self) -> Vec<f64> {
        let mut r: Vec<f64> = self.seconds.iter().map(|s| self.units / s).collect();
        r.sort_by(f64::total_cmp);
        r
    }

    pub fn median(&self) -> f64 {
        let r = self.rates();
        let n = r.len();
        if n % 2 == 1 {
            r[n / 2]
        } else {
            0.5 * (r[n / 2 - 1] + r[n / 2])
        }
    }

    /// Achieved FLOP/s at the median.
    pub fn flops_per_s(&self) -> f64 {
        self.flops * self.median() / self.units
    }
}

/// Parameter counts the FLOP estimates use.
struct Sizes {
    /// Language model matmul parameters per token (layers + lm_head).
    lm: f64,
    /// Vision tower matmul parameters per patch (blocks + patch embedding; merger per 4).
    vit: f64,
}

fn sizes(config: &NuriConfig) -> Sizes {
    let t = &config.text;
    let (h, i, l) = (
        t.hidden_size as f64,
        t.intermediate_size as f64,
        t.num_hidden_layers as f64,
    );
    let kv = (t.num_key_value_heads * t.head_dim()) as f64;
    let per_layer = h * h * 2.0 + 2.0 * h * kv + 3.0 * h * i;
    let lm = l * per_layer + h * t.vocab_size as f64;
    let v = &config.vision;
    let e = v.embed_dim as f64;
    let block = 4.0 * e * e + 2.0 * e * v.mlp_hidden() as f64;
    let merged = v.merged_dim() as f64;
    let merger = (merged * merged + merged * v.hidden_size as f64)
        / (v.spatial_merge_size * v.spatial_merge_size) as f64;
    let vit = v.depth as f64 * block + v.patch_dim() as f64 * e + merger;
    Sizes { lm, vit }
}

/// Peak resident memory of this process (Linux `VmHWM`), in MiB.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn time_runs(warmup: usize, runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<Vec<f64>> {
    for _ in 0..warmup {
        f()?;
    }
    let mut out = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        f()?;
        out.push(started.elapsed().as_secs_f64());
    }
    Ok(out)
}

/// Random patches for `images` square images of side `side` under `config`'s vision tower.
///
/// # Shapes
/// - returns `[images · patches, C·T·P·P]` and one `(1, h, w)` grid per image
fn random_images(
    config: &NuriConfig,
    images: usize,
    side: usize,
    device: &Device,
) -> Result<(Tensor<2>, Vec<[usize; 3]>)> {
    let v = &config.vision;
    let factor = v.patch_size * v.spatial_merge_size;
    if !side.is_multiple_of(factor) {
        bail!("image side {side} is not a multiple of patch × merge = {factor} for this preset");
    }
    let g = side / v.patch_size;
    let patches = images * g * g;
    let pixels = Tensor::random(
        [patches, v.patch_dim()],
        Distribution::Normal(0.0, 1.0),
        device,
    );
    Ok((pixels, vec![[1, g, g]; images]))
}

/// A batch of `batch` rows, each `<|vision_start|>`, one image's pads, `<|vision_end|>`,
/// then `text` random text tokens.
fn image_text_batch(
    config: &NuriConfig,
    batch: usize,
    side: usize,
    text: usize,
    device: &Device,
) -> Result<(MultimodalInput, usize)> {
    let (pixels, grids) = random_images(config, batch, side, device)?;
    let m = config.vision.spatial_merge_size;
    let pads = grids[0][1] * grids[0][2] / (m * m);
    let words = text_ids(config, batch * text);
    let mut ids = Vec::new();
    for row in words.chunks(text) {
        ids.push(config.vision_start_token_id);
        ids.extend(std::iter::repeat_n(config.image_token_id, pads));
        ids.push(config.vision_end_token_id);
        ids.extend_from_slice(row);
    }
    let seq = pads + 2 + text;
    let input_ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [batch, seq]), device);
    let mut input = MultimodalInput::text(input_ids, None);
    input.pixel_values = Some(pixels);
    input.image_grid_thw = grids;
    Ok((input, seq))
}

/// `n` deterministic text token ids, below every special token (as bench_torch.py makes
/// them: `(i · 7919 + 13) mod text vocabulary`).
fn text_ids(config: &NuriConfig, n: usize) -> Vec<i64> {
    let lowest_special = [
        config.image_token_id,
        config.video_token_id,
        config.vision_start_token_id,
        config.vision_end_token_id,
    ]
    .into_iter()
    .min()
    .unwrap_or(1)
    .max(1) as usize;
    let vocab = config.text.vocab_size.min(lowest_special);
    (0..n).map(|i| ((i * 7919 + 13) % vocab) as i64).collect()
}

fn random_text(config: &NuriConfig, batch: usize, len: usize, device: &Device) -> Tensor<2, Int> {
    Tensor::from_data(
        TensorData::new(text_ids(config, batch * len), [batch, len]),
        device,
    )
}

/// Runs the benchmark and prints the table.
pub fn run(o: &BenchOptions) -> Result<Vec<Phase>> {
    crate::on_compute_pool(|| run_phases(o))
}

fn run_phases(o: &BenchOptions) -> Result<Vec<Phase>> {
    let Some(config) = NuriConfig::preset(&o.preset) else {
        bail!(
            "unknown preset `{}` (known: {})",
            o.preset,
            NuriConfig::PRESETS.join(", ")
        );
    };
    if let Some(dir) = &o.export_config {
        let device = Device::flex();
        let model = NuriModel::new(&config, &device)?;
        nuri_model::save_pretrained(&model, &config, dir)
            .with_context(|| format!("writing {}", dir.display()))?;
        println!("wrote {}", dir.join("config.json").display());
        return Ok(Vec::new());
    }
    if o.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let want = |name: &str| o.only.is_empty() || o.only.iter().any(|p| p == name);
    let device = o.device.device()?;
    device.seed(0);
    let model = NuriModel::new(&config, &device)?;
    model.init_params_now();
    let params = model.num_params();
    let s = sizes(&config);
    let mut phases = Vec::new();

    if want("matmul") {
        let n = o.matmul_size;
        let a = Tensor::<2>::random([n, n], Distribution::Normal(0.0, 1.0), &device);
        let b = Tensor::<2>::random([n, n], Distribution::Normal(0.0, 1.0), &device);
        let seconds = time_runs(o.warmup, o.runs, || {
            let _ = a.clone().matmul(b.clone()).sum().into_scalar::<f32>();
            Ok(())
        })?;
        let flops = 2.0 * (n * n * n) as f64;
        phases.push(Phase {
            name: format!("matmul {n}³ fp32"),
            unit: "GFLOP",
            units: flops / 1e9,
            tokens: None,
            flops,
            seconds,
        });
    }

    if want("train") {
        let train_device = device.clone().autodiff();
        train_device.seed(0);
        let mut model = NuriModel::new(&config, &train_device)?;
        model.init_params_now();
        let mut optim = AdamWConfig::new().with_weight_decay(0.01).init();
        let (input, seq) =
            image_text_batch(&config, o.batch, o.image, o.text_tokens, &train_device)?;
        let labels: Vec<i64> = input
            .input_ids
            .clone()
            .into_data()
            .try_to_vec_as::<i64>()
            .unwrap_or_default();
        let seconds = time_runs(o.warmup, o.runs, || {
            let (hidden, _, _) = model.hidden_states(&input, None)?;
            let (loss, _) =
                nuri_train::trainer::labelled_loss(&model, hidden, &labels, &train_device);
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
        let g = o.image / config.vision.patch_size;
        let patches = (o.batch * g * g) as f64;
        phases.push(Phase {
            name: "train step".into(),
            unit: "samples",
            units: o.batch as f64,
            tokens: Some(tokens),
            flops: 6.0 * (s.lm * tokens + s.vit * patches),
            seconds,
        });
    }

    for (name, side, images, key) in [
        ("vision encoder 224²", 224, 4usize, "vision224"),
        ("vision encoder 448²", 448, 1, "vision448"),
    ] {
        if !want(key) {
            continue;
        }
        let (pixels, grids) = match random_images(&config, images, side, &device) {
            Ok(x) => x,
            Err(e) => {
                eprintln!("skipping {name}: {e}");
                continue;
            }
        };
        let seconds = time_runs(o.warmup, o.runs, || {
            let out = model.model.visual.forward(pixels.clone(), &grids)?;
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
        });
    }

    if want("prefill") {
        let ids = random_text(&config, 1, o.prefill_tokens, &device);
        let input = MultimodalInput::text(ids, None);
        let seconds = time_runs(o.warmup, o.runs, || {
            let out = model.prefill(&input, None)?;
            let _ = out.logits.sum().into_scalar::<f32>();
            Ok(())
        })?;
        let tokens = o.prefill_tokens as f64;
        phases.push(Phase {
            name: "prefill".into(),
            unit: "tokens",
            units: tokens,
            tokens: None,
            flops: 2.0 * s.lm * tokens,
            seconds,
        });
    }

    for (batch, key, name) in [
        (1usize, "decode1", "decode, batch 1"),
        (8, "decode8", "decode, batch 8"),
    ] {
        if !want(key) {
            continue;
        }
        let n = o.decode_tokens.max(2);
        let ids = random_text(&config, batch, n, &device);
        let input = MultimodalInput::text(ids, None);
        // Each run: a prefill of `n` tokens (not timed), then `n` cached decode steps.
        let decode_once = || -> Result<f64> {
            let mut cache = model.new_cache();
            let prefill = model.prefill(&input, Some(&mut cache))?;
            let [b, s_len, _] = prefill.logits.dims();
            let mut next = prefill
                .logits
                .narrow(1, s_len - 1, 1)
                .argmax(2)
                .reshape([b, 1]);
            let _ = next.to_data();
            let started = Instant::now();
            for _ in 0..n {
                let logits = model.decode_step(next, None, &prefill.rope_deltas, &mut cache);
                next = logits.argmax(2).reshape([b, 1]);
                let _ = next.to_data();
            }
            Ok(started.elapsed().as_secs_f64())
        };
        for _ in 0..o.warmup {
            decode_once()?;
        }
        let decode = (0..o.runs)
            .map(|_| decode_once())
            .collect::<Result<Vec<f64>>>()?;
        let tokens = (batch * n) as f64;
        phases.push(Phase {
            name: name.into(),
            unit: "tokens",
            units: tokens,
            tokens: None,
            flops: 2.0 * s.lm * tokens,
            seconds: decode,
        });
    }

    print_table(o, &config, params, &phases);
    if let Some(path) = &o.json {
        std::fs::write(
            path,
            serde_json::to_string_pretty(&to_json(o, params, &phases))?,
        )
        .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(phases)
}

fn print_table(o: &BenchOptions, config: &NuriConfig, params: usize, phases: &[Phase]) {
    let peak = phases
        .iter()
        .find(|p| p.unit == "GFLOP")
        .map(|p| p.median() * 1e9);
    println!(
        "nuri bench: preset {} ({:.2}M parameters; LM {}×{}, ViT {}×{}, patch {}), device {}, {} warm-up + {} measured runs",
        o.preset,
        params as f64 / 1e6,
        config.text.num_hidden_layers,
        config.text.hidden_size,
        config.vision.depth,
        config.vision.embed_dim,
        config.vision.patch_size,
        o.device,
        o.warmup,
        o.runs
    );
    println!(
        "{:<22} {:>14} {:>22} {:>12} {:>8}",
        "phase", "median", "min – max", "GFLOP/s", "MFU"
    );
    for p in phases {
        let r = p.rates();
        let (lo, hi) = (r[0], r[r.len() - 1]);
        let mfu = match peak {
            Some(peak) if p.unit != "GFLOP" => format!("{:.1}%", 100.0 * p.flops_per_s() / peak),
            _ => "-".into(),
        };
        println!(
            "{:<22} {:>8.1} {:<5} {:>10.1} – {:<9.1} {:>12.2} {:>8}",
            p.name,
            p.median(),
            format!("{}/s", p.unit),
            lo,
            hi,
            p.flops_per_s() / 1e9,
            mfu
        );
        if let Some(tokens) = p.tokens {
            println!("{:<22} {:>8.1} tokens/s", "", p.median() * tokens / p.units);
        }
    }
    if let Some(mib) = peak_rss_mib() {
        println!("peak resident memory   {mib:.0} MiB");
    }
}

fn to_json(o: &BenchOptions, params: usize, phases: &[Phase]) -> Json {
    json!({
        "preset": o.preset,
        "device": o.device.to_string(),
        "parameters": params,
        "batch": o.batch,
        "image": o.image,
        "text_tokens": o.text_tokens,
        "prefill_tokens": o.prefill_tokens,
        "decode_tokens": o.decode_tokens,
        "peak_rss_mib": peak_rss_mib(),
        "phases": phases.iter().map(|p| {
            let r = p.rates();
            json!({
                "name": p.name,
                "unit": format!("{}/s", p.unit),
                "median": p.median(),
                "min": r[0],
                "max": r[r.len() - 1],
                "tokens_per_s": p.tokens.map(|t| p.median() * t / p.units),
                "gflop_per_s": p.flops_per_s() / 1e9,
                "seconds": p.seconds,
            })
        }).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_measures_every_phase_of_the_tiny_preset() {
        let options = BenchOptions {
            preset: "tiny".into(),
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
                "matmul 1024³ fp32",
                "train step",
                "vision encoder 224²",
                "vision encoder 448²",
                "prefill",
                "decode, batch 1",
                "decode, batch 8"
            ]
        );
        for p in &phases {
            assert_eq!(p.seconds.len(), 2, "{}", p.name);
            assert!(p.median() > 0.0 && p.flops > 0.0, "{}", p.name);
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
