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
