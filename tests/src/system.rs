//! What the privilege and sandbox tests read about processes and files: the ids in
//! `/proc/PID/status`, owners and modes, and an unprivileged user to drop to.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

/// The real, effective, saved and file-system ids of a process (`Uid:`/`Gid:` lines of
/// `/proc/PID/status`) and its supplementary groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcIds {
    pub uid: Vec<u32>,
    pub gid: Vec<u32>,
    pub groups: Vec<u32>,
}

/// Reads the ids of process `pid`.
pub fn proc_ids(pid: u32) -> ProcIds {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/status: {e}"));
    let field = |name: &str| -> Vec<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
            .split_whitespace()
            .map(|n| n.parse().expect("a number"))
            .collect()
    };
    ProcIds {
        uid: field("Uid:"),
        gid: field("Gid:"),
        groups: field("Groups:"),
    }
}

/// True when the tests run as root (effective uid 0).
pub fn is_root() -> bool {
    proc_ids(std::process::id()).uid.get(1) == Some(&0)
}

/// The owner uid, gid and permission bits of `path` (not following a final link).
pub fn owner_mode(path: &Path) -> (u32, u32, u32) {
    let meta = std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("cannot stat {}: {e}", path.display()));
    (meta.uid(), meta.gid(), meta.mode() & 0o7777)
}

/// The uid and primary gid of a system user, from `id`.
pub fn user_ids(name: &str) -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").arg(flag).arg(name).output().ok()?;
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

/// An unprivileged user to drop to: `mta-test` (created with `useradd --system` when
/// missing, as the tests run as root), else `nobody`.
pub fn unprivileged_user() -> (String, u32, u32) {
    const NAME: &str = "mta-test";
    if user_ids(NAME).is_none() {
        // Two tests may race to create it: whoever loses finds it made.
        let _ = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                NAME,
            ])
            .output();
    }
    for name in [NAME, "nobody"] {
        if let Some((uid, gid)) = user_ids(name) {
            return (name.to_string(), uid, gid);
        }
    }
    panic!("neither {NAME} nor nobody exists, and useradd could not create {NAME}");
}

/// The gid of a system group, from `getent`.
pub fn group_id(name: &str) -> Option<u32> {
    let out = Command::new("getent")
        .arg("group")
        .arg(name)
        .output()
        .ok()?;
    let line = String::from_utf8(out.stdout).ok()?;
    line.trim().split(':').nth(2)?.parse().ok()
}

/// The group that may read delivered mail in the tests (`local.mail_group`):
/// `mta-test-mail`, created with `groupadd --system` when missing (the tests run as root).
pub fn mail_group() -> (String, u32) {
    const NAME: &str = "mta-test-mail";
    if group_id(NAME).is_none() {
        // Two tests may race to create it: whoever loses finds it made.
        let _ = Command::new("groupadd").args(["--system", NAME]).output();
    }
    let gid = group_id(NAME)
        .unwrap_or_else(|| panic!("group {NAME} does not exist and groupadd could not create it"));
    (NAME.to_string(), gid)
}

/// The user an IMAP server reads mail as in the tests: `mta-test-imap`, a system user of
/// its own (not the one `mta serve` drops to) whose primary group is [`mail_group`].
pub fn imap_user() -> (String, u32, u32) {
    const NAME: &str = "mta-test-imap";
    let (group, gid) = mail_group();
    if user_ids(NAME).is_none() {
        let _ = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                "--gid",
                &group,
                NAME,
            ])
            .output();
    }
    let (uid, primary) = user_ids(NAME)
        .unwrap_or_else(|| panic!("user {NAME} does not exist and useradd could not create it"));
    assert_eq!(primary, gid, "{NAME}'s primary group is not {group}");
    (NAME.to_string(), uid, gid)
}

/// Whether `uid` with group `gid` (and no other) may open `path` for reading, or connect
/// to it when it is a Unix socket: tried for real, with `setpriv` and the system Python (a
/// Python under root's home would be closed to `uid`).
pub fn can_open_as(uid: u32, gid: u32, path: &Path) -> bool {
    const OPEN: &str = "import os, socket, stat, sys\n\
        p = sys.argv[1]\n\
        if stat.S_ISSOCK(os.stat(p).st_mode):\n    \
            socket.socket(socket.AF_UNIX).connect(p)\n\
        else:\n    \
            open(p, 'rb').read(1)\n";
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .args(["/usr/bin/python3", "-c", OPEN])
        .arg(path);
    crate::run("setpriv python3", &mut cmd, b"", crate::secs(10))
        .status
        .success()
}
