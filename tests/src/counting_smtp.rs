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
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut input = BufReader::new(conn);
    let lock = || state.lock().unwrap_or_else(PoisonError::into_inner);
    let log = |line: String| lock().transcript.push(line);
    let mut reply = |text: &str| -> bool {
        log(format!("{index} S: {text}"));
        let wire = format!("{text}\r\n");
        if fault == Fault::Trickle && (text.starts_with("220") || text.starts_with("250 ok")) {
            for b in wire.as_bytes() {
                if out.write_all(&[*b]).is_err() {
                    return false;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            true
        } else {
            out.write_all(wire.as_bytes()).is_ok()
        }
    };
    if fault == Fault::Greeting421 {
        reply("421 4.3.2 counting.test busy, come back later");
        return;
    }
    let greeting = if fault == Fault::Trickle {
        "220 c"
    } else {
        "220 counting.test ESMTP"
    };
    if !reply(greeting) {
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
        log(format!("{index} C: {line}"));
        let verb = line
            .split([' ', ':'])
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let ok = match verb.as_str() {
            "EHLO" => reply("250-counting.test\r\n250 8BITMIME"),
            "HELO" | "NOOP" | "RSET" => {
                in_tx = verb != "RSET" && in_tx;
                reply("250 2.0.0 OK")
            }
            "MAIL" => {
                in_tx = true;
                reply("250 2.1.0 OK")
            }
            "RCPT" => {
                let seen = {
                    let mut st = lock();
                    st.rcpts += 1;
                    st.rcpts
                };
                if matches!(fault, Fault::Rcpt451First(n) if seen <= n) {
                    reply("451 4.3.0 counting.test: try later")
                } else {
                    reply("250 2.1.5 OK")
                }
            }
            "DATA" if !in_tx => reply("503 5.5.1 MAIL first"),
            "DATA" => {
                in_tx = false;
                if !reply("354 go ahead") {
                    return;
                }
                let mut data = Vec::new();
                loop {
                    let mut l = Vec::new();
                    match input.read_until(b'\n', &mut l) {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    if l == b".\r\n" {
                        break;
                    }
                    data.extend_from_slice(&l);
                }
                let mid = find_message_id(&crate::fake_smtp::unstuff(&data))
                    .unwrap_or_else(|| "(no Message-ID)".into());
                log(format!(
                    "{index} C: ({} octets, Message-ID {mid})",
                    data.len()
                ));
                match fault {
                    Fault::DropAfterDot => {
                        log(format!("{index} S: (drops the connection)"));
                        lock().dropped.push((mid, index));
                        return;
                    }
                    Fault::SlowDot(d) => std::thread::sleep(d),
                    _ => {}
                }
                lock().accepted.push((mid, index));
                reply(if fault == Fault::Trickle {
                    "250 ok"
                } else {
                    "250 2.0.0 OK counted"
                })
            }
            "QUIT" => {
                reply("221 2.0.0 bye");
                return;
            }
            _ => reply("502 5.5.1 not here"),
        };
        if !ok {
            return;
        }
    }
}
