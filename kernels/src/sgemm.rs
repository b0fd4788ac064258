//! f32 weights at prefill sizes, with AVX-512: `y = x·wᵀ` for many activation rows and the
//! checkpoint's `[out, in]` f32 rows, read in place.
//!
//! The product is compute-bound here, so the loop is a register tile of outer products, as
//! BLAS kernels are: 64 activation rows (four vectors of 16) × 6 weight rows, 24 accumulators.
//! A general matrix product packs the weight for such a tile (the transposed weight's columns
//! run along the checkpoint's rows; Burn's gemm spent as long packing as multiplying); here
//! the activations are packed instead, once per call, as `xᵀ` in blocks of 64 rows, and each
//! weight is broadcast from its row: at input `l`, the tile reads the 64 rows' `x[·][l]` as
//! four vectors and the six weights `w[j][l]`, one broadcast each, and makes 24 fused
//! multiply-adds. Inputs go in blocks of [`KC`] (the block of activations stays in L2, the six
//! rows' share of it in L1); the sums go to a transposed scratch between blocks. Each sum is
//! one f32 accumulation in input order.

use std::arch::x86_64::*;

use crate::matvec::Out;

/// Activation rows per tile (four vectors of 16).
const MB: usize = 64;
/// Weight rows per tile.
const NW: usize = 6;
/// Inputs per block.
const KC: usize = 1024;
/// Blocks of activation rows per pass over the weight (their inputs of one block, 1 MB, stay
/// in L2).
const MC: usize = 4;
/// Weight rows per parallel task (whole tiles).
const TASK: usize = 16 * NW;

/// Whether the CPU runs this loop.
pub(crate) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma")
}

/// `x` (`[m, k]`) transposed per block of 64 rows: block `t`, input `l` holds rows
/// `64t..64t + 64` (zeros past `m`).
pub(crate) struct PackedX {
    data: Vec<f32>,
    m: usize,
    k: usize,
}

impl PackedX {
    pub(crate) fn new(x: &[f32], m: usize, k: usize) -> Self {
        let blocks = m.div_ceil(MB);
        let mut data = vec![0f32; blocks * k * MB];
        for (t, block) in data.chunks_mut(k * MB).enumerate() {
            let rows = &x[t * MB * k..((t + 1) * MB).min(m) * k];
            // Sixteen inputs at a time: the 16 lines written stay in L1 while every row of
            // the block is read.
            for l0 in (0..k).step_by(16) {
                let l1 = (l0 + 16).min(k);
                for (r, row) in rows.chunks(k).enumerate() {
                    for (l, &v) in (l0..l1).zip(&row[l0..l1]) {
                        block[l * MB + r] = v;
                    }
                }
            }
        }
        Self { data, m, k }
    }
}

/// Adds the products of block `t`'s activations (`a`, at the block's first input) with `C`
/// weight rows (`w`, at the same input, rows `k` apart) over `len` inputs to the sums at `acc`
/// (`[C][stride]`, this block's 64 rows; overwritten when `first`).
#[inline(always)]
#[allow(clippy::needless_range_loop)] // indices over register arrays, unrolled
unsafe fn tile<const V: usize, const C: usize>(
    a: *const f32,
    (w, next): (*const f32, Option<(*const f32, usize)>),
    (k, len): (usize, usize),
    acc: *mut f32,
    stride: usize,
    first: bool,
) {
    unsafe {
        let mut s = [[_mm512_setzero_ps(); V]; C];
        if !first {
            for c in 0..C {
                for v in 0..V {
                    s[c][v] = _mm512_loadu_ps(acc.add(c * stride + 16 * v));
                }
            }
        }
        let mut l0 = 0;
        while l0 < len {
            let end = (l0 + 16).min(len);
            if let Some((p, rows)) = next {
                // The next tile's rows, at this line: from memory to L2 while this tile runs.
                for c in 0..rows {
                    _mm_prefetch::<_MM_HINT_T1>(p.add(c * k + l0).cast());
                }
            }
            for l in l0..end {
                let mut av = [_mm512_setzero_ps(); V];
                for v in 0..V {
                    av[v] = _mm512_loadu_ps(a.add(l * MB + 16 * v));
                }
                for c in 0..C {
                    let b = _mm512_set1_ps(*w.add(c * k + l));
                    for v in 0..V {
                        s[c][v] = _mm512_fmadd_ps(av[v], b, s[c][v]);
                    }
                }
            }
            l0 = end;
        }
        for c in 0..C {
            for v in 0..V {
                _mm512_storeu_ps(acc.add(c * stride + 16 * v), s[c][v]);
            }
        }
    }
}

