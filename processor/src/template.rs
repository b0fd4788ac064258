//! Chat templates: a checkpoint's own Jinja template (`chat_template.jinja`,
//! `chat_template.json` or `tokenizer_config.json`, in the order transformers looks), rendered
//! with minijinja configured as transformers configures Jinja2 (`trim_blocks`,
//! `lstrip_blocks`, loop controls, Python string/dict methods, `raise_exception`, a
//! `tojson` that writes JSON as Python's `json.dumps` does). Without one, Qwen2-VL's own
//! template (ChatML with vision blocks) is used.

use std::path::{Path, PathBuf};

use minijinja::{Environment, Error as JinjaError, ErrorKind, Value};
use serde_json::Value as Json;

use crate::ProcessorError;

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

fn raise_exception(message: String) -> Result<Value, JinjaError> {
    Err(JinjaError::new(ErrorKind::InvalidOperation, message))
}

/// Python's `json.dumps(value, ensure_ascii=False)` separators (`", "`, `": "`), or with
/// `indent` the indented layout.
fn python_json(value: &Json, indent: Option<usize>, depth: usize, out: &mut String) {
    let newline = |out: &mut String, depth: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * depth));
        }
    };
    let item_sep = if indent.is_some() { "," } else { ", " };
    match value {
        Json::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                python_json(item, indent, depth + 1, out);
            }
            newline(out, depth);
            out.push(']');
        }
        Json::Object(map) if !map.is_empty() => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                out.push_str(&Json::String(k.clone()).to_string());
                out.push_str(": ");
                python_json(v, indent, depth + 1, out);
            }
            newline(out, depth);
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn tojson(value: Value, kwargs: minijinja::value::Kwargs) -> Result<Value, JinjaError> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let json = serde_json::to_value(&value)
        .map_err(|e| JinjaError::new(ErrorKind::InvalidOperation, e.to_string()))?;
    let mut out = String::new();
    python_json(&json, indent, 0, &mut out);
    Ok(Value::from_safe_string(out))
}

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
    /// tokens, `add_vision_id`, `tools`, ...).
    pub fn render(
        &self,
        messages: &Json,
        add_generation_prompt: bool,
        extra: &serde_json::Map<String, Json>,
    ) -> Result<String, ProcessorError> {
        let mut ctx = extra.clone();
        ctx.insert("messages".into(), messages.clone());
        ctx.insert(
            "add_generation_prompt".into(),
            Json::Bool(add_generation_prompt),
        );
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
    fn blocks_are_trimmed_like_jinja2_in_transformers() {
        let out = render(
            "{% for m in messages %}\n  {% if true %}\n{{ m.role }}\n  {% endif %}\n{% endfor %}\n",
            serde_json::json!([{"role": "a"}, {"role": "b"}]),
        )
        .expect("renders");
        assert_eq!(out, "a\nb\n");
    }
}
