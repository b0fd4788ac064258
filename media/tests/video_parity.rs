//! Videos against `fixtures/videos/reference.*` (qwen_vl_utils 0.0.14 with torchcodec, then
//! transformers' `Qwen2VLVideoProcessor(do_resize=False)`; `tools/reference/
//! make_video_fixtures.py`): frame count, rate, sampled indices, resized size, grid and pixel
//! values. The same clip as GIF, APNG, WebP and a folder of PNGs decodes to the same frames.

use std::path::{Path, PathBuf};

use nuri_media::image::{ImageProcessorConfig, MediaError, RgbImage};
use nuri_media::video::{FrameSampling, VideoOptions, VideoPatches, load_video, open_video};
use safetensors::SafeTensors;
use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/videos")
}

fn reference() -> (Value, Vec<u8>) {
    let json = std::fs::read_to_string(dir().join("reference.json")).expect("reference.json");
    let tensors = std::fs::read(dir().join("reference.safetensors")).expect("safetensors");
    (serde_json::from_str(&json).expect("JSON"), tensors)
}

fn options(case: &Value) -> VideoOptions {
    let o = &case["options"];
    let uint = |k: &str| o.get(k).and_then(Value::as_u64).map(|v| v as usize);
    VideoOptions {
        sampling: FrameSampling::Fps {
            fps: o.get("fps").and_then(Value::as_f64).unwrap_or(2.0),
            min_frames: None,
            max_frames: None,
        },
        min_pixels: uint("min_pixels"),
        max_pixels: uint("max_pixels"),
        ..Default::default()
    }
}

