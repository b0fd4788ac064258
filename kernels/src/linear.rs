//! A linear layer's product `x·w + b` whose weight may be stored in another float type than
//! the activations (bf16 weights, f32 compute on the CPU), with the weight in either layout:
//! Burn's `[in, out]` or, as a transposed view, the checkpoint's `[out, in]`.
//!
//! Burn's CPU matmul of a bf16 weight widens the whole weight to f32 on every call, and an
//! f32 matmul at batch 1 is a matrix-vector product that gemm does not stream at memory speed.
//! On the flex backend without autodiff, a weight held as the checkpoint's rows (`[out, in]`
//! in memory, which the loader keeps) is read directly by [`crate::matvec`]: one pass over its
//! bytes per call, f32 accumulation; an f32 weight at prefill sizes goes to the outer-product
//! tiles of [`crate::sgemm`] on AVX-512, which read those rows in place (Burn's gemm packs the
//! transposed weight on every call). Everything else — other devices, training (autodiff), an
//! f32 prefill without AVX-512 — takes Burn's operations with the weight cast to the
//! activations' type.

use burn::backend::flex::{FlexTensor, Layout};
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Flex, backend_extension};
use burn::tensor::{DType, FloatDType, Int, Tensor, TensorData};

use crate::fused::{f32_tensor, values};
use crate::matvec::matmul_wt;
use crate::on_flex;
use crate::qmatvec::matmul_q;
use crate::quant::{Scheme, dequantize_rows};

/// Activation rows from which an f32 weight goes to gemm instead of the streaming loop (where
/// the CPU has no f32 prefill tiles of ours).
const F32_STREAM_ROWS: usize = 16;

#[backend_extension(Flex)]
pub trait FusedLinear: Backend {
    /// `x·w` for `x` `[m, k]` and `w` `[k, n]`, `w` cast to `x`'s float type.
    fn linear_matmul(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        let w = cast_like::<Self>(w, &x);
        Self::float_matmul(x, w)
    }
}

fn cast_like<B: Backend>(w: FloatTensor<B>, x: &FloatTensor<B>) -> FloatTensor<B> {
    use burn::backend::TensorMetadata;
    if w.dtype() == x.dtype() {
        w
    } else {
        B::float_cast(w, FloatDType::from(x.dtype()))
    }
}

impl FusedLinear for Flex {
    fn linear_matmul(x: FlexTensor, w: FlexTensor) -> FlexTensor {
        let (m, k) = {
            let shape = x.layout().shape();
            (shape[0], shape[1])
        };
        let n = w.layout().shape()[1];
        // The checkpoint's `[n, k]` rows seen as `[k, n]`: strides (1, k).
        let rows_layout = w.layout().strides() == [1, k as isize];
        let streams = x.dtype() == DType::F32
            && rows_layout
            && match w.dtype() {
                DType::BF16 => true,
                DType::F32 => m < F32_STREAM_ROWS || crate::matvec::f32_prefill_tiles(),
                _ => false,
            };
        if !streams {
            let w = cast_like::<Flex>(w, &x);
            return Flex::float_matmul(x, w);
        }
        let (x, _) = values(&x);
        let xs = x.as_slice::<f32>().expect("contiguous f32");
        let start = w.layout().start_offset();
        let mut y = vec![0.0f32; m * n];
        match w.dtype() {
            DType::BF16 => {
                let all = w.storage::<burn::tensor::bf16>();
                // SAFETY: bf16 is a transparent wrapper of its u16 bits.
                let bits: &[u16] =
                    unsafe { std::slice::from_raw_parts(all.as_ptr().cast::<u16>(), all.len()) };
                matmul_wt(xs, &bits[start..start + n * k], &mut y, m, k, n);
            }
            _ => {
                let all = w.storage::<f32>();
                matmul_wt(xs, &all[start..start + n * k], &mut y, m, k, n);
            }
        }
        f32_tensor(y, Layout::contiguous([m, n].into()))
    }
}

