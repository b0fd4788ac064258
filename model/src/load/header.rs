//! A safetensors file's header: its tensors, their dtypes, shapes and byte ranges, checked
//! against the file's size before anything is allocated for them.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use burn::tensor::DType;
use regex::Regex;
use serde_json::Value;

use super::MAX_HEADER;
use crate::weights::WeightsError;

/// One tensor of a weight file.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    /// The name in the checkpoint.
    pub(super) name: String,
    pub(super) file: usize,
    /// Absolute byte offset in the file.
    pub(super) start: u64,
    pub(super) len: u64,
    pub(super) dtype: DType,
    pub(super) shape: Vec<usize>,
}

pub(super) fn element_size(dtype: DType) -> usize {
    match dtype {
        DType::F32 | DType::I32 => 4,
        DType::U8 => 1,
        _ => 2,
    }
}

fn parse_dtype(name: &str) -> Option<DType> {
    Some(match name {
        "F32" => DType::F32,
        "BF16" => DType::BF16,
        "F16" => DType::F16,
        // A quantized checkpoint's packed rows (Nuri's) and packed codes (AWQ's).
        "U8" => DType::U8,
        "I32" => DType::I32,
        _ => return None,
    })
}

/// Reads the header of `path` and lists its tensors under their module paths.
pub(super) fn read_header(
    path: &Path,
    file_index: usize,
    rules: &[(Regex, &str)],
    index: &mut BTreeMap<String, Entry>,
) -> Result<File, WeightsError> {
    let io = |source| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let bad = |message: String| WeightsError::Store {
        path: path.to_path_buf(),
        message,
    };
    let file = File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    let mut len = [0u8; 8];
    file.read_exact_at(&mut len, 0)
        .map_err(|_| bad("not a safetensors file: shorter than its 8-byte header length".into()))?;
    let header_len = u64::from_le_bytes(len);
    if header_len > MAX_HEADER || 8 + header_len > size {
        return Err(bad(format!(
            "not a safetensors file: its header claims {header_len} bytes, the file has {size}"
        )));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact_at(&mut header, 8).map_err(io)?;
    let header: Value = serde_json::from_slice(&header)
        .map_err(|e| bad(format!("the safetensors header is not JSON: {e}")))?;
    let Some(tensors) = header.as_object() else {
        return Err(bad("the safetensors header is not a JSON object".into()));
    };
    let data_start = 8 + header_len;
    for (name, info) in tensors {
        if name == "__metadata__" {
            continue;
        }
        let field = |what: &str| bad(format!("tensor {name}: {what}"));
        let dtype_name = info["dtype"].as_str().unwrap_or_default();
        let dtype = parse_dtype(dtype_name).ok_or_else(|| {
            field(&format!(
                "dtype {dtype_name:?}: a checkpoint's floats are read as F32, BF16 or F16, quantized weights as U8 (Nuri) or I32 (AWQ)"
            ))
        })?;
        let shape: Vec<usize> = info["shape"]
            .as_array()
            .and_then(|dims| {
                dims.iter()
                    .map(|d| d.as_u64().map(|d| d as usize))
                    .collect()
            })
            .ok_or_else(|| field("no shape"))?;
        let offsets: Vec<u64> = info["data_offsets"]
            .as_array()
            .and_then(|o| o.iter().map(Value::as_u64).collect())
            .ok_or_else(|| field("no data_offsets"))?;
        let &[begin, end] = offsets.as_slice() else {
            return Err(field("data_offsets is not [begin, end]"));
        };
        let want = shape
            .iter()
            .try_fold(element_size(dtype) as u64, |n, &d| n.checked_mul(d as u64));
        if end < begin || Some(end - begin) != want || data_start + end > size {
            return Err(field(&format!(
                "data_offsets [{begin}, {end}] do not hold a {dtype_name} tensor of shape {shape:?} within the file's {size} bytes"
            )));
        }
        let mut module_path = name.clone();
        for (pattern, replacement) in rules {
            module_path = pattern.replace_all(&module_path, *replacement).into_owned();
        }
        let entry = Entry {
            name: name.clone(),
            file: file_index,
            start: data_start + begin,
            len: end - begin,
            dtype,
            shape,
        };
        if let Some(before) = index.insert(module_path.clone(), entry) {
            return Err(bad(format!(
                "tensors {} and {name} both load into {module_path}",
                before.name
            )));
        }
    }
    Ok(file)
}
