//! [`FakeSmtp`]: a scripted SMTP receiver for what a real one will not do on request: a
//! `4xx` now and `250` later, a `5xx` after the data, and a record of the exact bytes on the
//! wire. Plaintext, no PIPELINING (one reply per command), `8BITMIME` offered, and
//! `CHUNKING` (RFC 3030 BDAT) when started with [`FakeSmtp::start_chunking`].

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// One transaction the fake received.
#[derive(Debug, Clone, Default)]
pub struct Transaction {
    /// Which connection (0, 1, …) it came on.
    pub connection: usize,
    /// The `MAIL FROM:` line as sent.
    pub mail_from: String,
    /// The `RCPT TO:` lines as sent, with the reply each got.
    pub rcpts: Vec<(String, String)>,
    /// The data as it came over the wire (dot-stuffed), up to but without the final
    /// `.\r\n`. Empty when DATA was not reached.
    pub wire_data: Vec<u8>,
    /// The reply to the final dot.
    pub data_reply: String,
    /// The size of each BDAT chunk, in order; empty when the message came with DATA. The
    /// chunks' octets are in `wire_data`, as they came (BDAT is not dot-stuffed).
    pub chunks: Vec<usize>,
}

/// Answers for (connection index): the greeting, the reply to the final dot.
pub type ByConnection = Box<dyn Fn(usize) -> String + Send + Sync>;
/// Answers for (connection index, command line): the reply to `RCPT TO:`.
pub type ByCommand = Box<dyn Fn(usize, &str) -> String + Send + Sync>;
/// A reply or none for (connection index, the command line).
pub type MaybeByCommand = Box<dyn Fn(usize, &str) -> Option<String> + Send + Sync>;

/// What the fake answers; every reply is one or more lines without the final CRLF.
pub struct Script {
    /// The greeting for (connection index); anything but `220 …` makes the fake close the
    /// connection after the client's next line.
    pub greeting: ByConnection,
    /// The reply to `RCPT TO:` for (connection index, the command line).
    pub rcpt: ByCommand,
    /// The reply to the final dot for (connection index).
    pub data: ByConnection,
    /// The reply to `EHLO` for (connection index): `250-fake.test` and `250 8BITMIME`
    /// unless a test offers more (`DSN`).
    pub ehlo: ByConnection,
    /// The reply to `EHLO` for (connection index) when started with
    /// [`FakeSmtp::start_chunking`]: `250-fake.test`, `250-8BITMIME` and `250 CHUNKING` unless
    /// a test offers more (`PIPELINING`).
    pub chunking_ehlo: ByConnection,
    /// For (connection index, the `BDAT` line): `Some(reply)` answers the command at once,
    /// its octets unread (they then come as command lines, as to a server that does not know
    /// BDAT); `None` reads the chunk.
    pub bdat: MaybeByCommand,
    /// The reply to a chunk that is not the last, for (connection index, chunk index).
    pub chunk: Box<dyn Fn(usize, usize) -> String + Send + Sync>,
}

impl Default for Script {
    /// Accepts everything.
    fn default() -> Self {
        Script {
            greeting: Box::new(|_| "220 fake.test ESMTP fake".into()),
            rcpt: Box::new(|_, _| "250 2.1.5 OK".into()),
            data: Box::new(|_| "250 2.0.0 OK fake".into()),
            ehlo: Box::new(|_| "250-fake.test\r\n250 8BITMIME".into()),
            chunking_ehlo: Box::new(|_| "250-fake.test\r\n250-8BITMIME\r\n250 CHUNKING".into()),
            bdat: Box::new(|_, _| None),
            chunk: Box::new(|_, _| "250 2.0.0 chunk OK".into()),
        }
    }
}

#[derive(Default)]
struct State {
    connections: usize,
    transactions: Vec<Transaction>,
    transcript: Vec<String>,
}

