//! Burn's operations: the default bodies of [`FusedRowOps`](super::FusedRowOps), and
//! flex's path for float types other than f32.

use super::*;

/// `[d]` reshaped to broadcast against `like`'s last dimension.
fn row<B: Backend>(v: FloatTensor<B>, like: &FloatTensor<B>) -> FloatTensor<B> {
    let rank = like.shape().num_dims();
    let mut dims = vec![1; rank];
    dims[rank - 1] = v.shape()[0];
    B::float_reshape(v, Shape::from(dims))
}

/// Sum over every dimension but the last, as `[d]`.
fn sum_rows<B: Backend>(t: FloatTensor<B>) -> FloatTensor<B> {
    let shape = t.shape();
    let d = shape[shape.num_dims() - 1];
    let flat = B::float_reshape(t, Shape::new([shape.num_elements() / d, d]));
    B::float_reshape(B::float_sum_dim(flat, 0), Shape::new([d]))
}

fn last<B: Backend>(t: &FloatTensor<B>) -> usize {
    t.shape().num_dims() - 1
}

/// `1/√(mean(x²) + eps)`, `[..., 1]`.
fn inv_rms<B: Backend>(x: &FloatTensor<B>, eps: f32) -> FloatTensor<B> {
    let ms = B::float_mean_dim(B::float_mul(x.clone(), x.clone()), last::<B>(x));
    B::float_recip(B::float_sqrt(B::float_add_scalar(ms, eps.into())))
}

/// `(x − mean)·r` and `r = 1/√(var + eps)`.
fn normalized<B: Backend>(x: FloatTensor<B>, eps: f32) -> (FloatTensor<B>, FloatTensor<B>) {
    let mean = B::float_mean_dim(x.clone(), last::<B>(&x));
    let centered = B::float_sub(x, mean);
    let r = inv_rms::<B>(&centered, eps);
    (B::float_mul(centered, r.clone()), r)
}

pub fn rms_norm<B: Backend>(x: FloatTensor<B>, w: FloatTensor<B>, eps: f32) -> FloatTensor<B> {
    let r = inv_rms::<B>(&x, eps);
    let w = row::<B>(w, &x);
    B::float_mul(B::float_mul(x, r), w)
}

pub fn rms_norm_backward<B: Backend>(
    x: FloatTensor<B>,
    w: FloatTensor<B>,
    grad: FloatTensor<B>,
    eps: f32,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let r = inv_rms::<B>(&x, eps);
    let xr = B::float_mul(x, r.clone());
    let dw = sum_rows::<B>(B::float_mul(grad.clone(), xr.clone()));
    let g = B::float_mul(grad, row::<B>(w, &xr));
    // dx = r·(g − x̂·mean(g·x̂)) with x̂ = x·r
    let m = B::float_mean_dim(B::float_mul(g.clone(), xr.clone()), last::<B>(&xr));
    let dx = B::float_mul(B::float_sub(g, B::float_mul(xr, m)), r);
    (dx, dw)
}

pub fn layer_norm<B: Backend>(
    x: FloatTensor<B>,
    w: FloatTensor<B>,
    b: FloatTensor<B>,
    eps: f32,
) -> FloatTensor<B> {
    let (xhat, _) = normalized::<B>(x, eps);
    let (w, b) = (row::<B>(w, &xhat), row::<B>(b, &xhat));
    B::float_add(B::float_mul(xhat, w), b)
}

pub fn layer_norm_backward<B: Backend>(
    x: FloatTensor<B>,
    w: FloatTensor<B>,
    grad: FloatTensor<B>,
    eps: f32,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let (xhat, r) = normalized::<B>(x, eps);
    let dw = sum_rows::<B>(B::float_mul(grad.clone(), xhat.clone()));
    let db = sum_rows::<B>(grad.clone());
    let g = B::float_mul(grad, row::<B>(w, &xhat));
    let mean_g = B::float_mean_dim(g.clone(), last::<B>(&g));
    let mean_gx = B::float_mean_dim(B::float_mul(g.clone(), xhat.clone()), last::<B>(&g));
    let inner = B::float_sub(B::float_sub(g, mean_g), B::float_mul(xhat, mean_gx));
    (B::float_mul(inner, r), dw, db)
}

/// `[x1, x2] → [−x2, x1]` over the last dimension.
fn rotate_half<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    let dim = last::<B>(&x);
    let h = x.shape()[dim] / 2;
    let half = |from: usize| {
        let mut ranges = vec![Slice::full(); dim + 1];
        ranges[dim] = Slice::new(from as isize, Some((from + h) as isize), 1);
        ranges
    };
    let x1 = B::float_slice(x.clone(), &half(0));
    let x2 = B::float_slice(x, &half(h));
    B::float_cat(vec![B::float_neg(x2), x1], dim)
}

/// `[n]` as `[n, 1]`.
fn column<B: Backend>(t: FloatTensor<B>) -> FloatTensor<B> {
    let n = t.shape()[0];
    B::float_reshape(t, Shape::new([n, 1]))
}

fn target_column<B: Backend>(targets: IntTensor<B>) -> IntTensor<B> {
    let n = targets.shape()[0];
    B::int_reshape(targets, Shape::new([n, 1]))
}

pub fn cross_entropy<B: Backend>(logits: FloatTensor<B>, targets: IntTensor<B>) -> FloatTensor<B> {
    let n = logits.shape()[0];
    let picked = B::float_gather(1, B::log_softmax(logits, 1), target_column::<B>(targets));
    B::float_neg(B::float_reshape(picked, Shape::new([n])))
}

pub fn cross_entropy_backward<B: Backend>(
    logits: FloatTensor<B>,
    targets: IntTensor<B>,
    grad: FloatTensor<B>,
) -> FloatTensor<B> {
    let grad = column::<B>(grad);
    let probs = B::float_mul(B::softmax(logits, 1), grad.clone());
    B::float_scatter(
        1,
        probs,
        target_column::<B>(targets),
        B::float_neg(grad),
        IndexingUpdateOp::Add,
    )
}

/// `x·cos + rotate_half(x)·sin`; `transpose`: `x·cos − rotate_half(x·sin)` (its
/// gradient: rotate_half's transpose is minus itself).
pub fn rope<B: Backend>(
    x: FloatTensor<B>,
    cos: FloatTensor<B>,
    sin: FloatTensor<B>,
    transpose: bool,
) -> FloatTensor<B> {
    let xc = B::float_mul(x.clone(), cos);
    if transpose {
        B::float_sub(xc, rotate_half::<B>(B::float_mul(x, sin)))
    } else {
        B::float_add(xc, B::float_mul(rotate_half::<B>(x), sin))
    }
}
