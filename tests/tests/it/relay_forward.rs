//! Relaying that nobody asked for by AUTH: an alias pointing to a remote address, a bounce
//! going back to a remote sender (with the null sender `<>`), and the queue's own
//! notices (delayed, then expired) for a receiver that never comes up.

use mta_tests::dsn::read_dsn;
use mta_tests::relay::{
    REMOTE_BOB, message, receiver, sender, sender_with_queue, start_sender, try_remote_receiver,
};
use mta_tests::{
    ALICE, SmtpClient, TestDns, TestMta, on_shared_port, queue_id, read_delivered, secs,
    shared_port,
};

const CAROL: &str = "carol@other.test";

/// Sends `message` on `mta`'s port-25 listener, without AUTH, from `from` (`""` for the
/// null sender) to `to`; returns the queue id.
fn send_inbound(mta: &TestMta, from: &str, to: &str, message: &[u8]) -> String {
    let mut c = SmtpClient::connect(mta.smtp_addr());
    c.reply("the greeting");
    c.expect("EHLO outside.other.test", 250);
    let reply = c.send_message(from, &[to], message);
    assert_eq!(reply.code, 250, "{}", c.transcript());
    let _ = c.send_line("QUIT");
    queue_id(&reply.to_string())
}

#[test]
fn alias_to_a_remote_address_is_relayed() {
    let dns = TestDns::start(&[
        "--mx-host=remote.test,mx1.remote.test,10",
        "--host-record=mx1.remote.test,127.0.0.2",
    ]);
    let (port, rx) = on_shared_port("the receiver", |p| {
        try_remote_receiver("mx1.remote.test", "127.0.0.2", p)
    });
    let tx = start_sender(
        sender(&dns, port, "").toml("[aliases]\n\"fwd@example.test\" = [\"bob@remote.test\"]\n"),
    );
    let sent = message("fwd@example.test", "forwarded");
    send_inbound(&tx, CAROL, "fwd@example.test", &sent);

    let files = rx.wait_for_mail(REMOTE_BOB, 1, 10);
    let d = read_delivered(&files[0]);
    // Forwarded with an SRS sender in our domain (docs/relay.md, "Forwarding and SRS").
    assert!(
        d.return_path.starts_with("Return-Path: <SRS0=")
            && d.return_path.ends_with("=other.test=carol@example.test>"),
        "{}",
        d.return_path
    );
    assert_eq!(d.delivered_to, format!("Delivered-To: {REMOTE_BOB}"));
    assert!(d.rest.ends_with(&sent), "the message arrives whole");
    tx.wait_for_empty_queue(secs(10));
}

#[test]
fn bounce_to_a_remote_sender_is_relayed_with_the_null_sender() {
    // An outsider writes to an alias whose remote target does not exist: the bounce goes
    // back to the outsider's own MX, from <>. A message that is itself from <> and fails
    // the same way is dropped without a bounce (RFC 5321 §4.5.5).
    // other.test's SPF names the outsider's address: the sender is real, so it is told.
    let dns = TestDns::start(&[
        "--mx-host=remote.test,mx1.remote.test,10",
        "--host-record=mx1.remote.test,127.0.0.2",
        "--mx-host=other.test,mx.other.test,10",
        "--host-record=mx.other.test,127.0.0.3",
        "--txt-record=other.test,v=spf1 ip4:127.0.0.0/8 -all",
    ]);
    let (port, (_rx, other)) = on_shared_port("two receivers", |p| {
        let rx = try_remote_receiver("mx1.remote.test", "127.0.0.2", p)?;
        let other = receiver("mx.other.test", &["other.test"], "127.0.0.3", p).try_start()?;
        other.add_user(CAROL, "carol-password-1");
        Ok((rx, other))
    });
    let tx = start_sender(sender(&dns, port, "").toml(
        "[aliases]\n\"gone@example.test\" = [\"nobody@remote.test\"]\n[inbound]\nchecks = true\n",
    ));
    let id = send_inbound(
        &tx,
        CAROL,
        "gone@example.test",
        &message("gone@example.test", "to nobody"),
    );

    let files = other.wait_for_mail(CAROL, 1, 10);
    let dsn = read_dsn(&files[0]);
    assert_eq!(dsn.headers.expect("Return-Path"), "<>");
    assert_eq!(dsn.headers.expect("Delivered-To"), CAROL);
    assert_eq!(dsn.final_recipients(), ["nobody@remote.test"]);
    assert_eq!(
        dsn.recipient("nobody@remote.test").expect("Status"),
        "5.1.1"
    );
    assert_eq!(dsn.per_message.expect("X-Mta-Queue-ID"), id);
    // A bounce we sign carries nothing of a stranger's header: no header part, no quote.
    assert_eq!(dsn.parts.len(), 2, "no text/rfc822-headers part");
    let text = String::from_utf8_lossy(&std::fs::read(&files[0]).expect("read")).to_string();
    assert!(
        !text.contains("to nobody"),
        "the original Subject: is not quoted"
    );
    let d = read_delivered(&files[0]);
    assert!(
        d.received.contains("by mx.other.test (mta) with ESMTPS"),
        "{}",
        d.received
    );
    tx.wait_for_empty_queue(secs(10));

    send_inbound(
        &tx,
        "",
        "gone@example.test",
        &message("gone@example.test", "from <>"),
    );
    tx.wait_for_empty_queue(secs(10));
    assert_eq!(
        tx.log().matches("bounce sent").count(),
        1,
        "no bounce for a message from <>: {}",
        tx.log()
    );
    assert_eq!(other.maildir_new(CAROL).len(), 1);
}

