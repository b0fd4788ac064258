//! `y = x·wᵀ` for a weight in one of [`crate::quant`]'s formats: the loops of
//! [`crate::linear::packed_linear`].
//!
//! Decoding (fewer than [`WIDEN_FROM`] activation rows) streams the packed rows once: tiles of
//! 4 weight rows × up to 4 activation rows, each block's 32 codes widened to two vectors of
//! f32 and multiplied by the block's scale, then accumulated with the activations in f32 over
//! 16 lanes (AVX-512), as the bf16 loop of [`crate::matvec`] does. With more rows (prefill),
//! each task's weight rows are expanded to f32 once and go through that f32 loop.

use rayon::prelude::*;

use crate::matvec::{Out, TASK_ROWS, WIDEN_FROM, f32_rows};
use crate::quant::{BLOCK, Scheme, dequantize_rows};

/// Activation rows per tile.
const MR: usize = 4;
/// Weight rows per tile.
const NR: usize = 4;

/// `y[i][j] = Σ_l x[i][l]·w[j][l]` for `x` `[m, k]`, `w` `n` rows of `scheme.row_bytes(k)`
/// bytes, `y` `[m, n]` (overwritten).
pub fn matmul_q(
    x: &[f32],
    w: &[u8],
    y: &mut [f32],
    (m, k, n): (usize, usize, usize),
    scheme: Scheme,
) {
    let rb = scheme.row_bytes(k);
    assert!(Scheme::fits(k), "quantized rows are whole blocks");
    assert_eq!(x.len(), m * k, "x is [m, k]");
    assert_eq!(w.len(), n * rb, "w is n packed rows");
    assert_eq!(y.len(), m * n, "y is [m, n]");
    if m == 0 || n == 0 {
        return;
    }
    let out = Out(y.as_mut_ptr());
    let tasks = n.div_ceil(TASK_ROWS);
    let run = |t: usize| {
        let (j0, j1) = (t * TASK_ROWS, ((t + 1) * TASK_ROWS).min(n));
        let rows = &w[j0 * rb..j1 * rb];
        if m >= WIDEN_FROM {
            let wide = dequantize_rows(rows, k, scheme);
            // SAFETY: the task writes y[.., j0..j1] only.
            unsafe { f32_rows(x, &wide, out, m, k, n, j0) };
        } else {
            // SAFETY: as above.
            unsafe { packed_rows(x, rows, out, (m, k, n), j0, scheme) };
        }
    };
    if tasks == 1 || m * n * k < 1 << 15 {
        (0..tasks).for_each(run);
    } else {
        (0..tasks).into_par_iter().for_each(run);
    }
}

/// Output columns `j0..j0 + rows` of `y` from packed rows.
///
/// # Safety
/// `out` points at `y` (`[m, n]`) and no other task writes these columns.
unsafe fn packed_rows(
    x: &[f32],
    w: &[u8],
    out: Out,
    dims: (usize, usize, usize),
    j0: usize,
    scheme: Scheme,
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("f16c")
        && std::arch::is_x86_feature_detected!("fma")
    {
        // SAFETY: the CPU has the features the loop was compiled for.
        return unsafe {
            match scheme {
                Scheme::Q8 => avx512::rows::<false>(x, w, out, dims, j0),
                Scheme::Q4 => avx512::rows::<true>(x, w, out, dims, j0),
            }
        };
    }
    unsafe { portable_rows(x, w, out, dims, j0, scheme) }
}

