//! Q4 rows against activations quantized to int8 per block, with AVX-512 VNNI: the decode loop
//! of a 4-bit weight, as llama.cpp runs its 4-bit formats.
//!
//! Widening 4-bit codes to f32 costs more vector work per byte than the memory delivers them
//! (the f32 loop of [`crate::qmatvec`] reached about half the bandwidth). Here each activation
//! row is quantized once per call, per block of 32, to int8 with an f32 scale `sx` (and the
//! block's code sum `Σxq`); then `VPDPBUSD` multiplies the weight's unsigned codes with the
//! signed activation codes and sums them in int32, exactly: for a block,
//! `s·sx·(Σ q·xq − z·Σxq)`. The activations' rounding (half a step of 1/127 of the block's
//! largest value) is the only error added to the weight's own.
//!
//! Two blocks go through one 64-byte vector: the 32 code bytes of blocks `b, b+1` hold codes
//! `0..16` of each in their low halves and `16..32` in their high halves, so the vector is those
//! 32 bytes with the low halves kept in its first half and the high halves shifted down in its
//! second; the activations are stored once per call in the same order.

use std::arch::x86_64::*;

use crate::matvec::Out;
use crate::qmatvec::avx512::{PackedTiles, drive};
use crate::quant::{BLOCK, Scheme};

/// Whether the CPU runs this loop.
pub(crate) fn available() -> bool {
    crate::qmatvec::avx512_packed() && std::arch::is_x86_feature_detected!("avx512vnni")
}

/// Activations `[m, k]` quantized per block of 32, in the pair order the loop reads.
pub(crate) struct QuantX {
    /// Per row, per pair of blocks: 64 int8 codes.
    codes: Vec<i8>,
    /// Per row, per pair: 16 lanes `[sx_b ×4, sx_b+1 ×4, sx_b ×4, sx_b+1 ×4]`.
    lanes: Vec<f32>,
    /// Per row, per block: `sx·Σxq`, the zero points' share.
    sums: Vec<f32>,
    pairs: usize,
    nb: usize,
}

impl QuantX {
    pub(crate) fn new(x: &[f32], m: usize, k: usize) -> Self {
        let nb = k / BLOCK;
        let pairs = nb.div_ceil(2);
        let mut codes = vec![0i8; m * pairs * 64];
        let mut lanes = vec![0f32; m * pairs * 16];
        let mut sums = vec![0f32; m * nb];
        for i in 0..m {
            for b in 0..nb {
                let block = &x[i * k + b * BLOCK..i * k + (b + 1) * BLOCK];
                let amax = block.iter().fold(0f32, |a, v| a.max(v.abs()));
                let sx = amax / 127.0;
                let inv = if sx > 0.0 { 1.0 / sx } else { 0.0 };
                let (p, second) = (b / 2, b % 2);
                let dst = &mut codes[(i * pairs + p) * 64..][..64];
                let mut total = 0i32;
                for (j, &v) in block.iter().enumerate() {
                    let q = crate::quant::round(v * inv).clamp(-127.0, 127.0) as i8;
                    total += i32::from(q);
                    // Low halves (codes 0..16) first, both blocks; then the high halves.
                    let at = (j / 16) * 32 + second * 16 + j % 16;
                    dst[at] = q;
                }
                sums[i * nb + b] = sx * total as f32;
                let l = &mut lanes[(i * pairs + p) * 16..][..16];
                for half in 0..2 {
                    for t in 0..4 {
                        l[half * 8 + second * 4 + t] = sx;
                    }
                }
            }
        }
        Self {
            codes,
            lanes,
            sums,
            pairs,
            nb,
        }
    }
}

/// The codes of blocks `2p, 2p+1` (at `p`; only the first when `last_odd`) as 64 unsigned
/// bytes in the activations' order.
#[inline(always)]
unsafe fn codes(p: *const u8, last_odd: bool) -> __m512i {
    unsafe {
        let v = if last_odd {
            _mm256_maskz_loadu_epi8(0x0000_FFFF, p.cast())
        } else {
            _mm256_loadu_si256(p.cast())
        };
        let both = _mm512_broadcast_i64x4(v);
        // Shift the second half's bytes down a nibble (16-bit lanes 16..32), keep the low
        // nibble of every byte.
        let shifted = _mm512_mask_srli_epi16(both, 0xFFFF_0000, both, 4);
        _mm512_and_si512(shifted, _mm512_set1_epi8(0x0F))
    }
}

/// Dot products of `R` activation rows with `C` packed Q4 rows (from `w`, `rb` bytes apart),
/// before the zero points.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // indices over register arrays, unrolled
unsafe fn tile<const R: usize, const C: usize>(
    x: &QuantX,
    i: usize,
    w: *const u8,
    rb: usize,
    scales: *const f32,
    stride: usize,
) -> [[f32; C]; R] {
    let (nb, pairs) = (x.nb, x.pairs);
    let at = Scheme::Q4.codes_at(nb);
    unsafe {
        let zero = _mm512_setzero_ps();
        // Two blocks' scales `s_b, s_b+1` to the lanes of their sums.
        let spread = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1);
        let mut acc = [[zero; C]; R];
        for p in 0..pairs {
            let last_odd = 2 * p + 1 == nb;
            let mut wv = [_mm512_setzero_si512(); C];
            let mut ws = [zero; C];
            for c in 0..C {
                let row = w.add(c * rb);
                _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(8 * rb + p * 38).cast());
                wv[c] = codes(row.add(at + p * 32), last_odd);
                let two = _mm_castpd_ps(_mm_load_sd(scales.add(c * stride + 2 * p).cast()));
                ws[c] = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(two));
            }
            for r in 0..R {
                let xq =
                    _mm512_loadu_si512(x.codes.as_ptr().add(((i + r) * pairs + p) * 64).cast());
                let xs = _mm512_loadu_ps(x.lanes.as_ptr().add(((i + r) * pairs + p) * 16));
                for c in 0..C {
                    let dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wv[c], xq);
                    let scaled = _mm512_mul_ps(_mm512_cvtepi32_ps(dot), xs);
                    acc[r][c] = _mm512_fmadd_ps(scaled, ws[c], acc[r][c]);
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

/// The VNNI tiles, for [`crate::qmatvec::avx512::drive`].
struct VnniTiles<'a> {
    x: &'a QuantX,
    rb: usize,
}

impl PackedTiles for VnniTiles<'_> {
    #[inline(always)]
    unsafe fn tile<const R: usize, const C: usize>(
        &self,
        i: usize,
        w: *const u8,
        scales: *const f32,
        stride: usize,
    ) -> [[f32; C]; R] {
        unsafe { tile::<R, C>(self.x, i, w, self.rb, scales, stride) }
    }

    #[inline(always)]
    fn zero_sums(&self, i: usize) -> *const f32 {
        self.x.sums[i * self.x.nb..].as_ptr()
    }
}

/// Output columns `j0..j0 + rows` of `y` (`[m, n]`) from packed Q4 rows.
///
/// # Safety
/// [`available`]; `out` points at `y` and no other task writes these columns.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,f16c,fma")]
pub(crate) unsafe fn rows(x: &QuantX, w: &[u8], out: Out, dims: (usize, usize, usize), j0: usize) {
    let tiles = VnniTiles {
        x,
        rb: Scheme::Q4.row_bytes(dims.1),
    };
    unsafe { drive::<_, true>(&tiles, w, out, dims, j0) }
}
