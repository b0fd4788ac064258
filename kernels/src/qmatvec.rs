//! `y = x·wᵀ` for a weight in one of [`crate::quant`]'s formats: the loops of
//! [`crate::linear::packed_linear`].
//!
//! Decoding (fewer than [`WIDEN_FROM`] activation rows) streams the packed rows once: tiles of
//! 4 weight rows × up to 4 activation rows (AVX-512). A tile first converts its rows' f16
//! scales to f32, sixteen at a time; then each block's 32 codes are widened to two vectors of
//! f32 and multiplied with the activations, and the block's product is scaled once (one
//! activation row) or the codes are (several). A Q4 block's zero point `z` comes in at the end,
//! as `s·z·Σx` over the block, from per-block sums of the activations computed once per call.
//! With more rows (prefill), each task's weight rows are expanded to f32 once and go through
//! [`crate::matvec`]'s f32 loop.

use crate::matvec::{Out, WIDEN_FROM, each_task, f32_rows};
use crate::quant::{BLOCK, Scheme, dequantize_row, dequantize_rows};

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
    #[cfg(target_arch = "x86_64")]
    if scheme == Scheme::Q4 && m < WIDEN_FROM && crate::vnni::available() {
        // Decoding a 4-bit weight: integer dot products against int8 activations.
        let qx = crate::vnni::QuantX::new(x, m, k);
        each_task(n, false, |j0, j1| {
            // SAFETY: the CPU has VNNI (`available`); the task writes y[.., j0..j1] only.
            unsafe { crate::vnni::rows(&qx, &w[j0 * rb..j1 * rb], out, (m, k, n), j0) };
        });
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if crate::matvec::amx_prefill(m, k) {
        // Each task's rows expanded to bf16 once, then AMX tiles against the packed
        // activations; the last rows that do not fill a tile through the f32 loop.
        use crate::amx::{PackedX, TILE, rows as amx_rows};
        let xp = PackedX::new(x, m, k);
        let tiled = n / TILE * TILE;
        each_task(tiled, false, |j0, j1| {
            let bits = expand_bf16(&w[j0 * rb..j1 * rb], k, scheme);
            // SAFETY: AMX is available; the task writes y[.., j0..j1] only.
            unsafe { amx_rows(&xp, &bits, out, n, j0) };
        });
        if tiled < n {
            let wide = dequantize_rows(&w[tiled * rb..], k, scheme);
            // SAFETY: columns tiled..n, written here only.
            unsafe { f32_rows(x, &wide, out, m, k, n, tiled) };
        }
        return;
    }
    // Each activation row's sum over each block: the zero points' share of a Q4 product.
    let xsum: Vec<f32> = if scheme == Scheme::Q4 && m < WIDEN_FROM {
        x.chunks(BLOCK).map(|b| b.iter().sum()).collect()
    } else {
        Vec::new()
    };
    each_task(n, m * n * k < 1 << 15, |j0, j1| {
        let rows = &w[j0 * rb..j1 * rb];
        if m >= WIDEN_FROM {
            let wide = dequantize_rows(rows, k, scheme);
            // SAFETY: the task writes y[.., j0..j1] only.
            unsafe { f32_rows(x, &wide, out, m, k, n, j0) };
        } else {
            // SAFETY: as above.
            unsafe { packed_rows(x, &xsum, rows, out, (m, k, n), j0, scheme) };
        }
    });
}

/// Packed rows as bf16 bits (for AMX tiles).
#[cfg(target_arch = "x86_64")]
fn expand_bf16(w: &[u8], k: usize, scheme: Scheme) -> Vec<u16> {
    let mut out = vec![0u16; w.len() / scheme.row_bytes(k) * k];
    if avx512_packed() {
        // SAFETY: the CPU has the features the loop was compiled for.
        unsafe {
            match scheme {
                Scheme::Q8 => avx512::expand_bf16::<false>(w, k, &mut out),
                Scheme::Q4 => avx512::expand_bf16::<true>(w, k, &mut out),
            }
        }
    } else {
        for (o, v) in out.iter_mut().zip(dequantize_rows(w, k, scheme)) {
            *o = crate::amx::to_bf16(v);
        }
    }
    out
}

