//! The training loss: the mean cross-entropy of next-token predictions over the labelled
//! (assistant) tokens, in fp32 or on a bf16 cast of the weights.

use burn::module::Module;
use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use nuri_kernels::cross_entropy;
use nuri_model::NuriModel;

use crate::TrainError;
use crate::collate::{Batch, IGNORE};

/// Mean cross-entropy of next-token predictions over the labelled tokens, from the last
/// hidden states: only the positions that predict a label go through the head and the
/// log-softmax (in supervised fine-tuning the answers are a small share of the tokens, and
/// the head is the widest matmul of a model with a large vocabulary).
///
/// # Shapes
/// - `hidden`: `[batch, seq, hidden]`; `labels`: `batch × seq` values (row-major)
pub fn labelled_loss(
    model: &NuriModel,
    hidden: Tensor<3>,
    labels: &[i64],
    device: &Device,
) -> (Tensor<1>, usize) {
    let [b, s, d] = hidden.dims();
    // Position t predicts token t + 1.
    let (mut rows, mut targets) = (Vec::new(), Vec::new());
    for r in 0..b {
        for t in 1..s {
            let l = labels[r * s + t];
            if l != IGNORE {
                rows.push((r * s + t - 1) as i64);
                targets.push(l);
            }
        }
    }
    let count = rows.len();
    if count == 0 {
        // Nothing to learn from; a zero that still depends on the model.
        return (hidden.sum().mul_scalar(0.0), 0);
    }
    let picked = if count == b * (s - 1) {
        // Every position is labelled (pre-training): no gather.
        hidden.slice([0..b, 0..s - 1, 0..d]).reshape([1, count, d])
    } else {
        let rows = Tensor::<1, Int>::from_data(TensorData::new(rows, [count]), device);
        hidden
            .reshape([b * s, d])
            .select(0, rows)
            .reshape([1, count, d])
    };
    let logits = model.logits(picked).cast(DType::F32); // [1, n, vocab]
    let vocab = logits.dims()[2];
    let targets = Tensor::<1, Int>::from_data(TensorData::new(targets, [count]), device);
    let loss = cross_entropy(logits.reshape([count, vocab]), targets)
        .sum()
        .div_scalar(count as f64);
    (loss, count)
}

/// Casts every float parameter, keeping its id; under autodiff the cast is part of the graph,
/// so gradients reach the original (fp32) parameters.
struct CastTo(DType);

impl burn::module::ModuleMapper for CastTo {
    fn map_float<const D: usize>(
        &mut self,
        param: burn::module::Param<Tensor<D>>,
    ) -> burn::module::Param<Tensor<D>> {
        let dtype = self.0;
        param.map(|t| t.cast(dtype))
    }
}

/// Loss of one batch (no update) and its count of labelled tokens; with `bf16`, the forward
/// runs on a bf16 cast of the weights and the loss is taken in fp32.
pub fn batch_loss(
    model: &NuriModel,
    batch: &Batch,
    device: &Device,
    bf16: bool,
) -> Result<(Tensor<1>, usize), TrainError> {
    let input = batch.input.to_model_input(device);
    let cast;
    let model = if bf16 {
        cast = model.clone().map(&mut CastTo(DType::BF16));
        &cast
    } else {
        model
    };
    let (hidden, _, _) = model
        .hidden_states(&input, None)
        .map_err(|e| TrainError::Model(e.to_string()))?;
    Ok(labelled_loss(model, hidden, &batch.labels, device))
}

#[cfg(test)]
mod tests {
    use burn::tensor::activation::log_softmax;
    use nuri_model::{MultimodalInput, NuriConfig};

    use super::*;

    /// The loss over the labelled rows equals the mean over the labelled positions of the
    /// full logits' log-softmax.
    #[test]
    fn labelled_loss_is_the_cross_entropy_of_the_labelled_positions() {
        let device = Device::flex();
        device.seed(3);
        let model = NuriModel::new(&NuriConfig::tiny(), &device).expect("a model");
        let (b, s) = (2, 6);
        let ids: Vec<i64> = (0..(b * s) as i64).map(|i| (i * 37) % 200).collect();
        let input = MultimodalInput::text(
            Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [b, s]), &device),
            None,
        );
        let logp = log_softmax(model.prefill(&input, None).expect("runs").logits, 2)
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        let v = NuriConfig::tiny().text.vocab_size;
        // Some positions ignored (a gather of rows), then every one (a slice).
        let mut some = ids.clone();
        for (i, l) in some.iter_mut().enumerate() {
            if i % 3 == 0 {
                *l = IGNORE;
            }
        }
        for labels in [some, ids] {
            let (hidden, _, _) = model.hidden_states(&input, None).expect("runs");
            let (loss, count) = labelled_loss(&model, hidden, &labels, &device);
            let (mut sum, mut n) = (0.0f64, 0);
            for r in 0..b {
                for t in 1..s {
                    let l = labels[r * s + t];
                    if l != IGNORE {
                        sum -= logp[(r * s + t - 1) * v + l as usize] as f64;
                        n += 1;
                    }
                }
            }
            assert_eq!(count, n);
            let loss = loss.into_scalar::<f32>() as f64;
            let want = sum / n as f64;
            assert!((loss - want).abs() < 1e-5, "{loss} vs {want}");
        }
        // No labels: zero, from zero tokens.
        let (hidden, _, _) = model.hidden_states(&input, None).expect("runs");
        let (loss, count) = labelled_loss(&model, hidden, &vec![IGNORE; b * s], &device);
        assert_eq!((loss.into_scalar::<f32>(), count), (0.0, 0));
    }
}
