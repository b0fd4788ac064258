//! Checkpoints that survive a crash. Each is a directory `step-NNNNNNNN/` holding the model
//! (Burn's burnpack format, which keeps parameter ids so the optimizer state still matches),
//! the optimizer state, and `state.json`: the step, the data loader's position, the run's
//! full config and the size and CRC-32 (IEEE, `crc32fast`) of every other file. It is written as
//! `.tmp-step-NNNNNNNN/` (every file fsynced, `state.json` last) and renamed into place, so
//! a kill at any moment leaves the previous checkpoint whole. Loading verifies the
//! checksums (every file must be listed) and falls back to the previous checkpoint when one
//! does not match; the corrupt one is then set aside as `step-NNNNNNNN.corrupt`, so that it
//! is never "newest" again and pruning never counts it. Pruning never removes the checkpoint
//! just written.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::optim::ModuleOptimizer;
use burn::store::{BurnpackStore, ModuleSnapshot};
use nuri_model::NuriModel;
use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::config::TrainConfig;

const MODEL_FILE: &str = "model.bpk";
const OPTIM_FILE: &str = "optim.bpk";
const STATE_FILE: &str = "state.json";
/// The files `state.json` must list, with their checksums.
const CHECKSUMMED: [&str; 2] = [MODEL_FILE, OPTIM_FILE];
/// The suffix of a checkpoint set aside as corrupt (a name [`list`] does not parse).
const CORRUPT_SUFFIX: &str = ".corrupt";
/// The prefix of a pruned checkpoint while it is being removed (renamed first, so that a
/// kill during the removal leaves no torn `step-*` directory).
const TRASH_PREFIX: &str = ".trash-";
/// The layout of `state.json`. Format 1 (before CRC-32) recorded FNV-1a checksums.
const STATE_FORMAT: u32 = 2;

/// Where training stands, saved in `state.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps done.
    pub step: usize,
    /// The data loader's position: epoch and batches of its plan consumed.
    pub epoch: u64,
    pub batch_in_epoch: usize,
    pub samples_seen: u64,
    pub tokens_seen: u64,
    /// Bad samples met so far, each line counted once: those of the file and those in
    /// [`TrainState::failed_samples`].
    pub bad_samples: u64,
    /// The samples (indices in the file's usable samples) that failed when processed, so
    /// that a line is reported and counted once over the epochs and resumes, and a run
    /// whose every sample fails ends.
    #[serde(default)]
    pub failed_samples: std::collections::BTreeSet<usize>,
    /// Seconds spent training so far (for `max_minutes`).
    #[serde(default)]
    pub train_seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FileSum {
    bytes: u64,
    /// CRC-32 (IEEE) of the file, as 8 hex digits.
    crc32: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StateFile {
    format: u32,
    state: TrainState,
    config: TrainConfig,
    files: std::collections::BTreeMap<String, FileSum>,
}

/// The checksum recorded for a file: enough to tell a torn or corrupted file from a whole
/// one.
fn checksum(bytes: &[u8]) -> String {
    format!("{:08x}", crc32fast::hash(bytes))
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn checkpoint_name(step: usize) -> String {
    format!("step-{step:08}")
}

/// The checkpoint directories under `dir`, newest first.
pub fn list(dir: &Path) -> Vec<(usize, PathBuf)> {
    let mut found: Vec<(usize, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let step = name.strip_prefix("step-")?.parse().ok()?;
            Some((step, e.path()))
        })
        .collect();
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    found
}

/// Writes a checkpoint atomically and keeps `keep` checkpoints: this one and the newest
/// others.
pub fn save(
    dir: &Path,
    model: &NuriModel,
    optim: &ModuleOptimizer,
    state: &TrainState,
    config: &TrainConfig,
    keep: usize,
) -> Result<PathBuf, TrainError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    remove_trash(dir)?;
    let name = checkpoint_name(state.step);
    let tmp = dir.join(format!(".tmp-{name}"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let store_error = |path: &Path, e: String| TrainError::Checkpoint {
        path: path.to_path_buf(),
        message: e,
    };
    let model_path = tmp.join(MODEL_FILE);
    let mut store = BurnpackStore::from_file(&model_path).overwrite(true);
    model
        .save_into(&mut store)
        .map_err(|e| store_error(&model_path, e.to_string()))?;
    let optim_path = tmp.join(OPTIM_FILE);
    optim
        .save(&optim_path)
        .map_err(|e| store_error(&optim_path, e.to_string()))?;
    let mut files = std::collections::BTreeMap::new();
    for file in [MODEL_FILE, OPTIM_FILE] {
        let path = tmp.join(file);
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        File::open(&path)
            .and_then(|f| f.sync_all())
            .map_err(io(&path))?;
        files.insert(
            file.to_string(),
            FileSum {
                bytes: bytes.len() as u64,
                crc32: checksum(&bytes),
            },
        );
    }
    let state_file = StateFile {
        format: STATE_FORMAT,
        state: state.clone(),
        config: config.clone(),
        files,
    };
    let state_path = tmp.join(STATE_FILE);
    let mut f = File::create(&state_path).map_err(io(&state_path))?;
    f.write_all(
        serde_json::to_string_pretty(&state_file)
            .expect("serializable")
            .as_bytes(),
    )
    .and_then(|()| f.sync_all())
    .map_err(io(&state_path))?;
    let final_dir = dir.join(&name);
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).map_err(io(&final_dir))?;
    }
    std::fs::rename(&tmp, &final_dir).map_err(io(&final_dir))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    prune(dir, &final_dir, keep)?;
    Ok(final_dir)
}

