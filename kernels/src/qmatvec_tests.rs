use super::*;
use crate::quant::quantize_rows;
use crate::test_values as values;

/// Every loop (the streamed tiles, the portable one, the expanded prefill) gives the
/// product with the dequantized weight.
#[test]
fn the_packed_product_equals_the_product_with_the_dequantized_weight() {
    for scheme in [Scheme::Q8, Scheme::Q4] {
        for &(m, k, n) in &[
            (1, 32, 4),
            (3, 64, 7),
            (4, 96, 70),
            (9, 64, 5),
            (2, 160, 9),
            (17, 32, 66),
            (1, 256, 5),
            (2, 224, 6),
        ] {
            let x = values(m * k, 1);
            let packed = quantize_rows(&values(n * k, 2), k, scheme, |v| v);
            let wide = dequantize_rows(&packed, k, scheme);
            // A prefill on AMX tiles rounds the activations and the expanded weights to
            // bf16 (whole tiles of 16 weight rows; the rest stays f32).
            #[cfg(target_arch = "x86_64")]
            let tiled = if crate::matvec::amx_prefill(m, k) {
                n / 16 * 16
            } else {
                0
            };
            #[cfg(not(target_arch = "x86_64"))]
            let tiled = 0;
            let bf = |v: f32| {
                #[cfg(target_arch = "x86_64")]
                return f32::from_bits(u32::from(crate::amx::to_bf16(v)) << 16);
                #[cfg(not(target_arch = "x86_64"))]
                v
            };
            // A 4-bit decode on VNNI quantizes the activations per block to int8.
            #[cfg(target_arch = "x86_64")]
            let int8 = scheme == Scheme::Q4 && m < WIDEN_FROM && crate::vnni::available();
            #[cfg(not(target_arch = "x86_64"))]
            let int8 = false;
            let xr: Vec<f32> = if int8 {
                x.chunks(BLOCK)
                    .flat_map(|b| {
                        let sx = b.iter().fold(0f32, |a, v| a.max(v.abs())) / 127.0;
                        let inv = if sx > 0.0 { 1.0 / sx } else { 0.0 };
                        b.iter()
                            .map(move |v| (v * inv).round().clamp(-127.0, 127.0) * sx)
                    })
                    .collect()
            } else {
                x.clone()
            };
            let product = |x: &[f32], ij: usize, round: bool| {
                let (i, j) = (ij / n, ij % n);
                let r = |v: f32| if round && j < tiled { bf(v) } else { v };
                (0..k)
                    .map(|l| f64::from(r(x[i * k + l])) * f64::from(r(wide[j * k + l])))
                    .sum::<f64>() as f32
            };
            let want: Vec<f32> = (0..m * n).map(|ij| product(&xr, ij, true)).collect();
            let exact: Vec<f32> = (0..m * n).map(|ij| product(&x, ij, false)).collect();
            let mut y = vec![f32::NAN; m * n];
            matmul_q(&x, &packed, &mut y, (m, k, n), scheme);
            let mut z = vec![f32::NAN; m * n];
            // SAFETY: all rows, written to z only.
            unsafe { portable_rows(&x, &packed, Out(z.as_mut_ptr()), (m, k, n), 0, scheme) };
            for (((a, p), b), e) in y.iter().zip(&z).zip(&want).zip(&exact) {
                let tol = 2e-5 * (1.0 + b.abs());
                assert!((a - b).abs() <= tol, "{scheme:?} {m}×{k}×{n}: {a} vs {b}");
                if m < WIDEN_FROM {
                    let tol = 2e-5 * (1.0 + e.abs());
                    assert!((p - e).abs() <= tol, "portable {m}×{k}×{n}: {p} vs {e}");
                }
            }
        }
    }
}
