//! `nuri preprocess`: what the input pipeline makes of images, videos and a question — the
//! sizes, sampled frames and visual token counts, and with a checkpoint's tokenizer the
//! rendered prompt and its token ids.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use nuri_media::image::{DEFAULT_DECODE_LIMIT, ImageProcessorConfig, load_rgb};
use nuri_media::video::{FrameSampling, VideoOptions, load_video};
use nuri_processor::{PaddingSide, Processor};
use serde_json::json;

/// What to preprocess (the `nuri preprocess` flags).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PreprocessArgs {
    /// PNG, JPEG, WebP, GIF (first frame) or BMP file (repeatable).
    #[arg(long = "image")]
    pub images: Vec<PathBuf>,
    /// Animated GIF/APNG/WebP, a folder of numbered frames, or (with the `ffmpeg` feature)
    /// any video file (repeatable).
    #[arg(long = "video")]
    pub videos: Vec<PathBuf>,
    /// A question; tokenized with the chat template when --model has a tokenizer.json.
    #[arg(long)]
    pub prompt: Option<String>,
    /// A checkpoint directory whose tokenizer, chat template and processor configs to use.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Lower bound on resized pixels (per image / per video frame).
    #[arg(long)]
    pub min_pixels: Option<usize>,
    /// Upper bound on resized pixels (per image / per video frame).
    #[arg(long)]
    pub max_pixels: Option<usize>,
    /// Frames per second to sample from videos (default 2).
    #[arg(long, conflicts_with = "nframes")]
    pub fps: Option<f64>,
    /// A fixed number of frames to sample from videos.
    #[arg(long)]
    pub nframes: Option<usize>,
}

impl PreprocessArgs {
    fn video_options(&self) -> VideoOptions {
        VideoOptions {
            sampling: match self.nframes {
                Some(n) => FrameSampling::Count(n),
                None => FrameSampling::Fps {
                    fps: self.fps.unwrap_or(nuri_media::video::sampling::DEFAULT_FPS),
                    min_frames: None,
                    max_frames: None,
                },
            },
            min_pixels: self.min_pixels,
            max_pixels: self.max_pixels,
            ..Default::default()
        }
    }
}

/// Runs the pipeline and prints a report.
pub fn run(args: &PreprocessArgs) -> Result<()> {
    if args.images.is_empty() && args.videos.is_empty() && args.prompt.is_none() {
        bail!("give at least one of --image, --video or --prompt");
    }
    let with_tokenizer = args
        .model
        .as_deref()
        .filter(|dir| dir.join("tokenizer.json").is_file());
    match with_tokenizer {
        Some(dir) => full(args, dir),
        None => media_only(args),
    }
}

fn media_only(args: &PreprocessArgs) -> Result<()> {
    let mut config = match args
        .model
        .as_ref()
        .map(|d| d.join("preprocessor_config.json"))
    {
        Some(path) if path.exists() => ImageProcessorConfig::from_preprocessor_json(&path)?,
        _ => ImageProcessorConfig::default(),
    };
    let merge = config.merge_size * config.merge_size;
    for image in &args.images {
        let mut config = config.clone();
        config.min_pixels = args.min_pixels.unwrap_or(config.min_pixels);
        config.max_pixels = args.max_pixels.unwrap_or(config.max_pixels);
        let rgb = load_rgb(image, DEFAULT_DECODE_LIMIT)?;
        let name = image.display().to_string();
        let resized = config.resize(&rgb, &name)?;
        let [t, h, w] = config.patchify(&[&resized]).grid_thw;
        println!("image             {name}");
        println!("decoded           {}×{}", rgb.width, rgb.height);
        println!("resized           {}×{}", resized.width, resized.height);
        println!("patch grid (thw)  {t}×{h}×{w} = {} patches", t * h * w);
        println!("visual tokens     {}", t * h * w / merge);
    }
    config.min_pixels = ImageProcessorConfig::default().min_pixels;
    for video in &args.videos {
        let out = load_video(&config, video, &args.video_options())?;
        print_video(video, &out, merge);
    }
    if args.prompt.is_some() {
        println!("(no tokenizer: give --model DIR with a tokenizer.json to tokenize the prompt)");
    }
    Ok(())
}

fn print_video(path: &Path, out: &nuri_media::video::VideoPatches, merge: usize) {
    let [t, h, w] = out.patches.grid_thw;
    println!("video             {}", path.display());
    println!(
        "frames            {} at {:.3} fps; sampled {} at {:.3} fps: {:?}",
        out.total_frames,
        out.video_fps,
        out.frame_indices.len(),
        out.sample_fps,
        out.frame_indices
    );
    println!("resized           {}×{}", out.resized.1, out.resized.0);
    println!("patch grid (thw)  {t}×{h}×{w} = {} patches", t * h * w);
    println!("visual tokens     {}", t * h * w / merge);
}

fn full(args: &PreprocessArgs, dir: &Path) -> Result<()> {
    let mut processor = Processor::from_dir(dir)
        .with_context(|| format!("loading the processor of {}", dir.display()))?
        .with_media_root(std::env::current_dir()?);
    // A checkpoint's config.json says its family (placeholders, positions).
    let config_path = dir.join("config.json");
    if config_path.is_file() {
        let config = nuri_model::read_hf_config(&config_path)
            .with_context(|| format!("reading {}", config_path.display()))?;
        processor = processor.for_model(&config);
    }
    let media = crate::generate::TurnMedia {
        images: args.images.clone(),
        videos: args.videos.clone(),
        fps: args.fps,
        nframes: args.nframes,
        min_pixels: args.min_pixels,
        max_pixels: args.max_pixels,
        text_first: false,
    };
    let message = crate::generate::user_message(&media, args.prompt.as_deref().unwrap_or(""));
    let messages = json!([message]);
    let text = processor.render(&messages, true)?;
    let out = processor.process(&[messages], true, PaddingSide::Left)?;
    println!("chat template     {}", processor.template.source());
    println!("prompt            {text:?}");
    println!("input ids         {} tokens", out.seq_len);
    for (i, grid) in out.image_grid_thw.iter().enumerate() {
        println!("image {i} grid      {grid:?}");
    }
    for (i, grid) in out.video_grid_thw.iter().enumerate() {
        println!(
            "video {i} grid      {grid:?}, frames {:?} ({:.3} fps)",
            out.video_frame_indices[i], out.video_sample_fps[i]
        );
    }
    let s = out.seq_len;
    let max_pos = (0..3)
        .map(|k| {
            out.position_ids[k * s..(k + 1) * s]
                .iter()
                .max()
                .copied()
                .unwrap_or(0)
        })
        .max()
        .unwrap_or(0);
    println!(
        "positions         0..={max_pos} (rope delta {})",
        out.rope_deltas[0]
    );
    Ok(())
}
