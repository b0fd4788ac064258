//! The SwiGLU feed-forward block of Qwen2 (`Qwen2MLP`): `down(silu(gate(x)) * up(x))`.

use crate::linear::Linear;
use burn::config::Config;
use burn::module::Module;

use crate::linear::Project;
use burn::tensor::{Device, Tensor};
use nuri_kernels::swiglu;

use crate::init::linear;

/// The widths of a SwiGLU MLP.
#[derive(Config, Debug, PartialEq)]
pub struct MlpConfig {
    /// Model width (input and output).
    pub hidden_size: usize,
    /// Width of the gated inner layer.
    pub intermediate_size: usize,
    /// Whether the three projections have a bias (`mlp_bias`; Qwen2.5-VL's vision MLP).
    #[config(default = false)]
    pub bias: bool,
}

impl MlpConfig {
    /// A randomly initialized MLP of these widths.
    pub fn init(&self, device: &Device) -> Mlp {
        let (d, inner) = (self.hidden_size, self.intermediate_size);
        Mlp {
            gate_proj: linear(d, inner, self.bias, device),
            up_proj: linear(d, inner, self.bias, device),
            down_proj: linear(inner, d, self.bias, device),
        }
    }
}

/// Gated MLP with SiLU.
#[derive(Module, Debug)]
pub struct Mlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
}

impl Mlp {
    /// # Shapes
    /// - `x`: `[batch, seq, hidden]` → `[batch, seq, hidden]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let gate = self.gate_proj.project(x.clone()); // [..., inner]
        self.down_proj
            .project(swiglu(gate, self.up_proj.project(x)))
    }
}
