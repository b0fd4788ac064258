//! The language backbone in a few lines: build the tiny model on the CPU, prefill a prompt,
//! then decode greedily with the KV cache.
//!
//! `cargo run --release --example backbone`

use burn::tensor::{Device, Int, Tensor};
use nuri_model::{CausalLm, TextConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = Device::flex();
    let config = TextConfig::tiny();
    let model = CausalLm::new(&config, &device)?;
    let prompt = Tensor::<2, Int>::from_ints([[5, 17, 42, 8, 99]], &device); // [1, 5]

    let mut cache = model.new_cache();
    let mut logits = model.forward(prompt, None, None, Some(&mut cache)); // [1, 5, vocab]
    let mut generated = Vec::new();
    for _ in 0..8 {
        let [_, s, _] = logits.dims();
        let next = logits.narrow(1, s - 1, 1).argmax(2).reshape([1, 1]); // [1, 1]
        generated.push(next.clone().into_data().try_to_vec_as::<i64>()?[0]);
        logits = model.forward(next, None, None, Some(&mut cache));
    }
    println!("random-weight tiny model, greedy continuation: {generated:?}");
    println!("cache holds {} positions", cache.seq_len());
    Ok(())
}
