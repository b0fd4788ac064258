//! Benchmark files as rows of named fields: VLMEvalKit's TSV (pandas' `to_csv(sep='\t')`:
//! quoted where a field holds a tab, a quote or a newline; a missing value is an empty
//! field), JSONL (one object per line) or a JSON array of objects.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value as Json};
use sha2::{Digest, Sha256};

/// One row: where it is (`file:line`) and its fields (TSV cells as strings, empty cells
/// left out).
#[derive(Debug, Clone)]
pub struct Row {
    pub at: String,
    pub fields: Map<String, Json>,
}

impl Row {
    /// A field as text: strings trimmed, numbers written out; `None` when absent, empty or
    /// `NaN` (pandas' missing value).
    pub fn text(&self, name: &str) -> Option<String> {
        let s = match self.fields.get(name)? {
            Json::String(s) => s.trim().to_string(),
            Json::Null => return None,
            Json::Number(n) => match n.as_f64() {
                // pandas writes integer columns with missing values as floats (`12.0`).
                Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
                _ => n.to_string(),
            },
            other => other.to_string(),
        };
        (!s.is_empty() && s != "NaN" && s != "nan").then_some(s)
    }

    /// The first of `names` that is present.
    pub fn first(&self, names: &[&str]) -> Option<String> {
        names.iter().find_map(|n| self.text(n))
    }

    /// A field holding a list: a JSON array, or a string holding one written as JSON or as
    /// a Python literal (`['a', "b"]`, as VLMEvalKit's TSVs store lists); a plain string is
    /// a list of one.
    pub fn list(&self, name: &str) -> Result<Option<Vec<String>>> {
        match self.fields.get(name) {
            Some(Json::Array(items)) => Ok(Some(
                items
                    .iter()
                    .map(|v| match v {
                        Json::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect(),
            )),
            _ => match self.text(name) {
                None => Ok(None),
                Some(s) if s.starts_with('[') && s.ends_with(']') => python_list(&s)
                    .map(Some)
                    .with_context(|| format!("{}: field `{name}` is not a list", self.at)),
                Some(s) => Ok(Some(vec![s])),
            },
        }
    }
}

/// A list literal of strings, as Python's `repr` or JSON writes it.
pub fn python_list(s: &str) -> Result<Vec<String>> {
    let inner = s
        .trim()
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .context("a list starts with [ and ends with ]")?;
    let mut out = Vec::new();
    let mut chars = inner.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace() || *c == ',').is_some() {}
        let Some(quote) = chars.next() else {
            return Ok(out);
        };
        if quote != '\'' && quote != '"' {
            // Unquoted items (numbers): up to the next comma.
            let mut item = String::from(quote);
            while let Some(c) = chars.next_if(|c| *c != ',') {
                item.push(c);
            }
            out.push(item.trim().to_string());
            continue;
        }
        let mut item = String::new();
        loop {
            match chars.next() {
                None => bail!("an unterminated string in the list"),
                Some(c) if c == quote => break,
                Some('\\') => match chars.next() {
                    Some('n') => item.push('\n'),
                    Some('t') => item.push('\t'),
                    Some(c) => item.push(c),
                    None => bail!("an unterminated string in the list"),
                },
                Some(c) => item.push(c),
            }
        }
        out.push(item);
    }
}

/// The rows of a benchmark file, by its extension: `.tsv`, `.jsonl`, `.json`.
pub fn read_rows(file: &Path) -> Result<Vec<Row>> {
    let name = file.display().to_string();
    let ext = file
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let rows = match ext.as_str() {
        "tsv" => read_tsv(file, &name)?,
        "jsonl" => {
            let text = read_text(file)?;
            let mut rows = Vec::new();
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let at = format!("{name}:{}", i + 1);
                rows.push(object(serde_json::from_str(line), &at)?);
            }
            rows
        }
        "json" => {
            let value: Json = serde_json::from_str(&read_text(file)?)
                .with_context(|| format!("{name}: not JSON"))?;
            let Json::Array(items) = value else {
                bail!("{name}: a JSON benchmark is an array of objects");
            };
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| object(Ok(v), &format!("{name}[{i}]")))
                .collect::<Result<_>>()?
        }
        _ => bail!("{name}: a benchmark file is .tsv (VLMEvalKit), .jsonl or .json"),
    };
    if rows.is_empty() {
        bail!("{name}: no rows");
    }
    Ok(rows)
}

fn read_text(file: &Path) -> Result<String> {
    std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))
}

fn object(value: serde_json::Result<Json>, at: &str) -> Result<Row> {
    match value.with_context(|| format!("{at}: not JSON"))? {
        Json::Object(fields) => Ok(Row {
            at: at.to_string(),
            fields,
        }),
        _ => bail!("{at}: a row is a JSON object"),
    }
}

fn read_tsv(file: &Path, name: &str) -> Result<Vec<Row>> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(b'\t')
        .from_path(file)
        .with_context(|| format!("reading {name}"))?;
    let headers = reader
        .headers()
        .with_context(|| format!("{name}: no header line"))?
        .clone();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map(|p| p.line()).unwrap_or(0);
            anyhow::anyhow!("{name}:{line}: {e}")
        })?;
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        let mut fields = Map::new();
        for (h, v) in headers.iter().zip(record.iter()) {
            if !v.is_empty() {
                fields.insert(h.to_string(), Json::String(v.to_string()));
            }
        }
        rows.push(Row {
            at: format!("{name}:{line}"),
            fields,
        });
    }
    Ok(rows)
}

/// The file's SHA-256, hex.
pub fn sha256(file: &Path) -> Result<String> {
    let mut f = std::fs::File::open(file).with_context(|| format!("reading {}", file.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_and_json_lists() {
        assert_eq!(
            python_list(r#"['A. it\'s red', "B. blue, dark", 'C']"#).unwrap(),
            ["A. it's red", "B. blue, dark", "C"]
        );
        assert_eq!(python_list("[1, 2]").unwrap(), ["1", "2"]);
        assert_eq!(python_list("[]").unwrap(), Vec::<String>::new());
        assert!(python_list("['open").is_err());
    }
}
