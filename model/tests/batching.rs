//! Generation over a running batch (fp32, CPU): a prompt prefilled in chunks gives the
//! logits of one pass, and rows that join or leave a batch mid-way decode exactly what
//! each decodes alone.

use burn::tensor::{Device, Int, Tensor, TensorData};
use nuri_model::{Batch, MultimodalInput, NuriConfig, NuriModel, PREFILL_CHUNK, Prefilled, argmax};

fn model(device: &Device) -> NuriModel {
    device.seed(11);
    let model = NuriModel::new(&NuriConfig::tiny(), device).expect("tiny model");
    model.init_params_now();
    model
}

/// Pseudo-random text token ids (below the tiny model's special ids).
fn prompt(len: usize, seed: u64) -> Vec<i64> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            1 + (state % 200) as i64
        })
        .collect()
}

/// Rows left-padded with 0 to the longest, with their padding mask.
fn input(rows: &[Vec<i64>], device: &Device) -> MultimodalInput {
    let len = rows.iter().map(Vec::len).max().expect("rows");
    let mut ids = Vec::new();
    let mut mask = Vec::new();
    for row in rows {
        let pad = len - row.len();
        ids.extend(std::iter::repeat_n(0, pad).chain(row.iter().copied()));
        mask.extend(std::iter::repeat_n(0, pad).chain(std::iter::repeat_n(1, row.len())));
    }
    let shape = [rows.len(), len];
    MultimodalInput::text(
        Tensor::<2, Int>::from_data(TensorData::new(ids, shape), device),
        Some(Tensor::<2, Int>::from_data(
            TensorData::new(mask, shape),
            device,
        )),
    )
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// A prompt longer than a prefill chunk, run into a cache in several chunks (and in small
/// pieces of our own), ends with the logits a single uncached pass gives its last position;
/// so does a left-padded row of a batch.
#[test]
fn chunked_prefill_equals_one_pass() {
    let device = Device::flex();
    let model = model(&device);
    let long = prompt(PREFILL_CHUNK * 2 + 37, 1);
    let short = prompt(300, 2);
    let full = |rows: &[Vec<i64>]| {
        let input = input(rows, &device);
        let s = input.input_ids.dims()[1];
        let logits = model.prefill(&input, None).expect("prefill").logits;
        let v = logits.dims()[2];
        (0..rows.len())
            .map(|r| {
                logits
                    .clone()
                    .narrow(0, r, 1)
                    .narrow(1, s - 1, 1)
                    .reshape([v])
                    .into_data()
                    .try_to_vec::<f32>()
                    .expect("f32")
            })
            .collect::<Vec<_>>()
    };
    let rows = vec![long.clone(), short.clone()];
    let want = full(&rows);
    let (_, got) = model.prefill_all(&input(&rows, &device)).expect("prefill");
    for (g, w) in got.iter().zip(&want) {
        assert!(max_abs_diff(g, w) < 1e-4, "{}", max_abs_diff(g, w));
    }
    // By pieces of 100 positions.
    let mut pending = model.begin_prompt(&input(&rows, &device)).expect("begins");
    let mut chunks = 0;
    let got = loop {
        chunks += 1;
        match model.prefill_chunk(pending, 100) {
            Prefilled::Pending(p) => pending = *p,
            Prefilled::Ready(_, logits) => break logits,
        }
    };
    assert_eq!(chunks, long.len().div_ceil(100));
    for (g, w) in got.iter().zip(&want) {
        assert!(max_abs_diff(g, w) < 1e-4, "{}", max_abs_diff(g, w));
    }
}

/// Greedy tokens of one prompt decoded alone.
fn alone(model: &NuriModel, row: &[i64], n: usize, device: &Device) -> Vec<u32> {
    model
        .greedy(&input(&[row.to_vec()], device), n)
        .expect("greedy")[0]
        .iter()
        .map(|&t| t as u32)
        .collect()
}

/// Row A starts alone; after 3 steps B (a longer prompt) joins; after 4 more A leaves and C
/// (shorter) joins. Every row's greedy tokens are those it decodes alone.
#[test]
fn rows_joining_and_leaving_decode_as_they_do_alone() {
    let device = Device::flex();
    let model = model(&device);
    let prompts = [prompt(9, 3), prompt(23, 4), prompt(5, 5)];
    let want: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| alone(&model, p, 10, &device))
        .collect();
    let start = |p: &[i64]| -> (Batch, Vec<Vec<f32>>) {
        model
            .prefill_all(&input(&[p.to_vec()], &device))
            .expect("prefill")
    };
    // (prompt index, tokens so far) per batch row.
    let (mut batch, mut logits) = start(&prompts[0]);
    let mut rows: Vec<(usize, Vec<u32>)> = vec![(0, Vec::new())];
    for step in 0..12 {
        if step == 3 || step == 7 {
            let joining = if step == 3 { 1 } else { 2 };
            let (b, l) = start(&prompts[joining]);
            batch.merge(b);
            logits.extend(l);
            rows.push((joining, Vec::new()));
        }
        let mut keep = Vec::new();
        let mut feed = Vec::new();
        for (i, (which, tokens)) in rows.iter_mut().enumerate() {
            let token = argmax(&logits[i]);
            tokens.push(token);
            assert_eq!(tokens[..], want[*which][..tokens.len()], "prompt {which}");
            let leaves = (*which == 0 && step == 7) || tokens.len() == 10;
            if !leaves {
                keep.push(i);
                feed.push(token);
            }
        }
        if keep.is_empty() {
            break;
        }
        if keep.len() < rows.len() {
            batch.retain(&keep);
            rows = keep.iter().map(|&i| rows[i].clone()).collect();
        }
        logits = model.decode(&mut batch, &feed);
    }
}

