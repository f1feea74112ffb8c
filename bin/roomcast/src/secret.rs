//! The JWT signing secret: given, or generated once and kept in the data
//! directory so that restarts (and `roomcast fixture`) sign alike.

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use rand::RngCore;

const FILE: &str = "jwt-secret";

pub(crate) fn load_or_create(given: Option<&str>, data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    if let Some(secret) = given {
        anyhow::ensure!(!secret.is_empty(), "ROOMCAST_JWT_SECRET is empty");
        return Ok(secret.as_bytes().to_vec());
    }
    let path = data_dir.join(FILE);
    match fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().as_bytes().to_vec()),
        Ok(_) => anyhow::bail!(
            "{} is empty; delete it to generate a new secret",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    crate::private_files::data_dir(data_dir)?;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(&path) {
        Ok(mut file) => {
            file.write_all(secret.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            tracing::info!(path = %path.display(), "no JWT secret given: generated one and stored it");
            Ok(secret.into_bytes())
        }
        // Another process (fixture beside serve) created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Ok(fs::read_to_string(&path)?.trim().as_bytes().to_vec())
        }
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_secret_is_kept_and_reused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = load_or_create(None, dir.path()).expect("generate");
        assert_eq!(first.len(), 64);
        assert_eq!(load_or_create(None, dir.path()).expect("reload"), first);
        assert_eq!(
            load_or_create(Some("given"), dir.path()).expect("given"),
            b"given"
        );
    }
}
