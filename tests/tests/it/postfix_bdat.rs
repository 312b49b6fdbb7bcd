//! Big messages between `mta` and a real Postfix (a private instance,
//! `mta_tests::postfix`), byte for byte, each delivered once:
//!
//! - mta → Postfix: Postfix's smtpd offers CHUNKING, so a 3 MiB message goes in BDAT
//!   chunks (Postfix counts them in its `disconnect` log line) and is stored as submitted,
//!   lines starting with `.` included, below the trace fields Postfix adds;
//! - Postfix → mta: the Postfix 3.7 SMTP client has no BDAT (only its smtpd speaks
//!   CHUNKING), so it sends the same message with DATA although mta offers CHUNKING; it
//!   lands in mta's Maildir as sent, below Postfix's `Received:` and mta's trace fields;
//! - over Postfix's `message_size_limit`, the message is never sent: one bounce (`5.3.4`).

use mta_tests::dsn::read_dsn;
use mta_tests::postfix::PostfixBuilder;
use mta_tests::relay::{REMOTE_BOB, sender, start_sender, submit};
use mta_tests::{
    ALICE, MtaBuilder, SmtpClient, TestDns, assert_same_bytes, crlf, on_shared_port,
    read_delivered, secs, wait_for,
};

/// A message of about 3 MiB from `from` to `to` with lines that DATA would stuff.
fn big_message(from: &str, to: &str) -> Vec<u8> {
    let mut m = format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: three megabytes\r\n\
         Message-ID: <big@example.test>\r\nDate: Mon, 07 Dec 2026 06:00:00 +0000\r\n\r\n\
         .\r\n..x\r\n.y\r\n"
    )
    .into_bytes();
    for i in 0..40_000 {
        m.extend_from_slice(format!("{i:08} {}\r\n", "z".repeat(70)).as_bytes());
    }
    m.extend_from_slice(b".\r\nend\r\n");
    assert!(m.len() > 3 << 20, "{}", m.len());
    m
}

