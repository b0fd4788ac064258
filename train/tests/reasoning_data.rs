//! Training data with reasoning traces: an assistant turn's `reasoning_content`,
//! `reasoning` or `thinking` (OpenAI-style or on a ShareGPT turn), or a `<think>` block in
//! its text, rendered by the chat template (EXAONE 4.5's here); `data.train_on_reasoning`
//! puts the loss on it or only on what follows it.

use std::path::{Path, PathBuf};

use nuri_processor::Processor;
use nuri_train::collate::{EncodeOptions, IGNORE, TurnMarks, encode};
use nuri_train::data::load_jsonl;
use serde_json::json;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

fn options(train_on_reasoning: bool) -> EncodeOptions {
    EncodeOptions {
        last_turn_only: false,
        max_seq_len: 8192,
        train_on_reasoning,
    }
}

#[test]
fn reasoning_is_rendered_and_its_loss_can_be_left_out() {
    let dir = std::env::temp_dir().join(format!("nuri-reasoning-data-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let file = dir.join("reasoning.jsonl");
    let lines = [
        json!({"messages": [
            {"role": "user", "content": "What is 12 times 3?"},
            {"role": "assistant", "content": "36", "reasoning_content": "Twelve threes make thirty-six."}]}),
        json!({"conversations": [
            {"from": "human", "value": "What is 12 times 3?"},
            {"from": "gpt", "value": "36", "thinking": "Twelve threes make thirty-six."}]}),
        json!({"messages": [
            {"role": "user", "content": "What is 12 times 3?"},
            {"role": "assistant", "content": "<think>\nTwelve threes make thirty-six.\n</think>\n\n36"}]}),
    ];
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&file, text).expect("write");
    let (samples, bad) = load_jsonl(&file, None, true).expect("loads");
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(samples.len(), 3);
    // Every name reaches the template as `reasoning_content`.
    assert_eq!(
        samples[1].messages[1]["reasoning_content"],
        "Twelve threes make thirty-six."
    );
    assert!(samples[1].messages[1].get("thinking").is_none());

    let processor =
        Processor::from_dir(&fixtures().join("families/exaone4_5/processor/checkpoint"))
            .expect("processor");
    let marks = TurnMarks::of(&processor).expect("marks");
    assert!(marks.think.is_some(), "EXAONE 4.5's markers are tokens");
    let labelled = |train_on_reasoning: bool, i: usize| {
        let e =
            encode(&processor, &marks, &samples[i], options(train_on_reasoning)).expect("encodes");
        let ids: Vec<u32> = e
            .labels
            .iter()
            .filter(|&&l| l != IGNORE)
            .map(|&l| l as u32)
            .collect();
        let all: Vec<u32> = e.out.input_ids.iter().map(|&t| t as u32).collect();
        (
            processor.tokenizer.decode(&ids, false).expect("decode"),
            processor.tokenizer.decode(&all, false).expect("decode"),
        )
    };
    let mut rendered = Vec::new();
    for i in 0..3 {
        let (with, whole) = labelled(true, i);
        let (without, _) = labelled(false, i);
        // The template rendered the reasoning in a <think> block, in all three forms alike.
        assert!(
            whole.contains("<think>\nTwelve threes make thirty-six.\n</think>"),
            "{whole}"
        );
        assert!(with.contains("thirty-six") && with.contains("36"), "{with}");
        assert!(
            !without.contains("thirty-six") && !without.contains("think>"),
            "{without}"
        );
        assert!(without.contains("36"), "{without}");
        rendered.push(whole);
    }
    assert!(rendered.iter().all(|r| *r == rendered[0]), "{rendered:?}");

    // A tokenizer without thinking tokens cannot find the reasoning to leave out: the sample
    // is refused with a reason, not trained on whole.
    let qwen = Processor::from_dir(&fixtures().join("processor/checkpoint")).expect("processor");
    let qmarks = TurnMarks::of(&qwen).expect("marks");
    assert!(qmarks.think.is_none());
    let err = encode(&qwen, &qmarks, &samples[2], options(false)).expect_err("refused");
    assert!(err.reason.contains("train_on_reasoning"), "{}", err.reason);
    assert!(encode(&qwen, &qmarks, &samples[2], options(true)).is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}
