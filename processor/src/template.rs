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

/// transformers' `tojson` filter: `json.dumps(x, ensure_ascii=False, indent=None,
/// separators=None, sort_keys=False)`, each overridable by keyword.
fn tojson(value: Value, kwargs: minijinja::value::Kwargs) -> Result<Value, JinjaError> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let separators: Option<Value> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let mut json = serde_json::to_value(&value)
        .map_err(|e| JinjaError::new(ErrorKind::InvalidOperation, e.to_string()))?;
    if sort_keys == Some(true) {
        json = sorted_keys(json);
    }
    let mut out = String::new();
    python_json(&json, indent, 0, &mut out);
    if let Some(separators) = separators.filter(|s| !s.is_none()) {
        // Only the compact form `(",", ":")` is in use; other separators are refused.
        let parts: Vec<String> = separators
            .try_iter()?
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .collect();
        if parts != [",", ":"] {
            return Err(JinjaError::new(
                ErrorKind::InvalidOperation,
                format!("tojson: separators {parts:?} are not supported"),
            ));
        }
        out = serde_json::to_string(&json).expect("a JSON value serializes");
    }
    if ensure_ascii == Some(true) {
        out = out
            .chars()
            .map(|c| {
                if c.is_ascii() {
                    c.to_string()
                } else {
                    c.encode_utf16(&mut [0; 2])
                        .iter()
                        .map(|u| format!("\\u{u:04x}"))
                        .collect()
                }
            })
            .collect();
    }
    Ok(Value::from_safe_string(out))
}

fn sorted_keys(json: Json) -> Json {
    match json {
        Json::Object(map) => {
            let mut entries: Vec<(String, Json)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Json::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, sorted_keys(v)))
                    .collect(),
            )
        }
        Json::Array(items) => Json::Array(items.into_iter().map(sorted_keys).collect()),
        other => other,
    }
}

/// Python's `str % arg` for the one-argument formats templates use (`%s`, `%d`, `%02d`,
/// `%%`): registered as the `pyformat` filter, which [`python_percent`] rewrites `'…' % x`
/// into (minijinja's `%` is numeric only).
fn pyformat(format: String, arg: Value) -> Result<String, JinjaError> {
    let mut out = String::new();
    let mut chars = format.chars().peekable();
    let mut used = false;
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = String::new();
        while let Some(&d) = chars.peek() {
            if d.is_ascii_digit() || d == '-' {
                spec.push(d);
                chars.next();
            } else {
                break;
            }
        }
        let kind = chars
            .next()
            .ok_or_else(|| JinjaError::new(ErrorKind::InvalidOperation, "incomplete % format"))?;
        let text = match kind {
            '%' => {
                out.push('%');
                continue;
            }
            's' => python_str(&arg),
            'd' | 'i' => {
                let n = i64::try_from(arg.clone()).map_err(|_| {
                    JinjaError::new(
                        ErrorKind::InvalidOperation,
                        "%d format: a number is required",
                    )
                })?;
                n.to_string()
            }
            other => {
                return Err(JinjaError::new(
                    ErrorKind::InvalidOperation,
                    format!("% format `{other}` is not supported"),
                ));
            }
        };
        used = true;
        let zero = spec.starts_with('0');
        let width: usize = spec.trim_start_matches(['0', '-']).parse().unwrap_or(0);
        let pad = width.saturating_sub(text.chars().count());
        if spec.starts_with('-') {
            out.push_str(&text);
            out.push_str(&" ".repeat(pad));
        } else if zero {
            let (sign, digits) = text
                .strip_prefix('-')
                .map_or(("", text.as_str()), |d| ("-", d));
            out.push_str(sign);
            out.push_str(&"0".repeat(pad));
            out.push_str(digits);
        } else {
            out.push_str(&" ".repeat(pad));
            out.push_str(&text);
        }
    }
    if !used {
        return Err(JinjaError::new(
            ErrorKind::InvalidOperation,
            "not all arguments converted during string formatting",
        ));
    }
    Ok(out)
}

