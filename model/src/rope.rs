//! Rotary position embedding in the Hugging Face layout ("rotate half": the first and the
//! second half of each head are the two coordinates of each rotated pair), generalized to
//! Qwen2-VL's multimodal RoPE (M-RoPE, Qwen2-VL paper §2.1; `Qwen2VLRotaryEmbedding` and
//! `apply_multimodal_rotary_pos_emb` in transformers).
//!
//! Positions come as three streams, `[3, batch, seq]`: temporal, height and width. The
//! `head_dim / 2` frequencies are split into three contiguous sections
//! (`mrope_section`, e.g. 16/24/24 of 64); the angles of section `i` use stream `i`. Text
//! tokens carry the same id in all three streams, which makes M-RoPE plain 1D RoPE.
//! Families with 1D positions (EXAONE 4.5, HyperCLOVA X) have no `mrope_section`: all
//! frequencies then read the first stream. Long-context rescaling of the frequencies
//! (`rope_type` linear or llama3) is applied to `inv_freq` once, at construction.

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::config::RopeScaling;

/// The rotary embedding of one model: frequencies and how they are split between streams.
/// It has no parameters; the tables are recomputed per forward from the position ids.
#[derive(Module, Debug)]
pub struct MultimodalRotary {
    /// RoPE base (`rope_theta`).
    pub theta: f64,
    /// Width of one attention head.
    pub head_dim: usize,
    /// Frequencies per stream (temporal, height, width); sums to `head_dim / 2`. Empty:
    /// 1D positions (every frequency reads the first stream).
    pub mrope_section: Vec<usize>,
    /// `1 / theta^(2i / head_dim)`, rescaled per the checkpoint's `rope_type`.
    pub inv_freq: Vec<f32>,
}

/// `inv_freq[i] = 1 / theta^(2i / head_dim)` in fp32 like the reference, then rescaled.
fn inverse_frequencies(theta: f64, head_dim: usize, scaling: &RopeScaling) -> Vec<f32> {
    let half = head_dim / 2;
    let theta = theta as f32;
    let base = (0..half).map(|i| 1.0 / theta.powf((2 * i) as f32 / head_dim as f32));
    match *scaling {
        RopeScaling::Default => base.collect(),
        RopeScaling::Linear { factor } => base.map(|f| f / factor as f32).collect(),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => {
            // `_compute_llama3_parameters` in transformers' modeling_rope_utils.
            let (factor, low, high) = (
                factor as f32,
                low_freq_factor as f32,
                high_freq_factor as f32,
            );
            let old_context = original_max_position_embeddings as f32;
            let low_freq_wavelen = old_context / low;
            let high_freq_wavelen = old_context / high;
            base.map(|f| {
                let wavelen = 2.0 * std::f32::consts::PI / f;
                let scaled = if wavelen > low_freq_wavelen {
                    f / factor
                } else {
                    f
                };
                // Wavelengths are finite, so "not below and not above" is this range.
                let medium = (high_freq_wavelen..=low_freq_wavelen).contains(&wavelen);
                if medium {
                    let smooth = (old_context / wavelen - low) / (high - low);
                    (1.0 - smooth) * scaled / factor + smooth * scaled
                } else {
                    scaled
                }
            })
            .collect()
        }
    }
}

/// Cosine and sine tables for one batch of positions, broadcast over heads.
#[derive(Debug, Clone)]
pub struct RotaryTables {
    /// `[batch, 1, seq, head_dim]`
    pub cos: Tensor<4>,
    /// `[batch, 1, seq, head_dim]`
    pub sin: Tensor<4>,
}

impl MultimodalRotary {
    /// A rotary embedding for heads of `head_dim`, split per `mrope_section`.
    pub fn new(theta: f64, head_dim: usize, mrope_section: Vec<usize>) -> Self {
        Self {
            theta,
            head_dim,
            mrope_section,
            inv_freq: inverse_frequencies(theta, head_dim, &RopeScaling::Default),
        }
    }

    /// The same embedding with its frequencies rescaled.
    pub fn with_scaling(mut self, scaling: RopeScaling) -> Self {
        self.inv_freq = inverse_frequencies(self.theta, self.head_dim, &scaling);
        self
    }

    fn inv_freq(&self, device: &Device) -> Tensor<1> {
        let half = self.head_dim / 2;
        Tensor::from_data(TensorData::new(self.inv_freq.clone(), [half]), device)
    }

