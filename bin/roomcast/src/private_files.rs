//! The data directory and the SQLite database hold password hashes and the
//! JWT secret: only the server's user may read them (0700 and 0600).
//!
//! Why created here rather than left to SQLite: it creates its file with
//! the process umask (usually 0644). Made empty beforehand with mode 0600,
//! the database (and the `-wal`/`-shm` files SQLite makes with the same
//! mode) is private from its first byte; an existing one is tightened.

use std::fs;
use std::path::Path;

use anyhow::Context;

pub(crate) fn data_dir(path: &Path) -> anyhow::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(path)
        .with_context(|| format!("creating data directory {}", path.display()))?;
    restrict(path, 0o700)
}

pub(crate) fn database_file(path: &Path) -> anyhow::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    restrict(path, 0o600)
}

#[cfg(unix)]
fn restrict(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let current = fs::metadata(path)?.permissions().mode() & 0o777;
    if current & !mode != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .with_context(|| format!("restricting {} to {mode:o}", path.display()))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn restrict(_: &Path, _: u32) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_data_dir_and_database_are_private_even_when_they_existed() {
        let temp = tempfile::tempdir().expect("temp");
        let dir = temp.path().join("data");
        fs::create_dir(&dir).expect("dir");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
        data_dir(&dir).expect("data dir");
        let db = dir.join("roomcast.db");
        fs::write(&db, b"").expect("file");
        fs::set_permissions(&db, fs::Permissions::from_mode(0o644)).expect("chmod");
        database_file(&db).expect("db");
        let mode = |p: &Path| fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&db), 0o600);
    }
}
