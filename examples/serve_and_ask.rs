//! The OpenAI-compatible server and a client of it, in one program: starts `nuri serve`'s
//! server on a free local port, asks it one question with a picture (inline, as a base64
//! data URL) over plain HTTP/1.1 — no client library, so the bytes on the wire are the ones
//! printed — and stops it.
//!
//! ```sh
//! cargo run --release --example serve_and_ask -- --model DIR --image photo.jpg \
//!     [--question "What is in the picture?"]
//! ```
//! Against a server already running (`nuri serve --model DIR`), the same request with curl:
//! `curl localhost:8000/v1/chat/completions -H 'content-type: application/json' -d @body.json`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use base64::Engine;
use clap::Parser;
use nuri_infer::server::{ServeOptions, start};
use serde_json::{Value as Json, json};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    model: common::ModelArgs,
    #[arg(long)]
    image: PathBuf,
    #[arg(long, default_value = "What is in the picture?")]
    question: String,
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
}

/// Sends one HTTP/1.1 request and returns the status code and the body.
fn http(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, rest) = response
        .split_once("\r\n\r\n")
        .context("no HTTP header end")?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    // The server frames bodies with Content-Length, or chunks them.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = rest;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).context("chunk size")?;
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            rest = &tail[n + 2..];
        }
        out
    } else {
        rest.to_string()
    };
    Ok((status, body))
}

/// Starts the server, asks, stops it; returns the answer.
fn run(args: &Args) -> Result<String> {
    let loaded = args.model.load()?;
    let options = ServeOptions {
        model_name: "nuri".into(),
        ..ServeOptions::default()
    };
    let server = start(
        loaded.model,
        loaded.processor,
        loaded.device,
        options,
        "127.0.0.1:0".parse()?,
        false,
    )?;
    eprintln!("serving on http://{}", server.addr);
    let bytes =
        std::fs::read(&args.image).with_context(|| format!("reading {}", args.image.display()))?;
    let mime = match args.image.extension().and_then(|e| e.to_str()) {
        Some("png") => "image/png",
        Some("webp") => "image/webp",
        Some("gif") => "image/gif",
        _ => "image/jpeg",
    };
    let url = format!(
        "data:{mime};base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    );
    let request = json!({
        "model": "nuri",
        "max_tokens": args.max_tokens,
        "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}},
            {"type": "text", "text": args.question},
        ]}],
    });
    let (status, body) = http(
        server.addr,
        "POST",
        "/v1/chat/completions",
        &request.to_string(),
    )?;
    server.stop()?;
    if status != 200 {
        bail!("the server answered {status}: {body}");
    }
    let reply: Json = serde_json::from_str(&body).context("the reply is not JSON")?;
    reply["choices"][0]["message"]["content"]
        .as_str()
        .map(str::to_string)
        .context("no message in the reply")
}

fn main() -> Result<()> {
    let args = Args::parse();
    println!("{}", run(&args)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_answers_a_plain_http_client() {
        let args = Args {
            model: common::model_args(&common::tiny_checkpoint()),
            image: common::fixtures().join("images/photo.jpg"),
            question: "사진에 무엇이 있나요?".into(),
            max_tokens: 4,
        };
        let answer = run(&args).expect("answers");
        assert!(answer.chars().count() <= 64, "{answer}");
        // A picture that is not a picture: the server says so with a 400, which the client
        // reports.
        let dir = std::env::temp_dir().join(format!("nuri-serve-ask-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let bad = dir.join("broken.png");
        std::fs::write(&bad, b"not a png").expect("write");
        let err = run(&Args { image: bad, ..args }).unwrap_err();
        assert!(err.to_string().contains("400"), "{err:#}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
