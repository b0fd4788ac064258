//! Hostile training data (issue 16, items 5 and 9): one bad line must neither abort, hang nor
//! stop a run under `on_bad_sample = "skip"`; each is reported once as `file:line: why`, and
//! a run with no usable sample ends with an error instead of looping. The fixtures are
//! written by each test into its own folder; configs are built from JSON, as a run's file is.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use nuri_train::data::load_jsonl;
use nuri_train::{RunSummary, TrainConfig, TrainError, train};
use serde_json::{Value as Json, json};

/// No test here may take longer (a hang is a failure, not a stuck test run).
const TIME_LIMIT: Duration = Duration::from_secs(180);

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nuri-hostile-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir
}

/// A tiny run over `train`, with `data` keys merged into its `[data]` section.
fn config(dir: &Path, train: &Path, steps: usize, data: Json) -> TrainConfig {
    let mut value = json!({
        "model": {"preset": "tiny", "tokenizer": fixtures().join("processor/checkpoint")},
        "data": {"train": train, "max_pixels": 28 * 28 * 4, "bucket_batches": 1, "workers": 1},
        "optim": {"warmup_steps": 1},
        "out_dir": dir.join("run"),
        "seed": 3,
        "steps": steps,
        "batch_size": 2,
        "checkpoint_every": 2,
        "keep_checkpoints": 1,
    });
    for (k, v) in data.as_object().expect("an object") {
        value["data"][k] = v.clone();
    }
    serde_json::from_value(value).expect("a valid config")
}

/// Runs `f` on a thread and fails the test if it does not return within [`TIME_LIMIT`].
fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(TIME_LIMIT)
        .expect("the run neither finished nor failed in time (a hang)")
}

/// Trains (bounded in time), returning the outcome and the log lines.
fn run(config: TrainConfig, resume: bool) -> (Result<RunSummary, TrainError>, Vec<String>) {
    within(move || {
        let mut lines = Vec::new();
        let result = train(&config, &[burn::tensor::Device::flex()], resume, &mut |l| {
            lines.push(l.to_string())
        });
        (result, lines)
    })
}

/// Writes a small picture.
fn png(dir: &Path, name: &str) {
    image::RgbImage::from_fn(40, 30, |x, y| {
        image::Rgb([(x * 6) as u8, (y * 8) as u8, 90])
    })
    .save(dir.join(name))
    .expect("png");
}

/// A ShareGPT line about `image`, with extra keys merged into its image part when it is
/// written OpenAI-style (`part` not null).
fn line(image: &str, answer: &str, part: Json) -> String {
    if part.is_null() {
        return json!({"image": image, "conversations": [
            {"from": "human", "value": "<image>\nWhat is this?"},
            {"from": "gpt", "value": answer}]})
        .to_string();
    }
    let mut image_part = json!({"type": "image", "image": image});
    for (k, v) in part.as_object().expect("an object") {
        image_part[k] = v.clone();
    }
    json!({"messages": [
        {"role": "user", "content": [image_part, {"type": "text", "text": "What is this?"}]},
        {"role": "assistant", "content": answer}]})
    .to_string()
}

fn write_lines(dir: &Path, lines: &[String]) -> PathBuf {
    let path = dir.join("data.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").expect("write");
    path
}

fn reported(lines: &[String], origin: &str, needle: &str) -> usize {
    lines
        .iter()
        .filter(|l| l.contains(origin) && l.contains(needle))
        .count()
}

