//! The seccomp allow-list: what a tokio server with sled, rustls and hickory calls, found with
//! `strace -f -c` over the test suite's servers and widened to the neighbours of each call
//! (the `*at` forms, the vectored forms), rather too much than a crash in production.
//!
//! Left out on purpose: `execve`/`execveat` (nothing is run), `ptrace`, `process_vm_*`,
//! `mount`/`umount2`/`pivot_root`/`chroot`, `setns`/`unshare`, `set*uid`/`set*gid`/`setgroups`/
//! `capset` (privileges are dropped before the filter), `chown` and friends, `mknod`, `bpf`,
//! `perf_event_open`, `keyctl`/`add_key`/`request_key`, `userfaultfd`, `io_uring_*`, module,
//! `kexec`, `reboot`, `swap`, clock and host-name setters.

use std::collections::BTreeMap;

use seccompiler::{SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition, SeccompRule};

/// The allow-list: every call in [`ALLOWED`] without condition, and four with conditions on
/// their arguments: `ioctl` but not `TIOCSTI`/`TIOCLINUX` (typing into a terminal), `clone`
/// without namespace flags (no new user or network namespace to attack the kernel from),
/// `socket` only for IPv4, IPv6 and Unix sockets, and `setpriority` only to a nice value
/// from the password checks' to the highest.
///
/// # Errors
/// A condition seccompiler refuses (a bug here, not an input problem).
pub(super) fn rules() -> Result<BTreeMap<i64, Vec<SeccompRule>>, seccompiler::Error> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        ALLOWED.iter().map(|&n| (n, Vec::new())).collect();
    let ne = |arg: u8, value: u64| SeccompCondition::new(arg, Len::Dword, Op::Ne, value);
    // c_ulong: u64 here, u32 on 32-bit targets.
    #[allow(clippy::useless_conversion)]
    let (tiocsti, tioclinux) = (u64::from(libc::TIOCSTI), u64::from(libc::TIOCLINUX));
    let ioctl = SeccompRule::new(vec![ne(1, tiocsti)?, ne(1, tioclinux)?])?;
    rules.insert(libc::SYS_ioctl, vec![ioctl]);
    let namespaces = (libc::CLONE_NEWNS
        | libc::CLONE_NEWCGROUP
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUSER
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWNET) as u64;
    let clone = SeccompCondition::new(0, Len::Qword, Op::MaskedEq(namespaces), 0)?;
    rules.insert(libc::SYS_clone, vec![SeccompRule::new(vec![clone])?]);
    let mut socket = Vec::new();
    for family in [libc::AF_INET, libc::AF_INET6, libc::AF_UNIX] {
        let eq = SeccompCondition::new(0, Len::Dword, Op::Eq, family as u64)?;
        socket.push(SeccompRule::new(vec![eq])?);
    }
    rules.insert(libc::SYS_socket, socket);
    // `setpriority` only as the password-check threads call it: one process (a thread, on
    // Linux) given a nice value from theirs to the highest, which lowers, never raises, a
    // server's priority (compared unsigned: a negative value is a large one, refused).
    let lowest = mta_smtp::server::logins::CHECK_NICE.unsigned_abs();
    let highest = mta_smtp::server::logins::MAX_NICE.unsigned_abs();
    let priority = SeccompRule::new(vec![
        SeccompCondition::new(0, Len::Dword, Op::Eq, libc::PRIO_PROCESS as u64)?,
        SeccompCondition::new(2, Len::Dword, Op::Ge, u64::from(lowest))?,
        SeccompCondition::new(2, Len::Dword, Op::Le, u64::from(highest))?,
    ])?;
    rules.insert(libc::SYS_setpriority, vec![priority]);
    Ok(rules)
}

/// Calls a second filter answers with `ENOSYS`: `clone3`, whose flags sit in memory where a
/// filter cannot read them, so glibc falls back to `clone`, whose flags are checked above.
pub(super) const NOT_IMPLEMENTED: &[i64] = &[libc::SYS_clone3];

/// System call numbers the filter allows without condition; everything else fails with
/// `EPERM`. `ioctl`, `clone`, `socket` and `setpriority` are allowed by [`rules`] with
/// conditions.
const ALLOWED: &[i64] = &[
    // Files and directories.
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_preadv2,
    libc::SYS_pwritev2,
    libc::SYS_openat,
    libc::SYS_openat2,
    libc::SYS_close,
    libc::SYS_close_range,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_statfs,
    libc::SYS_fstatfs,
    libc::SYS_lseek,
    libc::SYS_getdents64,
    libc::SYS_mkdirat,
    libc::SYS_unlinkat,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_linkat,
    libc::SYS_symlinkat,
    libc::SYS_readlinkat,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    libc::SYS_utimensat,
    libc::SYS_ftruncate,
    libc::SYS_fallocate,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_sync_file_range,
    libc::SYS_flock,
    libc::SYS_fcntl,
    libc::SYS_getcwd,
    libc::SYS_umask,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_pipe2,
    libc::SYS_copy_file_range,
    libc::SYS_sendfile,
    libc::SYS_splice,
    libc::SYS_inotify_init1,
    libc::SYS_inotify_add_watch,
    libc::SYS_inotify_rm_watch,
    // Memory.
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_msync,
    libc::SYS_mincore,
    libc::SYS_membarrier,
    // Threads, waiting, signals.
    libc::SYS_clone3,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_futex,
    libc::SYS_set_robust_list,
    libc::SYS_get_robust_list,
    libc::SYS_set_tid_address,
    libc::SYS_rseq,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_getppid,
    libc::SYS_tgkill,
    libc::SYS_kill,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigtimedwait,
    libc::SYS_sigaltstack,
    libc::SYS_restart_syscall,
    libc::SYS_prctl,
    libc::SYS_eventfd2,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_ppoll,
    libc::SYS_pselect6,
    libc::SYS_timerfd_create,
    libc::SYS_timerfd_settime,
    libc::SYS_timerfd_gettime,
    libc::SYS_wait4,
    libc::SYS_waitid,
    // Time and randomness.
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_gettimeofday,
    libc::SYS_getrandom,
    // Sockets.
    libc::SYS_socketpair,
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_connect,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_setsockopt,
    libc::SYS_getsockopt,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_sendmmsg,
    libc::SYS_recvmmsg,
    libc::SYS_shutdown,
    // Identity and limits (read only).
    libc::SYS_uname,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_getresuid,
    libc::SYS_getresgid,
    libc::SYS_getgroups,
    libc::SYS_getrlimit,
    libc::SYS_prlimit64,
    libc::SYS_getrusage,
    libc::SYS_sysinfo,
    libc::SYS_getpriority,
    // The legacy forms of the above, which x86-64 programs still call.
    #[cfg(target_arch = "x86_64")]
    libc::SYS_open,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_stat,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_lstat,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_access,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_readlink,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_mkdir,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_rmdir,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_unlink,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_rename,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_link,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_symlink,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_chmod,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_getdents,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_dup2,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_pipe,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_poll,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_select,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_epoll_wait,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_epoll_create,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_eventfd,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_inotify_init,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_arch_prctl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_time,
];
