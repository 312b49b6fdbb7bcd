//! The envelope extensions between `mta` and a real Postfix (a private instance,
//! `mta_tests::postfix`), both ways, each message delivered once:
//!
//! - Postfix relays to mta's submission port with SASL (PLAIN over required TLS) and
//!   `smtp_send_dummy_mail_auth = yes`: mta takes `AUTH=<>` on MAIL and delivers;
//! - a client asks Postfix for `NOTIFY=SUCCESS,FAILURE`, `ENVID` and `RET=HDRS`; Postfix
//!   passes them to mta (port 25 offers DSN), and mta's `delivered` notice carries them to
//!   a sender SPF showed to be real; for one nothing vouches for, none is sent, and the log
//!   says so;
//! - mta relays to Postfix with `NOTIFY=SUCCESS` and an `ORCPT`: Postfix offers DSN, so mta
//!   passes them on (in a BDAT transaction) and sends no notice of its own; Postfix's
//!   `delivered` notice comes back to alice, once; a `NOTIFY=FAILURE` recipient Postfix
//!   refuses brings one bounce, from mta.

use std::process::Command;

use mta_tests::dsn::{Dsn, read_dsn};

use crate::dkim::txt_record;
use mta_tests::postfix::PostfixBuilder;
use mta_tests::relay::{REMOTE_BOB, sender, start_sender};
use mta_tests::{
    ALICE, ALICE_PASSWORD, MtaBuilder, SmtpClient, TestDns, TestMta, on_shared_port,
    read_delivered, run, secs, wait_for,
};

const BOB: &str = "bob@example.test";

/// `RUST_LOG` for mta's SMTP transcript (`C:` and `S:` lines) and nothing else at debug.
const TRANSCRIPT: &str = "info,mta_smtp::server::conn=debug";

/// A short message from alice to `to`.
fn note(to: &str, subject: &str) -> Vec<u8> {
    format!(
        "From: Alice <{ALICE}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n\
         Message-ID: <{}@example.test>\r\nDate: Mon, 07 Dec 2026 06:00:00 +0000\r\n\r\n\
         Hello through Postfix.\r\n",
        subject.replace(' ', "-")
    )
    .into_bytes()
}

#[test]
fn postfix_with_sasl_sends_auth_empty_and_mta_delivers() {
    let mta = MtaBuilder::new()
        .env("RUST_LOG", TRANSCRIPT)
        .user(ALICE, ALICE_PASSWORD)
        .user(BOB, "bob-password-1")
        .start();
    let relayhost = format!("[127.0.0.1]:{}", mta.submission_addr().port());
    let (_, postfix) = on_shared_port("postfix", |port| {
        PostfixBuilder::new("postfix.client.test", "127.0.0.2", port)
            .main_cf("relayhost", &relayhost)
            .main_cf("smtp_tls_security_level", "encrypt")
            .main_cf("smtp_sasl_auth_enable", "yes")
            .main_cf(
                "smtp_sasl_password_maps",
                &format!("static:{ALICE}:{ALICE_PASSWORD}"),
            )
            // PLAIN is fine under the required TLS; the default also forbids plaintext.
            .main_cf("smtp_sasl_security_options", "noanonymous")
            .main_cf("smtp_sasl_tls_security_options", "noanonymous")
            .main_cf("smtp_send_dummy_mail_auth", "yes")
            .try_start()
    });
    let mut c = SmtpClient::connect(postfix.addr());
    c.reply("the greeting");
    c.expect("EHLO client.test", 250);
    let r = c.send_message(ALICE, &[BOB], &note(BOB, "sasl via postfix"));
    assert_eq!(r.code, 250, "{}", c.transcript());
    let _ = c.send_line("QUIT");
    let files = mta.wait_for_mail(BOB, 1, 30);
    wait_for(secs(10), "Postfix logs the delivery", || {
        postfix.log().contains("status=sent")
    });
    let log = postfix.log();
    assert_eq!(log.matches("status=sent").count(), 1, "{log}");
    assert_eq!(files.len(), 1, "delivered once: {files:?}");
    assert_eq!(mta.maildir_new(BOB).len(), 1);
    let d = read_delivered(&files[0]);
    assert!(d.received.contains("with ESMTPSA"), "{}", d.received);
    let mta_log = mta.log();
    let mails: Vec<&str> = mta_log
        .lines()
        .filter(|l| l.contains("MAIL FROM:<"))
        .collect();
    assert_eq!(mails.len(), 1, "{mta_log}");
    assert!(mails[0].contains(" AUTH=<>"), "{}", mails[0]);
}