/// EXAONE 4-style layers (three sliding-window layers, then a global one without RoPE):
/// a long prompt prefilled in chunks and decoded step by step through a cache whose
/// sliding layers keep only about their window gives the logits of one full pass, and the
/// sliding layers' caches stay bounded while the global layer's grows.
#[test]
fn sliding_window_layers_keep_only_their_window_and_match_the_full_pass() {
    use nuri_model::{LayerType, NormLayout, TextConfig};
    let device = Device::flex();
    device.seed(5);
    let window = 8;
    let text = TextConfig {
        vocab_size: 256,
        mrope_section: Vec::new(),
        qkv_bias: false,
        qk_norm: true,
        norm_layout: NormLayout::Post,
        num_hidden_layers: 4,
        layer_types: vec![
            LayerType::Sliding,
            LayerType::Sliding,
            LayerType::Sliding,
            LayerType::Full,
        ],
        sliding_window: Some(window),
        rope_in_full_layers: false,
        ..TextConfig::tiny()
    };
    let config = NuriConfig {
        text,
        vision: None,
        ..NuriConfig::tiny()
    };
    let model = NuriModel::new(&config, &device).expect("model");
    model.init_params_now();
    let len = 300;
    let ids = prompt(len, 3);
    let full_input = input(std::slice::from_ref(&ids), &device);
    let full = model.prefill(&full_input, None).expect("prefill").logits; // [1, len, vocab]
    let full: Vec<f32> = full.into_data().try_to_vec().expect("f32");
    let vocab = 256;

    // The first 200 tokens in chunks, then the rest one at a time.
    let head = input(&[ids[..200].to_vec()], &device);
    let mut pending = model.begin_prompt(&head).expect("prompt");
    let (mut batch, logits) = loop {
        match model.prefill_chunk(pending, 64) {
            Prefilled::Ready(batch, logits) => break (batch, logits),
            Prefilled::Pending(p) => pending = *p,
        }
    };
    let close = |got: &[f32], pos: usize| {
        let want = &full[pos * vocab..(pos + 1) * vocab];
        let diff = got
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(diff < 1e-4, "position {pos}: logits differ by {diff}");
    };
    close(&logits[0], 199);
    for (pos, &token) in ids.iter().enumerate().skip(200) {
        let logits = model.decode(&mut batch, &[token as u32]);
        close(&logits[0], pos);
    }
    let cache = batch.cache();
    assert_eq!(cache.seq_len(), len);
    assert_eq!(
        cache.layer(3).held(),
        len,
        "the global layer keeps everything"
    );
    for layer in 0..3 {
        let held = cache.layer(layer).held();
        assert!(
            held <= 2 * 64 + 1 && held >= window - 1,
            "sliding layer {layer} holds {held} positions"
        );
    }
}
