//! The element loops. Each public function picks the AVX2 + FMA build of its loop when the
//! CPU has those (checked once per call, a cached flag read), else the baseline build.

/// `e^x`, |relative error| < 2e-7 over the clamped range [-87, 88] (so `2ⁿ` stays a
/// normal float): `x = n·ln2 + r` with `n` rounded by the 1.5·2²³ trick, `e^r` by a
/// degree-6 Taylor polynomial (|r| ≤ ln2/2), `2ⁿ` built in the exponent bits. Branch-free,
/// so loops over it vectorize.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5·2²³: adding it rounds to an integer
    let x = x.clamp(-87.0, 88.0);
    let t = x * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    // ln2 split in two so that n·ln2 is exact enough.
    let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // t's low mantissa bits hold n (two's complement offset from ROUND's bits).
    let n_bits = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    p * f32::from_bits(((n_bits + 127) << 23) as u32)
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// Defines `$name` (dispatching) over an `#[inline(always)]` body, with an AVX2 + FMA
/// build of the same body.
macro_rules! dispatched {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) $body:block) => {
        $(#[$doc])*
        pub fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) {
                    body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has the features `avx2` was compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

dispatched! {
    /// `out = x·σ(alpha·x)`
    fn sigmoid_gate(x: &[f32], alpha: f32, out: &mut [f32]) {
        for (o, &x) in out.iter_mut().zip(x) {
            *o = x * sigmoid(alpha * x);
        }
    }
}

dispatched! {
    /// `dx = grad·σ·(1 + alpha·x·(1 − σ))`, σ = σ(alpha·x)
    fn sigmoid_gate_backward(x: &[f32], grad: &[f32], alpha: f32, dx: &mut [f32]) {
        for ((d, &x), &g) in dx.iter_mut().zip(x).zip(grad) {
            let s = sigmoid(alpha * x);
            *d = g * s * (1.0 + alpha * x * (1.0 - s));
        }
    }
}

dispatched! {
    /// `out = gate·σ(gate)·up`
    fn swiglu(gate: &[f32], up: &[f32], out: &mut [f32]) {
        for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
            *o = g * sigmoid(g) * u;
        }
    }
}

dispatched! {
    /// `dgate = grad·up·σ·(1 + gate·(1 − σ))`, `dup = grad·gate·σ`, σ = σ(gate)
    fn swiglu_backward(gate: &[f32], up: &[f32], grad: &[f32], dgate: &mut [f32], dup: &mut [f32]) {
        for (((dg, du), (&g, &u)), &d) in
            dgate.iter_mut().zip(dup.iter_mut()).zip(gate.iter().zip(up)).zip(grad)
        {
            let s = sigmoid(g);
            *du = d * g * s;
            *dg = d * u * s * (1.0 + g * (1.0 - s));
        }
    }
}

/// Lanes of the reductions below: separate accumulators the compiler keeps in one vector.
const LANES: usize = 8;

/// The largest of `row`, where `keep` (if given) is 0; −∞ when none is.
#[inline(always)]
fn row_max(row: &[f32], keep: Option<&[u8]>) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = row.len() / LANES * LANES;
    match keep {
        None => {
            for c in row[..chunks].chunks_exact(LANES) {
                for (a, &x) in acc.iter_mut().zip(c) {
                    *a = a.max(x);
                }
            }
            for &x in &row[chunks..] {
                acc[0] = acc[0].max(x);
            }
        }
        Some(m) => {
            for (c, f) in row[..chunks].chunks_exact(LANES).zip(m.chunks_exact(LANES)) {
                for ((a, &x), &f) in acc.iter_mut().zip(c).zip(f) {
                    *a = a.max(if f == 0 { x } else { f32::NEG_INFINITY });
                }
            }
            for (&x, &f) in row[chunks..].iter().zip(&m[chunks..]) {
                if f == 0 {
                    acc[0] = acc[0].max(x);
                }
            }
        }
    }
    acc.into_iter().fold(f32::NEG_INFINITY, f32::max)
}

