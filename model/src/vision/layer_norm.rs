//! LayerNorm with the reference's parameter names (`weight`, `bias`) and its epsilon.

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};

/// The epsilon of every LayerNorm in Qwen2-VL's vision tower.
pub const VISION_LAYER_NORM_EPS: f64 = 1e-6;

/// Layer normalization over the last dimension with a learned affine map.
#[derive(Module, Debug)]
pub struct LayerNorm {
    /// Scale, `[d]`.
    pub weight: Param<Tensor<1>>,
    /// Shift, `[d]`.
    pub bias: Param<Tensor<1>>,
    pub epsilon: f64,
}

impl LayerNorm {
    /// Identity-initialized norm over `d` features.
    pub fn new(d: usize, epsilon: f64, device: &Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::ones([d], device)),
            bias: Param::from_tensor(Tensor::zeros([d], device)),
            epsilon,
        }
    }

    /// `(x - mean) / sqrt(var + eps) * weight + bias`, with the biased variance.
    ///
    /// # Shapes
    /// - `x`: `[..., d]` → `[..., d]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        nuri_kernels::layer_norm(x, self.weight.val(), self.bias.val(), self.epsilon)
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
