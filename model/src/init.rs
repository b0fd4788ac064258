//! Weight initialization as the reference checkpoints' `_init_weights` does it: every linear
//! and embedding weight normal(0, `initializer_range`), biases at zero, norms at one.

use burn::nn::{Initializer, LinearConfig};

use crate::linear::Linear;
use burn::tensor::Device;

/// Standard deviation of the reference's weight initialization (`initializer_range`).
pub const INIT_STD: f64 = 0.02;

/// The reference's initializer: normal(0, [`INIT_STD`]).
pub fn normal_init() -> Initializer {
    Initializer::Normal {
        mean: 0.0,
        std: INIT_STD,
    }
}

/// A linear layer `d_in → d_out` (weights stored `[in, out]`), with or without a bias,
/// initialized like the reference's.
pub fn linear(d_in: usize, d_out: usize, bias: bool, device: &Device) -> Linear {
    LinearConfig::new(d_in, d_out)
        .with_bias(bias)
        .with_initializer(normal_init())
        .init(device)
        .into()
}
