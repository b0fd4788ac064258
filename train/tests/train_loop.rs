//! Training end to end on the committed fixtures: the loss falls, bad samples are reported
//! with file and line, and a resumed run continues exactly where it stopped.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::Device;
use nuri_train::config::{BadSamplePolicy, DataConfig, ModelSource, OptimConfig};
use nuri_train::data::load_jsonl;
use nuri_train::{TrainConfig, TrainError, train};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

fn config(out: &Path, steps: usize) -> TrainConfig {
    TrainConfig {
        model: ModelSource {
            preset: Some("tiny".into()),
            checkpoint: None,
            tokenizer: Some(fixtures().join("processor/checkpoint")),
        },
        data: DataConfig {
            train: fixtures().join("train/tiny.jsonl"),
            max_pixels: Some(28 * 28 * 4),
            bucket_batches: 2,
            ..Default::default()
        },
        optim: OptimConfig {
            lr: 3e-3,
            lr_vision: 1e-3,
            lr_merger: 3e-3,
            warmup_steps: 3,
            ..Default::default()
        },
        out_dir: out.to_path_buf(),
        seed: 3,
        steps,
        batch_size: 4,
        grad_accum: 1,
        checkpoint_every: 5,
        keep_checkpoints: 2,
        eval_every: 0,
        device: "cpu".into(),
        gradient_checkpointing: false,
        devices: 1,
        lora: None,
        precision: Default::default(),
        max_minutes: None,
    }
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nuri-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn losses(out: &Path) -> Vec<f64> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .expect("metrics")
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["loss"]
                .as_f64()
                .expect("loss")
        })
        .collect()
}

