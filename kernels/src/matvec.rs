//! The loops of [`crate::linear`]: `y = x·wᵀ` for activations `x` (`[m, k]`, f32) and a weight
//! `w` stored as the checkpoint stores it, one output row per row of `w` (`[n, k]`), in f32 or
//! bf16 (the upper half of an f32: widening is a shift, so the loops below read bf16 at the
//! cost of one more instruction per 16 values and half the bytes).
//!
//! Decoding reads every weight once per token, so at batch 1 the loop is a stream over `w`:
//! tiles of 4 weight rows × up to 4 activation rows (16 accumulators of 16 lanes, all in
//! registers with AVX-512), output rows split over rayon's pool. With more activation rows
//! (prefill) each group of weight rows is widened to f32 once into a scratch buffer and reused
//! by every activation tile. Sums are kept in f32 over 16 lanes and added up at the end of the
//! row. Prefill sizes go elsewhere where the CPU allows: bf16 weights to AMX ([`crate::amx`]),
//! f32 weights to outer-product tiles ([`crate::sgemm`]).

use rayon::prelude::*;

/// Activation rows per tile.
const MR: usize = 4;
/// Weight rows per tile.
const NR: usize = 4;
/// Lanes of one accumulator (one AVX-512 register of f32).
const LANES: usize = 16;
/// Weight rows per parallel task (a multiple of [`NR`]).
pub(crate) const TASK_ROWS: usize = 64;
/// From this many activation rows on, a group of weight rows is widened to f32 once and the
/// tiles read the f32 copy.
pub(crate) const WIDEN_FROM: usize = 16;

/// A weight element the loops read.
pub trait WeightElem: Copy + Send + Sync + 'static {
    /// Whether the element is bf16 bits (else f32).
    const BF16: bool;
    fn widen(self) -> f32;
    /// The weights as bf16 bits, when they are.
    fn bf16_bits(w: &[Self]) -> Option<&[u16]>;
    /// The weights as f32, when they are.
    fn f32s(w: &[Self]) -> Option<&[f32]>;
}

impl WeightElem for f32 {
    const BF16: bool = false;
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }
    fn bf16_bits(_: &[Self]) -> Option<&[u16]> {
        None
    }
    fn f32s(w: &[Self]) -> Option<&[f32]> {
        Some(w)
    }
}

/// bf16 as its bits.
impl WeightElem for u16 {
    const BF16: bool = true;
    #[inline(always)]
    fn widen(self) -> f32 {
        f32::from_bits(u32::from(self) << 16)
    }
    fn bf16_bits(w: &[Self]) -> Option<&[u16]> {
        Some(w)
    }
    fn f32s(_: &[Self]) -> Option<&[f32]> {
        None
    }
}

/// A raw pointer to the output, shared by tasks that write disjoint columns.
#[derive(Clone, Copy)]
pub(crate) struct Out(pub(crate) *mut f32);
// SAFETY: each task writes only the output columns of its own weight rows.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

/// Runs `task(j0, j1)` over the weight rows `0..n` in tasks of [`TASK_ROWS`], on rayon's pool
/// unless `serial` (a product too small to be worth the threads).
pub(crate) fn each_task(n: usize, serial: bool, task: impl Fn(usize, usize) + Sync + Send) {
    each_task_of(TASK_ROWS, n, serial, task)
}

/// [`each_task`] with tasks of `size` rows.
pub(crate) fn each_task_of(
    size: usize,
    n: usize,
    serial: bool,
    task: impl Fn(usize, usize) + Sync + Send,
) {
    let tasks = n.div_ceil(size);
    let run = |t: usize| task(t * size, ((t + 1) * size).min(n));
    if serial || tasks == 1 {
        (0..tasks).for_each(run);
    } else {
        (0..tasks).into_par_iter().for_each(run);
    }
}

/// The groups a decode loop reads `count` weight rows in, as `(first, step, rows)`: rows
/// `first, first + step, …` (`rows` of them). Whole groups of `size` rows are `size` streams
/// apart (rows `g, g + s, g + 2s, …` of the first `size·s`): each row's next is the next in
/// memory, so the streams run through memory one after another, as the hardware prefetcher
/// follows them, rather than side by side in the same pages (short rows, such as a 4-bit
/// weight's, were read at half the bandwidth so). The rows after them go one at a time.
pub(crate) fn stream_groups(
    count: usize,
    size: usize,
) -> impl Iterator<Item = (usize, usize, usize)> {
    let s = count / size;
    (0..s)
        .map(move |g| (g, s, size))
        .chain((size * s..count).map(|j| (j, 1, 1)))
}

