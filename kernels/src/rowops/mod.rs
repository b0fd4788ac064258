//! Row-wise operations as single operations: RMSNorm, LayerNorm and rotate-half RoPE, with
//! backward passes of their own on the CPU.
//!
//! Composed from Burn's operations, an RMSNorm is six nodes of the autodiff graph (square,
//! mean, add, sqrt, divide, scale), each with its own output buffer and a backward step of
//! its own (about fifteen passes over the data in all), and a RoPE is a narrow, a negation,
//! a concatenation, two products and a sum. On the flex (CPU) backend this module computes
//! each one in one pass over the rows, and its gradient in one more:
//!
//! - RMSNorm, `y = x·r·w` with `r = 1/√(mean(x²) + ε)`: with `g = dy·w`,
//!   `dx = r·g − x·r³·mean(g·x)`, `dw = Σ_rows dy·x·r`
//! - LayerNorm, `y = x̂·w + b` with `x̂ = (x − mean)·r`, `r = 1/√(var + ε)`: with `g = dy·w`,
//!   `dx = r·(g − mean(g) − x̂·mean(g·x̂))`, `dw = Σ_rows dy·x̂`, `db = Σ_rows dy`
//! - RoPE is linear in `x`; its gradient is the transposed rotation (by the negative angle
//!   when the tables are the usual ones). The cos/sin tables get no gradient: they come from
//!   positions.
//!
//! Other backends (wgpu, CUDA) and other float types take Burn's operations unchanged.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::{FlexTensor, Layout};
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Autodiff, Backend, Flex, TensorMetadata, backend_extension};
use burn::tensor::{DType, IndexingUpdateOp, Int, Shape, Slice, Tensor};

use crate::fused::{all_f32, f32_tensor, slice, values};
use crate::loops;
use crate::on_flex;

/// The row-wise operations (see the module docs). The default bodies are Burn's operations;
/// flex overrides them with its kernels and autodiff the forwards with its backward steps.
#[backend_extension(Flex, Autodiff)]
pub trait FusedRowOps: Backend {
    /// RMSNorm over the last dimension, scaled by `weight` (`[d]`).
    fn rms_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, eps: f32) -> FloatTensor<Self> {
        reference::rms_norm::<Self>(x, weight, eps)
    }

    /// The gradients of `rms_norm` with respect to `x` and `weight`.
    fn rms_norm_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        eps: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        reference::rms_norm_backward::<Self>(x, weight, grad, eps)
    }

    /// LayerNorm over the last dimension (biased variance), then `·weight + bias` (`[d]`).
    fn fused_layer_norm(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        eps: f32,
    ) -> FloatTensor<Self> {
        reference::layer_norm::<Self>(x, weight, bias, eps)
    }

    /// The gradients of `layer_norm` with respect to `x`, `weight` and `bias`.
    fn fused_layer_norm_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        eps: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        reference::layer_norm_backward::<Self>(x, weight, grad, eps)
    }

    /// `x·cos + rotate_half(x)·sin`, the tables broadcast to `x` (same rank).
    fn rope(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        reference::rope::<Self>(x, cos, sin, false)
    }

    /// The gradient of `rope` with respect to `x`.
    fn rope_backward(
        grad: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        reference::rope::<Self>(grad, cos, sin, true)
    }

    /// The cross-entropy of each row of `logits` (`[n, classes]`) against its target class
    /// (`targets`, `[n]`): `logsumexp(row) − row[target]`, `[n]`.
    fn cross_entropy(logits: FloatTensor<Self>, targets: IntTensor<Self>) -> FloatTensor<Self> {
        reference::cross_entropy::<Self>(logits, targets)
    }

    /// The gradient of `cross_entropy` with respect to `logits`, given each row's (`[n]`).
    fn cross_entropy_backward(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        reference::cross_entropy_backward::<Self>(logits, targets, grad)
    }
}

mod autodiff;
mod flex;
mod reference;

