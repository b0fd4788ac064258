//! Scaled dot-product attention for the vision tower and the language model, with forward
//! and backward passes of its own on the CPU.
//!
//! Under autodiff, Burn 0.22 runs `attention` as its generic fallback: the scores, the mask
//! and a softmax built from `max`/`sub`/`exp`/`sum`/`div` are each an operation of the graph,
//! and each is differentiated on its own (the exponentials are computed again, the maximum
//! gets a gradient of its own). On the flex (CPU) backend this module instead computes the
//! probabilities `P` as one batched matmul `QKᵀ` and one pass of a fused, masked softmax (the
//! vectorized exponential of `act`), the output as `P·V`, and differentiates the whole
//! attention in one step: `P` is recomputed the same way and
//!
//! - `dV = Pᵀ·dO`
//! - `dS = P ⊙ (dO·Vᵀ − rowsum(dO ⊙ O))` (FlashAttention's identity for the softmax)
//! - `dQ = scale · dS·K`, `dK = scale · dSᵀ·Q`
//!
//! Other backends (wgpu, CUDA) take Burn's `attention` unchanged.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::{FloatTensorOps, ModuleOps};
use burn::backend::tensor::{BoolTensor, FloatTensor};
use burn::backend::{Autodiff, Backend, Flex, backend_extension};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, BoolStore, DType, Tensor, TensorData};

use crate::loops::softmax_rows;
use crate::on_flex;

/// What a masked score becomes before the softmax of the backward pass: finite, so that a
/// row whose every key is masked (a padding query) stays finite until it is zeroed.
const MASKED: f32 = -1.0e30;

