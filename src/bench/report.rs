//! Timing the phases and reporting them: a table, and JSON for `bench_torch.py --compare`.

use std::time::Instant;

use anyhow::Result;
use nuri_model::NuriConfig;
use serde_json::{Value as Json, json};

use super::BenchOptions;

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
    /// A decode phase's batch (tokens per step), for its share of the memory roofline.
    pub decode_batch: Option<usize>,
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

/// Peak resident memory of this process (Linux `VmHWM`), in MiB.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

pub(super) fn time_runs(
    warmup: usize,
    runs: usize,
    mut f: impl FnMut() -> Result<()>,
) -> Result<Vec<f64>> {
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

/// The measured streaming read bandwidth, in bytes/s.
fn bandwidth(phases: &[Phase]) -> Option<f64> {
    phases
        .iter()
        .find(|p| p.name == "memory read")
        .map(|p| p.median() * 1e9)
}

/// A decode phase's rate as a share of the roofline: steps/s over bandwidth ÷ bytes per step.
fn roofline_share(p: &Phase, bandwidth: Option<f64>, step_bytes: u64) -> Option<f64> {
    let (batch, bw) = (p.decode_batch?, bandwidth?);
    let steps_per_s = p.median() / batch as f64;
    Some(steps_per_s / (bw / step_bytes as f64))
}

pub(super) fn print_table(
    o: &BenchOptions,
    config: &NuriConfig,
    params: usize,
    step_bytes: u64,
    phases: &[Phase],
) {
    let peak = phases
        .iter()
        .find(|p| p.unit == "GFLOP")
        .map(|p| p.median() * 1e9);
    println!(
        "nuri bench: {} ({:.2}M parameters; LM {}×{}{}), device {}, {} warm-up + {} measured runs",
        o.model
            .as_ref()
            .map_or(format!("preset {}", o.preset), |m| m.display().to_string()),
        params as f64 / 1e6,
        config.text.num_hidden_layers,
        config.text.hidden_size,
        config.vision.as_ref().map_or(String::new(), |v| format!(
            ", ViT {}×{}, patch {}",
            v.depth, v.embed_dim, v.patch_size
        )),
        o.device,
        o.warmup,
        o.runs
    );
    println!(
        "{:<22} {:>14} {:>22} {:>12} {:>8} {:>9}",
        "phase", "median", "min – max", "GFLOP/s", "MFU", "roofline"
    );
    let bw = bandwidth(phases);
    for p in phases {
        let r = p.rates();
        let (lo, hi) = (r[0], r[r.len() - 1]);
        let mfu = match peak {
            Some(peak) if p.unit != "GFLOP" && p.flops > 0.0 => {
                format!("{:.1}%", 100.0 * p.flops_per_s() / peak)
            }
            _ => "-".into(),
        };
        let roof =
            roofline_share(p, bw, step_bytes).map_or("-".into(), |r| format!("{:.0}%", 100.0 * r));
        println!(
            "{:<22} {:>8.1} {:<5} {:>10.1} – {:<9.1} {:>12.2} {:>8} {:>9}",
            p.name,
            p.median(),
            format!("{}/s", p.unit),
            lo,
            hi,
            p.flops_per_s() / 1e9,
            mfu,
            roof
        );
        if let Some(tokens) = p.tokens {
            println!("{:<22} {:>8.1} tokens/s", "", p.median() * tokens / p.units);
        }
    }
    if let Some(bw) = bw {
        println!(
            "weights read per decode step {:.3} GB (dtype {:?}, quantized {}): roofline {:.2} steps/s at {:.1} GB/s",
            step_bytes as f64 / 1e9,
            o.dtype,
            o.quantize.map_or("no".to_string(), |q| format!("{q:?}")),
            bw / step_bytes as f64,
            bw / 1e9
        );
    }
    if let Some(mib) = peak_rss_mib() {
        println!("peak resident memory   {mib:.0} MiB");
    }
}

pub(super) fn to_json(o: &BenchOptions, params: usize, step_bytes: u64, phases: &[Phase]) -> Json {
    let bw = bandwidth(phases);
    json!({
        "preset": o.preset,
        "model": o.model.as_ref().map(|m| m.display().to_string()),
        "dtype": format!("{:?}", o.dtype),
        "quantize": o.quantize.map(|q| format!("{q:?}")),
        "decode_step_bytes": step_bytes,
        "bandwidth_bytes_per_s": bw,
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
                "roofline_share": roofline_share(p, bw, step_bytes),
                "seconds": p.seconds,
            })
        }).collect::<Vec<_>>(),
    })
}
