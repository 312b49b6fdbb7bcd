//! RFC 3461 delivery status notification requests end to end: `NOTIFY`, `ORCPT`, `RET` and
//! `ENVID` from a real client, the notices they ask for (delivered locally, relayed to a
//! next hop without DSN) and the parameters passed on to a next hop that offers DSN;
//! `AUTH=` on MAIL (RFC 4954 §5), and parameters that must be refused.

use std::net::SocketAddr;

use base64::Engine as _;
use std::process::Command;

use mta_tests::dsn::wait_for_dsn;
use mta_tests::fake_smtp::{FakeSmtp, Script};
use mta_tests::relay::{REMOTE_BOB, login, message, sender, start_sender};
use mta_tests::{ALICE, ALICE_PASSWORD, SmtpClient, TestDns, TestMta, on_shared_port, run, secs};

/// A sender whose MX for remote.test is a fake on 127.0.0.2, offering DSN or not; the DNS
/// server must live as long as the sender.
fn relay_through_fake(offers_dsn: bool) -> (TestMta, FakeSmtp, TestDns) {
    let dns = TestDns::start(&[
        "--mx-host=remote.test,mx1.remote.test,10",
        "--host-record=mx1.remote.test,127.0.0.2",
    ]);
    let (port, fake) = on_shared_port("the fake receiver", |p| {
        FakeSmtp::start(
            SocketAddr::from(([127, 0, 0, 2], p)),
            Script {
                ehlo: Box::new(move |_| match offers_dsn {
                    true => "250-fake.test\r\n250-DSN\r\n250 8BITMIME".into(),
                    false => "250-fake.test\r\n250 8BITMIME".into(),
                }),
                ..Script::default()
            },
        )
    });
    (start_sender(sender(&dns, port, "")), fake, dns)
}

/// Alice submits to bob@remote.test with every DSN parameter; returns the queue id.
fn submit_with_dsn(tx: &TestMta) -> String {
    let mut c = login(tx);
    c.expect(
        &format!("MAIL FROM:<{ALICE}> RET=HDRS ENVID=QQ+2B1 AUTH=<>"),
        250,
    );
    c.expect(
        &format!("RCPT TO:<{REMOTE_BOB}> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob+2Bx@remote.test"),
        250,
    );
    c.expect("DATA", 354);
    let mut data = message(REMOTE_BOB, "dsn test");
    data.extend_from_slice(b".\r\n");
    c.send_raw(&data).unwrap();
    let reply = c.reply("end of data");
    assert_eq!(reply.code, 250, "{}", c.transcript());
    let _ = c.send_line("QUIT");
    mta_tests::queue_id(&reply.to_string())
}

/// RFC 3461 §6.2.4: a next hop without DSN cannot pass the request on, so we tell the
/// sender ourselves that the message was relayed; nothing of DSN goes on the wire.
#[test]
fn success_is_reported_as_relayed_when_the_next_hop_has_no_dsn() {
    let (tx, fake, _dns) = relay_through_fake(false);
    let id = submit_with_dsn(&tx);
    let (_, dsn) = wait_for_dsn(&tx, ALICE, secs(15));
    assert_eq!(
        dsn.headers.expect("Subject"),
        "Successful Mail Delivery Report"
    );
    assert_eq!(dsn.headers.expect("Return-Path"), "<>");
    assert_eq!(dsn.per_message.expect("Original-Envelope-Id"), "QQ+1");
    assert_eq!(dsn.per_message.expect("X-Mta-Queue-ID"), id);
    let r = dsn.recipient(REMOTE_BOB);
    assert_eq!(r.expect("Action"), "relayed");
    assert_eq!(r.expect("Original-Recipient"), "rfc822; bob+x@remote.test");
    assert_eq!(r.expect("Remote-MTA"), "dns; mx1.remote.test");
    assert!(r.expect("Status").starts_with("2."), "{r:?}");
    let t = &fake.transactions()[0];
    assert_eq!(
        t.mail_from.find(" RET=").or(t.mail_from.find(" ENVID=")),
        None
    );
    assert!(!t.rcpts[0].0.contains("NOTIFY"), "{:?}", t.rcpts);
    tx.wait_for_empty_queue(secs(10));
}

/// RFC 3461 §6.2: to a next hop that offers DSN the parameters go on as they came, and the
/// notice is its to send: none from us.
#[test]
fn parameters_pass_to_a_next_hop_with_dsn() {
    let (tx, fake, _dns) = relay_through_fake(true);
    submit_with_dsn(&tx);
    tx.wait_for_empty_queue(secs(15));
    let t = &fake.transactions()[0];
    assert!(
        t.mail_from.ends_with(" RET=HDRS ENVID=QQ+2B1"),
        "{}",
        t.mail_from
    );
    assert!(!t.mail_from.contains("AUTH="), "{}", t.mail_from);
    assert_eq!(
        t.rcpts[0].0,
        format!("RCPT TO:<{REMOTE_BOB}> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob+2Bx@remote.test")
    );
    assert!(
        tx.maildir_new(ALICE).is_empty(),
        "no notice from us: {:?}",
        tx.maildir_new(ALICE)
    );
    assert!(!tx.log().contains("success notice sent"), "{}", tx.log());
}

