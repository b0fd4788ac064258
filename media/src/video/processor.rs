//! A video to model inputs, as `qwen_vl_utils.fetch_video` followed by transformers'
//! `Qwen2VLVideoProcessor(do_resize=False)` do it: sample frames by rate, size them within
//! the per-video pixel budget, resize with torchvision's antialiased bicubic, then rescale,
//! normalize and patchify exactly like an image whose frames fill the temporal patch.

use std::path::Path;

use super::decode::{DEFAULT_FOLDER_FPS, FrameSource, VideoInfo, open_video};
use super::resample::resize_bicubic_antialias;
use super::sampling::{FrameSampling, frame_indices, smart_nframes, video_pixel_bounds};
use crate::image::{
    DEFAULT_DECODE_LIMIT, ImageProcessorConfig, MediaError, Patches, RgbImage, check_pixel_bounds,
    smart_resize_video, visual_tokens,
};

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
    /// Most pixels of a decoded frame (and of an animation's canvas), refused from the
    /// header (default: [`DEFAULT_DECODE_LIMIT`]).
    pub decode_limit: usize,
}

impl Default for VideoOptions {
    fn default() -> Self {
        Self {
            sampling: FrameSampling::default(),
            min_pixels: None,
            max_pixels: None,
            total_pixels: None,
            folder_fps: DEFAULT_FOLDER_FPS,
            decode_limit: DEFAULT_DECODE_LIMIT,
        }
    }
}

impl VideoOptions {
    /// Checks the options before anything is opened: pixel bounds as
    /// [`check_pixel_bounds`] checks them, positive finite `total_pixels` and `folder_fps`.
    /// The error ([`MediaError::BadOption`]) names the field.
    pub fn check(&self, source_name: &str) -> Result<(), MediaError> {
        check_pixel_bounds(self.min_pixels, self.max_pixels, source_name)?;
        let positive = |field, value: f64| {
            if value.is_finite() && value > 0.0 {
                return Ok(());
            }
            Err(MediaError::BadOption {
                source_name: source_name.to_string(),
                field,
                message: format!("must be a positive number, got {value}"),
            })
        };
        if let Some(total) = self.total_pixels {
            positive("total_pixels", total)?;
        }
        positive("folder_fps", self.folder_fps)
    }
}

/// What the first pass decides for a video before any frame is decoded: the frames to
/// sample, their size and the patch grid, hence its token count.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoPlan {
    pub info: VideoInfo,
    /// Indices of the frames to sample, in the video's own frame numbering.
    pub frame_indices: Vec<usize>,
    /// `(height, width)` every frame is resized to.
    pub resized: (usize, usize),
    /// `(t, h, w)` in patches.
    pub grid_thw: [usize; 3],
}

impl VideoPlan {
    /// Merged visual tokens the video will take (see [`visual_tokens`]).
    pub fn tokens(&self, merge_size: usize) -> usize {
        visual_tokens(self.grid_thw, merge_size)
    }