/// The same without vector intrinsics: each block expanded, then its dot products.
unsafe fn portable_rows(
    x: &[f32],
    w: &[u8],
    out: Out,
    (m, k, n): (usize, usize, usize),
    j0: usize,
    scheme: Scheme,
) {
    let rb = scheme.row_bytes(k);
    let bb = scheme.block_bytes();
    let mut block = [0f32; BLOCK];
    for (c, row) in w.chunks(rb).enumerate() {
        let mut sums = [0f32; WIDEN_FROM];
        for (b, packed) in row.chunks(bb).enumerate() {
            crate::quant::dequantize_block(packed, scheme, &mut block);
            for (i, s) in sums.iter_mut().enumerate().take(m) {
                let xs = &x[i * k + b * BLOCK..i * k + (b + 1) * BLOCK];
                *s += xs.iter().zip(&block).map(|(a, b)| a * b).sum::<f32>();
            }
        }
        for (i, &s) in sums.iter().enumerate().take(m) {
            // SAFETY: row i < m, column j0 + c < n; only this task writes it.
            unsafe { *out.0.add(i * n + j0 + c) = s };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{MR, NR, Out};
    use crate::quant::{BLOCK, Scheme};

    /// A block's 32 weights as two vectors of f32 (scale applied).
    #[inline(always)]
    unsafe fn block<const Q4: bool>(p: *const u8) -> (__m512, __m512) {
        unsafe {
            let bits = u16::from_le_bytes([*p, *p.add(1)]);
            let s = _mm512_set1_ps(_mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
                i32::from(bits),
            ))));
            if Q4 {
                let z = _mm512_set1_epi32(i32::from(*p.add(2)));
                let v = _mm512_cvtepu8_epi32(_mm_loadu_si128(p.add(3).cast()));
                let lo = _mm512_sub_epi32(_mm512_and_si512(v, _mm512_set1_epi32(15)), z);
                let hi = _mm512_sub_epi32(_mm512_srli_epi32::<4>(v), z);
                (
                    _mm512_mul_ps(_mm512_cvtepi32_ps(lo), s),
                    _mm512_mul_ps(_mm512_cvtepi32_ps(hi), s),
                )
            } else {
                let a = _mm512_cvtepi8_epi32(_mm_loadu_si128(p.add(2).cast()));
                let b = _mm512_cvtepi8_epi32(_mm_loadu_si128(p.add(18).cast()));
                (
                    _mm512_mul_ps(_mm512_cvtepi32_ps(a), s),
                    _mm512_mul_ps(_mm512_cvtepi32_ps(b), s),
                )
            }
        }
    }

    /// Dot products of `R` activation rows (from `x`, rows `k` apart) with `C` packed rows
    /// (from `w`, rows `rb` bytes apart).
    #[inline(always)]
    #[allow(clippy::needless_range_loop)] // indices over register arrays, unrolled
    unsafe fn tile<const Q4: bool, const R: usize, const C: usize>(
        x: *const f32,
        w: *const u8,
        k: usize,
    ) -> [[f32; C]; R] {
        let scheme = if Q4 { Scheme::Q4 } else { Scheme::Q8 };
        let (bb, rb) = (scheme.block_bytes(), scheme.row_bytes(k));
        unsafe {
            let zero = _mm512_setzero_ps();
            let mut acc = [[zero; C]; R];
            for b in 0..k / BLOCK {
                let mut wa = [zero; C];
                let mut wb = [zero; C];
                for c in 0..C {
                    (wa[c], wb[c]) = block::<Q4>(w.add(c * rb + b * bb));
                }
                for r in 0..R {
                    let xa = _mm512_loadu_ps(x.add(r * k + b * BLOCK));
                    let xb = _mm512_loadu_ps(x.add(r * k + b * BLOCK + 16));
                    for c in 0..C {
                        acc[r][c] =
                            _mm512_fmadd_ps(xb, wb[c], _mm512_fmadd_ps(xa, wa[c], acc[r][c]));
                    }
                }
            }
            let mut sums = [[0.0f32; C]; R];
            for r in 0..R {
                for c in 0..C {
                    sums[r][c] = _mm512_reduce_add_ps(acc[r][c]);
                }
            }
            sums
        }
    }

    /// [`super::packed_rows`] with AVX-512.
    ///
    /// # Safety
    /// The CPU has AVX-512 F/BW, F16C and FMA; as [`super::packed_rows`].
    #[target_feature(enable = "avx512f,avx512bw,f16c,fma")]
    pub(super) unsafe fn rows<const Q4: bool>(
        x: &[f32],
        w: &[u8],
        out: Out,
        (m, k, n): (usize, usize, usize),
        j0: usize,
    ) {
        let scheme = if Q4 { Scheme::Q4 } else { Scheme::Q8 };
        let rb = scheme.row_bytes(k);
        let count = w.len() / rb;
        let put = |i: usize, col: usize, sums: &[&[f32]]| {
            for (r, row) in sums.iter().enumerate() {
                for (c, &v) in row.iter().enumerate() {
                    // SAFETY: row i + r < m, column col + c < n; only this task writes it.
                    unsafe { *out.0.add((i + r) * n + col + c) = v };
                }
            }
        };
        let mut j = 0;
        while j < count {
            let nr = NR.min(count - j);
            let mut i = 0;
            while i < m {
                let mr = MR.min(m - i);
                unsafe {
                    let xi = x.as_ptr().add(i * k);
                    if nr == NR {
                        let wj = w.as_ptr().add(j * rb);
                        match mr {
                            4 => {
                                let s = tile::<Q4, 4, 4>(xi, wj, k);
                                put(i, j0 + j, &[&s[0], &s[1], &s[2], &s[3]]);
                            }
                            3 => {
                                let s = tile::<Q4, 3, 4>(xi, wj, k);
                                put(i, j0 + j, &[&s[0], &s[1], &s[2]]);
                            }
                            2 => {
                                let s = tile::<Q4, 2, 4>(xi, wj, k);
                                put(i, j0 + j, &[&s[0], &s[1]]);
                            }
                            _ => {
                                let s = tile::<Q4, 1, 4>(xi, wj, k);
                                put(i, j0 + j, &[&s[0]]);
                            }
                        }
                    } else {
                        for c in 0..nr {
                            let wc = w.as_ptr().add((j + c) * rb);
                            for r in 0..mr {
                                let s = tile::<Q4, 1, 1>(xi.add(r * k), wc, k);
                                put(i + r, j0 + j + c, &[&s[0]]);
                            }
                        }
                    }
                }
                i += mr;
            }
            j += nr;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::quantize_rows;

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let h = (i as u32)
                    .wrapping_mul(2_654_435_761)
                    .wrapping_add(seed.wrapping_mul(40_503));
                (h % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    /// Every loop (the streamed tiles, the portable one, the expanded prefill) gives the
    /// product with the dequantized weight.
    #[test]
    fn the_packed_product_equals_the_product_with_the_dequantized_weight() {
        for scheme in [Scheme::Q8, Scheme::Q4] {
            for &(m, k, n) in &[(1, 32, 4), (3, 64, 7), (4, 96, 70), (9, 64, 5), (17, 32, 66)] {
                let x = values(m * k, 1);
                let packed = quantize_rows(&values(n * k, 2), k, scheme, |v| v);
                let wide = dequantize_rows(&packed, k, scheme);
                let want: Vec<f32> = (0..m * n)
                    .map(|ij| {
                        let (i, j) = (ij / n, ij % n);
                        (0..k)
                            .map(|l| f64::from(x[i * k + l]) * f64::from(wide[j * k + l]))
                            .sum::<f64>() as f32
                    })
                    .collect();
                let mut y = vec![f32::NAN; m * n];
                matmul_q(&x, &packed, &mut y, (m, k, n), scheme);
                let mut z = vec![f32::NAN; m * n];
                // SAFETY: all rows, written to z only.
                unsafe { portable_rows(&x, &packed, Out(z.as_mut_ptr()), (m, k, n), 0, scheme) };
                for ((a, p), b) in y.iter().zip(&z).zip(&want) {
                    let tol = 1e-5 * (1.0 + b.abs());
                    assert!((a - b).abs() <= tol, "{scheme:?} {m}×{k}×{n}: {a} vs {b}");
                    if m < WIDEN_FROM {
                        assert!((p - b).abs() <= tol, "portable {m}×{k}×{n}: {p} vs {b}");
                    }
                }
            }
        }
    }
}
