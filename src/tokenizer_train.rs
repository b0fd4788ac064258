//! `nuri tokenizer train`: a byte-level BPE `tokenizer.json` (the `tokenizers` crate's
//! trainer) learned from the text of JSONL conversations, with the special tokens of
//! Qwen2-VL's chat template, written as a directory `Processor::from_dir` (and transformers)
//! can load.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value as Json, json};
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer, TokenizerBuilder};

/// The special tokens of the chat template and the visual placeholders, in id order.
pub const SPECIAL_TOKENS: [&str; 8] = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
];

/// Text the chat template adds around every conversation.
const TEMPLATE_TEXT: [&str; 4] = [
    "system",
    "user",
    "assistant",
    "You are a helpful assistant.",
];

/// The texts of a JSONL file of conversations (ShareGPT `conversations[].value` or OpenAI
/// `messages[].content`, string or text parts), media tags removed. Lines that are not JSON
/// are an error naming the file and line.
pub fn texts_of(path: &Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Json = serde_json::from_str(line)
            .map_err(|e| anyhow!("{}:{}: invalid JSON: {e}", path.display(), i + 1))?;
        let turns = v
            .get("conversations")
            .or_else(|| v.get("messages"))
            .and_then(Json::as_array)
            .ok_or_else(|| {
                anyhow!(
                    "{}:{}: no `conversations` or `messages` list",
                    path.display(),
                    i + 1
                )
            })?;
        for turn in turns {
            let content = turn.get("value").or_else(|| turn.get("content"));
            match content {
                Some(Json::String(s)) => out.push(strip_tags(s)),
                Some(Json::Array(parts)) => out.extend(
                    parts
                        .iter()
                        .filter_map(|p| p.get("text").and_then(Json::as_str))
                        .map(strip_tags),
                ),
                _ => {}
            }
        }
    }
    Ok(out)
}

fn strip_tags(s: &str) -> String {
    s.replace("<image>", "")
        .replace("<video>", "")
        .trim()
        .to_string()
}

/// What `train_tokenizer` learned.
pub struct TrainedTokenizer {
    pub tokenizer: Tokenizer,
    pub vocab_size: usize,
}

/// Learns a byte-level BPE of `vocab_size` tokens (special tokens included) from `texts`.
pub fn train_tokenizer(texts: &[String], vocab_size: usize) -> Result<TrainedTokenizer> {
    if vocab_size < 256 + SPECIAL_TOKENS.len() {
        bail!(
            "--vocab-size {vocab_size} is too small: a byte-level BPE needs 256 byte tokens plus {} special tokens",
            SPECIAL_TOKENS.len()
        );
    }
    let mut builder = TokenizerBuilder::new()
        .with_model(BPE::default())
        .with_normalizer(Some(NFC))
        .with_pre_tokenizer(Some(ByteLevel::new(false, true, true)))
        .with_post_processor(Some(ByteLevel::new(false, true, true)))
        .with_decoder(Some(ByteLevel::new(false, true, true)))
        .build()
        .map_err(|e| anyhow!("building the tokenizer: {e}"))?;
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .special_tokens(
            SPECIAL_TOKENS
                .iter()
                .map(|t| AddedToken::from(*t, true))
                .collect(),
        )
        .build();
    // The template's words come with every conversation: they are counted as often as
    // the texts, so that they become whole tokens like any frequent word.
    let corpus: Vec<&str> = texts
        .iter()
        .map(String::as_str)
        .chain(std::iter::repeat_n(TEMPLATE_TEXT, texts.len().div_ceil(2)).flatten())
        .collect();
    builder
        .train(&mut trainer, corpus.into_iter())
        .map_err(|e| anyhow!("training the tokenizer: {e}"))?;
    let tokenizer: Tokenizer = builder.into();
    let vocab_size = tokenizer.get_vocab_size(true);
    Ok(TrainedTokenizer {
        tokenizer,
        vocab_size,
    })
}

/// Writes `tokenizer.json`, `tokenizer_config.json` (eos `<|im_end|>`, pad
/// `<|endoftext|>`) and `chat_template.jinja` (Qwen2-VL's) into `dir`.
pub fn save_tokenizer_dir(tokenizer: &Tokenizer, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("tokenizer.json");
    tokenizer
        .save(&path, false)
        .map_err(|e| anyhow!("writing {}: {e}", path.display()))?;
    let config = json!({
        "tokenizer_class": "Qwen2TokenizerFast",
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "model_max_length": 4096,
        "processor_class": "Qwen2VLProcessor",
    });
    let path = dir.join("tokenizer_config.json");
    std::fs::write(&path, serde_json::to_string_pretty(&config)?)
        .with_context(|| format!("writing {}", path.display()))?;
    let path = dir.join("chat_template.jinja");
    std::fs::write(&path, nuri_processor::QWEN2_VL_TEMPLATE)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Tokens per Korean character (Hangul syllables) and per English word over `texts`,
/// each text counted as Korean when it holds Hangul, else as English.
pub fn fertility(tokenizer: &Tokenizer, texts: &[String]) -> Result<(f64, f64)> {
    let (mut ko_tokens, mut ko_chars, mut en_tokens, mut en_words) = (0usize, 0usize, 0, 0);
    for t in texts {
        let n = tokenizer
            .encode(t.as_str(), false)
            .map_err(|e| anyhow!("encoding {t:?}: {e}"))?
            .len();
        let hangul = t
            .chars()
            .filter(|c| ('\u{AC00}'..='\u{D7A3}').contains(c))
            .count();
        if hangul > 0 {
            ko_tokens += n;
            ko_chars += hangul;
        } else {
            en_tokens += n;
            en_words += t.split_whitespace().count();
        }
    }
    Ok((
        ko_tokens as f64 / ko_chars.max(1) as f64,
        en_tokens as f64 / en_words.max(1) as f64,
    ))
}

/// `nuri tokenizer train`'s flags.
#[derive(clap::Args, Debug)]
pub struct TokenizerTrainArgs {
    /// JSONL files of conversations (repeatable).
    #[arg(long, required = true)]
    data: Vec<PathBuf>,
    #[arg(long, default_value_t = 1024)]
    vocab_size: usize,
    /// Directory to write tokenizer.json, tokenizer_config.json and the chat template to.
    #[arg(long)]
    out: PathBuf,
}

impl TokenizerTrainArgs {
    pub fn run(self) -> Result<()> {
        run(&self.data, self.vocab_size, &self.out).map(drop)
    }
}

/// `nuri tokenizer train`: learns from `inputs`, writes `out`, prints the vocabulary size and
/// the fertility figures.
pub fn run(inputs: &[PathBuf], vocab_size: usize, out: &Path) -> Result<TrainedTokenizer> {
    let mut texts = Vec::new();
    for path in inputs {
        texts.extend(texts_of(path)?);
    }
    if texts.is_empty() {
        bail!("no text to learn from in {inputs:?}");
    }
    let trained = train_tokenizer(&texts, vocab_size)?;
    save_tokenizer_dir(&trained.tokenizer, out)?;
    let (ko, en) = fertility(&trained.tokenizer, &texts)?;
    println!(
        "tokenizer: {} tokens ({} texts) -> {}; {ko:.3} tokens per Korean character, {en:.3} tokens per English word",
        trained.vocab_size,
        texts.len(),
        out.join("tokenizer.json").display()
    );
    Ok(trained)
}
