//! The SRS secrets in the data dir and `mta srs rotate`. `DATA_DIR/srs.key` holds the secret
//! new addresses are made with (32 random bytes, mode 0600, made on the first start with SRS
//! on); `DATA_DIR/srs.key.previous`, when present, the one before the last rotation, still
//! accepted for bounces. Each file is written whole or not at all
//! ([`mta_core::durable_file`]); links and special files are refused, never followed.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::Subcommand;
use mta_core::config::Config;
use mta_core::durable_file;
use mta_core::srs::{Keys, SECRET_LEN, Secret};

/// `mta srs ...`
#[derive(Subcommand, Debug)]
pub enum SrsCommand {
    /// Make a new secret for new SRS addresses; the current one is kept as the previous one,
    /// still accepted for bounces (the one before it is dropped). Then run `mta reload`.
    Rotate,
}

fn current_path(data_dir: &Path) -> PathBuf {
    data_dir.join("srs.key")
}

fn previous_path(data_dir: &Path) -> PathBuf {
    data_dir.join("srs.key.previous")
}

/// The secret in `path`; `None` when there is no file.
fn read(path: &Path) -> anyhow::Result<Option<Secret>> {
    let meta = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        Ok(m) => m,
    };
    if !meta.is_file() {
        bail!(
            "{} is not a regular file (a link or a special file): mta does not follow links \
             in its data dir; remove it",
            path.display()
        );
    }
    if meta.mode() & 0o077 != 0 {
        bail!(
            "{} is readable by others than its owner; chmod 600 it",
            path.display()
        );
    }
    let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    match Secret::from_slice(&bytes) {
        Some(secret) => Ok(Some(secret)),
        None => bail!(
            "{} holds {} bytes, not the {SECRET_LEN} of an SRS secret; restore it from a \
             backup, or remove it (bounces to addresses made with it are then refused)",
            path.display(),
            bytes.len()
        ),
    }
}

/// Writes `secret` to `path` durably, mode 0600, owned by whoever owns the data dir (so that
/// `mta srs rotate` run as root leaves files the server, running as its own user, can read).
fn write(data_dir: &Path, path: &Path, secret: &Secret) -> anyhow::Result<()> {
    durable_file::write(path, secret.bytes(), 0o600)
        .with_context(|| format!("cannot write {}", path.display()))?;
    let owner = fs::metadata(data_dir)
        .with_context(|| format!("cannot read data dir {}", data_dir.display()))?;
    let file = fs::symlink_metadata(path)?;
    if file.uid() != owner.uid() || file.gid() != owner.gid() {
        std::os::unix::fs::lchown(path, Some(owner.uid()), Some(owner.gid()))
            .with_context(|| format!("cannot give {} to the data dir's owner", path.display()))?;
    }
    Ok(())
}

/// The secrets for `config`: `None` when SRS is off. The current secret is made now when
/// there is none yet (the first start with SRS on).
///
/// # Errors
/// A key file that cannot be read or written, or is not a 32-byte regular file private to
/// its owner.
pub fn load_or_create(config: &Config) -> anyhow::Result<Option<Keys>> {
    if !config.srs.enabled {
        return Ok(None);
    }
    let dir = &config.data_dir;
    let current = match read(&current_path(dir))? {
        Some(secret) => secret,
        None => {
            let secret = Secret::generate();
            write(dir, &current_path(dir), &secret)?;
            tracing::info!(file = %current_path(dir).display(), "SRS secret made");
            secret
        }
    };
    let previous = read(&previous_path(dir))?;
    Ok(Some(Keys { current, previous }))
}

/// Runs `mta srs <command>`.
///
/// # Errors
/// The key files cannot be read or written.
pub fn run(command: SrsCommand, config: &Config) -> anyhow::Result<()> {
    match command {
        SrsCommand::Rotate => {
            let dir = &config.data_dir;
            // The current secret becomes the previous one first: a crash between the two
            // writes leaves both files holding it, and no address made with it is refused.
            if let Some(current) = read(&current_path(dir))? {
                write(dir, &previous_path(dir), &current)?;
            }
            write(dir, &current_path(dir), &Secret::generate())?;
            println!(
                "new SRS secret in {}; the previous one is still accepted for bounces.\n\
                 Run `mta reload` (or restart) to put it in force.",
                current_path(dir).display()
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn config(dir: &Path) -> Config {
        let text = format!("data_dir = {:?}\n", dir.display().to_string());
        Config::from_toml("t.toml", &text, "buildhost").unwrap()
    }

    /// Made once, 0600, 32 bytes, and the same on the next start; a rotation keeps the old
    /// secret as the previous one.
    #[test]
    fn made_once_then_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let first = load_or_create(&config).unwrap().unwrap();
        let path = current_path(dir.path());
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), SECRET_LEN as u64);
        assert_eq!(first.previous, None);
        let again = load_or_create(&config).unwrap().unwrap();
        assert_eq!(again, first);
        run(SrsCommand::Rotate, &config).unwrap();
        let rotated = load_or_create(&config).unwrap().unwrap();
        assert_ne!(rotated.current, first.current);
        assert_eq!(rotated.previous, Some(first.current));
    }

    #[test]
    fn bad_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let path = current_path(dir.path());
        fs::write(&path, b"short").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let e = load_or_create(&config).unwrap_err().to_string();
        assert!(e.contains("holds 5 bytes"), "{e}");
        fs::write(&path, [1u8; SECRET_LEN]).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_or_create(&config).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", &path).unwrap();
        let e = load_or_create(&config).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let off = Config::from_toml(
            "t.toml",
            &format!(
                "data_dir = {:?}\n[srs]\nenabled = false\n",
                dir.path().display().to_string()
            ),
            "buildhost",
        )
        .unwrap();
        assert_eq!(load_or_create(&off).unwrap(), None);
    }
}
