//! Reading a chat-completions request: OpenAI-style errors, media URLs checked against the
//! allowed folder, messages converted to Nuri's, and the sampling settings.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use nuri_media::image::MediaError;
use serde_json::{Value as Json, json};

use super::ServeOptions;
use crate::generate::GenerateError;
use crate::sampling::SamplingParams;
use nuri_processor::ProcessorError;

/// An error as the OpenAI API reports it.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub code: &'static str,
    pub param: Option<&'static str>,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        let kind = match status {
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            StatusCode::NOT_FOUND => "not_found_error",
            s if s.is_server_error() => "server_error",
            _ => "invalid_request_error",
        };
        Self {
            status,
            message: message.into(),
            kind,
            code,
            param: None,
        }
    }

    pub(super) fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub(super) fn with_param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }

    pub(super) fn body(&self) -> Json {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

pub(super) fn from_generate(e: GenerateError) -> ApiError {
    match e {
        GenerateError::Params(m) => ApiError::bad("invalid_value", m),
        GenerateError::ContextLength { tokens, limit } => ApiError::bad(
            "context_length_exceeded",
            format!("the prompt is {tokens} tokens, over the context length of {limit}"),
        )
        .with_param("messages"),
        GenerateError::Processor(p) => {
            let message = p.to_string();
            let code = if matches!(p, ProcessorError::MediaTokens { .. }) {
                "context_length_exceeded"
            } else if matches!(p, ProcessorError::Media(MediaError::TooLarge { .. }))
                || message.contains("exceeds the limit")
            {
                "image_too_large"
            } else if message.contains("cannot decode") {
                "invalid_image"
            } else {
                "invalid_request"
            };
            ApiError::bad(code, message).with_param("messages")
        }
        GenerateError::Model(m) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "model_error", m)
        }
    }
}

pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A media URL of a request, checked: `data:` (images only), or `file://` inside the allowed
/// folder.
fn media_url(url: &str, allowed: Option<&Path>, video: bool) -> Result<String, ApiError> {
    if url.starts_with("data:") {
        if video {
            return Err(ApiError::bad(
                "invalid_url",
                "video_url must be a file:// path (started with --allow-local-media)",
            ));
        }
        return Ok(url.to_string());
    }
    if let Some(path) = url.strip_prefix("file://") {
        let Some(root) = allowed else {
            return Err(ApiError::bad(
                "local_media_disabled",
                "file:// media are refused: the server was not started with --allow-local-media",
            ));
        };
        // Outside the folder is forbidden whether or not the file exists: the answer must
        // not tell which files exist there. Inside, a missing file is a bad request.
        let forbidden = || {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "path_not_allowed",
                format!("{path} is outside the folder this server may read"),
            )
        };
        let lexical = Path::new(path);
        let climbs = lexical
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir));
        if climbs || !lexical.is_absolute() || !lexical.starts_with(root) {
            return Err(forbidden());
        }
        let resolved = std::fs::canonicalize(lexical)
            .map_err(|_| ApiError::bad("invalid_url", format!("{path}: no such file")))?;
        if !resolved.starts_with(root) {
            return Err(forbidden());
        }
        return Ok(resolved.display().to_string());
    }
    Err(ApiError::bad(
        "invalid_url",
        format!(
            "unsupported media URL `{}`: use a base64 data: URL or file://",
            url.chars().take(40).collect::<String>()
        ),
    ))
}

/// The roles a message may have.
const ROLES: [&str; 5] = ["system", "developer", "user", "assistant", "tool"];

