//! Chat templates: a checkpoint's own Jinja template (`chat_template.jinja`,
//! `chat_template.json` or `tokenizer_config.json`, in the order transformers looks), rendered
//! with minijinja configured as transformers configures Jinja2 (`trim_blocks`,
//! `lstrip_blocks`, loop controls, Python string/dict methods, `raise_exception`, a
//! `tojson` that writes JSON as Python's `json.dumps` does). Without one, Qwen2-VL's own
//! template (ChatML with vision blocks) is used.

use std::path::{Path, PathBuf};

use minijinja::{Environment, Error as JinjaError, ErrorKind};
use serde_json::Value as Json;

use crate::ProcessorError;

mod python;

use python::{pyformat, python_percent, python_str, raise_exception, tojson};

/// The chat template of `Qwen/Qwen2-VL-7B-Instruct`: ChatML turns, a default system turn,
/// `<|vision_start|><|image_pad|><|vision_end|>` per image and `<|video_pad|>` per video (the
/// processor repeats each pad once per merged visual token), and the generation prompt.
pub const QWEN2_VL_TEMPLATE: &str = concat!(
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}",
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}",
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}",
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}",
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}",
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}",
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture ",
    "{{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>",
    "{% elif content['type'] == 'video' or 'video' in content %}",
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video ",
    "{{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>",
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n",
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
);

/// Where a template came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateSource {
    File(PathBuf),
    BuiltIn,
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: TemplateSource,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source", &self.source)
            .finish()
    }
}

const NAME: &str = "chat";

impl ChatTemplate {
    /// Compiles a template.
    pub fn new(source_text: String, source: TemplateSource) -> Result<Self, ProcessorError> {
        let mut env = Environment::new();
        // transformers renders with `trim_blocks=True, lstrip_blocks=True` and the
        // loop-controls extension; Jinja2 drops one trailing newline, as minijinja does.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_filter("tojson", tojson);
        env.add_filter("pyformat", pyformat);
        // Jinja2 prints values as Python's str() does.
        env.set_formatter(|out, _state, value| {
            out.write_str(&python_str(value))
                .map_err(|e| JinjaError::new(ErrorKind::WriteFailure, e.to_string()))
        });
        // Jinja2 reads templates with universal newlines.
        let source_text = python_percent(&source_text.replace("\r\n", "\n"));
        env.add_template_owned(NAME, source_text)
            .map_err(|e| ProcessorError::Template {
                source_name: source.to_string(),
                message: e.to_string(),
            })?;
        Ok(Self { env, source })
    }

    /// Qwen2-VL's template.
    pub fn qwen2_vl() -> Self {
        Self::new(QWEN2_VL_TEMPLATE.to_string(), TemplateSource::BuiltIn)
            .expect("the built-in template compiles")
    }

    /// A checkpoint directory's template, in transformers' order of precedence; `None` when
    /// the directory has none.
    pub fn from_dir(dir: &Path) -> Result<Option<Self>, ProcessorError> {
        let jinja = dir.join("chat_template.jinja");
        if jinja.is_file() {
            let text = read(&jinja)?;
            return Self::new(text, TemplateSource::File(jinja)).map(Some);
        }
        for (file, key) in [
            ("chat_template.json", "chat_template"),
            ("processor_config.json", "chat_template"),
            ("tokenizer_config.json", "chat_template"),
        ] {
            let path = dir.join(file);
            let Some(json) = crate::read_json(&path)? else {
                continue;
            };
            let text = match json.get(key) {
                None | Some(Json::Null) => continue,
                Some(Json::String(s)) => s.clone(),
                // A list of named templates: the one called "default".
                Some(Json::Array(named)) => named
                    .iter()
                    .find(|t| t.get("name").and_then(Json::as_str) == Some("default"))
                    .and_then(|t| t.get("template").and_then(Json::as_str))
                    .map(str::to_string)
                    .ok_or_else(|| ProcessorError::Config {
                        path: path.clone(),
                        message: "field `chat_template`: a list of templates without one named \"default\"".into(),
                    })?,
                Some(other) => {
                    return Err(ProcessorError::Config {
                        path,
                        message: format!(
                            "field `chat_template`: expected a string, got {other}"
                        ),
                    });
                }
            };
            return Self::new(text, TemplateSource::File(path)).map(Some);
        }
        Ok(None)
    }

    pub fn source(&self) -> &TemplateSource {
        &self.source
    }

    /// Renders `messages` (a JSON array of `{role, content}`); `extra` adds variables (special
    /// tokens, `add_vision_id`, `tools`, template keyword arguments such as
    /// `enable_thinking`). As transformers' `apply_chat_template`: keys whose value is null are
    /// dropped from each message, a turn's `reasoning_content` / `thinking` / `reasoning`
    /// (the first set) is given under both `reasoning_content` and `thinking`, and `tools` and
    /// `documents` are always defined (null when not given).
    pub fn render(
        &self,
        messages: &Json,
        add_generation_prompt: bool,
        extra: &serde_json::Map<String, Json>,
    ) -> Result<String, ProcessorError> {
        let mut ctx = extra.clone();
        ctx.insert("messages".into(), normalize_messages(messages));
        ctx.insert(
            "add_generation_prompt".into(),
            Json::Bool(add_generation_prompt),
        );
        for key in ["tools", "documents"] {
            ctx.entry(key).or_insert(Json::Null);
        }
        let template = self
            .env
            .get_template(NAME)
            .expect("added in ChatTemplate::new");
        template
            .render(Json::Object(ctx))
            .map_err(|e| ProcessorError::Template {
                source_name: self.source.to_string(),
                message: format!("{e:#}"),
            })
    }
}