/// A client asks Postfix for every DSN parameter; mta is Postfix's next hop for
/// example.test.
const PYTHON_TO_POSTFIX: &str = r#"
import smtplib, sys
port, sender, rcpt = sys.argv[1:4]
msg = "From: {0}\r\nTo: {1}\r\nSubject: notify me\r\n\r\nhello\r\n".format(sender, rcpt)
with smtplib.SMTP("127.0.0.2", int(port), local_hostname="python.client.test", timeout=10) as s:
    s.ehlo()
    assert s.has_extn("dsn"), s.esmtp_features
    refused = s.sendmail(sender, [rcpt], msg,
        mail_options=["RET=HDRS", "ENVID=QQ+2B1"],
        rcpt_options=["NOTIFY=SUCCESS,FAILURE"])
    assert refused == {}, refused
print("sent")
"#;

const SOMEONE: &str = "someone@client.test";

/// Postfix is client.test's MX (on 127.0.0.2) and its relay to mta; client.test's SPF names
/// loopback, so mta (checks on) finds the sender real and may send it notices, which go
/// back to Postfix by MX and land in someone's Maildir there.
#[test]
fn postfix_passes_a_dsn_request_on_and_mta_reports_the_delivery() {
    let dns = TestDns::start(&[
        "--mx-host=client.test,mx.client.test,10",
        "--host-record=mx.client.test,127.0.0.2",
        &txt_record("client.test", "v=spf1 ip4:127.0.0.0/8 -all"),
    ]);
    let (port, postfix) = on_shared_port("postfix", |port| {
        PostfixBuilder::new("mx.client.test", "127.0.0.2", port)
            .mailboxes(&[SOMEONE])
            .etc_file("transport", "")
            .main_cf("transport_maps", "texthash:$config_directory/transport")
            .try_start()
    });
    let mta = sender(&dns, port, "")
        .toml("[inbound]\nchecks = true\n")
        .env("RUST_LOG", TRANSCRIPT)
        .user(BOB, "bob-password-1")
        .start();
    postfix.write_etc(
        "transport",
        &format!("example.test smtp:[127.0.0.1]:{}\n", mta.smtp_addr().port()),
    );
    postfix.reload();
    let out = run(
        "python3 smtplib",
        Command::new("python3")
            .args(["-c", PYTHON_TO_POSTFIX])
            .arg(port.to_string())
            .args([SOMEONE, BOB]),
        b"",
        secs(30),
    );
    out.assert_success("python3 smtplib");
    mta.wait_for_mail(BOB, 1, 30);
    let notices = postfix.wait_for_mail(SOMEONE, 1, secs(30));
    mta.wait_for_empty_queue(secs(30));
    wait_for(secs(10), "Postfix logs both deliveries", || {
        postfix.log().matches("status=sent").count() >= 2
    });
    let log = postfix.log();
    // The message to mta and mta's notice into someone's Maildir; no notice of Postfix's.
    assert_eq!(log.matches("status=sent").count(), 2, "{log}");
    assert!(!log.contains("delivery status notification"), "{log}");
    let mta_log = mta.log();
    let rcpt: Vec<&str> = mta_log
        .lines()
        .filter(|l| l.contains("C: line=\"RCPT TO:<bob@example.test>"))
        .collect();
    assert_eq!(rcpt.len(), 1, "{mta_log}");
    assert!(rcpt[0].contains(" NOTIFY=SUCCESS,FAILURE"), "{}", rcpt[0]);
    assert_eq!(notices.len(), 1, "one notice: {notices:?}");
    let dsn = read_dsn(&notices[0]);
    assert_eq!(dsn.per_message.expect("Original-Envelope-Id"), "QQ+1");
    assert_eq!(
        dsn.per_message.expect("Reporting-MTA"),
        "dns; mx.example.test"
    );
    let r = dsn.recipient(BOB);
    assert_eq!(r.expect("Action"), "delivered");
    assert!(r.expect("Status").starts_with("2."), "{r:?}");
    // The ORCPT Postfix added for the recipient it was given.
    assert_eq!(r.expect("Original-Recipient"), "rfc822; bob@example.test");
    // Not our user's mail: the notice returns none of it, whatever RET asked for.
    assert_eq!(dsn.parts.len(), 2, "{:?}", dsn.parts);
    assert_eq!(postfix.maildir_new(SOMEONE).len(), 1, "one notice");
    assert_eq!(mta.maildir_new(BOB).len(), 1, "delivered once");
}