    /// Builds the cos/sin tables for the given positions.
    ///
    /// # Shapes
    /// - `position_ids`: `[3, batch, seq]` (temporal, height, width)
    /// - returns tables of `[batch, 1, seq, head_dim]`
    pub fn tables(&self, position_ids: Tensor<3, Int>) -> RotaryTables {
        let [streams, b, s] = position_ids.dims();
        let one_d = [self.head_dim / 2];
        let sections_of: &[usize] = if self.mrope_section.is_empty() {
            &one_d
        } else {
            &self.mrope_section
        };
        assert!(
            streams >= sections_of.len(),
            "position ids must have one stream per mrope section"
        );
        let device = position_ids.device();
        let inv_freq = self.inv_freq(&device);
        let positions = position_ids.float(); // [3, b, s]
        let mut start = 0;
        let mut sections = Vec::with_capacity(streams);
        for (stream, &len) in sections_of.iter().enumerate() {
            // [b, s, 1] * [1, 1, len] -> [b, s, len]
            let pos = positions.clone().narrow(0, stream, 1).reshape([b, s, 1]);
            let freq = inv_freq.clone().narrow(0, start, len).reshape([1, 1, len]);
            sections.push(pos * freq);
            start += len;
        }
        let freqs = Tensor::cat(sections, 2); // [b, s, head_dim / 2]
        // The second half of each head repeats the first half's angles (rotate-half layout).
        let angles = Tensor::cat(vec![freqs.clone(), freqs], 2).unsqueeze_dim::<4>(1); // [b, 1, s, hd]
        RotaryTables {
            cos: angles.clone().cos(),
            sin: angles.sin(),
        }
    }
}

impl RotaryTables {
    /// Rotates `x` by the tables' angles: `x * cos + rotate_half(x) * sin`.
    ///
    /// # Shapes
    /// - `x`: `[batch, heads, seq, head_dim]` → same
    pub fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        let dtype = x.dtype();
        let cos = self.cos.clone().cast(dtype);
        let sin = self.sin.clone().cast(dtype);
        nuri_kernels::rope(x, cos, sin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain 1D RoPE (rotate-half layout) written out with scalar loops, in f64.
    fn rope_1d_reference(x: &[f32], dims: [usize; 4], positions: &[i64], theta: f64) -> Vec<f32> {
        let [b, h, s, hd] = dims;
        let half = hd / 2;
        let mut out = vec![0.0; x.len()];
        for bi in 0..b {
            for hi in 0..h {
                for si in 0..s {
                    let pos = positions[bi * s + si] as f64;
                    let base = ((bi * h + hi) * s + si) * hd;
                    for i in 0..half {
                        let angle = pos / theta.powf((2 * i) as f64 / hd as f64);
                        let (x1, x2) = (x[base + i] as f64, x[base + i + half] as f64);
                        out[base + i] = (x1 * angle.cos() - x2 * angle.sin()) as f32;
                        out[base + i + half] = (x2 * angle.cos() + x1 * angle.sin()) as f32;
                    }
                }
            }
        }
        out
    }

    fn sample(dims: [usize; 4], device: &Device) -> (Vec<f32>, Tensor<4>) {
        let n: usize = dims.iter().product();
        let values: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect();
        let tensor = Tensor::from_data(TensorData::new(values.clone(), dims), device);
        (values, tensor)
    }

    #[test]
    fn mrope_with_equal_streams_is_1d_rope() {
        let device = Device::flex();
        let dims = [2, 3, 5, 16];
        let rotary = MultimodalRotary::new(10_000.0, 16, vec![2, 3, 3]);
        let positions: Vec<i64> = vec![0, 1, 2, 3, 4, 7, 8, 9, 10, 300];
        let ids = Tensor::<2, Int>::from_data(TensorData::new(positions.clone(), [2, 5]), &device);
        let ids = ids.unsqueeze_dim::<3>(0).repeat_dim(0, 3); // [3, b, s], all streams equal
        let (x_host, x) = sample(dims, &device);
        let got = rotary.tables(ids).apply(x);
        let got = got.into_data().try_to_vec::<f32>().expect("f32");
        let want = rope_1d_reference(&x_host, dims, &positions, 10_000.0);
        let max_diff = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(max_diff < 1e-4, "max |mrope - rope1d| = {max_diff}");
    }

    #[test]
    fn mrope_sections_read_their_own_stream() {
        let device = Device::flex();
        let rotary = MultimodalRotary::new(10_000.0, 16, vec![2, 3, 3]);
        let ids = |t: i64, h: i64, w: i64| {
            Tensor::<1, Int>::from_ints([t, h, w], &device).reshape([3, 1, 1])
        };
        let base = rotary
            .tables(ids(5, 5, 5))
            .cos
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        // Changing only the height stream changes only the height section (frequencies 2..5
        // of each half) of the table.
        let moved = rotary
            .tables(ids(5, 9, 5))
            .cos
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        for (i, (a, b)) in base.iter().zip(&moved).enumerate() {
            let in_height_section = (2..5).contains(&(i % 8));
            assert_eq!(
                in_height_section,
                (a - b).abs() > 1e-6,
                "index {i}: {a} vs {b}"
            );
        }
    }

    #[test]
    fn rotation_keeps_the_norm_of_each_pair() {
        let device = Device::flex();
        let rotary = MultimodalRotary::new(1_000_000.0, 16, vec![2, 3, 3]);
        let ids = Tensor::<1, Int>::arange(0..4, &device)
            .reshape([1, 1, 4])
            .repeat_dim(0, 3);
        let (_, x) = sample([1, 2, 4, 16], &device);
        let before = x.clone().square().sum_dim(3);
        let after = rotary.tables(ids).apply(x).square().sum_dim(3);
        let diff = (before - after).abs().max().into_scalar::<f32>();
        assert!(diff < 1e-5, "rotation changed a norm by {diff}");
    }
}
