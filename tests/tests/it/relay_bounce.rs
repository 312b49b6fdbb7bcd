//! Relayed mail that cannot be delivered: the sender (alice, local at `mx.example.test`)
//! gets one RFC 3464 delivery status notification in her Maildir naming exactly the failed
//! recipients; DNS trouble defers instead.

use std::net::SocketAddr;

use mta_tests::dsn::{Dsn, wait_for_dsn};
use mta_tests::fake_smtp::{FakeSmtp, Script};
use mta_tests::relay::{
    REMOTE_BOB, message, receiver, sender, start_sender, submit, try_remote_receiver,
};
use mta_tests::{
    ALICE, MtaBuilder, ServfailDns, TestDns, TestMta, Trap, on_shared_port, read_delivered, secs,
    shared_port,
};

const NOBODY: &str = "nobody@remote.test";

/// The parts of a bounce that do not depend on why: from MAILER-DAEMON with the null
/// envelope sender to alice, about message `id`, returning its headers but not its body.
fn assert_bounce_to_alice(dsn: &Dsn, id: &str, subject: &str) {
    let h = &dsn.headers;
    assert_eq!(h.expect("Return-Path"), "<>", "the null envelope sender");
    assert_eq!(h.expect("Delivered-To"), ALICE);
    assert_eq!(
        h.expect("From"),
        "Mail Delivery System <MAILER-DAEMON@mx.example.test>"
    );
    assert_eq!(h.expect("To"), format!("<{ALICE}>"));
    assert_eq!(h.expect("Auto-Submitted"), "auto-replied");
    assert_eq!(h.expect("Subject"), "Undelivered Mail Returned to Sender");
    assert_eq!(
        dsn.per_message.expect("Reporting-MTA"),
        "dns; mx.example.test"
    );
    assert_eq!(dsn.per_message.expect("X-Mta-Queue-ID"), id);
    assert!(dsn.text().contains(id), "{}", dsn.text());
    let returned = dsn.returned_headers();
    assert!(
        returned.contains(&format!("Subject: {subject}\r\n")),
        "{returned}"
    );
    assert!(
        !returned.contains("Hello from the relay tests"),
        "the body must not come back: {returned}"
    );
    for r in &dsn.recipients {
        assert_eq!(r.expect("Action"), "failed", "{r:?}");
    }
}

/// Waits for the sender's queue to empty and checks the log never deferred anyone: a
/// permanent failure is final on the first attempt.
fn assert_failed_at_once(tx: &TestMta) {
    tx.wait_for_empty_queue(secs(10));
    let log = tx.log();
    assert!(!log.contains("recipient deferred"), "{log}");
}

#[test]
fn null_mx_bounces_at_once_without_connecting() {
    // nullmx.test publishes `MX 0 .` (RFC 7505) but also has an address: a sender that
    // ignored the null MX would connect to the trap there.
    let dns = TestDns::start(&[
        "--mx-host=nullmx.test,.,0",
        "--host-record=nullmx.test,127.0.0.2",
    ]);
    let (port, trap) = on_shared_port("the trap", |p| {
        Trap::listen(SocketAddr::from(([127, 0, 0, 2], p)))
    });
    let tx = start_sender(sender(&dns, port, ""));
    let to = "x@nullmx.test";
    let id = submit(&tx, &[to], &message(to, "null mx"));

    let (_, dsn) = wait_for_dsn(&tx, ALICE, secs(10));
    assert_bounce_to_alice(&dsn, &id, "null mx");
    assert_eq!(dsn.final_recipients(), [to]);
    let r = dsn.recipient(to);
    assert_eq!(r.expect("Status"), "5.1.10");
    assert_eq!(r.expect("Final-Recipient"), format!("rfc822; {to}"));
    assert!(r.expect("Diagnostic-Code").contains("null MX"), "{r:?}");
    assert!(
        r.get("Remote-MTA").is_none(),
        "no remote server was involved: {r:?}"
    );
    assert_failed_at_once(&tx);
    assert_eq!(
        trap.connections(),
        0,
        "nobody may connect to a null-MX domain"
    );
    assert!(!tx.log().contains("remote attempt"), "{}", tx.log());
}

#[test]
fn nxdomain_bounces_with_5_1_2() {
    let dns = TestDns::start(&[]);
    let tx = start_sender(sender(&dns, shared_port(), ""));
    let to = "y@nx.test";
    let id = submit(&tx, &[to], &message(to, "no such domain"));

    let (_, dsn) = wait_for_dsn(&tx, ALICE, secs(10));
    assert_bounce_to_alice(&dsn, &id, "no such domain");
    assert_eq!(dsn.final_recipients(), [to]);
    let r = dsn.recipient(to);
    assert_eq!(r.expect("Status"), "5.1.2");
    assert!(r.expect("Diagnostic-Code").contains("NXDOMAIN"), "{r:?}");
    assert_failed_at_once(&tx);
}

