//! The users file on disk and `mta user add|del|list|passwd|show`.
//!
//! The format and the password rules are `mta_core::auth`'s; this module owns where the file
//! lives (`DATA_DIR/users`, mode 0600), how it is replaced (write a temporary file, fsync,
//! rename, fsync the directory, so a reader sees the old file or the new one and never half
//! of one), how a password gets in (a hidden prompt or one line of stdin, never an argument),
//! and [`UsersFile`], which lets a running server see changes without a restart.
//!
//! Two `mta user` commands run at the same moment can lose one of the two changes (each reads,
//! changes and writes the whole file); they cannot leave a broken file.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, BufRead, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use anyhow::{Context, bail};
use mta_core::auth::{MAX_PASSWORD_BYTES, UserDb, check_password_policy};
use mta_core::config::Config;
use mta_core::seams::UserDirectory;
use mta_core::{Address, Domain};

/// The name of the users file inside the data dir.
const USERS_FILE: &str = "users";
/// The temporary file [`save`] writes before renaming it over the users file.
const USERS_TMP: &str = ".users.tmp";

/// The users file inside the data dir: `DATA_DIR/users` (mode 0600).
pub fn users_path(data_dir: &Path) -> PathBuf {
    data_dir.join(USERS_FILE)
}

/// Loads the users file; a missing file is an empty database. Warns when the file can be
/// read by anyone but its owner.
///
/// # Errors
/// When the file cannot be read or does not parse; the message names the path and the line.
/// A symlink or anything but a regular file at the path is refused (see [`read_regular`]).
pub fn load(data_dir: &Path) -> anyhow::Result<UserDb> {
    let path = users_path(data_dir);
    let (text, meta) = match read_regular(&path) {
        Ok(read) => read,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(UserDb::default()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    if meta.mode() & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format_args!("{:o}", meta.mode() & 0o777),
            "users file is readable by others than its owner; chmod 600 it"
        );
    }
    UserDb::parse(&text).with_context(|| path.display().to_string())
}

/// Reads the file at `path` only if it is a regular file, and without following a symlink.
///
/// `mta user` runs as root on a data dir the server's own user can write, so that user could
/// put a symlink at the path (root would read, and print parse errors about, a file of its
/// choosing) or a FIFO (root's read would wait for ever). The file is opened with
/// `O_NOFOLLOW | O_NONBLOCK` (a FIFO opens without waiting for a writer), checked with
/// `fstat` on the open descriptor (no window to swap it), and read only if it is regular.
///
/// # Errors
/// `NotFound` when there is no file; an error saying what is there instead of a regular
/// file; I/O errors.
fn read_regular(path: &Path) -> io::Result<(String, fs::Metadata)> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        // ELOOP: the last component is a symlink.
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(io::Error::other("is a symlink; refusing to follow it"));
        }
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other(format!(
            "not a regular file ({}); refusing to read it",
            kind_of(&meta)
        )));
    }
    if meta.len() > MAX_USERS_FILE {
        return Err(io::Error::other(format!(
            "{} octets, more than the {MAX_USERS_FILE} a users file may have; refusing to read it",
            meta.len()
        )));
    }
    let mut text = String::new();
    // Bounded again while reading: the file may grow after the check.
    file.take(MAX_USERS_FILE + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_USERS_FILE {
        return Err(io::Error::other(
            "grew past the size a users file may have while read",
        ));
    }
    Ok((text, meta))
}

/// The largest users file read: 64 MiB is some 400,000 users (an argon2id hash line is
/// about 150 octets); anything larger is not ours and would only cost root memory.
const MAX_USERS_FILE: u64 = 64 * 1024 * 1024;

/// What a non-regular file is, for an error message.
fn kind_of(meta: &fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else {
        "not a file"
    }
}

