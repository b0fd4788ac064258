//! nuri-processor: what turns a conversation into model inputs, as transformers'
//! `Qwen2VLProcessor` does: the checkpoint's `tokenizer.json` ([`tokenizer`]), its Jinja chat
//! template ([`template`]), OpenAI-style messages with image and video parts ([`messages`]),
//! and the [`Processor`] that decodes and patchifies their media (`nuri-media`), repeats each
//! visual pad once per merged token and computes the M-RoPE positions (`nuri-model`'s
//! `rope_index`). Training and inference both read their inputs through it.
//!
//! Media are read in two passes: headers first (declared sizes, frame counts, pixel bounds,
//! the decode limit, and the visual tokens of each row against
//! [`Processor::max_media_tokens`]), pixels only once those are met.

mod media;
pub mod messages;
pub mod processor;
pub mod template;
pub mod tokenizer;

use std::path::{Path, PathBuf};

use nuri_media::image::MediaError;
use nuri_model::FusionError;
use serde_json::Value as Json;
use thiserror::Error;

pub use messages::{MediaItem, MediaSource, exact_match, media_items, split_last_answer};
pub use processor::{PaddingSide, Processor, ProcessorOutput};
pub use template::{ChatTemplate, QWEN2_VL_TEMPLATE, TemplateSource};
pub use tokenizer::{SpecialTokens, TextTokenizer};

/// Why conversations could not be turned into model inputs.
#[derive(Debug, Error)]
pub enum ProcessorError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("chat template ({source_name}): {message}")]
    Template {
        source_name: String,
        message: String,
    },
    #[error("message {message}{}: {what}", part.map(|p| format!(", part {p}")).unwrap_or_default())]
    Message {
        message: usize,
        part: Option<usize>,
        what: String,
    },
    #[error("conversation {conversation}: {source}")]
    InConversation {
        conversation: usize,
        source: Box<ProcessorError>,
    },
    #[error("tokenizer: {0}")]
    Tokenize(String),
    #[error(transparent)]
    Media(#[from] MediaError),
    /// A conversation's images and videos would make more visual tokens than
    /// [`Processor::max_media_tokens`] allows; found from their headers, before decoding.
    #[error(
        "the images and videos make {tokens} visual tokens, more than the {limit} allowed (from their declared sizes and sampled frames; nothing was decoded)"
    )]
    MediaTokens { tokens: usize, limit: usize },
    #[error(transparent)]
    Fusion(FusionError),
    /// Media for a text-only model.
    #[error("this model ({family}) reads text only, but the conversation has {kind}")]
    TextOnly {
        family: &'static str,
        kind: &'static str,
    },
}

impl ProcessorError {
    /// Says which conversation of a batch the error is in (none for a single one).
    pub fn in_conversation(self, conversation: Option<usize>) -> Self {
        match conversation {
            Some(c) => ProcessorError::InConversation {
                conversation: c,
                source: Box::new(self),
            },
            None => self,
        }
    }
}

/// A processor file's JSON, or `None` when the checkpoint has no such file.
pub(crate) fn read_json(path: &Path) -> Result<Option<Json>, ProcessorError> {
    if !path.is_file() {
        return Ok(None);
    }
    nuri_model::read_json(path).map(Some).map_err(|e| match e {
        nuri_model::WeightsError::Io { path, source } => ProcessorError::Io { path, source },
        nuri_model::WeightsError::Json { path, source } => ProcessorError::Config {
            path,
            message: format!("invalid JSON: {source}"),
        },
        other => ProcessorError::Config {
            path: path.to_path_buf(),
            message: other.to_string(),
        },
    })
}
