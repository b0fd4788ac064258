//! Checkpoints are never all lost (issue 16, item 6). The newest checkpoint is corrupted in
//! each way a crash or a disk can corrupt it; resuming passes it over (and sets it aside as
//! `*.corrupt`), the resumed run writes its next checkpoint and prunes with
//! `keep_checkpoints = 1`, and a whole checkpoint is left every time.

use std::path::{Path, PathBuf};

use burn::optim::{AdamWConfig, ModuleOptimizer};
use burn::tensor::Device;
use nuri_model::NuriModel;
use nuri_train::TrainConfig;
use nuri_train::checkpoint::{TrainState, list, load_latest, save};
use serde_json::json;

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nuri-ckpt-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn config(out: &Path) -> TrainConfig {
    let tokenizer = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/processor/checkpoint");
    serde_json::from_value(json!({
        "model": {"preset": "tiny", "tokenizer": tokenizer},
        "data": {"train": "data.jsonl"},
        "out_dir": out,
        "steps": 100,
    }))
    .expect("a valid config")
}

fn model(config: &TrainConfig) -> NuriModel {
    let device = Device::flex().autodiff();
    nuri_train::setup::init_model(config, &device)
        .expect("the tiny model")
        .1
}

fn optim() -> ModuleOptimizer {
    AdamWConfig::new().init()
}

fn save_at(dir: &Path, config: &TrainConfig, step: usize, keep: usize) -> PathBuf {
    let state = TrainState {
        step,
        ..Default::default()
    };
    save(dir, &model(config), &optim(), &state, config, keep).expect("saves")
}

fn edit(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(path).expect("read");
    f(&mut bytes);
    std::fs::write(path, bytes).expect("write");
}

/// Rewrites `state.json`'s checksum list.
fn edit_sums(ckpt: &Path, f: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let path = ckpt.join("state.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
    f(state["files"].as_object_mut().expect("a checksum list"));
    std::fs::write(&path, state.to_string()).expect("write");
}

fn flip_middle_byte(bytes: &mut [u8]) {
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
}

type Corruption = (&'static str, fn(&Path));

/// The ways the newest checkpoint is broken.
const CORRUPTIONS: [Corruption; 7] = [
    ("truncated weights", |c| {
        edit(&c.join("model.bpk"), |b| b.truncate(b.len() / 2))
    }),
    ("a flipped byte in the optimizer state", |c| {
        edit(&c.join("optim.bpk"), |b| flip_middle_byte(b))
    }),
    ("missing state.json", |c| {
        std::fs::remove_file(c.join("state.json")).expect("rm")
    }),
    ("torn state.json", |c| {
        edit(&c.join("state.json"), |b| b.truncate(b.len() / 3))
    }),
    ("an empty checksum list over flipped weights", |c| {
        edit_sums(c, |files| files.clear());
        edit(&c.join("model.bpk"), |b| flip_middle_byte(b));
    }),
    (
        "a checksum list without the weights, over flipped weights",
        |c| {
            edit_sums(c, |files| {
                files.remove("model.bpk");
            });
            edit(&c.join("model.bpk"), |b| flip_middle_byte(b));
        },
    ),
    ("missing weights", |c| {
        std::fs::remove_file(c.join("model.bpk")).expect("rm")
    }),
];

#[test]
fn every_corrupt_resume_prune_sequence_leaves_a_whole_checkpoint() {
    for (what, corrupt) in CORRUPTIONS {
        let out = tmp("sequence");
        let dir = out.join("checkpoints");
        let config = config(&out);
        save_at(&dir, &config, 10, 2);
        let newest = save_at(&dir, &config, 20, 2);
        corrupt(&newest);
        // A run killed while writing step 30 leaves its temporary directory behind.
        std::fs::create_dir_all(dir.join(".tmp-step-00000030")).expect("mkdir");

        let restored = load_latest(&dir, model(&config), optim())
            .unwrap_or_else(|e| panic!("{what}: no checkpoint resumed: {e}"));
        assert_eq!(restored.state.step, 10, "{what}");
        assert_eq!(restored.skipped.len(), 1, "{what}");
        let (set_aside, why) = &restored.skipped[0];
        assert!(
            set_aside.ends_with("step-00000020.corrupt") && set_aside.is_dir(),
            "{what}: {} ({why})",
            set_aside.display()
        );
        assert_eq!(
            list(&dir).iter().map(|c| c.0).collect::<Vec<_>>(),
            [10],
            "{what}"
        );

        // The resumed run checkpoints its next step and prunes to one checkpoint.
        let fresh = save_at(&dir, &config, 11, 1);
        assert_eq!(list(&dir), [(11, fresh)], "{what}");
        let again = load_latest(&dir, model(&config), optim())
            .unwrap_or_else(|e| panic!("{what}: the fresh checkpoint was lost: {e}"));
        assert_eq!(again.state.step, 11, "{what}");
        assert!(again.skipped.is_empty(), "{what}: {:?}", again.skipped);
        // The set-aside checkpoint is still there for a person to look at.
        assert!(dir.join("step-00000020.corrupt").is_dir(), "{what}");
        let _ = std::fs::remove_dir_all(out);
    }
}

/// Pruning never removes the checkpoint just written, even when a stale one numbered
/// higher (a corrupt one that could not be set aside) is in the folder.
#[test]
fn pruning_keeps_the_checkpoint_just_written() {
    let out = tmp("prune");
    let dir = out.join("checkpoints");
    let config = config(&out);
    save_at(&dir, &config, 20, 1);
    std::fs::remove_file(dir.join("step-00000020/state.json")).expect("rm");
    let fresh = save_at(&dir, &config, 11, 1);
    assert!(fresh.join("state.json").is_file());
    let restored = load_latest(&dir, model(&config), optim()).expect("a whole checkpoint");
    assert_eq!(restored.state.step, 11);
    let _ = std::fs::remove_dir_all(out);
}

/// When no checkpoint is whole, nothing is renamed: the error lists them, and a second
/// `--resume` sees the same checkpoints (instead of silently starting afresh).
#[test]
fn no_whole_checkpoint_is_an_error_that_leaves_them_in_place() {
    let out = tmp("none");
    let dir = out.join("checkpoints");
    let config = config(&out);
    let only = save_at(&dir, &config, 5, 1);
    edit(&only.join("model.bpk"), |b| flip_middle_byte(b));
    for _ in 0..2 {
        let err = match load_latest(&dir, model(&config), optim()) {
            Ok(_) => panic!("a corrupt checkpoint was loaded"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("step-00000005") && err.contains("model.bpk"),
            "{err}"
        );
        assert_eq!(list(&dir).len(), 1);
    }
    let _ = std::fs::remove_dir_all(out);
}
