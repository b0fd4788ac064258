//! The memory side of decoding: the machine's streaming read bandwidth, the bytes of weights
//! one decoding step reads, and the roofline they give (a batch-1 step cannot be faster than
//! reading every language-model weight once).

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Int, Tensor};
use nuri_model::NuriModel;
use rayon::prelude::*;

/// Bytes streamed per bandwidth run: far past any cache.
const STREAM_BYTES: usize = 1 << 30;

/// A buffer to stream, written once so that its pages are resident.
pub struct Stream(Vec<u64>);

impl Stream {
    pub fn new() -> Self {
        Self(
            (0..STREAM_BYTES / 8)
                .into_par_iter()
                .map(|i| i as u64)
                .collect(),
        )
    }

    pub fn bytes(&self) -> usize {
        self.0.len() * 8
    }

    /// Reads every byte once, on every core (what a batch-1 decode step does with the
    /// weights); returns a value that depends on all of them so the read is not elided.
    pub fn read(&self) -> u64 {
        nuri_kernels::stream_read(&self.0)
    }
}

/// Sums the bytes of a module's parameters (float, and packed quantized rows), in their
/// stored dtypes.
#[derive(Default)]
struct ParamBytes(u64);

impl ModuleVisitor for ParamBytes {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = param.val();
        self.0 += (t.shape().num_elements() * t.dtype().size()) as u64;
    }

    /// Packed (quantized) weights.
    fn visit_int<const D: usize>(&mut self, param: &Param<Tensor<D, Int>>) {
        let t = param.val();
        self.0 += (t.shape().num_elements() * t.dtype().size()) as u64;
    }
}

fn bytes_of<M: Module>(module: &M) -> u64 {
    let mut v = ParamBytes::default();
    module.visit(&mut v);
    v.0
}

/// The bytes of weights one decoding step reads: the decoder's layers and norms, and the
/// output head (the embedding table when tied; otherwise only one row of it per token).
pub fn decode_bytes(model: &NuriModel) -> u64 {
    let lm = &model.model.language_model;
    let embed = bytes_of(&lm.embed_tokens);
    let head = model.lm_head.as_ref().map_or(embed, bytes_of);
    bytes_of(lm) - embed + head
}