/// The header fields at the start of `bytes` before `rest` (which `bytes` ends with), by
/// name; panics when `bytes` does not end with `rest`.
#[track_caller]
fn fields_before(bytes: &[u8], rest: &[u8]) -> Vec<String> {
    assert!(bytes.len() >= rest.len(), "shorter than the message");
    let (head, tail) = bytes.split_at(bytes.len() - rest.len());
    assert_same_bytes("the stored message", tail, rest);
    let head = String::from_utf8_lossy(head);
    head.split("\r\n")
        .filter(|l| !l.is_empty() && !l.starts_with([' ', '\t']))
        .map(|l| l.split(':').next().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn a_3_mib_message_goes_to_postfix_in_bdat_chunks_byte_for_byte() {
    let dns = TestDns::start(&[
        "--mx-host=remote.test,mx1.remote.test,10",
        "--host-record=mx1.remote.test,127.0.0.2",
    ]);
    let (port, postfix) = on_shared_port("postfix", |port| {
        PostfixBuilder::new("mx1.remote.test", "127.0.0.2", port)
            .mailboxes(&[REMOTE_BOB])
            .try_start()
    });
    let mut tx = start_sender(sender(&dns, port, ""));
    let msg = big_message(ALICE, REMOTE_BOB);
    submit(&tx, &[REMOTE_BOB], &msg);
    let files = postfix.wait_for_mail(REMOTE_BOB, 1, secs(60));
    tx.wait_for_empty_queue(secs(30));
    // Postfix logs the commands of a session at its end: close the idle connection now.
    tx.stop();
    wait_for(secs(10), "Postfix logs the session's end", || {
        postfix.log().contains(" bdat=")
    });
    let log = postfix.log();
    assert_eq!(log.matches("status=sent").count(), 1, "{log}");
    let bdat: Vec<&str> = log.lines().filter(|l| l.contains(" bdat=")).collect();
    assert_eq!(bdat.len(), 1, "{log}");
    assert!(!bdat[0].contains(" data="), "{}", bdat[0]);
    let chunks: usize = bdat[0]
        .split(" bdat=")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(chunks >= 3, "{}", bdat[0]);
    assert_eq!(files.len(), 1, "{files:?}");
    let stored = crlf(&std::fs::read(&files[0]).unwrap());
    let trace = fields_before(&stored, &msg);
    // virtual(8)'s delivery fields, Postfix's Received and mta's own from the submission.
    let want = [
        "Return-Path",
        "X-Original-To",
        "Delivered-To",
        "Received",
        "Received",
    ];
    assert_eq!(trace, want);
}

#[test]
fn a_3_mib_message_from_postfix_lands_in_mta_byte_for_byte() {
    let bob = "bob@example.test";
    let mta = MtaBuilder::new()
        .env("RUST_LOG", "info,mta_smtp::server::conn=debug")
        .user(bob, "bob-password-1")
        .start();
    let relayhost = format!("[127.0.0.1]:{}", mta.smtp_addr().port());
    let (_, postfix) = on_shared_port("postfix", |port| {
        PostfixBuilder::new("postfix.client.test", "127.0.0.2", port)
            .main_cf("relayhost", &relayhost)
            .try_start()
    });
    let msg = big_message("someone@client.test", bob);
    let mut c = SmtpClient::connect(postfix.addr());
    c.reply("the greeting");
    c.expect("EHLO client.test", 250);
    let r = c.send_message("someone@client.test", &[bob], &msg);
    assert_eq!(r.code, 250, "{}", c.transcript());
    let _ = c.send_line("QUIT");
    let files = mta.wait_for_mail(bob, 1, 60);
    wait_for(secs(10), "Postfix logs the delivery", || {
        postfix.log().contains("status=sent")
    });
    assert_eq!(postfix.log().matches("status=sent").count(), 1);
    assert_eq!(files.len(), 1, "delivered once: {files:?}");
    let d = read_delivered(&files[0]);
    assert!(
        d.received.starts_with("Received: from postfix.client.test"),
        "{}",
        d.received
    );
    assert_eq!(fields_before(&d.rest, &msg), ["Received"]);
    assert!(
        String::from_utf8_lossy(&d.rest).starts_with("Received: from client.test"),
        "Postfix's own Received"
    );
    assert_eq!(mta.maildir_new(bob).len(), 1);
    // mta offered CHUNKING; Postfix's client sent DATA all the same.
    let log = mta.log();
    assert!(log.contains(" CHUNKING"), "{log}");
    assert!(log.contains("C: line=DATA"), "{log}");
    assert!(!log.contains("C: line=\"BDAT"), "{log}");
}

/// Postfix's `message_size_limit` below the message: its `SIZE` keyword makes mta fail the
/// recipient (`5.3.4`) without sending a chunk, and alice gets one bounce.
#[test]
fn a_message_over_postfix_size_limit_bounces_once_unsent() {
    let dns = TestDns::start(&[
        "--mx-host=remote.test,mx1.remote.test,10",
        "--host-record=mx1.remote.test,127.0.0.2",
    ]);
    let (port, postfix) = on_shared_port("postfix", |port| {
        PostfixBuilder::new("mx1.remote.test", "127.0.0.2", port)
            .mailboxes(&[REMOTE_BOB])
            .main_cf("message_size_limit", "1000000")
            .try_start()
    });
    let mut tx = start_sender(sender(&dns, port, ""));
    let msg = big_message(ALICE, REMOTE_BOB);
    submit(&tx, &[REMOTE_BOB], &msg);
    let bounces = tx.wait_for_mail(ALICE, 1, 30);
    tx.wait_for_empty_queue(secs(30));
    assert_eq!(bounces.len(), 1, "{bounces:?}");
    let dsn = read_dsn(&bounces[0]);
    let r = dsn.recipient(REMOTE_BOB);
    assert_eq!(r.expect("Action"), "failed");
    assert_eq!(r.expect("Status"), "5.3.4");
    tx.stop();
    wait_for(secs(10), "Postfix logs the session's end", || {
        postfix.log().contains("disconnect from")
    });
    let log = postfix.log();
    assert!(!log.contains(" bdat=") && !log.contains(" mail="), "{log}");
    assert!(postfix.maildir_new(REMOTE_BOB).is_empty());
    assert_eq!(tx.maildir_new(ALICE).len(), 1);
}
