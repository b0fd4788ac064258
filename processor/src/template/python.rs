//! Python's side of transformers' Jinja2 that chat templates rely on: `raise_exception`,
//! `tojson` as `json.dumps` writes JSON, `'fmt' % x` formatting, and values printed as
//! Python's `str()` / `repr()` print them.

use minijinja::{Error as JinjaError, ErrorKind, Value};
use serde_json::Value as Json;

pub(super) fn raise_exception(message: String) -> Result<Value, JinjaError> {
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
pub(super) fn tojson(value: Value, kwargs: minijinja::value::Kwargs) -> Result<Value, JinjaError> {
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
pub(super) fn pyformat(format: String, arg: Value) -> Result<String, JinjaError> {
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
pub(super) fn python_percent(source: &str) -> String {
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
pub(super) fn python_str(value: &Value) -> String {
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
