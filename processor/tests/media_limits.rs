//! Hostile media (issue 16, items 4 and 9): what an image or a video costs is known from its
//! header before its pixels are decoded, and absurd sizes, pixel bounds and paths are named
//! errors instead of a long decode, an abort or a hang. Every fixture is built here, a few
//! hundred kilobytes at most.

use std::path::{Path, PathBuf};

use base64::Engine;
use nuri_media::MediaError;
use nuri_processor::{PaddingSide, Processor, ProcessorError};
use serde_json::{Value, json};

fn processor() -> Processor {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    Processor::from_dir(&fixtures.join("processor/checkpoint"))
        .expect("checkpoint loads")
        .with_media_root(fixtures)
}

/// A GIF declaring a `width × height` canvas holding `frames` 1×1 frames, `delay`
/// hundredths of a second apart (23 bytes a frame).
fn tiny_gif(width: u16, height: u16, frames: usize, delay: u16) -> Vec<u8> {
    let mut gif = b"GIF89a".to_vec();
    gif.extend(width.to_le_bytes());
    gif.extend(height.to_le_bytes());
    gif.extend([0x80, 0, 0, 0, 0, 0, 255, 255, 255]); // 2-colour global table
    for _ in 0..frames {
        let [lo, hi] = delay.to_le_bytes();
        gif.extend([0x21, 0xF9, 4, 0, lo, hi, 0, 0]); // graphic control: the delay
        gif.extend([0x2C, 0, 0, 0, 0, 1, 0, 1, 0, 0]); // a 1×1 frame at (0, 0)
        gif.extend([2, 2, 0x44, 0x01, 0]); // LZW: clear, colour 0, end
    }
    gif.push(0x3B);
    gif
}

fn data_url(bytes: &[u8]) -> String {
    let payload = base64::engine::general_purpose::STANDARD.encode(bytes);
    format!("data:image/gif;base64,{payload}")
}

fn user(parts: Vec<Value>) -> Value {
    json!([{"role": "user", "content": parts}])
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nuri-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir
}

fn process(processor: &Processor, conversations: &[Value]) -> Result<(), ProcessorError> {
    processor
        .process(conversations, true, PaddingSide::Left)
        .map(drop)
}

#[test]
fn eight_gifs_with_a_9000x9000_canvas_are_refused_by_the_token_budget_before_decoding() {
    // 43 bytes each; decoding them would allocate 324 MB apiece.
    let gif = data_url(&tiny_gif(9000, 9000, 1, 0));
    let parts = vec![json!({"type": "image", "image": gif}); 8];
    let mut processor = processor();
    processor.max_media_tokens = Some(100);
    let err = process(&processor, &[user(parts.clone())]).unwrap_err();
    // Each image resizes to 112×112 under the checkpoint's 12544-pixel bound: 16 tokens.
    assert!(
        matches!(
            err,
            ProcessorError::MediaTokens {
                tokens: 128,
                limit: 100
            }
        ),
        "{err}"
    );
    // And a decode limit under the canvas refuses the first one from its header.
    processor.max_media_tokens = None;
    processor.decode_limit = 1 << 20;
    let err = process(&processor, &[user(parts)]).unwrap_err();
    assert!(
        matches!(
            err,
            ProcessorError::Media(MediaError::TooLarge {
                pixels: 81_000_000,
                ..
            })
        ),
        "{err}"
    );
}

