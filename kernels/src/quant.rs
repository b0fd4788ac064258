//! Nuri's weight-only quantized formats: a linear layer's `[out, in]` weight as rows of
//! 32-value blocks, each block with a scale (and for 4 bits a zero point) and its codes,
//! stored as bytes (Burn `U8`).
//!
//! | scheme | per block | value | bits per weight |
//! |---|---|---|---|
//! | [`Scheme::Q8`] | f16 scale `s`, 32 × i8 `q` | `s·q` (symmetric, `s = max|w| / 127`) | 8.5 |
//! | [`Scheme::Q4`] | f16 scale `s`, u8 zero `z`, 32 × 4-bit `q` | `s·(q − z)`, `q, z ∈ 0..=15` | 4.75 |
//!
//! A row of `k` values (`nb = k / 32` blocks) is laid out as its `nb` f16 scales, then (Q4)
//! its `nb` zero points, then the blocks' codes in order: 32 bytes per block for Q8, 16 for Q4,
//! whose byte `j` holds code `j` in its low half and code `j + 16` in its high half (so one
//! 16-byte load widens to both halves of the block). Scales apart from codes let the
//! matrix-vector loop convert a row's scales sixteen at a time and read each block's codes as
//! one aligned run. Q4 has a zero point, as AWQ's 4-bit format has: an AWQ checkpoint (groups
//! of 128 inputs sharing an f16 scale and a 4-bit zero) is a Q4 tensor whose blocks repeat
//! their group's scale and zero, with no loss.
//!
//! Rows are the checkpoint's rows (one output each), so a matrix-vector product reads the
//! weight as one stream. Widths must be multiples of [`BLOCK`]; a layer whose width is not
//! stays in its float type.

use burn::tensor::f16;

/// Values per block.
pub const BLOCK: usize = 32;

/// A quantized format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// 8-bit symmetric.
    Q8,
    /// 4-bit with a zero point.
    Q4,
}

impl Scheme {
    /// Bytes of one block: its scale, its zero point (Q4) and its codes.
    pub const fn block_bytes(self) -> usize {
        match self {
            Scheme::Q8 => 2 + BLOCK,
            Scheme::Q4 => 3 + BLOCK / 2,
        }
    }

    /// Bytes of one block's codes.
    pub const fn code_bytes(self) -> usize {
        match self {
            Scheme::Q8 => BLOCK,
            Scheme::Q4 => BLOCK / 2,
        }
    }

    /// Where a row of `nb` blocks' codes start (after its scales and zero points).
    pub const fn codes_at(self, nb: usize) -> usize {
        match self {
            Scheme::Q8 => 2 * nb,
            Scheme::Q4 => 3 * nb,
        }
    }

    /// Bits of the codes.
    pub const fn bits(self) -> u32 {
        match self {
            Scheme::Q8 => 8,
            Scheme::Q4 => 4,
        }
    }

    /// Bytes of a row of `k` values (`k` a multiple of [`BLOCK`]).
    pub const fn row_bytes(self, k: usize) -> usize {
        k / BLOCK * self.block_bytes()
    }

    /// The scheme whose rows of `k` values take `row_bytes` bytes, if one does.
    pub fn of_row(k: usize, row_bytes: usize) -> Option<Self> {
        if !Self::fits(k) {
            return None;
        }
        [Scheme::Q8, Scheme::Q4]
            .into_iter()
            .find(|s| s.row_bytes(k) == row_bytes)
    }

    /// Whether a layer `k` values wide can be kept in a quantized format.
    pub const fn fits(k: usize) -> bool {
        k > 0 && k.is_multiple_of(BLOCK)
    }

    /// The largest error of one value after a round trip, for a block whose scale is `s`
    /// (half a step, and the scale's own f16 rounding over the block's range).
    pub fn bound(self, s: f32) -> f32 {
        let steps = match self {
            Scheme::Q8 => 127.0,
            Scheme::Q4 => 15.0,
        };
        s * (0.5 + steps * 2f32.powi(-10))
    }
}

