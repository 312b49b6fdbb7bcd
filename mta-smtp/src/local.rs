//! Local delivery into Maildir (the layout Dovecot reads): `ROOT/<domain>/<user>/Maildir`
//! with `tmp/`, `new/`, `cur/`. A message is written to `tmp/`, fsynced, renamed into
//! `new/`, and `new/` is fsynced, so a reader never sees a partial file and a delivered
//! message survives a crash. Concurrent deliveries into one `new/` share its `fsync`
//! ([`dir_sync`]): a delivery is done only once a sync of `new/` that started after its
//! rename has returned.
//!
//! The directories are opened as they are and created only when missing: a new user's
//! Maildir gets `tmp/`, `new/` and `cur/` at its first delivery; a Maildir that lost its
//! `tmp/` or `new/` gets all three back at its next one.
//! A directory made is synced into its parent (the `fsync` of `new/` makes the renames in
//! `new/` durable, not `new/` itself) before the delivery counts.
//!
//! The file is the queued message after a `Return-Path` and a `Delivered-To` header, with
//! each CRLF stored as a bare LF (`local.line_endings = "lf"`, the default: what Postfix,
//! qmail and Dovecot's LDA write, and what mutt, procmail and grep expect), or byte for byte
//! (`"crlf"`). The conversion streams through a small buffer: no second copy of the message.
//!
//! With a mail group (`local.mail_group`, [`MailAccess::Group`]) an IMAP server running
//! under its own uid in that group may read, flag and expunge the mail, so it can also
//! rename or replace the entries of a Maildir. The writer therefore walks from the root one
//! directory at a time and never follows a symbolic link: a link planted in a Maildir cannot
//! send `mta`'s writes anywhere else.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use mta_core::address::{Address, ReversePath};
use mta_core::config::LineEndings;
use nix::errno::Errno;
use nix::fcntl::{OFlag, openat, renameat};
use nix::sys::stat::{Mode, fchmod, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};

mod dir_sync;

/// Who besides the user `mta` serves as may use delivered mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailAccess {
    /// No one: directories 0700, files 0600 (no `local.mail_group`).
    Private,
    /// The group of the mail tree (`local.mail_group`), for an IMAP/POP3 server under its
    /// own uid. It may pass through the root, domain and user directories (2710: no
    /// listing of who has mail, no new entries), and read and write inside each `Maildir`
    /// (2770, files 0660), as Dovecot must to mark mail seen (a rename into `cur/`), to
    /// expunge (an unlink), and to keep its index and folders there. The set-group-id
    /// bit makes every new file and directory belong to the group, whoever creates it.
    Group,
}

/// Where an entry sits in the mail tree, counted from its root (`DATA_DIR/mail`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TreeLevel {
    /// The root, a domain's or a user's directory (depth 0 to 2).
    Above,
    /// A `Maildir` or anything in it (depth 3 and more).
    Inside,
}

impl TreeLevel {
    /// The level of an entry `depth` directories below the root (the root is 0).
    pub fn at(depth: usize) -> TreeLevel {
        match depth {
            0..=2 => TreeLevel::Above,
            _ => TreeLevel::Inside,
        }
    }
}

impl MailAccess {
    /// The permission bits (with set-group-id) a directory or file of the mail tree has.
    pub fn mode(self, level: TreeLevel, is_dir: bool) -> u32 {
        match (self, level, is_dir) {
            (MailAccess::Private, _, true) => 0o700,
            (MailAccess::Private, _, false) => 0o600,
            (MailAccess::Group, TreeLevel::Above, true) => 0o2710,
            (MailAccess::Group, TreeLevel::Inside, true) => 0o2770,
            (MailAccess::Group, _, false) => 0o660,
        }
    }
}

/// Files named so far by this process: one count for every [`Maildirs`], so that the one a
/// reload makes never repeats a name the old one gave in the same microsecond (the rename
/// into `new/` would replace that file).
static NAMED: AtomicU64 = AtomicU64::new(0);