    /// Frames per second of video the samples stand for (`nframes / total · fps`).
    pub fn sample_fps(&self) -> f64 {
        self.frame_indices.len() as f64 / self.info.total_frames as f64 * self.info.fps
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

/// The first pass: checks `options`, probes `source` (headers only, see
/// [`FrameSource::probe`]) and decides the sampled frames, their size and the grid.
pub fn plan_video(
    config: &ImageProcessorConfig,
    source: &mut dyn FrameSource,
    options: &VideoOptions,
) -> Result<VideoPlan, MediaError> {
    let name = source.name().to_string();
    options.check(&name)?;
    let info = source.probe()?;
    let nframes =
        smart_nframes(options.sampling, info.total_frames, info.fps).map_err(|source| {
            MediaError::Sampling {
                source_name: name.clone(),
                source,
            }
        })?;
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
    let p = config.patch_size;
    Ok(VideoPlan {
        info,
        frame_indices: frame_indices(info.total_frames, nframes),
        resized: (height, width),
        // Frames are padded to a whole temporal patch.
        grid_thw: [
            nframes.div_ceil(config.temporal_patch_size),
            height / p,
            width / p,
        ],
    })
}

/// The second pass: decodes the frames `plan` sampled, resizes and patchifies them.
pub fn decode_video(
    config: &ImageProcessorConfig,
    source: &mut dyn FrameSource,
    plan: VideoPlan,
) -> Result<VideoPatches, MediaError> {
    let name = source.name().to_string();
    let sample_fps = plan.sample_fps();
    let VideoPlan {
        info,
        frame_indices,
        resized: (height, width),
        grid_thw,
    } = plan;
    let mut frames: Vec<RgbImage> = Vec::with_capacity(frame_indices.len());
    source.read_frames(&frame_indices, &mut |_, frame| {
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
    if frames.len() != frame_indices.len() {
        return Err(MediaError::Video {
            source_name: name,
            message: format!(
                "{} frames were sampled but {} decoded",
                frame_indices.len(),
                frames.len()
            ),
        });
    }
    let refs: Vec<&RgbImage> = frames.iter().collect();
    let patches = config.patchify(&refs);
    debug_assert_eq!(patches.grid_thw, grid_thw, "the plan's grid");
    Ok(VideoPatches {
        patches,
        frame_indices,
        total_frames: info.total_frames,
        video_fps: info.fps,
        sample_fps,
        resized: (height, width),
    })
}

/// Samples, resizes and patchifies a video read from `source`: [`plan_video`], then
/// [`decode_video`].
pub fn preprocess_video(
    config: &ImageProcessorConfig,
    source: &mut dyn FrameSource,
    options: &VideoOptions,
) -> Result<VideoPatches, MediaError> {
    let plan = plan_video(config, source, options)?;
    decode_video(config, source, plan)
}

/// Opens and processes a video file or folder of frames.
pub fn load_video(
    config: &ImageProcessorConfig,
    path: &Path,
    options: &VideoOptions,
) -> Result<VideoPatches, MediaError> {
    let mut source = open_video(path, options.folder_fps, options.decode_limit)?;
    preprocess_video(config, source.as_mut(), options)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::animation::tiny_gif;

    fn write(dir: &Path, file: &str, bytes: &[u8]) -> std::path::PathBuf {
        std::fs::create_dir_all(dir).expect("mkdir");
        let path = dir.join(file);
        std::fs::write(&path, bytes).expect("write");
        path
    }

    #[test]
    fn a_10000_frame_gif_is_planned_without_decoding_a_frame() {
        let dir = std::env::temp_dir().join(format!("nuri-plan-{}", std::process::id()));
        // 230 KB: 10,000 frames at 100 fps on a 2000×2000 canvas.
        let path = write(&dir, "long.gif", &tiny_gif(2000, 2000, 10_000, 1));
        let config = ImageProcessorConfig::default();
        let options = VideoOptions::default();
        let mut source =
            open_video(&path, options.folder_fps, options.decode_limit).expect("opens");
        let plan = plan_video(&config, source.as_mut(), &options).expect("plans");
        // 100 s at 2 fps: 200 frames, each within the per-video budget.
        assert_eq!(plan.info.total_frames, 10_000);
        assert_eq!(plan.frame_indices.len(), 200);
        assert_eq!(plan.grid_thw, [100, 54, 54]);
        assert_eq!(plan.tokens(config.merge_size), 72_900);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn video_frames_obey_the_callers_decode_limit() {
        let dir = std::env::temp_dir().join(format!("nuri-vlimit-{}", std::process::id()));
        let path = write(&dir, "wide.gif", &tiny_gif(3000, 1000, 4, 10));
        let options = VideoOptions {
            decode_limit: 1 << 20,
            ..Default::default()
        };
        let err = load_video(&ImageProcessorConfig::default(), &path, &options).unwrap_err();
        assert!(
            matches!(
                err,
                MediaError::TooLarge {
                    pixels: 3_000_000,
                    limit: 1_048_576,
                    ..
                }
            ),
            "{err}"
        );
        // A folder of frames: the same limit, from the first frame's header.
        let frames = dir.join("frames");
        for i in 0..2 {
            let mut png = Vec::new();
            ::image::RgbImage::new(2000, 600)
                .write_to(
                    &mut std::io::Cursor::new(&mut png),
                    ::image::ImageFormat::Png,
                )
                .expect("encode");
            write(&frames, &format!("{i}.png"), &png);
        }
        let err = load_video(&ImageProcessorConfig::default(), &frames, &options).unwrap_err();
        assert!(
            matches!(
                err,
                MediaError::TooLarge {
                    pixels: 1_200_000,
                    ..
                }
            ),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn absurd_video_options_are_named_errors_before_anything_is_read() {
        let missing = Path::new("/no/such/clip.gif");
        for (options, field) in [
            (
                VideoOptions {
                    min_pixels: Some(1_000_000_000_000),
                    ..Default::default()
                },
                "min_pixels",
            ),
            (
                VideoOptions {
                    max_pixels: Some(0),
                    ..Default::default()
                },
                "max_pixels",
            ),
            (
                VideoOptions {
                    min_pixels: Some(5000),
                    max_pixels: Some(4000),
                    ..Default::default()
                },
                "min_pixels",
            ),
            (
                VideoOptions {
                    total_pixels: Some(f64::NAN),
                    ..Default::default()
                },
                "total_pixels",
            ),
        ] {
            let err = options.check("clip.gif").unwrap_err();
            assert!(
                matches!(&err, MediaError::BadOption { field: f, .. } if *f == field),
                "{field}: {err}"
            );
            assert!(err.to_string().contains(field), "{err}");
            // Through the pipeline too: the options fail before the (missing) file.
            let dir = std::env::temp_dir().join(format!("nuri-opts-{}", std::process::id()));
            let path = write(&dir, "clip.gif", &tiny_gif(64, 64, 4, 10));
            let err = load_video(&ImageProcessorConfig::default(), &path, &options).unwrap_err();
            assert!(matches!(err, MediaError::BadOption { .. }), "{err}");
            let _ = std::fs::remove_dir_all(dir);
        }
        assert!(
            VideoOptions::default()
                .check(&missing.display().to_string())
                .is_ok()
        );
    }

    #[test]
    fn open_video_refuses_a_fifo_but_reads_a_folder() {
        let dir = std::env::temp_dir().join(format!("nuri-vfifo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let fifo = dir.join("pipe.gif");
        if crate::file::make_fifo(&fifo) {
            let err = load_video(
                &ImageProcessorConfig::default(),
                &fifo,
                &VideoOptions::default(),
            )
            .unwrap_err();
            assert!(
                matches!(err, MediaError::NotAFile { kind: "a FIFO", .. }),
                "{err}"
            );
        }
        // The folder holds no frames: an error about frames, not about being a folder.
        let err = load_video(
            &ImageProcessorConfig::default(),
            &dir,
            &VideoOptions::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("holds no frames"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
