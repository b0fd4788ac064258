//! nuri-encoders: the vision/video encoder (Qwen2-VL's ViT with 2D RoPE) and the projector
//! (patch merger) into the language model's width. Later: media decoding, frame sampling,
//! resize/normalize/patchify.

#[macro_use]
mod fused;

pub mod act;
pub mod attend;
pub mod image;
pub(crate) mod kernels;
pub mod norm;
pub mod projector;
pub mod rowops;
pub mod video;
pub mod vision;

pub use projector::PatchMerger;
pub use vision::{VisionConfig, VisionError, VisionTransformer};

/// Python's `round` (half to even), which the reference's size and frame arithmetic uses.
pub(crate) fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    }
}

/// Whether `device` is the flex (CPU) backend, with or without autodiff: where the fused
/// operations of `attend` and `act` run.
pub(crate) fn on_flex(device: &burn::tensor::Device) -> bool {
    matches!(
        device.as_dispatch().clone().inner(),
        burn::backend::DispatchDevice::Flex(_)
    )
}
