//! [`Load`]: many concurrent SMTP submitters, each sending messages with unique
//! `Message-ID`s and sizes chosen at random, recording what every transaction got: `250`
//! with a queue id, another reply, or nothing (the server died after the final dot). The
//! message text follows from its `Message-ID` ([`message_bytes`]), so a delivered copy can
//! be checked byte for byte ([`scan_maildir`]) without keeping what was sent.
//!
//! Unlike [`crate::SmtpClient`] a submitter never panics on a broken connection: a server
//! killed under load is what these tests are for.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::parse_delivered;

/// How long a submitter waits for a connection, a reply or a write.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A small xorshift generator: tests print their seed so a failing run can be repeated.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// From `seed` (0 is replaced, xorshift cannot leave it).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// Seeded from `$MTA_TEST_SEED` when set, else from the clock; returns the seed too.
    pub fn from_env() -> (Rng, u64) {
        let seed = std::env::var("MTA_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        (Rng::new(seed), seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

/// A stable hash of `s` (FNV-1a), to seed a message's text.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The `Message-ID` (without angle brackets) of message `n` of session `session` of run
/// `tag`, `size` octets long.
pub fn message_id(tag: &str, session: usize, n: usize, size: usize) -> String {
    format!("{tag}.{session}.{n}.{size}@load.test")
}

/// The size encoded in a [`message_id`].
fn size_of(mid: &str) -> Option<usize> {
    mid.split('@').next()?.rsplit('.').next()?.parse().ok()
}

/// The message with `Message-ID: <mid>` addressed to `to`, about as long as the size in
/// `mid` (at least the header): CRLF lines of at most 78 octets, none starting with a dot.
pub fn message_bytes(mid: &str, to: &str) -> Vec<u8> {
    let size = size_of(mid).unwrap_or(0);
    let mut out = format!(
        "From: <load@load.test>\r\nTo: <{to}>\r\nSubject: load {mid}\r\n\
         Message-ID: <{mid}>\r\nDate: Sun, 29 Nov 2026 03:00:00 +0000\r\n\r\n"
    )
    .into_bytes();
    let mut rng = Rng::new(fnv(mid));
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789     ";
    while out.len() + 2 < size {
        let len = (size - out.len() - 2).min(76);
        out.push(b'a' + (rng.next_u64() % 26) as u8);
        for _ in 1..len {
            out.push(CHARS[(rng.next_u64() % CHARS.len() as u64) as usize]);
        }
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The `Message-ID` in the header section of `message` (without angle brackets).
pub fn find_message_id(message: &[u8]) -> Option<String> {
    let head_end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(message.len());
    String::from_utf8_lossy(&message[..head_end])
        .split("\r\n")
        .find_map(|l| {
            let v = l.strip_prefix("Message-ID: <")?;
            Some(v.trim_end_matches('>').to_string())
        })
}

/// How one transaction ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `250` to the final dot, with the queue id.
    Accepted(String),
    /// Another reply at some step (the reply line).
    Refused(String),
    /// The connection broke after the final dot was sent, before a reply: the server may or
    /// may not have the message.
    NoReply,
}

/// What one submitter saw.
#[derive(Debug, Clone, Default)]
pub struct SessionReport {
    /// Each transaction started (MAIL sent), with its Message-ID and how it ended. A
    /// transaction that broke before the final dot is not listed (the server cannot
    /// have acknowledged it).
    pub transactions: Vec<(String, Outcome)>,
    /// The last reply line the server sent, if any.
    pub last_reply: Option<String>,
    /// How the session ended: `quit`, `refused connection`, or the error.
    pub end: String,
    /// Whether the connection ended by EOF or an error right after a `421` line.
    pub closed_after_421: bool,
}

/// What a [`Load`] sends.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// The server's SMTP listener (no AUTH: `rcpt` must be local).
    pub addr: SocketAddr,
    /// Concurrent sessions.
    pub sessions: usize,
    /// Messages per session; `None`: until [`Load::stop`] or the connection breaks.
    pub messages: Option<usize>,
    /// Message sizes, drawn uniformly from this range (octets).
    pub sizes: (usize, usize),
    /// The recipient.
    pub rcpt: String,
    /// Prefix of every Message-ID of this run (unique per run).
    pub tag: String,
    /// Seeds each session's sizes.
    pub seed: u64,
}

/// Running submitters.
pub struct Load {
    stop: Arc<AtomicBool>,
    /// Sessions that sent a final dot and wait for its reply.
    awaiting: Arc<AtomicUsize>,
    /// Sessions connected right now.
    connected: Arc<AtomicUsize>,
    /// Messages answered `250` so far.
    accepted: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<SessionReport>>,
}

impl Load {
    /// Starts `spec.sessions` submitter threads.
    pub fn start(spec: &LoadSpec) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let awaiting = Arc::new(AtomicUsize::new(0));
        let connected = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let threads = (0..spec.sessions)
            .map(|i| {
                let spec = spec.clone();
                let (stop, awaiting, connected, accepted) = (
                    stop.clone(),
                    awaiting.clone(),
                    connected.clone(),
                    accepted.clone(),
                );
                std::thread::spawn(move || {
                    let mut report = SessionReport::default();
                    let counters = Counters {
                        stop: &stop,
                        awaiting: &awaiting,
                        connected: &connected,
                        accepted: &accepted,
                    };
                    report.end = match submit(&spec, i, &counters, &mut report) {
                        Ok(()) => "quit".into(),
                        Err(e) => e,
                    };
                    report
                })
            })
            .collect();
        Load {
            stop,
            awaiting,
            connected,
            accepted,
            threads,
        }
    }

    /// Asks every session to QUIT after its current transaction.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Sessions that sent a final dot and are waiting for its reply right now.
    pub fn awaiting_reply(&self) -> usize {
        self.awaiting.load(Ordering::SeqCst)
    }

    /// Sessions connected right now.
    pub fn connected(&self) -> usize {
        self.connected.load(Ordering::SeqCst)
    }

    /// Messages answered `250` so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Waits for every session to end (each I/O is bounded by 30 s).
    pub fn join(self) -> Vec<SessionReport> {
        self.threads
            .into_iter()
            .map(|t| t.join().expect("a submitter thread panicked"))
            .collect()
    }
}

struct Counters<'a> {
    stop: &'a AtomicBool,
    awaiting: &'a AtomicUsize,
    connected: &'a AtomicUsize,
    accepted: &'a AtomicUsize,
}

