//! The relay harness checked on its own: DSN parsing, dnsmasq answers, the trap, the
//! dot-stuffing helpers.

use std::net::{SocketAddr, TcpStream};

use mta_tests::dsn::{content_type, parse_dsn};
use mta_tests::fake_smtp::unstuff;
use mta_tests::relay::split_first_field;
use mta_tests::{TestDns, Trap, on_shared_port, qtype, rcode, secs, wait_for};

/// A DSN shaped like docs/queue.md's example, CRLF line ends.
fn sample() -> String {
    "Return-Path: <>\n\
     Delivered-To: alice@example.org\n\
     From: Mail Delivery System <MAILER-DAEMON@mx.example.org>\n\
     To: <alice@example.org>\n\
     Subject: Undelivered Mail Returned to Sender\n\
     MIME-Version: 1.0\n\
     Content-Type: multipart/report; report-type=delivery-status;\n\
     \tboundary=\"=_mta-dsn-1\"\n\
     \n\
     This is a MIME-encapsulated message.\n\
     \n\
     --=_mta-dsn-1\n\
     Content-Type: text/plain; charset=utf-8\n\
     \n\
     <bob@example.net>: 550 5.1.1 no such user\n\
     \n\
     --=_mta-dsn-1\n\
     Content-Type: message/delivery-status\n\
     \n\
     Reporting-MTA: dns; mx.example.org\n\
     X-Mta-Queue-ID: 019375a2c4e80000beef\n\
     \n\
     Final-Recipient: rfc822; bob@example.net\n\
     Action: failed\n\
     Status: 5.1.1\n\
     Remote-MTA: dns; mx1.example.net\n\
     Diagnostic-Code: smtp; 550 5.1.1 <bob@example.net>:\n\
     \x20no such user\n\
     \n\
     Final-Recipient: rfc822; carol@example.net\n\
     Action: failed\n\
     Status: 5.1.10\n\
     \n\
     --=_mta-dsn-1\n\
     Content-Type: text/rfc822-headers\n\
     \n\
     Subject: lunch?\n\
     \n\
     --=_mta-dsn-1--\n"
        .replace('\n', "\r\n")
}

#[test]
fn parses_a_dsn() {
    let dsn = parse_dsn(sample().as_bytes()).unwrap();
    assert_eq!(dsn.boundary, "=_mta-dsn-1");
    assert_eq!(dsn.headers.expect("Return-Path"), "<>");
    assert_eq!(dsn.parts.len(), 3);
    assert_eq!(
        dsn.per_message.expect("Reporting-MTA"),
        "dns; mx.example.org"
    );
    assert_eq!(
        dsn.final_recipients(),
        ["bob@example.net", "carol@example.net"]
    );
    let bob = dsn.recipient("bob@example.net");
    assert_eq!(bob.expect("Status"), "5.1.1");
    assert_eq!(
        bob.expect("Diagnostic-Code"),
        "smtp; 550 5.1.1 <bob@example.net>: no such user"
    );
    assert_eq!(
        dsn.recipient("carol@example.net").expect("Status"),
        "5.1.10"
    );
    assert_eq!(dsn.returned_headers(), "Subject: lunch?\r\n");
    assert!(dsn.text().contains("no such user"));
}

#[test]
fn refuses_what_is_not_a_dsn() {
    let good = sample();
    for (what, bad) in [
        ("a bare LF", good.replacen("\r\n", "\n", 1)),
        (
            "another report type",
            good.replace(
                "report-type=delivery-status",
                "report-type=disposition-notification",
            ),
        ),
        ("no closing delimiter", good.replace("--=_mta-dsn-1--", "")),
        ("a bad status", good.replace("Status: 5.1.1", "Status: 550")),
        (
            "an unknown action",
            good.replace(
                "Action: failed\r\nStatus: 5.1.10",
                "Action: lost\r\nStatus: 5.1.10",
            ),
        ),
        (
            "no Reporting-MTA",
            good.replace("Reporting-MTA", "Reporting-MTB"),
        ),
        (
            "a missing part",
            good.replace(
                "Content-Type: text/rfc822-headers",
                "Content-Type: text/plain",
            ),
        ),
    ] {
        assert!(
            parse_dsn(bad.as_bytes()).is_err(),
            "{what} should not parse"
        );
    }
}

#[test]
fn splits_content_type_parameters() {
    let (mime, params) =
        content_type("Multipart/Report; report-type=delivery-status;\t boundary=\"a;b \\\"c\"");
    assert_eq!(mime, "multipart/report");
    assert_eq!(
        params,
        [
            ("report-type".to_string(), "delivery-status".to_string()),
            ("boundary".to_string(), "a;b \"c".to_string()),
        ]
    );
}

#[test]
fn dnsmasq_answers_from_its_records() {
    let dns = TestDns::start(&[
        "--mx-host=remote.test,mx1.remote.test,10",
        "--host-record=mx1.remote.test,127.0.0.2",
        "--mx-host=nullmx.test,.,0",
    ]);
    assert_eq!(dns.query("remote.test", qtype::MX), (rcode::NOERROR, 1));
    assert_eq!(dns.query("mx1.remote.test", qtype::A), (rcode::NOERROR, 1));
    assert_eq!(
        dns.query("mx1.remote.test", qtype::AAAA),
        (rcode::NOERROR, 0)
    );
    assert_eq!(dns.query("nullmx.test", qtype::MX), (rcode::NOERROR, 1));
    assert_eq!(dns.query("nowhere.test", qtype::MX).0, rcode::NXDOMAIN);
    assert!(dns.config_toml().contains(&dns.addr().to_string()));
}

#[test]
fn trap_counts_connections() {
    let (_, trap) = on_shared_port("the trap", |p| {
        Trap::listen(SocketAddr::from(([127, 0, 0, 3], p)))
    });
    assert_eq!(trap.connections(), 0);
    TcpStream::connect(trap.addr()).unwrap();
    wait_for(secs(5), "one connection at the trap", || {
        trap.connections() == 1
    });
}

#[test]
fn dot_helpers() {
    assert_eq!(unstuff(b"..\r\n.a\r\nb.\r\n"), b".\r\na\r\nb.\r\n");
    let (field, rest) = split_first_field(b"Received: a\r\n\tb\r\n c\r\nX: y\r\n", "Received");
    assert_eq!(field, "Received: a\r\n\tb\r\n c\r\n");
    assert_eq!(rest, b"X: y\r\n");
}
