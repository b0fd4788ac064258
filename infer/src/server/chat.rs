//! `POST /v1/chat/completions`: the request read and checked, queued for the engine, and
//! answered as one JSON object or as server-sent events.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value as Json, json};
use tokio::sync::mpsc;

use super::engine::{Event, Job, QueueSlot};
use super::request::{ApiError, convert_messages, from_generate, params, unix_now};
use super::{AppState, ServeOptions};
use crate::generate::{GenerateError, Generated, GenerationRequest};
use crate::reasoning::{Markers, Part, ReasoningSplit};
use nuri_processor::PaddingSide;

pub(super) async fn chat_completions(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Response {
    match handle_chat(&state, request).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

/// Reads, checks and processes the request, queues it for the engine, and answers it;
/// every error is an HTTP error before any of the answer is sent.
pub(super) async fn handle_chat(state: &AppState, request: Request) -> Result<Response, ApiError> {
    if state.status.draining.load(Ordering::SeqCst) {
        return Err(shutting_down());
    }
    let body = read_body(&state.options, request).await?;
    let chat = parse_chat(&state.options, &body)?;
    let slot = take_queue_slot(state)?;
    let (mut job, rx) = process(state, chat.request, slot).await?;
    // A model with thinking markers answers with `reasoning_content` beside `content`; the
    // answer starts inside a block when the generation prompt opened one.
    let tokenizer = &state.processor.tokenizer;
    let reasoning = crate::reasoning::tokenizer_markers(tokenizer).map(|found| {
        let inside = crate::reasoning::prompt_opens_block(tokenizer, &job.prompt, &found);
        job.thinking = Some((found.1, inside));
        (found.0, inside)
    });
    state.jobs.send(job).map_err(|_| shutting_down())?;
    let reply = Reply {
        id: format!("chatcmpl-{:x}", rand_id()),
        created: unix_now(),
        model: state.options.model_name.clone(),
        reasoning,
    };
    if chat.stream {
        Ok(respond_sse(rx, reply, chat.include_usage))
    } else {
        respond_json(rx, reply).await
    }
}

fn shutting_down() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "shutting_down",
        "the server is shutting down",
    )
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "request_too_large",
        format!("the request body is over {limit} bytes"),
    )
}

/// The body, refused before reading when its declared length is over the limit, and read
/// within `body_timeout`.
async fn read_body(options: &ServeOptions, request: Request) -> Result<Bytes, ApiError> {
    let limit = options.max_body_bytes;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    let read = axum::body::to_bytes(request.into_body(), limit);
    match tokio::time::timeout(options.body_timeout, read).await {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!(
                "the request body did not arrive within {} s",
                options.body_timeout.as_secs()
            ),
        )),
        Ok(Err(e)) => {
            let length_limit = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if length_limit {
                Err(too_large(limit))
            } else {
                Err(ApiError::bad(
                    "invalid_body",
                    format!("cannot read the body: {e}"),
                ))
            }
        }
        Ok(Ok(bytes)) => Ok(bytes),
    }
}

/// A place in the queue (429 past the queue limit).
fn take_queue_slot(state: &AppState) -> Result<QueueSlot, ApiError> {
    let limit = state.options.queue_limit;
    if state.queued.fetch_add(1, Ordering::SeqCst) >= limit {
        state.queued.fetch_sub(1, Ordering::SeqCst);
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "queue_full",
            format!("{limit} requests are already waiting; retry later"),
        ));
    }
    Ok(QueueSlot(state.queued.clone()))
}

