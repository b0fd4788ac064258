//! Generation with a random tiny model and the fixture tokenizer: a batch answers each row as
//! it would alone, sampling is reproducible, and stop conditions end each row on its own.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use nuri_infer::{FinishReason, GenerationRequest, SamplingParams, generate};
use nuri_model::{NuriConfig, NuriModel};
use nuri_processor::Processor;
use serde_json::json;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

/// Seeded models are drawn at once under this lock: Burn initializes lazily from a global
/// generator that the tests running in parallel share.
fn init_lock() -> std::sync::MutexGuard<'static, ()> {
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    INIT.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn setup() -> (NuriModel, Processor, Device) {
    let processor = Processor::from_dir(&fixtures().join("processor/checkpoint"))
        .expect("processor")
        .with_media_root(fixtures());
    let config = processor.fit_config(NuriConfig::tiny());
    let device = Device::flex();
    let _guard = init_lock();
    device.seed(17);
    let model = NuriModel::new(&config, &device).expect("model");
    model.init_params_now();
    (model, processor, device)
}

fn request(text: &str, image: bool, params: SamplingParams) -> GenerationRequest {
    let mut content = Vec::new();
    if image {
        content.push(json!({"type": "image", "image": "images/rgb_odd.png"}));
    }
    content.push(json!({"type": "text", "text": text}));
    GenerationRequest {
        messages: json!([{"role": "user", "content": content}]),
        params,
        template_kwargs: Default::default(),
    }
}

fn greedy(n: usize) -> SamplingParams {
    SamplingParams {
        max_new_tokens: n,
        ..Default::default()
    }
}

#[test]
fn a_batch_answers_each_row_as_it_would_alone() {
    let (model, processor, device) = setup();
    let requests = vec![
        request("What is in this picture?", true, greedy(8)),
        request(
            "안녕하세요! 오늘 날씨가 좋네요. What is 2+2?",
            false,
            greedy(5),
        ),
    ];
    let mut streamed = vec![String::new(); 2];
    let batch = generate(&model, &processor, &requests, &device, &mut |row, piece| {
        streamed[row].push_str(piece)
    })
    .expect("generates");
    for (i, r) in requests.iter().enumerate() {
        let alone = generate(
            &model,
            &processor,
            std::slice::from_ref(r),
            &device,
            &mut |_, _| {},
        )
        .expect("generates");
        assert_eq!(batch[i].tokens, alone[0].tokens, "row {i}");
        assert_eq!(batch[i].text, alone[0].text, "row {i}");
        assert_eq!(
            streamed[i], batch[i].text,
            "row {i}: streamed pieces add up to the text"
        );
    }
    // Each row stops at its own budget.
    assert_eq!(batch[0].tokens.len(), 8);
    assert_eq!(batch[1].tokens.len(), 5);
    assert_eq!(batch[1].finish_reason, FinishReason::Length);
}

#[test]
fn sampling_is_reproducible_and_top_k_1_is_greedy() {
    let (model, processor, device) = setup();
    let sampled = |seed: u64, top_k: usize| {
        let params = SamplingParams {
            temperature: 1.0,
            top_k,
            seed,
            max_new_tokens: 10,
            ..Default::default()
        };
        generate(
            &model,
            &processor,
            &[request("Hi", false, params)],
            &device,
            &mut |_, _| {},
        )
        .expect("generates")
        .remove(0)
        .tokens
    };
    assert_eq!(sampled(1, 0), sampled(1, 0));
    assert_ne!(sampled(1, 0), sampled(2, 0));
    let g = generate(
        &model,
        &processor,
        &[request("Hi", false, greedy(10))],
        &device,
        &mut |_, _| {},
    )
    .expect("generates")
    .remove(0)
    .tokens;
    assert_eq!(sampled(5, 1), g);
}

#[test]
fn a_stop_string_ends_the_answer_before_it() {
    let (model, processor, device) = setup();
    let full = generate(
        &model,
        &processor,
        &[request("Hi", false, greedy(12))],
        &device,
        &mut |_, _| {},
    )
    .expect("generates")
    .remove(0);
    // Stop on a piece of the greedy answer's second half.
    let chars: Vec<char> = full.text.chars().collect();
    assert!(chars.len() >= 4, "{:?}", full.text);
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 2].iter().collect();
    let cut = full.text.find(&stop).expect("present");
    let params = SamplingParams {
        stop: vec![stop.clone()],
        ..greedy(12)
    };
    let mut streamed = String::new();
    let out = generate(
        &model,
        &processor,
        &[request("Hi", false, params)],
        &device,
        &mut |_, p| streamed.push_str(p),
    )
    .expect("generates")
    .remove(0);
    assert_eq!(out.text, full.text[..cut], "stop {stop:?}");
    assert_eq!(streamed, out.text);
    assert_eq!(out.finish_reason, FinishReason::Stop);
    let bad = SamplingParams {
        top_p: 0.0,
        ..greedy(3)
    };
    let err = generate(
        &model,
        &processor,
        &[request("Hi", false, bad)],
        &device,
        &mut |_, _| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("top_p"), "{err}");
}

