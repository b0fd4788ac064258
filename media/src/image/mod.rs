//! Images: decoding (PNG, JPEG, WebP, GIF's first frame, BMP), conversion to RGB, Qwen2-VL's
//! "smart resize", Pillow-exact bicubic resampling, rescale + normalize, and patchify into
//! `[n_patches, C·T·P·P]` rows with their `(t, h, w)` grid — what transformers'
//! `Qwen2VLImageProcessorPil` produces.

pub mod bounds;
pub mod decode;
pub mod processor;
pub mod resample;

pub use bounds::{MAX_RESIZED_PIXELS, check_pixel_bounds, visual_tokens};
pub use decode::{
    DEFAULT_DECODE_LIMIT, MediaError, RgbImage, check_decode_size, decode_rgb, image_size, load_rgb,
};
pub use processor::{
    CLIP_MEAN, CLIP_STD, DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, ImageProcessorConfig,
    MAX_ASPECT_RATIO, Patches, smart_resize, smart_resize_video,
};
