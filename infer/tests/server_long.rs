//! Two prompts near the context length at once (issue 16, item 1): both are answered, the
//! engine holds no more KV cache than its budget, and the process's peak memory stays far
//! below what a dense `[batch, 1, q, kv]` attention mask would take (its own test binary,
//! so the peak is this test's alone).

use nuri_infer::server::ServeOptions;
use serde_json::json;

mod common;
use common::{chat, health, server};

/// The process's peak resident memory, in bytes (Linux).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[test]
fn two_long_prompts_are_answered_within_the_memory_budget() {
    const CONTEXT: usize = 32_768;
    let server = server(ServeOptions {
        context_length: CONTEXT,
        max_batch_tokens: CONTEXT,
        ..Default::default()
    });
    let addr = server.addr;
    let ask = |text: &str| {
        json!({"model": "nuri", "temperature": 0, "max_tokens": 2,
               "messages": [{"role": "user", "content": text}]})
    };
    // Tokens per repetition of the filler, measured on a short prompt.
    let (_, short) = chat(addr, &ask(&"가나 ab ".repeat(100)));
    let (_, shorter) = chat(addr, &ask(&"가나 ab ".repeat(50)));
    let per = (short["usage"]["prompt_tokens"].as_u64().expect("usage")
        - shorter["usage"]["prompt_tokens"].as_u64().expect("usage")) as f64
        / 50.0;
    let repeats = ((CONTEXT - 200) as f64 / per) as usize;
    let long = "가나 ab ".repeat(repeats);
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let body = ask(&long);
            std::thread::spawn(move || chat(addr, &body))
        })
        .collect();
    for h in handles {
        let (status, v) = h.join().expect("thread");
        assert_eq!(status, 200, "{v}");
        let prompt = v["usage"]["prompt_tokens"].as_u64().expect("usage") as usize;
        assert!(prompt > CONTEXT - 400 && prompt < CONTEXT, "{prompt}");
    }
    let (_, h) = health(addr);
    let peak_tokens = h["peak_batch_tokens"].as_u64().expect("peak") as usize;
    assert!(peak_tokens <= CONTEXT, "{h}");
    let peak = peak_rss().expect("VmHWM");
    eprintln!(
        "peak resident memory {:.0} MB; peak KV positions {peak_tokens}",
        peak as f64 / 1e6
    );
    // A dense mask for two such rows is 2 × 32k × 32k bytes (2.1 GB) before it is
    // expanded over the heads and combined; chunked prefill holds a 512-row slice.
    assert!(peak < 400_000_000, "peak resident memory {peak} bytes");
    server.stop().expect("stops");
}