#[inline(always)]
fn row_sum(row: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = row.len() / LANES * LANES;
    for c in row[..chunks].chunks_exact(LANES) {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    acc.into_iter().sum::<f32>() + row[chunks..].iter().sum::<f32>()
}

#[inline(always)]
fn row_dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = a.len() / LANES * LANES;
    for (ca, cb) in a[..chunks]
        .chunks_exact(LANES)
        .zip(b[..chunks].chunks_exact(LANES))
    {
        for ((s, &x), &y) in acc.iter_mut().zip(ca).zip(cb) {
            *s += x * y;
        }
    }
    let tail: f32 = a[chunks..]
        .iter()
        .zip(&b[chunks..])
        .map(|(x, y)| x * y)
        .sum();
    acc.into_iter().sum::<f32>() + tail
}

/// `1 / √(mean(x²) + eps)` of one row.
#[inline(always)]
fn inv_rms(row: &[f32], eps: f32) -> f32 {
    1.0 / (row_dot(row, row) / row.len() as f32 + eps).sqrt()
}

/// The mean of one row and `1 / √(var + eps)` (biased variance).
#[inline(always)]
fn mean_inv_std(row: &[f32], eps: f32) -> (f32, f32) {
    let d = row.len() as f32;
    let mean = row_sum(row) / d;
    let mut acc = [0.0f32; LANES];
    let chunks = row.len() / LANES * LANES;
    for c in row[..chunks].chunks_exact(LANES) {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += (x - mean) * (x - mean);
        }
    }
    let tail: f32 = row[chunks..].iter().map(|x| (x - mean) * (x - mean)).sum();
    let var = (acc.into_iter().sum::<f32>() + tail) / d;
    (mean, 1.0 / (var + eps).sqrt())
}

dispatched! {
    /// RMSNorm of each row of `x` (rows as long as `w`): `out = x·r·w` with
    /// `r = 1/√(mean(x²) + eps)`.
    fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
        let d = w.len();
        for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
            let r = inv_rms(xr, eps);
            for ((o, &x), &w) in or.iter_mut().zip(xr).zip(w) {
                *o = x * r * w;
            }
        }
    }
}

dispatched! {
    /// The gradients of `rms_norm`: with `g = grad·w`, `dx = r·g − x·r³·mean(g·x)`, and
    /// `dw += Σ_rows grad·x·r` (added to what `dw` holds).
    fn rms_norm_backward(x: &[f32], w: &[f32], grad: &[f32], eps: f32, dx: &mut [f32], dw: &mut [f32]) {
        let d = w.len();
        for ((xr, gr), dxr) in x.chunks_exact(d).zip(grad.chunks_exact(d)).zip(dx.chunks_exact_mut(d)) {
            let r = inv_rms(xr, eps);
            for (((o, &g), &w), (dw, &x)) in dxr.iter_mut().zip(gr).zip(w).zip(dw.iter_mut().zip(xr)) {
                *o = g * w;
                *dw += g * x * r;
            }
            let c = r * r * r * row_dot(dxr, xr) / d as f32;
            for (o, &x) in dxr.iter_mut().zip(xr) {
                *o = r * *o - x * c;
            }
        }
    }
}

dispatched! {
    /// LayerNorm of each row of `x` (rows as long as `w`): `out = (x − mean)·r·w + b` with
    /// `r = 1/√(var + eps)` (biased variance).
    fn layer_norm(x: &[f32], w: &[f32], b: &[f32], eps: f32, out: &mut [f32]) {
        let d = w.len();
        for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
            let (mean, r) = mean_inv_std(xr, eps);
            for (((o, &x), &w), &b) in or.iter_mut().zip(xr).zip(w).zip(b) {
                *o = (x - mean) * r * w + b;
            }
        }
    }
}