/// Whether the CPU runs the AVX-512 loops of packed rows (F/BW/VL, F16C, FMA).
#[cfg(target_arch = "x86_64")]
pub(crate) fn avx512_packed() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("f16c")
        && std::arch::is_x86_feature_detected!("fma")
}

/// Output columns `j0..j0 + rows` of `y` from packed rows.
///
/// # Safety
/// `out` points at `y` (`[m, n]`) and no other task writes these columns.
unsafe fn packed_rows(
    x: &[f32],
    xsum: &[f32],
    w: &[u8],
    out: Out,
    dims: (usize, usize, usize),
    j0: usize,
    scheme: Scheme,
) {
    #[cfg(target_arch = "x86_64")]
    if avx512_packed() {
        // SAFETY: the CPU has the features the loop was compiled for.
        return unsafe {
            match scheme {
                Scheme::Q8 => avx512::rows::<false>(x, xsum, w, out, dims, j0),
                Scheme::Q4 => avx512::rows::<true>(x, xsum, w, out, dims, j0),
            }
        };
    }
    unsafe { portable_rows(x, w, out, dims, j0, scheme) }
}

/// The same without vector intrinsics: each row expanded, then its dot products.
unsafe fn portable_rows(
    x: &[f32],
    w: &[u8],
    out: Out,
    (m, k, n): (usize, usize, usize),
    j0: usize,
    scheme: Scheme,
) {
    let mut wide = vec![0f32; k];
    for (c, row) in w.chunks(scheme.row_bytes(k)).enumerate() {
        dequantize_row(row, scheme, &mut wide);
        for i in 0..m {
            let s: f32 = x[i * k..(i + 1) * k]
                .iter()
                .zip(&wide)
                .map(|(a, b)| a * b)
                .sum();
            // SAFETY: row i < m, column j0 + c < n; only this task writes it.
            unsafe { *out.0.add(i * n + j0 + c) = s };
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use std::arch::x86_64::*;

    use super::{MR, NR, Out};
    /// Tiles ahead that a tile's prefetches reach.
    const PREFETCH: usize = 2;
    use crate::quant::{BLOCK, Scheme};

    /// A block's 32 codes (at `p`) as two vectors of f32, unscaled (Q4: zero point not
    /// subtracted).
    #[inline(always)]
    unsafe fn codes<const Q4: bool>(p: *const u8) -> (__m512, __m512) {
        unsafe {
            if Q4 {
                let v = _mm512_cvtepu8_epi32(_mm_loadu_si128(p.cast()));
                let lo = _mm512_and_si512(v, _mm512_set1_epi32(15));
                let hi = _mm512_srli_epi32::<4>(v);
                (_mm512_cvtepi32_ps(lo), _mm512_cvtepi32_ps(hi))
            } else {
                let v = _mm256_loadu_si256(p.cast());
                let a = _mm512_cvtepi8_epi32(_mm256_castsi256_si128(v));
                let b = _mm512_cvtepi8_epi32(_mm256_extracti128_si256::<1>(v));
                (_mm512_cvtepi32_ps(a), _mm512_cvtepi32_ps(b))
            }
        }
    }

    /// Row `row`'s `nb` f16 scales as f32 into `scales`, and (Q4) each block's `s·z` into
    /// `sz`.
    #[inline(always)]
    pub(crate) unsafe fn row_scales<const Q4: bool>(
        row: *const u8,
        nb: usize,
        scales: &mut [f32],
        sz: &mut [f32],
    ) {
        unsafe {
            let mut b = 0;
            while b < nb {
                let mask: __mmask16 = if b + 16 <= nb {
                    0xFFFF
                } else {
                    ((1u32 << (nb - b)) - 1) as u16
                };
                let h = _mm256_maskz_loadu_epi16(mask, row.add(2 * b).cast());
                let s = _mm512_cvtph_ps(h);
                _mm512_mask_storeu_ps(scales.as_mut_ptr().add(b), mask, s);
                if Q4 {
                    let z = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(
                        mask,
                        row.add(2 * nb + b).cast(),
                    )));
                    _mm512_mask_storeu_ps(sz.as_mut_ptr().add(b), mask, _mm512_mul_ps(s, z));
                }
                b += 16;
            }
        }
    }

    /// `Σ_b a[b]·c[b]` over `nb` values.
    #[inline(always)]
    pub(crate) unsafe fn dot(a: *const f32, c: *const f32, nb: usize) -> f32 {
        unsafe {
            let mut acc = _mm512_setzero_ps();
            let mut b = 0;
            while b < nb {
                let mask: __mmask16 = if b + 16 <= nb {
                    0xFFFF
                } else {
                    ((1u32 << (nb - b)) - 1) as u16
                };
                acc = _mm512_fmadd_ps(
                    _mm512_maskz_loadu_ps(mask, a.add(b)),
                    _mm512_maskz_loadu_ps(mask, c.add(b)),
                    acc,
                );
                b += 16;
            }
            _mm512_reduce_add_ps(acc)
        }
    }

    /// Dot products of `R` activation rows (from `x`, rows `k` apart) with `C` packed rows
    /// (from `w`, `dist` bytes apart; each row's next in its stream a row on) whose scales are
    /// in `scales` (rows `stride` apart).
    #[inline(always)]
    #[allow(clippy::needless_range_loop)] // indices over register arrays, unrolled
    unsafe fn tile<const Q4: bool, const R: usize, const C: usize>(
        x: *const f32,
        (w, ahead): (*const u8, *const u8),
        k: usize,
        dist: usize,
        scales: *const f32,
        stride: usize,
    ) -> [[f32; C]; R] {
        let scheme = if Q4 { Scheme::Q4 } else { Scheme::Q8 };
        let nb = k / BLOCK;
        let (cb, at) = (scheme.code_bytes(), scheme.codes_at(nb));
        unsafe {
            let zero = _mm512_setzero_ps();
            let mut acc = [[zero; C]; R];
            for b in 0..nb {
                let mut wa = [zero; C];
                let mut wb = [zero; C];
                for c in 0..C {
                    let row = w.add(c * dist);
                    // The row two tiles on in this row's stream (`drive`'s `ahead`), its
                    // header and codes alike: one block's share of the row per block.
                    let on = ahead.wrapping_add(c * dist + b * scheme.block_bytes());
                    _mm_prefetch::<_MM_HINT_T0>(on.cast());
                    (wa[c], wb[c]) = codes::<Q4>(row.add(at + b * cb));
                }
                if R == 1 {
                    let xa = _mm512_loadu_ps(x.add(b * BLOCK));
                    let xb = _mm512_loadu_ps(x.add(b * BLOCK + 16));
                    for c in 0..C {
                        let d = _mm512_fmadd_ps(xa, wa[c], _mm512_mul_ps(xb, wb[c]));
                        let s = _mm512_set1_ps(*scales.add(c * stride + b));
                        acc[0][c] = _mm512_fmadd_ps(d, s, acc[0][c]);
                    }
                } else {
                    for c in 0..C {
                        let s = _mm512_set1_ps(*scales.add(c * stride + b));
                        wa[c] = _mm512_mul_ps(wa[c], s);
                        wb[c] = _mm512_mul_ps(wb[c], s);
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

    /// Packed rows (`k` wide) as bf16 bits into `out`, rounded to nearest even.
    ///
    /// # Safety
    /// The CPU has AVX-512 F/BW/VL and F16C.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c,fma")]
    pub(super) unsafe fn expand_bf16<const Q4: bool>(w: &[u8], k: usize, out: &mut [u16]) {
        let scheme = if Q4 { Scheme::Q4 } else { Scheme::Q8 };
        let nb = k / BLOCK;
        let (rb, cb, at) = (
            scheme.row_bytes(k),
            scheme.code_bytes(),
            scheme.codes_at(nb),
        );
        let mut scales = vec![0f32; nb];
        let mut sz = vec![0f32; nb];
        let round = |v: __m512| {
            let bits = _mm512_castps_si512(v);
            let odd = _mm512_and_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(1));
            let up = _mm512_add_epi32(_mm512_add_epi32(bits, _mm512_set1_epi32(0x7FFF)), odd);
            _mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(up))
        };
        for (row, dst) in w.chunks(rb).zip(out.chunks_mut(k)) {
            unsafe {
                row_scales::<Q4>(row.as_ptr(), nb, &mut scales, &mut sz);
                for b in 0..nb {
                    let (qa, qb) = codes::<Q4>(row.as_ptr().add(at + b * cb));
                    let s = _mm512_set1_ps(scales[b]);
                    let (mut a, mut c) = (_mm512_mul_ps(qa, s), _mm512_mul_ps(qb, s));
                    if Q4 {
                        let z = _mm512_set1_ps(sz[b]);
                        (a, c) = (_mm512_sub_ps(a, z), _mm512_sub_ps(c, z));
                    }
                    let p = dst.as_mut_ptr().add(b * BLOCK);
                    _mm256_storeu_si256(p.cast(), round(a));
                    _mm256_storeu_si256(p.add(16).cast(), round(c));
                }
            }
        }
    }

    /// A tile loop over packed rows, for [`drive`].
    pub(crate) trait PackedTiles {
        /// Dot products of activation rows `i..i + R` with the `C` packed rows at `w.0` (rows
        /// `dist` bytes apart, each the head of a stream of consecutive rows), whose f32
        /// scales are at `scales` (rows `stride` apart), before the zero points; the rows at
        /// `w.1` (also `dist` apart) are prefetched.
        ///
        /// # Safety
        /// The rows and scales are there; the CPU has the loop's features.
        unsafe fn tile<const R: usize, const C: usize>(
            &self,
            i: usize,
            w: (*const u8, *const u8),
            dist: usize,
            scales: *const f32,
            stride: usize,
        ) -> [[f32; C]; R];

        /// Activation row `i`'s per-block sums that a Q4 block's `s·z` multiplies.
        fn zero_sums(&self, i: usize) -> *const f32;

        /// How many rows on in its stream a tile's prefetches reach (`ahead` above: the
        /// first column's row that far on, the others `dist` after it).
        const AHEAD: usize;
    }

    /// Output columns `j0..j0 + rows` of `y` (`[m, n]`) from packed rows, by groups of [`NR`]
    /// rows: their scales (and `s·z`) as f32 once, then every activation tile, then the zero
    /// points. Inlined into each loop's `target_feature` function. The groups are
    /// [`crate::matvec::stream_groups`]'.
    ///
    /// # Safety
    /// As [`super::packed_rows`].
    #[inline(always)]
    #[allow(clippy::needless_range_loop)] // rows and columns of the output, as indices
    pub(crate) unsafe fn drive<T: PackedTiles, const Q4: bool>(
        t: &T,
        w: &[u8],
        out: Out,
        (m, k, n): (usize, usize, usize),
        j0: usize,
    ) {
        let scheme = if Q4 { Scheme::Q4 } else { Scheme::Q8 };
        let (rb, nb) = (scheme.row_bytes(k), k / BLOCK);
        let count = w.len() / rb;
        // Zero scales past the last block up to a whole quad of blocks (`vnni` reads four).
        let stride = nb.next_multiple_of(4);
        let mut scales = vec![0f32; NR * stride];
        let mut sz = vec![0f32; NR * stride];
        for (first, step, nr) in crate::matvec::stream_groups(count, NR) {
            let dist = step * rb;
            unsafe {
                for c in 0..nr {
                    let row = w.as_ptr().add(first * rb + c * dist);
                    row_scales::<Q4>(row, nb, &mut scales[c * stride..], &mut sz[c * stride..]);
                }
                let wj = w.as_ptr().add(first * rb);
                // The rows AHEAD on in each stream; past a stream's end, the same stream of
                // the next task (this thread's next, as rayon splits the rows), whose first
                // rows would otherwise start cold.
                let on = first + T::AHEAD;
                let ahead = if step > 1 && on >= step {
                    count + on - step
                } else {
                    on
                };
                let ahead = w.as_ptr().wrapping_add(ahead * rb);
                let mut i = 0;
                while i < m {
                    let mr = MR.min(m - i);
                    let mut sums = [[0f32; NR]; MR];
                    macro_rules! fill {
                        ($r:literal, $c:literal) => {{
                            let tile =
                                t.tile::<$r, $c>(i, (wj, ahead), dist, scales.as_ptr(), stride);
                            for r in 0..$r {
                                for c in 0..$c {
                                    sums[r][c] = tile[r][c];
                                }
                            }
                        }};
                    }
                    match (nr == NR, mr) {
                        (true, 4) => fill!(4, 4),
                        (true, 3) => fill!(3, 4),
                        (true, 2) => fill!(2, 4),
                        (true, _) => fill!(1, 4),
                        (false, 4) => fill!(4, 1),
                        (false, 3) => fill!(3, 1),
                        (false, 2) => fill!(2, 1),
                        (false, _) => fill!(1, 1),
                    }
                    for r in 0..mr {
                        for c in 0..nr {
                            let mut v = sums[r][c];
                            if Q4 {
                                // The zero points: Σ_b s·z·Σx over each block.
                                v -= dot(sz.as_ptr().add(c * stride), t.zero_sums(i + r), nb);
                            }
                            // SAFETY: row i + r < m, column j0 + (the group's row c) < n;
                            // only this task writes it.
                            *out.0.add((i + r) * n + j0 + first + c * step) = v;
                        }
                    }
                    i += mr;
                }
            }
        }
    }

    /// The f32 tiles: codes widened to f32 against f32 activations.
    struct WidenTiles<'a, const Q4: bool> {
        x: &'a [f32],
        xsum: &'a [f32],
        k: usize,
    }

    impl<const Q4: bool> PackedTiles for WidenTiles<'_, Q4> {
        #[inline(always)]
        unsafe fn tile<const R: usize, const C: usize>(
            &self,
            i: usize,
            w: (*const u8, *const u8),
            dist: usize,
            scales: *const f32,
            stride: usize,
        ) -> [[f32; C]; R] {
            let x = self.x[i * self.k..].as_ptr();
            unsafe { tile::<Q4, R, C>(x, w, self.k, dist, scales, stride) }
        }

        const AHEAD: usize = PREFETCH;

        #[inline(always)]
        fn zero_sums(&self, i: usize) -> *const f32 {
            self.xsum[i * (self.k / BLOCK)..].as_ptr()
        }
    }

    /// [`super::packed_rows`] with AVX-512.
    ///
    /// # Safety
    /// The CPU has AVX-512 F/BW/VL, F16C and FMA; as [`super::packed_rows`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c,fma")]
    pub(super) unsafe fn rows<const Q4: bool>(
        x: &[f32],
        xsum: &[f32],
        w: &[u8],
        out: Out,
        dims: (usize, usize, usize),
        j0: usize,
    ) {
        let tiles = WidenTiles::<Q4> { x, xsum, k: dims.1 };
        unsafe { drive::<_, Q4>(&tiles, w, out, dims, j0) }
    }
}

#[cfg(test)]
#[path = "qmatvec_tests.rs"]
mod tests;