/// A tree of Maildirs under one root directory.
pub struct Maildirs {
    root: PathBuf,
    hostname: String,
    access: MailAccess,
    endings: LineEndings,
    /// The grouped syncs of the `new/` directories: the process's, shared by every
    /// `Maildirs` (a reload makes a new one while deliveries through the old one go on).
    dir_syncs: std::sync::Arc<dir_sync::DirSyncs>,
}

impl Maildirs {
    /// Maildirs under `root` (created on first delivery). `hostname` goes into file names.
    pub fn new(root: &Path, hostname: &str, access: MailAccess) -> Maildirs {
        Maildirs {
            root: root.to_path_buf(),
            hostname: hostname.replace(['/', ':'], "_"),
            access,
            endings: LineEndings::Lf,
            dir_syncs: dir_sync::DirSyncs::shared(),
        }
    }

    /// The same, syncing directories with `sync`, with no wait for deliveries still
    /// writing (a test counts and checks the syncs, round by round).
    #[cfg(test)]
    fn with_dir_sync(mut self, sync: dir_sync::SyncFn, wait: std::time::Duration) -> Maildirs {
        self.dir_syncs = std::sync::Arc::new(dir_sync::DirSyncs::new(
            sync,
            wait,
            std::time::Duration::ZERO,
        ));
        self
    }