/// Renders, tokenizes and decodes the media of a request on the worker pool (within
/// `media_timeout`), checks its length against the context and clamps its answer to what
/// the context leaves. Returns the engine's job and the channel its events arrive on.
async fn process(
    state: &AppState,
    request: GenerationRequest,
    slot: QueueSlot,
) -> Result<(Job, mpsc::UnboundedReceiver<Event>), ApiError> {
    let options = &state.options;
    let permit = state
        .workers
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| shutting_down())?;
    let processor = state.processor.clone();
    let messages = request.messages.clone();
    let kwargs = request.template_kwargs.clone();
    let work = tokio::task::spawn_blocking(move || {
        let out = processor.process_with(&[messages], &[kwargs], true, PaddingSide::Left);
        drop(permit);
        out
    });
    let out = match tokio::time::timeout(options.media_timeout, work).await {
        Err(_) => {
            return Err(ApiError::bad(
                "media_timeout",
                format!(
                    "the request's media took over {} s to process",
                    options.media_timeout.as_secs()
                ),
            )
            .with_param("messages"));
        }
        Ok(Err(_)) => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "processing_failed",
                "processing this request failed",
            ));
        }
        Ok(Ok(out)) => out.map_err(|e| from_generate(GenerateError::Processor(e)))?,
    };
    let prompt: Vec<u32> = out.input_ids.iter().map(|&t| t as u32).collect();
    let limit = options.context_length;
    if prompt.len() >= limit {
        return Err(from_generate(GenerateError::ContextLength {
            tokens: prompt.len(),
            limit,
        }));
    }
    let mut params = request.params;
    params.max_new_tokens = params.max_new_tokens.min(limit - prompt.len());
    let panic = options
        .panic_marker
        .as_ref()
        .is_some_and(|m| request.messages.to_string().contains(m.as_str()));
    let (events, rx) = mpsc::unbounded_channel();
    let job = Job {
        input: out,
        params,
        prompt,
        events,
        slot,
        panic,
        thinking: None,
    };
    Ok((job, rx))
}

/// A chat-completion request, checked.
pub(super) struct ChatRequest {
    request: GenerationRequest,
    stream: bool,
    /// `stream_options.include_usage`: the last chunk carries the token counts.
    include_usage: bool,
}

/// `body[key]` as a boolean, `false` when absent or null; 400 naming it otherwise.
fn flag(body: &Json, key: &'static str) -> Result<bool, ApiError> {
    match body.get(key) {
        None | Some(Json::Null) => Ok(false),
        Some(Json::Bool(b)) => Ok(*b),
        Some(other) => Err(ApiError::bad(
            "invalid_type",
            format!("`{key}` must be a boolean, got {other}"),
        )
        .with_param(key)),
    }
}

/// Checks the body: JSON, the model name, the messages and the sampling fields, each of
/// the type the API gives it.
pub(super) fn parse_chat(options: &ServeOptions, body: &[u8]) -> Result<ChatRequest, ApiError> {
    let body: Json = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad("invalid_json", format!("the body is not valid JSON: {e}")))?;
    if !body.is_object() {
        return Err(ApiError::bad(
            "invalid_json",
            "the body must be a JSON object",
        ));
    }
    match body.get("model") {
        None | Some(Json::Null) => {}
        Some(Json::String(m)) if *m == options.model_name => {}
        Some(Json::String(m)) => {
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
        Some(other) => {
            return Err(ApiError::bad(
                "invalid_type",
                format!("`model` must be a string, got {other}"),
            )
            .with_param("model"));
        }
    }
    let messages = convert_messages(body.get("messages").unwrap_or(&Json::Null), options)?;
    let params = params(&body, options)?;
    let include_usage = match body.get("stream_options") {
        None | Some(Json::Null) => false,
        Some(o @ Json::Object(_)) => flag(o, "include_usage")?,
        Some(other) => {
            return Err(ApiError::bad(
                "invalid_type",
                format!("`stream_options` must be an object, got {other}"),
            )
            .with_param("stream_options"));
        }
    };
    // vLLM's field: keyword arguments for the chat template (`enable_thinking`, …).
    let template_kwargs = match body.get("chat_template_kwargs") {
        None | Some(Json::Null) => serde_json::Map::new(),
        Some(Json::Object(o)) => o.clone(),
        Some(other) => {
            return Err(ApiError::bad(
                "invalid_type",
                format!("`chat_template_kwargs` must be an object, got {other}"),
            )
            .with_param("chat_template_kwargs"));
        }
    };
    Ok(ChatRequest {
        request: GenerationRequest {
            messages,
            params,
            template_kwargs,
        },
        stream: flag(&body, "stream")?,
        include_usage,
    })
}

