//! The projector of Qwen2-VL (`PatchMerger`): LayerNorm each patch feature, concatenate each
//! 2×2 window of neighbouring patches (the processor already orders patches window by
//! window), and map the result through a GELU MLP into the language model's width.

use crate::linear::Linear;
use burn::module::Module;

use crate::linear::Project;
use burn::tensor::activation::gelu;
use burn::tensor::{Device, Tensor};

use super::layer_norm::{VISION_LAYER_NORM_EPS, VisionNorm};
use super::{VisionConfig, VisionVariant};
use crate::init::linear;

/// Merges `spatial_merge_size²` neighbouring patches into one language-model token.
///
/// The reference names the MLP's layers `mlp.0` and `mlp.2` (an `nn.Sequential` with the
/// GELU at index 1); the weight import table maps them to `fc1` / `fc2`.
#[derive(Module, Debug)]
pub struct PatchMerger {
    /// LayerNorm (Qwen2-VL) or RMSNorm (Qwen2.5-VL).
    pub ln_q: VisionNorm,
    pub fc1: Linear,
    pub fc2: Linear,
    pub merge_area: usize,
}

impl PatchMerger {
    /// A randomly initialized merger for the config's widths.
    pub fn new(config: &VisionConfig, device: &Device) -> Self {
        let merged = config.merged_dim();
        Self {
            ln_q: match config.variant {
                VisionVariant::Qwen2Vl => {
                    VisionNorm::new(config.embed_dim, VISION_LAYER_NORM_EPS, device)
                }
                VisionVariant::Qwen2_5Vl => {
                    VisionNorm::rms(config.embed_dim, VISION_LAYER_NORM_EPS, device)
                }
            },
            fc1: linear(merged, merged, true, device),
            fc2: linear(merged, config.hidden_size, true, device),
            merge_area: config.spatial_merge_size * config.spatial_merge_size,
        }
    }

    /// # Shapes
    /// - `x`: `[n_patches, embed_dim]`, patches ordered window by window
    /// - returns `[n_patches / merge_area, hidden_size]`
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let [n, d] = x.dims();
        let x = self
            .ln_q
            .forward(x)
            .reshape([n / self.merge_area, d * self.merge_area]); // [n/4, 4d]
        self.fc2.project(gelu(self.fc1.project(x)))
    }
}
