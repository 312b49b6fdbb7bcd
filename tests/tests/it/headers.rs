//! What reception adds to a message: on submission a `Message-ID` and `Date` when the
//! client left them out (RFC 6409 §8); on port 25 nothing but our `Received`. The messages
//! go through our own client, which sends the bytes exactly.

use mta_tests::{
    ALICE, ALICE_PASSWORD, SmtpClient, TestMta, assert_same_bytes, queue_id, read_delivered,
};

use crate::send::tricky_message;

const BOB: &str = "bob@example.test";
const BARE: &str = "From: alice@example.test\r\nTo: bob@example.test\r\nSubject: bare\r\n";

fn server() -> TestMta {
    let mta = TestMta::start("");
    mta.add_user(ALICE, ALICE_PASSWORD);
    mta.add_user(BOB, "bob-password-1");
    mta
}

/// Submits `message` from alice to bob over implicit TLS; returns the queue id.
fn submit(mta: &TestMta, message: &[u8]) -> String {
    let mut c = SmtpClient::connect_tls(mta.submissions_addr(), &mta.cert_path());
    c.reply("the greeting");
    c.expect("EHLO client.test", 250);
    let auth = c.auth_plain(ALICE, ALICE_PASSWORD);
    assert_eq!(auth.code, 235, "{}", c.transcript());
    let reply = c.send_message(ALICE, &[BOB], message);
    assert_eq!(reply.code, 250, "{}", c.transcript());
    c.expect("QUIT", 221);
    queue_id(&reply.to_string())
}

#[test]
fn submission_adds_message_id_and_date_when_missing() {
    let mta = server();
    let raw = tricky_message(BARE);
    let id = submit(&mta, &raw);
    let files = mta.wait_for_mail(BOB, 1, 10);
    let d = read_delivered(&files[0]);
    assert!(
        d.received.contains(&format!("with ESMTPSA id {id}")),
        "{}",
        d.received
    );
    let message_id = format!("Message-ID: <{id}@mx.example.test>\r\n");
    let rest = d.rest.as_slice();
    assert!(
        rest.starts_with(message_id.as_bytes()),
        "expected {message_id:?} first, got {:?}",
        String::from_utf8_lossy(&rest[..rest.len().min(200)])
    );
    let rest = &rest[message_id.len()..];
    let date_end = rest
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|i| i + 2)
        .expect("a Date line");
    let date = String::from_utf8_lossy(&rest[..date_end]);
    assert!(
        date.starts_with("Date: ") && date.ends_with(" +0000\r\n"),
        "{date:?}"
    );
    assert_same_bytes(
        "the message after Message-ID and Date",
        &rest[date_end..],
        &raw,
    );
}

#[test]
fn submission_keeps_the_clients_message_id_and_date() {
    let mta = server();
    // Any case is the same field name (RFC 5322 §1.2.2).
    let raw = tricky_message(
        "From: alice@example.test\r\nmessage-id: <mine@example.test>\r\n\
         DATE: Sat, 28 Nov 2026 10:00:00 +0000\r\n",
    );
    submit(&mta, &raw);
    let files = mta.wait_for_mail(BOB, 1, 10);
    assert_same_bytes(
        "the message after Received",
        &read_delivered(&files[0]).rest,
        &raw,
    );
}

#[test]
fn smtp_port_adds_nothing() {
    let mta = server();
    let raw = tricky_message(BARE);
    let mut c = SmtpClient::connect(mta.smtp_addr());
    c.reply("the greeting");
    c.expect("EHLO client.test", 250);
    let reply = c.send_message("someone@remote.test", &[BOB], &raw);
    assert_eq!(reply.code, 250, "{}", c.transcript());
    let id = queue_id(&reply.to_string());
    c.expect("QUIT", 221);
    let files = mta.wait_for_mail(BOB, 1, 10);
    let d = read_delivered(&files[0]);
    assert_eq!(d.return_path, "Return-Path: <someone@remote.test>");
    assert!(
        d.received
            .contains(&format!("\tby mx.example.test (mta) with ESMTP id {id}")),
        "{}",
        d.received
    );
    assert!(!d.received.contains("using TLS"), "{}", d.received);
    // Its From: names our own domain and nothing vouches for it (checks are off here): the
    // mark is the one field added; the message itself is untouched.
    let mut want =
        b"X-Spoofed-From: example.test (neither SPF nor DKIM of example.test passed)\r\n".to_vec();
    want.extend_from_slice(&raw);
    assert_same_bytes("the message after Received", &d.rest, &want);
}