/// Rewrites `'fmt' % name` (a string literal formatted with one variable, as Python's `%`)
/// into `('fmt' | pyformat(name))` before compiling.
fn python_percent(source: &str) -> String {
    let bytes = source.as_bytes();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < bytes.len() {
        let quote = bytes[i];
        if quote != b'\'' && quote != b'"' {
            let c = source[i..].chars().next().expect("in bounds");
            out.push(c);
            i += c.len_utf8();
            continue;
        }
        // A string literal: find its end.
        let mut j = i + 1;
        while j < bytes.len() && bytes[j] != quote {
            j += if bytes[j] == b'\\' { 2 } else { 1 };
        }
        let end = (j + 1).min(bytes.len());
        let literal = &source[i..end];
        // Then ` % name` (not `%}`: a tag's end).
        let mut k = end;
        while k < bytes.len() && bytes[k] == b' ' {
            k += 1;
        }
        let is_percent = k < bytes.len() && bytes[k] == b'%';
        let mut m = k + 1;
        while is_percent && m < bytes.len() && bytes[m] == b' ' {
            m += 1;
        }
        let name_start = m;
        if is_percent {
            m = operand_end(bytes, m);
        }
        if is_percent
            && m > name_start
            && (bytes[name_start].is_ascii_alphabetic() || bytes[name_start] == b'_')
        {
            out.push_str(&format!(
                "({literal} | pyformat({}))",
                &source[name_start..m]
            ));
            i = m;
        } else {
            out.push_str(literal);
            i = end;
        }
    }
    out
}

/// The end of the operand of `%` starting at `start`: a name with attributes (`.x`),
/// subscripts (`[…]`) and argument-less filters (`| length`).
fn operand_end(bytes: &[u8], start: usize) -> usize {
    let ident = |mut i: usize| {
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
            i += 1;
        }
        i
    };
    let mut m = ident(start);
    if m == start {
        return start;
    }
    loop {
        let mut k = m;
        while k < bytes.len() && bytes[k] == b' ' {
            k += 1;
        }
        match bytes.get(m) {
            Some(b'.') if ident(m + 1) > m + 1 => m = ident(m + 1),
            Some(b'[') => {
                let mut depth = 0;
                let mut j = m;
                while j < bytes.len() {
                    match bytes[j] {
                        b'[' => depth += 1,
                        b']' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
                if j >= bytes.len() {
                    return m;
                }
                m = j + 1;
            }
            _ if bytes.get(k) == Some(&b'|') => {
                let mut f = k + 1;
                while f < bytes.len() && bytes[f] == b' ' {
                    f += 1;
                }
                let end = ident(f);
                if end == f {
                    return m;
                }
                m = end;
            }
            _ => return m,
        }
    }
}

/// Python's `repr` of a string: single quotes unless the text has one and no double quote.
fn python_repr_str(s: &str, out: &mut String) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

/// Python's `repr` of a value (lists and dicts print their items this way).
fn python_repr(value: &Value, out: &mut String) {
    use minijinja::value::ValueKind;
    match value.kind() {
        ValueKind::String => python_repr_str(value.as_str().unwrap_or_default(), out),
        ValueKind::Seq | ValueKind::Iterable => {
            out.push('[');
            for (i, item) in value.try_iter().into_iter().flatten().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                python_repr(&item, out);
            }
            out.push(']');
        }
        ValueKind::Map => {
            out.push('{');
            for (i, key) in value.try_iter().into_iter().flatten().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                python_repr(&key, out);
                out.push_str(": ");
                python_repr(&value.get_item(&key).unwrap_or_default(), out);
            }
            out.push('}');
        }
        _ => out.push_str(&python_str(value)),
    }
}

/// Python's `str()` of a value, which is how Jinja2 prints `{{ x }}`: `True`, `None`, a
/// float with its `.0`, lists and dicts as their repr.
fn python_str(value: &Value) -> String {
    use minijinja::value::ValueKind;
    match value.kind() {
        ValueKind::Undefined => String::new(),
        ValueKind::None => "None".into(),
        ValueKind::Bool => if value.is_true() { "True" } else { "False" }.into(),
        ValueKind::String => value.as_str().unwrap_or_default().to_string(),
        ValueKind::Number => match f64::try_from(value.clone()) {
            Ok(f) if value.as_i64().is_none() && f.fract() == 0.0 && f.abs() < 1e16 => {
                format!("{f:.1}")
            }
            _ => value.to_string(),
        },
        ValueKind::Seq | ValueKind::Map | ValueKind::Iterable => {
            let mut out = String::new();
            python_repr(value, &mut out);
            out
        }
        _ => value.to_string(),
    }
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
