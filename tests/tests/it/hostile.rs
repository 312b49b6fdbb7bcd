//! Hostile clients against a real server: a forged `From:` header on submission, password
//! guessing, too many connections from one address, and a mail loop. Each asserts the reply
//! and that nothing was queued.

use mta_tests::{ALICE, ALICE_PASSWORD, SmtpClient, TestMta};

const BOB: &str = "bob@example.test";

fn server() -> TestMta {
    let mta = TestMta::start("");
    mta.add_user(ALICE, ALICE_PASSWORD);
    mta.add_user(BOB, "bob-password-1");
    mta
}

fn queued(mta: &TestMta) -> usize {
    mta.queue_json()["records"].as_array().map_or(0, Vec::len)
}

fn logged_in(mta: &TestMta) -> SmtpClient {
    let mut c = SmtpClient::connect_tls(mta.submissions_addr(), &mta.cert_path());
    c.reply("the greeting");
    c.expect("EHLO client.test", 250);
    let auth = c.auth_plain(ALICE, ALICE_PASSWORD);
    assert_eq!(auth.code, 235, "{}", c.transcript());
    c
}

#[test]
fn submission_refuses_a_from_header_that_is_not_the_users() {
    let mta = server();
    let table: &[(&str, u16)] = &[
        (
            "From: Bob <bob@example.test>\r\nSubject: forged\r\n\r\nhi\r\n",
            550,
        ),
        (
            "From: alice@example.test, bob@example.test\r\nSubject: two\r\n\r\nhi\r\n",
            550,
        ),
        (
            "Sender: alice@example.test\r\nFrom: bob@example.test\r\n\r\nhi\r\n",
            550,
        ),
        ("Subject: no from\r\n\r\nhi\r\n", 550),
        (
            "From: \"Alice\" <ALICE@example.test>\r\nSubject: mine\r\n\r\nhi\r\n",
            250,
        ),
    ];
    for (message, want) in table {
        let mut c = logged_in(&mta);
        let reply = c.send_message(ALICE, &[BOB], message.as_bytes());
        assert_eq!(reply.code, *want, "{message:?}\n{}", c.transcript());
        if *want == 550 {
            assert!(
                reply.matches(550, Some("5.7.1")) || reply.matches(550, Some("5.6.0")),
                "{reply}"
            );
        }
    }
    assert!(queued(&mta) <= 1, "only the honest message may be queued");
    assert_eq!(mta.wait_for_mail(BOB, 1, 10).len(), 1);
}

#[test]
fn password_guessing_is_cut_off() {
    let mta = server();
    for i in 0..5 {
        let mut c = SmtpClient::connect_tls(mta.submissions_addr(), &mta.cert_path());
        c.reply("the greeting");
        c.expect("EHLO client.test", 250);
        let r = c.auth_plain(ALICE, &format!("wrong-{i}"));
        assert!(r.matches(535, Some("5.7.8")), "attempt {i}: {r}");
    }
    // Even the right password is refused during the cool-off, and the connection closes.
    let mut c = SmtpClient::connect_tls(mta.submissions_addr(), &mta.cert_path());
    c.reply("the greeting");
    c.expect("EHLO client.test", 250);
    let r = c.auth_plain(ALICE, ALICE_PASSWORD);
    assert!(r.matches(421, Some("4.7.0")), "{r}");
    assert!(c.is_closed());
    let log = mta.log();
    assert!(log.contains("authentication failed"), "failures are logged");
    assert!(!log.contains("wrong-0"), "passwords never reach the log");
}

#[test]
fn one_address_gets_at_most_twenty_sessions() {
    let mta = server();
    let mut open = Vec::new();
    for i in 0..20 {
        let mut c = SmtpClient::connect(mta.smtp_addr());
        let r = c.reply("the greeting");
        assert_eq!(r.code, 220, "session {i}");
        open.push(c);
    }
    let mut extra = SmtpClient::connect(mta.smtp_addr());
    let r = extra.reply("the refusal");
    assert!(r.matches(421, Some("4.7.0")), "{r}");
    drop(open);
    mta_tests::wait_for(
        mta_tests::secs(10),
        "a session slot to be free again",
        || {
            let mut c = SmtpClient::connect(mta.smtp_addr());
            c.reply("the greeting").code == 220
        },
    );
}

#[test]
fn a_message_with_too_many_received_headers_is_a_loop() {
    let mta = server();
    let mut message =
        "Received: from a.test by b.test; Sat, 28 Nov 2026 10:00:00 +0000\r\n".repeat(51);
    message.push_str("From: x@remote.test\r\nSubject: loop\r\n\r\nround and round\r\n");
    let mut c = SmtpClient::connect(mta.smtp_addr());
    c.reply("the greeting");
    c.expect("EHLO client.test", 250);
    let r = c.send_message("x@remote.test", &[BOB], message.as_bytes());
    assert!(r.matches(554, Some("5.4.6")), "{r}\n{}", c.transcript());
    assert_eq!(queued(&mta), 0);
}

