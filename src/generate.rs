//! `nuri generate` and `nuri chat`: a checkpoint directory (a Nuri run's `final/`, the run
//! directory itself, or a Hugging Face checkpoint directory of any supported family) answering questions about
//! images and clips.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::tensor::Device;
use nuri_infer::SamplingParams;
use nuri_infer::generate::{GenerationRequest, generate_parts};
use nuri_infer::reasoning::Part;
use nuri_model::{LoadOptions, LoadReport, NuriModel};
use nuri_processor::Processor;
use serde_json::{Value as Json, json};

use crate::cli::{ModelArgs, SamplingArgs, TemplateArgs};

/// A model and its processor, loaded from a directory.
pub struct Loaded {
    pub model: NuriModel,
    pub processor: Processor,
    pub device: Device,
    /// What loading read and held.
    pub report: LoadReport,
}

/// Loads `dir` (or `dir/final` for a training run's directory).
pub fn load(dir: &Path, device: Device, dtypes: LoadOptions) -> Result<Loaded> {
    let has_weights = |d: &Path| {
        d.join("model.safetensors").is_file() || d.join("model.safetensors.index.json").is_file()
    };
    let dir = if !has_weights(dir) && has_weights(&dir.join("final")) {
        dir.join("final")
    } else {
        dir.to_path_buf()
    };
    // The processor first: a tokenizer that does not belong to the weights is named before
    // gigabytes are read.
    let config = nuri_model::read_hf_config(&dir.join("config.json"))
        .with_context(|| format!("loading the model of {}", dir.display()))?;
    let processor = Processor::from_dir(&dir)
        .with_context(|| format!("loading the processor of {}", dir.display()))?
        .with_media_root(std::env::current_dir()?)
        .for_model(&config);
    processor
        .check_model(&config, &dir)
        .with_context(|| format!("loading the processor of {}", dir.display()))?;
    let (model, report) = nuri_model::load_weights(&config, &dir, &device, dtypes)
        .with_context(|| format!("loading the model of {}", dir.display()))?;
    Ok(Loaded {
        model,
        processor,
        device,
        report,
    })
}

/// Media and options of one user turn.
#[derive(Debug, Clone, Default)]
pub struct TurnMedia {
    pub images: Vec<PathBuf>,
    pub videos: Vec<PathBuf>,
    pub fps: Option<f64>,
    pub nframes: Option<usize>,
    pub min_pixels: Option<usize>,
    pub max_pixels: Option<usize>,
    /// The text before the media instead of after them.
    pub text_first: bool,
}

/// A user message with content parts: the images, the videos, then the text (if any; first
/// with `text_first`). A
/// `max_pixels` without `min_pixels` lowers the lower bound with it when it is below the
/// default.
pub fn user_message(media: &TurnMedia, text: &str) -> Json {
    let min_pixels = media.min_pixels.or_else(|| {
        media
            .max_pixels
            .map(|m| m.min(nuri_media::image::DEFAULT_MIN_PIXELS))
    });
    let bounds = |part: &mut Json| {
        if let Some(m) = media.max_pixels {
            part["max_pixels"] = json!(m);
        }
        if let Some(m) = min_pixels {
            part["min_pixels"] = json!(m);
        }
    };
    let mut parts = Vec::new();
    for image in &media.images {
        let mut part = json!({"type": "image", "image": image});
        bounds(&mut part);
        parts.push(part);
    }
    for video in &media.videos {
        let mut part = json!({"type": "video", "video": video});
        bounds(&mut part);
        if let Some(fps) = media.fps {
            part["fps"] = json!(fps);
        }
        if let Some(n) = media.nframes {
            part["nframes"] = json!(n);
        }
        parts.push(part);
    }
    if !text.is_empty() {
        let part = json!({"type": "text", "text": text});
        if media.text_first {
            parts.insert(0, part);
        } else {
            parts.push(part);
        }
    }
    json!({"role": "user", "content": parts})
}

/// `nuri generate`: answer a question about images and/or a video, streaming the answer.
#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// An image (repeatable).
    #[arg(long)]
    image: Vec<PathBuf>,
    /// A video file or folder of frames (repeatable).
    #[arg(long)]
    video: Vec<PathBuf>,
    /// Frames per second to sample from videos.
    #[arg(long)]
    fps: Option<f64>,
    /// Upper bound on resized pixels per image / video frame.
    #[arg(long)]
    max_pixels: Option<usize>,
    /// Put the question before the images and videos in the message (as the quickstart
    /// model is trained) instead of after them.
    #[arg(long)]
    text_first: bool,
    /// The question.
    prompt: String,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    template: TemplateArgs,
    /// Print a reasoning model's thinking (dimmed on a terminal) instead of hiding it.
    #[arg(long)]
    show_thinking: bool,
}

impl GenerateArgs {
    pub fn run(self) -> Result<()> {
        let loaded = self.model.load()?;
        let media = TurnMedia {
            images: self.image,
            videos: self.video,
            fps: self.fps,
            max_pixels: self.max_pixels,
            text_first: self.text_first,
            ..Default::default()
        };
        let request = (self.sampling.params(), self.template.kwargs());
        run_generate(&loaded, &media, &self.prompt, request, self.show_thinking)
    }
}

/// `nuri chat`: an interactive conversation (/image PATH, /video PATH, /reset, /exit).
#[derive(clap::Args, Debug)]
pub struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long)]
    fps: Option<f64>,
    #[arg(long)]
    max_pixels: Option<usize>,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    template: TemplateArgs,
    /// Print a reasoning model's thinking (dimmed on a terminal) instead of hiding it.
    #[arg(long)]
    show_thinking: bool,
}