#[test]
fn forged_sender_gets_no_bounce() {
    // Backscatter: the outsider claims to be carol@other.test, whose SPF does not name it.
    // The forward is refused remotely; the DSN would go to the real carol, so it is dropped.
    let dns = TestDns::start(&[
        "--mx-host=remote.test,mx1.remote.test,10",
        "--host-record=mx1.remote.test,127.0.0.2",
        "--mx-host=other.test,mx.other.test,10",
        "--host-record=mx.other.test,127.0.0.3",
        "--txt-record=other.test,v=spf1 ip4:192.0.2.1 -all",
    ]);
    let (port, (_rx, other)) = on_shared_port("two receivers", |p| {
        let rx = try_remote_receiver("mx1.remote.test", "127.0.0.2", p)?;
        let other = receiver("mx.other.test", &["other.test"], "127.0.0.3", p).try_start()?;
        other.add_user(CAROL, "carol-password-1");
        Ok((rx, other))
    });
    let tx = start_sender(sender(&dns, port, "").toml(
        "[aliases]\n\"gone@example.test\" = [\"nobody@remote.test\"]\n[inbound]\nchecks = true\n",
    ));
    send_inbound(
        &tx,
        CAROL,
        "gone@example.test",
        &message("gone@example.test", "forged sender"),
    );
    // Done with the message and any DSN it caused (a DSN is queued before the original is
    // removed, and delivered before the queue is empty).
    let failed = "recipient failed permanently";
    tx.wait_logged(secs(20), "the forward refused", || {
        tx.log().contains(failed)
    });
    tx.wait_for_empty_queue(secs(20));
    assert!(other.maildir_new(CAROL).is_empty(), "carol got backscatter");
    assert!(!tx.log().contains("bounce sent"), "{}", tx.log());
    let dropped = "bounce not sent: nothing shows the sender is real";
    assert!(tx.log().contains(dropped), "{}", tx.log());
}

#[test]
fn delay_notice_then_expiry_bounce() {
    // Nobody ever listens at remote.test's MX.
    let dns = TestDns::start(&[
        "--mx-host=remote.test,mx1.remote.test,10",
        "--host-record=mx1.remote.test,127.0.0.2",
    ]);
    let tx = start_sender(sender_with_queue(
        &dns,
        shared_port(),
        "",
        "delay_warning = \"1s\"\nmax_lifetime = \"3s\"\n",
    ));
    let id = mta_tests::relay::submit(&tx, &[REMOTE_BOB], &message(REMOTE_BOB, "never"));

    let files = tx.wait_for_mail(ALICE, 2, 20);
    assert_eq!(files.len(), 2, "one delay notice and one bounce: {files:?}");
    tx.wait_for_empty_queue(secs(10));
    let dsns: Vec<_> = files.iter().map(|f| read_dsn(f)).collect();
    let subject = |i: usize| dsns[i].headers.expect("Subject").to_string();
    let (delayed, failed) = if subject(0).starts_with("Delayed") {
        (&dsns[0], &dsns[1])
    } else {
        (&dsns[1], &dsns[0])
    };
    assert_eq!(
        delayed.headers.expect("Subject"),
        "Delayed Mail (still being retried)"
    );
    let r = delayed.recipient(REMOTE_BOB);
    assert_eq!(r.expect("Action"), "delayed");
    assert!(r.expect("Status").starts_with("4."), "{r:?}");
    assert_eq!(delayed.per_message.expect("X-Mta-Queue-ID"), id);

    assert_eq!(
        failed.headers.expect("Subject"),
        "Undelivered Mail Returned to Sender"
    );
    let r = failed.recipient(REMOTE_BOB);
    assert_eq!(r.expect("Action"), "failed");
    // X.4.7, delivery time expired (RFC 3463). The code says 5.4.7, docs/queue.md 4.4.7:
    // either class is accepted here.
    let status = r.expect("Status");
    assert!(status == "5.4.7" || status == "4.4.7", "{r:?}");
    let diagnostic = r.expect("Diagnostic-Code");
    assert!(
        diagnostic.starts_with(&format!("X-mta; {status} gave up after ")),
        "{diagnostic}"
    );
    assert!(diagnostic.contains("last result: 4.4.1 "), "{diagnostic}");
    let log = tx.log();
    assert_eq!(log.matches("delay notice sent").count(), 1, "{log}");
    assert_eq!(log.matches("bounce sent").count(), 1, "{log}");
}
