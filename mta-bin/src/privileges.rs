//! Who `mta serve` runs as. Started as root, it looks up the configured `user` and `group`
//! first, makes the data dir theirs (directories 0700, files 0600) while it still may, binds
//! its ports, and then drops to them for good ([`drop_to`]) before any other thread exists or
//! any network input is read. Serving as root is refused unless `allow_root = true`.
//! With a mail group (`local.mail_group`) the Maildir tree under `DATA_DIR/mail` is that
//! group's to read and write (modes from [`MailAccess::mode`]), the data dir is 0710 for it
//! to pass through, and the process keeps the group as its one supplementary group;
//! everything else stays private.
//! Started unprivileged (with `CAP_NET_BIND_SERVICE` for ports below 1024) it keeps its user.
//!
//! The order and the sockets are `serve.rs`'s; the sandbox that follows is `sandbox.rs`'s.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{Context as _, bail};
use mta_core::config::Config;
use mta_smtp::local::{MailAccess, TreeLevel};
use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fchmod, fstat, fstatat};
use nix::unistd::{
    Gid, Group, Uid, User, fchown, getegid, geteuid, getgroups, getresgid, getresuid,
};
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

/// The group of `local.mail_group`, looked up, when set.
///
/// # Errors
/// A group that does not exist, or (serving as an unprivileged user, which cannot add a
/// group to itself) one the process is not a member of.
pub fn mail_group(config: &Config, plan: &Plan) -> anyhow::Result<Option<Gid>> {
    let Some(name) = &config.local.mail_group else {
        return Ok(None);
    };
    let group = Group::from_name(name)
        .with_context(|| format!("cannot look up group {name:?} (config key local.mail_group)"))?
        .with_context(|| {
            format!(
                "group {name:?} (config key local.mail_group) does not exist; create it with \
                 `groupadd --system {name}`"
            )
        })?;
    if let Plan::Keep { root: false } = plan {
        let member = getegid() == group.gid || getgroups()?.contains(&group.gid);
        if !member {
            bail!(
                "local.mail_group = {name:?}: mta serve runs as uid {} which is not a member \
                 of group {name}; add it (`usermod -aG {name} USER`) or start mta serve as \
                 root with user set",
                geteuid()
            );
        }
    }
    Ok(Some(group.gid))
}

/// Makes everything under `dir` belong to the user we will run as (when switching), with
/// directories 0700 and files 0600 (group and other bits removed), and logs what changed.
/// With a mail group (`mail`), `dir` becomes 0710 and the tree under `dir/mail` (created
/// here when missing) gets that group and the modes of [`MailAccess::Group`]; removing the
/// setting makes that tree private again at the next start.
/// Symbolic links are never followed and other special files are left alone, so a link
/// planted in a Maildir cannot make root change a file outside the data dir.
///
/// # Errors
/// When `dir` itself cannot be opened or fixed.
pub fn secure_data_dir(dir: &Path, plan: &Plan, mail: Option<Gid>) -> anyhow::Result<()> {
    let owner = plan.owner();
    if mail.is_some() {
        let root = dir.join("mail");
        match std::fs::create_dir(&root) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", root.display())),
        }
    }
    let top = openat(
        nix::fcntl::AT_FDCWD,
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("cannot open data dir {}", dir.display()))?;
    let mut walk = Walk {
        owner,
        mail,
        me: geteuid(),
        changed: 0,
        foreign: 0,
    };
    let st = fstat(&top).with_context(|| format!("cannot stat {}", dir.display()))?;
    walk.fix(&top, &st, true, Area::Top)
        .with_context(|| format!("cannot set the owner and mode of {}", dir.display()))?;
    walk.dir(top, dir, 1, Area::Top);
    let who = match plan {
        Plan::Switch { user, group, .. } => format!("{user}:{group}"),
        Plan::Keep { .. } | Plan::RefuseRoot => "the current user".to_string(),
    };
    let shared = match mail {
        Some(gid) => format!("; the mail tree group {gid}, directories 2770, files 0660"),
        None => String::new(),
    };
    info!(
        data_dir = %dir.display(),
        owner = %who,
        changed = walk.changed,
        "data dir owned by {who}, directories 0700, files 0600{shared} ({} entries fixed)",
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

/// Which part of the data dir an entry is in, which decides its group and mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Area {
    /// The data dir itself.
    Top,
    /// Anything but the mail tree: the queue, users file, keys, sockets.
    Private,
    /// `mail/` (depth 0) and everything below it.
    Mail(usize),
}

impl Area {
    /// The area of an entry called `name` in a directory of this area.
    fn child(self, name: &[u8]) -> Area {
        match self {
            Area::Top if name == b"mail" => Area::Mail(0),
            Area::Top | Area::Private => Area::Private,
            Area::Mail(depth) => Area::Mail(depth + 1),
        }
    }
}

/// The group and mode an entry must have, or for private entries (mode `None`) only that
/// no group or other bit is set.
fn wanted(area: Area, mail: Option<Gid>, is_dir: bool) -> (Option<Gid>, Option<u32>) {
    match (area, mail) {
        (Area::Private, _) | (Area::Top | Area::Mail(_), None) => (None, None),
        (Area::Top, Some(gid)) => (Some(gid), Some(0o710)),
        (Area::Mail(depth), Some(gid)) => (
            Some(gid),
            Some(MailAccess::Group.mode(TreeLevel::at(depth), is_dir)),
        ),
    }
}

