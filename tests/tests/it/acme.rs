//! `[acme]` against Debian's pebble: the first certificate is obtained by a real HTTP-01
//! validation (pebble asks the test dnsmasq for the name and fetches the token from our
//! responder) and served at once, by name and to clients that send none; a restart reuses
//! the stored account and a renewal is served without a restart; a challenge the CA cannot
//! check keeps the old certificate and says why; a CA answering garbage or a rate limit is
//! retried later (per Retry-After); a huge request to the challenge port is dropped;
//! TLS-ALPN-01 answers only `acme-tls/1`; the challenge port is bound before privileges drop.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

use mta_tests::certs::{cert_sha256, spki_sha256, write_self_signed};
use mta_tests::pebble::{Pebble, free_port, ip_cert};
use mta_tests::system::{is_root, owner_mode, proc_ids, unprivileged_user};
use mta_tests::{TestDns, TestMta, base_config, mta_with_config, run, secs};

const HOST: &str = "mx.example.test";

/// The `[acme]` table for `pebble`, the responder on `http_port`.
fn acme_toml(directory: &str, root: &Path, http_port: u16, extra: &str) -> String {
    format!(
        "[acme]\ndirectory = {directory:?}\nca_root = {:?}\ncontact = [\"mailto:pm@example.test\"]\n\
         http_listen = \"127.0.0.1:{http_port}\"\n{extra}",
        root.display().to_string()
    )
}

/// The SHA-256 of the leaf `addr` (port 465) serves to a client sending `sni` (none when
/// `None`), verified against `root` for the name `HOST`: python's ssl with check_hostname.
fn verified_leaf(addr: SocketAddr, sni: Option<&str>, root: &Path) -> Result<String, String> {
    const SCRIPT: &str = r#"
import hashlib, socket, ssl, sys
port, sni, root = int(sys.argv[1]), sys.argv[2] or None, sys.argv[3]
ctx = ssl.create_default_context(cafile=root)
ctx.check_hostname = sni is not None
tls = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname=sni)
if sni is None:
    names = [v for k, v in tls.getpeercert()["subjectAltName"] if k == "DNS"]
    assert "mx.example.test" in names, names
print(hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest())
"#;
    let out = run(
        "python3 ssl",
        Command::new("python3").args([
            "-c",
            SCRIPT,
            &addr.port().to_string(),
            sni.unwrap_or(""),
            &root.display().to_string(),
        ]),
        b"",
        secs(30),
    );
    match out.code() {
        0 => Ok(out.stdout.trim().to_string()),
        _ => Err(out.all()),
    }
}

/// The metrics page, over HTTP/1.1.
fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn account_url(data: &Path) -> String {
    let text = std::fs::read_to_string(data.join("acme/account.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["credentials"]["id"].as_str().unwrap().to_string()
}

#[test]
fn first_certificate_then_renewal_after_a_restart_with_the_same_account() {
    let dns = TestDns::start(&[&format!("--host-record={HOST},127.0.0.1")]);
    let http_port = free_port();
    let work = tempfile::tempdir().unwrap();
    let pebble = Pebble::start(work.path(), http_port, dns.addr());
    // A renewal is due as soon as the certificate exists: pebble's live five years.
    let acme = acme_toml(
        &pebble.directory(),
        pebble.tls_root(),
        http_port,
        "renew_before = \"3650d\"\n",
    ) + "[metrics]\nlisten = \"127.0.0.1:0\"\n";
    let mut mta = TestMta::start_config(|dir| base_config(dir, &acme));
    mta.wait_logged(secs(90), "the first certificate", || {
        mta.log().contains("acme: certificate obtained and served")
    });
    let root = work.path().join("issuing-root.pem");
    std::fs::write(&root, pebble.issuing_root()).unwrap();
    let data = mta.data_dir();
    let stored = data.join("acme/cert.pem");
    let first = cert_sha256(&stored);
    let first_key = spki_sha256(&stored);
    // Served at once, checked against pebble's root, to a client naming us and to one that
    // names nobody (the hostname's certificate replaces the self-signed default).
    let addr = mta.submissions_addr();
    assert_eq!(verified_leaf(addr, Some(HOST), &root), Ok(first.clone()));
    assert_eq!(verified_leaf(addr, None, &root), Ok(first.clone()));
    // The challenge was really fetched from our responder.
    assert!(
        mta.log().contains("acme http-01: challenge answered"),
        "{}",
        mta.log()
    );
    for file in ["account.json", "cert.pem", "key.pem"] {
        assert_eq!(mode(&data.join("acme").join(file)), 0o600, "{file}");
    }
    let account = account_url(&data);
    // The metric says when it expires: pebble's certificate's notAfter.
    let metrics = scrape(mta.listener("metrics"));
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("mta_tls_certificate_expiry_timestamp_seconds{name=\"mx.example.test\"}")
        })
        .unwrap_or_else(|| panic!("no expiry metric in\n{metrics}"));
    let value: i64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    let logged = format!("not_after={value}");
    assert!(mta.log().contains(&logged), "{line} vs\n{}", mta.log());

    mta.restart();
    // At start the stored certificate is served; then it is renewed (due at once) with the
    // stored account: pebble is asked for no new account.
    mta.wait_logged(secs(90), "the renewal", || {
        mta.log()
            .split("--- test harness: restart ---")
            .nth(1)
            .is_some_and(|after| after.contains("acme: certificate obtained and served"))
    });
    assert_eq!(account_url(&data), account);
    let after = mta
        .log()
        .split("--- test harness: restart ---")
        .nth(1)
        .unwrap()
        .to_string();
    assert!(!after.contains("acme: account created"), "{after}");
    let renewed = cert_sha256(&stored);
    assert_ne!(renewed, first);
    // The key is kept, so a published TLSA 3 1 1 record stays true.
    assert_eq!(spki_sha256(&stored), first_key);
    assert_eq!(
        verified_leaf(mta.submissions_addr(), Some(HOST), &root),
        Ok(renewed)
    );
}

