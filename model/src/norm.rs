//! RMSNorm as Qwen2 computes it (`Qwen2RMSNorm` in transformers): normalize in fp32, then
//! scale by a learned weight. Written here, not taken from `burn::nn::RmsNorm`, so that the
//! parameter is called `weight` like the checkpoint's tensor.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::{DType, Device, Tensor};

/// Configuration of [`RmsNorm`].
#[derive(Config, Debug)]
pub struct RmsNormConfig {
    /// Width of the normalized (last) dimension.
    pub d_model: usize,
    /// Added to the mean square before the square root.
    #[config(default = 1e-6)]
    pub epsilon: f64,
}

impl RmsNormConfig {
    /// A norm whose weight starts at one.
    pub fn init(&self, device: &Device) -> RmsNorm {
        RmsNorm {
            weight: Param::from_tensor(Tensor::ones([self.d_model], device)),
            epsilon: self.epsilon,
        }
    }
}

/// Root-mean-square layer norm with a learned scale.
#[derive(Module, Debug)]
pub struct RmsNorm {
    /// Scale, `[d_model]`.
    pub weight: Param<Tensor<1>>,
    /// Added to the mean square before the square root.
    pub epsilon: f64,
}

impl RmsNorm {
    /// `weight * x / sqrt(mean(x²) + eps)` over the last dimension, with the statistics in
    /// fp32 whatever the input dtype (as the reference does).
    ///
    /// # Shapes
    /// - `x`: `[..., d_model]` → `[..., d_model]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let dtype = x.dtype();
        if dtype == DType::F32 {
            // One operation (one pass, and one for the gradient) on the CPU.
            return nuri_kernels::rms_norm(x, self.weight.val(), self.epsilon);
        }
        let x = x.cast(DType::F32);
        let rms = (x.clone().square().mean_dim(D - 1) + self.epsilon).sqrt();
        let normed = (x / rms).cast(dtype);
        normed * self.weight.val().unsqueeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_each_row_to_unit_rms_then_scales() {
        let device = Device::flex();
        let mut norm = RmsNormConfig::new(4).with_epsilon(0.0).init(&device);
        norm.weight = Param::from_tensor(Tensor::from_floats([1.0, 2.0, 1.0, 1.0], &device));
        let x = Tensor::<2>::from_floats([[1.0, 1.0, 1.0, 1.0], [2.0, -2.0, 2.0, -2.0]], &device);
        let y = norm
            .forward(x)
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        let expected = [1.0, 2.0, 1.0, 1.0, 1.0, -2.0, 1.0, -1.0];
        for (got, want) in y.iter().zip(expected) {
            assert!((got - want).abs() < 1e-6, "{y:?}");
        }
    }
}
