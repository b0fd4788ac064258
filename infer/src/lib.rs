//! nuri-infer: the processor (chat template + tokenizer + media → model inputs), generation
//! and sampling, streaming, batching, and the HTTP server.

pub mod generate;
pub mod messages;
pub mod processor;
pub mod sampling;
pub mod server;
pub mod template;
pub mod tokenizer;

use std::path::PathBuf;

use nuri_encoders::image::MediaError;
use nuri_model::FusionError;
use thiserror::Error;

pub use generate::{
    FinishReason, GenerateError, Generated, GenerationRequest, generate, generate_limited,
};
pub use messages::{MediaItem, MediaSource, media_items, split_last_answer};
pub use processor::{PaddingSide, Processor, ProcessorOutput};
pub use sampling::{Sampler, SamplingParams, StreamDecoder};
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
    #[error(transparent)]
    Fusion(FusionError),
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
