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
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use burn::tensor::Device;
use nuri_model::NuriModel;
use serde_json::{Value as Json, json};
use tokio::sync::mpsc;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;

mod request;

pub use request::ApiError;
use request::{convert_messages, from_generate, params, unix_now};

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

async fn chat_completions(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match handle_chat(&state, body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn handle_chat(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let chat = parse_chat(&state.options, body)?;
    let rx = enqueue(state, chat.request)?;
    let reply = Reply {
        id: format!("chatcmpl-{:x}", rand_id()),
        created: unix_now(),
        model: state.options.model_name.clone(),
    };
    if chat.stream {
        Ok(respond_sse(rx, reply, chat.include_usage))
    } else {
        respond_json(rx, reply).await
    }
}

/// A chat-completion request, checked.
struct ChatRequest {
    request: GenerationRequest,
    stream: bool,
    /// `stream_options.include_usage`: the last chunk carries the token counts.
    include_usage: bool,
}

/// Reads and checks the body: its size, JSON, the model name, the messages and the
/// sampling fields.
fn parse_chat(
    options: &ServeOptions,
    body: Result<Bytes, BytesRejection>,
) -> Result<ChatRequest, ApiError> {
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request_too_large",
                format!("the request body is over {} bytes", options.max_body_bytes),
            )
        } else {
            ApiError::bad("invalid_body", r.body_text())
        }
    })?;
    let body: Json = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad("invalid_json", format!("the body is not valid JSON: {e}")))?;
    if !body.is_object() {
        return Err(ApiError::bad(
            "invalid_json",
            "the body must be a JSON object",
        ));
    }
    if let Some(m) = body.get("model").and_then(Json::as_str)
        && m != options.model_name
    {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "model_not_found",
            format!(
                "the model `{m}` does not exist; this server serves `{}`",
                options.model_name
            ),
        )
        .with_param("model"));
    }
    let messages = convert_messages(body.get("messages").unwrap_or(&Json::Null), options)?;
    let params = params(&body, options)?;
    Ok(ChatRequest {
        request: GenerationRequest { messages, params },
        stream: body.get("stream").and_then(Json::as_bool).unwrap_or(false),
        include_usage: body
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Json::as_bool)
            .unwrap_or(false),
    })
}

/// Queues the request for the engine (429 past the queue limit); its events arrive on the
/// returned channel.
fn enqueue(
    state: &AppState,
    request: GenerationRequest,
) -> Result<mpsc::UnboundedReceiver<Event>, ApiError> {
    let limit = state.options.queue_limit;
    if state.queued.fetch_add(1, Ordering::SeqCst) >= limit {
        state.queued.fetch_sub(1, Ordering::SeqCst);
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "queue_full",
            format!("{limit} requests are already waiting; retry later"),
        ));
    }
    let (tx, rx) = mpsc::unbounded_channel();
    state
        .jobs
        .send(Job {
            request,
            events: tx,
        })
        .map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the server is shutting down",
            )
        })?;
    Ok(rx)
}

/// What every response object of one completion repeats.
struct Reply {
    id: String,
    created: u64,
    model: String,
}

/// OpenAI's `usage` object of an answer.
fn usage(g: &Generated) -> Json {
    json!({"prompt_tokens": g.prompt_tokens, "completion_tokens": g.tokens.len(),
           "total_tokens": g.prompt_tokens + g.tokens.len()})
}

/// The whole answer as one `chat.completion` object, once it is done.
async fn respond_json(
    mut rx: mpsc::UnboundedReceiver<Event>,
    reply: Reply,
) -> Result<Response, ApiError> {
    while let Some(event) = rx.recv().await {
        match event {
            Event::Piece(_) => {}
            Event::Error(e) => return Err(e),
            Event::Done(g) => {
                let body = json!({
                    "id": reply.id, "object": "chat.completion", "created": reply.created,
                    "model": reply.model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": g.text},
                                 "logprobs": null, "finish_reason": g.finish_reason.as_str()}],
                    "usage": usage(&g),
                });
                return Ok(axum::Json(body).into_response());
            }
        }
    }
    Err(ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "engine_stopped",
        "the engine stopped",
    ))
}

/// The answer as server-sent `chat.completion.chunk` events: the role first, a chunk per
/// piece, the finish reason (and usage, when asked), then `[DONE]`; an error mid-stream is
/// sent as an error event before `[DONE]`.
fn respond_sse(rx: mpsc::UnboundedReceiver<Event>, reply: Reply, include_usage: bool) -> Response {
    let chunk = move |delta: Json, finish: Option<&str>| {
        json!({"id": reply.id, "object": "chat.completion.chunk", "created": reply.created,
               "model": reply.model,
               "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
    };
    let first = chunk(json!({"role": "assistant", "content": ""}), None);
    let sse = |v: &Json| Bytes::from(format!("data: {v}\n\n"));
    let stream = futures_util::stream::unfold(
        (Some(first), false, rx, chunk),
        move |(first, finished, mut rx, chunk)| async move {
            if let Some(first) = first {
                return Some((
                    Ok::<Bytes, std::convert::Infallible>(sse(&first)),
                    (None, false, rx, chunk),
                ));
            }
            if finished {
                return None;
            }
            let (bytes, finished) = match rx.recv().await? {
                Event::Piece(p) => (sse(&chunk(json!({"content": p}), None)), false),
                Event::Done(g) => {
                    let mut last = chunk(json!({}), Some(g.finish_reason.as_str()));
                    if include_usage {
                        last["usage"] = usage(&g);
                    }
                    (
                        Bytes::from(format!("data: {last}\n\ndata: [DONE]\n\n")),
                        true,
                    )
                }
                Event::Error(e) => (
                    Bytes::from(format!("data: {}\n\ndata: [DONE]\n\n", e.body())),
                    true,
                ),
            };
            Some((Ok(bytes), (None, finished, rx, chunk)))
        },
    );
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .expect("valid response")
}

fn rand_id() -> u64 {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) as u64;
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)
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
        .route("/v1/chat/completions", post(chat_completions))
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
