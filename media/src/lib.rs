//! nuri-media: what happens to a picture or a clip before it becomes a tensor. Images are
//! decoded, converted to RGB, resized as Qwen2-VL's processor does ("smart resize",
//! Pillow-exact bicubic), normalized and cut into patches; videos are decoded (animated
//! GIF/APNG/WebP and frame folders in pure Rust, anything FFmpeg reads behind the `ffmpeg`
//! feature), their frames sampled as `qwen_vl_utils` samples them, resized with
//! torchvision's antialiased bicubic and patchified the same way.
//!
//! Declared sizes are checked before anything is decoded (see
//! [`image::DEFAULT_DECODE_LIMIT`]): an image's header, an animation's canvas and frames, a
//! video's frame count and rate are read first ([`image::image_size`],
//! [`video::plan_video`]), so a caller can refuse media by their token count
//! ([`image::visual_tokens`]) before paying for their pixels. Only regular files are opened
//! ([`file`]). This crate knows no tensor library: its output is
//! plain `f32` rows and their `(t, h, w)` grids.

pub mod error;
pub mod file;
pub mod image;
pub mod video;

pub use error::MediaError;
pub use file::{check_regular_file, open_regular_file, read_regular_file};
pub use image::RgbImage;

/// Python's `round` (half to even), which the reference's size and frame arithmetic uses.
pub(crate) fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    }
}