/// Keeps `keep` checkpoints: `current` (just written) and the newest others. A pruned one is
/// renamed out of [`list`]'s sight before it is removed.
fn prune(dir: &Path, current: &Path, keep: usize) -> Result<(), TrainError> {
    let others = list(dir).into_iter().filter(|(_, p)| p != current);
    for (_, old) in others.skip(keep.saturating_sub(1)) {
        let name = old.file_name().expect("a step-* directory");
        let trash = dir.join(format!("{TRASH_PREFIX}{}", name.to_string_lossy()));
        std::fs::rename(&old, &trash).map_err(io(&old))?;
        std::fs::remove_dir_all(&trash).map_err(io(&trash))?;
    }
    Ok(())
}

/// Removes what a killed run left half-removed (`.trash-*` directories).
fn remove_trash(dir: &Path) -> Result<(), TrainError> {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(TRASH_PREFIX)
        {
            let path = entry.path();
            std::fs::remove_dir_all(&path).map_err(io(&path))?;
        }
    }
    Ok(())
}

/// Why a checkpoint was passed over.
fn verify(path: &Path) -> Result<StateFile, String> {
    let text =
        std::fs::read_to_string(path.join(STATE_FILE)).map_err(|e| format!("{STATE_FILE}: {e}"))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{STATE_FILE}: {e}"))?;
    let format = json.get("format").and_then(serde_json::Value::as_u64);
    if format != Some(u64::from(STATE_FORMAT)) {
        return Err(format!(
            "{STATE_FILE}: format {}, but this build reads format {STATE_FORMAT} (format 1 \
             checkpoints, with FNV-1a checksums, were written before 2026-12: resume them with \
             that build, or start the run afresh)",
            format.map_or("missing".to_string(), |f| f.to_string())
        ));
    }
    let state: StateFile =
        serde_json::from_value(json).map_err(|e| format!("{STATE_FILE}: {e}"))?;
    // An empty or incomplete list would let unverified files load.
    for file in CHECKSUMMED {
        if !state.files.contains_key(file) {
            return Err(format!("{STATE_FILE} lists no checksum for {file}"));
        }
    }
    for entry in std::fs::read_dir(path).map_err(|e| e.to_string())? {
        let name = entry.map_err(|e| e.to_string())?.file_name();
        let name = name.to_string_lossy();
        if name != STATE_FILE && !state.files.contains_key(name.as_ref()) {
            return Err(format!("{name}: not listed in {STATE_FILE}"));
        }
    }
    for (file, sum) in &state.files {
        if Path::new(file).file_name() != Some(std::ffi::OsStr::new(file)) {
            return Err(format!(
                "{STATE_FILE} lists `{file}`, not a file of the checkpoint"
            ));
        }
        let bytes = std::fs::read(path.join(file)).map_err(|e| format!("{file}: {e}"))?;
        let hash = checksum(&bytes);
        if bytes.len() as u64 != sum.bytes || hash != sum.crc32 {
            return Err(format!(
                "{file}: {} bytes with CRC-32 {hash}, but {STATE_FILE} recorded {} bytes with {}",
                bytes.len(),
                sum.bytes,
                sum.crc32
            ));
        }
    }
    Ok(state)
}