impl ChatArgs {
    pub fn run(self) -> Result<()> {
        let loaded = self.model.load()?;
        let media = TurnMedia {
            fps: self.fps,
            max_pixels: self.max_pixels,
            ..Default::default()
        };
        let request = (self.sampling.params(), self.template.kwargs());
        run_chat(&loaded, request, &media, self.show_thinking)
    }
}

/// A request's settings: how to sample, and the chat template's keyword arguments.
pub type RequestSettings = (SamplingParams, serde_json::Map<String, Json>);

/// Prints an answer's parts as they stream: the content, and the reasoning dimmed (on a
/// terminal) when `show`; counts what it hides.
struct Printer {
    show: bool,
    dim: bool,
    hidden: usize,
}

impl Printer {
    fn new(show: bool) -> Self {
        use std::io::IsTerminal;
        Self {
            show,
            dim: std::io::stdout().is_terminal(),
            hidden: 0,
        }
    }

    fn part(&mut self, part: Part) {
        let mut stdout = std::io::stdout();
        match part {
            Part::Content(text) => {
                let _ = write!(stdout, "{text}");
            }
            Part::Reasoning(text) if self.show && self.dim => {
                let _ = write!(stdout, "\x1b[2m{text}\x1b[0m");
            }
            Part::Reasoning(text) if self.show => {
                let _ = write!(stdout, "{text}");
            }
            Part::Reasoning(text) => self.hidden += text.chars().count(),
        }
        let _ = stdout.flush();
    }

    /// A note on stderr of the reasoning it hid, if any.
    fn finish(&self) {
        if self.hidden > 0 {
            eprintln!(
                "[thinking hidden: {} characters; --show-thinking prints it]",
                self.hidden
            );
        }
    }
}

/// Answers one question, printing the answer as it streams.
pub fn run_generate(
    loaded: &Loaded,
    media: &TurnMedia,
    prompt: &str,
    (params, template_kwargs): RequestSettings,
    show_thinking: bool,
) -> Result<()> {
    let messages = json!([user_message(media, prompt)]);
    let mut printer = Printer::new(show_thinking);
    let out = generate_parts(
        &loaded.model,
        &loaded.processor,
        &[GenerationRequest {
            messages,
            params,
            template_kwargs,
        }],
        &loaded.device,
        None,
        &mut |_, part| printer.part(part),
    )?;
    println!();
    printer.finish();
    let g = &out[0];
    let speed = match g.timing {
        Some(t) if t.decode_steps > 0 => format!(
            " (prefill {:.2} s, decode {:.1} tokens/s)",
            t.prefill_seconds,
            t.steps_per_second()
        ),
        Some(t) => format!(" (prefill {:.2} s)", t.prefill_seconds),
        None => String::new(),
    };
    eprintln!(
        "[{} prompt tokens, {} generated{speed}, finish: {}]",
        g.prompt_tokens,
        g.tokens.len(),
        g.finish_reason.as_str()
    );
    Ok(())
}

/// An interactive conversation on stdin/stdout.
pub fn run_chat(
    loaded: &Loaded,
    (params, template_kwargs): RequestSettings,
    media_template: &TurnMedia,
    show_thinking: bool,
) -> Result<()> {
    let mut messages: Vec<Json> = Vec::new();
    let mut pending = TurnMedia {
        fps: media_template.fps,
        max_pixels: media_template.max_pixels,
        ..Default::default()
    };
    eprintln!("nuri chat — /image PATH, /video PATH (attach to your next message), /reset, /exit");
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(command) = line.strip_prefix('/') {
            let (name, arg) = command.split_once(' ').unwrap_or((command, ""));
            match name {
                "exit" | "quit" => break,
                "reset" => {
                    messages.clear();
                    pending.images.clear();
                    pending.videos.clear();
                    eprintln!("(conversation cleared)");
                }
                "image" | "video" if !arg.trim().is_empty() => {
                    let path = PathBuf::from(arg.trim());
                    if !path.exists() {
                        eprintln!("{}: no such file", path.display());
                        continue;
                    }
                    if name == "image" {
                        pending.images.push(path);
                    } else {
                        pending.videos.push(path);
                    }
                    eprintln!("(attached to your next message)");
                }
                _ => eprintln!("unknown command /{name}: /image PATH, /video PATH, /reset, /exit"),
            }
            continue;
        }
        messages.push(user_message(&pending, line));
        pending.images.clear();
        pending.videos.clear();
        let request = GenerationRequest {
            messages: Json::Array(messages.clone()),
            params: params.clone(),
            template_kwargs: template_kwargs.clone(),
        };
        let mut printer = Printer::new(show_thinking);
        let result = generate_parts(
            &loaded.model,
            &loaded.processor,
            &[request],
            &loaded.device,
            None,
            &mut |_, part| printer.part(part),
        );
        println!();
        printer.finish();
        match result {
            Ok(out) => messages.push(json!({"role": "assistant", "content": out[0].text})),
            Err(e) => {
                eprintln!("error: {e}");
                messages.pop();
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_goes_after_the_media_unless_asked_first() {
        let mut media = TurnMedia {
            images: vec![PathBuf::from("a.png")],
            videos: vec![PathBuf::from("b.gif")],
            ..Default::default()
        };
        let kinds = |m: &Json| -> Vec<String> {
            m["content"]
                .as_array()
                .expect("parts")
                .iter()
                .map(|p| p["type"].as_str().unwrap_or("?").to_string())
                .collect()
        };
        assert_eq!(
            kinds(&user_message(&media, "Which way?")),
            ["image", "video", "text"]
        );
        media.text_first = true;
        assert_eq!(
            kinds(&user_message(&media, "Which way?")),
            ["text", "image", "video"]
        );
        assert_eq!(kinds(&user_message(&media, "")), ["image", "video"]);
    }
}