/// RMSNorm of `x` over its last dimension, scaled by `weight` (`[d]`), in `x`'s dtype.
pub fn rms_norm<const D: usize>(x: Tensor<D>, weight: Tensor<1>, eps: f64) -> Tensor<D> {
    if !on_flex(&x.device()) {
        let rms = (x.clone().square().mean_dim(D - 1) + eps).sqrt();
        return (x / rms) * weight.unsqueeze();
    }
    Tensor::from_dispatch(<burn::backend::Dispatch as FusedRowOps>::rms_norm(
        x.into_dispatch(),
        weight.into_dispatch(),
        eps as f32,
    ))
}

/// LayerNorm of `x` over its last dimension (biased variance), then `·weight + bias`.
pub fn layer_norm<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<1>,
    bias: Tensor<1>,
    eps: f64,
) -> Tensor<D> {
    if !on_flex(&x.device()) {
        let mean = x.clone().mean_dim(D - 1);
        let centered = x - mean;
        let var = centered.clone().square().mean_dim(D - 1);
        let normed = centered / (var + eps).sqrt();
        return normed * weight.unsqueeze() + bias.unsqueeze();
    }
    Tensor::from_dispatch(<burn::backend::Dispatch as FusedRowOps>::fused_layer_norm(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        eps as f32,
    ))
}

/// The cross-entropy of each row of `logits` (`[n, classes]`) against its target class
/// (`targets`, `[n]`, each below `classes`): `logsumexp(row) − row[target]`, `[n]`.
pub fn cross_entropy(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    if !on_flex(&logits.device()) {
        let picked =
            burn::tensor::activation::log_softmax(logits, 1).gather(1, targets.unsqueeze_dim(1));
        return picked.squeeze_dim::<1>(1).neg();
    }
    Tensor::from_dispatch(<burn::backend::Dispatch as FusedRowOps>::cross_entropy(
        logits.into_dispatch(),
        targets.into_dispatch(),
    ))
}

