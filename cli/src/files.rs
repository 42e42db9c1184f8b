//! Writing credential files safely: never over an existing file, keys with
//! mode 0600, and nothing left behind when a write fails.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::CliError;

/// Writes every `(path, contents, mode)` or none: all paths are checked
/// first, each file is created exclusively, and on any failure the files
/// already written are removed.
///
/// # Errors
/// [`CliError::Input`] naming the existing or unwritable file.
pub fn write_all_new(files: &[(PathBuf, String, u32)]) -> Result<(), CliError> {
    refuse_existing(files.iter().map(|(path, _, _)| path))?;
    let mut written: Vec<&Path> = Vec::new();
    for (path, contents, mode) in files {
        let result = match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(*mode)
            .open(path)
        {
            // Not created by us (it appeared meanwhile): never remove it.
            Err(e) => Err(e),
            Ok(mut file) => {
                written.push(path);
                file.write_all(contents.as_bytes()).and_then(|()| file.sync_all())
            }
        };
        if let Err(e) = result {
            for done in &written {
                let _ = std::fs::remove_file(done);
            }
            return Err(CliError::Input(format!("cannot write {}: {e}", path.display())));
        }
    }
    Ok(())
}

/// Refuses paths that exist, before any work that would be wasted on them.
///
/// # Errors
/// [`CliError::Input`] naming the first existing path.
pub fn refuse_existing<'a>(paths: impl IntoIterator<Item = &'a PathBuf>) -> Result<(), CliError> {
    match paths.into_iter().find(|path| path.exists()) {
        Some(existing) => Err(CliError::Input(format!(
            "{} already exists; refusing to overwrite it (choose another --out directory)",
            existing.display()
        ))),
        None => Ok(()),
    }
}

/// Reads a text file, with an error that names it.
///
/// # Errors
/// [`CliError::Input`] when the file cannot be read.
pub fn read(path: &Path, what: &str) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|e| CliError::Input(format!("cannot read {what} {}: {e}", path.display())))
}