#[test]
fn the_loss_falls_on_the_tiny_set() {
    let out = tmp("falls");
    let summary = train(&config(&out, 60), &[Device::flex()], false, &mut |l| {
        eprintln!("{l}")
    })
    .expect("trains");
    let l = losses(&out);
    assert_eq!(l.len(), 60);
    let first: f64 = l[..3].iter().sum::<f64>() / 3.0;
    let last: f64 = l[l.len() - 3..].iter().sum::<f64>() / 3.0;
    eprintln!(
        "loss {first:.3} -> {last:.3} ({:.0} tokens/s)",
        summary.tokens_per_second
    );
    assert!(last < first / 3.0, "loss fell only from {first} to {last}");
    // The curves plot to a PNG.
    let png = nuri_train::plot::plot_run(&out).expect("plots");
    let img = image::open(&png).expect("a PNG");
    assert_eq!((img.width(), img.height()), (900, 600));
    assert!(nuri_train::plot::plot_run(&out.join("nowhere")).is_err());
    // The exported model is a complete Hugging Face checkpoint directory.
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "chat_template.jinja",
    ] {
        assert!(summary.final_dir.join(file).is_file(), "{file}");
    }
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn bad_samples_are_reported_with_file_and_line() {
    let path = fixtures().join("train/bad.jsonl");
    let (good, bad) = load_jsonl(&path, None, false).expect("reads");
    assert_eq!(good.len(), 3, "lines 1, 5 (decoded later) and 8");
    let reasons: Vec<String> = bad.iter().map(ToString::to_string).collect();
    for (line, needle) in [
        (2, "invalid JSON"),
        (3, "no_such.png"),
        (4, "2 <image> tags but 1 images"),
        (6, "unknown speaker `robot`"),
        (7, "no assistant turn"),
    ] {
        let origin = format!("bad.jsonl:{line}: ");
        assert!(
            reasons
                .iter()
                .any(|r| r.contains(&origin) && r.contains(needle)),
            "line {line} ({needle}) not in {reasons:#?}"
        );
    }
    let err = load_jsonl(&path, None, true).unwrap_err();
    assert!(err.to_string().contains("bad.jsonl:2"), "{err}");

    // Training skips (and reports) the undecodable image, or stops on it.
    let out = tmp("bad");
    let mut cfg = config(&out, 3);
    cfg.data.train = path.clone();
    let mut lines = Vec::new();
    let summary = train(&cfg, &[Device::flex()], false, &mut |l| {
        lines.push(l.to_string())
    })
    .expect("skips");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("bad.jsonl:5") && l.contains("not_an_image.png")),
        "{lines:#?}"
    );
    assert!(summary.bad_samples >= 6, "{}", summary.bad_samples);
    cfg.data.on_bad_sample = BadSamplePolicy::Fail;
    cfg.out_dir = tmp("bad-fail");
    let err = train(&cfg, &[Device::flex()], false, &mut |_| {}).unwrap_err();
    assert!(
        matches!(err, TrainError::BadSample(_)) && err.to_string().contains("bad.jsonl:2"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(out);
    let _ = std::fs::remove_dir_all(cfg.out_dir);
}

#[test]
fn a_resumed_run_equals_an_uninterrupted_one() {
    let whole = tmp("whole");
    train(&config(&whole, 10), &[Device::flex()], false, &mut |_| {}).expect("trains");

    // The same run, stopped after the checkpoint at step 5 (its later checkpoint removed, as
    // if it had been killed before writing it), then resumed.
    let split = tmp("split");
    train(&config(&split, 10), &[Device::flex()], false, &mut |_| {}).expect("trains");
    std::fs::remove_dir_all(split.join("checkpoints/step-00000010")).expect("rm");
    std::fs::remove_dir_all(split.join("final")).expect("rm");
    // (metrics.jsonl still holds steps 6..10: resuming drops what came after the checkpoint.)
    // A torn newer checkpoint must be passed over.
    let torn = split.join("checkpoints/step-00000009");
    std::fs::create_dir_all(&torn).expect("mkdir");
    std::fs::write(torn.join("state.json"), "{\"format\": 1, ").expect("write");
    let mut lines = Vec::new();
    let summary = train(&config(&split, 10), &[Device::flex()], true, &mut |l| {
        lines.push(l.to_string())
    })
    .expect("resumes");
    assert!(
        summary
            .resumed_from
            .is_some_and(|p| p.ends_with("step-00000005")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("skipping corrupt checkpoint") && l.contains("step-00000009")),
        "{lines:#?}"
    );
    assert_eq!(losses(&whole), losses(&split));
    let a = std::fs::read(whole.join("final/model.safetensors")).expect("a");
    let b = std::fs::read(split.join("final/model.safetensors")).expect("b");
    let (a, b) = (
        safetensors::SafeTensors::deserialize(&a).expect("a"),
        safetensors::SafeTensors::deserialize(&b).expect("b"),
    );
    let mut names = a.names();
    names.sort();
    assert_eq!(names.len(), b.names().len());
    for name in names {
        let (x, y) = (a.tensor(name).expect("a"), b.tensor(name).expect("b"));
        assert_eq!(
            (x.shape(), x.data()),
            (y.shape(), y.data()),
            "{name} differs"
        );
    }
    let _ = std::fs::remove_dir_all(whole);
    let _ = std::fs::remove_dir_all(split);
}

/// Regression: relative media paths in a JSONL file named by a relative path were joined to
/// the file's folder twice.
#[test]
fn relative_jsonl_paths_resolve_once() {
    // Tests run in the package directory (train/).
    let (good, bad) =
        load_jsonl(Path::new("../fixtures/train/tiny.jsonl"), None, false).expect("reads");
    assert!(bad.is_empty(), "{bad:#?}");
    assert_eq!(good.len(), 8);
}

#[test]
fn a_non_finite_loss_stops_the_run_and_keeps_the_last_checkpoint() {
    let out = tmp("nan");
    let mut cfg = config(&out, 20);
    cfg.optim = OptimConfig {
        lr: 1e12,
        lr_vision: 1e12,
        lr_merger: 1e12,
        warmup_steps: 0,
        max_grad_norm: 0.0,
        ..Default::default()
    };
    cfg.checkpoint_every = 1;
    let err = train(&cfg, &[Device::flex()], false, &mut |_| {}).unwrap_err();
    let message = err.to_string();
    let TrainError::NonFinite { step, .. } = err else {
        panic!("expected a non-finite stop, got {message}");
    };
    assert!(step >= 2, "the first step starts from finite weights");
    assert!(
        message.contains("resume") && message.contains(&format!("step {step}")),
        "{message}"
    );
    // Every checkpoint written is whole, and the newest is the step before the failure.
    let newest = nuri_train::checkpoint::list(&out.join("checkpoints"));
    assert_eq!(newest.first().map(|c| c.0), Some(step - 1));
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn lora_trains_adapters_only_and_merges_them_on_export() {
    let out = tmp("lora");
    let mut cfg = config(&out, 10);
    cfg.lora = Some(nuri_train::config::LoraSettings {
        rank: 4,
        alpha: 8.0,
        ..Default::default()
    });
    cfg.optim.lr = 1e-2;
    cfg.optim.lr_vision = 0.0;
    cfg.optim.lr_merger = 0.0;
    let summary = train(&cfg, &[Device::flex()], false, &mut |_| {}).expect("trains");
    assert!(summary.last_loss < summary.first_loss, "{summary:?}");
    // Resuming a LoRA run from its checkpoint works too.
    cfg.steps = 12;
    let resumed = train(&cfg, &[Device::flex()], true, &mut |_| {}).expect("resumes");
    assert!(resumed.resumed_from.is_some());
    let bytes = std::fs::read(resumed.final_dir.join("model.safetensors")).expect("weights");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    // Plain Qwen2-VL tensor names and shapes: the adapters are merged, not exported.
    assert!(
        st.names().iter().all(|n| !n.contains("lora")),
        "{:?}",
        st.names()
    );
    let q = st
        .tensor("model.layers.0.self_attn.q_proj.weight")
        .expect("q_proj");
    assert_eq!(q.shape(), &[64, 64]);

    // The run's initial weights, exported: the adapted projections differ from them (the
    // trained adapters were merged), the frozen rest does not.
    let base_out = tmp("lora-base");
    let device = Device::flex().autodiff();
    let (_, base_model, nuri) = nuri_train::setup::init_model(&cfg, &device).expect("init");
    nuri_model::save_pretrained(&base_model.valid().materialize(), &nuri, &base_out).expect("save");
    let base_bytes = std::fs::read(base_out.join("model.safetensors")).expect("weights");
    let base_st = safetensors::SafeTensors::deserialize(&base_bytes).expect("safetensors");
    let data = |st: &safetensors::SafeTensors, n: &str| st.tensor(n).expect(n).data().to_vec();
    let q_name = "model.layers.0.self_attn.q_proj.weight";
    assert_ne!(
        data(&st, q_name),
        data(&base_st, q_name),
        "q_proj not merged"
    );
    let norm = "model.layers.0.input_layernorm.weight";
    assert_eq!(
        data(&st, norm),
        data(&base_st, norm),
        "a frozen weight changed"
    );
    let _ = std::fs::remove_dir_all(out);
    let _ = std::fs::remove_dir_all(base_out);
}

#[test]
fn data_parallel_and_gradient_checkpointing_train_the_same_model() {
    let run = |name: &str, devices: usize, checkpointing: bool| {
        let out = tmp(name);
        let mut cfg = config(&out, 6);
        cfg.gradient_checkpointing = checkpointing;
        let devices = vec![Device::flex(); devices];
        train(&cfg, &devices, false, &mut |_| {}).expect("trains");
        let l = losses(&out);
        let _ = std::fs::remove_dir_all(out);
        l
    };
    let one = run("dp1", 1, false);
    // Two CPU "devices": the batch is split in two shards whose gradients are summed.
    let two = run("dp2", 2, false);
    let checkpointed = run("ckpt", 1, true);
    for (name, other) in [("2 devices", &two), ("checkpointing", &checkpointed)] {
        for (a, b) in one.iter().zip(other.iter()) {
            assert!(
                (a - b).abs() < 1e-4 * a.abs().max(1.0),
                "{name}: {one:?} vs {other:?}"
            );
        }
    }
}

#[test]
fn bf16_mixed_precision_trains_like_fp32() {
    let run = |name: &str, precision| {
        let out = tmp(name);
        let mut cfg = config(&out, 20);
        cfg.precision = precision;
        train(&cfg, &[Device::flex()], false, &mut |_| {}).expect("trains");
        let l = losses(&out);
        let _ = std::fs::remove_dir_all(out);
        l
    };
    let fp32 = run("fp32", nuri_train::config::Precision::Fp32);
    let bf16 = run("bf16", nuri_train::config::Precision::Bf16);
    // Same weights at step 1: the losses agree to bf16's precision; and bf16 learns too.
    assert!(
        (fp32[0] - bf16[0]).abs() < 0.02 * fp32[0],
        "{fp32:?} vs {bf16:?}"
    );
    assert!(bf16[19] < bf16[0] * 0.7, "{bf16:?}");
}

/// `model.preset` may name a Hugging Face `config.json`: the architecture it describes, drawn
/// fresh, the same as the preset it was exported from; a missing file is an error naming it.
#[test]
fn a_config_json_path_is_a_preset() {
    let dir = tmp("config-preset");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.json");
    let tiny = nuri_model::NuriConfig::tiny();
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&nuri_model::hf_config_json(&tiny)).unwrap(),
    )
    .unwrap();
    let device = Device::flex();
    let mut from_file = config(&dir, 1);
    from_file.model.preset = Some(path.display().to_string());
    let (_, model, nuri) = nuri_train::setup::build(&from_file, &device).expect("builds");
    let (_, preset_model, preset) =
        nuri_train::setup::build(&config(&dir, 1), &device).expect("builds");
    assert_eq!(nuri, preset);
    assert_eq!(model.num_params(), preset_model.num_params());

    from_file.model.preset = Some(dir.join("missing.json").display().to_string());
    let err = match nuri_train::setup::build(&from_file, &device) {
        Ok(_) => panic!("a missing file must be an error"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("missing.json"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
