//! Frame sampling and the per-video pixel budget of `qwen_vl_utils.vision_process`
//! (`smart_nframes`, the `torch.linspace(...).round()` indices, and `fetch_video`'s
//! min/max pixels).

use thiserror::Error;

use crate::round_half_even;

/// Frames go to the model in pairs (the temporal patch).
pub const FRAME_FACTOR: usize = 2;
/// Default sampling rate, frames per second of video.
pub const DEFAULT_FPS: f64 = 2.0;
/// Fewest frames sampled by rate.
pub const FPS_MIN_FRAMES: usize = 4;
/// Most frames sampled by rate.
pub const FPS_MAX_FRAMES: usize = 768;
/// Fewest merged tokens per frame (`VIDEO_MIN_TOKEN_NUM`).
pub const VIDEO_MIN_TOKENS: usize = 128;
/// Most merged tokens per frame (`VIDEO_MAX_TOKEN_NUM`).
pub const VIDEO_MAX_TOKENS: usize = 768;
/// Context the default total-pixel budget is sized for (`MODEL_SEQ_LEN`).
pub const MODEL_SEQ_LEN: usize = 128_000;

/// How many frames to take from a video.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FrameSampling {
    /// A rate, clamped to `[min_frames, max_frames]` (defaults 4 and min(768, total)).
    Fps {
        fps: f64,
        min_frames: Option<usize>,
        max_frames: Option<usize>,
    },
    /// A fixed count (rounded to a multiple of 2).
    Count(usize),
}

impl Default for FrameSampling {
    fn default() -> Self {
        FrameSampling::Fps {
            fps: DEFAULT_FPS,
            min_frames: None,
            max_frames: None,
        }
    }
}

/// A video that cannot be sampled as asked.
#[derive(Debug, Error, PartialEq)]
pub enum SamplingError {
    #[error(
        "sampling gives {nframes} frames, but it must be between {FRAME_FACTOR} and the video's {total_frames}"
    )]
    FrameCount { nframes: usize, total_frames: usize },
    #[error("frame rate must be positive and finite, got {0}")]
    BadFps(f64),
}

/// `smart_nframes`: the number of frames to sample from `total_frames` frames recorded at
/// `video_fps`.
pub fn smart_nframes(
    sampling: FrameSampling,
    total_frames: usize,
    video_fps: f64,
) -> Result<usize, SamplingError> {
    let factor = FRAME_FACTOR as f64;
    let nframes = match sampling {
        FrameSampling::Count(n) => (round_half_even(n as f64 / factor) * factor) as usize,
        FrameSampling::Fps {
            fps,
            min_frames,
            max_frames,
        } => {
            for rate in [fps, video_fps] {
                if !(rate.is_finite() && rate > 0.0) {
                    return Err(SamplingError::BadFps(rate));
                }
            }
            let min_frames = (min_frames.unwrap_or(FPS_MIN_FRAMES) as f64 / factor).ceil() * factor;
            let max_frames =
                (max_frames.unwrap_or(FPS_MAX_FRAMES.min(total_frames)) as f64 / factor).floor()
                    * factor;
            let wanted = total_frames as f64 / video_fps * fps;
            let n = wanted
                .max(min_frames)
                .min(max_frames)
                .min(total_frames as f64);
            ((n / factor).floor() * factor) as usize
        }
    };
    if !(FRAME_FACTOR..=total_frames).contains(&nframes) {
        return Err(SamplingError::FrameCount {
            nframes,
            total_frames,
        });
    }
    Ok(nframes)
}

/// The indices `torch.linspace(0, total - 1, n).round()` picks, computed in f32 the way
/// torch does (from the start for the first half, from the end for the second) and rounded
/// half to even.
pub fn frame_indices(total_frames: usize, nframes: usize) -> Vec<usize> {
    if nframes == 1 {
        return vec![0];
    }
    let (start, end) = (0f32, (total_frames - 1) as f32);
    let step = (end - start) / (nframes - 1) as f32;
    let halfway = nframes / 2;
    (0..nframes)
        .map(|i| {
            let v = if i < halfway {
                start + step * i as f32
            } else {
                end - step * (nframes - 1 - i) as f32
            };
            round_half_even(f64::from(v)) as usize
        })
        .collect()
}

