//! A video to model inputs, as `qwen_vl_utils.fetch_video` followed by transformers'
//! `Qwen2VLVideoProcessor(do_resize=False)` do it: sample frames by rate, size them within
//! the per-video pixel budget, resize with torchvision's antialiased bicubic, then rescale,
//! normalize and patchify exactly like an image whose frames fill the temporal patch.

use std::path::Path;

use super::decode::{DEFAULT_FOLDER_FPS, FrameSource, open_video};
use super::resample::resize_bicubic_antialias;
use super::sampling::{FrameSampling, frame_indices, smart_nframes, video_pixel_bounds};
use crate::image::{ImageProcessorConfig, MediaError, Patches, RgbImage, smart_resize_video};

/// Per-video options, the keys of a `qwen_vl_utils` video element.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoOptions {
    pub sampling: FrameSampling,
    /// Fewest pixels per frame (default: 128 merged tokens).
    pub min_pixels: Option<usize>,
    /// Most pixels per frame (default and cap: 768 merged tokens, and the total budget).
    pub max_pixels: Option<usize>,
    /// Pixels for all frames together (default: 90% of a 128k context).
    pub total_pixels: Option<f64>,
    /// The rate a folder of frames was recorded at.
    pub folder_fps: f64,
}

impl Default for VideoOptions {
    fn default() -> Self {
        Self {
            sampling: FrameSampling::default(),
            min_pixels: None,
            max_pixels: None,
            total_pixels: None,
            folder_fps: DEFAULT_FOLDER_FPS,
        }
    }
}

/// A processed video: its patches and what sampling chose.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoPatches {
    pub patches: Patches,
    /// Indices of the frames sampled, in the video's own frame numbering.
    pub frame_indices: Vec<usize>,
    pub total_frames: usize,
    /// The video's own rate.
    pub video_fps: f64,
    /// Frames per second of video the samples stand for (`nframes / total · fps`).
    pub sample_fps: f64,
    /// `(height, width)` every frame was resized to.
    pub resized: (usize, usize),
}

impl VideoPatches {
    /// Seconds of video one temporal patch spans (`temporal_patch_size / sample_fps`).
    pub fn seconds_per_grid(&self, temporal_patch_size: usize) -> f64 {
        temporal_patch_size as f64 / self.sample_fps
    }
}

/// Samples, resizes and patchifies a video read from `source`.
pub fn preprocess_video(
    config: &ImageProcessorConfig,
    source: &mut dyn FrameSource,
    options: &VideoOptions,
) -> Result<VideoPatches, MediaError> {
    let name = source.name().to_string();
    let info = source.probe()?;
    let nframes =
        smart_nframes(options.sampling, info.total_frames, info.fps).map_err(|source| {
            MediaError::Sampling {
                source_name: name.clone(),
                source,
            }
        })?;
    let indices = frame_indices(info.total_frames, nframes);
    let factor = config.factor();
    let (min_pixels, max_pixels) = video_pixel_bounds(
        nframes,
        options.min_pixels,
        options.max_pixels,
        options.total_pixels,
        factor,
    );
    let (height, width) =
        smart_resize_video(info.height, info.width, factor, min_pixels, max_pixels).ok_or_else(
            || MediaError::BadSize {
                source_name: name.clone(),
                width: info.width,
                height: info.height,
            },
        )?;
    let mut frames: Vec<RgbImage> = Vec::with_capacity(nframes);
    source.read_frames(&indices, &mut |_, frame| {
        if (frame.width, frame.height) != (info.width, info.height) {
            return Err(MediaError::Video {
                source_name: name.clone(),
                message: format!(
                    "frame size changed from {}×{} to {}×{}",
                    info.width, info.height, frame.width, frame.height
                ),
            });
        }
        frames.push(resize_bicubic_antialias(&frame, width, height));
        Ok(())
    })?;
    let refs: Vec<&RgbImage> = frames.iter().collect();
    Ok(VideoPatches {
        patches: config.patchify(&refs),
        frame_indices: indices,
        total_frames: info.total_frames,
        video_fps: info.fps,
        sample_fps: nframes as f64 / info.total_frames as f64 * info.fps,
        resized: (height, width),
    })
}

/// Opens and processes a video file or folder of frames.
pub fn load_video(
    config: &ImageProcessorConfig,
    path: &Path,
    options: &VideoOptions,
) -> Result<VideoPatches, MediaError> {
    let mut source = open_video(path, options.folder_fps)?;
    preprocess_video(config, source.as_mut(), options)
}
