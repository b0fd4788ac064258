//! Sigmoid-gated activations as single operations: SiLU / QuickGELU (`x·σ(αx)`) and SwiGLU
//! (`silu(gate)·up`), with backward passes of their own on the CPU.
//!
//! Under autodiff, Burn 0.22 builds `x·σ(αx)` from a scale, a sigmoid and a product: each is a
//! node of the graph with its own output buffer, and the sigmoid's exponential runs through
//! libm's scalar `expf` in the forward pass and again in the backward pass. On the flex (CPU)
//! backend this module computes each activation in one pass over the data with a polynomial
//! exponential that the compiler vectorizes (AVX2 + FMA where the CPU has them), and its
//! gradient in one more pass:
//!
//! - `d/dx [x·σ(αx)] = σ + αx·σ·(1 − σ)`
//! - `d/dg [g·σ(g)·u] = u·(σ + g·σ·(1 − σ))`, `d/du = g·σ(g)`
//!
//! Other backends (wgpu, CUDA) and other float types take Burn's operations unchanged.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, backend_extension};
use burn::tensor::Tensor;
use burn::tensor::activation::sigmoid;

use crate::fused::{all_f32, f32_tensor, values};
use crate::loops;
use crate::on_flex;

/// The activations as operations of their own (see the module docs). The default bodies are
/// Burn's operations; flex overrides them with its kernels and autodiff the forwards with
/// its backward steps.
#[backend_extension(Flex, Autodiff)]
pub trait FusedActivation: Backend {
    /// `x·σ(alpha·x)`: SiLU at `alpha` 1, QuickGELU at 1.702.
    fn sigmoid_gate(x: FloatTensor<Self>, alpha: f32) -> FloatTensor<Self> {
        reference::sigmoid_gate::<Self>(x, alpha)
    }

    /// The gradient of `sigmoid_gate` with respect to `x`, given the output's gradient.
    fn sigmoid_gate_backward(
        x: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        alpha: f32,
    ) -> FloatTensor<Self> {
        reference::sigmoid_gate_backward::<Self>(x, grad, alpha)
    }

    /// `silu(gate)·up` (same shapes).
    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        reference::swiglu::<Self>(gate, up)
    }

    /// The gradients of `swiglu` with respect to `gate` and `up`.
    fn swiglu_backward(
        gate: FloatTensor<Self>,
        up: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        reference::swiglu_backward::<Self>(gate, up, grad)
    }
}

impl FusedActivation for Flex {
    fn sigmoid_gate(x: FlexTensor, alpha: f32) -> FlexTensor {
        if !all_f32(&[&x]) {
            return reference::sigmoid_gate::<Flex>(x, alpha);
        }
        let (x, layout) = values(&x);
        let xs = x.as_slice::<f32>().expect("contiguous f32");
        let mut out = vec![0.0; xs.len()];
        loops::sigmoid_gate(xs, alpha, &mut out);
        f32_tensor(out, layout)
    }

    fn sigmoid_gate_backward(x: FlexTensor, grad: FlexTensor, alpha: f32) -> FlexTensor {
        if !all_f32(&[&x, &grad]) {
            return reference::sigmoid_gate_backward::<Flex>(x, grad, alpha);
        }
        let ((x, layout), (grad, _)) = (values(&x), values(&grad));
        let xs = x.as_slice::<f32>().expect("contiguous f32");
        let gs = grad.as_slice::<f32>().expect("contiguous f32");
        let mut dx = vec![0.0; xs.len()];
        loops::sigmoid_gate_backward(xs, gs, alpha, &mut dx);
        f32_tensor(dx, layout)
    }

    fn swiglu(gate: FlexTensor, up: FlexTensor) -> FlexTensor {
        if !all_f32(&[&gate, &up]) {
            return reference::swiglu::<Flex>(gate, up);
        }
        let ((gate, layout), (up, _)) = (values(&gate), values(&up));
        let gs = gate.as_slice::<f32>().expect("contiguous f32");
        let us = up.as_slice::<f32>().expect("contiguous f32");
        let mut out = vec![0.0; gs.len()];
        loops::swiglu(gs, us, &mut out);
        f32_tensor(out, layout)
    }

