//! The language backbone's invariants (fp32, CPU): cached decoding equals a full forward,
//! causality, padding independence, and gradients reaching every parameter.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Gradients;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use nuri_model::{CausalLm, TextConfig};

/// Deterministic pseudo-random token ids in `1..vocab`.
fn token_ids(rows: usize, len: usize, vocab: usize, seed: u64) -> Vec<Vec<i64>> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..rows)
        .map(|_| {
            (0..len)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    1 + ((state >> 33) % (vocab as u64 - 1)) as i64
                })
                .collect()
        })
        .collect()
}

fn ids_tensor(rows: &[Vec<i64>], device: &Device) -> Tensor<2, Int> {
    let len = rows[0].len();
    let flat: Vec<i64> = rows.iter().flatten().copied().collect();
    Tensor::from_data(TensorData::new(flat, [rows.len(), len]), device)
}

fn host(t: Tensor<3>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().expect("f32 logits")
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "compared tensors differ in size");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn tiny(device: &Device) -> (TextConfig, CausalLm) {
    let config = TextConfig::tiny();
    let model = CausalLm::new(&config, device).expect("tiny config is valid");
    (config, model)
}

#[test]
fn cached_decoding_equals_full_forward() {
    let device = Device::flex();
    for tied in [false, true] {
        let config = TextConfig::tiny().with_tie_word_embeddings(tied);
        let model = CausalLm::new(&config, &device).expect("valid");
        let rows = token_ids(2, 11, config.vocab_size, 7);
        let ids = ids_tensor(&rows, &device);
        let full = host(model.forward(ids.clone(), None, None, None));

        let prefill = 4;
        let mut cache = model.new_cache();
        let mut pieces = vec![model.forward(
            ids.clone().narrow(1, 0, prefill),
            None,
            None,
            Some(&mut cache),
        )];
        for step in prefill..11 {
            pieces.push(model.forward(
                ids.clone().narrow(1, step, 1),
                None,
                None,
                Some(&mut cache),
            ));
        }
        assert_eq!(cache.seq_len(), 11);
        let cached = host(Tensor::cat(pieces, 1));
        let diff = max_abs_diff(&full, &cached);
        assert!(
            diff < 1e-4,
            "tied={tied}: cached decode differs from full forward by {diff}"
        );
    }
}

#[test]
fn cached_decoding_of_a_left_padded_batch_equals_its_full_forward() {
    let device = Device::flex();
    let (config, model) = tiny(&device);
    let mut rows = token_ids(2, 9, config.vocab_size, 11);
    rows[0][..3].fill(0); // row 0 is left-padded by three tokens
    let mask_rows = vec![vec![0, 0, 0, 1, 1, 1, 1, 1, 1], vec![1; 9]];
    let ids = ids_tensor(&rows, &device);
    let mask = ids_tensor(&mask_rows, &device);
    let full = model.forward(ids.clone(), Some(mask.clone()), None, None);

    let mut cache = model.new_cache();
    let mut pieces = vec![model.forward(
        ids.clone().narrow(1, 0, 5),
        Some(mask.clone().narrow(1, 0, 5)),
        None,
        Some(&mut cache),
    )];
    for step in 5..9 {
        let step_mask = mask.clone().narrow(1, 0, step + 1);
        pieces.push(model.forward(
            ids.clone().narrow(1, step, 1),
            Some(step_mask),
            None,
            Some(&mut cache),
        ));
    }
    let cached = Tensor::cat(pieces, 1);
    // Compare only real positions (padded queries attend to nothing and are never read).
    let full = host(full.narrow(1, 3, 6));
    let cached = host(cached.narrow(1, 3, 6));
    let diff = max_abs_diff(&full, &cached);
    assert!(
        diff < 1e-4,
        "cached decode of a padded batch differs by {diff}"
    );
}

#[test]
fn changing_a_later_token_changes_no_earlier_logit() {
    let device = Device::flex();
    let (config, model) = tiny(&device);
    let rows = token_ids(1, 10, config.vocab_size, 3);
    let mut changed = rows.clone();
    let at = 6;
    changed[0][at] = 1 + (changed[0][at] % (config.vocab_size as i64 - 1));
    let before = model.forward(ids_tensor(&rows, &device), None, None, None);
    let after = model.forward(ids_tensor(&changed, &device), None, None, None);
    let earlier = max_abs_diff(
        &host(before.clone().narrow(1, 0, at)),
        &host(after.clone().narrow(1, 0, at)),
    );
    assert_eq!(
        earlier, 0.0,
        "a logit before position {at} moved by {earlier}"
    );
    let later = max_abs_diff(
        &host(before.narrow(1, at, 10 - at)),
        &host(after.narrow(1, at, 10 - at)),
    );
    assert!(
        later > 1e-6,
        "changing token {at} changed nothing after it (diff {later})"
    );
}