/// Item 5: a per-image `min_pixels` of 1e12 (with a `max_pixels` to match) used to reach an
/// allocation of terabytes and abort the process; one above the processor's maximum (3136
/// here) is a processor error. Both are skipped and reported with their line.
#[test]
fn absurd_min_pixels_skip_the_line_instead_of_aborting() {
    let dir = tmp("pixels");
    png(&dir, "a.png");
    let huge = 1_000_000_000_000u64;
    let path = write_lines(
        &dir,
        &[
            line("a.png", "A picture.", Json::Null),
            line(
                "a.png",
                "Huge.",
                json!({"min_pixels": huge, "max_pixels": huge}),
            ),
            line(
                "a.png",
                "Above the maximum.",
                json!({"min_pixels": 100_000}),
            ),
            line("a.png", "Another picture.", Json::Null),
        ],
    );
    let (result, lines) = run(config(&dir, &path, 3, json!({})), false);
    let summary = result.expect("the run skips both lines");
    assert_eq!(summary.bad_samples, 2, "{lines:#?}");
    assert_eq!(
        reported(&lines, "data.jsonl:2: ", "max_seq_len"),
        1,
        "{lines:#?}"
    );
    assert_eq!(
        reported(&lines, "data.jsonl:3: ", "min_pixels"),
        1,
        "{lines:#?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Item 5: a valid line far longer than the model can take (no maximum sequence length
/// used to exist) is skipped and reported under `data.max_seq_len`, or stops the run under
/// `on_bad_sample = "fail"`.
#[test]
fn a_sample_longer_than_max_seq_len_is_skipped_and_reported() {
    let default = serde_json::to_value(nuri_train::config::DataConfig::default()).unwrap();
    assert_eq!(default["max_seq_len"], json!(8192));
    let dir = tmp("long");
    png(&dir, "a.png");
    let long = "many words ".repeat(2000);
    let path = write_lines(
        &dir,
        &[
            line("a.png", "A picture.", Json::Null),
            line("a.png", &long, Json::Null),
            line("a.png", "Another picture.", Json::Null),
        ],
    );
    let (result, lines) = run(config(&dir, &path, 2, json!({"max_seq_len": 256})), false);
    let summary = result.expect("the run skips the long line");
    assert_eq!(summary.bad_samples, 1, "{lines:#?}");
    assert_eq!(
        reported(&lines, "data.jsonl:2: ", "max_seq_len 256"),
        1,
        "{lines:#?}"
    );
    let fail = json!({"max_seq_len": 256, "on_bad_sample": "fail"});
    let (result, _) = run(config(&dir, &path, 4, fail), false);
    let err = result.expect_err("stops on the long line");
    assert!(
        matches!(err, TrainError::BadSample(_)) && err.to_string().contains("data.jsonl:2: "),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Item 5: when every sample fails as it is processed, the run used to loop forever
/// printing "skipped"; it ends with an error that says so.
#[test]
fn a_run_whose_every_sample_fails_ends_with_an_error() {
    let dir = tmp("allbad");
    std::fs::write(dir.join("text.png"), "not a picture").expect("write");
    let lines: Vec<String> = (0..3)
        .map(|i| line("text.png", &format!("Answer {i}."), Json::Null))
        .collect();
    let path = write_lines(&dir, &lines);
    let (result, lines) = run(config(&dir, &path, 5, json!({})), false);
    let err = result.expect_err("no sample is usable");
    assert!(
        err.to_string().contains("none of the 3 samples"),
        "{err}\n{lines:#?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Item 5: one line of invalid UTF-8 used to reject the whole file without a line number.
#[test]
fn an_invalid_utf8_line_is_reported_with_its_number() {
    let dir = tmp("utf8");
    png(&dir, "a.png");
    let path = dir.join("data.jsonl");
    let mut bytes = line("a.png", "A picture.", Json::Null).into_bytes();
    bytes.extend(b"\r\n{\"id\": \"\xff\xfe\"}\r\n");
    bytes.extend(line("a.png", "Another picture.", Json::Null).into_bytes());
    std::fs::write(&path, bytes).expect("write");
    let (good, bad) = load_jsonl(&path, None, false).expect("reads the other lines");
    assert_eq!(good.len(), 2);
    assert_eq!(good[1].origin, format!("{}:3", path.display()));
    assert_eq!(bad.len(), 1, "{bad:#?}");
    assert_eq!(
        bad[0].to_string(),
        format!("{}:2: invalid UTF-8", path.display())
    );
    let err = load_jsonl(&path, None, true).unwrap_err();
    assert!(
        err.to_string().contains("data.jsonl:2: invalid UTF-8"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Item 5: a FIFO named as an image used to hang the run when opened; only regular files
/// are accepted (directories too for videos, which may be folders of frames).
#[cfg(unix)]
#[test]
fn a_fifo_as_an_image_path_is_refused() {
    let dir = tmp("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(dir.join("pipe.png"))
        .status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("mkfifo is unavailable; skipped");
        return;
    }
    png(&dir, "a.png");
    let path = write_lines(
        &dir,
        &[
            line("pipe.png", "A pipe.", Json::Null),
            line("a.png", "A picture.", Json::Null),
        ],
    );
    let (good, bad) = load_jsonl(&path, None, false).expect("reads");
    assert_eq!(good.len(), 1);
    assert_eq!(bad.len(), 1, "{bad:#?}");
    let why = bad[0].to_string();
    assert!(
        why.starts_with(&format!("{}:1: ", path.display())) && why.contains("not a regular file"),
        "{why}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Item 9: a line that fails when processed was counted (and reported) again each epoch,
/// and again after a resume.
#[test]
fn a_bad_line_is_counted_once_over_epochs_and_resumes() {
    let dir = tmp("once");
    png(&dir, "a.png");
    std::fs::write(dir.join("text.png"), "not a picture").expect("write");
    let path = write_lines(
        &dir,
        &[
            line("a.png", "One.", Json::Null),
            line("text.png", "Undecodable.", Json::Null),
            "{not json".to_string(),
            line("a.png", "Two.", Json::Null),
            line("a.png", "Three.", Json::Null),
        ],
    );
    // 4 loadable samples in batches of 2: 6 steps are 3 epochs.
    let (result, lines) = run(config(&dir, &path, 6, json!({})), false);
    let summary = result.expect("trains");
    assert_eq!(summary.bad_samples, 2, "{lines:#?}");
    assert_eq!(
        reported(&lines, "data.jsonl:2: ", "skipped"),
        1,
        "{lines:#?}"
    );
    let (result, lines) = run(config(&dir, &path, 10, json!({})), true);
    let summary = result.expect("resumes");
    assert!(summary.resumed_from.is_some());
    assert_eq!(summary.bad_samples, 2, "{lines:#?}");
    let _ = std::fs::remove_dir_all(dir);
}
