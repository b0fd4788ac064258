//! bf16 products on Intel AMX tiles: the prefill of a bf16 (or quantized, expanded to bf16)
//! weight, where the activations are many rows and the product is compute-bound.
//!
//! `y = x·wᵀ` is computed as its transpose, tile by tile: `TDPBF16PS` multiplies a tile `A` of
//! 16 weight rows × 32 inputs (read straight from the checkpoint's `[out, in]` rows) with a
//! tile `B` of the activations in AMX's pair-interleaved layout (16 input pairs × 16 activation
//! rows × 2, packed once per call), accumulating 16 × 16 f32 sums. Two weight tiles × two
//! activation tiles share four accumulators. The activations are rounded to bf16, as a bf16
//! model's are; sums are f32.
//!
//! Linux only, after the process asks for the tile state (`arch_prctl(ARCH_REQ_XCOMP_PERM)`);
//! [`available`] says whether both the CPU and the kernel allow it.

use std::arch::asm;
use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
use std::sync::OnceLock;

use crate::matvec::Out;

/// Weight rows per tile, activation rows per tile.
pub(crate) const TILE: usize = 16;
/// Inputs per tile (32 bf16 = 64 bytes, a tile row).
pub(crate) const DEPTH: usize = 32;
/// How many tiles of inputs ahead the weight rows are prefetched.
const AHEAD: usize = 4;

/// Whether AMX-BF16 runs here: the CPU has it and Linux granted this process the tile data.
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        if std::env::var_os("NURI_NO_AMX").is_some() {
            return false;
        }
        let leaf = std::arch::x86_64::__cpuid_count(7, 0);
        let (bf16, tile) = (leaf.edx >> 22 & 1 == 1, leaf.edx >> 24 & 1 == 1);
        if !(bf16 && tile && cfg!(target_os = "linux")) {
            return false;
        }
        unsafe extern "C" {
            fn syscall(number: i64, ...) -> i64;
        }
        const SYS_ARCH_PRCTL: i64 = 158;
        const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
        const XFEATURE_XTILEDATA: i64 = 18;
        // SAFETY: a request for a permission; it changes nothing else.
        unsafe { syscall(SYS_ARCH_PRCTL, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
    })
}

/// `v` rounded to bf16 (to nearest, ties to even), as its bits.
#[inline(always)]
pub(crate) fn to_bf16(v: f32) -> u16 {
    let bits = v.to_bits();
    ((bits + 0x7FFF + (bits >> 16 & 1)) >> 16) as u16
}

/// Activations `[m, k]` in bf16, in AMX's pair-interleaved layout: for each tile of 16 rows
/// and each 32 inputs, 16 rows (input pairs) of 16 activation rows × 2 (rows past `m` zero).
pub(crate) struct PackedX {
    data: Vec<u16>,
    m: usize,
    k: usize,
}

impl PackedX {
    pub(crate) fn new(x: &[f32], m: usize, k: usize) -> Self {
        let (tiles, depth) = (m.div_ceil(TILE), k / DEPTH);
        let mut data = vec![0u16; tiles * depth * TILE * DEPTH];
        for (i, row) in x.chunks(k).enumerate() {
            let (t, r) = (i / TILE, i % TILE);
            for (d, chunk) in row.chunks(DEPTH).enumerate() {
                let tile = &mut data[(t * depth + d) * TILE * DEPTH..][..TILE * DEPTH];
                for (l, &v) in chunk.iter().enumerate() {
                    tile[(l / 2) * DEPTH + r * 2 + l % 2] = to_bf16(v);
                }
            }
        }
        Self { data, m, k }
    }

    /// The tile of activation rows `16t..` and inputs `32d..`.
    fn tile(&self, t: usize, d: usize) -> *const u16 {
        let depth = self.k / DEPTH;
        self.data[(t * depth + d) * TILE * DEPTH..].as_ptr()
    }
}

/// The tile configuration: every tile 16 rows of 64 bytes (palette 1).
#[repr(C, align(64))]
struct Config([u8; 64]);

impl Config {
    fn new() -> Self {
        let mut c = [0u8; 64];
        c[0] = 1;
        for t in 0..8 {
            c[16 + 2 * t] = 64;
            c[48 + t] = TILE as u8;
        }
        Self(c)
    }
}