#[test]
fn padded_batch_gives_each_sequence_its_own_logits() {
    let device = Device::flex();
    let (config, model) = tiny(&device);
    let long = token_ids(1, 8, config.vocab_size, 21).remove(0);
    let short = token_ids(1, 5, config.vocab_size, 22).remove(0);
    let alone = |seq: &Vec<i64>| {
        host(model.forward(
            ids_tensor(std::slice::from_ref(seq), &device),
            None,
            None,
            None,
        ))
    };
    let (long_alone, short_alone) = (alone(&long), alone(&short));
    let vocab = config.vocab_size;

    for left in [true, false] {
        let pad = vec![0i64; 3];
        let (short_padded, short_mask) = if left {
            (
                [pad.clone(), short.clone()].concat(),
                [vec![0; 3], vec![1; 5]].concat(),
            )
        } else {
            (
                [short.clone(), pad.clone()].concat(),
                [vec![1; 5], vec![0; 3]].concat(),
            )
        };
        let ids = ids_tensor(&[long.clone(), short_padded], &device);
        let mask = ids_tensor(&[vec![1; 8], short_mask], &device);
        let batch = model.forward(ids, Some(mask), None, None);
        let long_batch = host(batch.clone().narrow(0, 0, 1));
        let start = if left { 3 } else { 0 };
        let short_batch = host(batch.narrow(0, 1, 1).narrow(1, start, 5));
        let d_long = max_abs_diff(&long_alone, &long_batch);
        let d_short = max_abs_diff(&short_alone, &short_batch);
        assert!(
            d_long < 1e-4 && d_short < 1e-4,
            "left={left}: long {d_long}, short {d_short} (vocab {vocab})"
        );
    }
}

/// Records, for each float parameter, whether it got a gradient and whether any entry is
/// non-zero.
struct GradientCheck<'a> {
    grads: &'a Gradients,
    missing: Vec<String>,
    all_zero: Vec<String>,
    seen: usize,
    path: Vec<String>,
}

impl ModuleVisitor for GradientCheck<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.seen += 1;
        let name = format!("{} ({:?})", self.path.join("."), param.shape());
        match param.val().grad(self.grads) {
            None => self.missing.push(name),
            Some(grad) => {
                if grad.abs().max().into_scalar::<f32>() == 0.0 {
                    self.all_zero.push(name);
                }
            }
        }
    }
}

#[test]
fn one_backward_pass_reaches_every_parameter() {
    let device = Device::flex().autodiff();
    for tied in [false, true] {
        let config = TextConfig::tiny().with_tie_word_embeddings(tied);
        let model = CausalLm::new(&config, &device).expect("valid");
        let rows = token_ids(2, 12, config.vocab_size, 5);
        let ids = ids_tensor(&rows, &device);
        let inputs = ids.clone().narrow(1, 0, 11);
        let targets = ids.narrow(1, 1, 11);
        let mask = ids_tensor(&[vec![1; 11], [vec![1; 8], vec![0; 3]].concat()], &device);
        let logits = model.forward(inputs, Some(mask), None, None); // [2, 11, vocab]
        let logp = log_softmax(logits, 2);
        let loss = logp.gather(2, targets.unsqueeze_dim(2)).mean().neg();
        let grads = loss.backward();
        let mut check = GradientCheck {
            grads: &grads,
            missing: vec![],
            all_zero: vec![],
            seen: 0,
            path: vec![],
        };
        model.visit(&mut check);
        let expected = 2 + 12 * config.num_hidden_layers + usize::from(!tied);
        assert_eq!(check.seen, expected, "tied={tied}: parameter count");
        assert!(
            check.missing.is_empty(),
            "tied={tied}: no gradient for {:?}",
            check.missing
        );
        assert!(
            check.all_zero.is_empty(),
            "tied={tied}: all-zero gradient for {:?}",
            check.all_zero
        );
    }
}
