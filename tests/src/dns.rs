//! [`TestDns`]: dnsmasq on a free `127.0.0.1` port (UDP and TCP), answering for `.test`
//! from its command-line records only (or, [`TestDns::validating`], validating what another
//! server answers), killed when the test ends.
//!
//! dnsmasq is started without a shell (no quoting: values go in as they are), with no
//! config file, no upstream servers and no `/etc/hosts`; `--local=/test/` makes every name
//! under `.test` that has no record NXDOMAIN. It answers its own records with TTL 0, so a
//! resolver never caches them across tests.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::net::claim_port;

/// The dnsmasq binary.
const DNSMASQ: &str = "/usr/sbin/dnsmasq";
/// How long dnsmasq may take to answer its first query.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a port that turns out to be taken is replaced.
const PORT_TRIES: usize = 5;

type Shared = Arc<Mutex<Vec<u8>>>;

/// A running dnsmasq.
pub struct TestDns {
    child: Option<Child>,
    port: u16,
    args: Vec<String>,
    log: Shared,
}

/// DNS response codes [`TestDns::query`] reports.
pub mod rcode {
    /// NOERROR.
    pub const NOERROR: u8 = 0;
    /// SERVFAIL.
    pub const SERVFAIL: u8 = 2;
    /// NXDOMAIN.
    pub const NXDOMAIN: u8 = 3;
    /// REFUSED.
    pub const REFUSED: u8 = 5;
}

/// DNS record types for [`TestDns::query`].
pub mod qtype {
    /// An IPv4 address.
    pub const A: u16 = 1;
    /// A mail exchanger.
    pub const MX: u16 = 15;
    /// An IPv6 address.
    pub const AAAA: u16 = 28;
}

impl TestDns {
    /// Starts dnsmasq with `records`, each one argument such as
    /// `--mx-host=remote.test,mx1.remote.test,10`, `--host-record=mx1.remote.test,127.0.0.2`
    /// or `--address=/x.test/127.0.0.3`. Panics when it does not answer within 10 s.
    pub fn start(records: &[&str]) -> TestDns {
        let mut args = vec!["--local=/test/"];
        args.extend_from_slice(records);
        TestDns::start_with(&args)
    }

    /// A validating resolver: dnsmasq forwarding every query to `upstream` and validating
    /// the answers from the root key whose DS is `ds` (`.,KEYTAG,ALGORITHM,2,DIGEST`), setting
    /// AD on those that validate and answering SERVFAIL for bogus ones.
    pub fn validating(upstream: SocketAddr, ds: &str) -> TestDns {
        TestDns::start_with(&[
            &format!("--server={}#{}", upstream.ip(), upstream.port()),
            "--dnssec",
            &format!("--trust-anchor={ds}"),
            "--no-negcache",
        ])
    }