/// `x·weight + bias` over the last dimension, as Burn's `Linear` computes it (`weight`
/// `[in, out]`), with `weight` and `bias` in any float type: the result is in `x`'s.
///
/// # Shapes
/// - `x`: `[..., in]` → `[..., out]`
pub fn linear<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
) -> Tensor<D> {
    let dims = x.dims();
    let [k, n] = weight.dims();
    assert_eq!(
        dims[D - 1],
        k,
        "linear: input width {} ≠ weight rows {k}",
        dims[D - 1]
    );
    let dtype = x.dtype();
    let y = if on_flex(&x.device()) && !x.is_autodiff() && !weight.is_autodiff() {
        let m = dims[..D - 1].iter().product();
        let x2 = x.reshape([m, k]); // [m, in]
        let y = <burn::backend::Dispatch as FusedLinear>::linear_matmul(
            x2.into_dispatch(),
            weight.into_dispatch(),
        );
        let mut out = dims;
        out[D - 1] = n;
        Tensor::<2>::from_dispatch(y).reshape(out)
    } else {
        let weight = if weight.dtype() == dtype {
            weight
        } else {
            weight.cast(dtype)
        };
        x.matmul(weight.unsqueeze())
    };
    match bias {
        Some(b) if b.dtype() == dtype => y + b.unsqueeze(),
        Some(b) => y + b.cast(dtype).unsqueeze(),
        None => y,
    }
}

