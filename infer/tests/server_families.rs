//! The server answers for every model family: a random model of each family's architecture
//! (`fixtures/families/<family>/model/config.json`) with its tokenizer and real chat template
//! (`fixtures/families/<family>/processor/checkpoint`), asked in Korean with an image as an
//! OpenAI `image_url` part, plain and streamed.

mod common;

use common::{ask, chat, chat_streamed, data_url, fixtures, server_with};
use nuri_infer::server::{ServeOptions, Server};
use nuri_processor::Processor;
use serde_json::{Value, json};

fn family_server(family: &str, tokenizer_family: &str) -> (Server, bool) {
    let processor = Processor::from_dir(
        &fixtures()
            .join("families")
            .join(tokenizer_family)
            .join("processor/checkpoint"),
    )
    .expect("processor");
    let config = nuri_model::read_hf_config(
        &fixtures()
            .join("families")
            .join(family)
            .join("model/config.json"),
    )
    .expect("config");
    let config = processor.fit_config(config);
    let processor = processor.for_model(&config);
    let vision = config.vision.is_some();
    (
        server_with(config, processor, ServeOptions::default()),
        vision,
    )
}

fn serve_family(family: &str, tokenizer_family: &str) {
    let (server, vision) = family_server(family, tokenizer_family);
    let addr = server.addr;

    let (status, plain) = chat(addr, &ask("안녕하세요? 한 문장으로 답해 주세요."));
    assert_eq!(status, 200, "{family}: {plain}");
    assert!(
        plain["choices"][0]["message"]["content"].is_string(),
        "{plain}"
    );
    let (status, text) = chat_streamed(addr, &ask("Hello?"));
    assert_eq!(status, 200, "{family}: {text}");
    assert!(
        text.trim_end().ends_with("data: [DONE]"),
        "{family}: {text}"
    );

    let image = json!({"model": "nuri", "temperature": 0, "max_tokens": 4, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(&fixtures().join("images/rgb_odd.png"))}},
        {"type": "text", "text": "이 사진에 무엇이 있나요?"}]}]});
    let (status, v): (u16, Value) = chat(addr, &image);
    if vision {
        assert_eq!(status, 200, "{family}: {v}");
        assert!(
            v["usage"]["prompt_tokens"].as_u64().expect("usage") > 20,
            "{family}: the image's tokens count: {v}"
        );
    } else {
        assert_eq!(status, 400, "{family}: a text model refuses an image: {v}");
    }
}

#[test]
fn qwen2_5_vl_serves() {
    serve_family("qwen2_5_vl", "qwen2_5_vl");
}

#[test]
fn exaone4_5_serves() {
    serve_family("exaone4_5", "exaone4_5");
}

#[test]
fn hyperclovax_vision_v2_serves() {
    serve_family("hyperclovax_vision_v2", "hyperclovax_vision_v2");
}

#[test]
fn text_families_serve_and_refuse_images() {
    serve_family("exaone4", "exaone4_5");
    serve_family("hyperclovax", "hyperclovax_vision_v2");
}

/// A hybrid reasoning model (EXAONE 4.5's tokenizer and template): with thinking on, the
/// template opens the block in the prompt, so the (random) answer is reasoning up to an end
/// marker; `reasoning_content` carries it, plain and streamed alike; with thinking off there
/// is no block.
#[test]
fn thinking_goes_to_reasoning_content() {
    let (server, _) = family_server("exaone4_5", "exaone4_5");
    let addr = server.addr;
    let asked = |think: bool| {
        let mut body = ask("2 더하기 2는?");
        body["max_tokens"] = json!(12);
        body["chat_template_kwargs"] = json!({"enable_thinking": think});
        body
    };
    let (status, on) = chat(addr, &asked(true));
    assert_eq!(status, 200, "{on}");
    let message = &on["choices"][0]["message"];
    let reasoning = message["reasoning_content"].as_str().expect("reasoning");
    assert!(!reasoning.is_empty(), "{on}");
    assert!(!reasoning.contains("</think>"), "{on}");
    let content = message["content"].as_str().expect("content");

    // Streamed: the deltas add up to the same two texts.
    let (status, text) = chat_streamed(addr, &asked(true));
    assert_eq!(status, 200, "{text}");
    let (mut r, mut c) = (String::new(), String::new());
    for event in text.split("\n\n").filter(|e| e.starts_with("data: {")) {
        let v: Value = serde_json::from_str(&event["data: ".len()..]).expect("json");
        let delta = &v["choices"][0]["delta"];
        r.push_str(delta["reasoning_content"].as_str().unwrap_or(""));
        c.push_str(delta["content"].as_str().unwrap_or(""));
    }
    assert_eq!((r.as_str(), c.as_str()), (reasoning, content));

    // A thinking budget of 2 tokens ends the block early: less reasoning than without.
    let mut short = asked(true);
    short["max_thinking_tokens"] = json!(2);
    let (status, s) = chat(addr, &short);
    assert_eq!(status, 200, "{s}");
    let brief = s["choices"][0]["message"]["reasoning_content"]
        .as_str()
        .expect("reasoning");
    assert!(
        !brief.is_empty() && brief.len() < reasoning.len(),
        "{s} against {on}"
    );

    let (status, off) = chat(addr, &asked(false));
    assert_eq!(status, 200, "{off}");
    assert!(
        off["choices"][0]["message"]["reasoning_content"].is_null(),
        "{off}"
    );
    assert!(off["usage"]["prompt_tokens"].as_u64() != on["usage"]["prompt_tokens"].as_u64());
    server.stop().expect("stops");
}