/// queue.md: "`Diagnostic-Code` is `smtp;` for a remote server's reply and `X-mta;` for a
/// reason of our own (no MX, expiry, an operator's bounce)"; bounce.rs: "our own reasons
/// (DNS, TLS, expiry) get an extension type". A null MX and an NXDOMAIN are our own
/// findings: no SMTP server said anything.
#[test]
fn dns_failures_are_not_reported_as_smtp_replies() {
    let dns = TestDns::start(&["--mx-host=nullmx.test,.,0"]);
    let tx = start_sender(sender(&dns, shared_port(), ""));
    let (null, nx) = ("x@nullmx.test", "y@nx.test");
    submit(&tx, &[null, nx], &message(null, "diagnostic type"));

    let (_, dsn) = wait_for_dsn(&tx, ALICE, secs(10));
    assert_eq!(dsn.final_recipients(), [null, nx]);
    for rcpt in [null, nx] {
        let diagnostic = dsn.recipient(rcpt).expect("Diagnostic-Code");
        assert!(
            diagnostic.starts_with("X-mta; "),
            "{rcpt}: `Diagnostic-Code: {diagnostic}` claims an SMTP server said this"
        );
    }
}

#[test]
fn servfail_defers_and_never_bounces() {
    let dns = ServfailDns::start();
    let tx = start_sender(MtaBuilder::new().toml(&format!(
        "{}[outbound]\nport = {}\n[queue]\nretry_first = \"1s\"\nretry_max = \"2s\"\n",
        dns.config_toml(),
        shared_port()
    )));
    let id = submit(&tx, &[REMOTE_BOB], &message(REMOTE_BOB, "servfail"));

    let rcpt = tx.wait_for_deferral(&id, REMOTE_BOB, 1, secs(15));
    let last = rcpt["last_result"].as_str().unwrap_or_default();
    assert!(last.starts_with("4.4.3 "), "{rcpt}");
    assert!(dns.queries() >= 1, "the MX query reached the DNS server");
    assert!(
        tx.maildir_new(ALICE).is_empty(),
        "no bounce for DNS trouble"
    );
}

#[test]
fn unknown_recipient_bounces_alone() {
    // One message to a known and an unknown user at the same receiver: bob gets it, and
    // the bounce names nobody@ only.
    let dns = TestDns::start(&[
        "--mx-host=remote.test,mx1.remote.test,10",
        "--host-record=mx1.remote.test,127.0.0.2",
    ]);
    let (port, rx) = on_shared_port("the receiver", |p| {
        try_remote_receiver("mx1.remote.test", "127.0.0.2", p)
    });
    let tx = start_sender(sender(&dns, port, ""));
    let id = submit(
        &tx,
        &[REMOTE_BOB, NOBODY],
        &message(REMOTE_BOB, "partial acceptance"),
    );

    let files = rx.wait_for_mail(REMOTE_BOB, 1, 10);
    let d = read_delivered(&files[0]);
    assert!(
        d.received.contains(&format!("for <{REMOTE_BOB}>")),
        "only bob was accepted: {}",
        d.received
    );
    let (_, dsn) = wait_for_dsn(&tx, ALICE, secs(10));
    assert_bounce_to_alice(&dsn, &id, "partial acceptance");
    assert_eq!(
        dsn.final_recipients(),
        [NOBODY],
        "only the refused recipient"
    );
    let r = dsn.recipient(NOBODY);
    assert_eq!(r.expect("Final-Recipient"), format!("rfc822; {NOBODY}"));
    assert_eq!(r.expect("Status"), "5.1.1");
    assert_eq!(r.expect("Remote-MTA"), "dns; mx1.remote.test");
    assert!(
        r.expect("Diagnostic-Code").starts_with("smtp; 550 5.1.1"),
        "{r:?}"
    );
    assert!(dsn.text().contains(NOBODY), "{}", dsn.text());
    assert!(!dsn.text().contains(REMOTE_BOB), "{}", dsn.text());
    assert_failed_at_once(&tx);
    assert_eq!(rx.maildir_new(REMOTE_BOB).len(), 1);
}

