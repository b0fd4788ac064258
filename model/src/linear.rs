//! Every linear layer's forward: `nuri_kernels::linear` over Burn's `Linear` parameters, so a
//! weight kept in bf16 (or in the checkpoint's `[out, in]` rows, as the loader keeps it) works
//! with activations in f32, and streams at memory speed when decoding on the CPU.

use burn::nn::Linear;
use burn::tensor::Tensor;

/// `x·W + b` for a Burn `Linear`, in `x`'s dtype whatever the weight's.
pub trait Project {
    /// # Shapes
    /// - `x`: `[..., in]` → `[..., out]`
    fn project<const D: usize>(&self, x: Tensor<D>) -> Tensor<D>;
}

impl Project for Linear {
    fn project<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        nuri_kernels::linear(x, self.weight.val(), self.bias.as_ref().map(|b| b.val()))
    }
}
