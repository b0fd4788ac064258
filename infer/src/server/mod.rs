//! `nuri serve`: an OpenAI-compatible HTTP server. `POST /v1/chat/completions` (text,
//! `image_url` as base64 `data:` URLs or — with `--allow-local-media DIR`, inside it —
//! `file://` paths, `video_url` as vLLM accepts it; `stream: true` as server-sent events
//! ending with `[DONE]`), `GET /v1/models`, `GET /health`.
//!
//! A request is read and checked on the async side, its prompt and media are processed on
//! a small pool of blocking workers (bounded in number and in time; media sizes and token
//! counts are checked before pixels are decoded), and it then waits for the engine thread,
//! which owns the model and answers every admitted request step by step (`engine`). Past
//! `queue_limit` waiting requests the server answers 429. Every bad request gets an
//! OpenAI-style JSON error with its status, before any streaming starts.
//!
//! Connections are served by hyper directly: headers must arrive within
//! `header_timeout`, bodies within `body_timeout`, and at most `max_connections` are open
//! at once. On shutdown the server stops accepting, lets requests in flight finish for up
//! to `shutdown_timeout`, then ends them with an error and returns.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use burn::tensor::Device;
use nuri_model::NuriModel;
use serde_json::json;
use tokio::sync::{Semaphore, watch};
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;

mod chat;
mod engine;
mod listen;
mod request;

pub use request::ApiError;

use engine::{Engine, EngineStatus, Job, Limits};
use nuri_processor::Processor;

/// The server's default bound on a decoded image or video frame: 4096 × 4096 pixels
/// (Qwen2-VL resizes to at most 12.8M pixels anyway). A larger declared size is refused
/// from the file's header, before any pixel is decoded.
pub const MAX_IMAGE_PIXELS: usize = 4096 * 4096;

/// Server settings (the `nuri serve` flags).
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The name clients pass as `model`.
    pub model_name: String,
    pub max_body_bytes: usize,
    /// Most images (and videos) per request.
    pub max_images: usize,
    /// Largest decoded image or video frame, in pixels.
    pub max_image_pixels: usize,
    /// Requests waiting beyond this get 429.
    pub queue_limit: usize,
    /// Most requests decoded together.
    pub max_batch: usize,
    /// KV-cache positions the running batch may reserve: rows × the longest prompt plus
    /// answer. A single request over it still runs, alone.
    pub max_batch_tokens: usize,
    /// `file://` media are allowed only inside this folder.
    pub allow_local_media: Option<PathBuf>,
    /// Longest prompt plus answer, in tokens; `max_tokens` is clamped to what the prompt
    /// leaves of it.
    pub context_length: usize,
    /// `max_tokens` when a request gives none.
    pub default_max_tokens: usize,
    /// Requests whose prompt and media are processed at once (the worker pool).
    pub media_workers: usize,
    /// Longest time a request's prompt and media may take to process.
    pub media_timeout: Duration,
    /// Longest time for a request's headers to arrive.
    pub header_timeout: Duration,
    /// Longest time for a request's body to arrive.
    pub body_timeout: Duration,
    /// Most connections open at once; beyond, new ones get 503 and are closed.
    pub max_connections: usize,
    /// After a shutdown signal, how long requests in flight may go on before they are ended
    /// with an error.
    pub shutdown_timeout: Duration,
    /// `/health` answers 503 when the engine has work but has not begun a turn for this
    /// long.
    pub stall_timeout: Duration,
    /// Test hook: a request whose text contains this makes the engine panic.
    #[doc(hidden)]
    pub panic_marker: Option<String>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            model_name: "nuri".into(),
            max_body_bytes: 20 << 20,
            max_images: 8,
            max_image_pixels: MAX_IMAGE_PIXELS,
            queue_limit: 64,
            max_batch: 8,
            max_batch_tokens: 32_768,
            allow_local_media: None,
            context_length: 32_768,
            default_max_tokens: 256,
            media_workers: 2,
            media_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 256,
            shutdown_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(60),
            panic_marker: None,
        }
    }
}

pub(crate) struct AppState {
    options: ServeOptions,
    processor: Arc<Processor>,
    jobs: std_mpsc::Sender<Job>,
    queued: Arc<AtomicUsize>,
    workers: Arc<Semaphore>,
    status: Arc<EngineStatus>,
}

