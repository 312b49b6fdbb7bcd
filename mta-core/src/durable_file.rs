//! Files `mta` writes for itself (certificates, keys, caches, the users file): written so
//! that a crash, a power cut or a full disk leaves either the old file or the new one, never
//! an empty or torn one, and never through a symlink someone planted in the directory.
//!
//! The bytes go to a new temporary file beside the target (unique per call, created with
//! `O_EXCL | O_NOFOLLOW`), which is synced, renamed over the target, and the directory is
//! synced so the rename itself survives a power cut.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Replaces `path` with `bytes`, file mode `mode`, durably (see the module doc).
///
/// A symlink at `path` is replaced, not followed. On error the target is unchanged and the
/// temporary file is removed.
pub fn write(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let tmp = temp_path(path)?;
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        // The umask may have taken bits away from `mode`; the caller's mode is what counts.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Syncs the directory that holds `path`, so a file created or renamed there is durable.
pub fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// `.<name>.<pid>.<n>.tmp` beside `path`: unique per process and call, so two writers
/// (two domains' caches, two threads) never share a temporary file.
fn temp_path(path: &Path) -> io::Result<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} names no file", path.display()),
        )
    })?;
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // A name may be long (an MTA-STS cache file is named by its domain, up to 253
    // octets): the temp name keeps at most 100 characters of it, so that it stays within
    // the 255 octets a file name may have; the process id and counter keep it unique.
    let name = name.to_string_lossy();
    let short: String = name.chars().take(100).collect();
    let tmp = format!(".{short}.{}.{n}.tmp", std::process::id());
    Ok(path.with_file_name(tmp))
}

/// True when `path` holds a file that cannot be what was written whole: missing length
/// (0 bytes). Callers that read a file they wrote themselves use it to regenerate or to
/// name the fix instead of failing with a parse error.
pub fn is_empty_file(path: &Path) -> bool {
    fs::symlink_metadata(path)
        .map(|m| m.is_file() && m.len() == 0)
        .unwrap_or(false)
}

/// The test-only switch the power-loss harness's control run uses to prove that it can see
/// a loss: in a debug build started with `MTA_TEST_NO_SYNC=1`, the queue store and Maildir
/// delivery skip their `fsync`/`fdatasync` calls, so a power cut must lose or tear
/// something (`scripts/powerloss.sh` with `CONTROL=1`). A release build ignores it.
pub fn syncs_disabled() -> bool {
    static DISABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DISABLED.get_or_init(|| {
        cfg!(debug_assertions) && std::env::var_os("MTA_TEST_NO_SYNC").is_some_and(|v| v == "1")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "mta-durable-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn writes_replaces_and_sets_the_mode() {
        let d = dir();
        let p = d.join("key.pem");
        write(&p, b"one", 0o600).unwrap();
        write(&p, b"two", 0o640).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o640
        );
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(&d).unwrap().count(), 1);
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_planted_symlink_is_replaced_not_followed() {
        let d = dir();
        let victim = d.join("victim");
        fs::write(&victim, b"root's file").unwrap();
        let p = d.join("cert.pem");
        symlink(&victim, &p).unwrap();
        write(&p, b"cert", 0o600).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"root's file");
        assert!(!fs::symlink_metadata(&p).unwrap().file_type().is_symlink());
        assert_eq!(fs::read(&p).unwrap(), b"cert");
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn temporary_names_differ_per_call_and_per_file() {
        let a = temp_path(Path::new("/x/example.com")).unwrap();
        let b = temp_path(Path::new("/x/example.net")).unwrap();
        let c = temp_path(Path::new("/x/example.com")).unwrap();
        assert_ne!(a, b);
        assert_ne!(a, c);
    }

    /// A file named by a long domain (an MTA-STS cache file) is written too: its temporary
    /// name stays within the 255 octets a file name may have.
    #[test]
    fn a_long_file_name_gets_a_temporary_name_that_fits() {
        let d = dir();
        let p = d.join(format!("{}.json", "a".repeat(245)));
        write(&p, b"policy", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"policy");
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn empty_files_are_recognised() {
        let d = dir();
        let p = d.join("f");
        assert!(!is_empty_file(&p));
        fs::write(&p, b"").unwrap();
        assert!(is_empty_file(&p));
        fs::write(&p, b"x").unwrap();
        assert!(!is_empty_file(&p));
        fs::remove_dir_all(d).unwrap();
    }
}
