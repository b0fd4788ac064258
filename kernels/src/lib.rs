//! nuri-kernels: the operations every model block is built from, fused on the CPU.
//!
//! Each operation is a Burn backend extension (a trait with Burn's composed operations as
//! its default bodies, overridden by a fused, vectorized loop for the flex CPU backend and
//! by an explicit backward for autodiff), and a plain function over `Tensor<D>` that takes
//! the fused path on the CPU and Burn's operations on every other device:
//!
//! - [`rowops`]: RMSNorm, LayerNorm, rotate-half RoPE and the cross-entropy (one row at a
//!   time);
//! - [`act`]: SiLU/QuickGELU (`x·σ(αx)`) and SwiGLU;
//! - [`attend`]: scaled dot-product attention with a causal or boolean mask;
//! - [`linear`]: `x·w + b` with the weight in another float type (bf16 on an f32 CPU path)
//!   and in the checkpoint's `[out, in]` layout, streamed at memory speed when decoding.
//!
//! The element loops themselves are in `loops` (AVX2 + FMA builds chosen at run time). This
//! crate knows no model: what a layer is, or which checkpoint a block comes from, is
//! `nuri-model`'s.

#[macro_use]
mod fused;

pub mod act;
#[cfg(target_arch = "x86_64")]
pub mod amx;
pub mod attend;
pub mod linear;
mod loops;
mod matvec;
mod qmatvec;
pub mod quant;
#[cfg(target_arch = "x86_64")]
mod sgemm;
#[cfg(target_arch = "x86_64")]
mod vnni;

pub use matvec::stream_read;
pub mod rowops;

use burn::tensor::Tensor;

pub use act::{sigmoid_gate, swiglu};
pub use attend::{attend, attend_grouped};
pub use linear::{linear, packed_linear};
pub use rowops::{cross_entropy, layer_norm, rms_norm, rope};

/// `[x1, x2] -> [-x2, x1]` over the last dimension's two halves: the rotation partner of
/// each coordinate in the rotate-half RoPE layout (the language model's and the vision
/// tower's).
pub fn rotate_half<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let hd = x.dims()[D - 1];
    let x1 = x.clone().narrow(D - 1, 0, hd / 2);
    let x2 = x.narrow(D - 1, hd / 2, hd / 2);
    Tensor::cat(vec![x2.neg(), x1], D - 1)
}

/// Runs `f` on a worker of rayon's global pool (the threads that Burn's CPU kernels and the
/// fused operations use) and waits for it. The calling thread then sleeps instead of
/// competing with the pool's threads for the cores, and the operations `f` starts are the
/// pool's own work: a parallel loop started from outside the pool is handed over to it and
/// waited for through the OS (about 25 µs a call on the 2-core VM, against about 7 µs from a
/// worker), which a decode step of ~200 matrix-vector products pays every time. On 2 cores
/// the quickstart training step ran ~8% faster so too (`nuri bench --preset quickstart --only
/// train`, alternating rounds).
///
/// With a single worker it runs `f` here instead: a worker blocked on a channel (the trainer
/// waiting for its data loader) would leave the pool no thread for other work.
pub fn on_compute_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_num_threads() < 2 {
        return f();
    }
    rayon::scope(|_| f())
}

/// Whether `device` is the flex (CPU) backend, with or without autodiff: where the fused
/// operations run.
pub fn on_flex(device: &burn::tensor::Device) -> bool {
    matches!(
        device.as_dispatch().clone().inner(),
        burn::backend::DispatchDevice::Flex(_)
    )
}

/// Deterministic values in `[-1, 1]` for the loops' tests.
#[cfg(test)]
pub(crate) fn test_values(len: usize, seed: u32) -> Vec<f32> {
    (0..len)
        .map(|i| {
            let h = (i as u32)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(seed.wrapping_mul(40_503));
            (h % 2001) as f32 / 1000.0 - 1.0
        })
        .collect()
}
