//! Loopback ports for tests that need a fixed one: the port every MX host is connected on
//! (`outbound.port`), shared by receivers on `127.0.0.2`, `127.0.0.3`…; and [`Trap`], a
//! listener that only counts connections.
//!
//! A port is found by binding port 0 and releasing it, so another process may take it
//! before the test binds it again: [`on_shared_port`] retries on `Address already in use`.
//! Within this test binary no port is handed out twice.

use std::collections::HashSet;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// The addresses receivers may listen on with a shared port.
pub const MX_ADDRS: [&str; 3] = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];

/// How often [`on_shared_port`] tries a new port.
const PORT_TRIES: usize = 5;

static TAKEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// Marks `port` as handed out; false when it already was.
pub(crate) fn claim_port(port: u16) -> bool {
    let mut taken = TAKEN.lock().unwrap_or_else(PoisonError::into_inner);
    taken.get_or_insert_with(HashSet::new).insert(port)
}

/// A TCP port that is free on every address in [`MX_ADDRS`] right now and that no other
/// test in this binary got.
pub fn shared_port() -> u16 {
    for _ in 0..100 {
        let probe = TcpListener::bind((MX_ADDRS[0], 0)).expect("cannot bind 127.0.0.2:0");
        let port = probe
            .local_addr()
            .expect("a bound socket has an address")
            .port();
        let free_everywhere = MX_ADDRS[1..]
            .iter()
            .all(|ip| TcpListener::bind((*ip, port)).is_ok());
        drop(probe);
        if free_everywhere && claim_port(port) {
            return port;
        }
    }
    panic!("found no port free on all of {MX_ADDRS:?} in 100 tries");
}

/// Calls `start` with a port from [`shared_port`]; when it fails because an address is
/// already in use (another process took the port), tries again with a new port, up to 5
/// times. Any other error panics naming `what`. Returns the port and what `start` made.
pub fn on_shared_port<T>(what: &str, mut start: impl FnMut(u16) -> Result<T, String>) -> (u16, T) {
    let mut last = String::new();
    for _ in 0..PORT_TRIES {
        let port = shared_port();
        match start(port) {
            Ok(t) => return (port, t),
            Err(e) if e.contains("in use") => last = e,
            Err(e) => panic!("cannot start {what} on port {port}: {e}"),
        }
    }
    panic!("cannot start {what}: the port was taken {PORT_TRIES} times; last error:\n{last}");
}

/// A listener that accepts connections, counts them and closes them at once: proof that
/// nobody connected where nobody should.
pub struct Trap {
    addr: SocketAddr,
    count: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Trap {
    /// Listens on `addr`; `Err` (mentioning "in use" when it is) when it cannot bind.
    pub fn listen(addr: SocketAddr) -> Result<Trap, String> {
        let listener = TcpListener::bind(addr).map_err(|e| match e.kind() {
            ErrorKind::AddrInUse => format!("{addr} is already in use"),
            _ => format!("cannot bind {addr}: {e}"),
        })?;
        listener
            .set_nonblocking(true)
            .expect("set_nonblocking on a listener");
        let count = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (count.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        c.fetch_add(1, Ordering::SeqCst);
                        drop(conn);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok(Trap {
            addr,
            count,
            stop,
            thread: Some(thread),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many connections it got so far.
    pub fn connections(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

impl Drop for Trap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
