//! `nuri eval --benchmark` through the command line, on benchmark files the tests write:
//! VLMEvalKit's multiple-choice TSV (base64 images, images by index, a missing option,
//! Korean, the file's own CircularEval copies), rotations made by CircularEval, a video
//! set, a VQA set, resume after SIGKILL, and a thinking model's answer read after its
//! reasoning. The model is a tiny random-weight checkpoint: what it answers is noise, but
//! the same noise every time, which is what resume and the harness's bookkeeping need.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::{fixtures, nuri};
use serde_json::Value as Json;

/// A random-weight checkpoint (the tiny training config's model, or the config at
/// `preset` fitted to `tokenizer`), exported with the tokenizer and chat template.
fn checkpoint(name: &str, preset: Option<&str>, tokenizer: &str) -> PathBuf {
    let dir = scratch(name);
    let tokenizer = fixtures().join(tokenizer);
    let mut sets = vec![format!(
        "model.tokenizer={:?}",
        tokenizer.display().to_string()
    )];
    if let Some(p) = preset {
        sets.push(format!(
            "model.preset={:?}",
            fixtures().join(p).display().to_string()
        ));
    }
    let config =
        nuri_train::TrainConfig::load(&fixtures().join("../configs/train-tiny.toml"), &sets)
            .expect("the tiny training config");
    let device = burn::tensor::Device::flex();
    let (_, model, nuri) = nuri_train::setup::init_model(&config, &device).expect("the model");
    nuri_model::save_pretrained(&model, &nuri, &dir).expect("export");
    for file in std::fs::read_dir(&tokenizer).expect("tokenizer dir") {
        let file = file.expect("entry").path();
        if file.is_file() {
            std::fs::copy(&file, dir.join(file.file_name().expect("name"))).expect("copy");
        }
    }
    dir
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nuri-bench-eval-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn b64(path: &Path) -> String {
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(path).expect("image"))
}

/// Writes a TSV as pandas does (a field with a tab, quote or newline quoted).
fn write_tsv(path: &Path, header: &[&str], rows: &[Vec<String>]) {
    let mut text = header.join("\t") + "\n";
    for r in rows {
        let fields: Vec<String> = r.iter().map(|f| nuri::shapes::tsv::quote(f)).collect();
        text += &(fields.join("\t") + "\n");
    }
    std::fs::write(path, text).expect("tsv");
}

/// Runs `nuri eval --model MODEL --benchmark FILE ARGS…`.
fn eval(model: &Path, file: &Path, args: &[&str]) -> (bool, String, String) {
    let (model, file) = (model.display().to_string(), file.display().to_string());
    let mut all = vec!["eval", "--model", &model, "--benchmark", &file];
    all.extend_from_slice(args);
    nuri(&all)
}

/// Runs `nuri eval` on `file` into `out` with `args`, which must succeed; its report.
fn eval_report(model: &Path, file: &Path, out: &Path, args: &[&str]) -> Json {
    let out_arg = out.display().to_string();
    let all: Vec<&str> = ["--out", out_arg.as_str()]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    let (ok, _, err) = eval(model, file, &all);
    assert!(ok, "{err}");
    read_json(&out.join("report.json"))
}

fn read_json(path: &Path) -> Json {
    serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json")
}

fn jsonl(path: &Path) -> Vec<Json> {
    std::fs::read_to_string(path)
        .expect("read")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

const HEADER: [&str; 10] = [
    "index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image",
];

/// An MMBench-style file: a base64 image, rows pointing at it by index, a question with
/// three options, a Korean question with a quoted multi-line hint, and one question's
/// CircularEval copies (index + 1 000 000 · k, options rotated).
fn mmbench_rows() -> Vec<Vec<String>> {
    let image = b64(&fixtures().join("images/rgb_odd.png"));
    let row = |f: &[&str]| f.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        row(&[
            "0",
            "What color is the square?",
            "Look \"closely\".\tAt the middle.",
            "red",
            "blue",
            "green",
            "gray",
            "A",
            "color",
            &image,
        ]),
        row(&[
            "1",
            "How many squares are there?",
            "",
            "one",
            "two",
            "three",
            "",
            "B",
            "count",
            "0",
        ]),
        row(&[
            "2",
            "사각형은 무슨 색입니까?",
            "그림을\n보세요",
            "빨간색",
            "파란색",
            "초록색",
            "회색",
            "A",
            "color",
            "0",
        ]),
        row(&[
            "1000000",
            "What color is the square?",
            "",
            "blue",
            "green",
            "gray",
            "red",
            "D",
            "color",
            "0",
        ]),
        row(&[
            "2000000",
            "What color is the square?",
            "",
            "green",
            "gray",
            "red",
            "blue",
            "C",
            "color",
            "0",
        ]),
    ]
}

