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
use burn::backend::flex::{FlexTensor, Layout};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, backend_extension};
use burn::tensor::activation::sigmoid;
use burn::tensor::{Bytes, DType, Tensor};

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

/// Whether every tensor is f32 (the kernels' type; others take Burn's operations).
fn all_f32(tensors: &[&FlexTensor]) -> bool {
    tensors.iter().all(|t| t.dtype() == DType::F32)
}

/// A contiguous copy's f32 data (no copy when the tensor already is contiguous).
fn values(t: &FlexTensor) -> (FlexTensor, Layout) {
    let t = t.to_contiguous();
    let layout = Layout::contiguous(t.layout().shape().clone());
    (t, layout)
}

fn f32_tensor(data: Vec<f32>, layout: Layout) -> FlexTensor {
    FlexTensor::new(Bytes::from_elems(data), layout, DType::F32)
}

impl FusedActivation for Flex {
    fn sigmoid_gate(x: FlexTensor, alpha: f32) -> FlexTensor {
        if !all_f32(&[&x]) {
            return reference::sigmoid_gate::<Flex>(x, alpha);
        }
        let (x, layout) = values(&x);
        let xs = x.as_slice::<f32>().expect("contiguous f32");
        let mut out = vec![0.0; xs.len()];
        kernels::sigmoid_gate(xs, alpha, &mut out);
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
        kernels::sigmoid_gate_backward(xs, gs, alpha, &mut dx);
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
        kernels::swiglu(gs, us, &mut out);
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
        kernels::swiglu_backward(gs, us, ds, &mut dg, &mut du);
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

/// The element loops. Each public function picks the AVX2 + FMA build of its loop when the
/// CPU has those (checked once per call, a cached flag read), else the baseline build.
pub(crate) mod kernels {
    /// `e^x`, |relative error| < 2e-7 over the clamped range [-87, 88] (so `2ⁿ` stays a
    /// normal float): `x = n·ln2 + r` with `n` rounded by the 1.5·2²³ trick, `e^r` by a
    /// degree-6 Taylor polynomial (|r| ≤ ln2/2), `2ⁿ` built in the exponent bits. Branch-free,
    /// so loops over it vectorize.
    #[inline(always)]
    fn exp(x: f32) -> f32 {
        const ROUND: f32 = 12_582_912.0; // 1.5·2²³: adding it rounds to an integer
        let x = x.clamp(-87.0, 88.0);
        let t = x * std::f32::consts::LOG2_E + ROUND;
        let n = t - ROUND;
        // ln2 split in two so that n·ln2 is exact enough.
        let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
        let p = 1.0
            + r * (1.0
                + r * (0.5
                    + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
        // t's low mantissa bits hold n (two's complement offset from ROUND's bits).
        let n_bits = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
        p * f32::from_bits(((n_bits + 127) << 23) as u32)
    }

    #[inline(always)]
    fn sigmoid(x: f32) -> f32 {
        1.0 / (1.0 + exp(-x))
    }

    /// Defines `$name` (dispatching) over an `#[inline(always)]` body, with an AVX2 + FMA
    /// build of the same body.
    macro_rules! dispatched {
        ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) $body:block) => {
            $(#[$doc])*
            pub fn $name($($arg: $ty),*) {
                #[inline(always)]
                fn body($($arg: $ty),*) $body
                #[cfg(target_arch = "x86_64")]
                {
                    #[target_feature(enable = "avx2,fma")]
                    fn avx2($($arg: $ty),*) {
                        body($($arg),*)
                    }
                    if std::arch::is_x86_feature_detected!("avx2")
                        && std::arch::is_x86_feature_detected!("fma")
                    {
                        // SAFETY: the CPU has the features `avx2` was compiled for.
                        return unsafe { avx2($($arg),*) };
                    }
                }
                body($($arg),*)
            }
        };
    }

    dispatched! {
        /// `out = x·σ(alpha·x)`
        fn sigmoid_gate(x: &[f32], alpha: f32, out: &mut [f32]) {
            for (o, &x) in out.iter_mut().zip(x) {
                *o = x * sigmoid(alpha * x);
            }
        }
    }

    dispatched! {
        /// `dx = grad·σ·(1 + alpha·x·(1 − σ))`, σ = σ(alpha·x)
        fn sigmoid_gate_backward(x: &[f32], grad: &[f32], alpha: f32, dx: &mut [f32]) {
            for ((d, &x), &g) in dx.iter_mut().zip(x).zip(grad) {
                let s = sigmoid(alpha * x);
                *d = g * s * (1.0 + alpha * x * (1.0 - s));
            }
        }
    }

    dispatched! {
        /// `out = gate·σ(gate)·up`
        fn swiglu(gate: &[f32], up: &[f32], out: &mut [f32]) {
            for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
                *o = g * sigmoid(g) * u;
            }
        }
    }

    dispatched! {
        /// `dgate = grad·up·σ·(1 + gate·(1 − σ))`, `dup = grad·gate·σ`, σ = σ(gate)
        fn swiglu_backward(gate: &[f32], up: &[f32], grad: &[f32], dgate: &mut [f32], dup: &mut [f32]) {
            for (((dg, du), (&g, &u)), &d) in
                dgate.iter_mut().zip(dup.iter_mut()).zip(gate.iter().zip(up)).zip(grad)
            {
                let s = sigmoid(g);
                *du = d * g * s;
                *dg = d * u * s * (1.0 + g * (1.0 - s));
            }
        }
    }

    /// Lanes of the reductions below: separate accumulators the compiler keeps in one vector.
    const LANES: usize = 8;

    /// The largest of `row`, where `keep` (if given) is 0; −∞ when none is.
    #[inline(always)]
    fn row_max(row: &[f32], keep: Option<&[u8]>) -> f32 {
        let mut acc = [f32::NEG_INFINITY; LANES];
        let chunks = row.len() / LANES * LANES;
        match keep {
            None => {
                for c in row[..chunks].chunks_exact(LANES) {
                    for (a, &x) in acc.iter_mut().zip(c) {
                        *a = a.max(x);
                    }
                }
                for &x in &row[chunks..] {
                    acc[0] = acc[0].max(x);
                }
            }
            Some(m) => {
                for (c, f) in row[..chunks].chunks_exact(LANES).zip(m.chunks_exact(LANES)) {
                    for ((a, &x), &f) in acc.iter_mut().zip(c).zip(f) {
                        *a = a.max(if f == 0 { x } else { f32::NEG_INFINITY });
                    }
                }
                for (&x, &f) in row[chunks..].iter().zip(&m[chunks..]) {
                    if f == 0 {
                        acc[0] = acc[0].max(x);
                    }
                }
            }
        }
        acc.into_iter().fold(f32::NEG_INFINITY, f32::max)
    }

    #[inline(always)]
    fn row_sum(row: &[f32]) -> f32 {
        let mut acc = [0.0f32; LANES];
        let chunks = row.len() / LANES * LANES;
        for c in row[..chunks].chunks_exact(LANES) {
            for (a, &x) in acc.iter_mut().zip(c) {
                *a += x;
            }
        }
        acc.into_iter().sum::<f32>() + row[chunks..].iter().sum::<f32>()
    }

    dispatched! {
        /// Each row of `scores` (rows of `len`) becomes `softmax(scale · row)` over the keys
        /// that `mask` (same layout, nonzero = forbidden) allows; forbidden keys get 0, and a
        /// row with no allowed key becomes all zeros (a padding query attends to nothing).
        fn softmax_rows(scores: &mut [f32], len: usize, scale: f32, mask: Option<&[u8]>) {
            for (i, row) in scores.chunks_exact_mut(len).enumerate() {
                let keep = mask.map(|m| &m[i * len..(i + 1) * len]);
                let max = row_max(row, keep);
                if max == f32::NEG_INFINITY {
                    row.fill(0.0);
                    continue;
                }
                match keep {
                    None => {
                        for x in row.iter_mut() {
                            *x = exp(scale * (*x - max));
                        }
                    }
                    Some(m) => {
                        for (x, &f) in row.iter_mut().zip(m) {
                            let e = exp(scale * (*x - max));
                            *x = if f == 0 { e } else { 0.0 };
                        }
                    }
                }
                let inv = 1.0 / row_sum(row);
                for x in row.iter_mut() {
                    *x *= inv;
                }
            }
        }
    }

    #[cfg(test)]
    #[test]
    fn softmax_rows_against_f64() {
        let (rows, len, scale) = (5, 37, 0.3f32);
        let mut scores: Vec<f32> = (0..rows * len)
            .map(|i| ((i * 7919) % 101) as f32 - 50.0)
            .collect();
        let mask: Vec<u8> = (0..rows * len)
            .map(|i| u8::from(i % 5 == 0 || i / len == 3))
            .collect();
        let want: Vec<f64> = scores
            .chunks(len)
            .zip(mask.chunks(len))
            .flat_map(|(r, m)| {
                let max = r
                    .iter()
                    .zip(m)
                    .filter(|(_, f)| **f == 0)
                    .map(|(x, _)| *x as f64);
                let max = max.fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = r
                    .iter()
                    .zip(m)
                    .map(|(x, f)| {
                        if *f == 0 {
                            (scale as f64 * (*x as f64 - max)).exp()
                        } else {
                            0.0
                        }
                    })
                    .collect();
                let sum: f64 = e.iter().sum();
                e.into_iter()
                    .map(move |x| if sum > 0.0 { x / sum } else { 0.0 })
            })
            .collect();
        softmax_rows(&mut scores, len, scale, Some(&mask));
        for (got, want) in scores.iter().zip(&want) {
            assert!((*got as f64 - want).abs() < 1e-6, "{got} against {want}");
        }
        // Row 3 is masked entirely: zeros.
        assert!(scores[3 * len..4 * len].iter().all(|&x| x == 0.0));
    }

    #[cfg(test)]
    #[test]
    fn exp_is_accurate_over_its_range() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x <= 88.0 {
            let (got, want) = (exp(x) as f64, (x as f64).exp());
            worst = worst.max(((got - want) / want).abs());
            x += 0.001_37;
        }
        assert!(worst < 3e-7, "worst relative error {worst:e}");
        // Clamped outside: finite and monotone at the ends.
        assert!(exp(-1e30) > 0.0 && exp(-1e30) <= exp(-87.0));
        assert!(exp(1e30).is_finite() && exp(f32::INFINITY).is_finite());
    }
}

#[derive(Debug)]
struct SigmoidGateBackward;

impl<B: FusedActivation> Backward<B, 1> for SigmoidGateBackward {
    type State = (FloatTensor<B>, f32);

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let (x, alpha) = ops.state;
        let grad = grads.consume::<B>(&ops.node);
        if let [Some(node)] = ops.parents {
            grads.register::<B>(node.id, B::sigmoid_gate_backward(x, grad, alpha));
        }
    }
}

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