/// SMTP smuggling (SEC Consult 2023): each of the nine non-standard endings, followed by a
/// smuggled second transaction, must neither end the message nor start a transaction. The
/// message is refused, the connection closed, and nothing is queued or delivered.
#[test]
fn smuggling_endings_are_refused_and_nothing_is_queued() {
    let mta = server();
    let endings: [&[u8]; 9] = [
        b"\n.\n",
        b"\r.\r",
        b"\r.\n",
        b"\n.\r",
        b"\n.\r\n",
        b"\r\n.\n",
        b"\r.\r\n",
        b"\r\n.\r",
        b"\r\n\0.\r\n",
    ];
    for ending in endings {
        let mut c = SmtpClient::connect(mta.smtp_addr());
        c.reply("the greeting");
        c.expect("EHLO client.test", 250);
        c.expect("MAIL FROM:<someone@remote.test>", 250);
        c.expect("RCPT TO:<bob@example.test>", 250);
        c.expect("DATA", 354);
        let mut data = b"From: someone@remote.test\r\nSubject: innocent\r\n\r\nhello".to_vec();
        data.extend_from_slice(ending);
        data.extend_from_slice(
            b"MAIL FROM:<admin@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n\
              From: admin@example.test\r\nSubject: smuggled\r\n\r\nevil\r\n.\r\n",
        );
        c.send_raw(&data).unwrap();
        let r = c.reply("the refusal");
        assert!(r.code >= 500, "ending {ending:?}: {}", c.transcript());
        assert!(c.is_closed(), "ending {ending:?}: {}", c.transcript());
    }
    assert_eq!(queued(&mta), 0);
    assert!(mta.maildir_new(BOB).is_empty());
}

/// The classic open-relay tricks on port 25, without AUTH: none may relay. Mailboxes that
/// are ours in another spelling (case, IDNA) are accepted as local, never relayed.
#[test]
fn open_relay_tricks_on_port_25_all_fail() {
    let mta = server();
    let table: &[(&str, u16)] = &[
        ("<bob%remote.test@example.test>", 550),
        ("<@example.test:bob@remote.test>", 550),
        ("<\"bob@remote.test\"@example.test>", 550),
        ("<remote.test!bob@example.test>", 550),
        ("<bob@remote.test.>", 501),
        ("<bob@[127.0.0.1]>", 550),
        ("<bob@remote.test>", 550),
        ("<BOB@EXAMPLE.TEST>", 250),
    ];
    let mut c = SmtpClient::connect(mta.smtp_addr());
    c.reply("the greeting");
    c.expect("EHLO client.test", 250);
    c.expect("MAIL FROM:<someone@remote.test>", 250);
    for (path, want) in table {
        let r = c.command(&format!("RCPT TO:{path}"));
        assert_eq!(r.code, *want, "{path}: {r}");
    }
    c.expect("RSET", 250);
    assert_eq!(queued(&mta), 0);
}

/// Pipelining desync (RFC 2920 §3.1): message text sent with DATA, before our 354, is not
/// taken as a message; nothing is queued and the connection is closed.
#[test]
fn text_sent_before_354_is_not_a_message() {
    let mta = server();
    let mut c = SmtpClient::connect(mta.smtp_addr());
    c.reply("the greeting");
    c.expect("EHLO client.test", 250);
    c.send_raw(
        b"MAIL FROM:<someone@remote.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n\
          From: someone@remote.test\r\nSubject: early\r\n\r\ntoo soon\r\n.\r\n",
    )
    .unwrap();
    assert_eq!(c.reply("MAIL").code, 250);
    assert_eq!(c.reply("RCPT").code, 250);
    let r = c.reply("DATA");
    assert!(r.matches(554, Some("5.5.0")), "{r}\n{}", c.transcript());
    assert!(c.is_closed());
    assert_eq!(queued(&mta), 0);
}

/// No command lets a client claim another address or identity.
#[test]
fn xclient_and_friends_do_not_exist() {
    let mta = server();
    let mut c = SmtpClient::connect(mta.smtp_addr());
    c.reply("the greeting");
    let ehlo = c.expect("EHLO client.test", 250);
    assert!(!ehlo.to_string().contains("XCLIENT"), "{ehlo}");
    for cmd in [
        "XCLIENT ADDR=192.0.2.1 LOGIN=alice",
        "XFORWARD ADDR=192.0.2.1",
        "ETRN example.test",
        "TURN",
        "ATRN",
    ] {
        let r = c.command(cmd);
        assert!(r.matches(500, Some("5.5.1")), "{cmd}: {r}");
    }
    // Still port 25 rules: no relaying.
    c.expect("MAIL FROM:<someone@remote.test>", 250);
    assert_eq!(c.command("RCPT TO:<x@remote.test>").code, 550);
}

/// A client that sends nothing, or trickles one byte at a time, is dropped once the
/// command timeout passes for a line.
#[test]
fn silent_and_trickling_clients_are_dropped() {
    let mta = TestMta::start("[limits]\ncommand_timeout = \"1s\"\n");
    let mut silent = SmtpClient::connect(mta.smtp_addr());
    silent.reply("the greeting");
    let r = silent.reply("the timeout");
    assert!(r.matches(421, Some("4.4.2")), "{r}");
    assert!(silent.is_closed());

    let mut slow = SmtpClient::connect(mta.smtp_addr());
    slow.reply("the greeting");
    for b in b"NOOP\r\n" {
        if slow.send_raw(&[*b]).is_err() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let r = slow.reply("the timeout");
    assert!(
        r.matches(421, Some("4.4.2")),
        "a line may not take longer than the timeout: {r}"
    );
}
