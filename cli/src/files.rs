//! Writing credential files safely: never over an existing file, keys with
//! mode 0600, and nothing left behind when a write fails.

use std::path::{Path, PathBuf};

use crate::error::CliError;

/// Writes every `(path, contents, mode)` or none: all paths are checked
/// first, each file is created exclusively, and on any failure the files
/// already written are removed (the device side's own writer).
///
/// # Errors
/// [`CliError::Input`] naming the existing or unwritable file.
pub fn write_all_new(files: &[(PathBuf, String, u32)]) -> Result<(), CliError> {
    let files: Vec<(PathBuf, &str, u32)> = files
        .iter()
        .map(|(path, contents, mode)| (path.clone(), contents.as_str(), *mode))
        .collect();
    onboarding_device::files::write_all_new(&files).map_err(CliError::Input)
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
