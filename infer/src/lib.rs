//! nuri-infer: generation (sampling, stop strings, streaming on UTF-8 boundaries, batched
//! rows that stop on their own) and the OpenAI-compatible HTTP server. Its inputs come from
//! `nuri-processor`; the model is `nuri-model`'s.

pub mod generate;
pub mod reasoning;
pub mod sampling;
pub mod server;

pub use generate::{
    FinishReason, GenerateError, Generated, GenerationRequest, generate, generate_limited,
    generate_parts,
};
pub use sampling::{Sampler, SamplingParams, StreamDecoder};
