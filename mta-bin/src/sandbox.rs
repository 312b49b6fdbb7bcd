//! The sandbox `mta serve` puts itself in once its ports are bound and its privileges dropped
//! (Linux, `sandbox = true`, the default): Landlock limits file access to the data dir
//! (read-write) and the files the config names, the resolver's files and the system's
//! certificates (read-only); a seccomp filter allows the system calls a tokio server makes and
//! answers any other with `EPERM`, so a missing entry is an error in the log, not a crash.
//!
//! Both apply to the calling thread and the threads it starts later, so [`apply`] must run
//! while the process has one thread (`serve.rs` builds the runtime afterwards). A kernel
//! without Landlock or seccomp gets one warning and no such restriction.

use std::path::{Path, PathBuf};

use mta_core::config::Config;
use tracing::{info, warn};

/// What ended up in force, for the start-up log and the tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// `full`, `partial` (an older ABI: some rights not enforced), `off` (`sandbox = false`)
    /// or `unsupported`.
    pub landlock: String,
    /// `on`, `off` or `unsupported`.
    pub seccomp: String,
}

/// Files outside the config that the resolver and TLS may read: hickory reads the first
/// two; the certificate directories hold the system's roots, which the outbound TLS
/// verifier loads (Debian links `/etc/ssl/certs` into the other two).
const SYSTEM_READ: &[&str] = &[
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/host.conf",
    "/etc/gai.conf",
    "/etc/localtime",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/pki",
    "/usr/share/ca-certificates",
    "/usr/local/share/ca-certificates",
    "/usr/share/zoneinfo",
    // What the runtime, the allocator and sled read about the machine: CPUs, cgroup limits.
    "/proc/stat",
    "/proc/meminfo",
    "/proc/self/cgroup",
    "/proc/self/mountinfo",
    "/proc/sys/vm/overcommit_memory",
    "/sys/devices/system/cpu",
    "/sys/fs/cgroup",
];

/// Read-write for `/dev/null` (daemons' stdio is often redirected there), read-only for the
/// random devices.
const DEVICES_RW: &[&str] = &["/dev/null"];
const DEVICES_READ: &[&str] = &["/dev/urandom", "/dev/random"];

/// Restricts the process. `config_file` is the file `mta serve` was started with, if any:
/// its directory stays readable for a reload.
///
/// # Errors
/// When the kernel supports a mechanism but setting it up fails (a bad rule, a path that
/// cannot be opened): a sandbox that silently does less than it says is worse than none.
pub fn apply(config: &Config, config_file: Option<&Path>) -> anyhow::Result<Status> {
    if !config.process.sandbox {
        warn!("sandbox = false: no Landlock, no seccomp");
        return Ok(Status {
            landlock: "off".into(),
            seccomp: "off".into(),
        });
    }
    let threads = thread_count();
    if threads > 1 {
        warn!(
            threads,
            "sandbox applied with other threads running: they stay outside it"
        );
    }
    let (read, write) = paths(config, config_file);
    let landlock = linux::landlock(&read, &write)?;
    let seccomp = linux::seccomp()?;
    let status = Status { landlock, seccomp };
    info!(
        landlock = %status.landlock,
        seccomp = %status.seccomp,
        "sandbox in force"
    );
    Ok(status)
}

