//! The processor against `fixtures/processor/` (transformers' `Qwen2VLProcessor` with a small
//! Qwen2-style tokenizer, `qwen_vl_utils` for videos, `get_rope_index` for positions; made by
//! `tools/reference/make_processor_fixtures.py`): rendered text, input ids, attention mask,
//! grids, pixel values and position ids, single conversations and padded batches.

use std::path::{Path, PathBuf};

use nuri_processor::{ChatTemplate, PaddingSide, Processor, ProcessorError, TemplateSource};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

fn processor() -> Processor {
    Processor::from_dir(&fixtures().join("processor/checkpoint"))
        .expect("checkpoint loads")
        .with_media_root(fixtures())
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

fn grids(t: &SafeTensors, key: &str) -> Vec<[usize; 3]> {
    ints(t, key)
        .unwrap_or_default()
        .chunks_exact(3)
        .map(|g| [g[0] as usize, g[1] as usize, g[2] as usize])
        .collect()
}

/// Four 8-bit levels after normalization by the smallest CLIP std.
const JPEG_TOLERANCE: f32 = 4.0 / 255.0 / 0.2613;

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn processor_matches_transformers_on_every_case() {
    let processor = processor();
    let dir = fixtures().join("processor");
    let cases: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).expect("cases"))
            .expect("JSON");
    let bytes = std::fs::read(dir.join("reference.safetensors")).expect("tensors");
    let reference = SafeTensors::deserialize(&bytes).expect("safetensors");
    let cases = cases["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 7);
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let conversations = case["conversations"].as_array().expect("conversations");
        let side = if case["padding_side"] == "right" {
            PaddingSide::Right
        } else {
            PaddingSide::Left
        };
        for (conversation, text) in conversations
            .iter()
            .zip(case["texts"].as_array().expect("texts"))
        {
            let rendered = processor.render(conversation, true).expect("renders");
            assert_eq!(
                rendered,
                text.as_str().expect("text"),
                "{name}: rendered text"
            );
        }
        let out = processor
            .process(conversations, true, side)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let key = |k: &str| format!("{name}.{k}");
        let want_ids = ints(&reference, &key("input_ids")).expect("ids");
        assert_eq!(out.input_ids, want_ids, "{name}: input ids");
        assert_eq!(
            out.attention_mask,
            ints(&reference, &key("attention_mask")).expect("mask"),
            "{name}"
        );
        assert_eq!(
            out.image_grid_thw,
            grids(&reference, &key("image_grid_thw")),
            "{name}"
        );
        assert_eq!(
            out.video_grid_thw,
            grids(&reference, &key("video_grid_thw")),
            "{name}"
        );
        // Position ids by the original Qwen2-VL rule (transformers 4.57), on real tokens:
        // padding holds 0 here and 1 there, and attention never reads it.
        let want_pos = ints(&reference, &key("position_ids")).expect("positions");
        let (b, s) = (out.batch, out.seq_len);
        for (i, (&got, &want)) in out.position_ids.iter().zip(&want_pos).enumerate() {
            if out.attention_mask[i % (b * s)] == 1 {
                assert_eq!(
                    got,
                    want,
                    "{name}: position id {i} (stream {})",
                    i / (b * s)
                );
            }
        }
        // Deltas count real tokens only, as transformers 5 does; 4.57 subtracted the padded
        // length (and its decode step added the padding back).
        let pads = |r: usize| {
            out.attention_mask[r * s..(r + 1) * s]
                .iter()
                .filter(|&&m| m == 0)
                .count() as i64
        };
        let want_deltas: Vec<i64> = ints(&reference, &key("rope_deltas"))
            .expect("deltas")
            .iter()
            .enumerate()
            .map(|(r, d)| d + pads(r))
            .collect();
        assert_eq!(out.rope_deltas, want_deltas, "{name}: rope deltas");
        let fps: Vec<f64> = case["video_sample_fps"]
            .as_array()
            .expect("fps")
            .iter()
            .map(|v| v.as_f64().expect("f64"))
            .collect();
        assert_eq!(out.video_sample_fps.len(), fps.len());
        for (a, b) in out.video_sample_fps.iter().zip(&fps) {
            assert!((a - b).abs() < 1e-9, "{name}: sample fps {a} vs {b}");
        }
        if let Some(want) = floats(&reference, &key("pixel_values")) {
            let d = max_diff(&out.pixel_values, &want);
            eprintln!("{name}: image pixel values max diff {d:e}");
            // JPEG decoders may differ in their IDCT (zune-jpeg here, libjpeg-turbo in
            // Pillow; up to 4 levels on photo.jpg, see media/tests/image_parity.rs).
            let has_jpeg = case.to_string().contains(".jpg");
            let tolerance = if has_jpeg { JPEG_TOLERANCE } else { 1e-5 };
            assert!(d <= tolerance, "{name}: image pixel values differ by {d}");
        }
        if let Some(want) = floats(&reference, &key("pixel_values_videos")) {
            let d = max_diff(&out.pixel_values_videos, &want);
            eprintln!("{name}: video pixel values max diff {d:e}");
            assert!(d <= 1e-5, "{name}: video pixel values differ by {d}");
        }
        if name.starts_with("batch") {
            // The batch's pixel values are its conversations', in order.
            let mut images = Vec::new();
            let mut videos = Vec::new();
            for c in conversations {
                let single = processor
                    .process(std::slice::from_ref(c), true, side)
                    .expect("single");
                images.extend(single.pixel_values);
                videos.extend(single.pixel_values_videos);
            }
            assert_eq!(out.pixel_values, images, "{name}");
            assert_eq!(out.pixel_values_videos, videos, "{name}");
        }
    }
}

