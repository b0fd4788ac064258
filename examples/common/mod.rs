//! What the examples share: the model flags every example takes (`--model DIR --device …
//! --dtype …`, the same as `nuri generate`'s), and for their tests a tiny checkpoint with a
//! tokenizer, made from the repository's fixtures.

#![allow(dead_code)] // each example uses part of it

use std::io::Write;
use std::path::PathBuf;

pub use nuri::cli::ModelArgs;
use nuri_infer::SamplingParams;
use nuri_infer::generate::{GenerationRequest, generate};
use serde_json::Value as Json;

/// Greedy answers to `conversations` by `loaded`, each piece of text passed to `on_piece`
/// (conversation index, text) as it is decoded.
pub fn answer(
    loaded: &nuri::generate::Loaded,
    conversations: &[Json],
    max_new_tokens: usize,
    on_piece: &mut (dyn FnMut(usize, &str) + Send),
) -> anyhow::Result<Vec<String>> {
    let requests: Vec<GenerationRequest> = conversations
        .iter()
        .map(|messages| GenerationRequest {
            messages: messages.clone(),
            params: SamplingParams {
                max_new_tokens,
                ..SamplingParams::default()
            },
            template_kwargs: Default::default(),
        })
        .collect();
    let out = generate(
        &loaded.model,
        &loaded.processor,
        &requests,
        &loaded.device,
        on_piece,
    )?;
    Ok(out.into_iter().map(|g| g.text).collect())
}

/// Prints each piece to stdout as it comes.
pub fn stream_to_stdout(_: usize, piece: &str) {
    print!("{piece}");
    let _ = std::io::stdout().flush();
}

/// The repository's fixtures.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// A tiny random-weight checkpoint with the fixture tokenizer and chat template, written once
/// per test process (what `nuri train` exports, without training).
pub fn tiny_checkpoint() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("nuri-example-model-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let tokenizer = fixtures().join("processor/checkpoint");
        let config = nuri_train::TrainConfig::load(
            &fixtures().join("../configs/train-tiny.toml"),
            &[format!(
                "model.tokenizer={:?}",
                tokenizer.display().to_string()
            )],
        )
        .expect("the tiny training config");
        let device = burn::tensor::Device::flex();
        let (_, model, nuri) =
            nuri_train::setup::init_model(&config, &device).expect("the tiny model");
        nuri_model::save_pretrained(&model, &nuri, &dir).expect("export");
        for file in std::fs::read_dir(&tokenizer).expect("tokenizer dir") {
            let file = file.expect("entry").path();
            std::fs::copy(&file, dir.join(file.file_name().expect("name"))).expect("copy");
        }
        dir
    })
    .clone()
}

/// `ModelArgs` for `dir` on the CPU, as the command line would give them.
pub fn model_args(dir: &std::path::Path) -> ModelArgs {
    use clap::Parser;
    #[derive(Parser)]
    struct Only {
        #[command(flatten)]
        model: ModelArgs,
    }
    Only::parse_from(["example", "--model", &dir.display().to_string()]).model
}