/// Decrements a counter when dropped.
struct Held<'a>(&'a AtomicUsize);

impl<'a> Held<'a> {
    fn new(c: &'a AtomicUsize) -> Held<'a> {
        c.fetch_add(1, Ordering::SeqCst);
        Held(c)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Conn {
    out: TcpStream,
    input: BufReader<TcpStream>,
}

impl Conn {
    /// One reply (all its lines); the last line is kept in `report`.
    fn reply(&mut self, report: &mut SessionReport) -> Result<String, String> {
        loop {
            let mut line = String::new();
            match self.input.read_line(&mut line) {
                Ok(0) => {
                    report.closed_after_421 = report
                        .last_reply
                        .as_deref()
                        .is_some_and(|r| r.starts_with("421"));
                    return Err("connection closed".into());
                }
                Ok(_) => {}
                Err(e) => {
                    report.closed_after_421 = report
                        .last_reply
                        .as_deref()
                        .is_some_and(|r| r.starts_with("421"));
                    return Err(format!("read: {e}"));
                }
            }
            let line = line.trim_end().to_string();
            if line.as_bytes().get(3) != Some(&b'-') {
                report.last_reply = Some(line.clone());
                return Ok(line);
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.out.write_all(bytes).map_err(|e| format!("write: {e}"))
    }

    /// Sends `line` and reads the reply; `Err` unless it starts with `code`.
    fn command(
        &mut self,
        line: &str,
        code: &str,
        report: &mut SessionReport,
    ) -> Result<String, String> {
        self.send(format!("{line}\r\n").as_bytes())?;
        let r = self.reply(report)?;
        if r.starts_with(code) {
            Ok(r)
        } else {
            Err(format!("{line} -> {r}"))
        }
    }
}

fn submit(
    spec: &LoadSpec,
    session: usize,
    counters: &Counters<'_>,
    report: &mut SessionReport,
) -> Result<(), String> {
    let mut rng = Rng::new(spec.seed ^ (session as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let tcp = TcpStream::connect_timeout(&spec.addr, IO_TIMEOUT)
        .map_err(|e| format!("refused connection: {e}"))?;
    let _connected = Held::new(counters.connected);
    let _ = tcp.set_read_timeout(Some(IO_TIMEOUT));
    let _ = tcp.set_write_timeout(Some(IO_TIMEOUT));
    let _ = tcp.set_nodelay(true);
    let out = tcp.try_clone().map_err(|e| format!("clone: {e}"))?;
    let mut c = Conn {
        out,
        input: BufReader::new(tcp),
    };
    let greeting = c.reply(report)?;
    if !greeting.starts_with("220") {
        return Err(format!("greeting {greeting}"));
    }
    c.command("EHLO load.test", "250", report)?;
    let mut n = 0;
    while spec.messages.is_none_or(|m| n < m) && !counters.stop.load(Ordering::SeqCst) {
        let size = rng.range(spec.sizes.0 as u64, spec.sizes.1 as u64) as usize;
        let mid = message_id(&spec.tag, session, n, size);
        n += 1;
        // After a 421 the server must close: read on to see that it does.
        let refused = |c: &mut Conn, report: &mut SessionReport, mid: &str, r: String| {
            report
                .transactions
                .push((mid.to_string(), Outcome::Refused(r.clone())));
            if r.contains("421 ") {
                let _ = c.reply(report);
            }
            Err(r)
        };
        for (line, code) in [
            ("MAIL FROM:<load@load.test>".to_string(), "250"),
            (format!("RCPT TO:<{}>", spec.rcpt), "250"),
            ("DATA".to_string(), "354"),
        ] {
            match c.command(&line, code, report) {
                Ok(_) => {}
                Err(e) if e.contains(" -> ") => return refused(&mut c, report, &mid, e),
                Err(e) => return Err(e),
            }
        }
        let mut data = message_bytes(&mid, &spec.rcpt);
        data.extend_from_slice(b".\r\n");
        c.send(&data)?;
        let outcome = {
            let _awaiting = Held::new(counters.awaiting);
            match c.reply(report) {
                Ok(r) if r.starts_with("250") => match r.rsplit_once("queued as ") {
                    Some((_, id)) => Outcome::Accepted(id.trim().to_string()),
                    None => Outcome::Refused(r),
                },
                Ok(r) => Outcome::Refused(r),
                Err(_) => Outcome::NoReply,
            }
        };
        if let Outcome::Accepted(_) = outcome {
            counters.accepted.fetch_add(1, Ordering::SeqCst);
        }
        if let Outcome::Refused(r) = outcome {
            return refused(&mut c, report, &mid, r);
        }
        let ended = outcome == Outcome::NoReply;
        report.transactions.push((mid, outcome));
        if ended {
            return Err(format!("transaction {n} did not get 250"));
        }
    }
    c.command("QUIT", "221", report).map(|_| ())
}

/// What a Maildir `new/` holds: copies per Message-ID, and files that are not a whole
/// message as sent. Built up by [`MaildirScan::update`], which reads each file once.
#[derive(Debug, Default)]
pub struct MaildirScan {
    /// Message-ID → number of files carrying it.
    pub copies: HashMap<String, usize>,
    /// Files that are partial or altered, with what is wrong.
    pub bad: Vec<(PathBuf, String)>,
    seen: HashSet<PathBuf>,
}

impl MaildirScan {
    /// Message-IDs delivered more than once, and the extra copies in all.
    pub fn duplicates(&self) -> (usize, usize) {
        let dup: Vec<usize> = self.copies.values().filter(|&&n| n > 1).copied().collect();
        (dup.len(), dup.iter().map(|n| n - 1).sum())
    }

    /// Files read so far.
    pub fn files(&self) -> usize {
        self.seen.len()
    }

    /// Reads every file in `new` (a Maildir's `new/`) not read before: each must be our
    /// delivery headers followed by exactly [`message_bytes`] for its Message-ID and `rcpt`.
    pub fn update(&mut self, new: &Path, rcpt: &str) {
        let Ok(entries) = std::fs::read_dir(new) else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            if !self.seen.insert(path.clone()) {
                continue;
            }
            let bytes = match std::fs::read(&path) {
                Ok(b) => crate::crlf(&b),
                Err(e) => {
                    self.bad.push((path, format!("unreadable: {e}")));
                    continue;
                }
            };
            let d = match parse_delivered(&bytes) {
                Ok(d) => d,
                Err(e) => {
                    self.bad.push((path, e));
                    continue;
                }
            };
            let Some(mid) = find_message_id(&d.rest) else {
                self.bad
                    .push((path, format!("no Message-ID in {} octets", bytes.len())));
                continue;
            };
            if d.rest != message_bytes(&mid, rcpt) {
                self.bad
                    .push((path, format!("{mid}: not the message as sent")));
                continue;
            }
            *self.copies.entry(mid).or_default() += 1;
        }
    }
}