/// `v` rounded to the nearest integer (ties to even) without a call into libm: exact for
/// `|v| < 2²²`, which codes are.
#[inline(always)]
pub(crate) fn round(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2²³
    (v + MAGIC) - MAGIC
}

/// A block's scale of row `row` (of `nb` blocks).
pub fn block_scale(row: &[u8], b: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([row[2 * b], row[2 * b + 1]])).to_f32()
}

/// One row of `k` values into `out` (`scheme.row_bytes(k)` bytes).
pub fn quantize_row(values: &[f32], scheme: Scheme, out: &mut [u8]) {
    let nb = values.len() / BLOCK;
    let (codes_at, cb) = (scheme.codes_at(nb), scheme.code_bytes());
    let (head, codes) = out.split_at_mut(codes_at);
    for (b, block) in values.chunks(BLOCK).enumerate() {
        let code = &mut codes[b * cb..(b + 1) * cb];
        let (s, zero) = match scheme {
            Scheme::Q8 => {
                let amax = block.iter().fold(0f32, |a, v| a.max(v.abs()));
                let s = f16::from_f32(amax / 127.0);
                let inv = if s.to_f32() > 0.0 {
                    1.0 / s.to_f32()
                } else {
                    0.0
                };
                for (o, v) in code.iter_mut().zip(block) {
                    *o = round(v * inv).clamp(-127.0, 127.0) as i8 as u8;
                }
                (s, None)
            }
            Scheme::Q4 => {
                // The range always holds 0, so 0 is exact and so is a block of equal values.
                let lo = block.iter().fold(0f32, |a, &v| a.min(v));
                let hi = block.iter().fold(0f32, |a, &v| a.max(v));
                let s = f16::from_f32((hi - lo) / 15.0);
                let inv = if s.to_f32() > 0.0 {
                    1.0 / s.to_f32()
                } else {
                    0.0
                };
                let z = round(-lo * inv).clamp(0.0, 15.0);
                let q = |v: f32| round(v * inv + z).clamp(0.0, 15.0) as u8;
                for j in 0..BLOCK / 2 {
                    code[j] = q(block[j]) | q(block[j + BLOCK / 2]) << 4;
                }
                (s, Some(z as u8))
            }
        };
        head[2 * b..2 * b + 2].copy_from_slice(&s.to_bits().to_le_bytes());
        if let Some(z) = zero {
            head[2 * nb + b] = z;
        }
    }
}

/// A row's values (`out.len()` of them) from its packed bytes.
pub fn dequantize_row(row: &[u8], scheme: Scheme, out: &mut [f32]) {
    let nb = out.len() / BLOCK;
    let (codes_at, cb) = (scheme.codes_at(nb), scheme.code_bytes());
    for (b, dst) in out.chunks_mut(BLOCK).enumerate() {
        let s = block_scale(row, b);
        let code = &row[codes_at + b * cb..codes_at + (b + 1) * cb];
        match scheme {
            Scheme::Q8 => {
                for (o, &q) in dst.iter_mut().zip(code) {
                    *o = s * f32::from(q as i8);
                }
            }
            Scheme::Q4 => {
                let z = f32::from(row[2 * nb + b]);
                for (j, &byte) in code.iter().enumerate() {
                    dst[j] = s * (f32::from(byte & 15) - z);
                    dst[j + BLOCK / 2] = s * (f32::from(byte >> 4) - z);
                }
            }
        }
    }
}

/// `rows` (`[n, k]`, row-major, any float widened by `widen`) in `scheme`: `n` rows of
/// `scheme.row_bytes(k)` bytes.
pub fn quantize_rows<T: Copy + Sync>(
    rows: &[T],
    k: usize,
    scheme: Scheme,
    widen: impl Fn(T) -> f32 + Sync,
) -> Vec<u8> {
    use rayon::prelude::*;
    assert!(
        Scheme::fits(k),
        "a quantized row is whole blocks of {BLOCK}"
    );
    let n = rows.len() / k;
    let rb = scheme.row_bytes(k);
    let mut out = vec![0u8; n * rb];
    out.par_chunks_mut(rb)
        .zip(rows.par_chunks(k))
        .for_each_init(
            || vec![0f32; k],
            |wide, (dst, src)| {
                for (d, &s) in wide.iter_mut().zip(src) {
                    *d = widen(s);
                }
                quantize_row(wide, scheme, dst);
            },
        );
    out
}

