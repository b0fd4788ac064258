//! What the server tests share: a server with a random tiny model on 127.0.0.1, and a
//! minimal HTTP/1.1 client.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};

use base64::Engine;
use burn::tensor::Device;
use nuri_infer::server::{ServeOptions, Server, start};
use nuri_model::{NuriConfig, NuriModel};
use nuri_processor::Processor;
use serde_json::{Value, json};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

pub fn server(options: ServeOptions) -> Server {
    let processor =
        Processor::from_dir(&fixtures().join("processor/checkpoint")).expect("processor");
    let config = processor.fit_config(NuriConfig::tiny());
    server_with(config, processor, options)
}

/// A server for a random model of `config` (fitted to `processor`'s tokenizer).
pub fn server_with(config: NuriConfig, processor: Processor, options: ServeOptions) -> Server {
    let device = Device::flex();
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let model = {
        let _guard = INIT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        device.seed(5);
        let model = NuriModel::new(&config, &device).expect("model");
        model.init_params_now();
        model
    };
    start(
        model,
        processor,
        device,
        options,
        "127.0.0.1:0".parse().expect("addr"),
        false,
    )
    .expect("starts")
}

/// One HTTP/1.1 request; returns the status and the body.
pub fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connects");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("writes");
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status: u16 = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (headers, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if headers
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

pub fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

/// `body` asked with `"stream": true`: the status and the raw server-sent events.
pub fn chat_streamed(addr: SocketAddr, body: &Value) -> (u16, String) {
    let mut body = body.clone();
    body["stream"] = Value::Bool(true);
    http(
        addr,
        "POST",
        "/v1/chat/completions",
        body.to_string().as_bytes(),
    )
}

pub fn chat(addr: SocketAddr, body: &Value) -> (u16, Value) {
    let (status, text) = http(
        addr,
        "POST",
        "/v1/chat/completions",
        body.to_string().as_bytes(),
    );
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

pub fn ask(text: &str) -> Value {
    json!({"model": "nuri", "temperature": 0, "max_tokens": 6, "messages": [{"role": "user", "content": text}]})
}

pub fn data_url(path: &Path) -> String {
    let bytes = std::fs::read(path).expect("image");
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// `GET /health`: its status and JSON.
pub fn health(addr: SocketAddr) -> (u16, Value) {
    let (status, text) = http(addr, "GET", "/health", b"");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Sends a chat request and returns the open connection, for the caller to read the answer
/// as it comes (or to walk away from it).
pub fn send(addr: SocketAddr, body: &Value) -> TcpStream {
    let body = body.to_string();
    let mut s = TcpStream::connect(addr).expect("connects");
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("writes");
    s.write_all(body.as_bytes()).expect("writes");
    s
}

/// Reads from `s` until `until` appears in what was read or the connection ends (or
/// `timeout` passes); returns what was read.
pub fn read_until(s: &mut TcpStream, until: &str, timeout: std::time::Duration) -> String {
    let deadline = std::time::Instant::now() + timeout;
    s.set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .expect("timeout");
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while std::time::Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                if String::from_utf8_lossy(&raw).contains(until) {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&raw).into_owned()
}

/// Polls `/health` until `done` holds for its JSON (or `timeout` passes); returns the last.
pub fn wait_health(
    addr: SocketAddr,
    timeout: std::time::Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let (_, v) = health(addr);
        if done(&v) || std::time::Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A request that streams a long answer.
pub fn long_stream(max_tokens: usize) -> Value {
    json!({"model": "nuri", "temperature": 1.0, "seed": 3, "max_tokens": max_tokens, "stream": true, "ignore_eos": true,
           "messages": [{"role": "user", "content": "tell me a long story"}]})
}
