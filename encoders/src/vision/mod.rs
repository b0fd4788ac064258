//! Qwen2-VL's vision transformer: the configuration, the 2D rotary embedding and the ViT.

mod config;
pub mod rope2d;
pub mod vit;

pub use config::{VisionConfig, VisionError, count_patches};
pub use vit::VisionTransformer;