async fn models(State(state): State<Arc<AppState>>) -> Response {
    axum::Json(json!({"object": "list", "data": [{"id": state.options.model_name, "object": "model", "created": 0, "owned_by": "nuri"}]})).into_response()
}

/// The engine's state: 200 while it serves, 503 when it has stopped or has had work
/// without beginning a turn for `stall_timeout`.
async fn health(State(state): State<Arc<AppState>>) -> Response {
    let s = &state.status;
    let since = s.since_beat();
    let busy = s.busy.load(Ordering::SeqCst);
    let (code, status) = if s.stopped.load(Ordering::SeqCst) {
        (StatusCode::SERVICE_UNAVAILABLE, "stopped")
    } else if busy && since > state.options.stall_timeout {
        (StatusCode::SERVICE_UNAVAILABLE, "stalled")
    } else {
        (StatusCode::OK, "ok")
    };
    let body = json!({
        "status": status,
        "running": s.running.load(Ordering::SeqCst),
        "waiting": s.waiting.load(Ordering::SeqCst),
        "queued": state.queued.load(Ordering::SeqCst),
        "batch_tokens": s.batch_tokens.load(Ordering::SeqCst),
        "peak_batch_tokens": s.peak_batch_tokens.load(Ordering::SeqCst),
        "max_batch_tokens": state.options.max_batch_tokens,
        "engine_restarts": s.restarts.load(Ordering::SeqCst),
        "last_turn_ms_ago": since.as_millis() as u64,
    });
    (code, axum::Json(body)).into_response()
}

async fn not_found() -> Response {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route").into_response()
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl Server {
    /// Stops accepting requests, lets the ones in flight finish (up to the shutdown
    /// timeout), and waits.
    pub fn stop(mut self) -> std::io::Result<()> {
        let _ = self.shutdown.send(true);
        self.join()
    }

    /// Serves until SIGINT or SIGTERM (when started `until_signal`), then shuts down.
    pub fn wait(mut self) -> std::io::Result<()> {
        self.join()
    }

    fn join(&mut self) -> std::io::Result<()> {
        match self.thread.take() {
            Some(t) => t.join().unwrap_or(Ok(())),
            None => Ok(()),
        }
    }
}

/// Starts the engine thread and the HTTP server on `addr` (port 0 picks one); returns once
/// it listens. With `until_signal`, SIGINT/SIGTERM start the shutdown.
pub fn start(
    model: NuriModel,
    mut processor: Processor,
    device: Device,
    options: ServeOptions,
    addr: SocketAddr,
    until_signal: bool,
) -> std::io::Result<Server> {
    processor.decode_limit = options.max_image_pixels;
    // Media whose visual tokens alone would overflow the context are refused from their
    // headers, before any pixel is decoded.
    processor.max_media_tokens = Some(options.context_length);

    let processor = Arc::new(processor);
    let (jobs, rx) = std_mpsc::channel();
    let status = Arc::new(EngineStatus::new());
    let limits = Limits {
        max_batch: options.max_batch.max(1),
        max_batch_tokens: options.max_batch_tokens,
    };
    let engine = Engine::new(model, processor.clone(), device, limits, rx, status.clone());
    let engine = std::thread::Builder::new()
        .name("nuri-engine".into())
        .spawn(move || engine.run())?;
    let state = Arc::new(AppState {
        options: options.clone(),
        processor,
        jobs,
        queued: Arc::new(AtomicUsize::new(0)),
        workers: Arc::new(Semaphore::new(options.media_workers.max(1))),
        status: status.clone(),
    });
    let app = Router::new()
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .fallback(not_found)
        // One `info` span and event per request: method, path, status and latency.
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .with_state(state);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind(addr))?;
    let addr = listener.local_addr()?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let thread = std::thread::Builder::new()
        .name("nuri-http".into())
        .spawn(move || {
            let result = runtime.block_on(listen::serve(
                listener,
                app,
                &options,
                shutdown_rx,
                until_signal,
                &status,
            ));
            // The engine has been told to end what it still holds; wait for it briefly.
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while !engine.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            result
        })?;
    Ok(Server {
        addr,
        shutdown,
        thread: Some(thread),
    })
}
