//! `mta send` (lettre) against our submission port: a round trip, and a raw message that
//! must arrive byte for byte.

use std::process::Command;

use mta_tests::{
    ALICE, ALICE_PASSWORD, Output, TestMta, assert_same_bytes, mta_bin, queue_id, read_delivered,
    run, secs,
};

const BOB: &str = "bob@example.test";

fn server() -> TestMta {
    let mta = TestMta::start("");
    mta.add_user(ALICE, ALICE_PASSWORD);
    mta.add_user(BOB, "bob-password-1");
    mta
}

/// `mta send` to the submission port over STARTTLS, verifying our certificate for the name
/// `localhost`, as alice, with `extra` arguments and `stdin`.
pub fn mta_send(mta: &TestMta, extra: &[&str], stdin: &[u8]) -> Output {
    let cert = mta.cert_path();
    let server = mta.submission_addr().to_string();
    run(
        "mta send",
        Command::new(mta_bin())
            .args(["send", "--server", &server, "--tls", "starttls", "--cafile"])
            .arg(&cert)
            .args(["--tls-name", "localhost", "--user", ALICE, "--from", ALICE])
            .args(["--timeout", "10"])
            .args(extra)
            .env("MTA_PASSWORD", ALICE_PASSWORD),
        stdin,
        secs(30),
    )
}

#[test]
fn round_trip_over_starttls() {
    let mta = server();
    let out = mta_send(
        &mta,
        &[
            "--to",
            BOB,
            "--subject",
            "round trip",
            "--body",
            "hello bob",
        ],
        b"",
    );
    out.assert_success("mta send");
    assert!(
        out.stdout.starts_with(&format!(
            "accepted <{BOB}>: 250 2.1.5 Recipient OK\nsent to 1 of 1 recipient: 250 "
        )),
        "{out}"
    );
    let id = queue_id(out.stdout.trim());
    let files = mta.wait_for_mail(BOB, 1, 10);
    let d = read_delivered(&files[0]);
    assert!(d.received.contains(&format!(" id {id}")), "{}", d.received);
    let rest = String::from_utf8_lossy(&d.rest);
    assert!(rest.contains("Subject: round trip\r\n"), "{rest}");
    assert!(rest.contains("hello bob"), "{rest}");
}

/// A message with everything that tempts a server to touch it: lines starting with a dot,
/// lines that are only dots, 8-bit UTF-8, trailing spaces and tabs, a 998-octet line, an
/// empty last line.
pub fn tricky_message(headers: &str) -> Vec<u8> {
    let mut m = String::from(headers);
    m.push_str("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n");
    m.push_str("Content-Transfer-Encoding: 8bit\r\n\r\n");
    m.push_str(".a line that starts with a dot\r\n");
    m.push_str("..\r\n");
    m.push_str(".\r\n");
    m.push_str("...three\r\n");
    m.push_str("Grüße aus Köln — 日本語のテキスト ✓\r\n");
    m.push_str("trailing spaces   \r\n\ttab first\r\n");
    for i in 0..300 {
        m.push_str(&format!(
            "line {i:03}: the quick brown fox jumps over the lazy dog\r\n"
        ));
    }
    m.push_str(&"x".repeat(998));
    m.push_str("\r\n.\r\n\r\n");
    m.into_bytes()
}

#[test]
fn raw_message_arrives_byte_for_byte() {
    let mta = server();
    let raw = tricky_message(
        "From: Alice <alice@example.test>\r\nTo: Bob <bob@example.test>\r\n\
         Subject: raw\r\nMessage-ID: <raw-1@example.test>\r\n\
         Date: Sat, 28 Nov 2026 10:00:00 +0000\r\n",
    );
    let out = mta_send(&mta, &["--to", BOB, "--raw"], &raw);
    out.assert_success("mta send --raw");
    assert!(
        out.stdout
            .contains("\nsent to 1 of 1 recipient: 250 2.0.0 "),
        "{out}"
    );
    let id = queue_id(out.stdout.trim());

    let files = mta.wait_for_mail(BOB, 1, 10);
    assert_eq!(files.len(), 1);
    let d = read_delivered(&files[0]);
    assert_eq!(d.return_path, format!("Return-Path: <{ALICE}>"));
    assert_eq!(d.delivered_to, format!("Delivered-To: {BOB}"));
    let r = &d.received;
    assert!(
        r.starts_with("Received: from mta-send.localhost ([127.0.0.1])\r\n"),
        "{r}"
    );
    assert!(
        r.contains(&format!(
            "\r\n\tby mx.example.test (mta) with ESMTPSA id {id}"
        )),
        "{r}"
    );
    assert!(r.contains("\r\n\t(using TLSv1.3 with cipher "), "{r}");
    assert!(r.ends_with(" +0000\r\n") && r.contains(";\r\n\t"), "{r}");
    assert_same_bytes("the delivered message after our headers", &d.rest, &raw);
}

#[test]
fn send_fails_on_an_untrusted_certificate() {
    let mta = server();
    // No --cafile: the self-signed certificate is not trusted, so nothing is sent.
    let server = mta.submission_addr().to_string();
    let out = run(
        "mta send",
        Command::new(mta_bin())
            .args([
                "send", "--server", &server, "--tls", "starttls", "--user", ALICE,
            ])
            .args(["--from", ALICE, "--to", BOB, "--timeout", "10"])
            .env("MTA_PASSWORD", ALICE_PASSWORD),
        b"",
        secs(30),
    );
    assert!(!out.status.success(), "{out}");
    assert!(!out.stderr.contains("panicked"), "{out}");
    assert!(mta.queue_json()["records"].as_array().unwrap().is_empty());
}
