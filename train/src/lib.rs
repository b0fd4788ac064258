//! nuri-train: datasets of JSONL conversations, batching and loss masks, the training loop,
//! optimizer groups and schedules, checkpoints and resume, metrics and evaluation.
