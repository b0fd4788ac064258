//! Every model family trains on the CPU: fine-tuning a tiny model of the family's
//! architecture (`fixtures/families/<family>/model/config.json`) with the family's tokenizer
//! and real chat template (`fixtures/families/<family>/processor/checkpoint`) lowers the
//! loss, with the vision tower frozen; LoRA trains adapters only and the export merges them
//! into a checkpoint of the same family.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use nuri_train::config::{DataConfig, LoraSettings, ModelSource, OptimConfig};
use nuri_train::{TrainConfig, train};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nuri-train-family-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A text-only conversation file for the text-only families.
fn text_data(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).expect("scratch");
    let path = dir.join("text.jsonl");
    let lines = [
        r#"{"messages": [{"role": "user", "content": "What color is the sky?"}, {"role": "assistant", "content": "The sky is blue."}]}"#,
        r#"{"messages": [{"role": "user", "content": "하늘은 무슨 색인가요?"}, {"role": "assistant", "content": "하늘은 파란색입니다."}]}"#,
        r#"{"messages": [{"role": "user", "content": "Name a fruit."}, {"role": "assistant", "content": "An apple."}]}"#,
        r#"{"messages": [{"role": "user", "content": "과일 하나를 말해 주세요."}, {"role": "assistant", "content": "사과입니다."}]}"#,
    ];
    std::fs::write(&path, lines.join("\n")).expect("write");
    path
}

fn run(family: &str, tokenizer_family: &str, lora: bool) -> nuri_train::RunSummary {
    let out = tmp(&format!("{family}-{lora}"));
    let vision = nuri_model::Family::from_model_type(family)
        .expect("a family")
        .has_vision();
    let train_file = if vision {
        fixtures().join("train/tiny.jsonl")
    } else {
        text_data(&out.join("data"))
    };
    let config = TrainConfig {
        model: ModelSource {
            preset: Some(
                fixtures()
                    .join("families")
                    .join(family)
                    .join("model/config.json")
                    .display()
                    .to_string(),
            ),
            checkpoint: None,
            tokenizer: Some(
                fixtures()
                    .join("families")
                    .join(tokenizer_family)
                    .join("processor/checkpoint"),
            ),
        },
        data: DataConfig {
            train: train_file,
            max_pixels: Some(28 * 28 * 4),
            bucket_batches: 2,
            ..Default::default()
        },
        optim: OptimConfig {
            lr: if lora { 1e-2 } else { 3e-3 },
            lr_vision: 0.0,
            lr_merger: if lora { 0.0 } else { 3e-3 },
            warmup_steps: 2,
            ..Default::default()
        },
        out_dir: out.clone(),
        seed: 3,
        steps: 12,
        batch_size: 4,
        grad_accum: 1,
        checkpoint_every: 100,
        keep_checkpoints: 1,
        eval_every: 0,
        device: "cpu".into(),
        gradient_checkpointing: false,
        devices: 1,
        lora: lora.then(|| LoraSettings {
            rank: 4,
            alpha: 8.0,
            ..Default::default()
        }),
        precision: Default::default(),
        max_minutes: None,
    };
    let summary = train(&config, &[Device::flex()], false, &mut |_| {})
        .unwrap_or_else(|e| panic!("{family}: {e}"));
    assert!(
        summary.last_loss < summary.first_loss,
        "{family} (lora {lora}): loss {} -> {}",
        summary.first_loss,
        summary.last_loss
    );
    // The export is a checkpoint of the same family, adapters merged.
    let (exported, _) = nuri_model::load_pretrained(
        &summary.final_dir,
        &Device::flex(),
        burn::tensor::DType::F32,
    )
    .unwrap_or_else(|e| panic!("{family}: the export loads: {e}"));
    assert_eq!(exported.family.model_type(), family);
    let bytes = std::fs::read(summary.final_dir.join("model.safetensors")).expect("weights");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    assert!(st.names().iter().all(|n| !n.contains("lora")), "{family}");
    let _ = std::fs::remove_dir_all(out);
    summary
}

#[test]
fn qwen2_5_vl_trains() {
    run("qwen2_5_vl", "qwen2_5_vl", false);
}

#[test]
fn exaone4_5_trains_and_merges_lora() {
    run("exaone4_5", "exaone4_5", false);
    run("exaone4_5", "exaone4_5", true);
}

#[test]
fn hyperclovax_vision_v2_trains_and_merges_lora() {
    run("hyperclovax_vision_v2", "hyperclovax_vision_v2", false);
    run("hyperclovax_vision_v2", "hyperclovax_vision_v2", true);
}

#[test]
fn text_families_train() {
    run("exaone4", "exaone4_5", false);
    run("hyperclovax", "hyperclovax_vision_v2", true);
}