#[test]
fn vlmevalkit_tsv_with_circular_copies_video_and_vqa() {
    let dir = scratch("formats");
    let model = checkpoint("formats-model", None, "processor/checkpoint");
    let tsv = dir.join("MMBench_mini.tsv");
    write_tsv(&tsv, &HEADER, &mmbench_rows());
    let out = dir.join("out");
    let requests = dir.join("requests.jsonl");
    let (ok, table, err) = eval(
        &model,
        &tsv,
        &[
            "--circular",
            "--out",
            &out.display().to_string(),
            "--requests",
            &requests.display().to_string(),
            "--max-new-tokens",
            "4",
        ],
    );
    assert!(ok, "{err}");
    let report = read_json(&out.join("report.json"));
    // The file's own copies are grouped with their question: five rows, five questions,
    // three questions under CircularEval.
    assert_eq!(report["counts"]["questions"], 5, "{report}");
    assert_eq!(report["counts"]["asked"], 5, "{report}");
    assert_eq!(report["results"]["n"], 3, "{report}");
    assert_eq!(report["circular"]["n"], 3, "{report}");
    assert_eq!(
        report["circular"]["categories"]["color"]["n"], 2,
        "{report}"
    );
    assert_eq!(report["results"]["categories"]["count"]["n"], 1, "{report}");
    assert_eq!(report["benchmark"]["rows"], 5);
    assert_eq!(
        report["benchmark"]["sha256"].as_str().map(str::len),
        Some(64)
    );
    assert!(
        table.contains("| category | n | accuracy | circular |"),
        "{table}"
    );
    assert!(
        std::fs::read_to_string(out.join("report.md"))
            .expect("md")
            .contains("| overall | 3 |")
    );

    // The prompts, as a server would receive them.
    let bodies: BTreeMap<String, Json> = jsonl(&requests)
        .into_iter()
        .map(|l| {
            (
                l["key"].as_str().expect("key").to_string(),
                l["body"].clone(),
            )
        })
        .collect();
    let text = |key: &str| {
        bodies[key]["messages"][0]["content"]
            .as_array()
            .expect("parts")
            .last()
            .expect("text")["text"]
            .as_str()
            .expect("text")
            .to_string()
    };
    assert_eq!(
        text("0"),
        "Hint: Look \"closely\".\tAt the middle.\nQuestion: What color is the square?\nOptions:\nA. red\nB. blue\nC. green\nD. gray\nAnswer with the option's letter from the given choices directly."
    );
    // The missing option D is left out.
    assert!(text("1").contains("C. three\nAnswer with"), "{}", text("1"));
    assert_eq!(
        text("2"),
        "힌트: 그림을\n보세요\n질문: 사각형은 무슨 색입니까?\nOptions:\nA. 빨간색\nB. 파란색\nC. 초록색\nD. 회색\n주어진 선택지 중 해당 옵션의 문자로 직접 답하세요."
    );
    // Row 1 shows row 0's image.
    let url = |key: &str| bodies[key]["messages"][0]["content"][0]["image_url"]["url"].clone();
    assert_eq!(url("1"), url("0"));
    assert!(
        url("0")
            .as_str()
            .expect("url")
            .starts_with("data:image/png;base64,iVBOR")
    );

    // CircularEval rotations made here when the file has none: 4 + 3 options.
    let plain = dir.join("plain.tsv");
    write_tsv(&plain, &HEADER, &mmbench_rows()[..2]);
    let report = eval_report(
        &model,
        &plain,
        &dir.join("out-plain"),
        &["--circular", "--max-new-tokens", "2"],
    );
    assert_eq!(report["counts"]["questions"], 7, "{report}");
    assert_eq!(report["circular"]["n"], 2, "{report}");

    // A video set (Video-MME-style: a video path and an options list as VLMEvalKit writes
    // it) and a VQA set with ten human answers.
    let video = dir.join("videos.jsonl");
    let clip = fixtures().join("videos/clip.gif");
    std::fs::write(
        &video,
        format!(
            "{}\n{}\n",
            serde_json::json!({"index": 0, "video": clip, "question": "Which way does it move?", "options": "['A. left', 'B. right']", "answer": "B", "task_type": "direction"}),
            serde_json::json!({"index": 1, "video": clip, "question": "What moves?", "options": ["a square", "a circle", "nothing"], "answer": "A", "task_type": "object"}),
        ),
    )
    .expect("video set");
    let report = eval_report(
        &model,
        &video,
        &dir.join("out-video"),
        &[
            "--max-new-tokens",
            "2",
            "--requests",
            &dir.join("video-requests.jsonl").display().to_string(),
        ],
    );
    assert_eq!(report["results"]["n"], 2, "{report}");
    assert_eq!(report["counts"]["failed"], 0, "{report}");
    assert!(
        report["results"]["categories"]["direction"].is_object(),
        "{report}"
    );
    let body = &jsonl(&dir.join("video-requests.jsonl"))[0]["body"];
    assert_eq!(
        body["messages"][0]["content"][0]["type"], "video_url",
        "{body}"
    );
    assert!(
        body["messages"][0]["content"][1]["text"]
            .as_str()
            .expect("text")
            .contains("A. left\nB. right\n")
    );

    let vqa = dir.join("vqa.jsonl");
    std::fs::write(
        &vqa,
        format!(
            "{}\n",
            serde_json::json!({"index": "q1", "image_path": fixtures().join("images/rgb_odd.png"), "question": "What color?", "answer": vec!["red"; 10], "category": "color"})
        ),
    )
    .expect("vqa set");
    let report = eval_report(
        &model,
        &vqa,
        &dir.join("out-vqa"),
        &["--max-new-tokens", "2"],
    );
    assert_eq!(report["settings"]["task"], "vqa", "{report}");
    assert_eq!(report["settings"]["metric"], "vqa", "{report}");
    assert_eq!(report["results"]["n"], 1, "{report}");
    // A document set is scored by ANLS (as VLMEvalKit picks it, by the dataset's name).
    let doc = dir.join("DocVQA_mini.jsonl");
    std::fs::copy(&vqa, &doc).expect("copy");
    let report = eval_report(
        &model,
        &doc,
        &dir.join("out-doc"),
        &["--max-new-tokens", "2"],
    );
    assert_eq!(report["settings"]["metric"], "anls", "{report}");

    // Bad input: a clear error naming the row.
    let bad = dir.join("bad.tsv");
    write_tsv(&bad, &HEADER, &[mmbench_rows()[1].clone()]);
    let (ok, _, err) = eval(
        &model,
        &bad,
        &["--out", &dir.join("out-bad").display().to_string()],
    );
    assert!(!ok);
    assert!(
        err.contains("bad.tsv:2") && err.contains("refers to row index `0`"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&model);
}

#[test]
fn a_killed_evaluation_resumes_where_it_stopped() {
    let dir = scratch("resume");
    let model = checkpoint("resume-model", None, "processor/checkpoint");
    let tsv = dir.join("many.tsv");
    let image = b64(&fixtures().join("images/rgb_odd.png"));
    let rows: Vec<Vec<String>> = (0..100)
        .map(|i| {
            let question = format!("Question {i}: which color?");
            let (img, answer) = if i == 0 {
                (image.clone(), "A")
            } else {
                ("0".into(), ["A", "B", "C", "D"][i % 4])
            };
            [
                &*i.to_string(),
                &question,
                "",
                "red",
                "blue",
                "green",
                "gray",
                answer,
                ["x", "y"][i % 2],
                &img,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        })
        .collect();
    write_tsv(&tsv, &HEADER, &rows);
    let args = |out: &Path| -> Vec<String> {
        [
            "eval",
            "--model",
            &model.display().to_string(),
            "--benchmark",
            &tsv.display().to_string(),
            "--circular",
            "--batch-size",
            "1",
            "--max-new-tokens",
            "3",
            "--out",
            &out.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    // Uninterrupted.
    let whole = dir.join("whole");
    let a = args(&whole);
    let (ok, _, err) = nuri(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok, "{err}");

    // Killed (SIGKILL) once some predictions are written, then run again.
    let killed = dir.join("killed");
    let predictions = killed.join("predictions.jsonl");
    let mut child = Command::new(env!("CARGO_BIN_EXE_nuri"))
        .args(args(&killed))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let start = Instant::now();
    loop {
        let lines = std::fs::read_to_string(&predictions).map_or(0, |t| t.lines().count());
        if lines >= 20 || start.elapsed() > Duration::from_secs(120) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    let before = std::fs::read_to_string(&predictions)
        .expect("predictions")
        .lines()
        .count();
    assert!(
        (20..400).contains(&before),
        "{before} predictions before the kill"
    );
    let a = args(&killed);
    let (ok, table, err) = nuri(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok, "{err}");
    assert!(
        err.contains("resuming:") && err.contains("of 400 questions already answered"),
        "{err}"
    );
    // Every question once, with the answers of the uninterrupted run.
    let by_key = |path: &Path| -> BTreeMap<String, Json> {
        let lines = jsonl(path);
        let n = lines.len();
        let map: BTreeMap<_, _> = lines
            .into_iter()
            .map(|l| {
                (
                    l["key"].as_str().expect("key").to_string(),
                    l["prediction"].clone(),
                )
            })
            .collect();
        assert_eq!(
            map.len(),
            n,
            "a question answered twice in {}",
            path.display()
        );
        map
    };
    assert_eq!(
        by_key(&predictions),
        by_key(&whole.join("predictions.jsonl"))
    );
    assert_eq!(by_key(&predictions).len(), 400);
    assert_eq!(
        read_json(&killed.join("report.json"))["circular"],
        read_json(&whole.join("report.json"))["circular"],
        "{table}"
    );

    // Other settings in the same folder: refused, nothing overwritten.
    let mut a = args(&killed);
    let tokens = a.len() - 3;
    a[tokens] = "4".into();
    let (ok, _, err) = nuri(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!ok);
    assert!(err.contains("--restart"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&predictions)
            .expect("kept")
            .lines()
            .count(),
        400
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&model);
}

#[test]
fn a_thinking_models_answer_is_read_after_its_reasoning() {
    let dir = scratch("thinking");
    let model = checkpoint(
        "thinking-model",
        Some("families/exaone4_5/model/config.json"),
        "families/exaone4_5/processor/checkpoint",
    );
    let tsv = dir.join("mm.tsv");
    write_tsv(&tsv, &HEADER, &mmbench_rows()[..3]);
    let out = dir.join("out");
    let report = eval_report(
        &model,
        &tsv,
        &out,
        &[
            "--think",
            "--max-thinking-tokens",
            "3",
            "--max-new-tokens",
            "8",
        ],
    );
    let predictions = jsonl(&out.join("predictions.jsonl"));
    assert_eq!(predictions.len(), 3);
    for p in &predictions {
        // The reasoning block (three tokens, then the forced end marker) is kept apart; the
        // prediction scored is what follows it.
        let reasoning = p["reasoning"].as_str().expect("a reasoning block");
        assert!(
            !reasoning.is_empty() && !reasoning.contains("</think>"),
            "{p}"
        );
        assert!(
            !p["prediction"]
                .as_str()
                .expect("content")
                .contains("<think>"),
            "{p}"
        );
    }
    assert_eq!(
        report["settings"]["template_kwargs"]["enable_thinking"], true,
        "{report}"
    );
    assert_eq!(report["settings"]["max_thinking_tokens"], 3, "{report}");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&model);
}
