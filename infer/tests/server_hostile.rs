//! The server under hostile load (issue 16): unbounded answers, clients that walk away,
//! long requests next to short ones, shutdown under load, slow and excess connections,
//! a panicking engine, probing for files, and requests of the wrong types.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use base64::Engine;
use nuri_infer::server::ServeOptions;
use serde_json::{Value, json};

mod common;
use common::{
    ask, chat, fixtures, health, http, long_stream, read_until, send, server, wait_health,
};

/// `max_tokens` far over the context is clamped to what the prompt leaves of it.
#[test]
fn max_tokens_is_clamped_to_the_context() {
    let server = server(ServeOptions {
        context_length: 64,
        ..Default::default()
    });
    let mut body = ask("hello");
    body["max_tokens"] = json!(1_000_000_000u64);
    body["temperature"] = json!(1.0);
    body["seed"] = json!(1);
    let (status, v) = chat(server.addr, &body);
    assert_eq!(status, 200, "{v}");
    let usage = &v["usage"];
    let total = usage["total_tokens"].as_u64().expect("usage");
    assert!(total <= 64, "{usage}");
    server.stop().expect("stops");
}

/// A client that walks away mid-answer stops its generation; a short request sent while a
/// long one streams is answered before the long one ends (the engine interleaves them).
#[test]
fn a_gone_client_stops_and_a_short_request_overtakes_a_long_one() {
    let server = server(ServeOptions {
        context_length: 4096,
        ..Default::default()
    });
    let addr = server.addr;
    // Walks away after the first piece.
    let mut gone = send(addr, &long_stream(4000));
    let first = read_until(&mut gone, "\"content\":\"", Duration::from_secs(30));
    assert!(first.contains("200 OK"), "{first}");
    drop(gone);
    let idle = wait_health(addr, Duration::from_secs(20), |h| h["running"] == 0);
    assert_eq!(
        idle["running"], 0,
        "the abandoned request still runs: {idle}"
    );

    // A long one streams; a short one is answered meanwhile.
    let mut long = send(addr, &long_stream(3000));
    let started = read_until(&mut long, "\"content\":\"", Duration::from_secs(30));
    assert!(started.contains("200 OK"), "{started}");
    let (status, v) = chat(addr, &ask("short"));
    assert_eq!(status, 200, "{v}");
    // The short one has left the batch; the long one still runs.
    let h = wait_health(addr, Duration::from_secs(10), |h| h["running"] == 1);
    assert_eq!(h["running"], 1, "{h}");
    let more = read_until(&mut long, "\"content\":\"", Duration::from_secs(10));
    assert!(!more.contains("[DONE]"), "the long request ended: {more}");
    drop(long);
    server.stop().expect("stops");
}

/// At the shutdown deadline, a request still streaming ends with an error event and
/// `[DONE]`, and the server stops.
#[test]
fn shutdown_ends_a_long_request_at_its_deadline() {
    let server = server(ServeOptions {
        context_length: 100_000,
        shutdown_timeout: Duration::from_millis(500),
        ..Default::default()
    });
    let mut long = send(server.addr, &long_stream(90_000));
    let started = read_until(&mut long, "\"content\":\"", Duration::from_secs(30));
    assert!(started.contains("200 OK"), "{started}");
    let stopping = Instant::now();
    let stopper = std::thread::spawn(move || server.stop());
    let rest = read_until(&mut long, "[DONE]", Duration::from_secs(30));
    assert!(rest.contains("shutting_down"), "no error event: {rest}");
    assert!(rest.contains("data: [DONE]"), "{rest}");
    stopper.join().expect("joins").expect("stops");
    assert!(stopping.elapsed() < Duration::from_secs(20));
}