/// `fetch_video`'s `(min_pixels, max_pixels)` for each frame of a video of `nframes`
/// sampled frames: at least 128 and at most 768 merged tokens per frame, and all frames
/// together within `total_pixels` (default: 90% of a 128k context's worth). The upper bound
/// stays a float, as in the reference, where it enters `smart_resize`'s square root.
pub fn video_pixel_bounds(
    nframes: usize,
    min_pixels: Option<usize>,
    max_pixels: Option<usize>,
    total_pixels: Option<f64>,
    factor: usize,
) -> (usize, f64) {
    let frame_min = VIDEO_MIN_TOKENS * factor * factor;
    let frame_max = VIDEO_MAX_TOKENS * factor * factor;
    let min_pixels = min_pixels.unwrap_or(frame_min);
    let total = total_pixels.unwrap_or(MODEL_SEQ_LEN as f64 * (factor * factor) as f64 * 0.9);
    let budget = (frame_max as f64).min(total / nframes as f64 * FRAME_FACTOR as f64);
    let limit = budget.max((min_pixels as f64 * 1.05).trunc());
    let max_pixels = match max_pixels {
        Some(asked) => (asked as f64).min(limit),
        None => limit,
    };
    (min_pixels, max_pixels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_sampling_clamps_and_rounds_to_pairs() {
        // 132 frames at 25 fps = 5.28 s; 2 fps -> 10.56 -> 10 frames.
        assert_eq!(smart_nframes(FrameSampling::default(), 132, 25.0), Ok(10));
        // A 9-frame clip is sampled at least 4 frames.
        assert_eq!(
            smart_nframes(
                FrameSampling::Fps {
                    fps: 0.1,
                    min_frames: None,
                    max_frames: None
                },
                9,
                10.0
            ),
            Ok(4)
        );
        assert_eq!(
            smart_nframes(FrameSampling::Count(1), 10, 25.0),
            Err(SamplingError::FrameCount {
                nframes: 0,
                total_frames: 10
            })
        );
        assert_eq!(
            smart_nframes(FrameSampling::default(), 10, 0.0),
            Err(SamplingError::BadFps(0.0))
        );
    }

    /// Every row of `fixtures/video_sampling.json` (qwen_vl_utils 0.0.14 + torch).
    #[test]
    fn sampling_matches_qwen_vl_utils() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/video_sampling.json"
        );
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("JSON");
        let rows = json["rows"].as_array().expect("rows");
        assert!(rows.len() > 40);
        for row in rows {
            let options = &row["options"];
            let uint = |k: &str| {
                options
                    .get(k)
                    .and_then(serde_json::Value::as_u64)
                    .map(|v| v as usize)
            };
            let sampling = match uint("nframes") {
                Some(n) => FrameSampling::Count(n),
                None => FrameSampling::Fps {
                    fps: options
                        .get("fps")
                        .and_then(serde_json::Value::as_f64)
                        .unwrap_or(DEFAULT_FPS),
                    min_frames: uint("min_frames"),
                    max_frames: uint("max_frames"),
                },
            };
            let total = row["total_frames"].as_u64().expect("total") as usize;
            let fps = row["video_fps"].as_f64().expect("fps");
            let n = smart_nframes(sampling, total, fps).expect("valid");
            assert_eq!(n as u64, row["nframes"].as_u64().expect("n"), "{row}");
            let want: Vec<usize> = row["indices"]
                .as_array()
                .expect("idx")
                .iter()
                .map(|v| v.as_u64().expect("int") as usize)
                .collect();
            assert_eq!(frame_indices(total, n), want, "{row}");
            let total_pixels = options
                .get("total_pixels")
                .and_then(serde_json::Value::as_f64);
            let (min, max) =
                video_pixel_bounds(n, uint("min_pixels"), uint("max_pixels"), total_pixels, 28);
            assert_eq!(
                min as u64,
                row["min_pixels"].as_u64().expect("min"),
                "{row}"
            );
            assert_eq!(max, row["max_pixels"].as_f64().expect("max"), "{row}");
        }
    }

    #[test]
    fn indices_span_the_video_evenly() {
        assert_eq!(
            frame_indices(132, 10),
            [0, 15, 29, 44, 58, 73, 87, 102, 116, 131]
        );
        assert_eq!(frame_indices(4, 4), [0, 1, 2, 3]);
    }
}
