//! A Hugging Face `tokenizer.json` (through the `tokenizers` crate) and the special tokens a
//! checkpoint's `tokenizer_config.json` names.

use std::path::Path;

use serde_json::Value as Json;
use tokenizers::Tokenizer;

use crate::ProcessorError;

/// The tokens the processor and generation need by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialTokens {
    /// The image placeholder the processor repeats once per merged visual token, and its
    /// text (`<|image_pad|>`; HyperCLOVA X: `<|IMAGE_PAD|>`).
    pub image_pad: u32,
    pub image_token: String,
    /// The video placeholder and its text.
    pub video_pad: u32,
    pub video_token: String,
    /// Qwen's `<|vision_start|>` / `<|vision_end|>`, when the vocabulary has them.
    pub vision_start: Option<u32>,
    pub vision_end: Option<u32>,
    /// What padded positions hold.
    pub pad: u32,
    /// Tokens that end generation (`eos_token`, and `<|im_end|>` / `<|endoftext|>` when present).
    pub eos: Vec<u32>,
}

/// Qwen2-VL's names for its special tokens.
pub const IMAGE_PAD: &str = "<|image_pad|>";
pub const VIDEO_PAD: &str = "<|video_pad|>";
pub const VISION_START: &str = "<|vision_start|>";
pub const VISION_END: &str = "<|vision_end|>";
pub const IM_END: &str = "<|im_end|>";
pub const ENDOFTEXT: &str = "<|endoftext|>";
/// The ends of a turn in the other families' templates (EXAONE 4.5, EXAONE 4.0); a
/// vocabulary that has one ends generation at it.
pub const TURN_ENDS: [&str; 2] = ["<|endofturn|>", "[|endofturn|]"];

/// A tokenizer with its special tokens and the named tokens a template may use.
#[derive(Debug, Clone)]
pub struct TextTokenizer {
    pub tokenizer: Tokenizer,
    pub special: SpecialTokens,
    /// `bos_token`, `eos_token`, `pad_token`, `unk_token` as the template sees them.
    pub template_tokens: serde_json::Map<String, Json>,
}

/// A token named in `tokenizer_config.json`: a string or an `AddedToken` object.
fn token_text(value: &Json) -> Option<String> {
    match value {
        Json::String(s) => Some(s.clone()),
        Json::Object(o) => o.get("content").and_then(Json::as_str).map(str::to_string),
        _ => None,
    }
}

impl TextTokenizer {
    /// Reads `tokenizer.json` and, if present, `tokenizer_config.json` and the end-of-sequence
    /// ids of `generation_config.json` from `dir`.
    pub fn from_dir(dir: &Path) -> Result<Self, ProcessorError> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(ProcessorError::Config {
                path,
                message: "missing: a checkpoint needs its tokenizer.json".into(),
            });
        }
        let tokenizer = Tokenizer::from_file(&path).map_err(|e| ProcessorError::Config {
            path: path.clone(),
            message: format!("not a valid Hugging Face tokenizer: {e}"),
        })?;
        let config_path = dir.join("tokenizer_config.json");
        let config = crate::read_json(&config_path)?.unwrap_or(Json::Null);
        let mut this = Self::new(tokenizer, &config, &path)?;
        // generation_config.json's eos_token_id (a number or a list) ends generation too.
        let generation = crate::read_json(&dir.join("generation_config.json"))?;
        let ids = generation.as_ref().and_then(|g| g.get("eos_token_id"));
        let ids: Vec<u32> = match ids {
            Some(Json::Array(items)) => items
                .iter()
                .filter_map(Json::as_u64)
                .map(|i| i as u32)
                .collect(),
            Some(v) => v.as_u64().map(|i| i as u32).into_iter().collect(),
            None => Vec::new(),
        };
        for id in ids {
            if id < this.vocab_size() as u32 && !this.special.eos.contains(&id) {
                this.special.eos.push(id);
            }
        }
        Ok(this)
    }

    /// Wraps a tokenizer; `config` is a parsed `tokenizer_config.json` (or null), `path`
    /// names the tokenizer in errors.
    pub fn new(tokenizer: Tokenizer, config: &Json, path: &Path) -> Result<Self, ProcessorError> {
        let id = |token: &str| {
            tokenizer
                .token_to_id(token)
                .ok_or_else(|| ProcessorError::Config {
                    path: path.to_path_buf(),
                    message: format!(
                        "the vocabulary lacks `{token}`, the placeholder the processor expands (set `image_token` / `video_token` in tokenizer_config.json if the model uses another)"
                    ),
                })
        };
        let named = |key: &str| config.get(key).and_then(token_text);
        // transformers 5 multimodal tokenizers name their placeholders in
        // `extra_special_tokens` (or at the top level).
        let placeholder = |key: &str, default: &str| {
            named(key)
                .or_else(|| {
                    config
                        .get("extra_special_tokens")
                        .and_then(|e| e.get(key))
                        .and_then(token_text)
                })
                .unwrap_or_else(|| default.to_string())
        };
        let image_token = placeholder("image_token", IMAGE_PAD);
        let video_token = placeholder("video_token", VIDEO_PAD);
        let pad = match named("pad_token") {
            Some(t) => id(&t)?,
            None => tokenizer.token_to_id(ENDOFTEXT).unwrap_or(0),
        };
        let mut eos = Vec::new();
        for token in named("eos_token").into_iter().chain(
            [IM_END, ENDOFTEXT]
                .into_iter()
                .chain(TURN_ENDS)
                .map(String::from),
        ) {
            if let Some(i) = tokenizer.token_to_id(&token)
                && !eos.contains(&i)
            {
                eos.push(i);
            }
        }
        let special = SpecialTokens {
            image_pad: id(&image_token)?,
            image_token,
            video_pad: id(&video_token)?,
            video_token,
            vision_start: tokenizer.token_to_id(VISION_START),
            vision_end: tokenizer.token_to_id(VISION_END),
            pad,
            eos,
        };
        let mut template_tokens = serde_json::Map::new();
        for key in ["bos_token", "eos_token", "pad_token", "unk_token"] {
            if let Some(t) = named(key) {
                template_tokens.insert(key.into(), Json::String(t));
            }
        }
        Ok(Self {
            tokenizer,
            special,
            template_tokens,
        })
    }

    /// Token ids of `text`, special tokens in it recognised, with the tokenizer's own
    /// post-processing (as transformers' `tokenizer(text)`).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ProcessorError> {
        self.tokenizer
            .encode(text, true)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| ProcessorError::Tokenize(e.to_string()))
    }

    /// Text of `ids`, special tokens dropped when `skip_special`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, ProcessorError> {
        self.tokenizer
            .decode(ids, skip_special)
            .map_err(|e| ProcessorError::Tokenize(e.to_string()))
    }

    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// Makes the token with id `id` the image (`video = false`) or video placeholder, when
    /// the vocabulary has it: the model's config names its placeholders by id.
    pub fn use_placeholder(&mut self, video: bool, id: i64) {
        let Ok(id) = u32::try_from(id) else {
            return;
        };
        let Some(text) = self.tokenizer.id_to_token(id) else {
            return;
        };
        if video {
            self.special.video_pad = id;
            self.special.video_token = text;
        } else {
            self.special.image_pad = id;
            self.special.image_token = text;
        }
    }
}
