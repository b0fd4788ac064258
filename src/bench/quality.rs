//! `nuri bench --model DIR --quality DATA.jsonl`: how far the kept dtypes and quantizations
//! are from the f32 model, on a dataset's answers (teacher-forced, as training scores them).
//! For bf16, q8 and q4 against f32, over every answer token: the perplexity and its change,
//! how often the most likely token is f32's (top-1 agreement: where greedy decoding would
//! part), and the per-token logit error (largest absolute difference over the vocabulary,
//! mean and max over tokens).

use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::tensor::{DType, Device};
use nuri_kernels::quant::Scheme;
use nuri_model::{LoadOptions, Quantize, load_pretrained_with};
use nuri_processor::Processor;
use nuri_train::collate::{EncodeOptions, IGNORE, TurnMarks, encode};

/// The answers' positions of one sample: the logits row that predicts each answer token.
struct Sample {
    input: nuri_processor::ProcessorOutput,
    /// (row, target token)
    targets: Vec<(usize, usize)>,
}

/// One variant's logits at every answer position, `[tokens][vocab]` flattened.
struct Scores {
    logits: Vec<f32>,
    vocab: usize,
}

fn scores(model: &nuri_model::NuriModel, samples: &[Sample], device: &Device) -> Result<Scores> {
    let mut logits = Vec::new();
    let mut vocab = 0;
    for s in samples {
        let out = model.prefill(&s.input.to_model_input(device), None)?.logits;
        let [_, _, v] = out.dims();
        vocab = v;
        let all = out
            .cast(DType::F32)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap_or_default();
        for &(row, _) in &s.targets {
            logits.extend_from_slice(&all[row * v..(row + 1) * v]);
        }
    }
    Ok(Scores { logits, vocab })
}

/// Mean negative log-likelihood of the targets.
fn nll(s: &Scores, targets: &[usize]) -> f64 {
    let total: f64 = s
        .logits
        .chunks(s.vocab)
        .zip(targets)
        .map(|(row, &t)| {
            let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let sum: f64 = row.iter().map(|&v| f64::from(v - max).exp()).sum();
            f64::from(max) + sum.ln() - f64::from(row[t])
        })
        .sum();
    total / targets.len().max(1) as f64
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
            if v > bv { (i, v) } else { (bi, bv) }
        })
        .0
}

/// One row of the table.
#[derive(Debug, Clone)]
pub struct QualityRow {
    pub name: String,
    pub perplexity: f64,
    /// The fraction of answer tokens whose most likely token is f32's.
    pub top1: f64,
    /// The per-token largest logit difference from f32, mean and max over the tokens.
    pub logit_err_mean: f64,
    pub logit_err_max: f64,
}

