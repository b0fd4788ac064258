//! The vision tower's configuration, under the names of a Hugging Face Qwen2-VL
//! `vision_config`, with what Qwen2.5-VL's tower (also EXAONE 4.5's and HyperCLOVA X
//! Vision's) adds: RMSNorm and a SwiGLU MLP, window attention with a few full-attention
//! blocks, grouped key/value heads (EXAONE 4.5).

use burn::config::Config;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Which tower's blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum VisionVariant {
    /// Qwen2-VL: LayerNorm, QuickGELU MLP (`fc1`, `fc2`), attention over whole frames.
    #[default]
    Qwen2Vl,
    /// Qwen2.5-VL: RMSNorm, SiLU-gated MLP with biases (`gate_proj`, `up_proj`,
    /// `down_proj`), window attention except in `fullatt_block_indexes`, RMSNorm in the merger.
    Qwen2_5Vl,
}

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
    /// Which tower's blocks.
    #[config(default = "VisionVariant::Qwen2Vl")]
    pub variant: VisionVariant,
    /// Width of the gated MLP (Qwen2.5-VL; Qwen2-VL's is `embed_dim · mlp_ratio`).
    #[config(default = 0)]
    pub intermediate_size: usize,
    /// Side of an attention window in pixels (Qwen2.5-VL: 112 = 4×4 merged tokens).
    #[config(default = 0)]
    pub window_size: usize,
    /// Blocks that attend over whole frames instead of windows (Qwen2.5-VL).
    #[config(default = "Vec::new()")]
    pub fullatt_block_indexes: Vec<usize>,
    /// Key/value heads (EXAONE 4.5's grouped-query vision attention); `None`: `num_heads`.
    #[config(default = "None")]
    pub num_key_value_heads: Option<usize>,
    /// Qwen2.5-VL's video time scale: temporal M-RoPE positions advance by
    /// `second_per_grid_t · tokens_per_second` per temporal patch.
    #[config(default = 4.0)]
    pub tokens_per_second: f64,
}

impl VisionConfig {
    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.num_heads
    }

    /// Width of the MLP's inner layer.
    pub fn mlp_hidden(&self) -> usize {
        match self.variant {
            VisionVariant::Qwen2Vl => self.embed_dim * self.mlp_ratio,
            VisionVariant::Qwen2_5Vl => self.intermediate_size,
        }
    }

    /// Key/value heads of every block's attention.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_heads)
    }

    /// Side of an attention window in merged tokens (0: no window attention).
    pub fn window_tokens(&self) -> usize {
        match self.variant {
            VisionVariant::Qwen2Vl => 0,
            VisionVariant::Qwen2_5Vl => {
                self.window_size / self.spatial_merge_size.max(1) / self.patch_size.max(1)
            }
        }
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

    /// The quickstart's tower: 2 blocks of 64 with 8-pixel patches, into a 128-wide model.
    pub fn quickstart() -> Self {
        Self::new(2, 64, 4, 2, 128).with_patch_size(8)
    }

    /// Qwen2-VL's tower (675M parameters) projecting into a language model of `hidden_size`.
    pub fn qwen2_vl(hidden_size: usize) -> Self {
        Self::new(32, 1280, 16, 4, hidden_size)
    }

    /// Qwen2.5-VL's tower (its 3B/7B/32B/72B checkpoints' `vision_config`: 32 blocks of 1280,
    /// windows of 112 pixels, full attention in blocks 7, 15, 23, 31) into `out_hidden_size`.
    pub fn qwen2_5_vl(out_hidden_size: usize) -> Self {
        Self::new(32, 1280, 16, 4, out_hidden_size)
            .with_variant(VisionVariant::Qwen2_5Vl)
            .with_intermediate_size(3420)
            .with_window_size(112)
            .with_fullatt_block_indexes(vec![7, 15, 23, 31])
            .with_tokens_per_second(2.0)
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
        let kv = self.kv_heads();
        if kv == 0 || !self.num_heads.is_multiple_of(kv) {
            return bad(format!(
                "num_heads {} is not a multiple of num_key_value_heads {kv}",
                self.num_heads
            ));
        }
        if self.variant == VisionVariant::Qwen2_5Vl {
            if self.intermediate_size == 0 {
                return bad("intermediate_size must be positive".into());
            }
            let all_full = (0..self.depth).all(|i| self.fullatt_block_indexes.contains(&i));
            if self.window_tokens() == 0 && !all_full {
                return bad(format!(
                    "window_size {} is smaller than one merged token ({} pixels)",
                    self.window_size,
                    self.spatial_merge_size * self.patch_size
                ));
            }
            if let Some(&i) = self
                .fullatt_block_indexes
                .iter()
                .find(|&&i| i >= self.depth)
            {
                return bad(format!(
                    "fullatt_block_indexes names block {i} but depth is {}",
                    self.depth
                ));
            }
            if !(self.tokens_per_second.is_finite() && self.tokens_per_second >= 0.0) {
                return bad(format!(
                    "tokens_per_second {} is not a number of tokens",
                    self.tokens_per_second
                ));
            }
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
