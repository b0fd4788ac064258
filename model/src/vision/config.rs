//! The vision tower's configuration, under the names of a Hugging Face Qwen2-VL
//! `vision_config`.

use burn::config::Config;
use thiserror::Error;

/// What is wrong with a vision input or configuration.
#[derive(Debug, Error, PartialEq)]
pub enum VisionError {
    #[error("grid {index} is {grid:?} (t, h, w): h and w must be positive multiples of {merge}")]
    BadGrid {
        index: usize,
        grid: [usize; 3],
        merge: usize,
    },
    #[error("the grids describe {expected} patches but pixel values hold {got}")]
    PatchCount { expected: usize, got: usize },
    #[error("pixel values have {got} features per patch, expected {expected} (C·T·P·P)")]
    PatchWidth { expected: usize, got: usize },
    #[error("vision config: {0}")]
    Config(String),
}

/// Configuration of the vision transformer and its patch merger.
#[derive(Config, Debug, PartialEq)]
pub struct VisionConfig {
    /// Number of transformer blocks.
    pub depth: usize,
    /// Width of the ViT.
    pub embed_dim: usize,
    /// Attention heads per block.
    pub num_heads: usize,
    /// MLP width as a multiple of `embed_dim`.
    pub mlp_ratio: usize,
    /// Output width of the patch merger: the language model's `hidden_size`.
    pub hidden_size: usize,
    #[config(default = 3)]
    pub in_channels: usize,
    /// Side of a square patch in pixels.
    #[config(default = 14)]
    pub patch_size: usize,
    /// Side of the square window of patches merged into one token.
    #[config(default = 2)]
    pub spatial_merge_size: usize,
    /// Frames per tubelet (an image's frame is repeated to fill it).
    #[config(default = 2)]
    pub temporal_patch_size: usize,
}

impl VisionConfig {
    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.num_heads
    }

    /// Width of the MLP's inner layer.
    pub fn mlp_hidden(&self) -> usize {
        self.embed_dim * self.mlp_ratio
    }

    /// Features of one flattened tubelet: `C · T · P · P` (1176 for the reference).
    pub fn patch_dim(&self) -> usize {
        self.in_channels * self.temporal_patch_size * self.patch_size * self.patch_size
    }

    /// Width of a merged window before the merger's MLP.
    pub fn merged_dim(&self) -> usize {
        self.embed_dim * self.spatial_merge_size * self.spatial_merge_size
    }

    /// The test-sized tower that matches `TextConfig::tiny` (hidden 64).
    pub fn tiny() -> Self {
        Self::new(2, 32, 4, 2, 64)
    }

    /// Qwen2-VL's tower (675M parameters) projecting into a language model of `hidden_size`.
    pub fn qwen2_vl(hidden_size: usize) -> Self {
        Self::new(32, 1280, 16, 4, hidden_size)
    }

    /// Checks that the numbers describe a buildable tower.
    pub fn validate(&self) -> Result<(), VisionError> {
        let bad = |msg: String| Err(VisionError::Config(msg));
        if self.depth == 0 || self.embed_dim == 0 || self.num_heads == 0 || self.hidden_size == 0 {
            return bad("depth, embed_dim, num_heads and hidden_size must be positive".into());
        }
        if !self.embed_dim.is_multiple_of(self.num_heads) {
            return bad(format!(
                "embed_dim {} is not divisible by num_heads {}",
                self.embed_dim, self.num_heads
            ));
        }
        if !self.head_dim().is_multiple_of(4) {
            return bad(format!(
                "head_dim {} must be a multiple of 4 (2D rotary: two halves of pairs)",
                self.head_dim()
            ));
        }
        if self.spatial_merge_size == 0 || self.temporal_patch_size == 0 || self.patch_size == 0 {
            return bad(
                "patch_size, spatial_merge_size and temporal_patch_size must be positive".into(),
            );
        }
        Ok(())
    }
}

/// Checks `(t, h, w)` grids (h and w whole windows of `merge`) and returns the number of
/// patches they describe.
pub fn count_patches(grids: &[[usize; 3]], merge: usize) -> Result<usize, VisionError> {
    let mut total = 0;
    for (index, &grid) in grids.iter().enumerate() {
        let [t, h, w] = grid;
        if t == 0 || h == 0 || w == 0 || !h.is_multiple_of(merge) || !w.is_multiple_of(merge) {
            return Err(VisionError::BadGrid { index, grid, merge });
        }
        total += t * h * w;
    }
    Ok(total)
}
