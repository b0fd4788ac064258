//! A clip and a question: says how the clip is sampled (frames, frame rate, pixels per frame,
//! visual tokens) and streams the answer.
//!
//! ```sh
//! cargo run --release --example ask_video -- --model DIR --video clip.mp4 \
//!     --question "What happens?" [--fps 2] [--max-pixels 200704] [--device …]
//! ```
//! (mp4/webm/mkv need the `ffmpeg` feature; GIF, APNG and animated WebP always work.)

mod common;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use nuri::generate::{TurnMedia, user_message};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    model: common::ModelArgs,
    #[arg(long)]
    video: PathBuf,
    #[arg(long, default_value = "What happens in this clip?")]
    question: String,
    /// Frames sampled per second of the clip.
    #[arg(long)]
    fps: Option<f64>,
    /// Pixel budget per frame (resized to fit, in multiples of the patch grid).
    #[arg(long)]
    max_pixels: Option<usize>,
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
}

/// How the clip will be sampled, from its headers (no frame decoded twice): (frames, frames
/// per second, pixels per frame, visual tokens).
fn sampling(args: &Args, loaded: &nuri::generate::Loaded) -> Result<(usize, f64, usize, usize)> {
    let message = user_message(&media(args), &args.question);
    let plans = loaded
        .processor
        .video_plans(&serde_json::json!([message]))?;
    let plan = plans.first().context("the message has no video")?;
    let (height, width) = plan.resized;
    let tokens = plan.tokens(loaded.processor.video.merge_size);
    Ok((
        plan.frame_indices.len(),
        plan.sample_fps(),
        height * width,
        tokens,
    ))
}

fn media(args: &Args) -> TurnMedia {
    TurnMedia {
        videos: vec![args.video.clone()],
        fps: args.fps,
        max_pixels: args.max_pixels,
        ..TurnMedia::default()
    }
}

fn run(
    args: &Args,
    on_piece: &mut (dyn FnMut(usize, &str) + Send),
) -> Result<(String, (usize, f64, usize, usize))> {
    let loaded = args.model.load()?;
    let plan = sampling(args, &loaded)?;
    let (frames, fps, pixels, tokens) = plan;
    eprintln!("{frames} frames at {fps:.2} fps, {pixels} pixels per frame, {tokens} visual tokens");
    let messages = serde_json::json!([user_message(&media(args), &args.question)]);
    let mut answers = common::answer(&loaded, &[messages], args.max_new_tokens, on_piece)?;
    Ok((answers.remove(0), plan))
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
    fn samples_the_clip_as_asked_and_answers() {
        let args = Args {
            model: common::model_args(&common::tiny_checkpoint()),
            video: common::fixtures().join("videos/clip.gif"),
            question: "무슨 일이 일어나나요?".into(),
            fps: Some(1.0),
            max_pixels: Some(28 * 28 * 4),
            max_new_tokens: 4,
        };
        let (answer, (frames, fps, pixels, tokens)) = run(&args, &mut |_, _| {}).expect("runs");
        assert!(
            frames >= 2 && fps > 0.0 && tokens > 0,
            "{frames} {fps} {tokens}"
        );
        assert!(pixels <= 28 * 28 * 4, "the pixel budget holds: {pixels}");
        let _ = answer;
        // More frames per second sample more frames of the same clip.
        let denser = Args {
            fps: Some(4.0),
            ..args
        };
        let (_, (more, ..)) = run(&denser, &mut |_, _| {}).expect("runs");
        assert!(more >= frames, "{more} vs {frames}");
    }
}
