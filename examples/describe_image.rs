//! One picture, described, the answer streamed as it is decoded.
//!
//! ```sh
//! cargo run --release --example describe_image -- --model DIR --image photo.jpg \
//!     [--prompt "이 사진을 설명해 주세요."] [--device cpu|wgpu] [--dtype bf16]
//! ```

mod common;

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use serde_json::json;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    model: common::ModelArgs,
    /// The picture (JPEG, PNG, WebP, GIF, BMP).
    #[arg(long)]
    image: PathBuf,
    #[arg(long, default_value = "Describe this picture.")]
    prompt: String,
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
}

fn run(args: &Args, on_piece: &mut (dyn FnMut(usize, &str) + Send)) -> Result<String> {
    let loaded = args.model.load()?;
    let messages = json!([{"role": "user", "content": [
        {"type": "image", "image": args.image.display().to_string()},
        {"type": "text", "text": args.prompt},
    ]}]);
    let mut answers = common::answer(&loaded, &[messages], args.max_new_tokens, on_piece)?;
    Ok(answers.remove(0))
}

fn main() -> Result<()> {
    let args = Args::parse();
    run(&args, &mut common::stream_to_stdout)?;
    println!();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_a_picture_streaming_what_it_returns() {
        let args = Args {
            model: common::model_args(&common::tiny_checkpoint()),
            image: common::fixtures().join("images/photo.jpg"),
            prompt: "이 사진을 설명해 주세요.".into(),
            max_new_tokens: 6,
        };
        let mut streamed = String::new();
        let answer = run(&args, &mut |_, piece| streamed.push_str(piece)).expect("runs");
        assert_eq!(streamed, answer);
        // A picture that is not there is an error that names it.
        let missing = Args {
            image: "no/such.png".into(),
            ..args
        };
        let err = run(&missing, &mut |_, _| {}).unwrap_err();
        assert!(format!("{err:#}").contains("no/such.png"), "{err:#}");
    }
}