/// Writes the database atomically: creates `DATA_DIR` if missing (mode 0700), writes
/// `DATA_DIR/.users.tmp` with mode 0600, fsyncs it, renames it over `DATA_DIR/users`, and
/// fsyncs the directory so the rename itself survives a crash.
///
/// # Errors
/// When any of those steps fails; the message names the path. The old file is then intact.
pub fn save(data_dir: &Path, db: &UserDb) -> anyhow::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    let tmp = data_dir.join(USERS_TMP);
    // A leftover from an interrupted save. create_new below (O_EXCL) then refuses to follow a
    // symlink that someone may have put in its place.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing stale {}", tmp.display())),
    }
    let write = || -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        // The umask may have taken bits from 0600 (never added any); make it exactly 0600.
        file.set_permissions(Permissions::from_mode(0o600))?;
        // `mta user` run as root for a server that runs as its own user (docs/install.md):
        // the file belongs to whoever owns the data dir, or the server could not read it.
        let owner = fs::metadata(data_dir)?;
        if owner.uid() != file.metadata()?.uid() {
            std::os::unix::fs::fchown(&file, Some(owner.uid()), Some(owner.gid()))?;
        }
        file.write_all(db.to_text().as_bytes())?;
        file.sync_all()
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", tmp.display()));
    }
    let path = users_path(data_dir);
    fs::rename(&tmp, &path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    File::open(data_dir)
        .and_then(|dir| dir.sync_all())
        .with_context(|| format!("syncing directory {}", data_dir.display()))?;
    Ok(())
}