#[test]
fn without_a_template_file_the_built_in_qwen2_vl_template_is_used() {
    let dir = std::env::temp_dir().join(format!("nuri-processor-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let src = fixtures().join("processor/checkpoint");
    for file in [
        "tokenizer.json",
        "tokenizer_config.json",
        "processor_config.json",
    ] {
        std::fs::copy(src.join(file), dir.join(file)).expect("copy");
    }
    let messages = serde_json::json!([{"role": "user", "content": [
        {"type": "image", "image": "images/photo.jpg"}, {"type": "text", "text": "안녕?"}]}]);
    let fallback = Processor::from_dir(&dir).expect("loads");
    assert_eq!(fallback.template.source(), &TemplateSource::BuiltIn);
    assert_eq!(
        fallback.render(&messages, true).expect("renders"),
        processor().render(&messages, true).expect("renders")
    );

    // A template of the checkpoint's own wins, from any of the places transformers looks.
    std::fs::write(
        dir.join("chat_template.json"),
        r#"{"chat_template": "{% for m in messages %}<{{ m.role }}>{% endfor %}"}"#,
    )
    .expect("write");
    let own = Processor::from_dir(&dir).expect("loads");
    assert_eq!(own.render(&messages, true).expect("renders"), "<user>");
    std::fs::write(
        dir.join("chat_template.jinja"),
        "J{{ messages | length }}\n",
    )
    .expect("write");
    let own = Processor::from_dir(&dir).expect("loads");
    assert_eq!(own.render(&messages, true).expect("renders"), "J1");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_inputs_are_errors_that_say_where() {
    let processor = processor();
    let process = |messages: Value| processor.process(&[messages], true, PaddingSide::Left);
    let err = process(serde_json::json!([{"role": "user", "content": [
        {"type": "image", "image": "images/none.png"}]}]))
    .unwrap_err();
    assert!(err.to_string().contains("none.png"), "{err}");
    let err = process(serde_json::json!([{"role": "user", "content": [
        {"type": "text", "text": "hi"}, {"type": "image"}]}]))
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("conversation 0: message 0, part 1"),
        "{err}"
    );
    let err = process(serde_json::json!([{"role": "user", "content": [
        {"type": "video", "video": "videos/truncated.gif"}]}]))
    .unwrap_err();
    assert!(err.to_string().contains("truncated.gif"), "{err}");
    // A literal pad in user text without an image to fill it.
    let err =
        process(serde_json::json!([{"role": "user", "content": "<|image_pad|>"}])).unwrap_err();
    assert!(matches!(err, ProcessorError::Fusion(_)), "{err}");
    // A template that fails names itself.
    let broken = Processor::new(
        processor.tokenizer.clone(),
        Some(
            ChatTemplate::new(
                "{{ raise_exception('no system turns') }}".into(),
                TemplateSource::BuiltIn,
            )
            .expect("compiles"),
        ),
    );
    let err = broken.render(&serde_json::json!([]), true).unwrap_err();
    assert!(err.to_string().contains("no system turns"), "{err}");
    let missing = Processor::from_dir(Path::new("/no/such/checkpoint")).unwrap_err();
    assert!(missing.to_string().contains("tokenizer.json"), "{missing}");
}