/// Attention as one differentiable operation (see the module docs). The default bodies are
/// Burn's operations; flex overrides them with its kernels and autodiff with its backward.
#[backend_extension(Flex, Autodiff)]
pub trait FusedAttention: Backend {
    /// `softmax(q·kᵀ·scale)·v` over every key.
    ///
    /// # Shapes
    /// `q`: `[batch, heads, seq, head_dim]`, `k`/`v`: `[batch, heads, keys, head_dim]`
    fn attend(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self> {
        Self::attention(q, k, v, None, None, options(scale))
    }

    /// The same with `mask` (`[batch, heads, seq, keys]`, `true` = may not attend).
    fn attend_masked(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mask: BoolTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self> {
        Self::attention(q, k, v, Some(mask), None, options(scale))
    }

    /// The attention probabilities `softmax(q·kᵀ·scale)`: `[batch, heads, seq, keys]`.
    fn probs(q: FloatTensor<Self>, k: FloatTensor<Self>, scale: f64) -> FloatTensor<Self> {
        composed_probs::<Self>(q, k, None, scale)
    }

    /// The same with `mask`; a query whose every key is masked gets zeros.
    fn probs_masked(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        mask: BoolTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self> {
        composed_probs::<Self>(q, k, Some(mask), scale)
    }
}

fn options(scale: f64) -> AttentionModuleOptions {
    AttentionModuleOptions {
        scale: Some(scale),
        ..Default::default()
    }
}

/// The probabilities from Burn's operations.
fn composed_probs<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    mask: Option<BoolTensor<B>>,
    scale: f64,
) -> FloatTensor<B> {
    let scores = B::float_matmul(B::float_mul_scalar(q, scale.into()), B::float_transpose(k));
    match mask {
        Some(mask) => {
            let probs = B::softmax(B::float_mask_fill(scores, mask.clone(), MASKED.into()), 3);
            // A query whose every key is masked attends to nothing.
            B::float_mask_fill(probs, mask, 0.0.into())
        }
        None => B::softmax(scores, 3),
    }
}

/// Flex's probabilities: `QKᵀ` as flex's batched matmul, then the fused softmax kernel in
/// place. `None` when the kernel does not apply (not f32, or a mask of another shape or
/// storage), for the caller to take Burn's operations.
fn flex_probs(
    q: &FlexTensor,
    k: &FlexTensor,
    mask: Option<&FlexTensor>,
    scale: f64,
) -> Option<FlexTensor> {
    if q.dtype() != DType::F32 || k.dtype() != DType::F32 {
        return None;
    }
    let [b, h, s, _] = q.layout().shape().dims::<4>();
    let keys = k.layout().shape().dims::<4>()[2];
    let mask = match mask {
        Some(m) => {
            let bytes_per_flag =
                matches!(m.dtype(), DType::Bool(BoolStore::Native | BoolStore::U8));
            if !bytes_per_flag || m.layout().shape().dims::<4>() != [b, h, s, keys] {
                return None;
            }
            Some(m.to_contiguous())
        }
        None => None,
    };
    // A contiguous mask's flags are its bytes from its start offset on.
    let flags = mask
        .as_ref()
        .map(|m| &m.bytes()[m.layout().start_offset()..][..b * h * s * keys]);
    let scores = Flex::float_matmul(q.clone(), Flex::float_transpose(k.clone()));
    let mut scores = scores.to_contiguous();
    softmax_rows(scores.storage_mut::<f32>(), keys, scale as f32, flags);
    Some(scores)
}

/// Up to how many scores per head (queries × keys) the forward materializes `P`; beyond,
/// flex's attention, which does not, is faster (the vision tower at 224² with 8-pixel patches
/// has 784 queries and keys: 38.9 → 32.0 images/s when `P` was materialized there). A decoding
/// step (one query) materializes `P` up to 65,536 keys: its keys and values then go to
/// strided matmuls as they lie in the KV cache, where flex's attention would first copy them.
const MATERIALIZE_SCORES: usize = 256 * 256;

fn short_keys(q: &FlexTensor, k: &FlexTensor) -> bool {
    let queries = q.layout().shape().dims::<4>()[2];
    let keys = k.layout().shape().dims::<4>()[2];
    queries * keys <= MATERIALIZE_SCORES
}

impl FusedAttention for Flex {
    fn attend(q: FlexTensor, k: FlexTensor, v: FlexTensor, scale: f64) -> FlexTensor {
        if !short_keys(&q, &k) {
            return Flex::attention(q, k, v, None, None, options(scale));
        }
        match flex_probs(&q, &k, None, scale) {
            Some(p) => Flex::float_matmul(p, v),
            None => Flex::attention(q, k, v, None, None, options(scale)),
        }
    }

    fn attend_masked(
        q: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        mask: FlexTensor,
        scale: f64,
    ) -> FlexTensor {
        if !short_keys(&q, &k) {
            return Flex::attention(q, k, v, Some(mask), None, options(scale));
        }
        match flex_probs(&q, &k, Some(&mask), scale) {
            Some(p) => Flex::float_matmul(p, v),
            None => Flex::attention(q, k, v, Some(mask), None, options(scale)),
        }
    }

    fn probs(q: FlexTensor, k: FlexTensor, scale: f64) -> FlexTensor {
        flex_probs(&q, &k, None, scale).unwrap_or_else(|| composed_probs::<Flex>(q, k, None, scale))
    }

    fn probs_masked(q: FlexTensor, k: FlexTensor, mask: FlexTensor, scale: f64) -> FlexTensor {
        flex_probs(&q, &k, Some(&mask), scale)
            .unwrap_or_else(|| composed_probs::<Flex>(q, k, Some(mask), scale))
    }
}

/// The backward step: the inputs, the output and the mask are kept (the graph keeps them for
/// the fallback's matmuls too).
#[derive(Debug)]
struct AttentionBackward;

#[derive(Debug, Clone)]
struct AttentionState<B: Backend> {
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    out: FloatTensor<B>,
    mask: Option<BoolTensor<B>>,
    scale: f64,
}

impl<B: FusedAttention> Backward<B, 3> for AttentionBackward {
    type State = AttentionState<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let AttentionState {
            q,
            k,
            v,
            out,
            mask,
            scale,
        } = ops.state;
        let [node_q, node_k, node_v] = ops.parents;
        let grad = grads.consume::<B>(&ops.node); // dO: [b, h, s, d]

        // P, recomputed as the forward computed it.
        let probs = match mask {
            Some(mask) => B::probs_masked(q.clone(), k.clone(), mask, scale),
            None => B::probs(q.clone(), k.clone(), scale),
        }; // [b, h, s, t]

        if let Some(node) = node_v {
            let dv = B::float_matmul(B::float_transpose(probs.clone()), grad.clone());
            grads.register::<B>(node.id, dv);
        }
        if node_q.is_none() && node_k.is_none() {
            return;
        }
        // dS = P ⊙ (dP − D), D = rowsum(dO ⊙ O) = rowsum(P ⊙ dP).
        let dp = B::float_matmul(grad.clone(), B::float_transpose(v)); // [b, h, s, t]
        let d = B::float_sum_dim(B::float_mul(grad, out), 3); // [b, h, s, 1]
        let ds = B::float_mul(probs, B::float_sub(dp, d)); // [b, h, s, t]
        if let Some(node) = node_q {
            let dq = B::float_mul_scalar(B::float_matmul(ds.clone(), k), scale.into());
            grads.register::<B>(node.id, dq);
        }
        if let Some(node) = node_k {
            let dk = B::float_mul_scalar(B::float_matmul(B::float_transpose(ds), q), scale.into());
            grads.register::<B>(node.id, dk);
        }
    }
}

fn attend_autodiff<B: FusedAttention, C: CheckpointStrategy>(
    q: FloatTensor<Autodiff<B, C>>,
    k: FloatTensor<Autodiff<B, C>>,
    v: FloatTensor<Autodiff<B, C>>,
    mask: Option<BoolTensor<B>>,
    scale: f64,
) -> FloatTensor<Autodiff<B, C>> {
    let prep = AttentionBackward
        .prepare::<C>([q.node(), k.node(), v.node()])
        .compute_bound()
        .stateful();
    let (q, k, v) = (q.into_primitive(), k.into_primitive(), v.into_primitive());
    let out = match mask.clone() {
        Some(mask) => B::attend_masked(q.clone(), k.clone(), v.clone(), mask, scale),
        None => B::attend(q.clone(), k.clone(), v.clone(), scale),
    };
    match prep {
        OpsKind::Tracked(prep) => {
            let state = AttentionState {
                q,
                k,
                v,
                out: out.clone(),
                mask,
                scale,
            };
            prep.finish(state, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}

impl<B: FusedAttention, C: CheckpointStrategy> FusedAttention for Autodiff<B, C> {
    fn attend(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self> {
        attend_autodiff::<B, C>(q, k, v, None, scale)
    }

    fn attend_masked(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mask: BoolTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self> {
        attend_autodiff::<B, C>(q, k, v, Some(mask), scale)
    }
}

/// `softmax(q·kᵀ/√head_dim [masked])·v`; `mask` is `true` where attention is forbidden.
/// Without a mask, attention is over every key (`causal` adds the causal mask through
/// Burn's `attention`).
///
/// # Shapes
/// - `q`: `[batch, heads, seq, head_dim]`, `k`/`v`: `[batch, heads, keys, head_dim]`
/// - `mask`: `[batch, heads, seq, keys]`
/// - returns `[batch, heads, seq, head_dim]`
pub fn attend(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    mask: Option<Tensor<4, Bool>>,
    causal: bool,
) -> Tensor<4> {
    let scale = 1.0 / (q.dims()[3] as f64).sqrt();
    let on_cpu = on_flex(&q.device());
    // On the CPU a causal attention without a mask of its own takes the fused operation with
    // the causal mask written out (Burn's causal attention differentiates a materialized
    // softmax built from separate operations).
    let (mask, causal) = match (mask, causal && on_cpu) {
        (None, true) => (Some(causal_mask(&q, &k)), false),
        (mask, _) => (mask, causal),
    };
    if causal || !on_cpu {
        let options = AttentionModuleOptions {
            is_causal: causal,
            ..options(scale)
        };
        return attention(q, k, v, mask, None, options);
    }
    let out = match mask {
        None => <burn::backend::Dispatch as FusedAttention>::attend(
            q.into_dispatch(),
            k.into_dispatch(),
            v.into_dispatch(),
            scale,
        ),
        Some(mask) => <burn::backend::Dispatch as FusedAttention>::attend_masked(
            q.into_dispatch(),
            k.into_dispatch(),
            v.into_dispatch(),
            mask.into_dispatch(),
            scale,
        ),
    };
    Tensor::from_dispatch(out)
}

/// Attention of `h` query heads over `kv_heads` key/value heads (grouped-query: query head
/// `i` meets key/value head `i / (h / kv_heads)`), for inference over a KV cache: `mask`
/// (`true` = may not attend) is one table per row, broadcast over the heads; without one,
/// `causal` masks the keys after each query (the last query sits at the last key).
///
/// On the CPU, without autodiff, a long attention goes to flex's tiled (flash) attention
/// with the grouped keys and values and the broadcast mask read where they lie: nothing of
/// size heads × queries × keys is built. Elsewhere the keys and values are repeated per
/// query head and [`attend`] runs.
///
/// # Shapes
/// - `q`: `[batch, heads, seq, head_dim]`, `k`/`v`: `[batch, kv_heads, keys, head_dim]`
/// - `mask`: `[batch, 1, seq, keys]`
/// - returns `[batch, heads, seq, head_dim]`
pub fn attend_grouped(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    mask: Option<Tensor<4, Bool>>,
    causal: bool,
) -> Tensor<4> {
    let [b, h, s, hd] = q.dims();
    let [_, kvh, t, _] = k.dims();
    let device = q.device();
    let plain_cpu = on_flex(&device)
        && !matches!(
            device.as_dispatch(),
            burn::backend::DispatchDevice::Autodiff(_)
        );
    if plain_cpu && s * t > MATERIALIZE_SCORES {
        let options = AttentionModuleOptions {
            is_causal: causal && mask.is_none(),
            ..options(1.0 / (hd as f64).sqrt())
        };
        return attention(q, k, v, mask, None, options);
    }
    let n_rep = h / kvh;
    let repeat = |x: Tensor<4>| {
        if n_rep == 1 {
            return x;
        }
        let [b, kvh, t, hd] = x.dims();
        x.unsqueeze_dim::<5>(2) // [b, kvh, 1, t, hd]
            .expand([b, kvh, n_rep, t, hd])
            .reshape([b, kvh * n_rep, t, hd])
    };
    let causal = causal && mask.is_none();
    let mask = mask.map(|m| m.expand([b, h, s, t]));
    attend(q, repeat(k), repeat(v), mask, causal)
}

/// `true` where key `j` comes after query `i` (the last query sits at the last key), as
/// `[batch, heads, queries, keys]`, broadcast from one `[queries, keys]` table.
fn causal_mask(q: &Tensor<4>, k: &Tensor<4>) -> Tensor<4, Bool> {
    let [b, h, s, _] = q.dims();
    let t = k.dims()[2];
    let offset = t.saturating_sub(s);
    let forbidden: Vec<bool> = (0..s)
        .flat_map(|i| (0..t).map(move |j| j > i + offset))
        .collect();
    Tensor::<2, Bool>::from_data(TensorData::new(forbidden, [s, t]), &q.device())
        .reshape([1, 1, s, t])
        .expand([b, h, s, t])
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Distribution, TensorData, Tolerance};

    use super::*;

    /// The fused backward against Burn's differentiated fallback, with and without a mask
    /// (one query row masked entirely, as a padding query is), keys longer than queries.
    #[test]
    fn gradients_match_the_differentiated_fallback() {
        let device = burn::tensor::Device::flex().autodiff();
        let (b, h, s, t, d) = (2, 3, 5, 7, 4);
        let draw = |shape: [usize; 4]| {
            Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device).into_data()
        };
        let (q0, k0, v0) = (draw([b, h, s, d]), draw([b, h, t, d]), draw([b, h, t, d]));
        let weights = Tensor::<4>::from_data(draw([b, h, s, d]), &device);
        let mut forbid = vec![false; b * h * s * t];
        for (i, f) in forbid.iter_mut().enumerate() {
            let (row, col) = ((i / t) % s, i % t);
            // Causal with an offset of 2, and row 0 of the first batch masked entirely.
            *f = col > row + 2 || (i < h * s * t && row == 0);
        }
        let mask = Tensor::<4, Bool>::from_data(TensorData::new(forbid, [b, h, s, t]), &device);
        for mask in [None, Some(mask)] {
            let run = |fused: bool| {
                let leaf = |data: &TensorData| {
                    Tensor::<4>::from_data(data.clone(), &device).require_grad()
                };
                let (q, k, v) = (leaf(&q0), leaf(&k0), leaf(&v0));
                let out = if fused {
                    attend(q.clone(), k.clone(), v.clone(), mask.clone(), false)
                } else {
                    attention(
                        q.clone(),
                        k.clone(),
                        v.clone(),
                        mask.clone(),
                        None,
                        AttentionModuleOptions::default(),
                    )
                };
                let grads = (out.clone() * weights.clone()).sum().backward();
                let grad = |t: &Tensor<4>| t.grad(&grads).expect("a gradient").into_data();
                [out.into_data(), grad(&q), grad(&k), grad(&v)]
            };
            let (fused, fallback) = (run(true), run(false));
            for (name, (a, b)) in ["output", "dq", "dk", "dv"]
                .iter()
                .zip(fused.iter().zip(&fallback))
            {
                assert!(
                    a.iter::<f32>().all(f32::is_finite),
                    "{name} is not finite (mask: {})",
                    mask.is_some()
                );
                a.assert_approx_eq::<f32>(b, Tolerance::absolute(1e-5));
                let _ = name;
            }
        }
    }

    /// Grouped-query attention over long keys (flex's tiled kernel reading grouped K/V and
    /// a mask broadcast over heads) against plain attention with K/V repeated per head and
    /// the mask expanded; with a padding mask, and causal with keys longer than queries.
    #[test]
    fn grouped_attention_over_long_keys_matches_repeated_heads() {
        let device = burn::tensor::Device::flex();
        let (b, h, kvh, s, t, d) = (2, 4, 2, 260, 300, 8);
        assert!(s * t > MATERIALIZE_SCORES);
        let draw =
            |shape: [usize; 4]| Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        let (q, k, v) = (
            draw([b, h, s, d]),
            draw([b, kvh, t, d]),
            draw([b, kvh, t, d]),
        );
        let repeat = |x: Tensor<4>| {
            x.unsqueeze_dim::<5>(2)
                .expand([b, kvh, h / kvh, t, d])
                .reshape([b, h, t, d])
        };
        // Row 1 has 17 padding keys at the front; every query sees keys up to its own.
        let forbid: Vec<bool> = (0..b * s * t)
            .map(|i| {
                let (row, query, key) = (i / (s * t), (i / t) % s, i % t);
                key > query + (t - s) || (row == 1 && key < 17)
            })
            .collect();
        let mask = Tensor::<4, Bool>::from_data(TensorData::new(forbid, [b, 1, s, t]), &device);
        let options = options(1.0 / (d as f64).sqrt());
        let want = attention(
            q.clone(),
            repeat(k.clone()),
            repeat(v.clone()),
            Some(mask.clone().expand([b, h, s, t])),
            None,
            options,
        );
        let got = attend_grouped(q.clone(), k.clone(), v.clone(), Some(mask), false);
        got.into_data()
            .assert_approx_eq::<f32>(&want.into_data(), Tolerance::absolute(1e-5));
        let causal = AttentionModuleOptions {
            is_causal: true,
            ..options
        };
        let want = attention(
            q.clone(),
            repeat(k.clone()),
            repeat(v.clone()),
            None,
            None,
            causal,
        );
        let got = attend_grouped(q, k, v, None, true);
        got.into_data()
            .assert_approx_eq::<f32>(&want.into_data(), Tolerance::absolute(1e-5));
    }

    /// Causal attention without a mask (the fused operation with the mask written out)
    /// against Burn's causal attention, with keys longer than queries (a cache before them).
    #[test]
    fn causal_attention_matches_burns() {
        let device = burn::tensor::Device::flex().autodiff();
        let (b, h, s, t, d) = (2, 2, 4, 6, 8);
        let draw = |shape: [usize; 4]| {
            Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device).into_data()
        };
        let (q0, k0, v0) = (draw([b, h, s, d]), draw([b, h, t, d]), draw([b, h, t, d]));
        let weights = Tensor::<4>::from_data(draw([b, h, s, d]), &device);
        let run = |fused: bool| {
            let leaf =
                |data: &TensorData| Tensor::<4>::from_data(data.clone(), &device).require_grad();
            let (q, k, v) = (leaf(&q0), leaf(&k0), leaf(&v0));
            let out = if fused {
                attend(q.clone(), k.clone(), v.clone(), None, true)
            } else {
                let options = AttentionModuleOptions {
                    is_causal: true,
                    ..options(1.0 / (d as f64).sqrt())
                };
                attention(q.clone(), k.clone(), v.clone(), None, None, options)
            };
            let grads = (out.clone() * weights.clone()).sum().backward();
            let grad = |t: &Tensor<4>| t.grad(&grads).expect("a gradient").into_data();
            [out.into_data(), grad(&q), grad(&k), grad(&v)]
        };
        for (a, b) in run(true).iter().zip(&run(false)) {
            a.assert_approx_eq::<f32>(b, Tolerance::absolute(1e-5));
        }
    }
}