/// Prints the table and returns its rows.
pub fn run(dir: &Path, data: &Path, limit: usize, device: &Device) -> Result<Vec<QualityRow>> {
    let processor = Processor::from_dir(dir)
        .with_context(|| format!("loading the processor of {}", dir.display()))?;
    let marks = TurnMarks::of(&processor)?;
    let (loaded, _) = nuri_train::data::load_jsonl(data, None, false)?;
    let options = EncodeOptions {
        last_turn_only: true,
        max_seq_len: 8192,
        train_on_reasoning: true,
    };
    let mut samples = Vec::new();
    for sample in loaded.iter().take(limit) {
        let Ok(encoded) = encode(&processor, &marks, sample, options) else {
            continue;
        };
        let targets = (1..encoded.labels.len())
            .filter(|&t| encoded.labels[t] != IGNORE)
            .map(|t| (t - 1, encoded.labels[t] as usize))
            .collect();
        samples.push(Sample {
            input: encoded.out,
            targets,
        });
    }
    if samples.is_empty() {
        bail!("{}: no usable sample with an answer", data.display());
    }
    let targets: Vec<usize> = samples
        .iter()
        .flat_map(|s| s.targets.iter().map(|&(_, t)| t))
        .collect();
    let on_cpu = nuri_kernels::on_flex(device);
    let q = |scheme| {
        Some(Quantize {
            scheme,
            vision: false,
        })
    };
    let mut variants = vec![
        ("f32", LoadOptions::all(DType::F32)),
        ("bf16", crate::cli::load_dtypes(DType::BF16, device)),
    ];
    if on_cpu {
        variants.push((
            "q8",
            crate::cli::load_dtypes(DType::BF16, device).with_quantize(q(Scheme::Q8)),
        ));
        variants.push((
            "q4",
            crate::cli::load_dtypes(DType::BF16, device).with_quantize(q(Scheme::Q4)),
        ));
    }
    let mut reference: Option<Scores> = None;
    let mut rows = Vec::new();
    println!(
        "quality on {} ({} samples, {} answer tokens), against f32:",
        data.display(),
        samples.len(),
        targets.len()
    );
    println!(
        "{:<6} {:>10} {:>8} {:>10} {:>14} {:>13}",
        "", "perplexity", "Δ", "top-1 =", "logit err mean", "logit err max"
    );
    for (name, options) in variants {
        let (_, model, _) = load_pretrained_with(dir, device, options)
            .with_context(|| format!("loading {} as {name}", dir.display()))?;
        let s = scores(&model, &samples, device)?;
        let ppl = nll(&s, &targets).exp();
        let (agree, mean, max) = match &reference {
            None => (1.0, 0.0, 0.0),
            Some(r) => {
                let (mut agree, mut sum, mut max) = (0usize, 0f64, 0f64);
                for (a, b) in s.logits.chunks(s.vocab).zip(r.logits.chunks(r.vocab)) {
                    agree += usize::from(argmax(a) == argmax(b));
                    let err = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
                    sum += f64::from(err);
                    max = max.max(f64::from(err));
                }
                let n = targets.len() as f64;
                (agree as f64 / n, sum / n, max)
            }
        };
        let base = rows.first().map_or(ppl, |r: &QualityRow| r.perplexity);
        println!(
            "{name:<6} {ppl:>10.4} {:>+8.4} {:>9.1}% {mean:>14.4} {max:>13.4}",
            ppl - base,
            100.0 * agree
        );
        rows.push(QualityRow {
            name: name.to_string(),
            perplexity: ppl,
            top1: agree,
            logit_err_mean: mean,
            logit_err_max: max,
        });
        if reference.is_none() {
            reference = Some(s);
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a small model of the tiny training config and the fixture conversations: f32 is its
    /// own reference, every form's perplexity is finite and near it, and q4 strays more than q8.
    #[test]
    fn each_form_is_scored_against_f32() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        let dir = std::env::temp_dir().join(format!("nuri-quality-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let tokenizer = fixtures.join("processor/checkpoint");
        let config = nuri_train::TrainConfig::load(
            &fixtures.join("../configs/train-tiny.toml"),
            &[format!(
                "model.tokenizer={:?}",
                tokenizer.display().to_string()
            )],
        )
        .expect("the tiny training config");
        let device = Device::flex();
        let (_, model, nuri) = nuri_train::setup::init_model(&config, &device).expect("model");
        nuri_model::save_pretrained(&model, &nuri, &dir).expect("export");
        for file in std::fs::read_dir(&tokenizer).expect("tokenizer dir") {
            let file = file.expect("entry").path();
            std::fs::copy(&file, dir.join(file.file_name().expect("name"))).expect("copy");
        }
        let rows = run(&dir, &fixtures.join("train/tiny.jsonl"), 8, &device).expect("scored");
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["f32", "bf16", "q8", "q4"]);
        assert_eq!((rows[0].top1, rows[0].logit_err_max), (1.0, 0.0));
        for r in &rows {
            assert!(r.perplexity.is_finite() && r.perplexity > 1.0, "{r:?}");
            assert!(
                (r.perplexity / rows[0].perplexity - 1.0).abs() < 0.05,
                "{r:?}"
            );
        }
        assert!(rows[3].logit_err_mean > rows[2].logit_err_mean, "{rows:?}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