/// The paths to allow: read-only (directories and files) and read-write.
fn paths(config: &Config, config_file: Option<&Path>) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut files: Vec<&Path> = Vec::new();
    files.extend(config_file);
    files.extend(config.tls.cert.as_deref());
    files.extend(config.tls.key.as_deref());
    files.extend(config.dkim.iter().map(|k| k.key.as_path()));
    files.extend(config.outbound.mta_sts_ca_file.as_deref());
    files.extend(config.outbound.dane_trust_anchor.as_deref());
    files.extend(config.acme.as_ref().and_then(|a| a.ca_root.as_deref()));
    if let Some(relay) = &config.outbound.relay {
        files.extend(relay.ca_file.as_deref());
        if let Some(mta_core::config::PasswordSource::File(p)) = &relay.password {
            files.push(p);
        }
    }
    files.extend(
        config
            .outbound
            .tls
            .values()
            .filter_map(|t| t.ca_file.as_deref()),
    );
    let mut read = Vec::new();
    // Our own executable, for the symbols of a panic's backtrace.
    read.extend(std::env::current_exe().ok());
    for file in files {
        // The directory, so that a file replaced by rename (an editor, an ACME client) is
        // still readable; and the directory of the file a link points to (certbot's live/
        // links into archive/, where renewals add files).
        let absolute = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
        read.extend(absolute.parent().map(Path::to_path_buf));
        if let Ok(real) = absolute.canonicalize() {
            read.extend(real.parent().map(Path::to_path_buf));
        }
    }
    read.extend(SYSTEM_READ.iter().chain(DEVICES_READ).map(PathBuf::from));
    // Where OpenSSL-style variables point the verifier at other roots.
    for var in ["SSL_CERT_FILE", "SSL_CERT_DIR"] {
        read.extend(std::env::var_os(var).map(PathBuf::from));
    }
    let mut write = vec![config.data_dir.clone()];
    write.extend(DEVICES_RW.iter().map(PathBuf::from));
    read.sort();
    read.dedup();
    (read, write)
}

/// Threads of this process, from `/proc/self/task` (1 when it cannot be read).
fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(1, |d| d.count())
}

#[cfg(target_os = "linux")]
mod linux {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use anyhow::Context as _;
    use landlock::{
        ABI, Access, AccessFs, CompatLevel, Compatible, LandlockStatus, PathBeneath, PathFd,
        Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus,
    };
    use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};
    use tracing::{debug, warn};

    /// The Landlock ABI whose file-system rights we ask for (Linux 6.12); older kernels
    /// enforce what they know (best effort), newer ones add no file rights we would use.
    const LANDLOCK_ABI: ABI = ABI::V6;

    pub(super) fn landlock(read: &[PathBuf], write: &[PathBuf]) -> anyhow::Result<String> {
        let all = AccessFs::from_all(LANDLOCK_ABI);
        let read_rights = AccessFs::from_read(LANDLOCK_ABI) & !AccessFs::Execute;
        let created = Ruleset::default()
            .set_compatibility(CompatLevel::BestEffort)
            .handle_access(all)
            .context("landlock: cannot set up the ruleset")?
            .create();
        let mut ruleset = match created {
            Ok(r) => r,
            // The kernel has Landlock but this process may not use it (a container's or a
            // service manager's system-call filter): the same as a kernel without it.
            Err(e) => {
                warn!(error = %e, "landlock cannot be used here: file access is not restricted");
                return Ok("unsupported".to_string());
            }
        };
        for (paths, rights) in [(read, read_rights), (write, all & !AccessFs::Execute)] {
            for path in paths {
                let fd = match PathFd::new(path) {
                    Ok(fd) => fd,
                    // A system file this machine does not have (no /etc/gai.conf, say).
                    Err(e) => {
                        debug!(path = %path.display(), error = %e, "landlock: not allowing");
                        continue;
                    }
                };
                // A file gets only the rights that apply to files: asking for more would make
                // the ruleset "partially enforced".
                let rights = match path.is_dir() {
                    true => rights,
                    false => rights & AccessFs::from_file(LANDLOCK_ABI),
                };
                ruleset = ruleset
                    .add_rule(PathBeneath::new(fd, rights))
                    .with_context(|| format!("landlock: cannot allow {}", path.display()))?;
            }
        }
        let status = ruleset
            .restrict_self()
            .context("landlock: cannot restrict the process")?;
        Ok(match (status.ruleset, status.landlock) {
            (RulesetStatus::FullyEnforced, _) => "full".to_string(),
            (RulesetStatus::PartiallyEnforced, LandlockStatus::Available { effective_abi, .. }) => {
                format!("partial (kernel ABI {})", effective_abi as i32)
            }
            (RulesetStatus::PartiallyEnforced, _) => "partial".to_string(),
            (RulesetStatus::NotEnforced, why) => {
                warn!(
                    status = ?why,
                    "landlock is not available on this kernel: file access is not restricted"
                );
                "unsupported".to_string()
            }
        })
    }

    /// Installs the allow-list on this thread (inherited by the threads it starts).
    pub(super) fn seccomp() -> anyhow::Result<String> {
        let arch = match TargetArch::try_from(std::env::consts::ARCH) {
            Ok(arch) => arch,
            Err(_) => {
                warn!(
                    arch = std::env::consts::ARCH,
                    "seccomp: no filter for this architecture: system calls are not restricted"
                );
                return Ok("unsupported".to_string());
            }
        };
        let rules = super::syscalls::rules().context("seccomp: cannot build the rules")?;
        let filter = SeccompFilter::new(
            rules,
            SeccompAction::Errno(libc::EPERM as u32),
            SeccompAction::Allow,
            arch,
        )
        .context("seccomp: cannot build the filter")?;
        let program: BpfProgram = filter
            .try_into()
            .context("seccomp: cannot compile the filter")?;
        let enosys: BTreeMap<i64, Vec<seccompiler::SeccompRule>> = super::syscalls::NOT_IMPLEMENTED
            .iter()
            .map(|&n| (n, Vec::new()))
            .collect();
        let enosys: BpfProgram = SeccompFilter::new(
            enosys,
            SeccompAction::Allow,
            SeccompAction::Errno(libc::ENOSYS as u32),
            arch,
        )
        .and_then(TryInto::try_into)
        .context("seccomp: cannot build the ENOSYS filter")?;
        // The ENOSYS filter first: once the allow-list is in, `seccomp` itself is refused.
        match seccompiler::apply_filter(&enosys) {
            Ok(()) => {
                seccompiler::apply_filter(&program)
                    .context("seccomp: cannot install the filter")?;
                Ok("on".to_string())
            }
            // EINVAL: a kernel without seccomp filters; EPERM/EACCES: a filter already in
            // place that refuses new ones.
            Err(seccompiler::Error::Seccomp(e))
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINVAL | libc::EPERM | libc::EACCES)
                ) =>
            {
                warn!(error = %e, "seccomp is not available on this kernel: system calls are not restricted");
                Ok("unsupported".to_string())
            }
            Err(e) => Err(e).context("seccomp: cannot install the ENOSYS filter"),
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod linux {
    use std::path::PathBuf;

    use tracing::warn;

    pub(super) fn landlock(_: &[PathBuf], _: &[PathBuf]) -> anyhow::Result<String> {
        warn!("landlock exists only on Linux: file access is not restricted");
        Ok("unsupported".to_string())
    }

    pub(super) fn seccomp() -> anyhow::Result<String> {
        warn!("seccomp exists only on Linux: system calls are not restricted");
        Ok("unsupported".to_string())
    }
}

