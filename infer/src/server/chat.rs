//! `POST /v1/chat/completions`: the request read and checked, queued for the engine, and
//! answered as one JSON object or as server-sent events.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value as Json, json};
use tokio::sync::mpsc;

use super::request::{ApiError, convert_messages, params, unix_now};
use super::{AppState, Event, Job, ServeOptions};
use crate::generate::{Generated, GenerationRequest};

pub(super) async fn chat_completions(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match handle_chat(&state, body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

pub(super) async fn handle_chat(
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
pub(super) struct ChatRequest {
    request: GenerationRequest,
    stream: bool,
    /// `stream_options.include_usage`: the last chunk carries the token counts.
    include_usage: bool,
}

/// Reads and checks the body: its size, JSON, the model name, the messages and the
/// sampling fields.
pub(super) fn parse_chat(
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
pub(super) fn enqueue(
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
pub(super) struct Reply {
    id: String,
    created: u64,
    model: String,
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

pub(super) fn rand_id() -> u64 {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) as u64;
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}