#[test]
fn tls_alpn_01_answers_only_acme_tls_1_for_the_name() {
    let dns = TestDns::start(&[&format!("--host-record={HOST},127.0.0.1")]);
    let (tls_port, http_port) = (free_port(), free_port());
    let work = tempfile::tempdir().unwrap();
    // pebble's HTTP-01 port has nobody behind it: only TLS-ALPN-01 can pass.
    let pebble = Pebble::start_with_ports(work.path(), http_port, tls_port, dns.addr());
    let acme = acme_toml(
        &pebble.directory(),
        pebble.tls_root(),
        free_port(),
        &format!("challenge = \"tls-alpn-01\"\ntls_alpn_listen = \"127.0.0.1:{tls_port}\"\n"),
    );
    let mta = TestMta::start_config(|dir| base_config(dir, &acme));
    mta.wait_logged(secs(90), "the certificate", || {
        mta.log().contains("acme: certificate obtained and served")
    });
    assert!(
        mta.log().contains("acme tls-alpn-01: challenge answered"),
        "{}",
        mta.log()
    );
    let root = work.path().join("issuing-root.pem");
    std::fs::write(&root, pebble.issuing_root()).unwrap();
    let stored = cert_sha256(&mta.data_dir().join("acme/cert.pem"));
    assert_eq!(
        verified_leaf(mta.submissions_addr(), Some(HOST), &root),
        Ok(stored)
    );
    // The challenge port gives nothing to a client that does not ask for acme-tls/1 (or
    // does, but for no name being validated now).
    for args in [
        format!("-alpn h2 -servername {HOST}"),
        format!("-alpn acme-tls/1 -servername {HOST}"),
    ] {
        let out = run(
            "openssl s_client",
            Command::new("sh").args([
                "-c",
                &format!("openssl s_client -connect 127.0.0.1:{tls_port} {args} </dev/null 2>&1"),
            ]),
            b"",
            secs(30),
        );
        assert!(
            !out.stdout.contains("BEGIN CERTIFICATE"),
            "{args}: {}",
            out.stdout
        );
        assert!(out.stdout.contains("alert"), "{args}: {}", out.stdout);
    }
}

/// A free port below 1024 on 127.0.0.1, which only root (or `CAP_NET_BIND_SERVICE`) binds.
fn privileged_port() -> u16 {
    (700..1000)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port in 700..1000")
}

