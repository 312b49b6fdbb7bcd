//! Who `mta serve` runs as. Started as root, it looks up the configured `user` and `group`
//! first, makes the data dir theirs (directories 0700, files 0600) while it still may, binds
//! its ports, and then drops to them for good ([`drop_to`]) before any other thread exists or
//! any network input is read. Serving as root is refused unless `allow_root = true`.
//! Started unprivileged (with `CAP_NET_BIND_SERVICE` for ports below 1024) it keeps its user.
//!
//! The order and the sockets are `serve.rs`'s; the sandbox that follows is `sandbox.rs`'s.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{Context as _, bail};
use mta_core::config::Config;
use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fchmod, fstat, fstatat};
use nix::unistd::{Gid, Group, Uid, User, fchown, getegid, geteuid, getresgid, getresuid};
use tracing::{info, warn};

/// How deep the data-dir walk goes: Maildir folders sit at depth 6 to 8
/// (`mail/<domain>/<user>/Maildir/.Folder/cur/<file>`).
const MAX_DEPTH: usize = 16;

/// Who the server will run as once its ports are bound, decided before anything is touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Keep the current user (not root, or root with `allow_root = true`).
    Keep { root: bool },
    /// Root now; switch to this user and group after binding.
    Switch {
        user: String,
        uid: Uid,
        group: String,
        gid: Gid,
    },
    /// Root now with nothing to switch to and no `allow_root`: refused once the start-up
    /// checks that come before dropping (config, data dir, certificate, ports) have passed,
    /// so that their errors are reported first.
    RefuseRoot,
}

impl Plan {
    /// Decides from the config and the process's effective user.
    ///
    /// # Errors
    /// An unknown `user` or `group`, or a `user` that an unprivileged process cannot become.
    pub fn decide(config: &Config) -> anyhow::Result<Plan> {
        let process = &config.process;
        let root = geteuid().is_root();
        let Some(name) = &process.user else {
            return Ok(match (root, process.allow_root) {
                (true, false) => Plan::RefuseRoot,
                (root, _) => Plan::Keep { root },
            });
        };
        let user = User::from_name(name)
            .with_context(|| format!("cannot look up user {name:?} (config key user)"))?
            .with_context(|| {
                format!(
                    "user {name:?} (config key user) does not exist; create it with \
                     `useradd --system --home-dir {} --shell /usr/sbin/nologin {name}`",
                    config.data_dir.display()
                )
            })?;
        let (group, gid) = match &process.group {
            Some(g) => {
                let found = Group::from_name(g)
                    .with_context(|| format!("cannot look up group {g:?} (config key group)"))?
                    .with_context(|| format!("group {g:?} (config key group) does not exist"))?;
                (found.name, found.gid)
            }
            None => {
                let name = Group::from_gid(user.gid)
                    .ok()
                    .flatten()
                    .map_or_else(|| user.gid.to_string(), |g| g.name);
                (name, user.gid)
            }
        };
        if !root {
            if user.uid == geteuid() && gid == getegid() {
                return Ok(Plan::Keep { root: false });
            }
            bail!(
                "user = {name:?}: mta serve runs as uid {} and cannot switch to uid {} gid {}; \
                 start it as root, or as {name} itself",
                geteuid(),
                user.uid,
                gid
            );
        }
        if user.uid.is_root() {
            return Ok(match process.allow_root {
                true => Plan::Keep { root: true },
                false => Plan::RefuseRoot,
            });
        }
        Ok(Plan::Switch {
            user: user.name,
            uid: user.uid,
            group,
            gid,
        })
    }

    /// The owner the data dir must have, when we may set it (running as root).
    fn owner(&self) -> Option<(Uid, Gid)> {
        match self {
            Plan::Switch { uid, gid, .. } => Some((*uid, *gid)),
            Plan::Keep { .. } | Plan::RefuseRoot => None,
        }
    }
}

/// Makes everything under `dir` belong to the user we will run as (when switching), with
/// directories 0700 and files 0600 (group and other bits removed), and logs what changed.
/// Symbolic links are never followed and other special files are left alone, so a link
/// planted in a Maildir cannot make root change a file outside the data dir.
///
/// # Errors
/// When `dir` itself cannot be opened or fixed.
pub fn secure_data_dir(dir: &Path, plan: &Plan) -> anyhow::Result<()> {
    let owner = plan.owner();
    let top = openat(
        nix::fcntl::AT_FDCWD,
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("cannot open data dir {}", dir.display()))?;
    let mut walk = Walk {
        owner,
        me: geteuid(),
        changed: 0,
        foreign: 0,
    };
    let st = fstat(&top).with_context(|| format!("cannot stat {}", dir.display()))?;
    walk.fix(&top, &st, true)
        .with_context(|| format!("cannot set the owner and mode of {}", dir.display()))?;
    walk.dir(top, dir, 1);
    let who = match plan {
        Plan::Switch { user, group, .. } => format!("{user}:{group}"),
        Plan::Keep { .. } | Plan::RefuseRoot => "the current user".to_string(),
    };
    info!(
        data_dir = %dir.display(),
        owner = %who,
        changed = walk.changed,
        "data dir owned by {who}, directories 0700, files 0600 ({} entries fixed)",
        walk.changed
    );
    if walk.foreign > 0 {
        warn!(
            data_dir = %dir.display(),
            entries = walk.foreign,
            "entries in the data dir belong to another user; mta may fail to use them \
             (start mta serve as root with `user` set, or chown them)"
        );
    }
    Ok(())
}

