//! What the command-line tests share: the fixtures' folder and running the `nuri` binary.

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// Runs `nuri ARGS`: whether it succeeded, its stdout and its stderr.
pub fn nuri(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nuri"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
