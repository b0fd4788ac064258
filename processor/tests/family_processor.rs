//! The processor against transformers' processors of Qwen2.5-VL, EXAONE 4.5 and HyperCLOVA X
//! Vision (`fixtures/families/<family>/processor/`, made by
//! `tools/reference/make_family_processor_fixtures.py`: a small tokenizer with each family's
//! special tokens, saved with the family's real chat template and processor settings):
//! rendered prompts (template keyword arguments included), input ids, attention masks,
//! grids, Qwen2.5-VL's seconds per temporal patch, and the videos' pixel values where the
//! frames sampled are the ones `qwen_vl_utils` samples.

use std::path::{Path, PathBuf};

use nuri_model::{Family, PositionRule};
use nuri_processor::{PaddingSide, Processor};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

fn ints(t: &SafeTensors, key: &str) -> Option<Vec<i64>> {
    let view = t.tensor(key).ok()?;
    assert_eq!(view.dtype(), Dtype::I64, "{key}");
    Some(
        view.data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect(),
    )
}

fn floats(t: &SafeTensors, key: &str) -> Option<Vec<f32>> {
    let view = t.tensor(key).ok()?;
    Some(
        view.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect(),
    )
}

/// A media folder where HyperCLOVA X's `videos/clip.mp4` is the test clip (a GIF: media are
/// recognised by their bytes; its template needs a video extension in the name).
fn media_root(family: &str) -> PathBuf {
    let root =
        std::env::temp_dir().join(format!("nuri-family-media-{family}-{}", std::process::id()));
    for (from, to) in [
        ("images/photo.jpg", "images/photo.jpg"),
        ("images/rgb_odd.png", "images/rgb_odd.png"),
        ("videos/clip.gif", "videos/clip.gif"),
        ("videos/clip.gif", "videos/clip.mp4"),
    ] {
        let target = root.join(to);
        std::fs::create_dir_all(target.parent().expect("parent")).expect("scratch");
        std::fs::copy(fixtures().join(from), &target).expect("copy");
    }
    root
}

/// Gives every video part the frame rate the reference sampled at (`qwen_vl_utils` style:
/// the same frames at 3 fps; at 2 fps transformers keeps other frames, the same count).
fn with_rates(conversation: &Value, rates: &mut impl Iterator<Item = f64>) -> Value {
    let mut conversation = conversation.clone();
    for message in conversation.as_array_mut().into_iter().flatten() {
        for part in message
            .get_mut("content")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let url = part
                .get("video")
                .and_then(Value::as_str)
                .or_else(|| part["image_url"]["url"].as_str())
                .unwrap_or_default()
                .to_string();
            if url.contains("videos/") {
                part["fps"] = Value::from(rates.next().expect("a rate per video"));
            }
        }
    }
    conversation
}

fn check_family(family: Family) {
    let name = family.model_type();
    let dir = fixtures().join("families").join(name).join("processor");
    let cases: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).expect("cases.json"))
            .expect("JSON");
    let bytes = std::fs::read(dir.join("reference.safetensors")).expect("reference");
    let reference = SafeTensors::deserialize(&bytes).expect("safetensors");
    let root = media_root(name);
    let mut checked = 0;
    for case in cases["cases"].as_array().expect("cases") {
        let case_name = case["name"].as_str().expect("name");
        let mut processor = Processor::from_dir(&dir.join("checkpoint"))
            .expect("checkpoint loads")
            .with_media_root(&root);
        processor.family = family;
        processor.position_rule = if family == Family::Qwen2_5Vl {
            PositionRule::MRopeTimed {
                tokens_per_second: 2.0,
            }
        } else {
            PositionRule::Linear
        };
        processor.template_kwargs = case["template_kwargs"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let mut rates = case["video_sampled_fps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_f64)
            .collect::<Vec<_>>()
            .into_iter();
        let conversations: Vec<Value> = case["conversations"]
            .as_array()
            .expect("conversations")
            .iter()
            .map(|c| with_rates(c, &mut rates))
            .collect();
        let mut rendered: Vec<String> = conversations
            .iter()
            .map(|c| processor.render(c, true).expect("renders"))
            .collect();
        // This case puts transformers' duration placeholder in the rendered text by hand (the
        // published template writes NAVER's `<|video_meta_duration|>`, which stays as it is).
        let by_hand = case_name == "video_duration_token";
        if by_hand {
            for text in &mut rendered {
                *text = text.replace("\"<|video_meta_duration|>\"", "<|video_duration|>");
            }
        }
        let want_texts: Vec<&str> = case["texts"]
            .as_array()
            .expect("texts")
            .iter()
            .map(|t| t.as_str().expect("text"))
            .collect();
        assert_eq!(rendered, want_texts, "{name}/{case_name}: rendered prompts");
        let out = if by_hand {
            let media: Vec<_> = conversations
                .iter()
                .flat_map(|c| {
                    let canonical = nuri_processor::messages::canonical_parts(c, family);
                    nuri_processor::media_items(&canonical, &root).expect("media")
                })
                .collect();
            processor.process_texts(&rendered, &media, PaddingSide::Left)
        } else {
            processor.process(&conversations, true, PaddingSide::Left)
        }
        .unwrap_or_else(|e| panic!("{name}/{case_name}: {e}"));
        let key = |k: &str| format!("{case_name}.{k}");
        assert_eq!(
            Some(out.input_ids.clone()),
            ints(&reference, &key("input_ids")),
            "{name}/{case_name}: input ids"
        );
        assert_eq!(
            Some(out.attention_mask.clone()),
            ints(&reference, &key("attention_mask")),
            "{name}/{case_name}: attention mask"
        );
        for (grids, k) in [
            (&out.image_grid_thw, "image_grid_thw"),
            (&out.video_grid_thw, "video_grid_thw"),
        ] {
            let flat: Vec<i64> = grids.iter().flatten().map(|&v| v as i64).collect();
            assert_eq!(
                flat,
                ints(&reference, &key(k)).unwrap_or_default(),
                "{name}/{case_name}: {k}"
            );
        }
        if let Some(want) = floats(&reference, &key("second_per_grid_ts")) {
            let got: Vec<f32> = out.second_per_grid_ts.iter().map(|&s| s as f32).collect();
            assert_eq!(got, want, "{name}/{case_name}: second_per_grid_ts");
        }
        // Video pixels, where the frames are the ones qwen_vl_utils samples (3 fps here).
        let qvu = &case["pixel_values_videos_qwen_vl_utils_resize"];
        if case["video_sampled_fps"][0].as_f64() == Some(3.0) && qvu.is_object() {
            let sum: f64 = out.pixel_values_videos.iter().map(|&v| f64::from(v)).sum();
            let want = qvu["sum"].as_f64().expect("sum");
            assert!(
                (sum - want).abs() < 1e-2,
                "{name}/{case_name}: video pixel sum {sum} vs {want}"
            );
        }
        checked += 1;
    }
    assert!(checked >= 6, "{name}: only {checked} cases");
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn qwen2_5_vl_processor_matches_transformers() {
    check_family(Family::Qwen2_5Vl);
}

#[test]
fn exaone4_5_processor_matches_transformers() {
    check_family(Family::Exaone4_5);
}

#[test]
fn hyperclovax_vision_v2_processor_matches_transformers() {
    check_family(Family::HyperClovaXVisionV2);
}