struct Walk {
    owner: Option<(Uid, Gid)>,
    me: Uid,
    changed: usize,
    foreign: usize,
}

impl Walk {
    fn needs_fix(&self, st: &FileStat) -> bool {
        let wrong_owner = self
            .owner
            .is_some_and(|(u, g)| st.st_uid != u.as_raw() || st.st_gid != g.as_raw());
        wrong_owner || st.st_mode & 0o077 != 0
    }

    /// Fixes one entry through its open descriptor (never by path, so nothing can be
    /// swapped in between).
    fn fix(&mut self, fd: &OwnedFd, st: &FileStat, is_dir: bool) -> nix::Result<()> {
        if !self.needs_fix(st) {
            return Ok(());
        }
        if self.owner.is_none() && st.st_uid != self.me.as_raw() {
            self.foreign += 1;
            return Ok(());
        }
        if let Some((uid, gid)) = self.owner {
            fchown(fd, Some(uid), Some(gid))?;
        }
        let mode = match is_dir {
            true => 0o700,
            false => (st.st_mode & 0o700) | 0o600,
        };
        fchmod(fd, Mode::from_bits_truncate(mode))?;
        self.changed += 1;
        Ok(())
    }

    fn dir(&mut self, fd: OwnedFd, path: &Path, depth: usize) {
        let mut dir = match Dir::from_fd(fd) {
            Ok(d) => d,
            Err(e) => return warn!(path = %path.display(), error = %e, "cannot list"),
        };
        let names: Vec<CString> = dir
            .iter()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_owned())
            .filter(|n| n.as_bytes() != b"." && n.as_bytes() != b"..")
            .collect();
        for name in names {
            let child = path.join(std::ffi::OsStr::from_bytes(name.as_bytes()));
            if let Err(e) = self.entry(&dir, &name, &child, depth) {
                warn!(path = %child.display(), error = %e, "cannot fix owner and mode");
            }
        }
    }

    fn entry(&mut self, dir: &Dir, name: &CStr, path: &Path, depth: usize) -> nix::Result<()> {
        let st = match fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Ok(()), // removed meanwhile
            Err(e) => return Err(e),
        };
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        let is_dir = kind == SFlag::S_IFDIR;
        // A regular file with another name may be a hard link to a file outside the data
        // dir (mta makes none): left alone like a symbolic link.
        if !is_dir && (kind != SFlag::S_IFREG || st.st_nlink > 1 || !self.needs_fix(&st)) {
            return Ok(()); // links, sockets, fifos: never touched
        }
        let flags = match is_dir {
            true => OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            false => OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY,
        } | OFlag::O_NOFOLLOW
            | OFlag::O_CLOEXEC;
        let fd = match openat(dir.as_fd(), name, flags, Mode::empty()) {
            Ok(fd) => fd,
            // Replaced by a link or removed since the stat: leave it.
            Err(Errno::ELOOP | Errno::ENOENT | Errno::ENOTDIR) => return Ok(()),
            Err(e) => return Err(e),
        };
        let st = fstat(&fd)?;
        let now = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        if now != kind || (!is_dir && st.st_nlink > 1) {
            return Ok(());
        }
        self.fix(&fd, &st, is_dir)?;
        if is_dir && depth < MAX_DEPTH {
            self.dir(fd, path, depth + 1);
        }
        Ok(())
    }
}

/// Switches to the planned user for good: supplementary groups, group, then user (real,
/// effective and saved ids), and checks that root cannot be regained. Call it while the
/// process has one thread. A plan that keeps root logs a warning; [`Plan::RefuseRoot`] is
/// the error that stops start-up.
///
/// # Errors
/// Refusal to serve as root, or a failed switch.
pub fn drop_to(plan: &Plan) -> anyhow::Result<()> {
    match plan {
        Plan::Keep { root: false } => Ok(()),
        Plan::Keep { root: true } => {
            warn!(
                "serving as root (allow_root = true, or the built-in defaults): set user to \
                 drop privileges"
            );
            Ok(())
        }
        Plan::RefuseRoot => bail!(
            "refusing to serve as root: set user (for example user = \"mta\") so that mta \
             drops to that user after binding its ports, or allow_root = true to run as root \
             anyway"
        ),
        Plan::Switch {
            user,
            uid,
            group,
            gid,
        } => {
            nix::unistd::setgroups(&[*gid]).context("cannot drop supplementary groups")?;
            nix::unistd::setgid(*gid).with_context(|| format!("cannot switch to group {group}"))?;
            nix::unistd::setuid(*uid).with_context(|| format!("cannot switch to user {user}"))?;
            let (r, g) = (getresuid()?, getresgid()?);
            let all = [r.real, r.effective, r.saved];
            if all.iter().any(|u| u != uid)
                || [g.real, g.effective, g.saved].iter().any(|x| x != gid)
            {
                bail!("switching to user {user} left other ids in place");
            }
            if nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
                bail!("switched to user {user} but could become root again");
            }
            info!(%user, uid = uid.as_raw(), %group, gid = gid.as_raw(), "dropped privileges");
            Ok(())
        }
    }
}