/// A checkpoint restored into `model` and `optim`.
pub struct Restored {
    pub path: PathBuf,
    pub state: TrainState,
    pub config: TrainConfig,
    pub model: NuriModel,
    pub optim: ModuleOptimizer,
    /// Checkpoints passed over as corrupt (where they were set aside), with why.
    pub skipped: Vec<(PathBuf, String)>,
}

/// Restores the newest whole checkpoint under `dir`; corrupt ones newer than it are set
/// aside (renamed `*.corrupt`) and listed; an error, renaming nothing, when none is whole.
/// `model` must have the run's architecture; its weights and parameter ids are replaced.
pub fn load_latest(
    dir: &Path,
    mut model: NuriModel,
    optim: ModuleOptimizer,
) -> Result<Restored, TrainError> {
    let mut skipped = Vec::new();
    for (_, path) in list(dir) {
        let state = match verify(&path) {
            Ok(state) => state,
            Err(why) => {
                skipped.push((path, why));
                continue;
            }
        };
        let model_path = path.join(MODEL_FILE);
        let mut store = BurnpackStore::from_file(&model_path);
        let applied = model
            .load_from(&mut store)
            .map_err(|e| TrainError::Checkpoint {
                path: model_path.clone(),
                message: e.to_string(),
            })?;
        if !applied.errors.is_empty() || !applied.missing.is_empty() {
            return Err(TrainError::Checkpoint {
                path: model_path,
                message: format!(
                    "does not fit the configured model: missing {:?}, errors {:?}",
                    applied.missing, applied.errors
                ),
            });
        }
        let optim_path = path.join(OPTIM_FILE);
        let optim = optim
            .load(&optim_path)
            .map_err(|e| TrainError::Checkpoint {
                path: optim_path,
                message: e.to_string(),
            })?;
        return Ok(Restored {
            path,
            state: state.state,
            config: state.config,
            model,
            optim,
            skipped: skipped.into_iter().map(set_aside).collect(),
        });
    }
    Err(TrainError::Checkpoint {
        path: dir.to_path_buf(),
        message: format!(
            "no whole checkpoint to resume from: {}",
            skipped
                .iter()
                .map(|(p, why)| format!("{}: {why}", p.display()))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    })
}

/// Renames a corrupt checkpoint `step-N.corrupt` (`.corrupt-2`, … when taken), out of
/// [`list`]'s sight, so that it is neither resumed nor counted when pruning; returns its new
/// path, or its old one with why it could not be renamed (pruning still never removes the
/// checkpoint just written).
fn set_aside((path, why): (PathBuf, String)) -> (PathBuf, String) {
    let name = path
        .file_name()
        .expect("a step-* directory")
        .to_string_lossy();
    let aside = (1..)
        .map(|i| match i {
            1 => path.with_file_name(format!("{name}{CORRUPT_SUFFIX}")),
            i => path.with_file_name(format!("{name}{CORRUPT_SUFFIX}-{i}")),
        })
        .find(|p| !p.exists())
        .expect("a free name");
    match std::fs::rename(&path, &aside) {
        Ok(()) => (aside, why),
        Err(e) => (path, format!("{why} (could not set it aside: {e})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_is_the_ieee_crc32() {
        // The standard check value of CRC-32/ISO-HDLC.
        assert_eq!(checksum(b"123456789"), "cbf43926");
        assert_eq!(checksum(b""), "00000000");
    }

    #[test]
    fn a_format_1_checkpoint_is_refused_with_a_reason() {
        let dir = std::env::temp_dir().join(format!("nuri-ckpt-v1-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(STATE_FILE), r#"{"format": 1, "files": {}}"#).unwrap();
        let why = verify(&dir).unwrap_err();
        assert!(
            why.contains("format 1") && why.contains("start the run afresh"),
            "{why}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
