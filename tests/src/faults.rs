//! Storage faults for the durability tests: a small tmpfs for the data dir ([`Tmpfs`], which
//! is unmounted when dropped, also when the test fails), ballast that fills it to the last
//! byte or inode, and a sender that keeps sending until the server refuses ([`send_until_refused`]).
//!
//! Mounting needs root (or CAP_SYS_ADMIN): where it is not permitted, [`Tmpfs::mount`]
//! says why, and the test prints that and skips.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::SmtpClient;

/// A tmpfs mounted by the test; unmounted (and its mount point removed) on drop.
pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs with `options` (`size=32m`, `nr_inodes=200`…) on `path`, which is
    /// created. `Err` with the reason when this machine does not let us mount.
    pub fn mount(path: &Path, options: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|e| format!("mkdir {}: {e}", path.display()))?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("{options},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            let _ = std::fs::remove_dir(path);
            return Err(format!(
                "mount -t tmpfs -o {options} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs {
            path: path.to_path_buf(),
        })
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `name` in 64 KiB steps until the file system is full; returns its size.
    pub fn fill_bytes(&self, name: &str) -> u64 {
        let path = self.path.join(name);
        let mut f = std::fs::File::create(&path)
            .unwrap_or_else(|e| panic!("create ballast {}: {e}", path.display()));
        let chunk = vec![0x5a_u8; 64 * 1024];
        let mut written = 0u64;
        // Bounded by the file system's size; each write either grows the file or fails.
        loop {
            match f.write(&chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => written += n as u64,
            }
        }
        written
    }

    /// Creates empty files in `dir` until no inode is left; returns how many.
    pub fn fill_inodes(&self, dir: &str) -> usize {
        let dir = self.path.join(dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir ballast: {e}"));
        let mut n = 0;
        // Bounded by the inode limit the test mounted with.
        while n < 1_000_000 && std::fs::File::create(dir.join(n.to_string())).is_ok() {
            n += 1;
        }
        n
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // A server killed a moment ago may still hold files for a moment: try a few times
        // (bounded), then fall back to a lazy unmount, and say so if even that fails.
        let umount = |lazy: bool| {
            let mut cmd = Command::new("umount");
            if lazy {
                cmd.arg("-l");
            }
            cmd.arg(&self.path).status().is_ok_and(|s| s.success())
        };
        let mut done = false;
        for _ in 0..20 {
            if umount(false) {
                done = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        if !done && !umount(true) {
            eprintln!("could not unmount the test tmpfs {}", self.path.display());
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// How one message went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// `250` after the dot: the server owns the message.
    Accepted,
    /// Refused: the command it was refused at (`MAIL`, `RCPT`, `DATA`, `.`) and the reply.
    Refused(&'static str, crate::Reply),
    /// The connection broke (the server went away or closed it).
    Broken(String),
}

/// A message of about `size` octets with a unique `Message-ID: <tag@test>`, from and to
/// the given addresses.
pub fn message(tag: &str, from: &str, to: &str, size: usize) -> Vec<u8> {
    let mut m =
        format!("From: {from}\r\nTo: {to}\r\nSubject: {tag}\r\nMessage-ID: <{tag}@test>\r\n\r\n")
            .into_bytes();
    let line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ\r\n";
    while m.len() < size {
        m.extend_from_slice(line);
    }
    m
}

/// One transaction on an open session (after EHLO), without asserting anything.
pub fn try_send(c: &mut SmtpClient, from: &str, to: &str, message: &[u8]) -> Sent {
    let steps: [(&'static str, String, u16); 3] = [
        ("MAIL", format!("MAIL FROM:<{from}>"), 250),
        ("RCPT", format!("RCPT TO:<{to}>"), 250),
        ("DATA", "DATA".to_string(), 354),
    ];
    for (stage, line, want) in steps {
        if let Err(e) = c.send_line(&line) {
            return Sent::Broken(format!("{stage}: {e}"));
        }
        match c.read_reply() {
            Ok(r) if r.code == want => {}
            Ok(r) => {
                if stage != "MAIL" {
                    let _ = c.send_line("RSET").and_then(|()| c.read_reply().map(drop));
                }
                return Sent::Refused(stage, r);
            }
            Err(e) => return Sent::Broken(format!("{stage}: {e}")),
        }
    }
    let mut data = Vec::with_capacity(message.len() + 5);
    for line in message.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b".") {
            data.push(b'.');
        }
        data.extend_from_slice(line);
    }
    data.extend_from_slice(b".\r\n");
    if let Err(e) = c.send_raw(&data) {
        return Sent::Broken(format!("message: {e}"));
    }
    match c.read_reply() {
        Ok(r) if r.code == 250 => Sent::Accepted,
        Ok(r) => Sent::Refused(".", r),
        Err(e) => Sent::Broken(format!(".: {e}")),
    }
}

/// What [`send_until_refused`] saw.
#[derive(Debug, Default)]
pub struct Tally {
    /// Tags of the messages that got `250`.
    pub accepted: Vec<String>,
    /// Every refusal: the message's tag, the stage and the reply.
    pub refused: Vec<(String, &'static str, crate::Reply)>,
    /// Broken connections.
    pub broken: Vec<String>,
}

/// `senders` concurrent sessions to `addr`, each sending messages of the sizes in `sizes`
/// (in turn) from `from` to `to`, tagged `PREFIX-s<sender>-<n>`, until each has been
/// refused `refusals` times or has sent `max` messages.
pub fn send_until_refused(
    addr: SocketAddr,
    prefix: &str,
    senders: usize,
    sizes: &[usize],
    (from, to): (&str, &str),
    refusals: usize,
    max: usize,
) -> Tally {
    let threads: Vec<_> = (0..senders)
        .map(|s| {
            let (prefix, sizes) = (prefix.to_string(), sizes.to_vec());
            let (from, to) = (from.to_string(), to.to_string());
            std::thread::spawn(move || {
                let mut tally = Tally::default();
                let mut c = SmtpClient::connect(addr);
                c.reply("the greeting");
                c.expect("EHLO sender.test", 250);
                for n in 0..max {
                    let tag = format!("{prefix}-s{s}-{n}");
                    let m = message(&tag, &from, &to, sizes[n % sizes.len()]);
                    match try_send(&mut c, &from, &to, &m) {
                        Sent::Accepted => tally.accepted.push(tag),
                        Sent::Refused(stage, r) => tally.refused.push((tag, stage, r)),
                        Sent::Broken(why) => {
                            tally.broken.push(format!("{tag}: {why}"));
                            break;
                        }
                    }
                    if tally.refused.len() >= refusals {
                        break;
                    }
                }
                let _ = c.send_line("QUIT");
                tally
            })
        })
        .collect();
    let mut all = Tally::default();
    for t in threads {
        let t = t.join().expect("a sender thread panicked");
        all.accepted.extend(t.accepted);
        all.refused.extend(t.refused);
        all.broken.extend(t.broken);
    }
    all
}

/// The `Message-ID` tags of the messages in `files` (Maildir files), one per file.
pub fn delivered_tags(files: &[PathBuf]) -> Vec<String> {
    files
        .iter()
        .filter_map(|f| {
            let bytes = crate::crlf(&std::fs::read(f).ok()?);
            let text = String::from_utf8_lossy(&bytes);
            let at = text.find("\r\nMessage-ID: <")? + "\r\nMessage-ID: <".len();
            let end = text[at..].find("@test>")?;
            Some(text[at..at + end].to_string())
        })
        .collect()
}
