//! Local delivery into Maildir (the layout Dovecot reads): `ROOT/<domain>/<user>/Maildir`
//! with `tmp/`, `new/`, `cur/`. A message is written to `tmp/`, fsynced, renamed into
//! `new/`, and `new/` is fsynced, so a reader never sees a partial file and a delivered
//! message survives a crash.
//!
//! The file is the queued message, byte for byte, after a `Return-Path` and a
//! `Delivered-To` header.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use mta_core::address::{Address, ReversePath};

/// A tree of Maildirs under one root directory.
pub struct Maildirs {
    root: PathBuf,
    hostname: String,
    counter: AtomicU64,
}

impl Maildirs {
    /// Maildirs under `root` (created on first delivery). `hostname` goes into file names.
    pub fn new(root: &Path, hostname: &str) -> Maildirs {
        Maildirs {
            root: root.to_path_buf(),
            hostname: hostname.replace(['/', ':'], "_"),
            counter: AtomicU64::new(0),
        }
    }

    /// The Maildir of a local recipient, or `None` when the local part cannot safely name a
    /// directory (it never becomes a path unless [`Address::is_path_safe`] holds).
    pub fn maildir(&self, rcpt: &Address) -> Option<PathBuf> {
        if !rcpt.is_path_safe() || rcpt.domain().is_literal() {
            return None;
        }
        Some(
            self.root
                .join(rcpt.domain().as_str())
                .join(rcpt.local_part().to_lowercase())
                .join("Maildir"),
        )
    }

    /// Writes one message into `dir` (a Maildir). Blocking: call from a blocking thread.
    ///
    /// # Errors
    /// Any I/O error; a file left in `tmp/` by a failure is removed.
    pub fn write(
        &self,
        dir: &Path,
        sender: &ReversePath,
        rcpt: &Address,
        body: &[u8],
    ) -> io::Result<PathBuf> {
        for sub in ["tmp", "new", "cur"] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir.join(sub))?;
        }
        let head = format!("Return-Path: {sender}\r\nDelivered-To: {rcpt}\r\n");
        let size = head.len() + body.len();
        let name = self.unique_name(size);
        let tmp = dir.join("tmp").join(&name);
        let new = dir.join("new").join(&name);
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(head.as_bytes())?;
            file.write_all(body)?;
            let sync = !mta_core::durable_file::syncs_disabled();
            if sync {
                file.sync_all()?;
            }
            fs::rename(&tmp, &new)?;
            if sync {
                File::open(dir.join("new"))?.sync_all()?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(new)
    }

    /// `time.M<micros>P<pid>Q<n>.host,S=<size>`: unique per process and delivery, with
    /// the size hint Dovecot uses.
    fn unique_name(&self, size: usize) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!(
            "{}.M{}P{}Q{}.{},S={}",
            now.as_secs(),
            now.subsec_micros(),
            std::process::id(),
            n,
            self.hostname,
            size
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_into_new_with_headers() {
        let dir = tempfile::tempdir().unwrap();
        let m = Maildirs::new(dir.path(), "mx.test");
        let rcpt = Address::parse("Bob@Example.org").unwrap();
        let md = m.maildir(&rcpt).unwrap();
        assert_eq!(md, dir.path().join("example.org/bob/Maildir"));
        let sender = ReversePath::Address(Address::parse("a@x.test").unwrap());
        let path = m
            .write(&md, &sender, &rcpt, b"Subject: hi\r\n\r\nbody\r\n")
            .unwrap();
        assert!(path.starts_with(md.join("new")));
        assert_eq!(
            fs::read(&path).unwrap(),
            b"Return-Path: <a@x.test>\r\nDelivered-To: Bob@example.org\r\nSubject: hi\r\n\r\nbody\r\n"
        );
        assert_eq!(fs::read_dir(md.join("tmp")).unwrap().count(), 0);
        let second = m.write(&md, &ReversePath::Null, &rcpt, b"x").unwrap();
        assert_ne!(second, path);
    }

    #[test]
    fn unsafe_local_parts_never_become_paths() {
        let m = Maildirs::new(Path::new("/srv/mail"), "mx.test");
        for bad in [
            "\"../../etc\"@example.org",
            "\"a/b\"@example.org",
            "a/b@example.org",
            "u@[127.0.0.1]",
        ] {
            assert_eq!(m.maildir(&Address::parse(bad).unwrap()), None, "{bad}");
        }
    }
}