/// A request's template keyword arguments reach its own row's rendering only: Qwen2-VL's
/// template numbers pictures ("Picture 1: ") under `add_vision_id`.
#[test]
fn template_arguments_reach_their_own_request() {
    let (model, processor, device) = setup();
    let plain = request("What is in this picture?", true, greedy(2));
    let mut numbered = plain.clone();
    numbered
        .template_kwargs
        .insert("add_vision_id".into(), json!(true));
    let out = generate(
        &model,
        &processor,
        &[plain, numbered],
        &device,
        &mut |_, _| {},
    )
    .expect("generates");
    let rendered = processor
        .render_with(
            &json!([{"role": "user", "content": [
                {"type": "image", "image": "images/rgb_odd.png"},
                {"type": "text", "text": "What is in this picture?"}]}]),
            true,
            &serde_json::Map::from_iter([("add_vision_id".to_string(), json!(true))]),
        )
        .expect("renders");
    assert!(rendered.contains("Picture 1: "), "{rendered}");
    let added = processor
        .tokenizer
        .encode("Picture 1: ")
        .expect("encodes")
        .len();
    assert_eq!(out[1].prompt_tokens, out[0].prompt_tokens + added);
    // Each answer says how long its call took.
    let timing = out[0].timing.expect("generate times its calls");
    assert_eq!(timing.decode_steps, 1);
    assert!(timing.prefill_seconds > 0.0);
}

/// A token id past the model's vocabulary (a tokenizer from another checkpoint) is an
/// error that names both, not a panic in the embedding lookup.
#[test]
fn a_token_past_the_vocabulary_is_an_error() {
    use burn::tensor::{Int, Tensor, TensorData};
    let (model, _, device) = setup();
    let vocab = model.model.language_model.embed_tokens.weight.dims()[0];
    let ids =
        Tensor::<2, Int>::from_data(TensorData::new(vec![1i64, vocab as i64], [1, 2]), &device);
    let input = nuri_model::MultimodalInput::text(ids, None);
    let err = model
        .generate(&input, &mut |_, _| None)
        .expect_err("refused");
    let message = err.to_string();
    assert!(
        message.contains(&vocab.to_string()) && message.contains("token id"),
        "{message}"
    );
}

/// A hybrid reasoning model (EXAONE 4.5's tokenizer and template, a random model of its
/// architecture): with thinking on, the prompt opens the block, the streamed parts start as
/// reasoning, and each answer's reasoning and text are what the parts add up to, with no
/// marker left in either; with thinking off there is no reasoning.
#[test]
fn a_reasoning_answer_streams_its_thinking_apart() {
    let family = fixtures().join("families/exaone4_5");
    let processor = Processor::from_dir(&family.join("processor/checkpoint")).expect("processor");
    let config = nuri_model::read_hf_config(&family.join("model/config.json")).expect("config");
    let config = processor.fit_config(config);
    let processor = processor.for_model(&config);
    let device = Device::flex();
    let model = {
        let _guard = init_lock();
        device.seed(3);
        let model = NuriModel::new(&config, &device).expect("model");
        model.init_params_now();
        model
    };
    let ask = |think: bool| GenerationRequest {
        template_kwargs: serde_json::Map::from_iter([(
            "enable_thinking".to_string(),
            json!(think),
        )]),
        ..request("2 더하기 2는?", false, greedy(10))
    };
    // A thinking budget of 3 tokens: the end marker is the fourth.
    let mut budget = ask(true);
    budget.params.max_thinking_tokens = Some(3);
    let mut parts = vec![(String::new(), String::new()); 3];
    let out = nuri_infer::generate_parts(
        &model,
        &processor,
        &[ask(true), ask(false), budget],
        &device,
        None,
        &mut |row, part| match part {
            nuri_infer::reasoning::Part::Reasoning(r) => parts[row].0.push_str(&r),
            nuri_infer::reasoning::Part::Content(c) => parts[row].1.push_str(&c),
        },
    )
    .expect("generates");
    let thinking = out[0]
        .reasoning
        .as_deref()
        .expect("reasoning with thinking on");
    assert!(!thinking.is_empty());
    assert_eq!(
        (thinking, out[0].text.as_str()),
        (parts[0].0.as_str(), parts[0].1.as_str())
    );
    assert!(out[1].reasoning.is_none(), "{:?}", out[1].reasoning);
    assert_eq!(out[1].text, parts[1].1);
    for g in &out {
        assert!(!g.text.contains("think>"), "{}", g.text);
    }
    let end = processor
        .tokenizer
        .tokenizer
        .token_to_id("</think>")
        .expect("marker");
    assert_eq!(
        out[2].tokens.iter().position(|&t| t == end),
        Some(3),
        "{:?}",
        out[2].tokens
    );
    assert_eq!(
        out[2].tokens.len(),
        10,
        "the answer goes on after the block"
    );
    assert_eq!(
        (out[2].reasoning.as_deref(), out[2].text.as_str()),
        (Some(parts[2].0.as_str()), parts[2].1.as_str())
    );
}
