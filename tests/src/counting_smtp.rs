//! [`CountingSmtp`]: a receiver that counts what it accepted by `Message-ID`, and that can
//! misbehave on chosen connections ([`Fault`]): `421` at the greeting, `451` to RCPT, a
//! dropped connection after the final dot, replies trickled one byte a second, or a delay
//! before the `250` (to widen the window a crash can fall into). Plaintext, no PIPELINING.
//!
//! A message counts as received when the fake is about to write `250` to its final dot:
//! the sender cannot have seen that `250` before it is counted.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::load::find_message_id;

/// How one connection misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// It does not.
    None,
    /// `421 4.3.2` instead of the greeting, then close.
    Greeting421,
    /// `451 4.3.0` to the first `n` RCPTs the receiver sees, over all connections (a sender
    /// may retry on the connection it kept).
    Rcpt451First(usize),
    /// Reads the whole message, then closes without a reply.
    DropAfterDot,
    /// The greeting (`220 c`) and the reply to the final dot (`250 ok`) go out one byte a
    /// second.
    Trickle,
    /// Waits this long before the `250` to the final dot.
    SlowDot(Duration),
}

#[derive(Default)]
struct State {
    /// When each connection was accepted.
    connected: Vec<Instant>,
    /// Message-IDs acknowledged with 250, in order, with the connection.
    accepted: Vec<(String, usize)>,
    /// Message-IDs read in full but dropped without a reply.
    dropped: Vec<(String, usize)>,
    transcript: Vec<String>,
    /// RCPT commands seen, over all connections.
    rcpts: usize,
}

/// A running counting receiver.
pub struct CountingSmtp {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Chooses the [`Fault`] for connection index (0, 1, …).
pub type FaultPlan = Box<dyn Fn(usize) -> Fault + Send + Sync>;

impl CountingSmtp {
    /// Listens on `addr`; `plan` says how each connection misbehaves. `Err` (mentioning
    /// "in use" when it is) when it cannot bind.
    pub fn start(addr: SocketAddr, plan: FaultPlan) -> Result<CountingSmtp, String> {
        let listener = TcpListener::bind(addr).map_err(|e| match e.kind() {
            ErrorKind::AddrInUse => format!("{addr} is already in use"),
            _ => format!("cannot bind {addr}: {e}"),
        })?;
        listener
            .set_nonblocking(true)
            .expect("set_nonblocking on a listener");
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let plan = Arc::new(plan);
        let (st, sp) = (state.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !sp.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let index = {
                            let mut s = st.lock().unwrap_or_else(PoisonError::into_inner);
                            s.connected.push(Instant::now());
                            s.connected.len() - 1
                        };
                        let fault = plan(index);
                        let st = st.clone();
                        std::thread::spawn(move || serve(conn, index, fault, &st));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok(CountingSmtp {
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

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Message-ID → how many times it was acknowledged with `250`.
    pub fn accepted(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for (mid, _) in &self.lock().accepted {
            *counts.entry(mid.clone()).or_default() += 1;
        }
        counts
    }

    /// Message-IDs read in full and then dropped without a reply.
    pub fn dropped(&self) -> Vec<String> {
        self.lock().dropped.iter().map(|(m, _)| m.clone()).collect()
    }

    /// When each connection came, in order.
    pub fn connection_times(&self) -> Vec<Instant> {
        self.lock().connected.clone()
    }

    /// Everything said, `N C: …` / `N S: …` (message data summarised).
    pub fn transcript(&self) -> String {
        self.lock().transcript.join("\n")
    }
}

impl Drop for CountingSmtp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if std::thread::panicking() {
            eprintln!("--- counting SMTP {} ---\n{}", self.addr, self.transcript());
        }
    }
}

/// One connection, until QUIT, EOF, an I/O error (10 s timeouts) or its fault ends it.
fn serve(conn: TcpStream, index: usize, fault: Fault, state: &Mutex<State>) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(10)));
    let Ok(out) = conn.try_clone() else {
        return;
    };
    let mut input = BufReader::new(conn);
    let mut peer = Peer {
        out,
        index,
        fault,
        state,
    };
    if fault == Fault::Greeting421 {
        peer.reply("421 4.3.2 counting.test busy, come back later");
        return;
    }
    let greeting = if fault == Fault::Trickle {
        "220 c"
    } else {
        "220 counting.test ESMTP"
    };
    if !peer.reply(greeting) {
        return;
    }
    let mut in_tx = false;
    loop {
        let mut raw = Vec::new();
        match input.read_until(b'\n', &mut raw) {
            Ok(0) | Err(_) => return,
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
            "EHLO" => peer.reply("250-counting.test\r\n250 8BITMIME"),
            "HELO" | "NOOP" | "RSET" => {
                in_tx = verb != "RSET" && in_tx;
                peer.reply("250 2.0.0 OK")
            }
            "MAIL" => {
                in_tx = true;
                peer.reply("250 2.1.0 OK")
            }
            "RCPT" => peer.rcpt(),
            "DATA" if !in_tx => peer.reply("503 5.5.1 MAIL first"),
            "DATA" => {
                in_tx = false;
                peer.reply("354 go ahead") && peer.message(&mut input)
            }
            "QUIT" => {
                peer.reply("221 2.0.0 bye");
                return;
            }
            _ => peer.reply("502 5.5.1 not here"),
        };
        if !ok {
            return;
        }
    }
}

