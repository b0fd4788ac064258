//! nuri-encoders: the vision/video encoder (Qwen2-VL's ViT with 2D RoPE) and the projector
//! (patch merger) into the language model's width. Later: media decoding, frame sampling,
//! resize/normalize/patchify.

pub mod image;
pub mod norm;
pub mod projector;
pub mod video;
pub mod vision;

pub use projector::PatchMerger;
pub use vision::{VisionConfig, VisionError, VisionTransformer};