#[test]
fn the_challenge_port_is_bound_before_privileges_are_dropped() {
    assert!(
        is_root(),
        "this test starts mta serve as root: run the suite as root"
    );
    let (user, uid, _) = unprivileged_user();
    let port = privileged_port();
    // No CA answers: the point is the port and the files, not a certificate.
    let acme = format!(
        "user = {user:?}\n[acme]\ndirectory = \"https://127.0.0.1:{}/dir\"\n\
         http_listen = \"127.0.0.1:{port}\"\n",
        free_port()
    );
    let mta = TestMta::start_config(|dir| {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).unwrap();
        base_config(dir, &acme)
    });
    let pid: u32 = mta.pid().parse().unwrap();
    assert_eq!(proc_ids(pid).uid, vec![uid; 4], "{}", mta.log());
    mta.wait_logged(secs(30), "the failed attempt", || {
        mta.log().contains("acme: no certificate this time")
    });
    // The dropped process serves the port it could not have bound, and writes its status.
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(secs(20))).unwrap();
    stream
        .write_all(b"GET /.well-known/acme-challenge/abc HTTP/1.1\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert!(
        answer.starts_with(b"HTTP/1.1 404"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    let status = mta.data_dir().join("acme/status.json");
    mta.wait_logged(secs(10), "status.json", || status.exists());
    assert_eq!(owner_mode(&status).0, uid);
}

#[test]
fn check_config_names_an_unusable_ca_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("not-a-root.pem");
    std::fs::write(&root, "hello\n").unwrap();
    let acme = acme_toml("https://127.0.0.1:9/dir", &root, free_port(), "");
    let config = dir.path().join("mta.toml");
    std::fs::write(&config, base_config(dir.path(), &acme)).unwrap();
    let out = mta_with_config(&config, &["check-config"], b"");
    assert_eq!(out.code(), 2, "{}", out.all());
    let want = format!(
        "acme.ca_root {}: no CERTIFICATE block found",
        root.display()
    );
    assert!(out.stderr.contains(&want), "{}", out.all());
}

/// A data dir holding an "old" certificate for the hostname, as a previous run left it.
fn with_old_certificate(dir: &Path) -> String {
    let acme = dir.join("data/acme");
    std::fs::create_dir_all(&acme).unwrap();
    write_self_signed(&acme.join("cert.pem"), &acme.join("key.pem"), HOST);
    cert_sha256(&acme.join("cert.pem"))
}