/// What every response object of one completion repeats.
pub(super) struct Reply {
    id: String,
    created: u64,
    model: String,
    /// The model's thinking markers, and whether the answer starts inside a block.
    reasoning: Option<(Markers, bool)>,
}

/// OpenAI's `usage` object of an answer.
pub(super) fn usage(g: &Generated) -> Json {
    json!({"prompt_tokens": g.prompt_tokens, "completion_tokens": g.tokens.len(),
           "total_tokens": g.prompt_tokens + g.tokens.len()})
}

/// The whole answer as one `chat.completion` object, once it is done.
pub(super) async fn respond_json(
    mut rx: mpsc::UnboundedReceiver<Event>,
    reply: Reply,
) -> Result<Response, ApiError> {
    while let Some(event) = rx.recv().await {
        match event {
            Event::Piece(_) => {}
            Event::Error(e) => return Err(e),
            Event::Done(g) => {
                let mut message = json!({"role": "assistant", "content": g.text});
                if let Some((markers, inside)) = reply.reasoning {
                    let (reasoning, content) = ReasoningSplit::split(markers, inside, &g.text);
                    message["content"] = json!(content);
                    message["reasoning_content"] = json!(reasoning);
                }
                let body = json!({
                    "id": reply.id, "object": "chat.completion", "created": reply.created,
                    "model": reply.model,
                    "choices": [{"index": 0, "message": message,
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
pub(super) fn respond_sse(
    rx: mpsc::UnboundedReceiver<Event>,
    reply: Reply,
    include_usage: bool,
) -> Response {
    let chunk = move |delta: Json, finish: Option<&str>| {
        json!({"id": reply.id, "object": "chat.completion.chunk", "created": reply.created,
               "model": reply.model,
               "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
    };
    let first = chunk(json!({"role": "assistant", "content": ""}), None);
    let sse = |v: &Json| Bytes::from(format!("data: {v}\n\n"));
    // The answer's text as deltas: `reasoning_content` and `content` apart (vLLM's fields)
    // for a model with thinking markers, all `content` otherwise.
    let split = reply
        .reasoning
        .map(|(markers, inside)| ReasoningSplit::new(markers, inside));
    let stream = futures_util::stream::unfold(
        (Some(first), false, rx, chunk, split),
        move |(first, finished, mut rx, chunk, mut split)| async move {
            if let Some(first) = first {
                return Some((
                    Ok::<Bytes, std::convert::Infallible>(sse(&first)),
                    (None, false, rx, chunk, split),
                ));
            }
            if finished {
                return None;
            }
            let (bytes, finished) = match rx.recv().await? {
                Event::Piece(p) => {
                    let parts = match &mut split {
                        Some(s) => s.push(&p),
                        None => vec![Part::Content(p)],
                    };
                    (Bytes::from(deltas(parts, &chunk)), false)
                }
                Event::Done(g) => {
                    let rest = split
                        .as_mut()
                        .map(ReasoningSplit::finish)
                        .unwrap_or_default();
                    let mut last = chunk(json!({}), Some(g.finish_reason.as_str()));
                    if include_usage {
                        last["usage"] = usage(&g);
                    }
                    let rest = deltas(rest, &chunk);
                    (
                        Bytes::from(format!("{rest}data: {last}\n\ndata: [DONE]\n\n")),
                        true,
                    )
                }
                Event::Error(e) => (
                    Bytes::from(format!("data: {}\n\ndata: [DONE]\n\n", e.body())),
                    true,
                ),
            };
            Some((Ok(bytes), (None, finished, rx, chunk, split)))
        },
    );
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .expect("valid response")
}

/// Server-sent events of `parts`, one chunk each.
fn deltas(parts: Vec<Part>, chunk: &impl Fn(Json, Option<&str>) -> Json) -> String {
    parts
        .into_iter()
        .map(|part| {
            let delta = match part {
                Part::Reasoning(r) => json!({"reasoning_content": r}),
                Part::Content(c) => json!({"content": c}),
            };
            format!("data: {}\n\n", chunk(delta, None))
        })
        .collect()
}

pub(super) fn rand_id() -> u64 {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) as u64;
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}
