//! The SwiGLU feed-forward block of Qwen2 (`Qwen2MLP`): `down(silu(gate(x)) * up(x))`.

use burn::module::Module;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::{Device, Tensor};
use nuri_encoders::act::swiglu;

use crate::config::TextConfig;

/// Standard deviation of the reference's weight initialization (`initializer_range`).
pub const INIT_STD: f64 = 0.02;

/// A bias-free linear layer initialized like the reference's.
pub(crate) fn linear(d_in: usize, d_out: usize, bias: bool, device: &Device) -> Linear {
    LinearConfig::new(d_in, d_out)
        .with_bias(bias)
        .with_initializer(Initializer::Normal {
            mean: 0.0,
            std: INIT_STD,
        })
        .init(device)
}

/// Gated MLP with SiLU.
#[derive(Module, Debug)]
pub struct Mlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
}

impl Mlp {
    /// A randomly initialized MLP of the config's widths.
    pub fn new(config: &TextConfig, device: &Device) -> Self {
        let (d, inner) = (config.hidden_size, config.intermediate_size);
        Self {
            gate_proj: linear(d, inner, false, device),
            up_proj: linear(d, inner, false, device),
            down_proj: linear(inner, d, false, device),
        }
    }

    /// # Shapes
    /// - `x`: `[batch, seq, hidden]` → `[batch, seq, hidden]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let gate = self.gate_proj.forward(x.clone()); // [b, s, inner]
        self.down_proj
            .forward(swiglu(gate, self.up_proj.forward(x)))
    }
}
