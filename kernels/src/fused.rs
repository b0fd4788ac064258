//! What the fused operations (`act`, `attend`, `rowops`) share: the flex tensors' f32 data
//! for the kernels, and the backward step of an operation with one tracked input.

use burn::backend::flex::{FlexTensor, Layout};
use burn::tensor::{Bytes, DType};

/// Whether every tensor is f32 (the kernels' type; others take Burn's operations).
pub(crate) fn all_f32(tensors: &[&FlexTensor]) -> bool {
    tensors.iter().all(|t| t.dtype() == DType::F32)
}

/// A contiguous copy (no copy when the tensor already is contiguous) and its layout.
pub(crate) fn values(t: &FlexTensor) -> (FlexTensor, Layout) {
    let t = t.to_contiguous();
    let layout = Layout::contiguous(t.layout().shape().clone());
    (t, layout)
}

/// The f32 data of a contiguous f32 tensor (from [`values`]).
pub(crate) fn slice(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("contiguous f32")
}

pub(crate) fn f32_tensor(data: Vec<f32>, layout: Layout) -> FlexTensor {
    FlexTensor::new(Bytes::from_elems(data), layout, DType::F32)
}

/// Defines `$name`, the autodiff step of an operation of the extension `$ext` with one
/// tracked input: it keeps `$state` from the forward pass and gives the input the gradient
/// `$body`, computed from the state (bound to `$s`) and the output's gradient (`$g`).
macro_rules! one_input_backward {
    ($name:ident, $ext:ident, $state:ty, |$s:pat_param, $g:ident| $body:expr) => {
        #[derive(Debug)]
        struct $name;

        impl<B: $ext> Backward<B, 1> for $name {
            type State = $state;

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let $s = ops.state;
                let $g = grads.consume::<B>(&ops.node);
                if let [Some(node)] = ops.parents {
                    grads.register::<B>(node.id, $body);
                }
            }
        }
    };
}