/// A running fake receiver.
pub struct FakeSmtp {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeSmtp {
    /// Listens on `addr` with `script`; `Err` (mentioning "in use" when it is) when it
    /// cannot bind.
    pub fn start(addr: SocketAddr, script: Script) -> Result<FakeSmtp, String> {
        FakeSmtp::start_with(addr, script, false)
    }

    /// As [`FakeSmtp::start`], offering CHUNKING: `BDAT <size> [LAST]` is read to exactly
    /// `size` octets and answered `250`, the last with the script's reply to the data.
    pub fn start_chunking(addr: SocketAddr, script: Script) -> Result<FakeSmtp, String> {
        FakeSmtp::start_with(addr, script, true)
    }

    fn start_with(addr: SocketAddr, script: Script, chunking: bool) -> Result<FakeSmtp, String> {
        let listener = TcpListener::bind(addr).map_err(|e| match e.kind() {
            ErrorKind::AddrInUse => format!("{addr} is already in use"),
            _ => format!("cannot bind {addr}: {e}"),
        })?;
        listener
            .set_nonblocking(true)
            .expect("set_nonblocking on a listener");
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let script = Arc::new(script);
        let (st, sp) = (state.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !sp.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let index = {
                            let mut s = st.lock().unwrap_or_else(PoisonError::into_inner);
                            s.connections += 1;
                            s.connections - 1
                        };
                        let (st, script) = (st.clone(), script.clone());
                        std::thread::spawn(move || serve(conn, index, &script, &st, chunking));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok(FakeSmtp {
            addr,
            state,
            stop,
            thread: Some(thread),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many connections it accepted.
    pub fn connections(&self) -> usize {
        self.lock().connections
    }

    /// The transactions so far (one per MAIL FROM).
    pub fn transactions(&self) -> Vec<Transaction> {
        self.lock().transactions.clone()
    }

    /// Everything said on every connection, `N C: …` / `N S: …`.
    pub fn transcript(&self) -> String {
        self.lock().transcript.join("\n")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for FakeSmtp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if std::thread::panicking() {
            eprintln!("--- fake SMTP {} ---\n{}", self.addr, self.transcript());
        }
    }
}

/// One connection, until QUIT, EOF or an I/O error (10 s timeouts).
fn serve(conn: TcpStream, index: usize, script: &Script, state: &Mutex<State>, chunking: bool) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(10)));
    let Ok(out) = conn.try_clone() else {
        return;
    };
    let mut input = BufReader::new(conn);
    let mut peer = Peer { out, index, state };
    let greeting = (script.greeting)(index);
    if !peer.reply(&greeting) {
        return;
    }
    if !greeting.starts_with("220 ") {
        let mut line = Vec::new();
        let _ = input.read_until(b'\n', &mut line);
        peer.log(format!(
            "{index} C: {}",
            String::from_utf8_lossy(&line).trim_end()
        ));
        return;
    }
    let mut current: Option<Transaction> = None;
    loop {
        let mut raw = Vec::new();
        match input.read_until(b'\n', &mut raw) {
            Ok(0) | Err(_) => return peer.keep(current),
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&raw).trim_end().to_string();
        peer.log(format!("{index} C: {line}"));
        let verb = line
            .split([' ', ':'])
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let ok = match verb.as_str() {
            "EHLO" if chunking => peer.reply(&(script.chunking_ehlo)(index)),
            "EHLO" => peer.reply(&(script.ehlo)(index)),
            "BDAT" if chunking => peer.chunk(&mut input, &line, &mut current, script),
            "HELO" | "NOOP" => peer.reply("250 2.0.0 OK"),
            "RSET" => {
                peer.keep(current.take());
                peer.reply("250 2.0.0 OK")
            }
            "MAIL" => {
                peer.keep(current.take());
                current = Some(Transaction {
                    connection: index,
                    mail_from: line.clone(),
                    ..Transaction::default()
                });
                peer.reply("250 2.1.0 OK")
            }
            "RCPT" => {
                let answer = (script.rcpt)(index, &line);
                if let Some(t) = current.as_mut() {
                    t.rcpts.push((line.clone(), answer.clone()));
                }
                peer.reply(&answer)
            }
            "DATA" => match current.take() {
                None => peer.reply("503 5.5.1 MAIL first"),
                Some(t) => peer.reply("354 go ahead") && peer.message(&mut input, t, script),
            },
            "QUIT" => {
                peer.keep(current.take());
                peer.reply("221 2.0.0 bye");
                return;
            }
            _ => peer.reply("502 5.5.1 not here"),
        };
        if !ok {
            return peer.keep(current);
        }
    }
}

/// The server's side of one connection: where replies go, and the state it records into.
struct Peer<'a> {
    out: TcpStream,
    index: usize,
    state: &'a Mutex<State>,
}

impl Peer<'_> {
    fn log(&self, line: String) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .transcript
            .push(line);
    }

    /// Writes one reply; false when the write failed.
    fn reply(&mut self, text: &str) -> bool {
        self.log(format!("{} S: {text}", self.index));
        self.out.write_all(format!("{text}\r\n").as_bytes()).is_ok()
    }

    /// Records a transaction that ended; one that ended without data (all recipients
    /// refused) is kept too.
    fn keep(&self, t: Option<Transaction>) {
        if let Some(t) = t {
            self.state
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .transactions
                .push(t);
        }
    }

    /// After `354`: reads the data of `t` to the final dot, records `t` and gives the
    /// script's answer; false when the connection is to end.
    fn message(
        &mut self,
        input: &mut BufReader<TcpStream>,
        mut t: Transaction,
        script: &Script,
    ) -> bool {
        loop {
            let mut data_line = Vec::new();
            match input.read_until(b'\n', &mut data_line) {
                Ok(0) | Err(_) => {
                    self.keep(Some(t));
                    return false;
                }
                Ok(_) => {}
            }
            if data_line == b".\r\n" {
                break;
            }
            t.wire_data.extend_from_slice(&data_line);
        }
        self.log(format!(
            "{} C: ({} bytes of data)",
            self.index,
            t.wire_data.len()
        ));
        let answer = (script.data)(self.index);
        t.data_reply = answer.clone();
        self.keep(Some(t));
        self.reply(&answer)
    }
}

