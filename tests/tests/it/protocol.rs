//! Protocol cases a dialog file cannot express: raw bytes (bare LF, long lines, big
//! messages), pipelined writes, and data sent before a TLS handshake.

use mta_tests::{ALICE, ALICE_PASSWORD, SmtpClient, TestMta};

/// A server with alice and the smallest message size limit allowed.
fn server() -> TestMta {
    let mta = TestMta::start("[limits]\nmax_message_size = 1024\n");
    mta.add_user(ALICE, ALICE_PASSWORD);
    mta
}

fn connect(mta: &TestMta) -> SmtpClient {
    let mut c = SmtpClient::connect(mta.smtp_addr());
    c.reply("the greeting");
    c.expect("EHLO client.test", 250);
    c
}

fn assert_queue_empty(mta: &TestMta) {
    let queue = mta.queue_json();
    assert!(
        queue["records"].as_array().unwrap().is_empty(),
        "nothing may be queued: {queue}"
    );
    assert!(mta.maildir_new(ALICE).is_empty());
}

#[test]
fn bare_lf_in_data_is_refused_and_the_connection_closed() {
    // SMTP smuggling: `\n.\r\n` must not end the message, nor anything after it be read as
    // commands.
    let mta = server();
    let mut c = connect(&mta);
    c.expect("MAIL FROM:<someone@remote.test>", 250);
    c.expect("RCPT TO:<alice@example.test>", 250);
    c.expect("DATA", 354);
    c.send_raw(
        b"Subject: smuggled\r\n\r\nhello\n.\r\nMAIL FROM:<evil@remote.test>\r\n\
          RCPT TO:<alice@example.test>\r\nDATA\r\nevil\r\n.\r\n",
    )
    .unwrap();
    let reply = c.reply("the reply to a bare LF");
    assert!(reply.matches(550, Some("5.6.0")), "{}", c.transcript());
    assert!(c.is_closed(), "{}", c.transcript());
    assert_queue_empty(&mta);
}

#[test]
fn too_big_message_is_refused_after_its_end() {
    let mta = server();
    let mut c = connect(&mta);
    let mut message = b"Subject: big\r\n\r\n".to_vec();
    for _ in 0..40 {
        message.extend_from_slice(b"0123456789012345678901234567890123456789\r\n");
    }
    let reply = c.send_message("someone@remote.test", &[ALICE], &message);
    assert!(reply.matches(552, Some("5.3.4")), "{}", c.transcript());
    // Read to the dot, so the dialogue is still in step.
    c.expect("NOOP", 250);
    c.expect("QUIT", 221);
    assert_queue_empty(&mta);
}

/// Sends a message whose body is the one line `line` (without CRLF) to alice on a server
/// with the default size limit; returns the reply to the final dot and the client.
fn send_line(line: &[u8]) -> (TestMta, SmtpClient, mta_tests::Reply) {
    let mta = TestMta::start("");
    mta.add_user(ALICE, ALICE_PASSWORD);
    let mut c = connect(&mta);
    let mut message = b"Subject: long\r\n\r\n".to_vec();
    message.extend_from_slice(line);
    message.extend_from_slice(b"\r\n");
    let reply = c.send_message("someone@remote.test", &[ALICE], &message);
    (mta, c, reply)
}

#[test]
fn line_over_1000_octets_in_data_is_refused() {
    // RFC 5321 §4.5.3.1.6: a text line is at most 1000 octets with its CRLF.
    let (mta, mut c, reply) = send_line(&[b'x'; 2000]);
    assert!(
        reply.matches(550, Some("5.6.0")),
        "expected 550 5.6.0 for a 2002-octet line, got {reply}\n{}",
        c.transcript()
    );
    c.expect("NOOP", 250);
    assert_queue_empty(&mta);
}

#[test]
fn line_of_1001_octets_in_data_is_refused() {
    // The boundary: 999 octets and CRLF is one over the limit. The dot-stuffing allowance
    // applies only to lines that start with a dot (next test).
    let (mta, mut c, reply) = send_line(&[b'x'; 999]);
    assert!(
        reply.matches(550, Some("5.6.0")),
        "expected 550 5.6.0 for a 1001-octet line (999 + CRLF), got {reply}\n{}",
        c.transcript()
    );
    c.expect("NOOP", 250);
    assert_queue_empty(&mta);
}

#[test]
fn line_of_1000_octets_starting_with_a_dot_is_accepted() {
    // ".xxx…" (998 octets + CRLF = 1000) is 1001 on the wire after dot-stuffing: allowed
    // ("not counting the leading dot duplicated for transparency").
    let mut line = vec![b'.'];
    line.extend_from_slice(&[b'x'; 997]);
    let (mta, c, reply) = send_line(&line);
    assert_eq!(reply.code, 250, "{}", c.transcript());
    let files = mta.wait_for_mail(ALICE, 1, 10);
    let d = mta_tests::read_delivered(&files[0]);
    assert!(d.rest.ends_with(&[&line[..], b"\r\n"].concat()));
}

#[test]
fn pipelined_commands_get_replies_in_order() {
    // RFC 2920: several commands in one write, replies in the same order.
    let mta = server();
    let mut c = connect(&mta);
    c.send_raw(
        b"MAIL FROM:<someone@remote.test>\r\nRCPT TO:<nobody@example.test>\r\n\
          RCPT TO:<alice@example.test>\r\nRSET\r\nNOOP\r\n",
    )
    .unwrap();
    let codes: Vec<(u16, Option<String>)> = (0..5)
        .map(|_| {
            let r = c.reply("a pipelined reply");
            (r.code, r.enhanced().map(str::to_string))
        })
        .collect();
    let want = [
        (250, "2.1.0"),
        (550, "5.1.1"),
        (250, "2.1.5"),
        (250, "2.0.0"),
        (250, "2.0.0"),
    ];
    let want: Vec<(u16, Option<String>)> = want
        .iter()
        .map(|(c, e)| (*c, Some(e.to_string())))
        .collect();
    assert_eq!(codes, want, "{}", c.transcript());
}

#[test]
fn commands_pipelined_after_starttls_are_discarded() {
    // RFC 3207 §4.2, CVE-2011-0411: plaintext sent after STARTTLS must not be executed
    // inside the TLS session.
    let mta = server();
    let mut c = SmtpClient::connect(mta.submission_addr());
    c.reply("the greeting");
    c.expect("EHLO client.test", 250);
    c.send_raw(b"STARTTLS\r\nNOOP\r\n").unwrap();
    let reply = c.reply("the reply to STARTTLS");
    assert_eq!(reply.code, 220, "{}", c.transcript());
    c.upgrade_tls(&mta.cert_path());
    // The first reply inside TLS must answer our EHLO, not the injected NOOP.
    let ehlo = c.command("EHLO client.test");
    assert_eq!(ehlo.code, 250, "{}", c.transcript());
    assert!(
        ehlo.lines.len() > 1 && ehlo.lines.iter().any(|l| l == "AUTH PLAIN LOGIN"),
        "expected the EHLO reply with AUTH first, got {ehlo}\n{}",
        c.transcript()
    );
    c.expect("NOOP", 250);
}
