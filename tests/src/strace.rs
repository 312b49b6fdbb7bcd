//! `mta serve` under `strace -f`, and a reader of the trace that checks the order of
//! syscalls behind every `250` to DATA: the message's last byte read on its connection, then
//! a completed `fsync`/`fdatasync` of a file in the queue store, then the `250` written on
//! that connection (RFC 5321 §6.1: the `250` is a promise the message is safe).
//!
//! The order is the order of lines in the trace: with `-f` strace prints a syscall when it
//! returns, or splits it into `<unfinished ...>` (at entry) and `<... resumed>` (at return)
//! when another thread's syscall comes in between, so a line's position is when the call
//! returned, and an `unfinished` line's position is when it started.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::{base_config, mta_bin};

/// The syscalls traced: what reads from and writes to sockets, and what syncs files.
const TRACED: &str = "trace=read,readv,recvfrom,recvmsg,write,writev,sendto,sendmsg,\
                      fsync,fdatasync,sync_file_range,syncfs,rename,renameat,renameat2,\
                      mkdir,mkdirat";

/// Whether `strace` can trace a child here (it is installed and ptrace is allowed); the
/// error says why not.
pub fn strace_works() -> Result<(), String> {
    let out = Command::new("strace")
        .args(["-f", "-o", "/dev/null", "true"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run strace: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "strace cannot trace here ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `mta serve` (plain config from [`base_config`] in `dir`) running under strace.
pub struct TracedMta {
    strace: Option<Child>,
    trace: PathBuf,
    smtp: SocketAddr,
}

impl TracedMta {
    /// Starts it in `dir` (which must exist) and waits for its ready line (60 s: tracing
    /// is slow).
    pub fn start(dir: &Path) -> TracedMta {
        let config = dir.join("mta.toml");
        std::fs::write(&config, base_config(dir, "")).expect("cannot write the config");
        let trace = dir.join("strace.txt");
        let mut strace = Command::new("strace")
            .args(["-f", "-ttt", "-yy", "-s", "128", "-e", TRACED, "-o"])
            .arg(&trace)
            .arg(mta_bin())
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start strace: {e}"));
        let stdout = strace.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let smtp = loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(wait).unwrap_or_else(|e| {
                let _ = strace.kill();
                panic!("mta serve under strace printed no ready line: {e}")
            });
            if let Some(rest) = line.strip_prefix("mta ready ") {
                let addr = rest
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("smtp="))
                    .and_then(|a| a.parse().ok());
                break addr.unwrap_or_else(|| panic!("no smtp listener in {line:?}"));
            }
        };
        TracedMta {
            strace: Some(strace),
            trace,
            smtp,
        }
    }

    /// The SMTP listener.
    pub fn smtp_addr(&self) -> SocketAddr {
        self.smtp
    }

    /// Stops `mta serve` with SIGTERM, waits for strace to finish, returns the trace.
    pub fn stop(mut self) -> String {
        let mut strace = self.strace.take().expect("running");
        let children = format!("/proc/{0}/task/{0}/children", strace.id());
        let mta_pid = std::fs::read_to_string(&children).unwrap_or_default();
        let mta_pid = mta_pid.split_whitespace().next().unwrap_or("").to_string();
        if !mta_pid.is_empty() {
            let _ = Command::new("kill").args(["-TERM", &mta_pid]).status();
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match strace.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = strace.kill();
                    let _ = strace.wait();
                    panic!("mta serve under strace did not stop within 60 s of SIGTERM");
                }
            }
        }
        std::fs::read_to_string(&self.trace)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", self.trace.display()))
    }
}