/// The same request for a sender nothing vouches for (checks off: no SPF pass): mta
/// delivers but sends no notice, which would be backscatter, and says so in its log as it
/// does for a bounce it does not send.
#[test]
fn a_success_notice_for_an_unverified_sender_is_dropped_and_logged() {
    let mta = MtaBuilder::new()
        .user(ALICE, ALICE_PASSWORD)
        .user(BOB, "bob-password-1")
        .start();
    let relayhost = format!("[127.0.0.1]:{}", mta.smtp_addr().port());
    let (port, postfix) = on_shared_port("postfix", |port| {
        PostfixBuilder::new("postfix.client.test", "127.0.0.2", port)
            .main_cf("relayhost", &relayhost)
            .try_start()
    });
    let out = run(
        "python3 smtplib",
        Command::new("python3")
            .args(["-c", PYTHON_TO_POSTFIX])
            .arg(port.to_string())
            .args([ALICE, BOB]),
        b"",
        secs(30),
    );
    out.assert_success("python3 smtplib");
    mta.wait_for_mail(BOB, 1, 30);
    mta.wait_logged(secs(10), "the dropped notice", || {
        mta.log()
            .contains("success notice not sent: nothing shows the sender is real")
    });
    mta.wait_for_empty_queue(secs(10));
    assert!(
        mta.maildir_new(ALICE).is_empty(),
        "{:?}",
        mta.maildir_new(ALICE)
    );
    assert!(!postfix.log().contains("delivery status notification"));
}

const NOBODY: &str = "nobody@remote.test";

/// Alice submits to bob (`NOTIFY=SUCCESS` and an `ORCPT`) and nobody (`NOTIFY=FAILURE`) with smtplib.
const PYTHON_TO_MTA: &str = r#"
import smtplib, ssl, sys
port, cafile, user, password, bob, nobody = sys.argv[1:7]
ctx = ssl.create_default_context(cafile=cafile)
msg = ("From: {0}\r\nTo: {1}, {2}\r\nSubject: notify through postfix\r\n\r\nhello\r\n"
    .format(user, bob, nobody))
with smtplib.SMTP("127.0.0.1", int(port), local_hostname="python.client.test", timeout=10) as s:
    s.starttls(context=ctx)
    s.login(user, password)
    assert s.mail(user, ["ENVID=pf-1"])[0] == 250
    assert s.rcpt(bob, ["NOTIFY=SUCCESS", "ORCPT=rfc822;bob+2Bx@remote.test"])[0] == 250
    assert s.rcpt(nobody, ["NOTIFY=FAILURE"])[0] == 250
    code, reply = s.data(msg)
    assert code == 250, reply