dispatched! {
    /// The gradients of `layer_norm`: with `x̂ = (x − mean)·r` and `g = grad·w`,
    /// `dx = r·(g − mean(g) − x̂·mean(g·x̂))`; `dw += Σ_rows grad·x̂`, `db += Σ_rows grad`.
    fn layer_norm_backward(
        x: &[f32], w: &[f32], grad: &[f32], eps: f32, dx: &mut [f32], dw: &mut [f32], db: &mut [f32]
    ) {
        let d = w.len();
        let inv_d = 1.0 / d as f32;
        for ((xr, gr), dxr) in x.chunks_exact(d).zip(grad.chunks_exact(d)).zip(dx.chunks_exact_mut(d)) {
            let (mean, r) = mean_inv_std(xr, eps);
            // First pass: dx holds x̂, the sums of g and g·x̂ build up.
            let (mut sum_g, mut sum_gx) = ([0.0f32; LANES], [0.0f32; LANES]);
            for (i, ((((o, &x), &gr), &w), (dw, db))) in dxr
                .iter_mut()
                .zip(xr)
                .zip(gr)
                .zip(w)
                .zip(dw.iter_mut().zip(db.iter_mut()))
                .enumerate()
            {
                let xhat = (x - mean) * r;
                let g = gr * w;
                *o = xhat;
                *dw += gr * xhat;
                *db += gr;
                sum_g[i % LANES] += g;
                sum_gx[i % LANES] += g * xhat;
            }
            let mean_g = sum_g.into_iter().sum::<f32>() * inv_d;
            let mean_gx = sum_gx.into_iter().sum::<f32>() * inv_d;
            for ((o, &gr), &w) in dxr.iter_mut().zip(gr).zip(w) {
                *o = r * (gr * w - mean_g - *o * mean_gx);
            }
        }
    }
}

dispatched! {
    /// Rotate-half RoPE of one row pair per head row: for each row `i` of `x` (rows as long
    /// as a table row), with `c`, `s` the table rows `rows[i]`:
    /// `out[j] = x[j]·c[j] − x[j+h]·s[j]`, `out[j+h] = x[j+h]·c[j+h] + x[j]·s[j+h]`
    /// (`h` half a row). With `transpose`, the gradient instead:
    /// `dx[j] = g[j]·c[j] + g[j+h]·s[j+h]`, `dx[j+h] = g[j+h]·c[j+h] − g[j]·s[j]`.
    fn rope(x: &[f32], cos: &[f32], sin: &[f32], rows: &[usize], transpose: bool, out: &mut [f32]) {
        let d = x.len() / rows.len();
        let h = d / 2;
        for ((xr, or), &t) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)).zip(rows) {
            let (c, s) = (&cos[t * d..(t + 1) * d], &sin[t * d..(t + 1) * d]);
            let (x1, x2) = xr.split_at(h);
            let (o1, o2) = or.split_at_mut(h);
            let (c1, c2) = c.split_at(h);
            let (s1, s2) = s.split_at(h);
            if transpose {
                for j in 0..h {
                    o1[j] = x1[j] * c1[j] + x2[j] * s2[j];
                    o2[j] = x2[j] * c2[j] - x1[j] * s1[j];
                }
            } else {
                for j in 0..h {
                    o1[j] = x1[j] * c1[j] - x2[j] * s1[j];
                    o2[j] = x2[j] * c2[j] + x1[j] * s2[j];
                }
            }
        }
    }
}

/// `Σ e^(x − max)` over one row.
#[inline(always)]
fn row_sum_exp(row: &[f32], max: f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = row.len() / LANES * LANES;
    for c in row[..chunks].chunks_exact(LANES) {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += exp(x - max);
        }
    }
    let tail: f32 = row[chunks..].iter().map(|&x| exp(x - max)).sum();
    acc.into_iter().sum::<f32>() + tail
}

dispatched! {
    /// Cross-entropy of each row of `logits` (rows of `len`) against its target class:
    /// `nll[i] = logsumexp(row) − row[targets[i]]`. Targets must be below `len`.
    fn cross_entropy(logits: &[f32], len: usize, targets: &[usize], nll: &mut [f32]) {
        for ((row, &t), o) in logits.chunks_exact(len).zip(targets).zip(nll.iter_mut()) {
            let max = row_max(row, None);
            *o = max + row_sum_exp(row, max).ln() - row[t];
        }
    }
}

dispatched! {
    /// The gradient of `cross_entropy`: `dlogits = (softmax(row) − onehot(target))·grad[i]`.
    fn cross_entropy_backward(logits: &[f32], len: usize, targets: &[usize], grad: &[f32], out: &mut [f32]) {
        for (((row, &t), &g), o) in logits.chunks_exact(len).zip(targets).zip(grad).zip(out.chunks_exact_mut(len)) {
            let max = row_max(row, None);
            for (o, &x) in o.iter_mut().zip(row) {
                *o = exp(x - max);
            }
            let scale = g / row_sum(o);
            for o in o.iter_mut() {
                *o *= scale;
            }
            o[t] -= g;
        }
    }
}

/// Elements per parallel task of [`softmax_rows`].
const TASK: usize = 1 << 14;