#[test]
fn rejected_data_bounces_only_that_domain() {
    // remote.test's MX refuses the message after the data (554); other.test's takes it.
    let dns = TestDns::start(&[
        "--mx-host=remote.test,mx1.remote.test,10",
        "--host-record=mx1.remote.test,127.0.0.2",
        "--mx-host=other.test,mx.other.test,10",
        "--host-record=mx.other.test,127.0.0.3",
    ]);
    let carol = "carol@other.test";
    let (port, (fake, other)) = on_shared_port("a fake and a real receiver", |p| {
        let fake = FakeSmtp::start(
            SocketAddr::from(([127, 0, 0, 2], p)),
            Script {
                data: Box::new(|_| "554 5.6.0 content refused".into()),
                ..Script::default()
            },
        )?;
        let other = receiver("mx.other.test", &["other.test"], "127.0.0.3", p).try_start()?;
        other.add_user(carol, "carol-password-1");
        Ok((fake, other))
    });
    let tx = start_sender(sender(&dns, port, ""));
    let id = submit(&tx, &[REMOTE_BOB, carol], &message(carol, "half refused"));

    other.wait_for_mail(carol, 1, 10);
    let (_, dsn) = wait_for_dsn(&tx, ALICE, secs(10));
    assert_bounce_to_alice(&dsn, &id, "half refused");
    assert_eq!(dsn.final_recipients(), [REMOTE_BOB]);
    let r = dsn.recipient(REMOTE_BOB);
    assert_eq!(r.expect("Status"), "5.6.0");
    assert_eq!(r.expect("Remote-MTA"), "dns; mx1.remote.test");
    assert!(
        r.expect("Diagnostic-Code")
            .starts_with("smtp; 554 5.6.0 content refused"),
        "{r:?}"
    );
    assert_failed_at_once(&tx);
    assert_eq!(fake.transactions().len(), 1, "{}", fake.transcript());
}

#[test]
fn all_recipients_refused_bounce_together() {
    // The receiver pipelines: MAIL, both RCPTs and DATA in one write, both RCPTs refused.
    let dns = TestDns::start(&[
        "--mx-host=remote.test,mx1.remote.test,10",
        "--host-record=mx1.remote.test,127.0.0.2",
    ]);
    let (port, rx) = on_shared_port("the receiver", |p| {
        try_remote_receiver("mx1.remote.test", "127.0.0.2", p)
    });
    let tx = start_sender(sender(&dns, port, ""));
    let other = "other@remote.test";
    let id = submit(&tx, &[NOBODY, other], &message(NOBODY, "nobody home"));

    let (_, dsn) = wait_for_dsn(&tx, ALICE, secs(10));
    assert_bounce_to_alice(&dsn, &id, "nobody home");
    assert_eq!(dsn.final_recipients(), [NOBODY, other]);
    for r in [NOBODY, other] {
        assert_eq!(dsn.recipient(r).expect("Status"), "5.1.1");
    }
    assert_failed_at_once(&tx);
    let queue = rx.queue_json();
    assert!(
        queue["records"].as_array().is_some_and(Vec::is_empty),
        "{queue}"
    );
    assert!(
        !rx.log().contains("received msg="),
        "the receiver took no message: {}",
        rx.log()
    );
}

#[test]
fn hostile_remote_reply_cannot_forge_report_fields() {
    // A multi-line 550 whose lines look like DSN fields and carry an escape sequence.
    let dns = TestDns::start(&[
        "--mx-host=remote.test,mx1.remote.test,10",
        "--host-record=mx1.remote.test,127.0.0.2",
    ]);
    let (port, _fake) = on_shared_port("the fake receiver", |p| {
        FakeSmtp::start(
            SocketAddr::from(([127, 0, 0, 2], p)),
            Script {
                rcpt: Box::new(|_, _| {
                    "550-5.1.1 no such user \u{1b}[31mred\r\n\
                     550-\r\n\
                     550-Final-Recipient: rfc822; forged@evil.test\r\n\
                     550 Action: delivered"
                        .into()
                }),
                ..Script::default()
            },
        )
    });
    let tx = start_sender(sender(&dns, port, ""));
    submit(&tx, &[REMOTE_BOB], &message(REMOTE_BOB, "hostile"));

    let (path, dsn) = wait_for_dsn(&tx, ALICE, secs(10));
    assert_eq!(dsn.final_recipients(), [REMOTE_BOB], "no forged recipient");
    let r = dsn.recipient(REMOTE_BOB);
    assert_eq!(r.expect("Action"), "failed");
    assert_eq!(r.expect("Status"), "5.1.1");
    let file = std::fs::read(&path).unwrap();
    assert!(!file.contains(&0x1b), "an escape character in the bounce");
    assert!(
        r.expect("Diagnostic-Code")
            .starts_with("smtp; 550 5.1.1 no such user"),
        "{r:?}"
    );
    assert_failed_at_once(&tx);
}