fn floats(tensors: &SafeTensors, key: &str) -> Vec<f32> {
    tensors
        .tensor(key)
        .expect("tensor")
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Checks one reference case; returns the max pixel difference.
fn check_case(case: &Value, tensors: &SafeTensors, path: &Path) -> f32 {
    let got = load_video(&ImageProcessorConfig::default(), path, &options(case))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let as_usizes = |v: &Value| -> Vec<usize> {
        v.as_array()
            .expect("array")
            .iter()
            .map(|x| x.as_u64().expect("uint") as usize)
            .collect()
    };
    assert_eq!(
        got.total_frames as u64,
        case["total_frames"].as_u64().expect("n")
    );
    assert!((got.video_fps - case["video_fps"].as_f64().expect("fps")).abs() < 1e-9);
    assert_eq!(
        got.frame_indices,
        as_usizes(&case["frame_indices"]),
        "{case}"
    );
    let resized = as_usizes(&case["resized"]);
    assert_eq!([got.resized.0, got.resized.1], resized[..]);
    assert_eq!(got.patches.grid_thw[..], as_usizes(&case["grid_thw"])[..]);
    let want = floats(tensors, case["key"].as_str().expect("key"));
    assert_eq!(got.patches.pixel_values.len(), want.len());
    got.patches
        .pixel_values
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

#[test]
fn gif_matches_qwen_vl_utils_and_the_video_processor() {
    let (json, bytes) = reference();
    let tensors = SafeTensors::deserialize(&bytes).expect("safetensors");
    let cases: Vec<&Value> = json["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .filter(|c| c["file"] == "clip.gif")
        .collect();
    assert_eq!(cases.len(), 2);
    for case in cases {
        let diff = check_case(case, &tensors, &dir().join("clip.gif"));
        eprintln!("clip.gif {}: max pixel diff {diff:e}", case["key"]);
        assert!(diff <= 1e-5, "{}: max diff {diff}", case["key"]);
    }
}

#[cfg(feature = "ffmpeg")]
#[test]
fn mp4_and_webm_match_qwen_vl_utils_and_the_video_processor() {
    let (json, bytes) = reference();
    let tensors = SafeTensors::deserialize(&bytes).expect("safetensors");
    let mut checked = 0;
    for case in json["cases"].as_array().expect("cases") {
        let file = case["file"].as_str().expect("file");
        if file == "clip.gif" {
            continue;
        }
        checked += 1;
        let diff = check_case(case, &tensors, &dir().join(file));
        eprintln!("{file} {}: max pixel diff {diff:e}", case["key"]);
        assert!(diff <= 1e-5, "{}: max diff {diff}", case["key"]);
    }
    assert_eq!(checked, 3, "H.264 mp4 at two rates and VP9 webm");
}

fn load(path: &Path, sampling: FrameSampling) -> Result<VideoPatches, MediaError> {
    let options = VideoOptions {
        sampling,
        min_pixels: Some(28 * 28 * 4),
        max_pixels: Some(28 * 28 * 8),
        folder_fps: 10.0,
        ..Default::default()
    };
    load_video(&ImageProcessorConfig::default(), path, &options)
}

/// Every frame of a video, decoded.
fn all_frames(path: &Path) -> Vec<RgbImage> {
    let mut source = open_video(path, 10.0, nuri_media::image::DEFAULT_DECODE_LIMIT)
        .unwrap_or_else(|e| panic!("{e}"));
    let info = source.probe().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((info.total_frames, info.width, info.height), (20, 90, 60));
    assert!(
        (info.fps - 10.0).abs() < 1e-9,
        "{}: {} fps",
        path.display(),
        info.fps
    );
    let mut frames = Vec::new();
    let all: Vec<usize> = (0..info.total_frames).collect();
    source
        .read_frames(&all, &mut |_, f| {
            frames.push(f);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    frames
}

#[test]
fn every_animated_format_and_a_frame_folder_decode_the_same_frames() {
    let folder = all_frames(&dir().join("frames"));
    for (file, tolerance) in [("clip.gif", 0), ("clip.apng", 0), ("clip.webp", 1)] {
        let frames = all_frames(&dir().join(file));
        let diff = frames
            .iter()
            .zip(&folder)
            .flat_map(|(a, b)| a.data.iter().zip(&b.data))
            .map(|(&a, &b)| a.abs_diff(b))
            .max();
        // image-webp 0.2.4 blends even opaque pixels of a blended sub-frame with an
        // approximate division (libwebp skips them), which can lower a value by one level.
        assert!(diff <= Some(tolerance), "{file}: max diff {diff:?} levels");
    }
    // The whole pipeline from a lossless format equals the one from the folder.
    for sampling in [FrameSampling::default(), FrameSampling::Count(20)] {
        let want = load(&dir().join("frames"), sampling).expect("folder");
        for file in ["clip.gif", "clip.apng"] {
            assert!(
                load(&dir().join(file), sampling).expect("video") == want,
                "{file}"
            );
        }
    }
}

#[test]
fn broken_videos_are_errors_that_name_the_file() {
    let truncated = dir().join("truncated.gif");
    let err = load(&truncated, FrameSampling::default()).unwrap_err();
    assert!(err.to_string().contains("truncated.gif"), "{err}");

    let missing = dir().join("no-such-clip.gif");
    let err = load(&missing, FrameSampling::default()).unwrap_err();
    assert!(err.to_string().contains("no-such-clip.gif"), "{err}");

    // A still image is not a video: sampling needs at least two frames.
    let still = dir().join("frames/frame_1.png");
    let err = load(&still, FrameSampling::default()).unwrap_err();
    assert!(err.to_string().contains("frame_1.png"), "{err}");

    // Too few frames for the sampling asked.
    let err = load(&dir().join("clip.gif"), FrameSampling::Count(40)).unwrap_err();
    assert!(
        matches!(err, MediaError::Sampling { .. }) && err.to_string().contains("clip.gif"),
        "{err}"
    );

    let mp4 = dir().join("truncated.mp4");
    let err = load(&mp4, FrameSampling::Count(20)).unwrap_err();
    assert!(err.to_string().contains("truncated.mp4"), "{err}");
    #[cfg(not(feature = "ffmpeg"))]
    assert!(matches!(err, MediaError::NeedsFfmpeg { .. }), "{err}");
}