    fn swiglu_backward(
        gate: FlexTensor,
        up: FlexTensor,
        grad: FlexTensor,
    ) -> (FlexTensor, FlexTensor) {
        if !all_f32(&[&gate, &up, &grad]) {
            return reference::swiglu_backward::<Flex>(gate, up, grad);
        }
        let ((gate, layout), (up, _), (grad, _)) = (values(&gate), values(&up), values(&grad));
        let gs = gate.as_slice::<f32>().expect("contiguous f32");
        let us = up.as_slice::<f32>().expect("contiguous f32");
        let ds = grad.as_slice::<f32>().expect("contiguous f32");
        let (mut dg, mut du) = (vec![0.0; gs.len()], vec![0.0; gs.len()]);
        loops::swiglu_backward(gs, us, ds, &mut dg, &mut du);
        (f32_tensor(dg, layout.clone()), f32_tensor(du, layout))
    }
}

/// The same functions from Burn's operations: the fallback for float types other than f32.
mod reference {
    use super::*;

    pub fn sigmoid_gate<B: Backend>(x: FloatTensor<B>, alpha: f32) -> FloatTensor<B> {
        let s = B::sigmoid(B::float_mul_scalar(x.clone(), alpha.into()));
        B::float_mul(x, s)
    }

    pub fn sigmoid_gate_backward<B: Backend>(
        x: FloatTensor<B>,
        grad: FloatTensor<B>,
        alpha: f32,
    ) -> FloatTensor<B> {
        let s = B::sigmoid(B::float_mul_scalar(x.clone(), alpha.into()));
        // σ + αx·σ·(1 − σ) = σ·(1 + αx·(1 − σ))
        let one_minus = B::float_add_scalar(B::float_neg(s.clone()), 1.0.into());
        let inner = B::float_add_scalar(
            B::float_mul(B::float_mul_scalar(x, alpha.into()), one_minus),
            1.0.into(),
        );
        B::float_mul(grad, B::float_mul(s, inner))
    }

    pub fn swiglu<B: Backend>(gate: FloatTensor<B>, up: FloatTensor<B>) -> FloatTensor<B> {
        B::float_mul(sigmoid_gate::<B>(gate, 1.0), up)
    }

    pub fn swiglu_backward<B: Backend>(
        gate: FloatTensor<B>,
        up: FloatTensor<B>,
        grad: FloatTensor<B>,
    ) -> (FloatTensor<B>, FloatTensor<B>) {
        let du = B::float_mul(grad.clone(), sigmoid_gate::<B>(gate.clone(), 1.0));
        let dg = sigmoid_gate_backward::<B>(gate, B::float_mul(grad, up), 1.0);
        (dg, du)
    }
}

one_input_backward!(
    SigmoidGateBackward,
    FusedActivation,
    (FloatTensor<B>, f32),
    |(x, alpha), grad| B::sigmoid_gate_backward(x, grad, alpha)
);

#[derive(Debug)]
struct SwigluBackward;

impl<B: FusedActivation> Backward<B, 2> for SwigluBackward {
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let (gate, up) = ops.state;
        let grad = grads.consume::<B>(&ops.node);
        let [node_gate, node_up] = ops.parents;
        let (dgate, dup) = B::swiglu_backward(gate, up, grad);
        if let Some(node) = node_gate {
            grads.register::<B>(node.id, dgate);
        }
        if let Some(node) = node_up {
            grads.register::<B>(node.id, dup);
        }
    }
}

impl<B: FusedActivation, C: CheckpointStrategy> FusedActivation for Autodiff<B, C> {
    fn sigmoid_gate(x: FloatTensor<Self>, alpha: f32) -> FloatTensor<Self> {
        match SigmoidGateBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let x = x.into_primitive();
                let out = B::sigmoid_gate(x.clone(), alpha);
                prep.finish((x, alpha), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::sigmoid_gate(x.into_primitive(), alpha)),
        }
    }

    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        match SwigluBackward
            .prepare::<C>([gate.node(), up.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (gate, up) = (gate.into_primitive(), up.into_primitive());
                let out = B::swiglu(gate.clone(), up.clone());
                prep.finish((gate, up), out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::swiglu(gate.into_primitive(), up.into_primitive()))
            }
        }
    }
}

