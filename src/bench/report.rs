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

pub(super) fn print_table(o: &BenchOptions, config: &NuriConfig, params: usize, phases: &[Phase]) {
    let peak = phases
        .iter()
        .find(|p| p.unit == "GFLOP")
        .map(|p| p.median() * 1e9);
    println!(
        "nuri bench: preset {} ({:.2}M parameters; LM {}×{}{}), device {}, {} warm-up + {} measured runs",
        o.preset,
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

pub(super) fn to_json(o: &BenchOptions, params: usize, phases: &[Phase]) -> Json {
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
