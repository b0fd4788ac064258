//! Qwen2-VL's vision side: the configuration, the 2D rotary embedding, the ViT and the patch
//! merger that projects its output into the language model's width.

mod config;
pub mod layer_norm;
pub mod projector;
pub mod rope2d;
pub mod vit;

pub use config::{VisionConfig, VisionError, VisionVariant, count_patches};
pub use layer_norm::{LayerNorm, VisionNorm};
pub use projector::PatchMerger;
pub use vit::VisionTransformer;
