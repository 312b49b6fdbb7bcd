//! A certificate per name (SNI): `[tls."mail.example.net"]` beside the default `[tls]`
//! pair. Clients that ask for the name get its certificate on all three listeners (25 and
//! 587 after STARTTLS, 465 at once), clients that ask for another name or none get the
//! default; a renewed named certificate is served without a reload; a certificate that does
//! not cover its name stops the start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use mta_tests::certs::{cert_sha256, self_signed, write_self_signed};
use mta_tests::{KeptDir, TestMta, run, secs, serve_expecting_failure, wait_for};

const NAMED: &str = "mail.example.net";

/// The SHA-256 (hex) of the certificate `addr` serves to a client sending `sni` (none when
/// `None`): python's ssl, after STARTTLS when `starttls`, else at once (port 465).
fn served(addr: SocketAddr, starttls: bool, sni: Option<&str>) -> String {
    const SCRIPT: &str = r#"
import hashlib, smtplib, socket, ssl, sys
port, starttls, sni = int(sys.argv[1]), sys.argv[2] == "1", sys.argv[3] or None
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
if starttls:
    s = smtplib.SMTP("127.0.0.1", port, timeout=10)
    s.ehlo("client.test")
    code, _ = s.docmd("STARTTLS")
    assert code == 220, code
    tls = ctx.wrap_socket(s.sock, server_hostname=sni)
else:
    tls = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname=sni)
print(hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest())
"#;
    let port = addr.port().to_string();
    let flag = if starttls { "1" } else { "0" };
    let out = run(
        "python3 ssl",
        Command::new("python3").args(["-c", SCRIPT, &port, flag, sni.unwrap_or("")]),
        b"",
        secs(30),
    );
    out.assert_success("python3 ssl");
    out.stdout.trim().to_string()
}

/// The SHA-256 of the certificate port 465 serves to `openssl s_client -servername NAME`.
fn served_to_openssl(addr: SocketAddr, name: &str) -> String {
    let script = format!(
        "openssl s_client -connect {addr} -servername {name} </dev/null 2>/dev/null \
         | openssl x509 -outform der | openssl dgst -sha256 -r"
    );
    let out = run(
        "openssl s_client",
        Command::new("sh").args(["-c", &script]),
        b"",
        secs(30),
    );
    out.assert_success("openssl s_client");
    out.stdout
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

fn config(default: &(PathBuf, PathBuf), named: &(PathBuf, PathBuf)) -> String {
    let s = |p: &Path| format!("{:?}", p.display().to_string());
    format!(
        "[tls]\ncert = {}\nkey = {}\n[tls.\"{NAMED}\"]\ncert = {}\nkey = {}\n",
        s(&default.0),
        s(&default.1),
        s(&named.0),
        s(&named.1)
    )
}

#[test]
fn each_listener_picks_the_certificate_by_name() {
    let dir = KeptDir::new();
    let default = self_signed(dir.path(), "default", "mx.example.test");
    let named = self_signed(dir.path(), "named", NAMED);
    let (want_default, want_named) = (cert_sha256(&default.0), cert_sha256(&named.0));
    assert_ne!(want_default, want_named);
    let mta = TestMta::start(&config(&default, &named));

    for (addr, starttls) in [
        (mta.smtp_addr(), true),
        (mta.submission_addr(), true),
        (mta.submissions_addr(), false),
    ] {
        assert_eq!(served(addr, starttls, Some(NAMED)), want_named, "{addr}");
        // Names are matched without case.
        assert_eq!(served(addr, starttls, Some("MAIL.Example.NET")), want_named);
        assert_eq!(served(addr, starttls, None), want_default, "{addr}");
        assert_eq!(
            served(addr, starttls, Some("other.example.org")),
            want_default
        );
    }
    let implicit = mta.submissions_addr();
    assert_eq!(served_to_openssl(implicit, NAMED), want_named);
    assert_eq!(served_to_openssl(implicit, "mx.example.test"), want_default);
}

#[test]
fn a_renewed_named_certificate_is_served_without_a_reload() {
    let dir = KeptDir::new();
    let default = self_signed(dir.path(), "default", "mx.example.test");
    let named = self_signed(dir.path(), "named", NAMED);
    let mta = TestMta::start(&config(&default, &named));
    let addr = mta.submissions_addr();
    assert_eq!(served(addr, false, Some(NAMED)), cert_sha256(&named.0));

    // An ACME client renews: new files moved into place (key first, then the chain).
    let (cert2, key2) = (dir.path().join("new.crt"), dir.path().join("new.key"));
    write_self_signed(&cert2, &key2, NAMED);
    let want = cert_sha256(&cert2);
    std::fs::rename(&key2, &named.1).unwrap();
    std::fs::rename(&cert2, &named.0).unwrap();
    wait_for(secs(10), "the renewed named certificate", || {
        served(addr, false, Some(NAMED)) == want
    });
    assert_eq!(served(addr, false, None), cert_sha256(&default.0));
}

#[test]
fn a_certificate_that_does_not_cover_its_name_stops_the_start() {
    let dir = KeptDir::new();
    let default = self_signed(dir.path(), "default", "mx.example.test");
    let wrong = self_signed(dir.path(), "wrong", "elsewhere.example.org");
    let text = mta_tests::base_config(dir.path(), &config(&default, &wrong));
    let (_, out) = serve_expecting_failure(dir.path(), &text);
    assert_ne!(out.code(), 0, "{}", out.all());
    assert!(
        out.all()
            .contains(&format!("for tls.\"{NAMED}\" is not valid for {NAMED}")),
        "{}",
        out.all()
    );
}
