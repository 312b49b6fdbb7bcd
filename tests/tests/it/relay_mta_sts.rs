//! MTA-STS (RFC 8461) end to end: dnsmasq publishes `_mta-sts.remote.test`, a Python HTTPS
//! server on loopback serves the policy (its certificate trusted through
//! `outbound.mta_sts_ca_file`), and the sender enforces it: delivery to a listed MX over
//! verified TLS, deferral (`4.7.5`) for an MX the policy does not list or a certificate that
//! does not verify, delivery with a warning in `testing` mode, the cached policy still in
//! force after a restart when the policy server is gone, and a TXT `id` with line breaks
//! ignored before it can reach the cache file.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use mta_tests::relay::{REMOTE_BOB, message, sender, start_sender, submit, try_remote_receiver};
use mta_tests::{KeptDir, TestDns, TestMta, on_shared_port, secs, wait_for};

use crate::dkim::txt_record;

const SERVER: &str = r#"
import http.server, ssl, sys
cert, key, policy = sys.argv[1:4]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path != '/.well-known/mta-sts.txt':
            self.send_response(404); self.end_headers(); return
        body = open(policy, 'rb').read()
        self.send_response(200)
        self.send_header('Content-Type', 'text/plain')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, fmt, *args):
        sys.stderr.write('GET\n'); sys.stderr.flush()
srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;

/// The policy server: a Python HTTPS server for `mta-sts.remote.test`, killed on drop.
pub(crate) struct PolicyServer {
    child: Child,
    port: u16,
    ca: PathBuf,
}

impl PolicyServer {
    pub(crate) fn start(dir: &Path, policy: &str) -> PolicyServer {
        let (cert, key) = mta_tests::certs::self_signed(dir, "sts", "mta-sts.remote.test");
        let file = dir.join("mta-sts.txt");
        std::fs::write(&file, policy).unwrap();
        let mut child = Command::new("python3")
            .args(["-c", SERVER])
            .arg(&cert)
            .arg(&key)
            .arg(&file)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("the port line");
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("bad port line {line:?}"));
        PolicyServer {
            child,
            port,
            ca: cert,
        }
    }

    pub(crate) fn outbound_keys(&self) -> String {
        format!(
            "mta_sts_port = {}\nmta_sts_ca_file = {:?}\n",
            self.port,
            self.ca.display().to_string()
        )
    }
}

impl Drop for PolicyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dns() -> TestDns {
    TestDns::start(&[
        "--mx-host=remote.test,mx1.remote.test,10",
        "--host-record=mx1.remote.test,127.0.0.2",
        "--host-record=mta-sts.remote.test,127.0.0.1",
        &txt_record("_mta-sts.remote.test", "v=STSv1; id=20261129"),
    ])
}

fn policy(mode: &str, mx: &str) -> String {
    format!("version: STSv1\nmode: {mode}\nmx: {mx}\nmax_age: 86400\n")
}

/// The `[outbound.tls."remote.test"]` table trusting the receiver's own certificate.
fn trusting(rx: &TestMta) -> String {
    format!(
        "[outbound.tls.\"remote.test\"]\nmode = \"opportunistic\"\nca_file = {:?}\n",
        rx.cert_path().display().to_string()
    )
}

