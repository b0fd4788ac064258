//! End to end through the command line: `nuri train` memorizes the tiny fixture set, then
//! `nuri generate` and `nuri eval` answer from the exported model.

mod common;

use common::{fixtures, nuri};

#[test]
fn train_then_generate_and_eval() {
    let dir = std::env::temp_dir().join(format!("nuri-eval-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out_dir = format!("out_dir={:?}", dir.display().to_string());
    let tokenizer = format!(
        "model.tokenizer={:?}",
        fixtures()
            .join("processor/checkpoint")
            .display()
            .to_string()
    );
    let train = format!(
        "data.train={:?}",
        fixtures().join("train/tiny.jsonl").display().to_string()
    );
    let config = fixtures().join("../configs/train-tiny.toml");
    let (ok, _, err) = nuri(&[
        "train",
        "--config",
        &config.display().to_string(),
        "--set",
        &out_dir,
        "--set",
        &tokenizer,
        "--set",
        &train,
        "--set",
        "steps=120",
        "--set",
        "eval_every=0",
    ]);
    assert!(ok, "{err}");

    let image = fixtures().join("images/rgb_odd.png");
    let (ok, answer, err) = nuri(&[
        "generate",
        "--model",
        &dir.display().to_string(),
        "--image",
        &image.display().to_string(),
        "What is in this picture?",
    ]);
    assert!(ok, "{err}");
    assert_eq!(
        answer.trim(),
        "A red square moves across a striped background.",
        "{err}"
    );

    let report = dir.join("report.json");
    let (ok, table, err) = nuri(&[
        "eval",
        "--model",
        &dir.display().to_string(),
        "--data",
        &fixtures().join("train/tiny.jsonl").display().to_string(),
        "--category-field",
        "id",
        "--report",
        &report.display().to_string(),
    ]);
    assert!(ok, "{err}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report")).expect("json");
    assert_eq!(json["n"], 8, "{table}");
    assert!(json["exact_match"].as_f64().expect("em") >= 0.75, "{table}");
    assert_eq!(
        json["categories"].as_object().expect("categories").len(),
        8,
        "{table}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
