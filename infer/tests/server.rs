//! The HTTP server on 127.0.0.1 with a random tiny model: plain and streamed completions, an
//! image as a data URL, 32 concurrent requests, and every bad-request case with its status.

use std::time::Instant;

use base64::Engine;
use nuri_infer::server::{ServeOptions, Server};
use serde_json::{Value, json};

mod common;
use common::{ask, chat, chat_streamed, data_url, fixtures, http, server};

#[test]
fn completions_plain_streamed_with_an_image_and_32_at_once() {
    let server = server(ServeOptions::default());
    let addr = server.addr;
    assert_eq!(http(addr, "GET", "/health", b"").0, 200);
    let (status, models) = http(addr, "GET", "/v1/models", b"");
    assert_eq!(status, 200);
    assert!(models.contains("\"nuri\""), "{models}");

    let (status, plain) = chat(addr, &ask("안녕하세요?"));
    assert_eq!(status, 200, "{plain}");
    let content = plain["choices"][0]["message"]["content"]
        .as_str()
        .expect("content")
        .to_string();
    assert!(plain["usage"]["completion_tokens"].as_u64().expect("usage") <= 6);

    // The same request streamed: chunks whose deltas add up to the same answer, then [DONE].
    let (status, text) = chat_streamed(addr, &ask("안녕하세요?"));
    assert_eq!(status, 200);
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.last(), Some(&"data: [DONE]"), "{text}");
    let mut streamed = String::new();
    for e in &events[..events.len() - 1] {
        let v: Value = serde_json::from_str(e.strip_prefix("data: ").expect("data")).expect("json");
        assert_eq!(v["object"], "chat.completion.chunk");
        if let Some(piece) = v["choices"][0]["delta"]["content"].as_str() {
            streamed.push_str(piece);
        }
    }
    assert_eq!(streamed, content);

    let image = json!({"model": "nuri", "temperature": 0, "max_tokens": 4, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(&fixtures().join("images/rgb_odd.png"))}},
        {"type": "text", "text": "What is in this picture?"}]}]});
    let (status, v) = chat(addr, &image);
    assert_eq!(status, 200, "{v}");
    assert!(
        v["usage"]["prompt_tokens"].as_u64().expect("usage") > 20,
        "the image's tokens count"
    );
    // vLLM's `chat_template_kwargs` reach the template: Qwen2-VL's numbers the picture.
    let mut numbered = image.clone();
    numbered["chat_template_kwargs"] = json!({"add_vision_id": true});
    let (status, n) = chat(addr, &numbered);
    assert_eq!(status, 200, "{n}");
    let tokens = |v: &Value| v["usage"]["prompt_tokens"].as_u64().expect("usage");
    assert!(tokens(&n) > tokens(&v), "{n} against {v}");

    let started = Instant::now();
    let handles: Vec<_> = (0..32)
        .map(|i| std::thread::spawn(move || chat(addr, &ask(&format!("question {i}"))).0))
        .collect();
    let statuses: Vec<u16> = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    let seconds = started.elapsed().as_secs_f64();
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    eprintln!(
        "32 concurrent requests in {seconds:.2} s: {:.1} requests/s",
        32.0 / seconds
    );
    server.stop().expect("stops");
}

#[test]
fn bad_requests_get_openai_errors_with_their_status() {
    let media = std::env::temp_dir().join(format!("nuri-serve-media-{}", std::process::id()));
    std::fs::create_dir_all(&media).expect("mkdir");
    std::fs::copy(fixtures().join("images/gray.png"), media.join("gray.png")).expect("copy");
    let media = std::fs::canonicalize(&media).expect("canonical");
    let server = server(ServeOptions {
        max_images: 2,
        max_image_pixels: 2000,
        context_length: 60,
        max_body_bytes: 1 << 20,
        allow_local_media: Some(media.clone()),
        ..Default::default()
    });
    let addr = server.addr;
    let image_part = |url: String| json!({"type": "image_url", "image_url": {"url": url}});
    let with_parts = |parts: Vec<Value>| json!({"model": "nuri", "max_tokens": 2, "messages": [{"role": "user", "content": parts}]});
    let garbage = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(b"not an image")
    );
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("malformed JSON", b"{\"messages\": [".to_vec(), 400, "invalid_json"),
        ("unknown model", json!({"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}).to_string().into_bytes(), 404, "model_not_found"),
        ("undecodable image", with_parts(vec![image_part(garbage)]).to_string().into_bytes(), 400, "invalid_image"),
        ("oversized image", with_parts(vec![image_part(data_url(&fixtures().join("images/wide_300x200.png")))]).to_string().into_bytes(), 400, "image_too_large"),
        ("too many images", with_parts(vec![image_part(format!("file://{}", media.join("gray.png").display())); 3]).to_string().into_bytes(), 400, "too_many_images"),
        ("prompt over the context", json!({"model": "nuri", "messages": [{"role": "user", "content": "word ".repeat(200)}]}).to_string().into_bytes(), 400, "context_length_exceeded"),
        ("a path outside the allowed folder", with_parts(vec![image_part(format!("file://{}", fixtures().join("images/gray.png").display()))]).to_string().into_bytes(), 403, "path_not_allowed"),
        ("an http URL", with_parts(vec![image_part("https://example.com/a.png".into())]).to_string().into_bytes(), 400, "invalid_url"),
        ("a body over the limit", vec![b' '; 2 << 20], 413, "request_too_large"),
        ("no messages", json!({"model": "nuri"}).to_string().into_bytes(), 400, "invalid_value"),
        ("bad top_p", json!({"top_p": 0, "messages": [{"role": "user", "content": "hi"}]}).to_string().into_bytes(), 400, "invalid_value"),
        ("a negative thinking budget", json!({"max_thinking_tokens": -1, "messages": [{"role": "user", "content": "hi"}]}).to_string().into_bytes(), 400, "invalid_type"),
        ("template arguments not an object", json!({"chat_template_kwargs": true, "messages": [{"role": "user", "content": "hi"}]}).to_string().into_bytes(), 400, "invalid_type"),
    ];
    for (name, body, want_status, want_code) in cases {
        let (status, text) = http(addr, "POST", "/v1/chat/completions", &body);
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert_eq!(status, want_status, "{name}: {text}");
        assert_eq!(v["error"]["code"], want_code, "{name}: {text}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{name}"
        );
    }
    // A local file inside the allowed folder is fine.
    let ok = with_parts(vec![
        image_part(format!("file://{}", media.join("gray.png").display())),
        json!({"type": "text", "text": "hi"}),
    ]);
    let (status, v) = chat(addr, &ok);
    assert_eq!(status, 200, "{v}");
    server.stop().expect("stops");

    // Past the queue limit: 429.
    let full = server_with_no_queue();
    let (status, v) = chat(full.addr, &ask("hi"));
    assert_eq!(status, 429, "{v}");
    assert_eq!(v["error"]["type"], "rate_limit_error");
    full.stop().expect("stops");
    let _ = std::fs::remove_dir_all(media);
}

fn server_with_no_queue() -> Server {
    server(ServeOptions {
        queue_limit: 0,
        ..Default::default()
    })
}
