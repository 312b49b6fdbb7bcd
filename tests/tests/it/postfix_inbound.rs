//! A real Postfix (a private instance, `mta_tests::postfix`) relaying to `mta` on port 25
//! with `smtp_tls_security_level = encrypt`: the message lands once in mta's Maildir, and
//! mta's `Received:` says it came over TLS. Also how long a private instance takes to start.

use mta_tests::postfix::PostfixBuilder;
use mta_tests::{SmtpClient, TestMta, on_shared_port, read_delivered, secs, wait_for};

const BOB: &str = "bob@example.test";

#[test]
fn postfix_relays_to_mta_over_tls() {
    let mta = TestMta::start("");
    mta.add_user(BOB, "bob-password-1");
    let relayhost = format!("[127.0.0.1]:{}", mta.smtp_addr().port());
    let (_, postfix) = on_shared_port("postfix", |port| {
        PostfixBuilder::new("postfix.client.test", "127.0.0.2", port)
            .main_cf("relayhost", &relayhost)
            .main_cf("smtp_tls_security_level", "encrypt")
            .try_start()
    });
    eprintln!("postfix started in {:?}", postfix.start_time());
    let mut c = SmtpClient::connect(postfix.addr());
    c.reply("the greeting");
    c.expect("EHLO client.test", 250);
    let r = c.send_message(
        "someone@client.test",
        &[BOB],
        b"From: someone@client.test\r\nTo: bob@example.test\r\nSubject: via postfix\r\n\r\nhello\r\n",
    );
    assert_eq!(r.code, 250, "{}", c.transcript());
    let _ = c.send_line("QUIT");
    let files = mta.wait_for_mail(BOB, 1, 30);
    assert_eq!(files.len(), 1, "delivered once: {files:?}");
    let d = read_delivered(&files[0]);
    assert_eq!(d.return_path, "Return-Path: <someone@client.test>");
    assert!(
        d.received.starts_with("Received: from postfix.client.test"),
        "{}",
        d.received
    );
    assert!(d.received.contains("with ESMTPS"), "{}", d.received);
    // Postfix counts it sent once, over TLS: no second copy will come from a retry.
    wait_for(secs(10), "Postfix logs the delivery", || {
        postfix.log().contains("status=sent")
    });
    let log = postfix.log();
    assert_eq!(log.matches("status=sent").count(), 1, "{log}");
    assert!(
        log.contains("TLS connection established to 127.0.0.1"),
        "{log}"
    );
    assert_eq!(mta.maildir_new(BOB).len(), 1);
}