/// `mta user add|del|list|passwd|show`.
#[derive(clap::Subcommand, Debug)]
pub enum UserCommand {
    /// Add a user; the password is read from a prompt (hidden, asked twice) or one line of
    /// stdin with --password-stdin.
    Add {
        /// The login and mailbox, e.g. alice@example.org; its domain must be a local domain.
        address: String,
        /// Read the password from the first line of standard input instead of a prompt.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Delete a user.
    Del {
        /// The user to delete.
        address: String,
    },
    /// List users, one address per line.
    List,
    /// Change a user's password (prompt or --password-stdin).
    Passwd {
        /// The user whose password changes.
        address: String,
        /// Read the password from the first line of standard input instead of a prompt.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Show what a user may send as (the login, the aliases that reach it and its
    /// `[senders]` patterns), then its sending counters and limits (`[limits.sending]`),
    /// which the running server is asked for.
    Show {
        /// The user.
        address: String,
    },
    /// Stop a user's sending at once: new mail is refused with 450 4.7.1, queued mail is
    /// kept undelivered. For an account whose password may be stolen.
    Hold {
        /// The user.
        address: String,
    },
    /// Let a held user send again; its queued mail is delivered.
    Release {
        /// The user.
        address: String,
    },
}

impl UserCommand {
    /// The commands the running server answers (`crate::sending_cmd`), with their address.
    pub fn sending(&self) -> Option<(crate::sending_cmd::Verb, &str)> {
        use crate::sending_cmd::Verb;
        match self {
            UserCommand::Hold { address } => Some((Verb::Hold, address)),
            UserCommand::Release { address } => Some((Verb::Release, address)),
            UserCommand::Add { .. }
            | UserCommand::Del { .. }
            | UserCommand::List
            | UserCommand::Show { .. }
            | UserCommand::Passwd { .. } => None,
        }
    }
}

/// Runs one `mta user` command against `DATA_DIR/users`, printing its result on stdout.
/// Passwords come from the terminal (hidden) or stdin and are never printed or logged.
///
/// # Errors
/// A bad address, an address outside `local_domains` or with the recipient `delimiter` in
/// its local part (for `add`), an unknown or existing user, a password that fails the
/// policy, or a file that cannot be read or written.
pub fn run(cmd: UserCommand, config: &Config) -> anyhow::Result<()> {
    let stdin = io::stdin();
    let stdout = io::stdout();
    execute(cmd, config, &mut stdin.lock(), &mut stdout.lock())
}

/// [`run`] with stdin and stdout passed in, so tests can drive it.
fn execute(
    cmd: UserCommand,
    config: &Config,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let data_dir = config.data_dir.as_path();
    let local_domains = config.local_domains.as_slice();
    let delimiter = config.local.recipient_delimiter;
    match cmd {
        UserCommand::Add {
            address,
            password_stdin,
        } => {
            let address = parse_address(&address)?;
            check_local(&address, local_domains, delimiter)?;
            let mut db = load(data_dir)?;
            if db.contains(&address) {
                bail!(
                    "user {address} already exists (use `mta user passwd` to change the password)"
                );
            }
            let password = new_password(password_stdin, input)?;
            db.add(address.clone(), &password)?;
            save(data_dir, &db)?;
            writeln!(out, "added {address}")?;
        }
        UserCommand::Del { address } => {
            let address = parse_address(&address)?;
            let mut db = load(data_dir)?;
            db.remove(&address)?;
            save(data_dir, &db)?;
            writeln!(out, "deleted {address}")?;
        }
        UserCommand::List => {
            for address in load(data_dir)?.users() {
                writeln!(out, "{address}")?;
            }
        }
        UserCommand::Passwd {
            address,
            password_stdin,
        } => {
            let address = parse_address(&address)?;
            let mut db = load(data_dir)?;
            if !db.contains(&address) {
                bail!("no such user: {address}");
            }
            let password = new_password(password_stdin, input)?;
            db.set_password(&address, &password)?;
            save(data_dir, &db)?;
            writeln!(out, "changed the password of {address}")?;
        }
        UserCommand::Show { address } => {
            let address = parse_address(&address)?;
            let db = load(data_dir)?;
            if !db.contains(&address) {
                bail!("no such user: {address}");
            }
            for line in crate::identities::lines(config, &address) {
                writeln!(out, "{line}")?;
            }
        }
        UserCommand::Hold { .. } | UserCommand::Release { .. } => {
            bail!("`mta user hold|release` asks the running server")
        }
    }
    Ok(())
}

fn parse_address(text: &str) -> anyhow::Result<Address> {
    Address::parse(text).with_context(|| format!("{text:?} is not a valid address"))
}

/// A user must be a mailbox we deliver to: a local domain, and a local part that can name a
/// Maildir directory and does not contain the recipient delimiter (`bob+x` would take mail
/// meant for bob's tag `x`, and would share bob's Maildir under LMTP servers that strip it).
fn check_local(
    address: &Address,
    local_domains: &[Domain],
    delimiter: Option<char>,
) -> anyhow::Result<()> {
    if !local_domains.contains(address.domain()) {
        if local_domains.is_empty() {
            bail!("{address}: no local domains are configured; add the domain to the config first");
        }
        let names: Vec<&str> = local_domains.iter().map(Domain::as_str).collect();
        bail!(
            "{address}: {} is not a local domain (local domains: {})",
            address.domain(),
            names.join(", ")
        );
    }
    if !address.is_path_safe() {
        bail!(
            "{address}: this local part cannot name a Maildir directory \
             (no quotes, '/', '\\', leading '.' or '..')"
        );
    }
    if let Some(d) = delimiter
        && address.local_part().contains(d)
    {
        bail!(
            "{address}: the local part contains the recipient delimiter {d:?} \
             ([local] recipient_delimiter): mail to it goes to the user before the {d:?}"
        );
    }
    Ok(())
}

/// The new password, from one line of `input` or from two hidden prompts that must agree.
/// The policy is checked before the second prompt so a rejected password is not typed twice.
fn new_password(from_stdin: bool, input: &mut dyn BufRead) -> anyhow::Result<String> {
    if from_stdin {
        return read_password_line(input);
    }
    let prompt_error = "reading the password from the terminal (use --password-stdin without one)";
    let first = rpassword::prompt_password("New password: ").context(prompt_error)?;
    check_password_policy(&first)?;
    let second = rpassword::prompt_password("Repeat password: ").context(prompt_error)?;
    if first != second {
        bail!("the two passwords differ; nothing changed");
    }
    Ok(first)
}

/// Reads one line and strips only its line ending ("\n" or "\r\n"): spaces are part of the
/// password. Reads at most a little over the policy's limit, which then rejects it.
fn read_password_line(input: &mut dyn BufRead) -> anyhow::Result<String> {
    let mut line = String::new();
    let limit = u64::try_from(MAX_PASSWORD_BYTES + 2).unwrap_or(u64::MAX);
    input
        .take(limit)
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    if line.is_empty() {
        bail!("no password on stdin (expected one line)");
    }
    if let Some(rest) = line.strip_suffix('\n') {
        let rest = rest.strip_suffix('\r').unwrap_or(rest);
        line.truncate(rest.len());
    }
    Ok(line)
}

/// What identifies one version of the users file. The inode changes on every [`save`] (a new
/// file is renamed in), which catches two saves within one mtime tick that kept the size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    modified: Option<SystemTime>,
}

/// What the last look at the file found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Missing,
    File(Stamp),
    /// stat failed (other than "not found"); already warned about.
    Unreadable,
}

#[derive(Debug)]
struct Loaded {
    seen: Seen,
    db: Arc<UserDb>,
}

