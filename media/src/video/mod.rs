//! Videos: decoding (animated GIF/APNG/WebP and frame folders in pure Rust; anything FFmpeg
//! reads with the `ffmpeg` feature), frame sampling and the per-video pixel budget as
//! `qwen_vl_utils` does them, torchvision's antialiased bicubic resize, and patchify.

pub(crate) mod animation;
pub mod decode;
#[cfg(feature = "ffmpeg")]
pub mod ffmpeg;
mod gif_canvas;
mod headers;
pub mod processor;
pub mod resample;
pub mod sampling;

pub use decode::{DEFAULT_FOLDER_FPS, FrameSource, VideoInfo, open_video};
pub use processor::{
    VideoOptions, VideoPatches, VideoPlan, decode_video, load_video, plan_video, preprocess_video,
};
pub use resample::resize_bicubic_antialias;
pub use sampling::{
    FrameSampling, SamplingError, frame_indices, smart_nframes, video_pixel_bounds,
};