print("sent")
"#;

/// Which of the two notices `dsn` is: Postfix's `delivered` for bob or mta's bounce.
fn reporter(dsn: &Dsn) -> &str {
    dsn.per_message.expect("Reporting-MTA")
}

#[test]
fn mta_passes_notify_to_postfix_and_each_notice_comes_once() {
    let dns = TestDns::start(&[
        "--mx-host=remote.test,mx1.remote.test,10",
        "--host-record=mx1.remote.test,127.0.0.2",
    ]);
    let (port, postfix) = on_shared_port("postfix", |port| {
        PostfixBuilder::new("mx1.remote.test", "127.0.0.2", port)
            .mailboxes(&[REMOTE_BOB])
            .etc_file("transport", "")
            .main_cf("transport_maps", "texthash:$config_directory/transport")
            .try_start()
    });
    let tx: TestMta = start_sender(sender(&dns, port, ""));
    // Postfix's notices to example.test go back to the sender's port 25.
    postfix.write_etc(
        "transport",
        &format!("example.test smtp:[127.0.0.1]:{}\n", tx.smtp_addr().port()),
    );
    postfix.reload();
    let out = run(
        "python3 smtplib",
        Command::new("python3")
            .args(["-c", PYTHON_TO_MTA])
            .arg(tx.submission_addr().port().to_string())
            .arg(tx.cert_path())
            .args([ALICE, ALICE_PASSWORD, REMOTE_BOB, NOBODY]),
        b"",
        secs(30),
    );
    out.assert_success("python3 smtplib");
    postfix.wait_for_mail(REMOTE_BOB, 1, secs(30));
    let files = tx.wait_for_mail(ALICE, 2, 30);
    tx.wait_for_empty_queue(secs(30));
    wait_for(secs(10), "Postfix logs the notice sent", || {
        postfix.log().matches("status=sent").count() >= 2
    });
    let log = postfix.log();
    assert_eq!(
        log.matches("status=sent").count(),
        2,
        "bob's copy and one notice: {log}"
    );
    let mut dsns: Vec<Dsn> = files.iter().map(|f| read_dsn(f)).collect();
    dsns.sort_by_key(|d| reporter(d).to_string());
    assert_eq!(dsns.len(), 2, "{files:?}");
    let (ours, postfix_dsn) = (&dsns[0], &dsns[1]);
    assert_eq!(reporter(postfix_dsn), "dns; mx1.remote.test");
    assert_eq!(postfix_dsn.final_recipients(), [REMOTE_BOB]);
    let r = postfix_dsn.recipient(REMOTE_BOB);
    assert_eq!(r.expect("Action"), "delivered");
    // The ORCPT alice gave, xtext and all, went to Postfix with the RCPT.
    assert_eq!(
        r.expect("Original-Recipient").replace(' ', ""),
        "rfc822;bob+x@remote.test"
    );
    assert_eq!(
        postfix_dsn.per_message.expect("Original-Envelope-Id"),
        "pf-1"
    );
    assert_eq!(reporter(ours), "dns; mx.example.test");
    assert_eq!(ours.final_recipients(), [NOBODY]);
    assert_eq!(ours.recipient(NOBODY).expect("Action"), "failed");
    assert!(!tx.log().contains("success notice sent"), "{}", tx.log());
    assert_eq!(postfix.maildir_new(REMOTE_BOB).len(), 1, "delivered once");
    assert_eq!(tx.maildir_new(ALICE).len(), 2);
    // Postfix offers CHUNKING: NOTIFY and ORCPT went with the RCPTs of a BDAT transaction.
    // It logs a session's commands at its end: close mta's idle connection.
    let mut tx = tx;
    tx.stop();
    wait_for(secs(10), "Postfix logs the session's end", || {
        postfix.log().contains(" bdat=")
    });
}