    fn start_with(args: &[&str]) -> TestDns {
        let mut last = String::new();
        for _ in 0..PORT_TRIES {
            let port = free_udp_tcp_port();
            match TestDns::try_start(port, args) {
                Ok(dns) => return dns,
                Err(e) if e.contains("in use") => last = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("dnsmasq: the port was taken {PORT_TRIES} times; last output:\n{last}");
    }

    fn try_start(port: u16, records: &[&str]) -> Result<TestDns, String> {
        let mut args: Vec<String> = [
            "--no-daemon",
            "--conf-file=/dev/null",
            "--pid-file=",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            "--log-queries",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        args.push(format!("--port={port}"));
        args.extend(records.iter().map(|r| r.to_string()));
        let mut child = Command::new(DNSMASQ)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {DNSMASQ}: {e}"));
        let log = Shared::default();
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let keep = log.clone();
        let reader = std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = stderr.read(&mut chunk) {
                keep.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .extend_from_slice(&chunk[..n]);
            }
        });
        let mut dns = TestDns {
            child: Some(child),
            port,
            args,
            log,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let exited = dns.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                dns.child = None;
                let _ = reader.join();
                return Err(format!(
                    "dnsmasq exited at start-up ({status}): {:?}\n{}",
                    dns.args,
                    dns.log()
                ));
            }
            if dns.answers() {
                return Ok(dns);
            }
            if Instant::now() >= deadline {
                panic!(
                    "dnsmasq did not answer on 127.0.0.1:{port} within {READY_TIMEOUT:?}: {:?}\n{}",
                    dns.args,
                    dns.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// True when it answers a query over UDP and accepts TCP connections.
    fn answers(&self) -> bool {
        self.try_query("ready.test", qtype::A, Duration::from_millis(200))
            .is_some()
            && TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).is_ok()
    }

    /// Where it listens (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The `[dns]` table pointing a server at it.
    pub fn config_toml(&self) -> String {
        format!("[dns]\nnameservers = [\"{}\"]\n", self.addr())
    }

    /// What dnsmasq logged so far (each query, with `--log-queries`).
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().unwrap_or_else(PoisonError::into_inner))
            .into_owned()
    }

    /// Asks it for `name` of type `qtype` over UDP; returns the response code and the number
    /// of answer records. Panics when it does not answer within 2 s.
    pub fn query(&self, name: &str, qtype: u16) -> (u8, u16) {
        self.try_query(name, qtype, Duration::from_secs(2))
            .unwrap_or_else(|| panic!("dnsmasq did not answer {name}/{qtype}\n{}", self.log()))
    }

    fn try_query(&self, name: &str, qtype: u16, timeout: Duration) -> Option<(u8, u16)> {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).ok()?;
        socket.set_read_timeout(Some(timeout)).ok()?;
        let id: u16 = 0x4d54;
        socket
            .send_to(&query_bytes(id, name, qtype), self.addr())
            .ok()?;
        let mut buf = [0u8; 1500];
        let n = socket.recv(&mut buf).ok()?;
        let answer = &buf[..n];
        // Our id, the QR (response) bit set.
        if n < 12 || answer[..2] != id.to_be_bytes() || answer[2] & 0x80 == 0 {
            return None;
        }
        Some((answer[3] & 0x0f, u16::from_be_bytes([answer[6], answer[7]])))
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- dnsmasq {:?} ---\n{}", self.args, self.log());
        }
    }
}

/// A port free for UDP and TCP on 127.0.0.1 right now, not handed out before.
pub(crate) fn free_udp_tcp_port() -> u16 {
    for _ in 0..100 {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("cannot bind UDP 127.0.0.1:0");
        let port = udp
            .local_addr()
            .expect("a bound socket has an address")
            .port();
        let tcp_free = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok();
        drop(udp);
        if tcp_free && claim_port(port) {
            return port;
        }
    }
    panic!("found no port free for UDP and TCP on 127.0.0.1 in 100 tries");
}

/// A standard query (RD set) for `name`, class IN.
fn query_bytes(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        let len = u8::try_from(label.len()).expect("a DNS label is at most 63 octets");
        q.push(len);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

/// A DNS server that answers every query over UDP with SERVFAIL (and refuses TCP, since
/// nothing listens there): DNS trouble that must never bounce mail.
pub struct ServfailDns {
    addr: SocketAddr,
    stop: Arc<std::sync::atomic::AtomicBool>,
    queries: Arc<std::sync::atomic::AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServfailDns {
    /// Starts it on a free 127.0.0.1 UDP port.
    pub fn start() -> ServfailDns {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let socket =
            UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("cannot bind UDP 127.0.0.1:0");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("set_read_timeout");
        let addr = socket.local_addr().expect("a bound socket has an address");
        let stop = Arc::new(AtomicBool::new(false));
        let queries = Arc::new(AtomicUsize::new(0));
        let (s, q) = (stop.clone(), queries.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if n < 12 {
                    continue;
                }
                q.fetch_add(1, Ordering::SeqCst);
                // The query back, as a response (QR, RD and RA set) with RCODE 2 and no
                // records beyond the question.
                let Some(end) = question_end(&buf[..n]) else {
                    continue;
                };
                let mut answer = buf[..end].to_vec();
                answer[2] = 0x80 | (buf[2] & 0x01);
                answer[3] = 0x80 | rcode::SERVFAIL;
                answer[6..12].fill(0);
                let _ = socket.send_to(&answer, from);
            }
        });
        ServfailDns {
            addr,
            stop,
            queries,
            thread: Some(thread),
        }
    }

    /// The `[dns]` table pointing a server at it.
    pub fn config_toml(&self) -> String {
        format!("[dns]\nnameservers = [\"{}\"]\n", self.addr)
    }

    /// How many queries it answered.
    pub fn queries(&self) -> usize {
        self.queries.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for ServfailDns {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Where the (single) question of a message ends: after its name's labels, type and class.
fn question_end(msg: &[u8]) -> Option<usize> {
    let mut at = 12;
    loop {
        let len = usize::from(*msg.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        at += len;
    }
    (at + 4 <= msg.len()).then_some(at + 4)
}