/// `x·wᵀ + b` for a weight held in one of [`crate::quant`]'s formats: `packed` is the
/// checkpoint's `[out, in]` weight as `[out, row_bytes]` bytes (Burn `U8`), `x` `[..., in]`.
/// On the CPU the packed rows are read in place ([`crate::qmatvec`]); elsewhere (or under
/// autodiff) the weight is expanded to `x`'s float type for the call.
///
/// # Shapes
/// - `x`: `[..., in]` → `[..., out]`
pub fn packed_linear<const D: usize>(
    x: Tensor<D>,
    packed: Tensor<2, Int>,
    bias: Option<Tensor<1>>,
) -> Tensor<D> {
    let dims = x.dims();
    let k = dims[D - 1];
    let [n, rb] = packed.dims();
    let scheme = Scheme::of_row(k, rb).unwrap_or_else(|| {
        panic!("packed_linear: rows of {rb} bytes are no quantized format of width {k}")
    });
    let dtype = x.dtype();
    let m: usize = dims[..D - 1].iter().product();
    let mut out = dims;
    out[D - 1] = n;
    let device = x.device();
    let y = if on_flex(&device) && !x.is_autodiff() {
        let x2 = x.reshape([m, k]).cast(DType::F32);
        let xf = x2.try_into_primitive::<Flex>().expect("a flex tensor");
        let wf = packed.try_into_primitive::<Flex>().expect("a flex tensor");
        let (xf, _) = values(&xf);
        let (wf, _) = values(&wf);
        let bytes = wf.as_slice::<u8>().expect("contiguous u8");
        let mut y = vec![0.0f32; m * n];
        matmul_q(
            xf.as_slice::<f32>().expect("contiguous f32"),
            bytes,
            &mut y,
            (m, k, n),
            scheme,
        );
        let y = f32_tensor(y, Layout::contiguous([m, n].into()));
        Tensor::<2>::from_primitive::<Flex>(y)
            .cast(dtype)
            .reshape(out)
    } else {
        let data = packed.into_data();
        let bytes = data.as_bytes();
        let wide = dequantize_rows(bytes, k, scheme);
        let w = Tensor::<2>::from_data(TensorData::new(wide, [n, k]), (&device, DType::F32))
            .cast(dtype)
            .transpose();
        x.matmul(w.unsqueeze())
    };
    match bias {
        Some(b) if b.dtype() == dtype => y + b.unsqueeze(),
        Some(b) => y + b.cast(dtype).unsqueeze(),
        None => y,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};

    fn close(a: Tensor<3>, b: Tensor<3>, tol: f32) {
        let (a, b) = (a.into_data(), b.into_data());
        let (a, b) = (
            a.try_to_vec::<f32>().unwrap(),
            b.try_to_vec::<f32>().unwrap(),
        );
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{x} vs {y}");
        }
    }

    /// The checkpoint's `[out, in]` weight seen as Burn's `[in, out]`, in f32 and bf16, at a
    /// decoding batch and a prefill batch, equals Burn's own matmul of the same values.
    #[test]
    fn a_transposed_weight_in_any_float_type_equals_burns_matmul() {
        let device = Device::flex();
        let (k, n) = (70, 37);
        let rows = Tensor::<2>::random([n, k], Distribution::Normal(0.0, 1.0), &device);
        let bias = Tensor::<1>::random([n], Distribution::Normal(0.0, 1.0), &device);
        for t in [1, 3, 20] {
            let x = Tensor::<3>::random([2, t, k], Distribution::Normal(0.0, 1.0), &device);
            let want =
                x.clone().matmul(rows.clone().transpose().unsqueeze()) + bias.clone().unsqueeze();
            let got = linear(x.clone(), rows.clone().transpose(), Some(bias.clone()));
            close(got, want, 1e-5);
            // bf16 weights: the same as the f32 product of the rounded values.
            let rounded = rows.clone().cast(DType::BF16);
            let want = x
                .clone()
                .matmul(rounded.clone().cast(DType::F32).transpose().unsqueeze());
            let got = linear(x.clone(), rounded.clone().transpose(), None);
            assert_eq!(got.dtype(), DType::F32);
            close(got, want, 1e-5);
            // Burn's own layout takes Burn's matmul.
            let plain = Tensor::<2>::from_data(
                rows.clone().transpose().into_data().convert::<f32>(),
                &device,
            );
            close(
                linear(x.clone(), plain, None),
                x.matmul(rows.clone().transpose().unsqueeze()),
                1e-5,
            );
        }
    }

    /// A packed weight on the CPU, in each scheme, at a decoding and a prefill batch, equals
    /// Burn's matmul with the dequantized weight (and the expanded path elsewhere agrees).
    #[test]
    fn a_packed_weight_equals_the_product_with_its_dequantized_values() {
        use crate::quant::quantize_rows;
        let device = Device::flex();
        let (k, n) = (64, 37);
        let rows = Tensor::<2>::random([n, k], Distribution::Normal(0.0, 1.0), &device);
        let values = rows
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap();
        let bias = Tensor::<1>::random([n], Distribution::Normal(0.0, 1.0), &device);
        for scheme in [Scheme::Q8, Scheme::Q4] {
            let packed = quantize_rows(&values, k, scheme, |v| v);
            let wide = dequantize_rows(&packed, k, scheme);
            let w = Tensor::<2>::from_data(TensorData::new(wide, [n, k]), &device).transpose();
            let rb = scheme.row_bytes(k);
            let codes =
                Tensor::<2, Int>::from_data(TensorData::new(packed, [n, rb]), (&device, DType::U8));
            assert_eq!(codes.dtype(), DType::U8, "flex keeps the bytes as bytes");
            for t in [1, 3, 20] {
                let x = Tensor::<3>::random([2, t, k], Distribution::Normal(0.0, 1.0), &device);
                let want = x.clone().matmul(w.clone().unsqueeze()) + bias.clone().unsqueeze();
                let got = packed_linear(x.clone(), codes.clone(), Some(bias.clone()));
                // A prefill may run in bf16 on AMX tiles, and decoding 4 bits quantizes the
                // activations to int8 (`vnni`): each term's error is then under
                // max|x|·|w| / 127, so the sum's under max|x|·Σ|w| / 127.
                let rounds = t * 2 >= 16 || scheme == Scheme::Q4;
                let coef = if rounds { 1.0 / 127.0 } else { 0.0 };
                let bound = x.clone().abs().max_dim(2) * w.clone().abs().sum_dim(0).unsqueeze();
                let excess = (got - want.clone()).abs() - bound.mul_scalar(coef).add_scalar(1e-4);
                let worst = excess.max().into_scalar::<f32>();
                assert!(
                    worst <= 0.0,
                    "{scheme:?} at {t} rows: {worst} past the bound"
                );
                let tracked = Tensor::<3>::from_data(x.into_data(), &device.clone().autodiff());
                let expanded = packed_linear(tracked, codes.clone(), Some(bias.clone()));
                close(
                    Tensor::<3>::from_data(expanded.into_data(), &device),
                    want,
                    1e-5,
                );
            }
        }
    }
}