fn last_result(tx: &TestMta, id: &str) -> String {
    let entry = tx.wait_for_deferral(id, REMOTE_BOB, 1, secs(20));
    entry["last_result"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn enforce_delivers_to_a_listed_mx_and_survives_the_policy_server() {
    let dir = KeptDir::new();
    let web = PolicyServer::start(dir.path(), &policy("enforce", "*.remote.test"));
    let dns = dns();
    let (port, rx) = on_shared_port("the receiver", |p| {
        try_remote_receiver("mx1.remote.test", "127.0.0.2", p)
    });
    let mut tx = start_sender(sender(&dns, port, &web.outbound_keys()).toml(&trusting(&rx)));
    submit(&tx, &[REMOTE_BOB], &message(REMOTE_BOB, "enforced"));
    rx.wait_for_mail(REMOTE_BOB, 1, 10);
    wait_for(secs(10), "the delivery under MTA-STS", || {
        tx.log().contains(" verified policy=mta-sts")
    });
    assert!(tx.log().contains("MTA-STS policy fetched"), "{}", tx.log());
    let cached = tx.data_dir().join("mta-sts").join("remote.test");
    assert!(
        std::fs::read_to_string(&cached)
            .unwrap()
            .contains("mode: enforce")
    );

    // The policy server goes away and the sender restarts: the cached policy still holds.
    drop(web);
    tx.restart();
    submit(&tx, &[REMOTE_BOB], &message(REMOTE_BOB, "still enforced"));
    rx.wait_for_mail(REMOTE_BOB, 2, 10);
    wait_for(secs(10), "the second delivery under MTA-STS", || {
        tx.log().matches(" verified policy=mta-sts").count() >= 2
    });
}

#[test]
fn enforce_defers_an_unlisted_mx_and_an_unverified_certificate() {
    let dir = KeptDir::new();
    let web = PolicyServer::start(dir.path(), &policy("enforce", "mx9.remote.test"));
    let dns = dns();
    let (port, rx) = on_shared_port("the receiver", |p| {
        try_remote_receiver("mx1.remote.test", "127.0.0.2", p)
    });
    let tx = start_sender(sender(&dns, port, &web.outbound_keys()).toml(&trusting(&rx)));
    let id = submit(&tx, &[REMOTE_BOB], &message(REMOTE_BOB, "unlisted"));
    let last = last_result(&tx, &id);
    assert!(
        last.starts_with("4.7.5 MTA-STS: no MX host of remote.test matches"),
        "{last}"
    );
    assert!(rx.maildir_new(REMOTE_BOB).is_empty());

    // Listed, but the receiver's certificate is not trusted (no ca_file).
    std::fs::write(
        dir.path().join("mta-sts.txt"),
        policy("enforce", "mx1.remote.test"),
    )
    .unwrap();
    let dns2 = TestDns::start(&[
        "--mx-host=remote.test,mx1.remote.test,10",
        "--host-record=mx1.remote.test,127.0.0.2",
        "--host-record=mta-sts.remote.test,127.0.0.1",
        &txt_record("_mta-sts.remote.test", "v=STSv1; id=2"),
    ]);
    let tx2 = start_sender(sender(&dns2, port, &web.outbound_keys()));
    let id = submit(&tx2, &[REMOTE_BOB], &message(REMOTE_BOB, "unverified"));
    let last = last_result(&tx2, &id);
    assert!(
        last.starts_with("4.7.5 ") && last.contains("policy=mta-sts"),
        "{last}"
    );
    assert!(
        rx.maildir_new(REMOTE_BOB).is_empty(),
        "never sent without verified TLS"
    );
}

#[test]
fn testing_mode_delivers_and_warns() {
    let dir = KeptDir::new();
    let web = PolicyServer::start(dir.path(), &policy("testing", "mx1.remote.test"));
    let dns = dns();
    let (port, rx) = on_shared_port("the receiver", |p| {
        try_remote_receiver("mx1.remote.test", "127.0.0.2", p)
    });
    // The receiver's certificate does not verify: enforce would refuse, testing delivers.
    let tx = start_sender(sender(&dns, port, &web.outbound_keys()));
    submit(&tx, &[REMOTE_BOB], &message(REMOTE_BOB, "testing"));
    rx.wait_for_mail(REMOTE_BOB, 1, 10);
    wait_for(secs(10), "the testing-mode warning", || {
        tx.log()
            .contains("MTA-STS testing: enforce mode would have refused this delivery")
    });
    assert!(tx.log().contains("policy=opportunistic"), "{}", tx.log());
}

#[test]
fn an_id_with_line_breaks_is_ignored_and_never_reaches_the_cache_file() {
    // RFC 8461 §3.1: sts-id = 1*32(ALPHA / DIGIT). This one would add an `mx:` line of the
    // attacker's to the cached policy, in force after the next restart.
    let dir = KeptDir::new();
    let web = PolicyServer::start(dir.path(), &policy("enforce", "*.remote.test"));
    let dns = TestDns::start(&[
        "--mx-host=remote.test,mx1.remote.test,10",
        "--host-record=mx1.remote.test,127.0.0.2",
        "--host-record=mta-sts.remote.test,127.0.0.1",
        &crate::relay_tlsrpt::txt_rr(
            "_mta-sts.remote.test",
            "v=STSv1; id=1\nmx: evil.example\nfetched_at: 99999999999",
        ),
    ]);
    let (port, rx) = on_shared_port("the receiver", |p| {
        try_remote_receiver("mx1.remote.test", "127.0.0.2", p)
    });
    let tx = start_sender(sender(&dns, port, &web.outbound_keys()).toml(&trusting(&rx)));
    submit(&tx, &[REMOTE_BOB], &message(REMOTE_BOB, "no policy"));
    rx.wait_for_mail(REMOTE_BOB, 1, 10);
    tx.wait_for_empty_queue(secs(10));
    let cached = tx.data_dir().join("mta-sts").join("remote.test");
    let text = std::fs::read_to_string(&cached).unwrap_or_default();
    assert!(
        !text.contains("evil"),
        "the cache file was injected:\n{text}"
    );
    assert!(!cached.exists(), "no valid record, no policy:\n{text}");
    let log = tx.log();
    assert!(log.contains("the TXT record has no valid id"), "{log}");
    assert!(!log.lines().any(|l| l.starts_with("mx: evil")), "{log}");
}
