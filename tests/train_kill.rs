//! `nuri train` killed with SIGKILL mid-run and resumed gives the same loss curve and the
//! same final weights as an uninterrupted run (CPU).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn write_config(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).expect("mkdir");
    let config = serde_json::json!({
        "model": {"preset": "tiny", "tokenizer": fixtures().join("processor/checkpoint")},
        "data": {"train": fixtures().join("train/tiny.jsonl"), "max_pixels": 3136, "bucket_batches": 2},
        "optim": {"lr": 3e-3, "warmup_steps": 3},
        "out_dir": dir.join("run"),
        "seed": 11,
        "steps": 80,
        "batch_size": 4,
        "checkpoint_every": 4,
        "keep_checkpoints": 2
    });
    let path = dir.join("run.json");
    std::fs::write(&path, config.to_string()).expect("write");
    path
}

fn nuri(config: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nuri"));
    cmd.arg("train").arg("--config").arg(config).args(extra);
    cmd
}

fn losses(run: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .expect("metrics")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            (
                v["step"].as_u64().expect("step"),
                v["loss"].as_f64().expect("loss"),
            )
        })
        .collect()
}

fn tensors(path: &Path) -> Vec<(String, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).expect("weights");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let mut out: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| (name, view.shape().to_vec(), view.data().to_vec()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn killed_and_resumed_equals_uninterrupted() {
    let base = std::env::temp_dir().join(format!("nuri-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);

    let whole = write_config(&base.join("whole"));
    let status = nuri(&whole, &[]).status().expect("runs");
    assert!(status.success());

    let split = write_config(&base.join("split"));
    let run = base.join("split/run");
    let mut child = nuri(&split, &[]).spawn().expect("spawns");
    // Kill it once a checkpoint past the first exists (at whatever point it then is).
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let done = std::fs::read_dir(run.join("checkpoints"))
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().as_ref() >= "step-00000008")
            })
            .unwrap_or(false);
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "no checkpoint appeared");
        assert!(
            child.try_wait().expect("wait").is_none(),
            "finished before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    assert!(
        !run.join("final").exists(),
        "the killed run must not have finished"
    );
    let status = nuri(&split, &["--resume"]).status().expect("runs");
    assert!(status.success());

    assert_eq!(
        losses(&base.join("whole/run")),
        losses(&run),
        "loss curves differ"
    );
    assert!(
        tensors(&base.join("whole/run/final/model.safetensors"))
            == tensors(&run.join("final/model.safetensors")),
        "final weights differ"
    );
    let _ = std::fs::remove_dir_all(base);
}
