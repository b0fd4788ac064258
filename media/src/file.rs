//! Opening media files: only regular files are opened, so a FIFO, a device or a folder given
//! as a file is a clear error instead of a read that blocks or never ends.

use std::fs::File;
use std::path::Path;

use crate::MediaError;

/// What a path that is not a regular file is, for errors.
fn kind(file_type: std::fs::FileType) -> &'static str {
    if file_type.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_fifo() {
            return "a FIFO";
        }
        if file_type.is_socket() {
            return "a socket";
        }
        if file_type.is_char_device() {
            return "a character device";
        }
        if file_type.is_block_device() {
            return "a block device";
        }
    }
    "a special file"
}

/// Refuses `path` unless it is a regular file (after following symbolic links).
pub fn check_regular_file(path: &Path) -> Result<(), MediaError> {
    let metadata = std::fs::metadata(path).map_err(|source| MediaError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if metadata.is_file() {
        return Ok(());
    }
    Err(MediaError::NotAFile {
        path: path.to_path_buf(),
        kind: kind(metadata.file_type()),
    })
}

/// Opens `path` for reading if it is a regular file (checked before opening: opening a FIFO
/// blocks until something writes to it).
pub fn open_regular_file(path: &Path) -> Result<File, MediaError> {
    check_regular_file(path)?;
    File::open(path).map_err(|source| MediaError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a whole regular file; see [`open_regular_file`].
pub fn read_regular_file(path: &Path) -> Result<Vec<u8>, MediaError> {
    use std::io::Read;
    let mut file = open_regular_file(path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|source| MediaError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(bytes)
}

/// Test helper: a FIFO at `path` (false where `mkfifo` is missing). A writer thread opens
/// it, so a read that wrongly opens it ends (empty) instead of hanging the test.
#[cfg(test)]
pub(crate) fn make_fifo(path: &Path) -> bool {
    let _ = std::fs::remove_file(path);
    let made = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .is_ok_and(|s| s.success());
    if made {
        let writer = path.to_path_buf();
        std::thread::spawn(move || drop(std::fs::OpenOptions::new().write(true).open(writer)));
    }
    made
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_or_a_folder_is_refused_before_it_is_opened() {
        let dir = std::env::temp_dir().join(format!("nuri-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let fifo = dir.join("pipe.png");
        let mut cases = vec![(dir.clone(), "a directory")];
        if make_fifo(&fifo) {
            cases.push((fifo, "a FIFO"));
        }
        for (path, kind) in cases {
            let err = read_regular_file(&path).unwrap_err();
            assert!(
                matches!(&err, MediaError::NotAFile { kind: k, .. } if *k == kind)
                    && err.to_string().contains(&path.display().to_string()),
                "{}: {err}",
                path.display()
            );
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