#[cfg(target_os = "linux")]
mod syscalls;

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::io::ErrorKind;

    /// The filter on one thread (seccomp binds the thread that installs it and the threads
    /// it starts, not the rest of the test process): what a server needs still works, what
    /// an attacker would want fails with EPERM.
    #[test]
    fn seccomp_allows_a_server_and_refuses_exec_and_namespaces() {
        let outcome = std::thread::spawn(|| {
            let status = super::linux::seccomp().expect("the filter installs");
            if status != "on" {
                return Err(format!("could not check: seccomp is {status} here"));
            }
            // Threads (clone3 → ENOSYS → clone), sockets, files: all fine.
            let inner = std::thread::spawn(|| std::net::UdpSocket::bind("127.0.0.1:0").is_ok());
            assert!(inner.join().expect("a thread starts"), "UDP socket");
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("TCP listener");
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
            std::os::unix::net::UnixStream::pair().expect("a Unix socket pair");
            let dir = tempfile::tempdir().expect("tempdir");
            std::fs::write(dir.path().join("f"), b"x").expect("write");
            std::fs::File::open(dir.path().join("f"))
                .and_then(|f| f.sync_all())
                .expect("fsync");
            // Running a program, and new namespaces: refused.
            let exec = std::process::Command::new("/bin/true").status();
            assert!(
                matches!(&exec, Err(e) if e.kind() == ErrorKind::PermissionDenied),
                "exec: {exec:?}"
            );
            let unshare = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER);
            assert_eq!(unshare, Err(nix::errno::Errno::EPERM));
            Ok(())
        })
        .join()
        .expect("the sandboxed thread does not panic");
        if let Err(why) = outcome {
            eprintln!("seccomp_allows_a_server_and_refuses_exec_and_namespaces: {why}");
        }
    }
}