/// The receiver's side of one connection: where replies go, and what it shares with the
/// other connections.
struct Peer<'a> {
    out: TcpStream,
    index: usize,
    fault: Fault,
    state: &'a Mutex<State>,
}

impl Peer<'_> {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn log(&self, line: String) {
        self.lock().transcript.push(line);
    }

    /// Writes one reply (trickled when the fault says so); false when the write failed.
    fn reply(&mut self, text: &str) -> bool {
        self.log(format!("{} S: {text}", self.index));
        let wire = format!("{text}\r\n");
        if self.fault == Fault::Trickle && (text.starts_with("220") || text.starts_with("250 ok")) {
            for b in wire.as_bytes() {
                if self.out.write_all(&[*b]).is_err() {
                    return false;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            true
        } else {
            self.out.write_all(wire.as_bytes()).is_ok()
        }
    }

    /// Counts the RCPT and answers it (`451` while the fault says so).
    fn rcpt(&mut self) -> bool {
        let seen = {
            let mut st = self.lock();
            st.rcpts += 1;
            st.rcpts
        };
        if matches!(self.fault, Fault::Rcpt451First(n) if seen <= n) {
            self.reply("451 4.3.0 counting.test: try later")
        } else {
            self.reply("250 2.1.5 OK")
        }
    }

    /// After `354`: reads the message to its final dot, counts it and answers it, or does what
    /// the fault says; false when the connection is to end.
    fn message(&mut self, input: &mut BufReader<TcpStream>) -> bool {
        let index = self.index;
        let mut data = Vec::new();
        loop {
            let mut l = Vec::new();
            match input.read_until(b'\n', &mut l) {
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            }
            if l == b".\r\n" {
                break;
            }
            data.extend_from_slice(&l);
        }
        let mid = find_message_id(&crate::fake_smtp::unstuff(&data))
            .unwrap_or_else(|| "(no Message-ID)".into());
        self.log(format!(
            "{index} C: ({} octets, Message-ID {mid})",
            data.len()
        ));
        match self.fault {
            Fault::DropAfterDot => {
                self.log(format!("{index} S: (drops the connection)"));
                self.lock().dropped.push((mid, index));
                return false;
            }
            Fault::SlowDot(d) => std::thread::sleep(d),
            _ => {}
        }
        self.lock().accepted.push((mid, index));
        self.reply(if self.fault == Fault::Trickle {
            "250 ok"
        } else {
            "250 2.0.0 OK counted"
        })
    }
}