#[test]
fn a_failed_challenge_keeps_the_old_certificate_and_says_why() {
    let dns = TestDns::start(&[&format!("--host-record={HOST},127.0.0.1")]);
    // pebble validates on a port where nothing answers: the challenge fails.
    let (http_port, nobody) = (free_port(), free_port());
    let work = tempfile::tempdir().unwrap();
    let pebble = Pebble::start(work.path(), nobody, dns.addr());
    let acme = acme_toml(
        &pebble.directory(),
        pebble.tls_root(),
        http_port,
        "renew_before = \"3650d\"\n",
    ) + &dns.config_toml();
    let mut old = String::new();
    let mta = TestMta::start_config(|dir| {
        old = with_old_certificate(dir);
        base_config(dir, &acme)
    });
    mta.wait_logged(secs(90), "the failure", || {
        mta.log().contains("acme: no certificate this time")
    });
    let log = mta.log();
    assert!(log.contains("keeping the current one"), "{log}");
    assert!(log.contains("retry_in_s=60"), "{log}");
    // pebble's reason is in the log: it could not connect to the name's port.
    assert!(
        log.contains("connection refused") || log.contains("Connection refused"),
        "{log}"
    );
    let leaf = |sni| {
        let out = run(
            "openssl s_client",
            Command::new("sh").args([
                "-c",
                &format!(
                    "openssl s_client -connect {} {sni} </dev/null 2>/dev/null \
                     | openssl x509 -outform der | openssl dgst -sha256 -r",
                    mta.submissions_addr()
                ),
            ]),
            b"",
            secs(30),
        );
        out.stdout
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(leaf(format!("-servername {HOST}")), old);
    assert_eq!(leaf("-noservername".to_string()), old);
    // mta doctor shows the expiry and the error.
    let doctor = mta.mta(&["doctor", "--json"], b"");
    let json: serde_json::Value = serde_json::from_str(&doctor.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", doctor.all());
    });
    let acme = json
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["check"] == "acme" && v["domain"] == HOST)
        .unwrap_or_else(|| panic!("no acme verdict: {json}"))
        .clone();
    let detail = acme["detail"].as_str().unwrap();
    assert_eq!(acme["status"], "fail", "{acme}");
    assert!(detail.contains("expires in "), "{detail}");
    assert!(detail.contains("last attempt failed: "), "{detail}");
    assert!(
        detail.to_lowercase().contains("connection refused"),
        "{detail}"
    );

    // A huge request to the challenge port is cut off at 4 KiB and answered 400; the
    // responder goes on answering.
    let addr = SocketAddr::from(([127, 0, 0, 1], http_port));
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(secs(20))).unwrap();
    let mut junk = b"GET /".to_vec();
    junk.extend(std::iter::repeat_n(b'a', 1 << 20));
    let _ = stream.write_all(&junk);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert!(
        answer.starts_with(b"HTTP/1.1 400"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    mta.wait_logged(secs(20), "the oversized request logged", || {
        mta.log().contains("request head longer than 4096 bytes")
    });
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(secs(20))).unwrap();
    stream
        .write_all(b"GET /.well-known/acme-challenge/unknown HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert!(
        answer.starts_with(b"HTTP/1.1 404"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    drop(pebble);
}

/// A fake CA over HTTPS (python, the pebble-style certificate in `dir`) answering every
/// request with `status`, `body` and, when given, `Retry-After`; with `directory`, a
/// directory and nonces first, so that the refusal comes for the account.
struct FakeCa {
    child: std::process::Child,
    port: u16,
    cert: std::path::PathBuf,
}

impl FakeCa {
    fn start(
        dir: &Path,
        status: u16,
        body: &str,
        retry_after: Option<&str>,
        directory: bool,
    ) -> FakeCa {
        const SCRIPT: &str = r#"
import http.server, ssl, sys
port, cert, key, status, body, retry = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5].encode(), sys.argv[6]
directory_ok = sys.argv[7] == "1"
base = "https://127.0.0.1:%d" % port
directory = ('{"newNonce": "%s/nonce", "newAccount": "%s/account", "newOrder": "%s/order"}' % (base, base, base)).encode()
class H(http.server.BaseHTTPRequestHandler):
    def answer(self):
        if directory_ok and self.command == "GET" and self.path == "/dir":
            self.plain(200, directory)
        elif directory_ok and self.path == "/nonce":
            self.plain(200, b"")
        else:
            self.refuse()
    def plain(self, code, text):
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Replay-Nonce", "abc")
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)
    def refuse(self):
        self.send_response(status)
        self.send_header("Content-Type", "application/problem+json")
        self.send_header("Replay-Nonce", "abc")
        if retry:
            self.send_header("Retry-After", retry)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST = do_HEAD = answer
    def log_message(self, *a): pass
s = http.server.HTTPServer(("127.0.0.1", port), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
s.socket = ctx.wrap_socket(s.socket, server_side=True)
print("ready", flush=True)
s.serve_forever()
"#;
        let (cert, key) = ip_cert(dir, "fake");
        let port = free_port();
        let mut child = Command::new("python3")
            .args(["-c", SCRIPT, &port.to_string()])
            .arg(&cert)
            .arg(&key)
            .args([&status.to_string(), body, retry_after.unwrap_or("")])
            .arg(if directory { "1" } else { "0" })
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // "ready\n", the newline too: python writes it apart, and a closed pipe would stop it.
        let mut ready = [0u8; 6];
        child.stdout.take().unwrap().read_exact(&mut ready).unwrap();
        FakeCa { child, port, cert }
    }
}

impl Drop for FakeCa {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_ca_answering_garbage_or_rate_limits_is_retried_later() {
    let work = tempfile::tempdir().unwrap();
    let garbage = FakeCa::start(work.path(), 200, "<html>not a directory", None, false);
    let acme = acme_toml(
        // A name, not an address: resolved by the sandboxed process (/etc/hosts).
        &format!("https://localhost:{}/dir", garbage.port),
        &garbage.cert,
        free_port(),
        "renew_before = \"3650d\"\n",
    );
    let mut old = String::new();
    let mta = TestMta::start_config(|dir| {
        old = with_old_certificate(dir);
        base_config(dir, &acme)
    });
    mta.wait_logged(secs(60), "the garbage refused", || {
        mta.log().contains("acme: no certificate this time")
    });
    let log = mta.log();
    assert!(
        log.contains("retry_in_s=60") && log.contains("JSON"),
        "{log}"
    );
    assert_eq!(cert_sha256(&mta.data_dir().join("acme/cert.pem")), old);
    drop(mta);

    let limited = FakeCa::start(
        work.path(),
        429,
        r#"{"type":"urn:ietf:params:acme:error:rateLimited","detail":"too many certificates","status":429}"#,
        Some("7200"),
        true,
    );
    let acme = acme_toml(
        &format!("https://127.0.0.1:{}/dir", limited.port),
        &limited.cert,
        free_port(),
        "",
    );
    let mta = TestMta::start_config(|dir| base_config(dir, &acme));
    mta.wait_logged(secs(60), "the rate limit", || {
        mta.log().contains("acme: no certificate this time")
    });
    // Backed off as the CA asked (two hours), not the one minute of our own schedule.
    let log = mta.log();
    assert!(
        log.contains("retry_in_s=7200") && log.contains("rateLimited"),
        "{log}"
    );
    let status = std::fs::read_to_string(mta.data_dir().join("acme/status.json")).unwrap();
    assert!(status.contains("next_attempt"), "{status}");
}