/// transformers' message normalization before rendering (`_normalize_chat_messages`,
/// `_alias_reasoning_fields`).
fn normalize_messages(messages: &Json) -> Json {
    let Json::Array(items) = messages else {
        return messages.clone();
    };
    let normalized = items
        .iter()
        .map(|message| {
            let Json::Object(map) = message else {
                return message.clone();
            };
            let mut map: serde_json::Map<String, Json> = map
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let reasoning = ["reasoning_content", "thinking", "reasoning"]
                .iter()
                .find_map(|k| map.get(*k).cloned());
            if let Some(reasoning) = reasoning {
                map.entry("thinking").or_insert_with(|| reasoning.clone());
                map.insert("reasoning_content".into(), reasoning);
            }
            Json::Object(map)
        })
        .collect();
    Json::Array(normalized)
}

impl std::fmt::Display for TemplateSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TemplateSource::File(path) => write!(f, "{}", path.display()),
            TemplateSource::BuiltIn => write!(f, "the built-in Qwen2-VL chat template"),
        }
    }
}

fn read(path: &Path) -> Result<String, ProcessorError> {
    std::fs::read_to_string(path).map_err(|source| ProcessorError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(template: &str, messages: Json) -> Result<String, ProcessorError> {
        ChatTemplate::new(template.into(), TemplateSource::BuiltIn)?.render(
            &messages,
            true,
            &serde_json::Map::new(),
        )
    }

    #[test]
    fn qwen2_vl_template_writes_chatml_with_vision_blocks() {
        let messages = serde_json::json!([
            {"role": "user", "content": [
                {"type": "image", "image": "a.png"},
                {"type": "video", "video": "b.gif"},
                {"type": "text", "text": "무엇인가요?"}
            ]}
        ]);
        let text = ChatTemplate::qwen2_vl()
            .render(&messages, true, &serde_json::Map::new())
            .expect("renders");
        assert_eq!(
            text,
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n\
             <|vision_start|><|image_pad|><|vision_end|><|vision_start|><|video_pad|>\
             <|vision_end|>무엇인가요?<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn python_methods_raise_exception_and_tojson_behave_as_in_transformers() {
        let messages = serde_json::json!([{"role": "user", "content": "  hi  "}]);
        let out = render(
            "{% for m in messages %}[{{ m.content.strip() }}]{{ m | tojson }}{% endfor %}",
            messages.clone(),
        )
        .expect("renders");
        assert_eq!(out, r#"[hi]{"role": "user", "content": "  hi  "}"#);
        let err = render("{{ raise_exception('only user turns') }}", messages).unwrap_err();
        assert!(err.to_string().contains("only user turns"), "{err}");
        let err = render("{% for %}", serde_json::json!([])).unwrap_err();
        assert!(matches!(err, ProcessorError::Template { .. }), "{err}");
    }

    #[test]
    fn values_print_as_python_str_and_percent_formats_like_python() {
        let out = render(
            "{{ messages[0] }}|{{ true }}|{{ none }}|{{ 2.0 }}|{{ 'id_%02d' % messages|length }}|{{ \"%s!\" % messages[0].role }}",
            serde_json::json!([{"role": "user", "content": ["it's", "a\nb"], "n": 1}]),
        )
        .expect("renders");
        assert_eq!(
            out,
            "{'role': 'user', 'content': [\"it's\", 'a\\nb'], 'n': 1}|True|None|2.0|id_01|user!"
        );
        // `%}` ends a tag; it is not a format.
        let out = render("{% set x = 'a' %}{{ x }}", serde_json::json!([])).expect("renders");
        assert_eq!(out, "a");
    }

    #[test]
    fn tojson_takes_python_keywords() {
        let messages = serde_json::json!([{"b": "한", "a": [1, 2]}]);
        let out = render(
            "{{ messages[0] | tojson(ensure_ascii=False) }} {{ messages[0] | tojson(ensure_ascii=True, sort_keys=True) }} {{ messages[0] | tojson(separators=(',', ':')) }}",
            messages,
        )
        .expect("renders");
        assert_eq!(
            out,
            r#"{"b": "한", "a": [1, 2]} {"a": [1, 2], "b": "\ud55c"} {"b":"한","a":[1,2]}"#
        );
    }

    #[test]
    fn null_message_fields_are_dropped_and_reasoning_is_aliased() {
        let out = render(
            "{% for m in messages %}{{ m.content is defined }} {{ m.reasoning_content }} {{ m.thinking }} {{ tools }}{% endfor %}",
            serde_json::json!([{"role": "assistant", "content": null, "reasoning": "why"}]),
        )
        .expect("renders");
        assert_eq!(out, "False why why None");
    }

    #[test]
    fn blocks_are_trimmed_like_jinja2_in_transformers() {
        let out = render(
            "{% for m in messages %}\n  {% if true %}\n{{ m.role }}\n  {% endif %}\n{% endfor %}\n",
            serde_json::json!([{"role": "a"}, {"role": "b"}]),
        )
        .expect("renders");
        assert_eq!(out, "a\nb\n");
    }
}