/// Writes the 16 × 16 sums of `c` (weight row-major: `c[n][m]`) to `y` at weight rows `col..`
/// and activation rows `16t..`.
///
/// # Safety
/// As [`rows`]: `out` is `y` (`[m, n]`), the columns are this task's.
unsafe fn put(c: &[f32; TILE * TILE], out: Out, (m, n): (usize, usize), t: usize, col: usize) {
    for r in 0..TILE.min(m - t * TILE) {
        for j in 0..TILE {
            // SAFETY: row 16t + r < m, column col + j < n, written by this task only.
            unsafe { *out.0.add((t * TILE + r) * n + col + j) = c[j * TILE + r] };
        }
    }
}

/// Output columns `j0..j0 + rows` of `y` (`[m, n]`) from `rows` bf16 weight rows `w`
/// (`[rows, k]`, `rows` a multiple of 16, `k` of 32) and the packed activations.
///
/// # Safety
/// [`available`]; `out` points at `y` and no other task writes these columns.
pub(crate) unsafe fn rows(x: &PackedX, w: &[u16], out: Out, n: usize, j0: usize) {
    let (m, k) = (x.m, x.k);
    let count = w.len() / k;
    debug_assert!(count.is_multiple_of(TILE) && k.is_multiple_of(DEPTH));
    let stride = k * 2; // bytes between weight rows
    let config = Config::new();
    let mut c = [[0f32; TILE * TILE]; 4];
    let m_tiles = m.div_ceil(TILE);
    // SAFETY: the tile state was granted (`available`); every load reads 16 rows of 64 bytes
    // inside `w` or the packed activations, every store writes `c`.
    unsafe {
        asm!("ldtilecfg [{}]", in(reg) config.0.as_ptr());
        let mut j = 0;
        while j < count {
            let pair = count - j >= 2 * TILE;
            let a0 = w.as_ptr().add(j * k);
            let a1 = if pair { a0.add(TILE * k) } else { a0 };
            let mut t = 0;
            while t < m_tiles {
                let two = t + 1 < m_tiles;
                asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    "tilezero tmm3"
                );
                for d in 0..k / DEPTH {
                    if t == 0 {
                        // The weight rows' next lines, a few tiles on: 32 rows read 64 bytes
                        // at a time are more streams than the hardware prefetcher follows.
                        let ahead = (d + AHEAD) * DEPTH;
                        if ahead < k {
                            for r in 0..TILE {
                                let p0 = a0.add(r * k + ahead);
                                let p1 = a1.add(r * k + ahead);
                                _mm_prefetch::<_MM_HINT_T0>(p0.cast());
                                _mm_prefetch::<_MM_HINT_T0>(p1.cast());
                            }
                        }
                    }
                    let b0 = x.tile(t, d);
                    let b1 = if two { x.tile(t + 1, d) } else { b0 };
                    asm!(
                        "tileloadd tmm4, [{a0} + {s}*1]",
                        "tileloadd tmm5, [{a1} + {s}*1]",
                        "tileloadd tmm6, [{b0} + {bs}*1]",
                        "tileloadd tmm7, [{b1} + {bs}*1]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        "tdpbf16ps tmm2, tmm5, tmm6",
                        "tdpbf16ps tmm3, tmm5, tmm7",
                        a0 = in(reg) a0.add(d * DEPTH),
                        a1 = in(reg) a1.add(d * DEPTH),
                        b0 = in(reg) b0,
                        b1 = in(reg) b1,
                        s = in(reg) stride,
                        bs = in(reg) 64usize,
                    );
                }
                asm!(
                    "tilestored [{c0} + {s}*1], tmm0",
                    "tilestored [{c1} + {s}*1], tmm1",
                    "tilestored [{c2} + {s}*1], tmm2",
                    "tilestored [{c3} + {s}*1], tmm3",
                    c0 = in(reg) c[0].as_mut_ptr(),
                    c1 = in(reg) c[1].as_mut_ptr(),
                    c2 = in(reg) c[2].as_mut_ptr(),
                    c3 = in(reg) c[3].as_mut_ptr(),
                    s = in(reg) 64usize,
                );
                put(&c[0], out, (m, n), t, j0 + j);
                if two {
                    put(&c[1], out, (m, n), t + 1, j0 + j);
                }
                if pair {
                    put(&c[2], out, (m, n), t, j0 + j + TILE);
                    if two {
                        put(&c[3], out, (m, n), t + 1, j0 + j + TILE);
                    }
                }
                t += 2;
            }
            j += if pair { 2 * TILE } else { TILE };
        }
        asm!("tilerelease");
    }
}
