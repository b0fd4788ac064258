//! nuri-encoders: media decoding (images; videos as GIF/APNG/WebP/frame folders; mp4 and more
//! through FFmpeg), frame sampling, resize/normalize/patchify, the vision transformer and the
//! projector into the language model's width.