/// Headers that never finish are cut off; connections past the limit get 503; a declared
/// body over the limit is refused before it is sent.
#[test]
fn slow_and_excess_connections_are_bounded() {
    let server = server(ServeOptions {
        header_timeout: Duration::from_millis(500),
        body_timeout: Duration::from_millis(500),
        max_connections: 3,
        max_body_bytes: 1 << 20,
        ..Default::default()
    });
    let addr = server.addr;
    let half = || {
        let mut s = TcpStream::connect(addr).expect("connects");
        s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
            .expect("writes");
        s
    };
    let mut held: Vec<TcpStream> = (0..3).map(|_| half()).collect();
    std::thread::sleep(Duration::from_millis(100));
    let mut extra = TcpStream::connect(addr).expect("connects");
    let answer = read_until(&mut extra, "}}", Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("overloaded"), "{answer}");
    // The half-sent requests are closed by the header timeout.
    for s in &mut held {
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
    }
    // And then there is room again. A body that never finishes: 408 at the body timeout.
    let mut s = TcpStream::connect(addr).expect("connects");
    s.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"mess",
    )
    .expect("writes");
    let answer = read_until(&mut s, "}}", Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // A body declared over the limit: 413 at once.
    let mut s = TcpStream::connect(addr).expect("connects");
    s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n\r\n{")
        .expect("writes");
    let answer = read_until(&mut s, "}}", Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    server.stop().expect("stops");
}

/// A panic in the engine fails the request it was serving with 500, `/health` reports the
/// restart, and the next request is answered.
#[test]
fn a_panicking_engine_restarts() {
    let server = server(ServeOptions {
        panic_marker: Some("PANIC-NOW".into()),
        ..Default::default()
    });
    let (status, v) = chat(server.addr, &ask("PANIC-NOW please"));
    assert_eq!(status, 500, "{v}");
    assert_eq!(v["error"]["code"], "engine_error");
    let (status, h) = health(server.addr);
    assert_eq!(
        (status, h["engine_restarts"].clone()),
        (200, json!(1)),
        "{h}"
    );
    assert_eq!(h["status"], "ok");
    let (status, v) = chat(server.addr, &ask("and now?"));
    assert_eq!(status, 200, "{v}");
    server.stop().expect("stops");
}

/// Outside the allowed folder, an existing and a missing file get the same answer.
#[test]
fn local_paths_outside_the_folder_tell_nothing() {
    let media = std::env::temp_dir().join(format!("nuri-leak-{}", std::process::id()));
    std::fs::create_dir_all(&media).expect("mkdir");
    let media = std::fs::canonicalize(&media).expect("canonical");
    let server = server(ServeOptions {
        allow_local_media: Some(media.clone()),
        ..Default::default()
    });
    let part = |path: String| {
        json!({"model": "nuri", "max_tokens": 1, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": format!("file://{path}")}}]}]})
    };
    let existing = fixtures().join("images/gray.png");
    let probes = [
        existing.display().to_string(),
        "/nonexistent/secret.png".to_string(),
        format!("{}/../{}", media.display(), "gray.png"),
        format!("{}/../does-not-exist.png", media.display()),
    ];
    let answers: Vec<(u16, Value)> = probes
        .iter()
        .map(|p| chat(server.addr, &part(p.clone())))
        .collect();
    for (status, v) in &answers {
        assert_eq!(*status, 403, "{v}");
        assert_eq!(v["error"]["code"], "path_not_allowed");
    }
    server.stop().expect("stops");
    let _ = std::fs::remove_dir_all(media);
}

/// Wrong JSON types and unknown roles are 400s naming the field; a bad image in a streamed
/// request is a 400 before any stream starts.
#[test]
fn wrong_types_and_bad_media_are_400_before_streaming() {
    let server = server(ServeOptions::default());
    let hi = json!([{"role": "user", "content": "hi"}]);
    let cases = [
        (json!({"stream": "str", "messages": hi}), "stream"),
        (json!({"model": 5, "messages": hi}), "model"),
        (json!({"stop": [1, 2], "messages": hi}), "stop"),
        (json!({"max_tokens": "many", "messages": hi}), "max_tokens"),
        (
            json!({"stream_options": {"include_usage": "yes"}, "messages": hi}),
            "include_usage",
        ),
        (
            json!({"messages": [{"role": "wizard", "content": "hi"}]}),
            "messages",
        ),
    ];
    for (body, field) in cases {
        let (status, v) = chat(server.addr, &body);
        assert_eq!(status, 400, "{body}: {v}");
        let message = v["error"]["message"].as_str().unwrap_or("");
        assert!(
            v["error"]["param"] == field || message.contains(field),
            "{body}: {v}"
        );
    }
    let garbage = "data:image/png;base64,bm90IGFuIGltYWdl";
    let body = json!({"stream": true, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": garbage}}]}]});
    let (status, text) = http(
        server.addr,
        "POST",
        "/v1/chat/completions",
        body.to_string().as_bytes(),
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("invalid_image"), "{text}");
    // Eight tiny GIFs declaring a 9000×9000 canvas: refused from their headers.
    let mut gif = b"GIF89a".to_vec();
    gif.extend(9000u16.to_le_bytes());
    gif.extend(9000u16.to_le_bytes());
    gif.extend(b"\x80\x00\x00\x00\x00\x00\xff\xff\xff\x2c\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02\x44\x01\x00\x3b");
    let url = format!(
        "data:image/gif;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(&gif)
    );
    let part = json!({"type": "image_url", "image_url": {"url": url}});
    let body = json!({"stream": true, "messages": [{"role": "user", "content": vec![part; 8]}]});
    let started = Instant::now();
    let (status, text) = http(
        server.addr,
        "POST",
        "/v1/chat/completions",
        body.to_string().as_bytes(),
    );
    assert_eq!(status, 400, "{text}");
    eprintln!(
        "eight 9000×9000 GIFs refused in {:.3} s: {text}",
        started.elapsed().as_secs_f64()
    );
    server.stop().expect("stops");
}
