//! Every model family through the command line, as a user runs it: `nuri train` from the
//! family's `config.json` with its tokenizer and real chat template, then `nuri generate`
//! (with an image for the vision families) and `nuri eval` on the exported checkpoint,
//! `nuri config` / `nuri convert` on it, and `nuri generate --quantize q8` / `nuri quantize`
//! (then `nuri generate` from the 4-bit checkpoint).

mod common;

use std::path::Path;

use common::{fixtures, nuri};

fn run_family(family: &str, tokenizer_family: &str, vision: bool) {
    let dir = std::env::temp_dir().join(format!("nuri-family-cli-{family}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let families = fixtures().join("families");
    let set = |key: &str, value: &Path| format!("{key}={:?}", value.display().to_string());
    let data = if vision {
        fixtures().join("train/tiny.jsonl")
    } else {
        std::fs::create_dir_all(&dir).expect("scratch");
        let path = dir.join("text.jsonl");
        std::fs::write(
            &path,
            "{\"id\": \"t1\", \"messages\": [{\"role\": \"user\", \"content\": \"하늘은 무슨 색인가요?\"}, {\"role\": \"assistant\", \"content\": \"파란색입니다.\"}]}\n\
             {\"id\": \"t2\", \"messages\": [{\"role\": \"user\", \"content\": \"Name a fruit.\"}, {\"role\": \"assistant\", \"content\": \"An apple.\"}]}\n",
        )
        .expect("data");
        path
    };
    let out = dir.join("run");
    let (ok, _, err) = nuri(&[
        "train",
        "--config",
        &fixtures()
            .join("../configs/train-tiny.toml")
            .display()
            .to_string(),
        "--set",
        &set("out_dir", &out),
        "--set",
        &set(
            "model.preset",
            &families.join(family).join("model/config.json"),
        ),
        "--set",
        &set(
            "model.tokenizer",
            &families.join(tokenizer_family).join("processor/checkpoint"),
        ),
        "--set",
        &set("data.train", &data),
        "--set",
        &set("data.val", &data),
        "--set",
        "steps=4",
        "--set",
        "eval_every=0",
    ]);
    assert!(ok, "{family}: train: {err}");

    let model = out.display().to_string();
    let mut args = vec!["generate", "--model", &model, "--max-new-tokens", "3"];
    let image = fixtures().join("images/rgb_odd.png").display().to_string();
    if vision {
        args.extend(["--image", &image]);
    }
    args.push("이 사진에 무엇이 있나요?");
    let (ok, _, err) = nuri(&args);
    assert!(ok, "{family}: generate: {err}");

    let report = dir.join("report.json");
    let (ok, table, err) = nuri(&[
        "eval",
        "--model",
        &model,
        "--data",
        &data.display().to_string(),
        "--report",
        &report.display().to_string(),
    ]);
    assert!(ok, "{family}: eval: {err}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report")).expect("json");
    assert!(json["n"].as_u64().expect("n") >= 2, "{family}: {table}");

    // The export is a checkpoint of the family that `nuri convert` reads strictly.
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("final/config.json")).expect("config.json"),
    )
    .expect("json");
    assert_eq!(config["model_type"], family);
    let converted = dir.join("converted");
    let (ok, _, err) = nuri(&[
        "convert",
        "--from",
        &out.join("final").display().to_string(),
        "--to",
        &converted.display().to_string(),
    ]);
    assert!(ok, "{family}: convert: {err}");

    // Quantized at load, and written quantized by `nuri quantize`, then loaded as it is.
    let (ok, _, err) = nuri(&[&args[..], &["--quantize", "q8"]].concat());
    assert!(ok, "{family}: generate --quantize q8: {err}");
    let quantized = dir.join("q4");
    let (ok, said, err) = nuri(&[
        "quantize",
        "--from",
        &out.join("final").display().to_string(),
        "--to",
        &quantized.display().to_string(),
        "--quantize",
        "q4",
    ]);
    assert!(ok, "{family}: quantize: {err}");
    assert!(said.contains("copied"), "{family}: {said}");
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(quantized.join("config.json")).expect("config.json"),
    )
    .expect("json");
    assert_eq!(config["quantization_config"]["quant_method"], "nuri");
    let q4 = quantized.display().to_string();
    let mut args = args.clone();
    args[2] = &q4;
    let (ok, _, err) = nuri(&args);
    assert!(ok, "{family}: generate from the q4 checkpoint: {err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn exaone4_5_trains_generates_and_evaluates() {
    run_family("exaone4_5", "exaone4_5", true);
}

#[test]
fn hyperclovax_vision_v2_trains_generates_and_evaluates() {
    run_family("hyperclovax_vision_v2", "hyperclovax_vision_v2", true);
}

#[test]
fn qwen2_5_vl_trains_generates_and_evaluates() {
    run_family("qwen2_5_vl", "qwen2_5_vl", true);
}

#[test]
fn exaone4_text_trains_generates_and_evaluates() {
    run_family("exaone4", "exaone4_5", false);
}

#[test]
fn the_config_command_prints_a_published_size() {
    let (ok, json, summary) = nuri(&["config", "--preset", "exaone-4.5-33b"]);
    assert!(ok, "{summary}");
    let config: serde_json::Value = serde_json::from_str(&json).expect("config.json");
    assert_eq!(config["model_type"], "exaone4_5");
    assert_eq!(config["vision_config"]["num_key_value_heads"], 8);
    assert!(summary.contains("33.81B parameters"), "{summary}");
    let (ok, _, err) = nuri(&["config", "--preset", "no-such-model"]);
    assert!(!ok);
    assert!(err.contains("exaone-4.0-1.2b"), "{err}");
}
