//! `nuri serve`: the model behind an OpenAI-compatible HTTP API until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use nuri_infer::server::{ServeOptions, start};

use crate::cli::ModelArgs;

/// `nuri serve`'s flags.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long, default_value = "127.0.0.1:8000")]
    addr: SocketAddr,
    /// The `model` name clients use (default: the directory's name).
    #[arg(long)]
    served_model_name: Option<String>,
    /// Allow `file://` media inside this folder (and nowhere else).
    #[arg(long)]
    allow_local_media: Option<PathBuf>,
    #[arg(long, default_value_t = 20 << 20)]
    max_body_bytes: usize,
    /// Most images and videos per request.
    #[arg(long, default_value_t = 8)]
    max_images: usize,
    /// Largest decoded image or video frame, in pixels.
    #[arg(long, default_value_t = nuri_infer::server::MAX_IMAGE_PIXELS)]
    max_image_pixels: usize,
    /// Waiting requests beyond this get 429.
    #[arg(long, default_value_t = 64)]
    queue_limit: usize,
    /// Most requests decoded together.
    #[arg(long, default_value_t = 8)]
    max_batch: usize,
    /// KV-cache positions the running batch may reserve (rows × the longest prompt plus
    /// answer); a longer request still runs, alone. Bounds the engine's memory.
    #[arg(long, default_value_t = 32_768)]
    max_batch_tokens: usize,
    /// Longest prompt plus answer, in tokens (`max_tokens` is clamped to what is left).
    #[arg(long, default_value_t = 32_768)]
    context_length: usize,
    /// `max_tokens` when a request gives none.
    #[arg(long, default_value_t = 256)]
    default_max_tokens: usize,
    /// Requests whose prompt and media are processed at once.
    #[arg(long, default_value_t = 2)]
    media_workers: usize,
    /// Seconds a request's media may take to decode.
    #[arg(long, default_value_t = 30.0)]
    media_timeout: f64,
    /// Seconds for a request's headers to arrive.
    #[arg(long, default_value_t = 10.0)]
    header_timeout: f64,
    /// Seconds for a request's body to arrive.
    #[arg(long, default_value_t = 30.0)]
    body_timeout: f64,
    /// Most connections open at once (beyond: 503).
    #[arg(long, default_value_t = 256)]
    max_connections: usize,
    /// Seconds requests in flight may go on after SIGTERM/SIGINT before they are ended
    /// with an error and the server exits.
    #[arg(long, default_value_t = 30.0)]
    shutdown_timeout: f64,
}

/// `seconds` as a duration, refusing what is negative or not finite.
fn seconds(flag: &str, seconds: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(seconds)
        .map_err(|_| anyhow::anyhow!("--{flag} must be a non-negative number of seconds"))
}

impl ServeArgs {
    pub fn run(self) -> Result<()> {
        let name = self.served_model_name.unwrap_or_else(|| {
            self.model
                .model
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "nuri".into())
        });
        let allow_local_media = self
            .allow_local_media
            .map(|d| {
                std::fs::canonicalize(&d)
                    .with_context(|| format!("--allow-local-media {}", d.display()))
            })
            .transpose()?;
        let loaded = self.model.load()?;
        let options = ServeOptions {
            model_name: name.clone(),
            max_body_bytes: self.max_body_bytes,
            max_images: self.max_images,
            max_image_pixels: self.max_image_pixels,
            queue_limit: self.queue_limit,
            max_batch: self.max_batch,
            allow_local_media,
            max_batch_tokens: self.max_batch_tokens,
            context_length: self.context_length,
            default_max_tokens: self.default_max_tokens,
            media_workers: self.media_workers,
            media_timeout: seconds("media-timeout", self.media_timeout)?,
            header_timeout: seconds("header-timeout", self.header_timeout)?,
            body_timeout: seconds("body-timeout", self.body_timeout)?,
            max_connections: self.max_connections,
            shutdown_timeout: seconds("shutdown-timeout", self.shutdown_timeout)?,
            ..ServeOptions::default()
        };
        let server = start(
            loaded.model,
            loaded.processor,
            loaded.device,
            options,
            self.addr,
            true,
        )?;
        tracing::info!(
            "serving `{name}` on http://{} (Ctrl-C to stop)",
            server.addr
        );
        server.wait()?;
        tracing::info!("stopped");
        Ok(())
    }
}
