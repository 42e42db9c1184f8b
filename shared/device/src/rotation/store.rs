//! The device directory: `cert.pem` and `key.pem` in use, new credentials
//! staged beside them, the previous pair kept after a swap. `cert.pem` never
//! goes missing, and a failed rotation leaves it as it was.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use onboarding_domain::Certificate;

/// File names inside the device directory.
pub const CERT: &str = "cert.pem";
pub const KEY: &str = "key.pem";
pub const CERT_NEW: &str = "cert.new.pem";
pub const KEY_NEW: &str = "key.new.pem";
pub const CERT_OLD: &str = "cert.old.pem";
pub const KEY_OLD: &str = "key.old.pem";

/// Writes new credentials as `cert.new.pem` / `key.new.pem` (the key 0600),
/// replacing stale ones; both or neither.
///
/// # Errors
/// Which file could not be written.
pub(super) fn stage(dir: &Path, cert_pem: &str, key_pem: &str) -> Result<(), String> {
    discard(dir);
    write_all_new(&[
        (dir.join(KEY_NEW), key_pem, 0o600),
        (dir.join(CERT_NEW), cert_pem, 0o644),
    ])
}

/// Removes staged credentials.
pub(super) fn discard(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(CERT_NEW));
    let _ = std::fs::remove_file(dir.join(KEY_NEW));
}

/// Keeps the old pair as `*.old.pem` (hard links, so `cert.pem` never goes
/// missing), then renames the staged pair over `cert.pem` / `key.pem`.
pub(super) fn swap(dir: &Path) -> std::io::Result<()> {
    for (live, old) in [(KEY, KEY_OLD), (CERT, CERT_OLD)] {
        let staging = dir.join(format!("{old}.tmp"));
        let _ = std::fs::remove_file(&staging);
        std::fs::hard_link(dir.join(live), &staging)?;
        std::fs::rename(&staging, dir.join(old))?;
    }
    std::fs::rename(dir.join(KEY_NEW), dir.join(KEY))?;
    std::fs::rename(dir.join(CERT_NEW), dir.join(CERT))?;
    std::fs::File::open(dir)?.sync_all()
}

/// The certificate id of `cert.old.pem`, if there is a readable one.
pub(super) fn previous_certificate_id(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join(CERT_OLD))
        .ok()
        .and_then(|pem| Certificate::from_pem(&pem).ok())
        .map(|c| c.fingerprint)
}

/// Writes every `(path, contents, mode)` or none: all paths are checked
/// first, each file is created exclusively, and on any failure the files
/// already written are removed.
///
/// # Errors
/// A message naming the existing or unwritable file.
pub fn write_all_new(files: &[(PathBuf, &str, u32)]) -> Result<(), String> {
    if let Some((existing, _, _)) = files.iter().find(|(path, _, _)| path.exists()) {
        return Err(format!(
            "{} already exists; refusing to overwrite it (choose another --out directory)",
            existing.display()
        ));
    }
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
            return Err(format!("cannot write {}: {e}", path.display()));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn read(dir: &Path, name: &str) -> String {
        std::fs::read_to_string(dir.join(name)).expect(name)
    }

    fn mode(dir: &Path, name: &str) -> u32 {
        std::fs::metadata(dir.join(name)).expect(name).permissions().mode() & 0o777
    }

    #[test]
    fn staged_credentials_replace_stale_ones_and_the_key_is_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(CERT_NEW), "stale").expect("write");
        stage(dir.path(), "new cert", "new key").expect("stage");
        assert_eq!(read(dir.path(), CERT_NEW), "new cert");
        assert_eq!(read(dir.path(), KEY_NEW), "new key");
        assert_eq!(mode(dir.path(), KEY_NEW), 0o600);
        discard(dir.path());
        assert!(!dir.path().join(CERT_NEW).exists() && !dir.path().join(KEY_NEW).exists());
    }

    #[test]
    fn a_failed_write_leaves_nothing_staged() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The key is written, the certificate cannot be: the key goes too.
        let e = write_all_new(&[
            (dir.path().join(KEY_NEW), "key", 0o600),
            (dir.path().join("missing").join(CERT_NEW), "cert", 0o644),
        ])
        .expect_err("no such directory");
        assert!(e.starts_with("cannot write"), "{e}");
        assert!(!dir.path().join(KEY_NEW).exists());
        // Something already holds the name: nothing is written.
        std::fs::create_dir(dir.path().join(CERT_NEW)).expect("mkdir");
        let e = write_all_new(&[(dir.path().join(CERT_NEW), "cert", 0o644)]).expect_err("exists");
        assert!(e.contains("already exists"), "{e}");
    }

    #[test]
    fn a_swap_keeps_the_previous_pair() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(CERT), "old cert").expect("write");
        std::fs::write(dir.path().join(KEY), "old key").expect("write");
        stage(dir.path(), "new cert", "new key").expect("stage");
        swap(dir.path()).expect("swap");
        assert_eq!(read(dir.path(), CERT), "new cert");
        assert_eq!(read(dir.path(), KEY), "new key");
        assert_eq!(mode(dir.path(), KEY), 0o600);
        assert_eq!(read(dir.path(), CERT_OLD), "old cert");
        assert_eq!(read(dir.path(), KEY_OLD), "old key");
        assert!(!dir.path().join(CERT_NEW).exists());
        // Not a certificate: no previous certificate id.
        assert_eq!(previous_certificate_id(dir.path()), None);
    }

    #[test]
    fn the_previous_certificate_is_named_by_its_id() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let key = rcgen::KeyPair::generate()?;
        let cert = rcgen::CertificateParams::new(vec!["x".to_string()])?.self_signed(&key)?;
        std::fs::write(dir.path().join(CERT_OLD), cert.pem())?;
        assert_eq!(
            previous_certificate_id(dir.path()),
            Some(Certificate::from_pem(&cert.pem())?.fingerprint)
        );
        Ok(())
    }
}