    /// The same, storing lines with `endings` (`local.line_endings`).
    pub fn with_line_endings(mut self, endings: LineEndings) -> Maildirs {
        self.endings = endings;
        self
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

    /// Writes one message into `dir` (a Maildir under the root). Blocking: call from a
    /// blocking thread.
    ///
    /// # Errors
    /// Any I/O error, `dir` outside the root, or a symbolic link on the way (`ELOOP` or
    /// `ENOTDIR`); a file left in `tmp/` by a failure is removed.
    pub fn write(
        &self,
        dir: &Path,
        sender: &ReversePath,
        rcpt: &Address,
        body: &[u8],
    ) -> io::Result<PathBuf> {
        let (tmp, new) = self.open_parts(dir)?;
        let head = format!("Return-Path: {sender}\r\nDelivered-To: {rcpt}\r\n");
        let name = match self.endings {
            LineEndings::Crlf => self.unique_name(&format!("S={}", head.len() + body.len())),
            LineEndings::Lf => {
                let (head_size, body_size) = (lf_size(head.as_bytes()), lf_size(body));
                // W= is the size with CRLF line ends, which IMAP reports (RFC822.SIZE).
                let wire = crlf_size(head.as_bytes()) + crlf_size(body);
                self.unique_name(&format!("S={},W={wire}", head_size + body_size))
            }
        };
        let sync = !mta_core::durable_file::syncs_disabled();
        // Counted among the writers into `new/` from here to the rename (see `dir_sync`).
        let mut writing = if sync {
            Some(self.dir_syncs.begin(&new)?)
        } else {
            None
        };
        let result = (|| {
            let mode = self.access.mode(TreeLevel::Inside, false);
            let fd = openat(
                &tmp,
                name.as_str(),
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(mode),
            )?;
            // The process umask keeps group bits out of what open creates.
            fchmod(&fd, Mode::from_bits_truncate(mode))?;
            let mut file = File::from(fd);
            match self.endings {
                LineEndings::Crlf => {
                    file.write_all(head.as_bytes())?;
                    file.write_all(body)?;
                }
                LineEndings::Lf => {
                    let mut out = io::BufWriter::with_capacity(64 * 1024, &mut file);
                    write_lf(&mut out, head.as_bytes())?;
                    write_lf(&mut out, body)?;
                    out.flush()?;
                }
            }
            if sync {
                file.sync_all()?;
            }
            renameat(&tmp, name.as_str(), &new, name.as_str())?;
            if let Some(writing) = writing.take() {
                writing.sync(&new)?;
            }
            Ok::<(), io::Error>(())
        })();
        if let Err(e) = result {
            let _ = unlinkat(&tmp, name.as_str(), UnlinkatFlags::NoRemoveDir);
            return Err(e);
        }
        Ok(dir.join("new").join(&name))
    }

    /// Creates the Maildir `dir` (under the root) with its `tmp/`, `new/` and `cur/`, as the
    /// first delivery would: with a mail group, an IMAP server cannot create it itself.
    ///
    /// # Errors
    /// As [`Maildirs::write`].
    pub fn prepare(&self, dir: &Path) -> io::Result<()> {
        self.open_parts(dir).map(drop)
    }

    /// `tmp/` and `new/` of the Maildir `dir`. When the Maildir, `tmp/` or `new/` had to be
    /// made, `cur/` is made too if missing: a new Maildir gets all three. An existing one is
    /// only opened (`cur/` is the reader's: not looked at).
    fn open_parts(&self, dir: &Path) -> io::Result<(OwnedFd, OwnedFd)> {
        let (maildir, mut made) = self.open_maildir(dir)?;
        let mut inside = |name| {
            let (fd, created) = self.dir_at(&maildir, name, TreeLevel::Inside)?;
            made |= created;
            Ok::<_, io::Error>(fd)
        };
        let (tmp, new) = (inside("tmp")?, inside("new")?);
        if made {
            self.dir_at(&maildir, "cur", TreeLevel::Inside)?;
        }
        Ok((tmp, new))
    }

    /// Opens `dir` one component at a time from the root, creating what is missing with
    /// the modes of [`MailAccess::mode`], following no symbolic link; whether `dir` itself
    /// was made.
    fn open_maildir(&self, dir: &Path) -> io::Result<(OwnedFd, bool)> {
        let relative = dir.strip_prefix(&self.root).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "Maildir outside the mail root")
        })?;
        let mut fd: OwnedFd = match File::open(&self.root) {
            Ok(root) => root.into(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(self.access.mode(TreeLevel::Above, true) & 0o777)
                    .create(&self.root)?;
                // The data directory, normally; one the server may not read is not synced
                // (a failure to open it is no reason to fail the delivery).
                let parent = self.root.parent().filter(|p| !p.as_os_str().is_empty());
                if let Some(Ok(parent)) = parent.map(File::open) {
                    self.sync_made_in(&parent.into())?;
                }
                File::open(&self.root)?.into()
            }
            Err(e) => return Err(e),
        };
        let mut made = false;
        for (depth, part) in relative.components().enumerate() {
            let Component::Normal(name) = part else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "Maildir path with a component that is not a name",
                ));
            };
            (fd, made) = self.dir_at(&fd, name, TreeLevel::at(depth + 1))?;
        }
        Ok((fd, made))
    }

    /// The directory `name` in `parent`, created when missing (then `true`); never a
    /// symbolic link. It is opened first: the `mkdir` only when that finds nothing.
    fn dir_at<P: ?Sized + nix::NixPath>(
        &self,
        parent: &OwnedFd,
        name: &P,
        level: TreeLevel,
    ) -> io::Result<(OwnedFd, bool)> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        match openat(parent.as_fd(), name, flags, Mode::empty()) {
            Ok(fd) => return Ok((fd, false)),
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(e.into()),
        }
        let mode = self.access.mode(level, true);
        let created = match mkdirat(parent.as_fd(), name, Mode::from_bits_truncate(mode & 0o777)) {
            Ok(()) => true,
            // Made by a concurrent delivery since we looked.
            Err(Errno::EEXIST) => false,
            Err(e) => return Err(e.into()),
        };
        let fd = openat(parent.as_fd(), name, flags, Mode::empty())?;
        if created {
            // The umask took the group bits; the set-group-id bit is inherited, and kept
            // by chmod because `mta serve` is a member of the mail group.
            fchmod(&fd, Mode::from_bits_truncate(mode))?;
        }
        // Also when a concurrent delivery made it: its sync may not have returned yet.
        self.sync_made_in(parent)?;
        Ok((fd, created))
    }

    /// Syncs `parent` after a directory was made in it: a sync of `new/` makes the renames
    /// in `new/` durable, not the entry of `new/` (or of the Maildir, ...) in its parent.
    fn sync_made_in(&self, parent: &OwnedFd) -> io::Result<()> {
        if mta_core::durable_file::syncs_disabled() {
            return Ok(());
        }
        self.dir_syncs.sync_now(parent)
    }

    /// `time.M<micros>P<pid>Q<n>.host,<sizes>`: unique per process and delivery, with
    /// the size hints Dovecot uses (`S=` the file's size, `W=` the size with CRLF).
    fn unique_name(&self, sizes: &str) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let n = NAMED.fetch_add(1, Ordering::Relaxed);
        file_name(now, std::process::id(), n, &self.hostname, sizes)
    }
}