/// `x·σ(alpha·x)`: SiLU at `alpha` 1, QuickGELU (the ViT's) at 1.702.
pub fn sigmoid_gate<const D: usize>(x: Tensor<D>, alpha: f32) -> Tensor<D> {
    if !on_flex(&x.device()) {
        return x.clone() * sigmoid(x * alpha);
    }
    Tensor::from_dispatch(<burn::backend::Dispatch as FusedActivation>::sigmoid_gate(
        x.into_dispatch(),
        alpha,
    ))
}

/// `silu(gate)·up`, the gated MLP's activation (same shapes).
pub fn swiglu<const D: usize>(gate: Tensor<D>, up: Tensor<D>) -> Tensor<D> {
    if !on_flex(&gate.device()) || gate.dims() != up.dims() {
        return burn::tensor::activation::silu(gate) * up;
    }
    Tensor::from_dispatch(<burn::backend::Dispatch as FusedActivation>::swiglu(
        gate.into_dispatch(),
        up.into_dispatch(),
    ))
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Distribution, TensorData, Tolerance};

    use super::*;

    /// Outputs and gradients against Burn's composed operations, with inputs far into both
    /// tails of the sigmoid.
    #[test]
    fn match_the_composed_operations() {
        let device = burn::tensor::Device::flex().autodiff();
        let draw = || {
            let t = Tensor::<3>::random([2, 5, 33], Distribution::Normal(0.0, 4.0), &device);
            let mut data = t.into_data().try_to_vec::<f32>().unwrap();
            data[0] = 120.0;
            data[1] = -120.0;
            TensorData::new(data, [2, 5, 33])
        };
        let (a0, b0, w0) = (draw(), draw(), draw());
        let weights = Tensor::<3>::from_data(w0, &device);
        let leaf = |d: &TensorData| Tensor::<3>::from_data(d.clone(), &device).require_grad();
        let check = |fused: Vec<TensorData>, composed: Vec<TensorData>| {
            for (a, b) in fused.iter().zip(&composed) {
                assert!(a.iter::<f32>().all(f32::is_finite));
                a.assert_approx_eq::<f32>(b, Tolerance::absolute(2e-5).set_relative(1e-5));
            }
        };

        for alpha in [1.0f32, 1.702] {
            let run = |fused: bool| {
                let x = leaf(&a0);
                let out = if fused {
                    sigmoid_gate(x.clone(), alpha)
                } else {
                    x.clone() * sigmoid(x.clone() * alpha)
                };
                let grads = (out.clone() * weights.clone()).sum().backward();
                vec![out.into_data(), x.grad(&grads).unwrap().into_data()]
            };
            check(run(true), run(false));
        }

        let run = |fused: bool| {
            let (g, u) = (leaf(&a0), leaf(&b0));
            let out = if fused {
                swiglu(g.clone(), u.clone())
            } else {
                burn::tensor::activation::silu(g.clone()) * u.clone()
            };
            let grads = (out.clone() * weights.clone()).sum().backward();
            vec![
                out.into_data(),
                g.grad(&grads).unwrap().into_data(),
                u.grad(&grads).unwrap().into_data(),
            ]
        };
        check(run(true), run(false));
    }

    /// A transposed (non-contiguous) input gives the same values as its contiguous copy.
    #[test]
    fn strided_inputs() {
        let device = burn::tensor::Device::flex();
        let x = Tensor::<2>::random([7, 9], Distribution::Normal(0.0, 2.0), &device);
        let y = Tensor::<2>::random([9, 7], Distribution::Normal(0.0, 2.0), &device);
        let (xt, xc) = (x.clone().transpose(), x.transpose().into_data());
        let xc = Tensor::<2>::from_data(xc, &device);
        swiglu(xt, y.clone())
            .into_data()
            .assert_approx_eq::<f32>(&swiglu(xc, y).into_data(), Tolerance::absolute(1e-6));
    }
}
