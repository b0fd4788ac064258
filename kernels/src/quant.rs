//! Nuri's weight-only quantized formats: a linear layer's `[out, in]` weight as rows of
//! 32-value blocks, each block a scale and its codes, stored as bytes (Burn `U8`).
//!
//! | scheme | block (bytes) | value | bits per weight |
//! |---|---|---|---|
//! | [`Scheme::Q8`] | f16 scale `s`, 32 × i8 `q` | `s·q` (symmetric, `s = max|w| / 127`) | 8.5 |
//! | [`Scheme::Q4`] | f16 scale `s`, u8 zero `z`, 16 bytes | `s·(q − z)`, `q, z ∈ 0..=15` | 4.75 |
//!
//! A Q4 block's byte `j` holds code `j` in its low half and code `j + 16` in its high half
//! (so one 16-byte load widens to both halves of the block). Q4 has a zero point, as AWQ's
//! 4-bit format has: an AWQ checkpoint (groups of 128 sharing an f16 scale and a 4-bit zero)
//! is a Q4 tensor whose blocks repeat their group's scale and zero, with no loss.
//!
//! Rows are the checkpoint's rows (one output each), blocks in order along the input, so a
//! matrix-vector product reads the weight as one stream. Widths must be multiples of
//! [`BLOCK`]; a layer whose width is not stays in its float type.

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
    /// Bytes of one block.
    pub const fn block_bytes(self) -> usize {
        match self {
            Scheme::Q8 => 2 + BLOCK,
            Scheme::Q4 => 3 + BLOCK / 2,
        }
    }

    /// Bits of the codes.
    pub const fn bits(self) -> u32 {
        match self {
            Scheme::Q8 => 8,
            Scheme::Q4 => 4,
        }
    }

    /// The scheme of `bits` (8 or 4).
    pub fn from_bits(bits: u64) -> Option<Self> {
        match bits {
            8 => Some(Scheme::Q8),
            4 => Some(Scheme::Q4),
            _ => None,
        }
    }

    /// Bytes of a row of `k` values (`k` a multiple of [`BLOCK`]).
    pub const fn row_bytes(self, k: usize) -> usize {
        k / BLOCK * self.block_bytes()
    }

    /// The scheme whose rows of `k` values take `row_bytes` bytes, if one does.
    pub fn of_row(k: usize, row_bytes: usize) -> Option<Self> {
        if k == 0 || !k.is_multiple_of(BLOCK) {
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

/// `v` rounded to f16, and back.
fn f16_round(v: f32) -> (u16, f32) {
    let h = f16::from_f32(v);
    (h.to_bits(), h.to_f32())
}

/// One block of 32 values into `out` (`scheme.block_bytes()` bytes).
pub fn quantize_block(values: &[f32], scheme: Scheme, out: &mut [u8]) {
    debug_assert_eq!(values.len(), BLOCK);
    match scheme {
        Scheme::Q8 => {
            let amax = values.iter().fold(0f32, |a, v| a.max(v.abs()));
            let (bits, s) = f16_round(amax / 127.0);
            out[..2].copy_from_slice(&bits.to_le_bytes());
            let inv = if s > 0.0 { 1.0 / s } else { 0.0 };
            for (o, v) in out[2..].iter_mut().zip(values) {
                *o = (v * inv).round().clamp(-127.0, 127.0) as i8 as u8;
            }
        }
        Scheme::Q4 => {
            let lo = values.iter().fold(f32::INFINITY, |a, &v| a.min(v));
            let hi = values.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
            // The range always holds 0, so a block of equal values is exact, and 0 is.
            let (lo, hi) = (lo.min(0.0), hi.max(0.0));
            let (bits, s) = f16_round((hi - lo) / 15.0);
            let inv = if s > 0.0 { 1.0 / s } else { 0.0 };
            let z = (-lo * inv).round().clamp(0.0, 15.0);
            out[..2].copy_from_slice(&bits.to_le_bytes());
            out[2] = z as u8;
            let code = |v: f32| (v * inv + z).round().clamp(0.0, 15.0) as u8;
            for j in 0..BLOCK / 2 {
                out[3 + j] = code(values[j]) | code(values[j + BLOCK / 2]) << 4;
            }
        }
    }
}

/// A block's values (`BLOCK` of them) into `out`.
pub fn dequantize_block(block: &[u8], scheme: Scheme, out: &mut [f32]) {
    let s = f16::from_bits(u16::from_le_bytes([block[0], block[1]])).to_f32();
    match scheme {
        Scheme::Q8 => {
            for (o, &q) in out.iter_mut().zip(&block[2..2 + BLOCK]) {
                *o = s * f32::from(q as i8);
            }
        }
        Scheme::Q4 => {
            let z = f32::from(block[2]);
            for j in 0..BLOCK / 2 {
                let b = block[3 + j];
                out[j] = s * (f32::from(b & 15) - z);
                out[j + BLOCK / 2] = s * (f32::from(b >> 4) - z);
            }
        }
    }
}

/// A block's scale.
pub fn block_scale(block: &[u8]) -> f32 {
    f16::from_bits(u16::from_le_bytes([block[0], block[1]])).to_f32()
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
    assert!(Scheme::fits(k), "a quantized row is whole blocks of {BLOCK}");
    let n = rows.len() / k;
    let rb = scheme.row_bytes(k);
    let mut out = vec![0u8; n * rb];
    out.par_chunks_mut(rb)
        .zip(rows.par_chunks(k))
        .for_each(|(dst, src)| {
            let mut block = [0f32; BLOCK];
            for (b, chunk) in src.chunks(BLOCK).enumerate() {
                for (d, &s) in block.iter_mut().zip(chunk) {
                    *d = widen(s);
                }
                let bb = scheme.block_bytes();
                quantize_block(&block, scheme, &mut dst[b * bb..(b + 1) * bb]);
            }
        });
    out
}

/// The values of quantized rows (`[n, k]` in f32).
pub fn dequantize_rows(packed: &[u8], k: usize, scheme: Scheme) -> Vec<f32> {
    let bb = scheme.block_bytes();
    let mut out = vec![0f32; packed.len() / bb * BLOCK];
    for (block, dst) in packed.chunks(bb).zip(out.chunks_mut(BLOCK)) {
        dequantize_block(block, scheme, dst);
    }
    debug_assert_eq!(out.len() % k.max(1), 0);
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
            let bb = scheme.block_bytes();
            let mut worst = 0f32;
            for (b, (orig, got)) in w.chunks(BLOCK).zip(back.chunks(BLOCK)).enumerate() {
                let s = block_scale(&packed[b * bb..]);
                assert!(s > 0.0);
                for (o, g) in orig.iter().zip(got) {
                    let err = (o - g).abs();
                    assert!(
                        err <= scheme.bound(s),
                        "{scheme:?}: {o} → {g}, step {s}"
                    );
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
        let back = dequantize_rows(&quantize_rows(&max, BLOCK, Scheme::Q8, |v| v), BLOCK, Scheme::Q8);
        assert_eq!(back, max);
        let q4: Vec<f32> = (0..BLOCK).map(|i| ((i % 16) as f32 - 3.0) * 0.5).collect();
        let back = dequantize_rows(&quantize_rows(&q4, BLOCK, Scheme::Q4, |v| v), BLOCK, Scheme::Q4);
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