/// Each row of `scores` (rows of `len`) becomes `softmax(scale · row)` over the keys that
/// `mask` (same layout, nonzero = forbidden) allows; forbidden keys get 0, and a row with no
/// allowed key becomes all zeros (a padding query attends to nothing). Chunks of rows run in
/// parallel on rayon's pool (the one Burn's matmuls use).
pub fn softmax_rows(scores: &mut [f32], len: usize, scale: f32, mask: Option<&[u8]>) {
    use rayon::prelude::*;
    let rows = (TASK / len.max(1)).max(1);
    if scores.len() <= rows * len {
        return softmax_chunk(scores, len, scale, mask);
    }
    scores
        .par_chunks_mut(rows * len)
        .enumerate()
        .for_each(|(i, chunk)| {
            let flags = mask.map(|m| &m[i * rows * len..][..chunk.len()]);
            softmax_chunk(chunk, len, scale, flags);
        });
}

dispatched! {
    /// [`softmax_rows`] on one chunk of rows.
    fn softmax_chunk(scores: &mut [f32], len: usize, scale: f32, mask: Option<&[u8]>) {
        for (i, row) in scores.chunks_exact_mut(len).enumerate() {
            let keep = mask.map(|m| &m[i * len..(i + 1) * len]);
            let max = row_max(row, keep);
            if max == f32::NEG_INFINITY {
                row.fill(0.0);
                continue;
            }
            match keep {
                None => {
                    for x in row.iter_mut() {
                        *x = exp(scale * (*x - max));
                    }
                }
                Some(m) => {
                    for (x, &f) in row.iter_mut().zip(m) {
                        let e = exp(scale * (*x - max));
                        *x = if f == 0 { e } else { 0.0 };
                    }
                }
            }
            let inv = 1.0 / row_sum(row);
            for x in row.iter_mut() {
                *x *= inv;
            }
        }
    }
}

#[cfg(test)]
#[test]
fn softmax_rows_against_f64() {
    // 5 rows: one chunk; 1,200 rows: chunks in parallel.
    for rows in [5, 1200] {
        softmax_rows_against_f64_with(rows);
    }
}

#[cfg(test)]
fn softmax_rows_against_f64_with(rows: usize) {
    let (len, scale) = (37, 0.3f32);
    let mut scores: Vec<f32> = (0..rows * len)
        .map(|i| ((i * 7919) % 101) as f32 - 50.0)
        .collect();
    let mask: Vec<u8> = (0..rows * len)
        .map(|i| u8::from(i % 5 == 0 || i / len == 3))
        .collect();
    let want: Vec<f64> = scores
        .chunks(len)
        .zip(mask.chunks(len))
        .flat_map(|(r, m)| {
            let max = r
                .iter()
                .zip(m)
                .filter(|(_, f)| **f == 0)
                .map(|(x, _)| *x as f64);
            let max = max.fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = r
                .iter()
                .zip(m)
                .map(|(x, f)| {
                    if *f == 0 {
                        (scale as f64 * (*x as f64 - max)).exp()
                    } else {
                        0.0
                    }
                })
                .collect();
            let sum: f64 = e.iter().sum();
            e.into_iter()
                .map(move |x| if sum > 0.0 { x / sum } else { 0.0 })
        })
        .collect();
    softmax_rows(&mut scores, len, scale, Some(&mask));
    for (got, want) in scores.iter().zip(&want) {
        assert!((*got as f64 - want).abs() < 1e-6, "{got} against {want}");
    }
    // Row 3 is masked entirely: zeros.
    assert!(scores[3 * len..4 * len].iter().all(|&x| x == 0.0));
}

#[cfg(test)]
#[test]
fn exp_is_accurate_over_its_range() {
    let mut worst = 0.0f64;
    let mut x = -87.0f32;
    while x <= 88.0 {
        let (got, want) = (exp(x) as f64, (x as f64).exp());
        worst = worst.max(((got - want) / want).abs());
        x += 0.001_37;
    }
    assert!(worst < 3e-7, "worst relative error {worst:e}");
    // Clamped outside: finite and monotone at the ends.
    assert!(exp(-1e30) > 0.0 && exp(-1e30) <= exp(-87.0));
    assert!(exp(1e30).is_finite() && exp(f32::INFINITY).is_finite());
}
