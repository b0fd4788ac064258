//! The flex (CPU) kernels behind [`FusedRowOps`](super::FusedRowOps): one pass over the rows
//! forward, one backward, in f32 (other float types take the reference bodies).

use super::*;

/// For each row of `x` (every index but the last), the row of a table of shape `table`
/// (same rank, each dimension equal to `x`'s or 1) that broadcasts onto it.
pub(super) fn table_rows(x: &[usize], table: &[usize]) -> Vec<usize> {
    let outer = &x[..x.len() - 1];
    let tdims = &table[..table.len() - 1];
    // Row strides of the table, 0 where it broadcasts.
    let mut strides = vec![0; outer.len()];
    let mut stride = 1;
    for k in (0..outer.len()).rev() {
        if tdims[k] != 1 {
            strides[k] = stride;
        }
        stride *= tdims[k];
    }
    let n: usize = outer.iter().product();
    let mut rows = Vec::with_capacity(n);
    let mut index = vec![0; outer.len()];
    for _ in 0..n {
        rows.push(index.iter().zip(&strides).map(|(i, s)| i * s).sum());
        for k in (0..outer.len()).rev() {
            index[k] += 1;
            if index[k] < outer[k] {
                break;
            }
            index[k] = 0;
        }
    }
    rows
}

/// The kernels' view of `cross_entropy`'s inputs: contiguous f32 logits, the row length and
/// the targets as indices; `None` (Burn's operations decide) for other types, shapes, or a
/// target outside `0..classes`.
fn class_rows(
    logits: &FlexTensor,
    targets: &FlexTensor,
) -> Option<(FlexTensor, usize, Vec<usize>)> {
    let dims = logits.shape();
    if !all_f32(&[logits]) || dims.num_dims() != 2 {
        return None;
    }
    let (n, len) = (dims[0], dims[1]);
    let targets = targets.to_contiguous();
    let class = |t: i64| usize::try_from(t).ok().filter(|&t| t < len);
    let classes: Vec<usize> = match targets.dtype() {
        DType::I64 => targets
            .as_slice::<i64>()?
            .iter()
            .map(|&t| class(t))
            .collect::<Option<_>>()?,
        DType::I32 => targets
            .as_slice::<i32>()?
            .iter()
            .map(|&t| class(t.into()))
            .collect::<Option<_>>()?,
        _ => return None,
    };
    if classes.len() != n {
        return None;
    }
    Some((values(logits).0, len, classes))
}

/// The flex path of `rope` and `rope_backward`.
fn flex_rope(x: FlexTensor, cos: FlexTensor, sin: FlexTensor, transpose: bool) -> FlexTensor {
    if !all_f32(&[&x, &cos, &sin]) {
        return reference::rope::<Flex>(x, cos, sin, transpose);
    }
    let ((x, layout), (cos, _), (sin, _)) = (values(&x), values(&cos), values(&sin));
    let rows = table_rows(x.shape().as_slice(), cos.shape().as_slice());
    let mut out = vec![0.0; slice(&x).len()];
    loops::rope(
        slice(&x),
        slice(&cos),
        slice(&sin),
        &rows,
        transpose,
        &mut out,
    );
    f32_tensor(out, layout)
}

impl FusedRowOps for Flex {
    fn rms_norm(x: FlexTensor, weight: FlexTensor, eps: f32) -> FlexTensor {
        if !all_f32(&[&x, &weight]) {
            return reference::rms_norm::<Flex>(x, weight, eps);
        }
        let ((x, layout), (w, _)) = (values(&x), values(&weight));
        let mut out = vec![0.0; slice(&x).len()];
        loops::rms_norm(slice(&x), slice(&w), eps, &mut out);
        f32_tensor(out, layout)
    }

    fn rms_norm_backward(
        x: FlexTensor,
        weight: FlexTensor,
        grad: FlexTensor,
        eps: f32,
    ) -> (FlexTensor, FlexTensor) {
        if !all_f32(&[&x, &weight, &grad]) {
            return reference::rms_norm_backward::<Flex>(x, weight, grad, eps);
        }
        let ((x, layout), (w, w_layout), (grad, _)) = (values(&x), values(&weight), values(&grad));
        let (xs, ws) = (slice(&x), slice(&w));
        let (mut dx, mut dw) = (vec![0.0; xs.len()], vec![0.0; ws.len()]);
        loops::rms_norm_backward(xs, ws, slice(&grad), eps, &mut dx, &mut dw);
        (f32_tensor(dx, layout), f32_tensor(dw, w_layout))
    }

    fn fused_layer_norm(
        x: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        eps: f32,
    ) -> FlexTensor {
        if !all_f32(&[&x, &weight, &bias]) {
            return reference::layer_norm::<Flex>(x, weight, bias, eps);
        }
        let ((x, layout), (w, _), (b, _)) = (values(&x), values(&weight), values(&bias));
        let mut out = vec![0.0; slice(&x).len()];
        loops::layer_norm(slice(&x), slice(&w), slice(&b), eps, &mut out);
        f32_tensor(out, layout)
    }

    fn fused_layer_norm_backward(
        x: FlexTensor,
        weight: FlexTensor,
        grad: FlexTensor,
        eps: f32,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        if !all_f32(&[&x, &weight, &grad]) {
            return reference::layer_norm_backward::<Flex>(x, weight, grad, eps);
        }
        let ((x, layout), (w, w_layout), (grad, _)) = (values(&x), values(&weight), values(&grad));
        let (xs, ws) = (slice(&x), slice(&w));
        let mut dx = vec![0.0; xs.len()];
        let (mut dw, mut db) = (vec![0.0; ws.len()], vec![0.0; ws.len()]);
        loops::layer_norm_backward(xs, ws, slice(&grad), eps, &mut dx, &mut dw, &mut db);
        (
            f32_tensor(dx, layout),
            f32_tensor(dw, w_layout.clone()),
            f32_tensor(db, w_layout),
        )
    }

    fn rope(x: FlexTensor, cos: FlexTensor, sin: FlexTensor) -> FlexTensor {
        flex_rope(x, cos, sin, false)
    }

    fn cross_entropy(logits: FlexTensor, targets: FlexTensor) -> FlexTensor {
        let Some((logits, len, classes)) = class_rows(&logits, &targets) else {
            return reference::cross_entropy::<Flex>(logits, targets);
        };
        let mut nll = vec![0.0; classes.len()];
        loops::cross_entropy(slice(&logits), len, &classes, &mut nll);
        let n = nll.len();
        f32_tensor(nll, Layout::contiguous(Shape::new([n])))
    }

    fn cross_entropy_backward(
        logits: FlexTensor,
        targets: FlexTensor,
        grad: FlexTensor,
    ) -> FlexTensor {
        let (Some((logits, len, classes)), true) =
            (class_rows(&logits, &targets), all_f32(&[&grad]))
        else {
            return reference::cross_entropy_backward::<Flex>(logits, targets, grad);
        };
        let (grad, _) = values(&grad);
        let mut out = vec![0.0; slice(&logits).len()];
        loops::cross_entropy_backward(slice(&logits), len, &classes, slice(&grad), &mut out);
        f32_tensor(out, Layout::contiguous(logits.shape().clone()))
    }

    fn rope_backward(grad: FlexTensor, cos: FlexTensor, sin: FlexTensor) -> FlexTensor {
        flex_rope(grad, cos, sin, true)
    }
}