/// The users file for the server: reloads `DATA_DIR/users` when it changes (a stat on every
/// [`UserDirectory::current`] call), so `mta user add` takes effect without a restart. When a
/// reload fails it keeps the last good database and warns once per change of the file.
#[derive(Debug)]
pub struct UsersFile {
    data_dir: PathBuf,
    loaded: Mutex<Loaded>,
}

impl UsersFile {
    /// Loads the users file once; a missing file is an empty database.
    ///
    /// # Errors
    /// As [`load`]: a file that exists but cannot be read or parsed stops the server from
    /// starting, rather than starting it with no users.
    pub fn open(data_dir: &Path) -> anyhow::Result<UsersFile> {
        let path = users_path(data_dir);
        let seen = look(&path).with_context(|| format!("reading {}", path.display()))?;
        let db = load(data_dir)?;
        Ok(UsersFile {
            data_dir: data_dir.to_path_buf(),
            loaded: Mutex::new(Loaded {
                seen,
                db: Arc::new(db),
            }),
        })
    }
}

impl UserDirectory for UsersFile {
    fn current(&self) -> Arc<UserDb> {
        let path = users_path(&self.data_dir);
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        // stat before reading: the text read is then at least as new as the stamp kept, so a
        // change racing this reload is picked up by the next call.
        let seen = match look(&path) {
            Ok(seen) => seen,
            Err(e) => {
                if loaded.seen != Seen::Unreadable {
                    tracing::warn!(
                        path = %path.display(),
                        error = %e,
                        "cannot stat users file; keeping the users loaded before"
                    );
                    loaded.seen = Seen::Unreadable;
                }
                return Arc::clone(&loaded.db);
            }
        };
        if seen != loaded.seen {
            loaded.seen = seen;
            match load(&self.data_dir) {
                Ok(db) => {
                    tracing::info!(path = %path.display(), users = db.len(), "users file reloaded");
                    loaded.db = Arc::new(db);
                }
                Err(e) => {
                    tracing::warn!(
                        error = format_args!("{e:#}"),
                        "users file not reloaded; keeping the users loaded before"
                    );
                }
            }
        }
        Arc::clone(&loaded.db)
    }
}