impl Drop for TracedMta {
    fn drop(&mut self) {
        if let Some(mut s) = self.strace.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
}

/// One syscall, put together from its line(s).
#[derive(Debug, Clone)]
struct Call {
    name: String,
    /// What `-yy` shows for the first argument: a path or `TCP:[local->peer]`.
    fd: String,
    /// The whole text, arguments and return value.
    text: String,
    ret: Option<i64>,
    /// The line where it started and the line where it returned.
    entry: usize,
    exit: usize,
}

/// `NAME(FD<DESC>, …` → (NAME, DESC).
fn name_and_fd(call: &str) -> Option<(String, String)> {
    let (name, args) = call.split_once('(')?;
    let open = args.find('<')?;
    let first = &args[..open];
    if !first.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let desc = &args[open + 1..];
    // `TCP:[127.0.0.1:25->127.0.0.1:40000]` holds a `>` of its own.
    let end = if desc.starts_with("TCP:[") {
        desc.find("]>")? + 1
    } else {
        desc.find('>')?
    };
    Some((name.to_string(), desc[..end].to_string()))
}

fn ret_of(text: &str) -> Option<i64> {
    let (_, r) = text.rsplit_once(") = ")?;
    r.split_whitespace().next()?.parse().ok()
}

/// The syscalls in `trace` (`strace -f -ttt -yy` output), in the order they returned.
fn calls(trace: &str) -> Vec<Call> {
    let mut open: HashMap<String, (String, usize)> = HashMap::new();
    let mut out = Vec::new();
    for (i, line) in trace.lines().enumerate() {
        // `PID TIME CALL`; strace pads the pid to 5 columns.
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let Some((_time, rest)) = rest.trim_start().split_once(' ') else {
            continue;
        };
        if let Some(start) = rest.strip_suffix(" <unfinished ...>") {
            open.insert(pid.to_string(), (start.to_string(), i));
            continue;
        }
        let (text, entry) = if let Some(resumed) = rest.strip_prefix("<... ") {
            let Some((start, entry)) = open.remove(pid) else {
                continue;
            };
            let tail = resumed.split_once(" resumed>").map_or("", |(_, t)| t);
            (format!("{start}{tail}"), entry)
        } else {
            (rest.to_string(), i)
        };
        let Some((name, fd)) = name_and_fd(&text) else {
            continue;
        };
        out.push(Call {
            name,
            fd,
            ret: ret_of(&text),
            text,
            entry,
            exit: i,
        });
    }
    out
}

/// What [`check_trace`] found.
#[derive(Debug, Default)]
pub struct SyncOrder {
    /// `250 … queued as ID` replies written, by queue id.
    pub acks: usize,
    /// Acks with a store sync between the last read and the write, by queue id.
    pub proven: Vec<String>,
    /// Acks without one: (queue id, what the trace shows).
    pub unproven: Vec<(String, String)>,
    /// Completed fsync/fdatasync calls on files of the store, per file name.
    pub store_syncs: HashMap<String, usize>,
    /// Completed fsync/fdatasync calls on anything else (Maildir files and dirs).
    pub other_syncs: usize,
}

impl SyncOrder {
    /// All completed store syncs.
    pub fn total_store_syncs(&self) -> usize {
        self.store_syncs.values().sum()
    }
}

/// Checks every `250 … queued as` written to a TCP connection in `trace`: a completed
/// `fsync`/`fdatasync` of a file under `store` must lie between the last successful read on
/// that connection and the write.
pub fn check_trace(trace: &str, store: &str) -> SyncOrder {
    let mut order = SyncOrder::default();
    // Per connection, the lines where successful reads returned, in order.
    let mut reads: HashMap<String, Vec<usize>> = HashMap::new();
    let mut syncs: Vec<usize> = Vec::new();
    for c in calls(trace) {
        let is_sync = matches!(c.name.as_str(), "fsync" | "fdatasync");
        if is_sync && c.ret == Some(0) {
            if c.fd.contains(store) {
                syncs.push(c.exit);
                let file = c.fd.rsplit('/').next().unwrap_or("").to_string();
                *order.store_syncs.entry(file).or_default() += 1;
            } else {
                order.other_syncs += 1;
            }
            continue;
        }
        // `-yy` names TCP sockets by their addresses; where strace cannot ask the kernel
        // for them it shows the socket's inode, unique per connection just the same.
        if !c.fd.starts_with("TCP:") && !c.fd.starts_with("socket:[") {
            continue;
        }
        let read = matches!(c.name.as_str(), "read" | "readv" | "recvfrom" | "recvmsg");
        if read && c.ret.is_some_and(|n| n > 0) {
            reads.entry(c.fd.clone()).or_default().push(c.exit);
            continue;
        }
        let Some((_, after)) = c.text.split_once("250 2.0.0 OK queued as ") else {
            continue;
        };
        let id: String = after.chars().take_while(char::is_ascii_hexdigit).collect();
        order.acks += 1;
        // The client sends nothing before it has our reply, but the kernel may pass the
        // reply on before strace shows the write returning: only reads that returned before
        // the write started count.
        let before = reads.get(&c.fd).map_or(&[][..], |r| {
            let n = r.partition_point(|&at| at < c.entry);
            &r[..n]
        });
        let Some(&read_at) = before.last() else {
            order
                .unproven
                .push((id, format!("no read on {} before line {}", c.fd, c.entry)));
            continue;
        };
        // The first sync that returned after the read: it must return before the write.
        let first = syncs.partition_point(|&s| s <= read_at);
        match syncs.get(first) {
            Some(&s) if s < c.entry => order.proven.push(id),
            _ => order.unproven.push((
                id,
                format!(
                    "last read at line {}, 250 written at line {}, no store sync between",
                    read_at + 1,
                    c.entry + 1
                ),
            )),
        }
    }
    order
}

/// What [`check_maildir`] found.
#[derive(Debug, Default)]
pub struct MaildirOrder {
    /// Files renamed into `new/`.
    pub renames: usize,
    /// Renames followed by a successful `fsync` of `new/` that started after the rename
    /// returned.
    pub covered: usize,
    /// Renames without one: the file name and where.
    pub uncovered: Vec<String>,
    /// Successful `fsync`s of `new/` itself.
    pub dir_syncs: usize,
    /// `mkdir`/`mkdirat` calls anywhere under the Maildir tree, and how many found the
    /// directory there already (`EEXIST`).
    pub mkdirs: usize,
    /// Of those, answered `EEXIST`.
    pub mkdir_exists: usize,
}

/// Checks the Maildir writes in `trace` (`strace -f -ttt -yy`): every rename into the
/// directory `new` must be followed by a successful `fsync` of `new` that *started* after
/// the rename returned (a sync already running may not cover it). Counts the `mkdir`s made
/// under `tree`.
pub fn check_maildir(trace: &str, new: &str, tree: &str) -> MaildirOrder {
    let mut order = MaildirOrder::default();
    let all = calls(trace);
    // Lines where successful syncs of `new` started.
    let mut sync_starts: Vec<usize> = Vec::new();
    for c in &all {
        if matches!(c.name.as_str(), "fsync" | "fdatasync") && c.ret == Some(0) && c.fd == new {
            sync_starts.push(c.entry);
        }
    }
    order.dir_syncs = sync_starts.len();
    sync_starts.sort_unstable();
    for c in &all {
        let renamed = matches!(c.name.as_str(), "renameat" | "renameat2" | "rename");
        if renamed && c.ret == Some(0) && c.text.contains(&format!("<{new}>")) {
            order.renames += 1;
            if sync_starts.partition_point(|&s| s <= c.exit) < sync_starts.len() {
                order.covered += 1;
            } else {
                order
                    .uncovered
                    .push(format!("line {}: {}", c.exit + 1, c.text));
            }
        }
        if matches!(c.name.as_str(), "mkdir" | "mkdirat") && c.text.contains(tree) {
            order.mkdirs += 1;
            if c.text.contains("EEXIST") {
                order.mkdir_exists += 1;
            }
        }
    }
    order
}