/// OpenAI messages → Nuri's, media checked.
pub(super) fn convert_messages(messages: &Json, options: &ServeOptions) -> Result<Json, ApiError> {
    let list = messages
        .as_array()
        .filter(|l| !l.is_empty())
        .ok_or_else(|| {
            ApiError::bad("invalid_value", "`messages` must be a non-empty array")
                .with_param("messages")
        })?;
    let allowed = options.allow_local_media.as_deref();
    let mut media = 0usize;
    let mut out = Vec::with_capacity(list.len());
    for (i, message) in list.iter().enumerate() {
        let role = message.get("role").and_then(Json::as_str).ok_or_else(|| {
            ApiError::bad(
                "invalid_value",
                format!("messages[{i}].role must be a string"),
            )
            .with_param("messages")
        })?;
        if !ROLES.contains(&role) {
            return Err(ApiError::bad(
                "invalid_value",
                format!(
                    "messages[{i}].role `{role}` is not one of {}",
                    ROLES.join(", ")
                ),
            )
            .with_param("messages"));
        }
        let content = match message.get("content") {
            Some(Json::String(s)) => Json::String(s.clone()),
            None | Some(Json::Null) => Json::String(String::new()),
            Some(Json::Array(parts)) => {
                let mut converted = Vec::with_capacity(parts.len());
                for (j, part) in parts.iter().enumerate() {
                    let at = || format!("messages[{i}].content[{j}]");
                    let kind = part.get("type").and_then(Json::as_str).unwrap_or("");
                    let url = |key: &str| match part.get(key) {
                        Some(Json::String(u)) => Some(u.clone()),
                        Some(o) => o.get("url").and_then(Json::as_str).map(str::to_string),
                        None => None,
                    };
                    match kind {
                        "text" => {
                            let text =
                                part.get("text").and_then(Json::as_str).ok_or_else(|| {
                                    ApiError::bad(
                                        "invalid_type",
                                        format!("{}.text must be a string", at()),
                                    )
                                    .with_param("messages")
                                })?;
                            converted.push(json!({"type": "text", "text": text}));
                        }
                        "image_url" | "video_url" => {
                            let video = kind == "video_url";
                            let u = url(kind).ok_or_else(|| {
                                ApiError::bad(
                                    "invalid_value",
                                    format!("{}: `{kind}.url` is required", at()),
                                )
                                .with_param("messages")
                            })?;
                            media += 1;
                            if media > options.max_images {
                                return Err(ApiError::bad(
                                    "too_many_images",
                                    format!(
                                        "at most {} images or videos per request",
                                        options.max_images
                                    ),
                                )
                                .with_param("messages"));
                            }
                            let source = media_url(&u, allowed, video)?;
                            converted.push(if video {
                                json!({"type": "video", "video": source})
                            } else {
                                json!({"type": "image", "image": source})
                            });
                        }
                        other => {
                            return Err(ApiError::bad(
                                "invalid_value",
                                format!("{}: unsupported content type `{other}` (text, image_url, video_url)", at()),
                            )
                            .with_param("messages"));
                        }
                    }
                }
                Json::Array(converted)
            }
            Some(other) => {
                return Err(ApiError::bad(
                    "invalid_value",
                    format!("messages[{i}].content must be a string or an array, got {other}"),
                )
                .with_param("messages"));
            }
        };
        out.push(json!({"role": role, "content": content}));
    }
    Ok(Json::Array(out))
}

/// The sampling settings of a request (OpenAI's names, and vLLM's extras).
pub(super) fn params(body: &Json, options: &ServeOptions) -> Result<SamplingParams, ApiError> {
    let f = |key: &'static str, default: f64| -> Result<f64, ApiError> {
        match body.get(key) {
            None | Some(Json::Null) => Ok(default),
            Some(v) => v.as_f64().ok_or_else(|| {
                ApiError::bad("invalid_type", format!("`{key}` must be a number")).with_param(key)
            }),
        }
    };
    let u = |key: &'static str| -> Result<Option<u64>, ApiError> {
        match body.get(key) {
            None | Some(Json::Null) => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                ApiError::bad(
                    "invalid_type",
                    format!("`{key}` must be a non-negative integer"),
                )
                .with_param(key)
            }),
        }
    };
    if let Some(n) = u("n")?
        && n != 1
    {
        return Err(ApiError::bad("invalid_value", "only n = 1 is supported").with_param("n"));
    }
    let stop = match body.get("stop") {
        None | Some(Json::Null) => Vec::new(),
        Some(Json::String(s)) => vec![s.clone()],
        Some(Json::Array(a)) if a.iter().all(Json::is_string) => a
            .iter()
            .filter_map(Json::as_str)
            .map(str::to_string)
            .collect(),
        Some(_) => {
            return Err(ApiError::bad(
                "invalid_type",
                "`stop` must be a string or an array of strings",
            )
            .with_param("stop"));
        }
    };
    let max = u("max_completion_tokens")?
        .or(u("max_tokens")?)
        .map_or(options.default_max_tokens, |v| v as usize);
    let p = SamplingParams {
        temperature: f("temperature", 1.0)? as f32,
        top_k: u("top_k")?.unwrap_or(0) as usize,
        top_p: f("top_p", 1.0)? as f32,
        min_p: f("min_p", 0.0)? as f32,
        repetition_penalty: f("repetition_penalty", 1.0)? as f32,
        seed: u("seed")?.unwrap_or_else(unix_now),
        max_new_tokens: max,
        stop,
        max_thinking_tokens: u("max_thinking_tokens")?.map(|v| v as usize),
        ignore_eos: match body.get("ignore_eos") {
            None | Some(Json::Null) => false,
            Some(Json::Bool(b)) => *b,
            Some(_) => {
                return Err(
                    ApiError::bad("invalid_type", "`ignore_eos` must be a boolean")
                        .with_param("ignore_eos"),
                );
            }
        },
    };
    p.validate()
        .map_err(|m| ApiError::bad("invalid_value", m))?;
    Ok(p)
}