/// The stamp of whatever is at `path`, a symlink itself rather than its target (a link
/// is then refused by [`load`], with a warning).
fn look(path: &Path) -> io::Result<Seen> {
    match fs::symlink_metadata(path) {
        Ok(meta) => Ok(Seen::File(Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            modified: meta.modified().ok(),
        })),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Seen::Missing),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> Address {
        Address::parse(text).expect("test address is valid")
    }

    /// A config with its data dir at `dir`, the local domains `domains`, and `more`.
    fn config(dir: &Path, domains: &[&str], more: &str) -> Config {
        let text = format!(
            "data_dir = {:?}\nlocal_domains = {domains:?}\n{more}",
            dir.display().to_string()
        );
        Config::from_toml("mta.toml", &text, "buildhost").expect("test config is valid")
    }

    /// Runs a command with `stdin` as its input; returns what it printed, or the error text.
    fn cli(dir: &Path, cmd: UserCommand, stdin: &str) -> Result<String, String> {
        let mut out = Vec::new();
        let config = config(dir, &["example.org"], "");
        execute(cmd, &config, &mut stdin.as_bytes(), &mut out).map_err(|e| format!("{e:#}"))?;
        String::from_utf8(out).map_err(|e| e.to_string())
    }

    #[test]
    fn missing_file_is_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = load(&dir.path().join("not-yet")).expect("missing file loads");
        assert!(db.is_empty());
    }

    #[test]
    fn saved_by_root_the_file_belongs_to_the_data_dir_owner() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: only root can give a file away");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        fs::create_dir(&data).expect("data dir");
        std::os::unix::fs::chown(&data, Some(65534), Some(65534)).expect("chown to nobody");
        let mut db = UserDb::default();
        db.add(addr("alice@example.org"), "alice-secret")
            .expect("add");
        save(&data, &db).expect("save");
        let meta = fs::metadata(users_path(&data)).expect("stat");
        assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
    }

    #[test]
    fn save_load_round_trip_and_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let mut db = UserDb::default();
        db.add(addr("alice@example.org"), "alice-secret")
            .expect("add");
        save(&data, &db).expect("save");

        assert_eq!(load(&data).expect("load"), db);
        let mode = |p: &Path| fs::metadata(p).expect("stat").mode() & 0o777;
        assert_eq!(mode(&users_path(&data)), 0o600);
        assert_eq!(mode(&data), 0o700);
        assert!(!data.join(USERS_TMP).exists());

        // A stale temporary file (even a symlink) is replaced, never written through.
        let victim = dir.path().join("victim");
        fs::write(&victim, "untouched").expect("write victim");
        std::os::unix::fs::symlink(&victim, data.join(USERS_TMP)).expect("symlink");
        db.remove(&addr("alice@example.org")).expect("remove");
        save(&data, &db).expect("save over stale tmp");
        assert!(load(&data).expect("load").is_empty());
        assert_eq!(fs::read_to_string(&victim).expect("read"), "untouched");
    }

    #[test]
    fn load_refuses_a_file_too_large_to_be_ours() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = fs::File::create(users_path(dir.path())).expect("create");
        // Sparse: no disk used.
        file.set_len(MAX_USERS_FILE + 1).expect("set_len");
        let e = load(dir.path()).expect_err("a huge users file is refused");
        assert!(format!("{e:#}").contains("more than"), "{e:#}");
    }

    #[test]
    fn load_refuses_a_symlink_or_a_fifo() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        fs::create_dir(&data).expect("data dir");
        // A users file elsewhere, linked in by whoever can write the data dir: not read.
        let mut db = UserDb::default();
        db.add(addr("mallory@example.org"), "mallory-secret")
            .expect("add");
        let elsewhere = dir.path().join("elsewhere");
        fs::write(&elsewhere, db.to_text()).expect("write elsewhere");
        std::os::unix::fs::symlink(&elsewhere, users_path(&data)).expect("symlink");
        let err = format!("{:#}", load(&data).expect_err("symlink refused"));
        assert!(
            err.contains(&users_path(&data).display().to_string()),
            "{err}"
        );
        assert!(err.contains("symlink"), "{err}");
        assert!(UsersFile::open(&data).is_err());
        fs::remove_file(users_path(&data)).expect("remove link");

        // A FIFO: refused at once instead of waiting for a writer. Run in a thread so the
        // test reports a hang (the bound is generous: it is never reached when refused).
        nix::unistd::mkfifo(&users_path(&data), nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        let (tx, rx) = std::sync::mpsc::channel();
        let d = data.clone();
        std::thread::spawn(move || {
            let _ = tx.send(load(&d).map_err(|e| format!("{e:#}")));
        });
        let got = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("load returned instead of waiting on the FIFO");
        let err = got.expect_err("FIFO refused");
        assert!(err.contains("not a regular file"), "{err}");
        assert!(
            err.contains(&users_path(&data).display().to_string()),
            "{err}"
        );
        // `mta user add` as root refuses too, and leaves the FIFO alone.
        let add = UserCommand::Add {
            address: "alice@example.org".into(),
            password_stdin: true,
        };
        let err = cli(&data, add, "alice-secret\n").expect_err("add refused");
        assert!(err.contains("not a regular file"), "{err}");
    }

    #[test]
    fn load_names_path_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(users_path(dir.path()), "# users\nalice@example.org\n").expect("write");
        let err = format!("{:#}", load(dir.path()).expect_err("bad file"));
        let want = format!("{}: line 2:", users_path(dir.path()).display());
        assert!(err.starts_with(&want), "{err}");
    }

    #[test]
    fn password_lines() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("secret-pw\n", Ok("secret-pw")),
            ("secret-pw\r\n", Ok("secret-pw")),
            ("secret-pw", Ok("secret-pw")),
            (" spaced pw \n", Ok(" spaced pw ")),
            ("first\nsecond\n", Ok("first")),
            ("\n", Ok("")),
            ("", Err("no password on stdin")),
        ];
        for (input, want) in cases {
            let got = read_password_line(&mut input.as_bytes()).map_err(|e| e.to_string());
            match (&got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{input:?}"),
                (Err(g), Err(w)) => assert!(g.starts_with(w), "{input:?}: {g}"),
                _ => panic!("{input:?}: got {got:?}, want {want:?}"),
            }
        }
        let long = "x".repeat(MAX_PASSWORD_BYTES * 3);
        let got = read_password_line(&mut long.as_bytes()).expect("reads");
        assert!(check_password_policy(&got).is_err());
    }

    #[test]
    fn cli_commands() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let add = |a: &str| UserCommand::Add {
            address: a.into(),
            password_stdin: true,
        };
        let steps: Vec<(UserCommand, &str, Result<&str, &str>)> = vec![
            (UserCommand::List, "", Ok("")),
            (
                add("alice@example.org"),
                "alice-secret\n",
                Ok("added alice@example.org\n"),
            ),
            (
                add("Alice@Example.org"),
                "alice-secret\n",
                Err("user Alice@example.org already exists"),
            ),
            (
                add("bob@example.net"),
                "bob-secret\n",
                Err(
                    "bob@example.net: example.net is not a local domain (local domains: example.org)",
                ),
            ),
            (add("bob@example.org"), "short\n", Err("password too short")),
            (
                add("\"b b\"@example.org"),
                "bob-secret\n",
                Err("\"b b\"@example.org: this local part cannot name a Maildir directory"),
            ),
            (
                add("bob"),
                "bob-secret\n",
                Err("\"bob\" is not a valid address"),
            ),
            (
                add("bob+x@example.org"),
                "bob-secret\n",
                Err("bob+x@example.org: the local part contains the recipient delimiter '+'"),
            ),
            (add("bob@example.org"), "", Err("no password on stdin")),
            (
                add("bob@example.org"),
                "bob-secret\r\n",
                Ok("added bob@example.org\n"),
            ),
            (
                UserCommand::List,
                "",
                Ok("alice@example.org\nbob@example.org\n"),
            ),
            (
                UserCommand::Passwd {
                    address: "carol@example.org".into(),
                    password_stdin: true,
                },
                "carol-secret\n",
                Err("no such user: carol@example.org"),
            ),
            (
                UserCommand::Passwd {
                    address: "ALICE@example.org".into(),
                    password_stdin: true,
                },
                "alice-new-secret\n",
                Ok("changed the password of ALICE@example.org\n"),
            ),
            (
                UserCommand::Del {
                    address: "carol@example.org".into(),
                },
                "",
                Err("no such user: carol@example.org"),
            ),
            (
                UserCommand::Del {
                    address: "BOB@example.org".into(),
                },
                "",
                Ok("deleted BOB@example.org\n"),
            ),
            (UserCommand::List, "", Ok("alice@example.org\n")),
        ];
        for (i, (cmd, stdin, want)) in steps.into_iter().enumerate() {
            let shown = format!("{cmd:?}");
            let got = cli(d, cmd, stdin);
            match (&got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "step {i} {shown}"),
                (Err(g), Err(w)) => assert!(g.starts_with(w), "step {i} {shown}: {g}"),
                _ => panic!("step {i} {shown}: got {got:?}, want {want:?}"),
            }
        }
        let db = load(d).expect("load");
        assert_eq!(
            db.verify("alice@example.org", "alice-new-secret"),
            mta_core::auth::Verified::User(addr("alice@example.org"))
        );
        // No domains configured at all.
        let mut out = Vec::new();
        let err = execute(
            add("x@example.org"),
            &config(d, &[], ""),
            &mut "x-secret-1\n".as_bytes(),
            &mut out,
        )
        .expect_err("no local domains");
        assert!(
            err.to_string().contains("no local domains are configured"),
            "{err}"
        );
    }

    #[test]
    fn users_file_follows_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let users = UsersFile::open(d).expect("open with no file");
        assert!(users.current().is_empty());

        let mut db = UserDb::default();
        db.add(addr("alice@example.org"), "alice-secret")
            .expect("add");
        save(d, &db).expect("save");
        assert!(users.current().contains(&addr("alice@example.org")));

        // Same size, same second: a new inode still shows the change.
        let mut other = UserDb::default();
        other
            .add(addr("alicf@example.org"), "alice-secret")
            .expect("add");
        save(d, &other).expect("save");
        let now = users.current();
        assert!(now.contains(&addr("alicf@example.org")));
        assert!(!now.contains(&addr("alice@example.org")));

        // A broken file keeps the last good database.
        fs::write(users_path(d), "garbage\n").expect("write");
        assert!(users.current().contains(&addr("alicf@example.org")));

        // Removing the file removes the users.
        fs::remove_file(users_path(d)).expect("remove");
        assert!(users.current().is_empty());
    }

    #[test]
    fn open_refuses_a_broken_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(users_path(dir.path()), "garbage\n").expect("write");
        let err = format!("{:#}", UsersFile::open(dir.path()).expect_err("broken"));
        assert!(err.contains("line 1"), "{err}");
    }
}