struct Walk {
    owner: Option<(Uid, Gid)>,
    mail: Option<Gid>,
    me: Uid,
    changed: usize,
    foreign: usize,
}

impl Walk {
    /// The uid and gid an entry must have; `None` where we may not or need not set it.
    fn owner_of(&self, area: Area, is_dir: bool) -> (Option<Uid>, Option<Gid>) {
        let (group, _) = wanted(area, self.mail, is_dir);
        match self.owner {
            Some((uid, gid)) => (Some(uid), Some(group.unwrap_or(gid))),
            None => (None, group),
        }
    }

    fn needs_fix(&self, st: &FileStat, area: Area, is_dir: bool) -> bool {
        let (uid, gid) = self.owner_of(area, is_dir);
        let wrong_owner = uid.is_some_and(|u| st.st_uid != u.as_raw())
            || gid.is_some_and(|g| st.st_gid != g.as_raw());
        let wrong_mode = match wanted(area, self.mail, is_dir).1 {
            Some(mode) => st.st_mode & 0o7777 != mode,
            None => st.st_mode & 0o077 != 0,
        };
        wrong_owner || wrong_mode
    }

    /// Fixes one entry through its open descriptor (never by path, so nothing can be
    /// swapped in between).
    fn fix(&mut self, fd: &OwnedFd, st: &FileStat, is_dir: bool, area: Area) -> nix::Result<()> {
        if !self.needs_fix(st, area, is_dir) {
            return Ok(());
        }
        if self.owner.is_none() && st.st_uid != self.me.as_raw() {
            self.foreign += 1;
            return Ok(());
        }
        let (uid, gid) = self.owner_of(area, is_dir);
        if uid.is_some() || gid.is_some() {
            fchown(fd, uid, gid)?;
        }
        let mode = match (wanted(area, self.mail, is_dir).1, is_dir) {
            (Some(mode), _) => mode,
            (None, true) => 0o700,
            (None, false) => (st.st_mode & 0o700) | 0o600,
        };
        fchmod(fd, Mode::from_bits_truncate(mode))?;
        self.changed += 1;
        Ok(())
    }

    fn dir(&mut self, fd: OwnedFd, path: &Path, depth: usize, area: Area) {
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
            let area = area.child(name.as_bytes());
            if let Err(e) = self.entry(&dir, &name, &child, depth, area) {
                warn!(path = %child.display(), error = %e, "cannot fix owner and mode");
            }
        }
    }

    fn entry(
        &mut self,
        dir: &Dir,
        name: &CStr,
        path: &Path,
        depth: usize,
        area: Area,
    ) -> nix::Result<()> {
        let st = match fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Ok(()), // removed meanwhile
            Err(e) => return Err(e),
        };
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        let is_dir = kind == SFlag::S_IFDIR;
        // A regular file with another name may be a hard link to a file outside the data
        // dir (mta makes none): left alone like a symbolic link.
        if !is_dir
            && (kind != SFlag::S_IFREG || st.st_nlink > 1 || !self.needs_fix(&st, area, false))
        {
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
        self.fix(&fd, &st, is_dir, area)?;
        if is_dir && depth < MAX_DEPTH {
            self.dir(fd, path, depth + 1, area);
        }
        Ok(())
    }
}

/// Switches to the planned user for good: supplementary groups, group, then user (real,
/// effective and saved ids), and checks that root cannot be regained. Call it while the
/// process has one thread. A plan that keeps root logs a warning; [`Plan::RefuseRoot`] is
/// the error that stops start-up. With a mail group (`mail`), that group stays as the one
/// supplementary group: new Maildir entries keep the group's set-group-id bit only when
/// their owner is a member.
///
/// # Errors
/// Refusal to serve as root, or a failed switch.
pub fn drop_to(plan: &Plan, mail: Option<Gid>) -> anyhow::Result<()> {
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
            let groups: Vec<Gid> = std::iter::once(*gid).chain(mail).collect();
            nix::unistd::setgroups(&groups).context("cannot drop supplementary groups")?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The group and mode of the entry at `path` (names below the data dir; empty: the
    /// data dir), said plainly: only `mail/...` is shared, a Maildir's insides read-write.
    fn model(path: &[&str], mail: Option<Gid>, is_dir: bool) -> (Option<Gid>, Option<u32>) {
        let Some(gid) = mail else {
            return (None, None);
        };
        match path {
            [] => (Some(gid), Some(0o710)),
            ["mail", ..] if !is_dir => (Some(gid), Some(0o660)),
            ["mail"] | ["mail", _] | ["mail", _, _] => (Some(gid), Some(0o2710)),
            ["mail", ..] => (Some(gid), Some(0o2770)),
            _ => (None, None),
        }
    }

    proptest! {
        #[test]
        fn wanted_matches_the_model(
            path in proptest::collection::vec(
                prop_oneof![Just("mail"), Just("queue"), Just("users"), Just("dkim"),
                    Just("Maildir"), Just("new"), Just("x")],
                0..9,
            ),
            shared in any::<bool>(),
            is_dir in any::<bool>(),
        ) {
            let mail = shared.then(|| Gid::from_raw(1234));
            let area = path.iter().fold(Area::Top, |a, n| a.child(n.as_bytes()));
            prop_assert_eq!(wanted(area, mail, is_dir), model(&path, mail, is_dir), "{:?}", path);
        }
    }
}