impl Peer<'_> {
    /// `BDAT <size> [LAST]`: reads exactly `size` octets into the transaction; at `LAST`
    /// records it and gives the script's answer. False when the connection is to end.
    fn chunk(
        &mut self,
        input: &mut BufReader<TcpStream>,
        line: &str,
        current: &mut Option<Transaction>,
        script: &Script,
    ) -> bool {
        let mut words = line.split(' ').skip(1);
        let Some(size) = words.next().and_then(|w| w.parse::<usize>().ok()) else {
            self.reply("501 5.5.4 bad BDAT");
            return false;
        };
        let last = words.next().is_some_and(|w| w.eq_ignore_ascii_case("LAST"));
        if let Some(answer) = (script.bdat)(self.index, line) {
            return self.reply(&answer);
        }
        let mut octets = vec![0; size];
        if std::io::Read::read_exact(input, &mut octets).is_err() {
            self.keep(current.take());
            return false;
        }
        self.log(format!("{} C: ({size} octets of data)", self.index));
        let Some(t) = current.as_mut() else {
            return self.reply("503 5.5.1 MAIL first");
        };
        t.wire_data.extend_from_slice(&octets);
        t.chunks.push(size);
        if !last {
            let answer = (script.chunk)(self.index, t.chunks.len() - 1);
            return self.reply(&answer);
        }
        let answer = (script.data)(self.index);
        t.data_reply = answer.clone();
        self.keep(current.take());
        self.reply(&answer)
    }
}

/// Undoes dot-stuffing (RFC 5321 §4.5.2) of data as it came over the wire.
pub fn unstuff(wire: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(wire.len());
    for line in wire.split_inclusive(|&b| b == b'\n') {
        out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
    }
    out
}
