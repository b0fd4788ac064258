//! The vision tower's norms with the reference's parameter names (`weight`, `bias`) and
//! epsilon: Qwen2-VL's LayerNorm, Qwen2.5-VL's RMSNorm.

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};

use crate::norm::RmsNorm;

/// The epsilon of every norm in the Qwen2-VL and Qwen2.5-VL vision towers.
pub const VISION_LAYER_NORM_EPS: f64 = 1e-6;

/// A norm over the last dimension: LayerNorm when it has a `bias` (Qwen2-VL), RMSNorm when
/// it has none (Qwen2.5-VL's `Qwen2RMSNorm`).
#[derive(Module, Debug)]
pub struct VisionNorm {
    /// Scale, `[d]`.
    pub weight: Param<Tensor<1>>,
    /// Shift, `[d]` (LayerNorm only).
    pub bias: Option<Param<Tensor<1>>>,
    pub epsilon: f64,
}

/// The name the Qwen2-VL code has always used.
pub type LayerNorm = VisionNorm;

impl VisionNorm {
    /// Identity-initialized LayerNorm over `d` features.
    pub fn new(d: usize, epsilon: f64, device: &Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::ones([d], device)),
            bias: Some(Param::from_tensor(Tensor::zeros([d], device))),
            epsilon,
        }
    }

    /// Identity-initialized RMSNorm over `d` features.
    pub fn rms(d: usize, epsilon: f64, device: &Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::ones([d], device)),
            bias: None,
            epsilon,
        }
    }

    /// LayerNorm: `(x - mean) / sqrt(var + eps) * weight + bias`, with the biased variance;
    /// RMSNorm: `x / sqrt(mean(x²) + eps) * weight`, statistics in fp32.
    ///
    /// # Shapes
    /// - `x`: `[..., d]` → `[..., d]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        match &self.bias {
            Some(bias) => nuri_kernels::layer_norm(x, self.weight.val(), bias.val(), self.epsilon),
            None => RmsNorm {
                weight: self.weight.clone(),
                epsilon: self.epsilon,
            }
            .forward(x),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_come_out_with_zero_mean_and_unit_variance() {
        let device = Device::flex();
        let norm = LayerNorm::new(4, 1e-6, &device);
        let x = Tensor::<2>::from_floats([[1.0, 2.0, 3.0, 4.0], [10.0, 10.0, 10.0, 14.0]], &device);
        let y = norm.forward(x);
        let mean = y.clone().mean_dim(1).abs().max().into_scalar::<f32>();
        let var = y
            .square()
            .mean_dim(1)
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        assert!(mean < 1e-6, "mean {mean}");
        assert!(var.iter().all(|v| (v - 1.0).abs() < 1e-4), "{var:?}");
    }
}