const PYTHON: &str = r#"
import smtplib, ssl, sys
port, cafile, user, password, rcpt = sys.argv[1:6]
ctx = ssl.create_default_context(cafile=cafile)
msg = "From: {0}\r\nTo: {1}\r\nSubject: notify me\r\n\r\nhello\r\n".format(user, rcpt)
with smtplib.SMTP("127.0.0.1", int(port), local_hostname="python.client.test", timeout=10) as s:
    s.starttls(context=ctx)
    s.login(user, password)
    assert s.has_extn("dsn"), s.esmtp_features
    refused = s.sendmail(user, [rcpt], msg,
        mail_options=["RET=HDRS", "ENVID=abc", "AUTH=<>"],
        rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;a@b"])
    assert refused == {}, refused
    code, _ = s.docmd("MAIL FROM:<" + user + "> RET=BOTH")
    assert code == 501, code
print("sent")
"#;

/// Python's smtplib with `mail_options` and `rcpt_options`: a local delivery with
/// `NOTIFY=SUCCESS` brings a `delivered` notice with the ENVID and ORCPT given.
#[test]
fn smtplib_asks_for_a_delivered_notice() {
    let mta = TestMta::start("");
    mta.add_user(ALICE, ALICE_PASSWORD);
    let bob = "bob@example.test";
    mta.add_user(bob, "bob-password-1");
    let out = run(
        "python3 smtplib",
        Command::new("python3")
            .args(["-c", PYTHON])
            .arg(mta.submission_addr().port().to_string())
            .arg(mta.cert_path())
            .args([ALICE, ALICE_PASSWORD, bob]),
        b"",
        secs(30),
    );
    out.assert_success("python3 smtplib");
    mta.wait_for_mail(bob, 1, 10);
    let (_, dsn) = wait_for_dsn(&mta, ALICE, secs(10));
    assert_eq!(dsn.per_message.expect("Original-Envelope-Id"), "abc");
    let r = dsn.recipient(bob);
    assert_eq!(r.expect("Action"), "delivered");
    assert_eq!(r.expect("Original-Recipient"), "rfc822; a@b");
    assert_eq!(r.expect("Status"), "2.0.0");
    assert!(
        !dsn.text().contains("maildir"),
        "no Maildir path: {}",
        dsn.text()
    );
}

/// Bad DSN parameters are refused with 501 and start nothing; `AUTH=` where AUTH is not
/// offered (port 25) stays an unknown parameter; `AUTH PLAIN =` asks for the response.
#[test]
fn bad_parameters_are_refused_and_nothing_is_queued() {
    let mta = TestMta::start("");
    mta.add_user(ALICE, ALICE_PASSWORD);
    let mut c = SmtpClient::connect(mta.smtp_addr());
    c.reply("the greeting");
    let ehlo = c.command("EHLO outside.other.test");
    assert!(ehlo.lines.iter().any(|l| l == "DSN"), "{ehlo:?}");
    let from = "MAIL FROM:<x@other.test>";
    for (line, code) in [
        (format!("{from} RET=BOTH"), 501),
        (format!("{from} RET=HDRS RET=HDRS"), 501),
        (format!("{from} ENVID=+zz"), 501),
        (format!("{from} ENVID=+2"), 501),
        (format!("{from} ENVID=a=b"), 501),
        (format!("{from} ENVID={}", "e".repeat(101)), 501),
        (format!("{from} AUTH=<>"), 555),
        (format!("{from} XYZ=1"), 555),
    ] {
        c.expect(&line, code);
    }
    // No transaction was started by any of them.
    c.expect(&format!("RCPT TO:<{ALICE}>"), 503);
    let _ = c.send_line("QUIT");
    // The error budget (`limits.max_errors`) is per session: a new one for RCPT.
    let mut c = SmtpClient::connect(mta.smtp_addr());
    c.reply("the greeting");
    c.expect("EHLO outside.other.test", 250);
    c.expect(from, 250);
    for line in [
        "NOTIFY=NEVER,SUCCESS",
        "NOTIFY=SUCCESS NOTIFY=SUCCESS",
        "ORCPT=x400;a",
        "ORCPT=rfc822;a+0D+0AX:+20y",
    ] {
        c.expect(&format!("RCPT TO:<{ALICE}> {line}"), 501);
    }
    c.expect("DATA", 554);
    let _ = c.send_line("QUIT");
    assert!(mta.maildir_new(ALICE).is_empty());
    mta.wait_for_empty_queue(secs(5));

    let mut s = SmtpClient::connect(mta.submission_addr());
    s.reply("the greeting");
    s.expect("EHLO client.example.test", 250);
    s.expect("STARTTLS", 220);
    s.upgrade_tls(&mta.cert_path());
    s.expect("EHLO client.example.test", 250);
    s.expect("AUTH PLAIN =", 334);
    let creds =
        base64::engine::general_purpose::STANDARD.encode(format!("\0{ALICE}\0{ALICE_PASSWORD}"));
    s.expect(&creds, 235);
}
