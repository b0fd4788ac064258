//! nuri-train: datasets of JSONL conversations, batching and loss masks, the training loop,
//! optimizer groups and schedules, checkpoints and resume, metrics.

pub mod checkpoint;
pub mod collate;
pub mod config;
pub mod data;
pub mod eval;
mod feed;
pub mod loss;
pub mod optim;
pub mod plot;
pub mod report;
pub mod setup;
pub mod trainer;

use std::path::PathBuf;

use thiserror::Error;

pub use config::{BadSamplePolicy, TrainConfig};
pub use trainer::{RunSummary, Trainer, train};

/// Why a training run stopped.
#[derive(Debug, Error)]
pub enum TrainError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("bad sample: {0} (data.on_bad_sample = \"fail\")")]
    BadSample(String),
    #[error("{path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error(transparent)]
    Processor(#[from] nuri_processor::ProcessorError),
    #[error("model: {0}")]
    Model(String),
    #[error(
        "step {step}: the loss (or gradient norm) is {loss}; stopping. The last checkpoint is intact — resume from it with a lower learning rate"
    )]
    NonFinite { step: usize, loss: f64 },
    #[error("{0}: no usable training samples")]
    NoData(PathBuf),
    /// Every sample failed when processed (each was reported as it failed).
    #[error(
        "{path}: none of the {samples} samples could be processed (the last: {last}); see the skipped samples reported above"
    )]
    NoUsableSample {
        path: PathBuf,
        samples: usize,
        last: String,
    },
    #[error("data loader: {0}")]
    Loader(String),
}