/// Rotate-half RoPE: `x·cos + rotate_half(x)·sin`, the tables (same rank as `x`, each
/// dimension equal to `x`'s or 1) broadcast over the rest. The tables get no gradient.
pub fn rope<const D: usize>(x: Tensor<D>, cos: Tensor<D>, sin: Tensor<D>) -> Tensor<D> {
    if !on_flex(&x.device()) {
        return x.clone() * cos + crate::rotate_half(x) * sin;
    }
    Tensor::from_dispatch(<burn::backend::Dispatch as FusedRowOps>::rope(
        x.into_dispatch(),
        cos.into_dispatch(),
        sin.into_dispatch(),
    ))
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Bytes, Distribution, TensorData, Tolerance};

    use super::*;

    fn close(a: &TensorData, b: &TensorData) {
        assert!(a.iter::<f32>().all(f32::is_finite));
        a.assert_approx_eq::<f32>(b, Tolerance::absolute(2e-5).set_relative(1e-4));
    }

    /// Outputs and gradients against Burn's composed operations (the path other backends
    /// take), with rows whose width is not a multiple of the kernels' lanes.
    #[test]
    fn match_the_composed_operations() {
        let device = burn::tensor::Device::flex().autodiff();
        let data = |dims: &[usize], std: f64| {
            let n: usize = dims.iter().product();
            let t = Tensor::<1>::random([n], Distribution::Normal(0.5, std), &device);
            TensorData::new(t.into_data().try_to_vec::<f32>().unwrap(), dims.to_vec())
        };
        let (x0, w0, b0, up0) = (
            data(&[2, 5, 33], 3.0),
            data(&[33], 1.0),
            data(&[33], 1.0),
            data(&[2, 5, 33], 1.0),
        );
        let upstream = Tensor::<3>::from_data(up0, &device);
        let leaf3 = |d: &TensorData| Tensor::<3>::from_data(d.clone(), &device).require_grad();
        let leaf1 = |d: &TensorData| Tensor::<1>::from_data(d.clone(), &device).require_grad();

        let run = |fused: bool| {
            let (x, w) = (leaf3(&x0), leaf1(&w0));
            let out = if fused {
                rms_norm(x.clone(), w.clone(), 1e-6)
            } else {
                let rms = (x.clone().square().mean_dim(2) + 1e-6).sqrt();
                (x.clone() / rms) * w.clone().unsqueeze()
            };
            let grads = (out.clone() * upstream.clone()).sum().backward();
            [
                out.into_data(),
                x.grad(&grads).unwrap().into_data(),
                w.grad(&grads).unwrap().into_data(),
            ]
        };
        for (a, b) in run(true).iter().zip(&run(false)) {
            close(a, b);
        }

        let run = |fused: bool| {
            let (x, w, b) = (leaf3(&x0), leaf1(&w0), leaf1(&b0));
            let out = if fused {
                layer_norm(x.clone(), w.clone(), b.clone(), 1e-6)
            } else {
                let centered = x.clone() - x.clone().mean_dim(2);
                let var = centered.clone().square().mean_dim(2);
                centered / (var + 1e-6).sqrt() * w.clone().unsqueeze() + b.clone().unsqueeze()
            };
            let grads = (out.clone() * upstream.clone()).sum().backward();
            [
                out.into_data(),
                x.grad(&grads).unwrap().into_data(),
                w.grad(&grads).unwrap().into_data(),
                b.grad(&grads).unwrap().into_data(),
            ]
        };
        for (a, b) in run(true).iter().zip(&run(false)) {
            close(a, b);
        }

        // RoPE as the language model calls it: heads split from a [b, s, h, hd] projection
        // (a strided view), tables [b, 1, s, hd] broadcast over the heads.
        let (q0, cos0, sin0, up4) = (
            data(&[2, 5, 3, 16], 1.0),
            data(&[2, 1, 5, 16], 1.0),
            data(&[2, 1, 5, 16], 1.0),
            data(&[2, 3, 5, 16], 1.0),
        );
        let table = |d: &TensorData| Tensor::<4>::from_data(d.clone(), &device);
        let upstream = table(&up4);
        let run = |fused: bool| {
            let q = Tensor::<4>::from_data(q0.clone(), &device).require_grad();
            let x = q.clone().swap_dims(1, 2);
            let (cos, sin) = (table(&cos0), table(&sin0));
            let out = if fused {
                rope(x, cos, sin)
            } else {
                x.clone() * cos + crate::rotate_half(x) * sin
            };
            let grads = (out.clone() * upstream.clone()).sum().backward();
            [out.into_data(), q.grad(&grads).unwrap().into_data()]
        };
        for (a, b) in run(true).iter().zip(&run(false)) {
            close(a, b);
        }
    }

    /// The cross-entropy and its gradient against `log_softmax` + `gather`, with logits
    /// large enough that a naive `exp` would overflow, and a vocabulary that is not a
    /// multiple of the lanes.
    #[test]
    fn cross_entropy_matches_log_softmax_and_gather() {
        let device = burn::tensor::Device::flex().autodiff();
        let (n, v) = (6, 37);
        let mut data = Tensor::<2>::random([n, v], Distribution::Normal(0.0, 3.0), &device)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        data[3] = 200.0;
        data[v + 5] = -300.0;
        let targets: Vec<i64> = vec![3, 0, 36, 5, 17, 3];
        let weights = Tensor::<1>::from_floats([1.0, -2.0, 0.5, 3.0, 0.0, 1.5], &device);
        let run = |fused: bool| {
            let logits = Tensor::<2>::from_data(TensorData::new(data.clone(), [n, v]), &device)
                .require_grad();
            let t = Tensor::<1, Int>::from_data(TensorData::new(targets.clone(), [n]), &device);
            let nll = if fused {
                cross_entropy(logits.clone(), t)
            } else {
                burn::tensor::activation::log_softmax(logits.clone(), 1)
                    .gather(1, t.unsqueeze_dim(1))
                    .squeeze_dim::<1>(1)
                    .neg()
            };
            let grads = (nll.clone() * weights.clone()).sum().backward();
            [nll.into_data(), logits.grad(&grads).unwrap().into_data()]
        };
        for (a, b) in run(true).iter().zip(&run(false)) {
            close(a, b);
        }
        // Targets made as the trainer makes them have a type the kernels take (others would
        // go through Burn's operations).
        let flex = burn::tensor::Device::flex();
        let t = Tensor::<1, Int>::from_data(TensorData::new(targets.clone(), [n]), &flex);
        assert!(
            matches!(t.dtype(), DType::I64 | DType::I32),
            "{:?}",
            t.dtype()
        );
    }

    /// The default bodies (Burn's operations, also flex's path for other float types) give
    /// the kernels' gradients.
    #[test]
    fn reference_backwards_match_the_kernels() {
        let tensor = |dims: &[usize], seed: usize| {
            let n: usize = dims.iter().product();
            let v = (0..n)
                .map(|i| (((i * 7919 + seed * 104_729) % 211) as f32 / 50.0) - 2.0)
                .collect();
            f32_tensor(v, Layout::contiguous(Shape::from(dims.to_vec())))
        };
        let same = |a: FlexTensor, b: FlexTensor| {
            let (a, b) = (values(&a).0, values(&b).0);
            assert_eq!(a.shape(), b.shape());
            for (x, y) in slice(&a).iter().zip(slice(&b)) {
                assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{x} against {y}");
            }
        };
        let (x, w, g) = (
            tensor(&[4, 3, 19], 1),
            tensor(&[19], 2),
            tensor(&[4, 3, 19], 3),
        );
        let (dx, dw) =
            <Flex as FusedRowOps>::rms_norm_backward(x.clone(), w.clone(), g.clone(), 1e-5);
        let (rx, rw) = reference::rms_norm_backward::<Flex>(x.clone(), w.clone(), g.clone(), 1e-5);
        same(dx, rx);
        same(dw, rw);
        let (dx, dw, db) =
            <Flex as FusedRowOps>::fused_layer_norm_backward(x.clone(), w.clone(), g.clone(), 1e-5);
        let (rx, rw, rb) = reference::layer_norm_backward::<Flex>(x, w, g.clone(), 1e-5);
        same(dx, rx);
        same(dw, rw);
        same(db, rb);
        let (logits, grad) = (tensor(&[5, 19], 7), tensor(&[5], 8));
        let targets = FlexTensor::new(
            Bytes::from_elems(vec![0i64, 18, 4, 4, 9]),
            Layout::contiguous(Shape::new([5])),
            DType::I64,
        );
        same(
            <Flex as FusedRowOps>::cross_entropy(logits.clone(), targets.clone()),
            reference::cross_entropy::<Flex>(logits.clone(), targets.clone()),
        );
        same(
            <Flex as FusedRowOps>::cross_entropy_backward(
                logits.clone(),
                targets.clone(),
                grad.clone(),
            ),
            reference::cross_entropy_backward::<Flex>(logits, targets, grad),
        );
        let (cos, sin) = (tensor(&[4, 1, 19 * 2], 4), tensor(&[4, 1, 19 * 2], 5));
        let g = tensor(&[4, 3, 19 * 2], 6);
        same(
            <Flex as FusedRowOps>::rope_backward(g.clone(), cos.clone(), sin.clone()),
            reference::rope::<Flex>(g, cos, sin, true),
        );
    }

    #[test]
    fn table_rows_broadcast_over_size_one_dimensions() {
        // x [2, 3, 2, hd], table [2, 1, 2, hd]: rows (b, h, s) → b·2 + s.
        assert_eq!(
            flex::table_rows(&[2, 3, 2, 8], &[2, 1, 2, 8]),
            [0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3]
        );
        // x [3, 2, hd], table [3, 1, hd]: rows (n, h) → n.
        assert_eq!(flex::table_rows(&[3, 2, 8], &[3, 1, 8]), [0, 0, 1, 1, 2, 2]);
    }
}
