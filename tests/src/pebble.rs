//! [`Pebble`]: Let's Encrypt's test CA (Debian's `pebble`) on free `127.0.0.1` ports, its
//! HTTPS certificate made here with openssl for `127.0.0.1`, its DNS lookups sent to a test
//! dnsmasq, killed when the test ends. Started with `PEBBLE_VA_NOSLEEP=1` (no random waits
//! before validating) and `PEBBLE_WFE_NONCEREJECT=0` (no nonces refused at random).

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::net::claim_port;
use crate::{run, secs};

/// How long pebble may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

type Shared = Arc<Mutex<Vec<u8>>>;

/// A running pebble.
pub struct Pebble {
    child: Child,
    port: u16,
    management: u16,
    tls_root: PathBuf,
    log: Shared,
}

/// A free TCP port on 127.0.0.1 that no other test of this binary got.
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let probe = TcpListener::bind("127.0.0.1:0").expect("cannot bind 127.0.0.1:0");
        let port = probe.local_addr().expect("bound").port();
        drop(probe);
        if claim_port(port) {
            return port;
        }
    }
    panic!("no free port in 100 tries");
}

/// Writes `DIR/STEM.crt` and `DIR/STEM.key`: a self-signed P-256 certificate for the address
/// 127.0.0.1 and the name localhost, no CA, so that it can be its own trust anchor. Returns (certificate, key).
pub fn ip_cert(dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{stem}.crt")),
        dir.join(format!("{stem}.key")),
    );
    run(
        "openssl req",
        Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
            .args(["-subj", &format!("/CN={stem}")])
            .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
        b"",
        secs(30),
    )
    .assert_success("openssl req");
    (cert, key)
}

impl Pebble {
    /// Starts pebble in `dir`: it validates HTTP-01 challenges on `http_port` of the address
    /// `dns` gives for each name (and TLS-ALPN-01 on a port nobody listens on).
    pub fn start(dir: &Path, http_port: u16, dns: SocketAddr) -> Pebble {
        Pebble::start_with_ports(dir, http_port, free_port(), dns)
    }

    /// [`Pebble::start`], validating TLS-ALPN-01 challenges on `tls_port`.
    pub fn start_with_ports(dir: &Path, http_port: u16, tls_port: u16, dns: SocketAddr) -> Pebble {
        let (port, management) = (free_port(), free_port());
        let (cert, key) = ip_cert(dir, "pebble");
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{port}"),
                "managementListenAddress": format!("127.0.0.1:{management}"),
                "certificate": cert,
                "privateKey": key,
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
            }
        });
        let config_path = dir.join("pebble.json");
        std::fs::write(&config_path, config.to_string()).expect("write pebble.json");
        let mut command = Command::new("pebble");
        command
            .arg("-config")
            .arg(&config_path)
            .arg("-dnsserver")
            .arg(dns.to_string())
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("cannot start pebble");
        let log: Shared = Arc::default();
        for out in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let log = log.clone();
            std::thread::spawn(move || copy(out, &log));
        }
        let mut pebble = Pebble {
            child,
            port,
            management,
            tls_root: cert,
            log,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if Instant::now() >= deadline || pebble.child.try_wait().ok().flatten().is_some() {
                panic!("pebble did not start:\n{}", pebble.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        pebble
    }

    /// The ACME directory URL.
    pub fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    /// The root pebble's own HTTPS certificate chains to (`acme.ca_root`).
    pub fn tls_root(&self) -> &Path {
        &self.tls_root
    }

    /// The root of the certificates pebble issues (PEM), from its management API.
    pub fn issuing_root(&self) -> String {
        self.management_get("/roots/0")
    }

    /// A GET on the management API, over HTTPS checked against [`Pebble::tls_root`].
    pub fn management_get(&self, path: &str) -> String {
        const SCRIPT: &str = "import ssl, sys, urllib.request\n\
            ctx = ssl.create_default_context(cafile=sys.argv[2])\n\
            sys.stdout.write(urllib.request.urlopen(sys.argv[1], context=ctx, timeout=10).read().decode())\n";
        let url = format!("https://127.0.0.1:{}{path}", self.management);
        let root = self.tls_root.display().to_string();
        let out = run(
            "pebble management",
            Command::new("python3").args(["-c", SCRIPT, &url, &root]),
            b"",
            secs(30),
        );
        out.assert_success("pebble management API");
        out.stdout
    }

    /// What pebble logged so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().unwrap_or_else(PoisonError::into_inner))
            .into_owned()
    }
}

fn copy(mut from: Box<dyn Read + Send>, to: &Shared) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 {
            return;
        }
        to.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(&buf[..n]);
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