#[test]
fn a_10000_frame_gif_video_is_refused_by_the_token_budget_before_decoding() {
    // 230 KB: 10,000 1×1 frames at 100 fps on a 2000×2000 canvas. Before, 200 sampled frames
    // (768 with a higher rate) were decoded and patchified, gigabytes, before the context
    // length refused the prompt.
    let dir = temp_dir("long-gif");
    let path = dir.join("long.gif");
    std::fs::write(&path, tiny_gif(2000, 2000, 10_000, 1)).expect("write");
    let mut processor = processor();
    processor.max_media_tokens = Some(32_768);
    let video = json!({"type": "video", "video": path});
    let err = process(&processor, &[user(vec![video.clone()])]).unwrap_err();
    assert!(
        matches!(
            err,
            ProcessorError::MediaTokens {
                tokens: 72_900,
                limit: 32_768
            }
        ),
        "{err}"
    );
    // Sampled down to 4 frames, it fits and is decoded.
    let mut few = video;
    few["nframes"] = json!(4);
    let out = processor
        .process(&[user(vec![few])], true, PaddingSide::Left)
        .expect("processes");
    assert_eq!(out.video_frame_indices, [vec![0, 3333, 6666, 9999]]);
    // The video's frames obey the processor's decode limit as images do.
    processor.decode_limit = 1 << 20;
    let err = process(
        &processor,
        &[user(vec![json!({"type": "video", "video": path})])],
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            ProcessorError::Media(MediaError::TooLarge {
                pixels: 4_000_000,
                ..
            })
        ),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_token_budget_is_per_conversation_and_leaves_valid_inputs_unchanged() {
    let image = json!({"type": "image", "image": "images/wide_300x200.png"});
    let conversations = [user(vec![image.clone()]), user(vec![image])];
    let free = processor()
        .process(&conversations, true, PaddingSide::Left)
        .expect("processes");
    let tokens = free.image_grid_thw[0].iter().product::<usize>() / 4;
    let mut limited = processor();
    limited.max_media_tokens = Some(tokens);
    let out = limited
        .process(&conversations, true, PaddingSide::Left)
        .expect("each row fits");
    assert_eq!(out, free);
    limited.max_media_tokens = Some(tokens - 1);
    let err = limited
        .process(&conversations, true, PaddingSide::Left)
        .unwrap_err();
    assert!(
        matches!(&err, ProcessorError::InConversation { conversation: 0, source }
            if matches!(**source, ProcessorError::MediaTokens { .. })),
        "{err}"
    );
}

#[test]
fn absurd_pixel_bounds_are_named_errors_not_aborts() {
    let processor = processor();
    let image = "images/tiny_10x10.png";
    for (part, field) in [
        (
            json!({"type": "image", "image": image, "min_pixels": 1_000_000_000_000_u64,
                   "max_pixels": 10_000_000_000_000_u64}),
            "min_pixels",
        ),
        (
            json!({"type": "image", "image": image, "min_pixels": 1_000_000_000_000_u64}),
            "min_pixels",
        ),
        (
            json!({"type": "image", "image": image, "max_pixels": 0}),
            "max_pixels",
        ),
        (
            json!({"type": "video", "video": "videos/clip.gif", "min_pixels": 1_000_000_000_000_u64}),
            "min_pixels",
        ),
    ] {
        let err = process(&processor, &[user(vec![part])]).unwrap_err();
        assert!(
            matches!(&err, ProcessorError::Media(MediaError::BadOption { field: f, .. }) if *f == field)
                && err.to_string().contains("message 0, part 0"),
            "{field}: {err}"
        );
    }
    // The processor's own settings are checked the same way.
    let mut broken = self::processor();
    broken.image.min_pixels = 1_000_000_000_000;
    broken.image.max_pixels = usize::MAX;
    let err = process(
        &broken,
        &[user(vec![json!({"type": "image", "image": image})])],
    )
    .unwrap_err();
    assert!(
        matches!(
            &err,
            ProcessorError::Media(MediaError::BadOption {
                field: "min_pixels",
                ..
            })
        ),
        "{err}"
    );
}

#[test]
fn a_fifo_or_a_folder_given_as_media_is_refused_instead_of_hanging() {
    let dir = temp_dir("fifo");
    let fifo = dir.join("pipe.png");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success());
    let mut cases = vec![(json!({"type": "image", "image": dir}), "a directory")];
    if made {
        // Should the check regress, this writer ends the blocked open with an empty read.
        for _ in 0..2 {
            let writer = fifo.clone();
            std::thread::spawn(move || drop(std::fs::OpenOptions::new().write(true).open(writer)));
        }
        cases.push((json!({"type": "image", "image": fifo}), "a FIFO"));
        cases.push((json!({"type": "video", "video": fifo}), "a FIFO"));
    }
    let processor = processor();
    for (part, kind) in cases {
        let err = process(&processor, &[user(vec![part.clone()])]).unwrap_err();
        assert!(
            matches!(&err, ProcessorError::Media(MediaError::NotAFile { kind: k, .. }) if *k == kind),
            "{part}: {err}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A tokenizer beside weights it does not belong to (the config's placeholder ids are not its
/// tokens) is named when the model is loaded, not by every picture later.
#[test]
fn a_tokenizer_from_another_checkpoint_is_named() {
    let dir = Path::new("/models/q2b");
    let mut config = nuri_model::NuriConfig::preset("tiny").expect("tiny");
    let processor = processor();
    config.image_token_id = i64::from(processor.tokenizer.special.image_pad);
    config.video_token_id = i64::from(processor.tokenizer.special.video_pad);
    let processor = processor.for_model(&config);
    processor
        .check_model(&config, dir)
        .expect("they belong together");

    config.image_token_id = 151_655;
    let processor = processor.for_model(&config);
    let err = processor.check_model(&config, dir).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, ProcessorError::Config { .. })
            && text.contains("/models/q2b/config.json")
            && text.contains("image_token_id is 151655"),
        "{text}"
    );
}