/// The values of quantized rows (`[n, k]` in f32).
pub fn dequantize_rows(packed: &[u8], k: usize, scheme: Scheme) -> Vec<f32> {
    let rb = scheme.row_bytes(k);
    let mut out = vec![0f32; packed.len() / rb * k];
    for (row, dst) in packed.chunks(rb).zip(out.chunks_mut(k)) {
        dequantize_row(row, scheme, dst);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let h = (i as u32)
                    .wrapping_mul(2_654_435_761)
                    .wrapping_add(seed.wrapping_mul(40_503));
                ((h % 2001) as f32 / 1000.0 - 1.0) * (1.0 + (i % 7) as f32)
            })
            .collect()
    }

    #[test]
    fn a_round_trip_is_within_half_a_step() {
        for scheme in [Scheme::Q8, Scheme::Q4] {
            let (n, k) = (7, 96);
            let w = values(n * k, 5);
            let packed = quantize_rows(&w, k, scheme, |v| v);
            assert_eq!(packed.len(), n * scheme.row_bytes(k));
            assert_eq!(Scheme::of_row(k, scheme.row_bytes(k)), Some(scheme));
            let back = dequantize_rows(&packed, k, scheme);
            let (rb, nb) = (scheme.row_bytes(k), k / BLOCK);
            let mut worst = 0f32;
            for (i, (orig, got)) in w.chunks(BLOCK).zip(back.chunks(BLOCK)).enumerate() {
                let s = block_scale(&packed[i / nb * rb..], i % nb);
                assert!(s > 0.0);
                for (o, g) in orig.iter().zip(got) {
                    let err = (o - g).abs();
                    assert!(err <= scheme.bound(s), "{scheme:?}: {o} → {g}, step {s}");
                    worst = worst.max(err / s);
                }
            }
            // The bound is tight: some value is close to half a step away.
            assert!(worst > 0.4, "{scheme:?}: worst {worst} steps");
        }
    }

    #[test]
    fn values_on_the_grid_come_back_exactly() {
        // Codes times a power-of-two scale: exact in f16 and in the codes.
        let q8: Vec<f32> = (0..BLOCK).map(|i| (i as f32 - 16.0) * 0.25).collect();
        let mut max = q8.clone();
        max[0] = 127.0 * 0.25;
        let back = dequantize_rows(
            &quantize_rows(&max, BLOCK, Scheme::Q8, |v| v),
            BLOCK,
            Scheme::Q8,
        );
        assert_eq!(back, max);
        let q4: Vec<f32> = (0..BLOCK).map(|i| ((i % 16) as f32 - 3.0) * 0.5).collect();
        let back = dequantize_rows(
            &quantize_rows(&q4, BLOCK, Scheme::Q4, |v| v),
            BLOCK,
            Scheme::Q4,
        );
        assert_eq!(back, q4);
        // Zeros and constant blocks.
        for scheme in [Scheme::Q8, Scheme::Q4] {
            let zero = vec![0.0; BLOCK];
            let back = dequantize_rows(&quantize_rows(&zero, BLOCK, scheme, |v| v), BLOCK, scheme);
            assert_eq!(back, zero);
        }
    }

    #[test]
    fn widths_that_are_not_whole_blocks_do_not_fit() {
        assert!(!Scheme::fits(48));
        assert!(Scheme::fits(64));
        assert_eq!(Scheme::of_row(48, 51), None);
        assert_eq!(Scheme::of_row(64, 68), Some(Scheme::Q8));
        assert_eq!(Scheme::of_row(64, 38), Some(Scheme::Q4));
    }
}
