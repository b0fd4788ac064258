//! Qwen2-VL's vision transformer (`Qwen2VisionTransformerPretrainedModel` in transformers):
//! a tubelet embedding, pre-norm blocks with 2D rotary attention and a QuickGELU MLP, and the
//! patch merger. Attention never crosses from one temporal slice of one image or video to
//! another: the reference's `cu_seqlens` cut the patches into `h·w` runs, one per slice.
//!
//! Qwen2.5-VL's tower (`Qwen2_5_VisionTransformerPretrainedModel`; also EXAONE 4.5's, with
//! grouped key/value heads, and HyperCLOVA X Vision's) uses RMSNorm and a SiLU-gated MLP, and
//! attends within windows of `window_size` pixels except in `fullatt_block_indexes`: the
//! merged tokens are reordered window by window before the blocks ([`window_order`]) and put
//! back after them.

use crate::linear::Linear;
use burn::module::{Module, Param};

use crate::linear::Project;
use burn::tensor::{DType, Device, Int, Tensor, TensorData};

use super::config::{VisionConfig, VisionError, VisionVariant, count_patches};
use super::layer_norm::{VISION_LAYER_NORM_EPS, VisionNorm};
use super::projector::PatchMerger;
use super::rope2d::{patch_positions, vision_rotary_tables};
use crate::init::{linear, normal_init};
use nuri_kernels::attend_grouped;

/// The reference's `Conv3d(C, embed, kernel = stride = (T, P, P), bias = False)`. Its kernel
/// covers each tubelet exactly once, so it is a linear map of the flattened tubelet; the
/// weight keeps the checkpoint's 5D shape `[embed, C, T, P, P]`.
#[derive(Module, Debug)]
pub struct PatchProjection {
    pub weight: Param<Tensor<5>>,
}

/// Tubelet embedding.
#[derive(Module, Debug)]
pub struct PatchEmbed {
    pub proj: PatchProjection,
}

impl PatchEmbed {
    fn new(config: &VisionConfig, device: &Device) -> Self {
        let shape = [
            config.embed_dim,
            config.in_channels,
            config.temporal_patch_size,
            config.patch_size,
            config.patch_size,
        ];
        Self {
            proj: PatchProjection {
                weight: normal_init().init(shape, device),
            },
        }
    }

    /// # Shapes
    /// - `x`: `[n_patches, C·T·P·P]` → `[n_patches, embed_dim]`
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let [embed, c, t, p, _] = self.proj.weight.dims();
        let weight = self.proj.weight.val().reshape([embed, c * t * p * p]); // [embed, CTPP]
        x.matmul(weight.transpose())
    }
}

/// Where the patches of one forward sit: rotary tables and the attention runs.
#[derive(Debug, Clone)]
pub struct PatchLayout {
    /// `[n, 1, head_dim]`
    pub cos: Tensor<3>,
    /// `[n, 1, head_dim]`
    pub sin: Tensor<3>,
    /// Lengths of the runs of patches that attend to each other (one per temporal slice).
    pub segments: Vec<usize>,
}

/// Multi-head self-attention of the vision tower, with a fused q/k/v projection
/// (`[q; k; v]`, the keys and values over `num_kv_heads` heads).
#[derive(Module, Debug)]
pub struct VisionAttention {
    pub qkv: Linear,
    pub proj: Linear,
    pub num_heads: usize,
    pub num_kv_heads: usize,
}

