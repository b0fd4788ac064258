//! The quickstart, shortened: data, tokenizer, training from scratch, greedy evaluation.
//! The whole path runs on every change; the color family must be learned clearly above
//! chance and the loss must fall.

use nuri::quickstart::{QuickstartOptions, run};

#[test]
fn a_short_quickstart_learns_colors() {
    let out = std::env::temp_dir().join(format!("nuri-quickstart-test-{}", std::process::id()));
    let options = QuickstartOptions {
        out: out.clone(),
        level: 1,
        minutes: Some(30.0),
        steps: Some(350),
        seed: 3,
        train: Some(3000),
        // Color asked in nearly every conversation (first or as a follow-up).
        turns: 3,
        test: 30,
        batch_size: 32,
        lr: 3e-4,
        lr_vision: None,
        eval_every: 0,
        vocab_size: 768,
        device: nuri::DeviceChoice::Cpu,
        eval_limit: 0,
    };
    let report = run(&options).expect("the quickstart runs");
    assert!(
        report.last_loss < 0.5 * report.first_loss,
        "the loss did not fall: {} -> {}",
        report.first_loss,
        report.last_loss
    );
    // Both languages together (60 questions; chance is 1 in 6). This run answers all 60
    // (350 steps of batch 32 at 3e-4, about 7 min in the test profile on 2 cores).
    let test = &report.splits["test"];
    let cells: Vec<_> = ["en", "ko"]
        .iter()
        .map(|lang| &test[&("color".to_string(), lang.to_string())])
        .collect();
    let right: usize = cells.iter().map(|c| c.right).sum();
    let total: usize = cells.iter().map(|c| c.total).sum();
    assert_eq!(total, 60);
    let chance = cells[0].chance();
    assert!(
        right as f64 / total as f64 >= 0.8 && chance < 0.2,
        "color: {right}/{total} right vs chance {:.1}%",
        100.0 * chance
    );
    // The test split as a VLMEvalKit-style multiple-choice TSV, asked through
    // `nuri eval --benchmark`: the harness measures what the exact-match table does.
    let tsv = report.benchmark.as_ref().expect("the TSV check ran");
    let (right, total) = test
        .values()
        .fold((0, 0), |a, c| (a.0 + c.right, a.1 + c.total));
    assert_eq!(tsv.n, total);
    assert!(
        (tsv.accuracy - right as f64 / total as f64).abs() < 1e-12,
        "benchmark TSV {:.4} vs exact match {right}/{total}",
        tsv.accuracy
    );
    assert!(out.join("eval-test-tsv/report.md").is_file());
    // The model directory is complete and loads as a Hugging Face checkpoint.
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "preprocessor_config.json",
    ] {
        assert!(report.model_dir.join(file).is_file(), "{file} missing");
    }
    assert!(out.join("report.json").is_file());
    std::fs::remove_dir_all(&out).ok();
}
