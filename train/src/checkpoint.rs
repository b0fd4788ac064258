//! Checkpoints that survive a crash. Each is a directory `step-NNNNNNNN/` holding the model
//! (Burn's burnpack format, which keeps parameter ids so the optimizer state still matches),
//! the optimizer state, and `state.json`: the step, the data loader's position, the run's
//! full config and a size + checksum of every other file. It is written as
//! `.tmp-step-NNNNNNNN/` (every file fsynced, `state.json` last) and renamed into place, so
//! a kill at any moment leaves the previous checkpoint whole. Loading verifies the
//! checksums and falls back to the previous checkpoint when one does not match.

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

/// Where training stands, saved in `state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps done.
    pub step: usize,
    /// The data loader's position: epoch and batches of its plan consumed.
    pub epoch: u64,
    pub batch_in_epoch: usize,
    pub samples_seen: u64,
    pub tokens_seen: u64,
    /// Bad samples met so far.
    pub bad_samples: u64,
    /// Seconds spent training so far (for `max_minutes`).
    #[serde(default)]
    pub train_seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FileSum {
    bytes: u64,
    fnv1a64: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StateFile {
    format: u32,
    state: TrainState,
    config: TrainConfig,
    files: std::collections::BTreeMap<String, FileSum>,
}

/// FNV-1a, 64-bit: enough to tell a torn or corrupted file from a whole one.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
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

/// Writes a checkpoint atomically and keeps only the newest `keep`.
pub fn save(
    dir: &Path,
    model: &NuriModel,
    optim: &ModuleOptimizer,
    state: &TrainState,
    config: &TrainConfig,
    keep: usize,
) -> Result<PathBuf, TrainError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
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
                fnv1a64: format!("{:016x}", fnv1a64(&bytes)),
            },
        );
    }
    let state_file = StateFile {
        format: 1,
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
    for (_, old) in list(dir).into_iter().skip(keep) {
        std::fs::remove_dir_all(&old).map_err(io(&old))?;
    }
    Ok(final_dir)
}

/// Why a checkpoint was passed over.
fn verify(path: &Path) -> Result<StateFile, String> {
    let text =
        std::fs::read_to_string(path.join(STATE_FILE)).map_err(|e| format!("{STATE_FILE}: {e}"))?;
    let state: StateFile = serde_json::from_str(&text).map_err(|e| format!("{STATE_FILE}: {e}"))?;
    for (file, sum) in &state.files {
        let bytes = std::fs::read(path.join(file)).map_err(|e| format!("{file}: {e}"))?;
        let hash = format!("{:016x}", fnv1a64(&bytes));
        if bytes.len() as u64 != sum.bytes || hash != sum.fnv1a64 {
            return Err(format!(
                "{file}: {} bytes with checksum {hash}, but {STATE_FILE} recorded {} bytes with {}",
                bytes.len(),
                sum.bytes,
                sum.fnv1a64
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
    /// Checkpoints passed over as corrupt, with why.
    pub skipped: Vec<(PathBuf, String)>,
}

/// Restores the newest whole checkpoint under `dir`; corrupt ones are skipped (and listed);
/// an error when none is whole. `model` must have the run's architecture; its weights and
/// parameter ids are replaced.
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
            skipped,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_the_reference_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