impl VisionAttention {
    /// Attends each run of `layout.segments` to itself only.
    ///
    /// # Shapes
    /// - `x`: `[n, embed]` → `[n, embed]`
    pub fn forward(&self, x: Tensor<2>, layout: &PatchLayout) -> Tensor<2> {
        let PatchLayout { cos, sin, segments } = layout;
        let [n, d] = x.dims();
        let (h, kvh) = (self.num_heads, self.num_kv_heads);
        let hd = d / h;
        let qkv = self.qkv.project(x); // [n, (h + 2 kvh) · hd]
        let part = |start: usize, heads: usize| {
            qkv.clone()
                .narrow(1, start * hd, heads * hd)
                .reshape([n, heads, hd])
        };
        // In fp32 whatever the model's dtype, then back (as the reference does).
        let rotate = |t: Tensor<3>| {
            let dtype = t.dtype();
            let t = t.cast(DType::F32);
            nuri_kernels::rope(t, cos.clone(), sin.clone()).cast(dtype)
        };
        let q = rotate(part(0, h)).swap_dims(0, 1); // [h, n, hd]
        let k = rotate(part(h, kvh)).swap_dims(0, 1); // [kvh, n, hd]
        let v = part(h + kvh, kvh).swap_dims(0, 1);
        // Consecutive runs of equal length (the frames of a video, a batch of same-size
        // images) go through one batched attention call.
        let mut outputs = Vec::with_capacity(segments.len());
        let mut start = 0;
        let mut i = 0;
        while i < segments.len() {
            let len = segments[i];
            let runs = segments[i..].iter().take_while(|&&l| l == len).count();
            let span = runs * len;
            let group = |t: &Tensor<3>, heads: usize| {
                t.clone()
                    .narrow(1, start, span)
                    .reshape([heads, runs, len, hd])
                    .swap_dims(0, 1) // [runs, heads, len, hd]
            };
            let out = attend_grouped(group(&q, h), group(&k, kvh), group(&v, kvh), None, false); // [runs, h, len, hd]
            outputs.push(out.swap_dims(0, 1).reshape([h, span, hd]));
            start += span;
            i += runs;
        }
        let out = Tensor::cat(outputs, 1); // [h, n, hd]
        let out = out.swap_dims(0, 1).reshape([n, d]); // [n, h * hd]
        self.proj.project(out)
    }
}

/// The block's MLP: `fc2(quick_gelu(fc1(x)))` (Qwen2-VL), or
/// `down_proj(silu(gate_proj(x)) · up_proj(x))` with biases (Qwen2.5-VL); the variant's
/// layers are present, the other's are `None`.
#[derive(Module, Debug)]
pub struct VisionMlp {
    pub fc1: Option<Linear>,
    pub fc2: Option<Linear>,
    pub gate_proj: Option<Linear>,
    pub up_proj: Option<Linear>,
    pub down_proj: Option<Linear>,
}

impl VisionMlp {
    fn new(config: &VisionConfig, device: &Device) -> Self {
        let (d, inner) = (config.embed_dim, config.mlp_hidden());
        let qwen2 = config.variant == VisionVariant::Qwen2Vl;
        let layer = |on: bool, i: usize, o: usize| on.then(|| linear(i, o, true, device));
        Self {
            fc1: layer(qwen2, d, inner),
            fc2: layer(qwen2, inner, d),
            gate_proj: layer(!qwen2, d, inner),
            up_proj: layer(!qwen2, d, inner),
            down_proj: layer(!qwen2, inner, d),
        }
    }

    /// # Shapes
    /// - `x`: `[n, embed]` → `[n, embed]`
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        match (
            &self.fc1,
            &self.fc2,
            &self.gate_proj,
            &self.up_proj,
            &self.down_proj,
        ) {
            (Some(fc1), Some(fc2), ..) => fc2.project(quick_gelu(fc1.project(x))),
            (_, _, Some(gate), Some(up), Some(down)) => {
                let gated = nuri_kernels::swiglu(gate.project(x.clone()), up.project(x));
                down.project(gated)
            }
            _ => unreachable!("a vision MLP is built with one variant's layers"),
        }
    }
}

/// QuickGELU, `x · σ(1.702 x)` (the reference config's `hidden_act`).
fn quick_gelu(x: Tensor<2>) -> Tensor<2> {
    nuri_kernels::sigmoid_gate(x, 1.702)
}

/// One pre-norm transformer block.
#[derive(Module, Debug)]
pub struct VisionBlock {
    pub norm1: VisionNorm,
    pub norm2: VisionNorm,
    pub attn: VisionAttention,
    pub mlp: VisionMlp,
}

impl VisionBlock {
    fn new(config: &VisionConfig, device: &Device) -> Self {
        let d = config.embed_dim;
        let norm = || match config.variant {
            VisionVariant::Qwen2Vl => VisionNorm::new(d, VISION_LAYER_NORM_EPS, device),
            VisionVariant::Qwen2_5Vl => VisionNorm::rms(d, VISION_LAYER_NORM_EPS, device),
        };
        let kv_width = config.kv_heads() * config.head_dim();
        Self {
            norm1: norm(),
            norm2: norm(),
            attn: VisionAttention {
                qkv: linear(d, d + 2 * kv_width, true, device),
                proj: linear(d, d, true, device),
                num_heads: config.num_heads,
                num_kv_heads: config.kv_heads(),
            },
            mlp: VisionMlp::new(config, device),
        }
    }

