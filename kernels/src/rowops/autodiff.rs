//! The autodiff side of [`FusedRowOps`](super::FusedRowOps): each forward registers one
//! backward step that calls the backend's own backward operation.

use super::*;

#[derive(Debug)]
struct RmsNormBackward;

impl<B: FusedRowOps> Backward<B, 2> for RmsNormBackward {
    type State = (FloatTensor<B>, FloatTensor<B>, f32);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let (x, w, eps) = ops.state;
        let grad = grads.consume::<B>(&ops.node);
        let [node_x, node_w] = ops.parents;
        let (dx, dw) = B::rms_norm_backward(x, w, grad, eps);
        for (node, g) in [(node_x, dx), (node_w, dw)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, g);
            }
        }
    }
}

#[derive(Debug)]
struct LayerNormBackward;

impl<B: FusedRowOps> Backward<B, 3> for LayerNormBackward {
    type State = (FloatTensor<B>, FloatTensor<B>, f32);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let (x, w, eps) = ops.state;
        let grad = grads.consume::<B>(&ops.node);
        let [node_x, node_w, node_b] = ops.parents;
        let (dx, dw, db) = B::fused_layer_norm_backward(x, w, grad, eps);
        for (node, g) in [(node_x, dx), (node_w, dw), (node_b, db)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, g);
            }
        }
    }
}

one_input_backward!(
    RopeBackward,
    FusedRowOps,
    (FloatTensor<B>, FloatTensor<B>),
    |(cos, sin), grad| B::rope_backward(grad, cos, sin)
);

one_input_backward!(
    CrossEntropyBackward,
    FusedRowOps,
    (FloatTensor<B>, IntTensor<B>),
    |(logits, targets), grad| B::cross_entropy_backward(logits, targets, grad)
);

impl<B: FusedRowOps, C: CheckpointStrategy> FusedRowOps for Autodiff<B, C> {
    fn cross_entropy(logits: FloatTensor<Self>, targets: IntTensor<Self>) -> FloatTensor<Self> {
        match CrossEntropyBackward
            .prepare::<C>([logits.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let logits = logits.into_primitive();
                let out = B::cross_entropy(logits.clone(), targets.clone());
                prep.finish((logits, targets), out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::cross_entropy(logits.into_primitive(), targets))
            }
        }
    }

    fn rms_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, eps: f32) -> FloatTensor<Self> {
        match RmsNormBackward
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (x, w) = (x.into_primitive(), weight.into_primitive());
                let out = B::rms_norm(x.clone(), w.clone(), eps);
                prep.finish((x, w, eps), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::rms_norm(
                x.into_primitive(),
                weight.into_primitive(),
                eps,
            )),
        }
    }

    fn fused_layer_norm(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        eps: f32,
    ) -> FloatTensor<Self> {
        match LayerNormBackward
            .prepare::<C>([x.node(), weight.node(), bias.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (x, w) = (x.into_primitive(), weight.into_primitive());
                let out = B::fused_layer_norm(x.clone(), w.clone(), bias.into_primitive(), eps);
                prep.finish((x, w, eps), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_layer_norm(
                x.into_primitive(),
                weight.into_primitive(),
                bias.into_primitive(),
                eps,
            )),
        }
    }

    fn rope(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let (cos, sin) = (cos.into_primitive(), sin.into_primitive());
        match RopeBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let out = B::rope(x.into_primitive(), cos.clone(), sin.clone());
                prep.finish((cos, sin), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::rope(x.into_primitive(), cos, sin)),
        }
    }
}