/// Output columns `j0..j0 + w.len() / k` of `y` (`[m, n]`) from f32 weight rows `w`.
///
/// # Safety
/// [`available`]; `out` points at `y` and no other task writes these columns.
#[target_feature(enable = "avx512f,fma")]
unsafe fn rows(x: &PackedX, w: &[f32], out: Out, n: usize, j0: usize) {
    let (m, k) = (x.m, x.k);
    let count = w.len() / k;
    let blocks = m.div_ceil(MB);
    let stride = blocks * MB;
    // The sums, transposed: weight row j's for activation row i at j·stride + i.
    let mut sums = vec![0f32; count * stride];
    for t0 in (0..blocks).step_by(MC) {
        let mut kb = 0;
        while kb < k {
            let len = KC.min(k - kb);
            let mut j = 0;
            while j < count {
                let nr = NW.min(count - j);
                for t in t0..(t0 + MC).min(blocks) {
                    let vectors = (m - t * MB).min(MB).div_ceil(16);
                    // SAFETY: inputs kb..kb + len of rows j..j + nr and of block t are in bounds;
                    // the sums of rows j.. and block t are this call's.
                    unsafe {
                        let a = x.data.as_ptr().add((t * k + kb) * MB);
                        let wj = w.as_ptr().add(j * k + kb);
                        let ahead = NW.min(count - j - nr);
                        let next = (t == t0 && ahead > 0).then(|| (wj.add(nr * k), ahead));
                        let wj = (wj, next);
                        let acc = sums.as_mut_ptr().add(j * stride + t * MB);
                        let (dims, first) = ((k, len), kb == 0);
                        macro_rules! go {
                            ($v:literal) => {
                                match nr {
                                    6 => tile::<$v, 6>(a, wj, dims, acc, stride, first),
                                    5 => tile::<$v, 5>(a, wj, dims, acc, stride, first),
                                    4 => tile::<$v, 4>(a, wj, dims, acc, stride, first),
                                    3 => tile::<$v, 3>(a, wj, dims, acc, stride, first),
                                    2 => tile::<$v, 2>(a, wj, dims, acc, stride, first),
                                    _ => tile::<$v, 1>(a, wj, dims, acc, stride, first),
                                }
                            };
                        }
                        match vectors {
                            4 => go!(4),
                            3 => go!(3),
                            2 => go!(2),
                            _ => go!(1),
                        }
                    }
                }
                j += nr;
            }
            kb += len;
        }
    }
    for i in 0..m {
        for j in 0..count {
            // SAFETY: row i < m, column j0 + j < n, written by this task only.
            unsafe { *out.0.add(i * n + j0 + j) = sums[j * stride + i] };
        }
    }
}

/// `y[i][j] = Σ_l x[i][l]·w[j][l]` for `x` `[m, k]`, `w` `[n, k]` (f32), `y` `[m, n]`, over
/// rayon's pool.
///
/// # Safety
/// [`available`]; the lengths are as said.
pub(crate) unsafe fn matmul(x: &[f32], w: &[f32], out: Out, (m, k, n): (usize, usize, usize)) {
    let xp = PackedX::new(x, m, k);
    crate::matvec::each_task_of(TASK, n, false, |j0, j1| {
        // SAFETY: as the caller's; this task writes columns j0..j1 only.
        unsafe { rows(&xp, &w[j0 * k..j1 * k], out, n, j0) }
    });
}
