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
//! Four blocks go through two 64-byte vectors: a block's 16 code bytes hold its codes `0..16` in
//! their low nibbles and `16..32` in their high ones, so the 64 bytes of blocks `4q..4q+4` give
//! one vector of every block's first sixteen codes (the low nibbles) and one of the last sixteen
//! (the high nibbles, shifted down); the activations are stored once per call in that order,
//! and the two `VPDPBUSD` of a quad land in the same int32 lanes, four per block.

use std::arch::x86_64::*;

use crate::matvec::Out;
use crate::qmatvec::avx512::{PackedTiles, drive};
use crate::quant::{BLOCK, Scheme};

/// Blocks per step of the loop.
const QUAD: usize = 4;

/// Whether the CPU runs this loop.
pub(crate) fn available() -> bool {
    crate::qmatvec::avx512_packed() && std::arch::is_x86_feature_detected!("avx512vnni")
}

/// Activations `[m, k]` quantized per block of 32, in the order the loop reads them.
pub(crate) struct QuantX {
    /// Per row, per quad of blocks: the blocks' codes `0..16`, then their codes `16..32`
    /// (128 int8; zeros past the last block).
    codes: Vec<i8>,
    /// Per row, per quad: 16 lanes, each block's `sx` four times (zeros past the last block).
    lanes: Vec<f32>,
    /// Per row, per block: `sx·Σxq`, the zero points' share.
    sums: Vec<f32>,
    quads: usize,
    nb: usize,
}

impl QuantX {
    pub(crate) fn new(x: &[f32], m: usize, k: usize) -> Self {
        let nb = k / BLOCK;
        let quads = nb.div_ceil(QUAD);
        let mut codes = vec![0i8; m * quads * 128];
        let mut lanes = vec![0f32; m * quads * 16];
        let mut sums = vec![0f32; m * nb];
        for i in 0..m {
            for b in 0..nb {
                let block = &x[i * k + b * BLOCK..i * k + (b + 1) * BLOCK];
                let amax = block.iter().fold(0f32, |a, v| a.max(v.abs()));
                let sx = amax / 127.0;
                let inv = if sx > 0.0 { 1.0 / sx } else { 0.0 };
                let (q, at) = (b / QUAD, b % QUAD);
                let dst = &mut codes[(i * quads + q) * 128..][..128];
                let mut total = 0i32;
                for (j, &v) in block.iter().enumerate() {
                    let c = crate::quant::round(v * inv).clamp(-127.0, 127.0) as i8;
                    total += i32::from(c);
                    // Codes 0..16 of the quad's blocks first, then codes 16..32.
                    dst[(j / 16) * 64 + at * 16 + j % 16] = c;
                }
                sums[i * nb + b] = sx * total as f32;
                lanes[(i * quads + q) * 16 + at * 4..][..4].fill(sx);
            }
        }
        Self {
            codes,
            lanes,
            sums,
            quads,
            nb,
        }
    }
}

/// Dot products of `R` activation rows with `C` packed Q4 rows (from `w`, `dist` bytes apart),
/// before the zero points, prefetching the rows at `ahead` (also `dist` apart). `scales` holds
/// each row's f32 scales, `stride` apart and zero past the last block up to a whole quad.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // indices over register arrays, unrolled
unsafe fn tile<const R: usize, const C: usize>(
    x: &QuantX,
    i: usize,
    (w, ahead): (*const u8, *const u8),
    dist: usize,
    scales: *const f32,
    stride: usize,
) -> [[f32; C]; R] {
    let (nb, quads) = (x.nb, x.quads);
    let at = Scheme::Q4.codes_at(nb);
    let bb = Scheme::Q4.block_bytes();
    unsafe {
        let zero = _mm512_setzero_ps();
        let nibble = _mm512_set1_epi8(0x0F);
        // Four blocks' scales to the four lanes of each block's sums.
        let spread = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
        let mut acc = [[zero; C]; R];
        // One quad of blocks; a column's 64 code bytes are read under `$mask`, if any.
        macro_rules! quad {
            ($q:expr, $mask:expr) => {{
                let q = $q;
                let mut lo = [_mm512_setzero_si512(); C];
                let mut hi = [_mm512_setzero_si512(); C];
                let mut ws = [zero; C];
                for c in 0..C {
                    let row = w.add(c * dist);
                    // The row `AHEAD` on in this row's stream (`drive`'s `ahead`): this
                    // quad's share of it.
                    let on = ahead.wrapping_add(c * dist + q * QUAD * bb);
                    _mm_prefetch::<_MM_HINT_T0>(on.cast());
                    _mm_prefetch::<_MM_HINT_T0>(on.wrapping_add(2 * bb).cast());
                    let p = row.add(at + q * QUAD * 16).cast();
                    let v = match $mask {
                        Some(mask) => _mm512_maskz_loadu_epi8(mask, p),
                        None => _mm512_loadu_si512(p.cast()),
                    };
                    lo[c] = _mm512_and_si512(v, nibble);
                    hi[c] = _mm512_and_si512(_mm512_srli_epi16::<4>(v), nibble);
                    let four = _mm_loadu_ps(scales.add(c * stride + q * QUAD));
                    ws[c] = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(four));
                }
                for r in 0..R {
                    let xq = x.codes.as_ptr().add(((i + r) * quads + q) * 128);
                    let xlo = _mm512_loadu_si512(xq.cast());
                    let xhi = _mm512_loadu_si512(xq.add(64).cast());
                    let xs = _mm512_loadu_ps(x.lanes.as_ptr().add(((i + r) * quads + q) * 16));
                    for c in 0..C {
                        let dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo[c], xlo);
                        let dot = _mm512_dpbusd_epi32(dot, hi[c], xhi);
                        let s = _mm512_mul_ps(xs, ws[c]);
                        acc[r][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), s, acc[r][c]);
                    }
                }
            }};
        }
        let whole = nb / QUAD;
        for q in 0..whole {
            quad!(q, None::<u64>);
        }
        if whole < quads {
            // The last blocks: their code bytes end the row.
            let mask = (1u64 << ((nb - whole * QUAD) * 16)) - 1;
            quad!(whole, Some(mask));
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
}

impl PackedTiles for VnniTiles<'_> {
    #[inline(always)]
    unsafe fn tile<const R: usize, const C: usize>(
        &self,
        i: usize,
        w: (*const u8, *const u8),
        dist: usize,
        scales: *const f32,
        stride: usize,
    ) -> [[f32; C]; R] {
        unsafe { tile::<R, C>(self.x, i, w, dist, scales, stride) }
    }

    const AHEAD: usize = 4;

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
    let tiles = VnniTiles { x };
    unsafe { drive::<_, true>(&tiles, w, out, dims, j0) }
}
