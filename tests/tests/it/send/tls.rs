//! `mta send` and TLS: a wrong TLS mode fails within `--timeout` and says which mode to use;
//! certificate failures say which option fixes them; `--insecure` skips the name check as
//! well as the chain; without a port, the TLS mode picks 25, 587 or 465.

use std::net::SocketAddr;

use mta_tests::Trap;
use mta_tests::certs::ca_and_leaf;
use mta_tests::system::is_root;
use mta_tests::{ALICE, ALICE_PASSWORD, MtaBuilder};

use super::{BOB, send, server};

fn pw() -> [(&'static str, &'static str); 1] {
    [("MTA_PASSWORD", ALICE_PASSWORD)]
}

#[test]
fn starttls_against_an_implicit_tls_port_ends_within_the_timeout_in_words() {
    let mta = server();
    let port = mta.submissions_addr().to_string();
    let cert = mta.cert_path();
    let out = send(
        &[
            "--server",
            &port,
            "--tls",
            "starttls",
            "--cafile",
            cert.to_str().unwrap(),
            "--tls-name",
            "localhost",
            "--user",
            ALICE,
            "--from",
            ALICE,
            "--to",
            BOB,
            "--timeout",
            "5",
        ],
        &pw(),
        b"",
    );
    assert_eq!(out.code(), 21, "{out}");
    assert!(
        out.stderr
            .contains("no greeting from the server within 5 s"),
        "{out}"
    );
    assert!(out.stderr.contains("use --tls implicit"), "{out}");
}

#[test]
fn implicit_tls_against_a_starttls_port_says_so() {
    let mta = server();
    let port = mta.submission_addr().to_string();
    let cert = mta.cert_path();
    let out = send(
        &[
            "--server",
            &port,
            "--tls",
            "implicit",
            "--cafile",
            cert.to_str().unwrap(),
            "--tls-name",
            "localhost",
            "--from",
            ALICE,
            "--to",
            BOB,
            "--timeout",
            "5",
        ],
        &[],
        b"",
    );
    assert_eq!(out.code(), 29, "{out}");
    assert!(
        out.stderr.contains("the server answered in plaintext"),
        "{out}"
    );
    assert!(out.stderr.contains("220 "), "{out}");
    assert!(out.stderr.contains("use --tls starttls"), "{out}");
}

#[test]
fn an_unknown_issuer_names_cafile_and_insecure() {
    let mta = server();
    let port = mta.submission_addr().to_string();
    let out = send(
        &[
            "--server",
            &port,
            "--tls-name",
            "localhost",
            "--from",
            ALICE,
            "--to",
            BOB,
        ],
        &[],
        b"",
    );
    assert_eq!(out.code(), 29, "{out}");
    assert!(out.stderr.contains("signed by an unknown issuer"), "{out}");
    assert!(out.stderr.contains("use --cafile FILE"), "{out}");
    assert!(out.stderr.contains("--insecure"), "{out}");
}

#[test]
fn insecure_skips_the_name_check_too() {
    let mta = server();
    let port = mta.submission_addr().to_string();
    let cert = mta.cert_path();
    // The certificate does not name wrong.example.test.
    let common = [
        "--server",
        &port,
        "--tls-name",
        "wrong.example.test",
        "--to",
        BOB,
    ];
    let login = ["--user", ALICE, "--from", ALICE];
    let out = send(&[&common[..], &login, &["--insecure"]].concat(), &pw(), b"");
    out.assert_success("mta send --insecure --tls-name wrong.example.test");
    assert!(
        out.stdout.contains("sent to 1 of 1 recipient: 250 "),
        "{out}"
    );

    // Verified, the same name is refused in words.
    let cafile = ["--cafile", cert.to_str().unwrap()];
    let out = send(&[&common[..], &login, &cafile].concat(), &pw(), b"");
    assert_eq!(out.code(), 29, "{out}");
    let want = "not valid for \"wrong.example.test\" (it names ";
    assert!(out.stderr.contains(want), "{out}");
    assert!(out.stderr.contains("use --tls-name NAME"), "{out}");
}

#[test]
fn a_ca_certificate_presented_as_the_server_certificate_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, _chain, _key) = ca_and_leaf(dir.path(), "send", "localhost");
    let ca_key = dir.path().join("send-ca.key");
    let mta = MtaBuilder::new()
        .toml(&format!(
            "[tls]\ncert = {:?}\nkey = {:?}\n",
            ca.display().to_string(),
            ca_key.display().to_string()
        ))
        .start();
    let port = mta.submission_addr().to_string();
    let out = send(
        &[
            "--server",
            &port,
            "--cafile",
            ca.to_str().unwrap(),
            "--tls-name",
            "localhost",
            "--from",
            ALICE,
            "--to",
            BOB,
        ],
        &[],
        b"",
    );
    assert_eq!(out.code(), 29, "{out}");
    assert!(out.stderr.contains("presents a CA certificate"), "{out}");
    assert!(
        out.stderr.contains("a certificate issued by that CA"),
        "{out}"
    );
}

#[test]
fn without_a_port_the_tls_mode_picks_it() {
    // Ports 25, 587 and 465 need root; CI runs the suite as root, and a run that cannot bind
    // them fails rather than passing untested.
    assert!(
        is_root(),
        "without_a_port_the_tls_mode_picks_it needs root (ports 25, 587, 465)"
    );
    // A loopback address of its own, so that no other test's server is on these ports.
    let host = "127.0.0.61";
    for (mode, port) in [("none", 25), ("starttls", 587), ("implicit", 465)] {
        let addr: SocketAddr = format!("{host}:{port}").parse().unwrap();
        let trap = Trap::listen(addr).unwrap_or_else(|e| panic!("{e}"));
        let out = send(
            &[
                "--server",
                host,
                "--tls",
                mode,
                "--insecure",
                "--from",
                ALICE,
                "--to",
                BOB,
            ]
            .into_iter()
            .filter(|a| mode != "none" || *a != "--insecure")
            .collect::<Vec<_>>(),
            &[],
            b"",
        );
        // The trap hangs up at once: the greeting or the handshake fails, after connecting.
        assert!(matches!(out.code(), 21 | 29), "{mode}: {out}");
        assert_eq!(
            trap.connections(),
            1,
            "--tls {mode} should connect to port {port}: {out}"
        );
    }
}

/// A server that sends its greeting one octet every half second, never ending the line:
/// `--timeout` bounds the whole reply, not each read, so this ends after 2 s, not when the
/// line limit is reached half an hour later.
#[test]
fn a_trickling_server_cannot_stretch_the_timeout() {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let Ok((mut conn, _)) = listener.accept() else {
            return;
        };
        let _ = conn.write_all(b"220");
        // Bounded: 120 octets, one minute at most.
        for _ in 0..120 {
            std::thread::sleep(std::time::Duration::from_millis(500));
            if conn.write_all(b"a").is_err() {
                break;
            }
        }
    });
    let out = send(
        &[
            "--server",
            &addr,
            "--tls",
            "none",
            "--from",
            ALICE,
            "--to",
            BOB,
            "--timeout",
            "2",
        ],
        &[],
        b"",
    );
    assert_eq!(out.code(), 21, "{out}");
    assert!(
        out.stderr
            .contains("no greeting from the server within 2 s"),
        "{out}"
    );
}
