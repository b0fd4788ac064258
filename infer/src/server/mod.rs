//! `nuri serve`: an OpenAI-compatible HTTP server. `POST /v1/chat/completions` (text,
//! `image_url` as base64 `data:` URLs or — with `--allow-local-media DIR`, inside it —
//! `file://` paths, `video_url` as vLLM accepts it; `stream: true` as server-sent events
//! ending with `[DONE]`), `GET /v1/models`, `GET /health`.
//!
//! One engine thread owns the model: each time it is free it takes every queued request (up
//! to `max_batch`) and answers them as one batch. Past `queue_limit` waiting requests the
//! server answers 429. Every bad request gets an OpenAI-style JSON error with its status.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use burn::tensor::Device;
use nuri_model::NuriModel;
use serde_json::json;
use tokio::sync::mpsc;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;

mod chat;
mod request;

pub use request::ApiError;
use request::from_generate;

use crate::generate::{Generated, GenerationRequest, generate_limited};
use nuri_processor::Processor;

/// Server settings (the `nuri serve` flags).
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The name clients pass as `model`.
    pub model_name: String,
    pub max_body_bytes: usize,
    /// Most images (and videos) per request.
    pub max_images: usize,
    /// Largest decoded image, in pixels.
    pub max_image_pixels: usize,
    /// Requests waiting beyond this get 429.
    pub queue_limit: usize,
    /// Most requests answered in one batch.
    pub max_batch: usize,
    /// `file://` media are allowed only inside this folder.
    pub allow_local_media: Option<PathBuf>,
    /// Longest prompt, in tokens.
    pub context_length: usize,
    /// `max_tokens` when a request gives none.
    pub default_max_tokens: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            model_name: "nuri".into(),
            max_body_bytes: 20 << 20,
            max_images: 8,
            max_image_pixels: nuri_media::image::DEFAULT_DECODE_LIMIT,
            queue_limit: 64,
            max_batch: 8,
            allow_local_media: None,
            context_length: 32_768,
            default_max_tokens: 256,
        }
    }
}

/// What the engine tells a waiting request.
enum Event {
    Piece(String),
    Done(Generated),
    Error(ApiError),
}

struct Job {
    request: GenerationRequest,
    events: mpsc::UnboundedSender<Event>,
}

struct AppState {
    options: ServeOptions,
    jobs: std_mpsc::Sender<Job>,
    queued: Arc<AtomicUsize>,
}

/// Answers `jobs` as one batch; when the batch fails before generating (one bad image),
/// each request is answered alone so only the bad one gets the error.
fn run_batch(
    model: &NuriModel,
    processor: &Processor,
    device: &Device,
    limit: usize,
    jobs: Vec<Job>,
) {
    let requests: Vec<GenerationRequest> = jobs.iter().map(|j| j.request.clone()).collect();
    let result = generate_limited(
        model,
        processor,
        &requests,
        device,
        Some(limit),
        &mut |row, piece| {
            let _ = jobs[row].events.send(Event::Piece(piece.to_string()));
        },
    );
    match result {
        Ok(outs) => {
            for (job, out) in jobs.iter().zip(outs) {
                tracing::debug!(
                    prompt_tokens = out.prompt_tokens,
                    completion_tokens = out.tokens.len(),
                    finish = out.finish_reason.as_str(),
                    "answered"
                );
                let _ = job.events.send(Event::Done(out));
            }
        }
        Err(e) if jobs.len() > 1 => {
            tracing::debug!(
                "a batch of {} failed ({e}); answering each alone",
                jobs.len()
            );
            for job in jobs {
                run_batch(model, processor, device, limit, vec![job]);
            }
        }
        Err(e) => {
            tracing::info!("request refused: {e}");
            let _ = jobs[0].events.send(Event::Error(from_generate(e)));
        }
    }
}

fn engine(
    model: NuriModel,
    processor: Processor,
    device: Device,
    rx: std_mpsc::Receiver<Job>,
    queued: Arc<AtomicUsize>,
    max_batch: usize,
    limit: usize,
) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < max_batch.max(1) {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        queued.fetch_sub(jobs.len(), Ordering::SeqCst);
        // Requests whose client went away are dropped before any work.
        jobs.retain(|j| !j.events.is_closed());
        if !jobs.is_empty() {
            run_batch(&model, &processor, &device, limit, jobs);
        }
    }
}

async fn models(State(state): State<Arc<AppState>>) -> Response {
    axum::Json(json!({"object": "list", "data": [{"id": state.options.model_name, "object": "model", "created": 0, "owned_by": "nuri"}]})).into_response()
}

async fn health() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn not_found() -> Response {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route").into_response()
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl Server {
    /// Stops accepting requests, finishes the ones in flight, and waits.
    pub fn stop(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.thread.take() {
            Some(t) => t.join().unwrap_or(Ok(())),
            None => Ok(()),
        }
    }

    /// Serves until SIGINT or SIGTERM, then shuts down gracefully.
    pub fn wait(mut self) -> std::io::Result<()> {
        match self.thread.take() {
            Some(t) => t.join().unwrap_or(Ok(())),
            None => Ok(()),
        }
    }
}

/// Starts the engine thread and the HTTP server on `addr` (port 0 picks one); returns once
/// it listens. With `until_signal`, SIGINT/SIGTERM stop it gracefully.
pub fn start(
    model: NuriModel,
    mut processor: Processor,
    device: Device,
    options: ServeOptions,
    addr: SocketAddr,
    until_signal: bool,
) -> std::io::Result<Server> {
    processor.decode_limit = options.max_image_pixels;
    let (jobs, rx) = std_mpsc::channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let engine_queued = queued.clone();
    let (max_batch, limit) = (options.max_batch, options.context_length);
    std::thread::spawn(move || {
        engine(
            model,
            processor,
            device,
            rx,
            engine_queued,
            max_batch,
            limit,
        )
    });
    let state = Arc::new(AppState {
        options: options.clone(),
        jobs,
        queued,
    });
    let app = Router::new()
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(options.max_body_bytes))
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
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        runtime.block_on(async move {
            let shutdown = async move {
                if until_signal {
                    let terminate = async {
                        #[cfg(unix)]
                        {
                            if let Ok(mut s) = tokio::signal::unix::signal(
                                tokio::signal::unix::SignalKind::terminate(),
                            ) {
                                s.recv().await;
                            }
                        }
                        #[cfg(not(unix))]
                        std::future::pending::<()>().await;
                    };
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = terminate => {}
                        _ = rx => {}
                    }
                } else {
                    let _ = rx.await;
                }
            };
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        })
    });
    Ok(Server {
        addr,
        shutdown: Some(tx),
        thread: Some(thread),
    })
}