/// A Maildir file name for a delivery at `now` (since the epoch). The microseconds have six
/// digits, so that names sort as the deliveries came: Dovecot numbers new mail in the order
/// of its file names, and `M999` would sort after `M1000`.
fn file_name(now: std::time::Duration, pid: u32, n: u64, host: &str, sizes: &str) -> String {
    format!(
        "{}.M{:06}P{}Q{}.{},{}",
        now.as_secs(),
        now.subsec_micros(),
        pid,
        n,
        host,
        sizes
    )
}

/// Writes `bytes` with every CRLF as a bare LF; any other CR or LF is kept.
fn write_lf(out: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        match line.strip_suffix(b"\r\n") {
            Some(text) => {
                out.write_all(text)?;
                out.write_all(b"\n")?;
            }
            None => out.write_all(line)?,
        }
    }
    Ok(())
}

/// The length of `bytes` as [`write_lf`] writes them.
fn lf_size(bytes: &[u8]) -> usize {
    bytes.len() - bytes.windows(2).filter(|w| w == b"\r\n").count()
}

/// The length of `bytes` with every line ending a CRLF (a bare LF counted as CRLF).
fn crlf_size(bytes: &[u8]) -> usize {
    lf_size(bytes) + bytes.iter().filter(|&&b| b == b'\n').count()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names sort as the deliveries came, also across a change in the number of digits of
    /// the microseconds.
    #[test]
    fn file_names_sort_in_delivery_order() {
        use std::time::Duration;
        let times = [
            Duration::new(1_765_000_000, 999_000),
            Duration::new(1_765_000_000, 1_000_000),
            Duration::new(1_765_000_000, 123_456_000),
            Duration::new(1_765_000_001, 5_000),
        ];
        let names: Vec<String> = times
            .iter()
            .enumerate()
            .map(|(n, t)| file_name(*t, 7, n as u64, "mx.test", "S=1"))
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(sorted, names);
        assert!(
            names[0].starts_with("1765000000.M000999P7Q0.mx.test"),
            "{}",
            names[0]
        );
    }

    /// Two `Maildirs` of one process, as a reload makes, never name two files alike: the
    /// rename into `new/` would replace the first.
    #[test]
    fn two_maildirs_of_one_process_never_give_the_same_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = Maildirs::new(dir.path(), "mx.example.test", MailAccess::Private);
        let new = Maildirs::new(dir.path(), "mx.example.test", MailAccess::Private);
        let mut names = std::collections::HashSet::new();
        for _ in 0..5000 {
            assert!(names.insert(old.unique_name("S=1")));
            assert!(names.insert(new.unique_name("S=1")));
        }
    }

    #[test]
    fn writes_into_new_with_headers() {
        let dir = tempfile::tempdir().unwrap();
        let m = Maildirs::new(dir.path(), "mx.test", MailAccess::Private)
            .with_line_endings(LineEndings::Crlf);
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
    fn lf_endings_by_default_and_sizes_in_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let m = Maildirs::new(dir.path(), "mx.test", MailAccess::Private);
        let rcpt = Address::parse("bob@example.org").unwrap();
        let md = m.maildir(&rcpt).unwrap();
        let body = b"Subject: hi\r\n\r\nbody\r\n";
        let path = m.write(&md, &ReversePath::Null, &rcpt, body).unwrap();
        let stored = fs::read(&path).unwrap();
        let want = b"Return-Path: <>\nDelivered-To: bob@example.org\nSubject: hi\n\nbody\n";
        assert_eq!(stored, want);
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let wire = want.len() + want.iter().filter(|&&b| b == b'\n').count();
        assert!(
            name.ends_with(&format!(",S={},W={wire}", want.len())),
            "{name}"
        );
    }

    proptest::proptest! {
        /// The streaming conversion against the obvious one, and the sizes against counts
        /// of what is written.
        #[test]
        fn lf_conversion_matches_a_plain_replace(
            parts in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just(b"\r\n".to_vec()),
                    proptest::strategy::Just(b"\r".to_vec()),
                    proptest::strategy::Just(b"\n".to_vec()),
                    proptest::collection::vec(proptest::num::u8::ANY, 0..5),
                ],
                0..40,
            )
        ) {
            let bytes = parts.concat();
            let mut out = Vec::new();
            write_lf(&mut out, &bytes).unwrap();
            let want: Vec<u8> = {
                let mut v = Vec::new();
                let mut i = 0;
                while i < bytes.len() {
                    if bytes[i..].starts_with(b"\r\n") {
                        v.push(b'\n');
                        i += 2;
                    } else {
                        v.push(bytes[i]);
                        i += 1;
                    }
                }
                v
            };
            proptest::prop_assert_eq!(&out, &want);
            proptest::prop_assert_eq!(lf_size(&bytes), want.len());
            let lfs = want.iter().filter(|&&b| b == b'\n').count();
            proptest::prop_assert_eq!(crlf_size(&bytes), want.len() + lfs);
        }
    }

    /// What the directory-sync seam saw: per sync, the files in `new/` when it started (the
    /// renames it covers), whether it succeeded, and when it ended on `clock`.
    #[derive(Default)]
    struct SeenSyncs {
        clock: AtomicU64,
        syncs: std::sync::Mutex<Vec<(Vec<String>, bool, u64)>>,
    }

    fn names_in(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// Each delivery's result and when it returned, the syncs seen, `new/`, and the tree.
    type Concurrent = (
        Vec<(io::Result<PathBuf>, u64)>,
        std::sync::Arc<SeenSyncs>,
        PathBuf,
        tempfile::TempDir,
    );

    /// `N` concurrent deliveries into one Maildir, the directory syncs through a seam: the
    /// first sync holds until the other `N - 1` deliveries have renamed their files and wait
    /// for the next round, and round `fail` (1-based) fails. Returns each delivery's result
    /// with the seam's clock when it returned, and the syncs seen.
    fn concurrent_writes(n: usize, fail: Option<usize>) -> Concurrent {
        use std::sync::{Arc, OnceLock, Weak};
        let dir = tempfile::tempdir().unwrap();
        let seen = Arc::new(SeenSyncs::default());
        let me: Arc<OnceLock<Weak<Maildirs>>> = Arc::new(OnceLock::new());
        let rcpt = Address::parse("bob@example.org").unwrap();
        let new_dir = dir.path().join("example.org/bob/Maildir/new");
        let sync: dir_sync::SyncFn = {
            let (seen, me, new_dir) = (seen.clone(), me.clone(), new_dir.clone());
            Arc::new(move |fd: &OwnedFd| {
                // Only the syncs of `new/` are rounds (not those of a parent in which
                // `prepare` made a directory).
                let st = nix::sys::stat::fstat(fd)?;
                let is_new = fs::metadata(&new_dir).is_ok_and(|m| {
                    use std::os::unix::fs::MetadataExt;
                    #[allow(clippy::unnecessary_cast)] // the field types differ between targets
                    let key = (st.st_dev as u64, st.st_ino as u64);
                    (m.dev(), m.ino()) == key
                });
                if !is_new {
                    return Ok(nix::unistd::fsync(fd)?);
                }
                let covers = names_in(&new_dir);
                let round = seen.syncs.lock().unwrap().len() + 1;
                if round == 1 {
                    let m = me.get().and_then(Weak::upgrade).unwrap();
                    // Bounded: the others are quick to rename and queue up.
                    for _ in 0..30_000 {
                        if m.dir_syncs.waiting_for_next() == n - 1 {
                            break;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                }
                let ok = fail != Some(round);
                let result = if ok {
                    nix::unistd::fsync(fd).map_err(io::Error::from)
                } else {
                    Err(io::Error::from_raw_os_error(nix::libc::EIO))
                };
                let ended = seen.clock.fetch_add(1, Ordering::SeqCst);
                seen.syncs.lock().unwrap().push((covers, ok, ended));
                result
            })
        };
        let m = Arc::new(
            Maildirs::new(dir.path(), "mx.test", MailAccess::Private)
                .with_dir_sync(sync, std::time::Duration::from_secs(60)),
        );
        me.set(Arc::downgrade(&m)).unwrap();
        let md = m.maildir(&rcpt).unwrap();
        m.prepare(&md).unwrap();
        let threads: Vec<_> = (0..n)
            .map(|i| {
                let (m, md, rcpt, seen) = (m.clone(), md.clone(), rcpt.clone(), seen.clone());
                std::thread::spawn(move || {
                    let body = format!("Subject: {i}\r\n\r\n{i}\r\n");
                    let result = m.write(&md, &ReversePath::Null, &rcpt, body.as_bytes());
                    (result, seen.clock.fetch_add(1, Ordering::SeqCst))
                })
            })
            .collect();
        let results = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(
            m.dir_syncs.active(),
            0,
            "nothing kept once every delivery is done"
        );
        (results, seen, new_dir, dir)
    }

    /// Concurrent deliveries share the `fsync` of `new/`, and none returns before a sync
    /// that started after its rename has returned.
    #[test]
    fn concurrent_deliveries_share_the_directory_sync() {
        const N: usize = 8;
        let (results, seen, new_dir, _dir) = concurrent_writes(N, None);
        let syncs = seen.syncs.lock().unwrap().clone();
        assert!(
            syncs.len() < N,
            "{} directory syncs for {N} deliveries",
            syncs.len()
        );
        assert_eq!(
            syncs.len(),
            2,
            "the first round, then one for the other {}",
            N - 1
        );
        for (result, returned) in results {
            let path = result.unwrap();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                syncs
                    .iter()
                    .any(|(covers, ok, ended)| *ok && covers.contains(&name) && ended < &returned),
                "{name} returned without a sync that followed its rename: {syncs:?}"
            );
        }
        assert_eq!(names_in(&new_dir).len(), N);
    }

    /// A failed sync of `new/` fails every delivery waiting on it (they are retried, as
    /// after any failed sync), and only them: the next round syncs again.
    #[test]
    fn a_failed_directory_sync_fails_the_deliveries_waiting_on_it() {
        const N: usize = 6;
        let (results, seen, _new_dir, _dir) = concurrent_writes(N, Some(2));
        let failed: Vec<_> = results.iter().filter(|(r, _)| r.is_err()).collect();
        assert_eq!(failed.len(), N - 1, "every waiter of the failed round");
        for (e, _) in &failed {
            let e = e.as_ref().unwrap_err();
            assert_eq!(e.raw_os_error(), Some(nix::libc::EIO), "{e}");
        }
        let syncs = seen.syncs.lock().unwrap().clone();
        assert_eq!(syncs.iter().map(|s| s.1).collect::<Vec<_>>(), [true, false]);
    }

    /// A delivery opens an existing Maildir's directories as they are and makes none: here
    /// `cur/`, removed, stays away (it was made again by every delivery, with a `mkdir` per
    /// directory per message). A new Maildir gets all three, and one that lost `new/` gets
    /// `new/` and `cur/` back.
    #[test]
    fn directories_are_made_only_when_missing() {
        let dir = tempfile::tempdir().unwrap();
        let m = Maildirs::new(dir.path(), "mx.test", MailAccess::Private);
        let rcpt = Address::parse("bob@example.org").unwrap();
        let md = m.maildir(&rcpt).unwrap();
        m.write(&md, &ReversePath::Null, &rcpt, b"1\r\n").unwrap();
        let mut parts = names_in(&md);
        parts.sort();
        assert_eq!(parts, ["cur", "new", "tmp"], "a new Maildir gets all three");
        fs::remove_dir(md.join("cur")).unwrap();
        m.write(&md, &ReversePath::Null, &rcpt, b"2\r\n").unwrap();
        assert!(
            !md.join("cur").exists(),
            "an existing Maildir is only opened"
        );
        fs::rename(md.join("new"), md.join("old")).unwrap();
        m.write(&md, &ReversePath::Null, &rcpt, b"3\r\n").unwrap();
        let mut parts = names_in(&md);
        parts.sort();
        assert_eq!(parts, ["cur", "new", "old", "tmp"]);
        assert_eq!(names_in(&md.join("new")).len(), 1);
    }

    /// A directory a delivery makes is durably linked before the delivery counts: its
    /// parent is synced after the `mkdir` (a sync of `new/` makes the rename in it durable,
    /// not the entry of `new/` in the Maildir, nor the Maildir's in the user's directory).
    #[test]
    fn made_directories_are_synced_into_their_parents() {
        use std::os::unix::fs::MetadataExt;
        use std::sync::{Arc, Mutex};
        let dir = tempfile::tempdir().unwrap();
        let synced = Arc::new(Mutex::new(Vec::<(u64, u64)>::new()));
        let sync: dir_sync::SyncFn = {
            let synced = synced.clone();
            Arc::new(move |fd: &OwnedFd| {
                let st = nix::sys::stat::fstat(fd)?;
                #[allow(clippy::unnecessary_cast)] // the field types differ between targets
                synced
                    .lock()
                    .unwrap()
                    .push((st.st_dev as u64, st.st_ino as u64));
                Ok(nix::unistd::fsync(fd)?)
            })
        };
        let root = dir.path().join("mail");
        let m = Maildirs::new(&root, "mx.test", MailAccess::Private)
            .with_dir_sync(sync, std::time::Duration::from_secs(60));
        let rcpt = Address::parse("bob@example.org").unwrap();
        let md = m.maildir(&rcpt).unwrap();
        let key = |p: &Path| {
            let meta = fs::metadata(p).unwrap();
            (meta.dev(), meta.ino())
        };
        m.write(&md, &ReversePath::Null, &rcpt, b"1\r\n").unwrap();
        let user = root.join("example.org/bob");
        for p in [dir.path(), &root, &root.join("example.org"), &user, &md] {
            assert!(
                synced.lock().unwrap().contains(&key(p)),
                "{} not synced after a directory was made in it",
                p.display()
            );
        }
        // A Maildir that lost `new/`: it is made again, and the Maildir synced.
        fs::rename(md.join("new"), md.join("old")).unwrap();
        synced.lock().unwrap().clear();
        m.write(&md, &ReversePath::Null, &rcpt, b"2\r\n").unwrap();
        assert!(synced.lock().unwrap().contains(&key(&md)));
        // An existing Maildir: `new/` only.
        synced.lock().unwrap().clear();
        m.write(&md, &ReversePath::Null, &rcpt, b"3\r\n").unwrap();
        assert_eq!(*synced.lock().unwrap(), [key(&md.join("new"))]);
    }

    /// Two trees of Maildirs in one process (a reload makes a new one while deliveries
    /// through the old one go on) share the directory syncs: one coordinator sees every
    /// delivery into a `new/`, and so every failed round that may have dropped a rename.
    #[test]
    fn every_maildirs_of_the_process_shares_the_directory_syncs() {
        let a = Maildirs::new(Path::new("/srv/mail"), "mx.test", MailAccess::Private);
        let b = Maildirs::new(Path::new("/srv/mail"), "mx.test", MailAccess::Group);
        assert!(std::sync::Arc::ptr_eq(&a.dir_syncs, &b.dir_syncs));
    }

    #[test]
    fn unsafe_local_parts_never_become_paths() {
        let m = Maildirs::new(Path::new("/srv/mail"), "mx.test", MailAccess::Private);
        for bad in [
            "\"../../etc\"@example.org",
            "\"a/b\"@example.org",
            "a/b@example.org",
            "u@[127.0.0.1]",
        ] {
            assert_eq!(m.maildir(&Address::parse(bad).unwrap()), None, "{bad}");
        }
    }

    fn mode_of(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn group_access_makes_the_maildir_group_read_write() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("mail");
        let m = Maildirs::new(&root, "mx.test", MailAccess::Group);
        let rcpt = Address::parse("bob@example.org").unwrap();
        let md = m.maildir(&rcpt).unwrap();
        let path = m.write(&md, &ReversePath::Null, &rcpt, b"x\r\n").unwrap();
        let user = root.join("example.org/bob");
        for (p, want) in [
            (root.join("example.org"), 0o2710),
            (user.clone(), 0o2710),
            (md.clone(), 0o2770),
            (md.join("tmp"), 0o2770),
            (md.join("new"), 0o2770),
            (md.join("cur"), 0o2770),
            (path, 0o660),
        ] {
            assert_eq!(mode_of(&p), want, "{}", p.display());
        }
        // Private, as before: nothing for the group.
        let m = Maildirs::new(&root, "mx.test", MailAccess::Private);
        let rcpt = Address::parse("carol@example.org").unwrap();
        let md = m.maildir(&rcpt).unwrap();
        let path = m.write(&md, &ReversePath::Null, &rcpt, b"x\r\n").unwrap();
        assert_eq!(mode_of(&md), 0o700 | (mode_of(&md) & 0o2000));
        assert_eq!(mode_of(&path), 0o600);
    }

    /// The mail group may rename and replace entries of a Maildir: a symbolic link put in
    /// place of `new/` (or of the Maildir itself) must not carry the message elsewhere.
    #[test]
    fn a_planted_link_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("mail");
        let elsewhere = dir.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        let m = Maildirs::new(&root, "mx.test", MailAccess::Group);
        let rcpt = Address::parse("bob@example.org").unwrap();
        let md = m.maildir(&rcpt).unwrap();
        m.write(&md, &ReversePath::Null, &rcpt, b"first\r\n")
            .unwrap();
        fs::remove_dir_all(md.join("new")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, md.join("new")).unwrap();
        let e = m.write(&md, &ReversePath::Null, &rcpt, b"second\r\n");
        assert!(e.is_err(), "wrote through a link: {e:?}");
        assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
        assert_eq!(fs::read_dir(md.join("tmp")).unwrap().count(), 0);
        // The same for the Maildir itself and a user's directory.
        let carol = Address::parse("carol@example.org").unwrap();
        let user = root.join("example.org/carol");
        fs::create_dir(&user).unwrap();
        std::os::unix::fs::symlink(&elsewhere, user.join("Maildir")).unwrap();
        let e = m.write(
            &m.maildir(&carol).unwrap(),
            &ReversePath::Null,
            &carol,
            b"x",
        );
        assert!(e.is_err(), "wrote through a link: {e:?}");
        std::os::unix::fs::symlink(&elsewhere, root.join("example.org/dave")).unwrap();
        let dave = Address::parse("dave@example.org").unwrap();
        let e = m.write(&m.maildir(&dave).unwrap(), &ReversePath::Null, &dave, b"x");
        assert!(e.is_err(), "wrote through a link: {e:?}");
        assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
    }
}
