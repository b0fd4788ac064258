//! nuri-infer: the processor (chat template + tokenizer + media → model inputs), generation
//! and sampling, streaming, batching, and the HTTP server.