    /// # Shapes
    /// - `x`: `[n, embed]` → `[n, embed]`
    pub fn forward(&self, x: Tensor<2>, layout: &PatchLayout) -> Tensor<2> {
        let x = x.clone() + self.attn.forward(self.norm1.forward(x), layout);
        x.clone() + self.mlp.forward(self.norm2.forward(x))
    }
}

/// Qwen2.5-VL's window order (`get_window_index`): the merged tokens of each temporal slice
/// regrouped window by window (windows of `window` × `window` merged tokens, row-major,
/// tokens row-major inside; edge windows are smaller), as indices into the processor's order,
/// and the number of merged tokens in each window.
pub fn window_order(grids: &[[usize; 3]], merge: usize, window: usize) -> (Vec<usize>, Vec<usize>) {
    let mut order = Vec::new();
    let mut sizes = Vec::new();
    let mut offset = 0;
    for &[t, h, w] in grids {
        let (rows, cols) = (h / merge, w / merge);
        for ti in 0..t {
            for wy in (0..rows).step_by(window) {
                for wx in (0..cols).step_by(window) {
                    let before = order.len();
                    for y in wy..(wy + window).min(rows) {
                        for x in wx..(wx + window).min(cols) {
                            order.push(offset + (ti * rows + y) * cols + x);
                        }
                    }
                    sizes.push(order.len() - before);
                }
            }
        }
        offset += t * rows * cols;
    }
    (order, sizes)
}

/// The vision tower with its merger.
#[derive(Module, Debug)]
pub struct VisionTransformer {
    pub patch_embed: PatchEmbed,
    pub blocks: Vec<VisionBlock>,
    pub merger: PatchMerger,
    pub spatial_merge_size: usize,
    pub patch_dim: usize,
    pub head_dim: usize,
    /// Side of an attention window in merged tokens; 0: every block sees whole frames.
    pub window: usize,
    /// Blocks that see whole frames when the others see windows.
    pub fullatt_block_indexes: Vec<usize>,
}

impl VisionTransformer {
    /// A randomly initialized tower.
    pub fn new(config: &VisionConfig, device: &Device) -> Result<Self, VisionError> {
        config.validate()?;
        Ok(Self {
            patch_embed: PatchEmbed::new(config, device),
            blocks: (0..config.depth)
                .map(|_| VisionBlock::new(config, device))
                .collect(),
            merger: PatchMerger::new(config, device),
            spatial_merge_size: config.spatial_merge_size,
            patch_dim: config.patch_dim(),
            head_dim: config.head_dim(),
            window: config.window_tokens(),
            fullatt_block_indexes: config.fullatt_block_indexes.clone(),
        })
    }

