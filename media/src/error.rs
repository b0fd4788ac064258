//! The one error type of this crate.

use std::path::PathBuf;

use thiserror::Error;

use crate::image::processor::MAX_ASPECT_RATIO;

/// Why an image or a video could not be turned into model inputs.
#[derive(Debug, Error)]
pub enum MediaError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The path is not a regular file (a folder where a file was expected, a FIFO, a device):
    /// refused before it is opened, so reading it can neither block nor run forever.
    #[error(
        "{path}: not a regular file ({kind}); media are read from files (videos also from folders of frames)"
    )]
    NotAFile { path: PathBuf, kind: &'static str },
    #[error("{source_name}: cannot decode image: {message}")]
    Decode {
        source_name: String,
        message: String,
    },
    #[error(
        "{source_name}: image is {width}×{height}; both sides must be at least 1 pixel and the aspect ratio at most {MAX_ASPECT_RATIO}"
    )]
    BadSize {
        source_name: String,
        width: usize,
        height: usize,
    },
    /// A size or sampling option out of range (`min_pixels` over
    /// [`MAX_RESIZED_PIXELS`](crate::image::MAX_RESIZED_PIXELS), `min_pixels` over
    /// `max_pixels`, a zero `max_pixels`, a rate that is not positive): refused before
    /// anything is decoded or allocated.
    #[error("{source_name}: `{field}` {message}")]
    BadOption {
        source_name: String,
        field: &'static str,
        message: String,
    },
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("{source_name}: cannot decode video: {message}")]
    Video {
        source_name: String,
        message: String,
    },
    #[error(
        "{source_name}: reading this video needs FFmpeg; rebuild with `--features ffmpeg` (pure Rust reads animated GIF, APNG, animated WebP and folders of frames)"
    )]
    NeedsFfmpeg { source_name: String },
    #[error("{source_name}: {source}")]
    Sampling {
        source_name: String,
        source: crate::video::SamplingError,
    },
    /// A declared image, canvas or video frame size over the decode limit, refused from the
    /// header before any pixel is decoded.
    #[error("{source_name}: {pixels} pixels after decoding exceeds the limit of {limit}")]
    TooLarge {
        source_name: String,
        pixels: usize,
        limit: usize,
    },
}