/// `y[i][j] = Σ_l x[i][l]·w[j][l]` for `x` `[m, k]`, `w` `[n, k]`, `y` `[m, n]` (all row-major,
/// `y` overwritten).
pub fn matmul_wt<W: WeightElem>(x: &[f32], w: &[W], y: &mut [f32], m: usize, k: usize, n: usize) {
    assert_eq!(x.len(), m * k, "x is [m, k]");
    assert_eq!(w.len(), n * k, "w is [n, k]");
    assert_eq!(y.len(), m * n, "y is [m, n]");
    if m == 0 || n == 0 {
        return;
    }
    let out = Out(y.as_mut_ptr());
    #[cfg(target_arch = "x86_64")]
    if let Some(bits) = W::bf16_bits(w).filter(|_| amx_prefill(m, k)) {
        let xp = crate::amx::PackedX::new(x, m, k);
        let tiled = n / crate::amx::TILE * crate::amx::TILE;
        each_task(tiled, false, |j0, j1| {
            // SAFETY: AMX is available (`amx_prefill`); the task writes y[.., j0..j1] only.
            unsafe { crate::amx::rows(&xp, &bits[j0 * k..j1 * k], out, n, j0) }
        });
        // The last rows that do not fill a tile.
        // SAFETY: as below, columns tiled..n.
        unsafe { rows(x, &w[tiled * k..], out, m, k, n, tiled) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(w) = W::f32s(w).filter(|_| m >= WIDEN_FROM && f32_prefill_tiles()) {
        // SAFETY: the CPU has the loop's features; the lengths were checked above.
        unsafe { crate::sgemm::matmul(x, w, out, (m, k, n)) };
        return;
    }
    each_task(n, m * n * k < 1 << 15, |j0, j1| {
        // SAFETY: rows j0..j1 of w are in bounds; the task writes y[.., j0..j1] only.
        unsafe { rows(x, &w[j0 * k..j1 * k], out, m, k, n, j0) }
    });
}

/// Whether f32 weights at prefill sizes have their own loop here ([`crate::sgemm`]).
pub(crate) fn f32_prefill_tiles() -> bool {
    #[cfg(target_arch = "x86_64")]
    return crate::sgemm::available();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether a product of `m` activation rows `k` wide goes to AMX tiles (bf16 weights): a
/// prefill's many rows, whole tiles of inputs, and a CPU and OS that allow it.
#[cfg(target_arch = "x86_64")]
pub(crate) fn amx_prefill(m: usize, k: usize) -> bool {
    m >= WIDEN_FROM && k.is_multiple_of(crate::amx::DEPTH) && crate::amx::available()
}

/// Output columns `j0..j0 + w.len() / k` of `y` from f32 rows (the quantized loops' prefill).
///
/// # Safety
/// As [`rows`].
pub(crate) unsafe fn f32_rows(
    x: &[f32],
    w: &[f32],
    out: Out,
    m: usize,
    k: usize,
    n: usize,
    j0: usize,
) {
    unsafe { rows(x, w, out, m, k, n, j0) }
}

/// Output columns `j0..j0 + w.len() / k` of `y`.
///
/// # Safety
/// `out` points at `y` (`[m, n]`) and no other task writes these columns.
unsafe fn rows<W: WeightElem>(
    x: &[f32],
    w: &[W],
    out: Out,
    m: usize,
    k: usize,
    n: usize,
    j0: usize,
) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has the features the loop was compiled for.
            return unsafe { avx512::rows(x, w, out, m, k, n, j0) };
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2<W: WeightElem>(
            x: &[f32],
            w: &[W],
            out: Out,
            m: usize,
            k: usize,
            n: usize,
            j0: usize,
        ) {
            unsafe { rows_body(x, w, out, m, k, n, j0) }
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has the features the build was compiled for.
            return unsafe { avx2(x, w, out, m, k, n, j0) };
        }
    }
    unsafe { rows_body(x, w, out, m, k, n, j0) }
}

#[inline(always)]
unsafe fn rows_body<W: WeightElem>(
    x: &[f32],
    w: &[W],
    out: Out,
    m: usize,
    k: usize,
    n: usize,
    j0: usize,
) {
    let count = w.len() / k;
    let mut scratch = Vec::new();
    let mut j = 0;
    while j < count {
        let nr = NR.min(count - j);
        let group = &w[j * k..(j + nr) * k];
        if W::BF16 && m >= WIDEN_FROM {
            scratch.clear();
            scratch.extend(group.iter().map(|v| v.widen()));
            unsafe { group_tiles(x, &scratch, out, (m, k, n), j0 + j, nr) };
        } else {
            unsafe { group_tiles(x, group, out, (m, k, n), j0 + j, nr) };
        }
        j += nr;
    }
}

/// Every activation tile against one group of `nr` weight rows (`w` is `[nr, k]`), written
/// to columns `col..col + nr`.
#[inline(always)]
unsafe fn group_tiles<W: WeightElem>(
    x: &[f32],
    w: &[W],
    out: Out,
    (m, k, n): (usize, usize, usize),
    col: usize,
    nr: usize,
) {
    let mut i = 0;
    while i < m {
        let mr = MR.min(m - i);
        let sums = match (mr, nr) {
            (4, 4) => widen_tile::<W, 4, 4>(x, w, i, k),
            (3, 4) => widen_tile::<W, 3, 4>(x, w, i, k),
            (2, 4) => widen_tile::<W, 2, 4>(x, w, i, k),
            (1, 4) => widen_tile::<W, 1, 4>(x, w, i, k),
            _ => {
                let mut s = [[0.0; NR]; MR];
                for (r, row) in s.iter_mut().enumerate().take(mr) {
                    for (c, v) in row.iter_mut().enumerate().take(nr) {
                        *v = widen_tile::<W, 1, 1>(x, &w[c * k..(c + 1) * k], i + r, k)[0][0];
                    }
                }
                s
            }
        };
        for (r, row) in sums.iter().enumerate().take(mr) {
            for (c, &v) in row.iter().enumerate().take(nr) {
                // SAFETY: row i + r < m, column col + c < n; only this task writes it.
                unsafe { *out.0.add((i + r) * n + col + c) = v };
            }
        }
        i += mr;
    }
}

/// The `R × C` dot products of activation rows `i..i + R` with weight rows `0..C` of `w`,
/// padded into a `[MR][NR]` array.
#[inline(always)]
fn widen_tile<W: WeightElem, const R: usize, const C: usize>(
    x: &[f32],
    w: &[W],
    i: usize,
    k: usize,
) -> [[f32; NR]; MR] {
    let xs: [&[f32]; R] = std::array::from_fn(|r| &x[(i + r) * k..(i + r + 1) * k]);
    let ws: [&[W]; C] = std::array::from_fn(|c| &w[c * k..(c + 1) * k]);
    let mut acc = [[[0.0f32; LANES]; C]; R];
    let full = k / LANES * LANES;
    let mut l = 0;
    while l < full {
        let mut wv = [[0.0f32; LANES]; C];
        for c in 0..C {
            let src = &ws[c][l..l + LANES];
            for (v, s) in wv[c].iter_mut().zip(src) {
                *v = s.widen();
            }
        }
        for r in 0..R {
            let xv = &xs[r][l..l + LANES];
            for c in 0..C {
                for ((a, &xe), &we) in acc[r][c].iter_mut().zip(xv).zip(&wv[c]) {
                    *a = xe.mul_add(we, *a);
                }
            }
        }
        l += LANES;
    }
    let mut sums = [[0.0; NR]; MR];
    for r in 0..R {
        for c in 0..C {
            let mut s: f32 = acc[r][c].iter().sum();
            for t in full..k {
                s = xs[r][t].mul_add(ws[c][t].widen(), s);
            }
            sums[r][c] = s;
        }
    }
    sums
}

/// The same loops written with AVX-512 intrinsics: the accumulators of a 4 × 4 tile are 16 of
/// the 32 vector registers, the weights widened from bf16 with a zero-extend and a shift, and a
/// row's tail read with masked loads.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{MR, NR, Out, WIDEN_FROM, WeightElem};

    /// 16 weights from `p` as f32 (`mask` selects the lanes read; the others are 0).
    #[inline(always)]
    unsafe fn load<W: WeightElem>(p: *const W, mask: __mmask16) -> __m512 {
        unsafe {
            if W::BF16 {
                let half = _mm256_maskz_loadu_epi16(mask, p.cast());
                _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(half)))
            } else {
                _mm512_maskz_loadu_ps(mask, p.cast())
            }
        }
    }

    /// Dot products of `R` activation rows (from `x`, rows `k` apart) with `C` weight rows
    /// (from `w`, `dist` elements apart; each row's next in its stream the next in memory).
    /// No closures here: a closure does not inherit the caller's target features, and an
    /// intrinsic called from one is not inlined.
    #[inline(always)]
    #[allow(clippy::needless_range_loop)] // indices over register arrays, unrolled
    unsafe fn tile<W: WeightElem, const R: usize, const C: usize>(
        x: *const f32,
        w: *const W,
        k: usize,
        dist: usize,
    ) -> [[f32; C]; R] {
        unsafe {
            let zero = _mm512_setzero_ps();
            let mut acc = [[zero; C]; R];
            let full = k / 16 * 16;
            let all: __mmask16 = 0xFFFF;
            let mut l = 0;
            // Two vectors per row per step: twice the bytes in flight, which a stream of
            // bf16 rows needs to reach the memory's bandwidth.
            while l + 32 <= full {
                let mut wa = [zero; C];
                let mut wb = [zero; C];
                for c in 0..C {
                    let p = w.add(c * dist + l);
                    if W::BF16 {
                        // The same place two rows on in this row's stream: the group after
                        // next (the hardware prefetcher picks up late).
                        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(2 * k).cast());
                    }
                    wa[c] = load(p, all);
                    wb[c] = load(p.add(16), all);
                }
                for r in 0..R {
                    let xa = _mm512_loadu_ps(x.add(r * k + l));
                    let xb = _mm512_loadu_ps(x.add(r * k + l + 16));
                    for c in 0..C {
                        acc[r][c] =
                            _mm512_fmadd_ps(xb, wb[c], _mm512_fmadd_ps(xa, wa[c], acc[r][c]));
                    }
                }
                l += 32;
            }
            while l < k {
                let mask: __mmask16 = if l + 16 <= k {
                    all
                } else {
                    ((1u32 << (k - l)) - 1) as u16
                };
                let mut wv = [zero; C];
                for c in 0..C {
                    wv[c] = load(w.add(c * dist + l), mask);
                }
                for r in 0..R {
                    let xv = _mm512_maskz_loadu_ps(mask, x.add(r * k + l));
                    for c in 0..C {
                        acc[r][c] = _mm512_fmadd_ps(xv, wv[c], acc[r][c]);
                    }
                }
                l += 16;
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

    /// Every activation tile against `nr` weight rows at `w`, `step` rows apart, into columns
    /// `col`, `col + step`, ….
    #[inline(always)]
    unsafe fn group<W: WeightElem>(
        x: &[f32],
        (w, step): (*const W, usize),
        out: Out,
        (m, k, n): (usize, usize, usize),
        col: usize,
        nr: usize,
    ) {
        unsafe {
            let dist = step * k;
            let put = |i: usize, c0: usize, sums: &[&[f32]]| {
                for (r, row) in sums.iter().enumerate() {
                    for (c, &v) in row.iter().enumerate() {
                        *out.0.add((i + r) * n + col + (c0 + c) * step) = v;
                    }
                }
            };
            let mut i = 0;
            while i < m {
                let mr = MR.min(m - i);
                let xi = x.as_ptr().add(i * k);
                if nr == NR {
                    match mr {
                        4 => {
                            let s = tile::<W, 4, 4>(xi, w, k, dist);
                            put(i, 0, &[&s[0], &s[1], &s[2], &s[3]]);
                        }
                        3 => {
                            let s = tile::<W, 3, 4>(xi, w, k, dist);
                            put(i, 0, &[&s[0], &s[1], &s[2]]);
                        }
                        2 => {
                            let s = tile::<W, 2, 4>(xi, w, k, dist);
                            put(i, 0, &[&s[0], &s[1]]);
                        }
                        _ => {
                            let s = tile::<W, 1, 4>(xi, w, k, dist);
                            put(i, 0, &[&s[0]]);
                        }
                    }
                } else {
                    for c in 0..nr {
                        let wc = w.add(c * dist);
                        match mr {
                            4 => {
                                let s = tile::<W, 4, 1>(xi, wc, k, dist);
                                put(i, c, &[&s[0], &s[1], &s[2], &s[3]]);
                            }
                            3 => {
                                let s = tile::<W, 3, 1>(xi, wc, k, dist);
                                put(i, c, &[&s[0], &s[1], &s[2]]);
                            }
                            2 => {
                                let s = tile::<W, 2, 1>(xi, wc, k, dist);
                                put(i, c, &[&s[0], &s[1]]);
                            }
                            _ => {
                                let s = tile::<W, 1, 1>(xi, wc, k, dist);
                                put(i, c, &[&s[0]]);
                            }
                        }
                    }
                }
                i += mr;
            }
        }
    }

    /// [`super::rows`] with AVX-512. Its loop over groups of weight rows repeats
    /// `rows_body`'s on purpose: the intrinsics must sit in this `target_feature` function
    /// itself, and a shared driver taking closures would not inline them (a closure does not
    /// inherit target features; see `tile`).
    ///
    /// # Safety
    /// The CPU has AVX-512 F/BW/VL and FMA; as [`super::rows`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
    pub(super) unsafe fn rows<W: WeightElem>(
        x: &[f32],
        w: &[W],
        out: Out,
        m: usize,
        k: usize,
        n: usize,
        j0: usize,
    ) {
        let count = w.len() / k;
        let widen = W::BF16 && m >= WIDEN_FROM;
        if !widen {
            for (first, step, nr) in super::stream_groups(count, NR) {
                // SAFETY: rows of this task's; their columns j0 + first + c·step are its own.
                unsafe {
                    let at = w.as_ptr().add(first * k);
                    group::<W>(x, (at, step), out, (m, k, n), j0 + first, nr);
                }
            }
            return;
        }
        let mut scratch: Vec<f32> = vec![0.0; NR * k];
        let mut j = 0;
        while j < count {
            let nr = NR.min(count - j);
            let rows = &w[j * k..(j + nr) * k];
            unsafe {
                // Widened once here, read by every activation tile below.
                let full = rows.len() / 16 * 16;
                let mut l = 0;
                while l < full {
                    _mm512_storeu_ps(
                        scratch.as_mut_ptr().add(l),
                        load(rows.as_ptr().add(l), 0xFFFF),
                    );
                    l += 16;
                }
                for (d, s) in scratch[full..rows.len()].iter_mut().zip(&rows[full..]) {
                    *d = s.widen();
                }
                group::<f32>(x, (scratch.as_ptr(), 1), out, (m, k, n), j0 + j, nr);
            }
            j += nr;
        }
    }
}

/// Reads every element of `data` once (on every core) and returns their xor, so that the
/// read is not elided: the machine's streaming read bandwidth, as a batch-1 decode step reads
/// the weights. Vectorized for the widest registers the CPU has.
pub fn stream_read(data: &[u64]) -> u64 {
    /// Concurrent streams per task: a matrix-vector product reads several weight rows at
    /// once, and one stream per core does not reach the memory's bandwidth.
    const STREAMS: usize = 4;
    const BLOCK: usize = 32;
    #[inline(always)]
    fn body(chunk: &[u64]) -> u64 {
        let n = chunk.len() / STREAMS / BLOCK * BLOCK;
        let mut acc = [[0u64; BLOCK]; STREAMS];
        let mut l = 0;
        while l < n {
            for (s, a) in acc.iter_mut().enumerate() {
                let block = &chunk[s * n + l..s * n + l + BLOCK];
                for (a, &x) in a.iter_mut().zip(block) {
                    *a ^= x;
                }
            }
            l += BLOCK;
        }
        let rest = chunk[STREAMS * n..].iter().fold(0, |a, &b| a ^ b);
        acc.iter().flatten().fold(rest, |a, &b| a ^ b)
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    fn wide(chunk: &[u64]) -> u64 {
        body(chunk)
    }
    let read = |chunk: &[u64]| {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512 F.
            return unsafe { wide(chunk) };
        }
        body(chunk)
    };
    data.par_chunks(1 << 16)
        .map(read)
        .reduce(|| 0, |a, b| a ^ b)
}

#[cfg(test)]
#[path = "matvec_tests.rs"]
mod tests;