    /// The blocks' output before the merger, one row per patch.
    ///
    /// # Shapes
    /// - `pixel_values`: `[n_patches, C·T·P·P]`, the grids' patches in order
    /// - returns `[n_patches, embed_dim]`
    pub fn encode_patches(
        &self,
        pixel_values: Tensor<2>,
        grids: &[[usize; 3]],
    ) -> Result<Tensor<2>, VisionError> {
        let [n, width] = pixel_values.dims();
        if width != self.patch_dim {
            return Err(VisionError::PatchWidth {
                expected: self.patch_dim,
                got: width,
            });
        }
        let merge = self.spatial_merge_size;
        let expected = count_patches(grids, merge)?;
        if expected != n {
            return Err(VisionError::PatchCount { expected, got: n });
        }
        let device = pixel_values.device();
        let mut positions = patch_positions(grids, merge);
        // One attention run per temporal slice of each grid (the reference's cu_seqlens).
        let frames: Vec<usize> = grids
            .iter()
            .flat_map(|&[t, h, w]| std::iter::repeat_n(h * w, t))
            .collect();
        // Pixels arrive in fp32; the tower may be in bf16.
        let mut pixel_values = pixel_values.cast(self.patch_embed.proj.weight.val().dtype());
        let unit = merge * merge;
        let windows = (self.window > 0).then(|| {
            // Rows regrouped window by window (whole merged tokens move together); a frame's
            // tokens stay within the frame, so the frame runs still hold.
            let (order, sizes) = window_order(grids, merge, self.window);
            let rows: Vec<usize> = order
                .iter()
                .flat_map(|&token| token * unit..(token + 1) * unit)
                .collect();
            let sizes: Vec<usize> = sizes.into_iter().map(|s| s * unit).collect();
            (rows, sizes)
        });
        if let Some((rows, _)) = &windows {
            positions = rows.iter().map(|&r| positions[r]).collect();
            pixel_values = pixel_values.select(0, index_tensor(rows, &device));
        }
        let (cos, sin) = vision_rotary_tables(&positions, self.head_dim, &device);
        let full = PatchLayout {
            cos,
            sin,
            segments: frames,
        };
        let windowed = windows.as_ref().map(|(_, sizes)| PatchLayout {
            segments: sizes.clone(),
            ..full.clone()
        });
        let mut x = self.patch_embed.forward(pixel_values);
        for (index, block) in self.blocks.iter().enumerate() {
            let layout = match &windowed {
                Some(windowed) if !self.fullatt_block_indexes.contains(&index) => windowed,
                _ => &full,
            };
            x = block.forward(x, layout);
        }
        if let Some((rows, _)) = windows {
            let mut inverse = vec![0; rows.len()];
            for (i, &r) in rows.iter().enumerate() {
                inverse[r] = i;
            }
            x = x.select(0, index_tensor(&inverse, &device));
        }
        Ok(x)
    }

    /// Visual tokens in the language model's width, one per merged window.
    ///
    /// # Shapes
    /// - `pixel_values`: `[n_patches, C·T·P·P]`
    /// - returns `[n_patches / merge², hidden_size]`
    pub fn forward(
        &self,
        pixel_values: Tensor<2>,
        grids: &[[usize; 3]],
    ) -> Result<Tensor<2>, VisionError> {
        Ok(self
            .merger
            .forward(self.encode_patches(pixel_values, grids)?))
    }
}

fn index_tensor(indices: &[usize], device: &Device) -> Tensor<1, Int> {
    let values = indices.iter().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(values, [indices.len()]), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, TensorData};

    fn tower() -> (VisionTransformer, Device) {
        let device = Device::flex();
        (
            VisionTransformer::new(&VisionConfig::tiny(), &device).expect("valid"),
            device,
        )
    }

    #[test]
    fn output_has_one_token_per_merged_window() {
        let (vit, device) = tower();
        let grids = [[1, 4, 6], [2, 2, 2]];
        let pixels = Tensor::<2>::random([24 + 8, 1176], Distribution::Default, &device);
        let out = vit.forward(pixels, &grids).expect("valid grids");
        assert_eq!(out.dims(), [(24 + 8) / 4, 64]);
    }

    #[test]
    fn images_in_one_batch_do_not_see_each_other() {
        let (vit, device) = tower();
        let a = Tensor::<2>::random([16, 1176], Distribution::Default, &device);
        let b = Tensor::<2>::random([8, 1176], Distribution::Default, &device);
        let alone = vit.forward(a.clone(), &[[1, 4, 4]]).expect("valid");
        let together = vit
            .forward(Tensor::cat(vec![a, b], 0), &[[1, 4, 4], [1, 2, 4]])
            .expect("valid");
        let diff = (alone - together.narrow(0, 0, 4))
            .abs()
            .max()
            .into_scalar::<f32>();
        assert!(
            diff < 1e-5,
            "an image's tokens changed by {diff} when another joined the batch"
        );
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        let (vit, device) = tower();
        let pixels = Tensor::<2>::zeros([16, 1176], &device);
        assert_eq!(
            vit.forward(pixels.clone(), &[[1, 4, 2]]).unwrap_err(),
            VisionError::PatchCount {
                expected: 8,
                got: 16
            }
        );
        assert!(matches!(
            vit.forward(pixels, &[[1, 4, 3]]),
            Err(VisionError::BadGrid { index: 0, .. })
        ));
        let narrow = Tensor::<2>::from_data(TensorData::zeros::<f32, _>([4, 10]), &device);
        assert_eq!(
            vit.forward(narrow, &[[1, 2, 2]]).unwrap_err(),
            VisionError::PatchWidth {
                expected: 1176,
                got: 10
            }
        );
    }
}
