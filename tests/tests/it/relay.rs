//! Relaying to remote domains through their MX hosts: dnsmasq answers for `.test`, a
//! sender (`mx.example.test`) takes alice's mail on its submission port, and receivers
//! (`mx1.remote.test` on `127.0.0.2:P`, `mx2.remote.test` on `127.0.0.3:P`) take it on the
//! shared port P that the sender uses for every MX host.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use mta_tests::fake_smtp::{FakeSmtp, Script, unstuff};
use mta_tests::relay::{
    REMOTE_BOB, message, sender, split_first_field, start_sender, submit, try_remote_receiver,
};
use mta_tests::{
    ALICE, TestDns, assert_same_bytes, on_shared_port, read_delivered, secs, shared_port, wait_for,
};

/// Checks a file in bob's Maildir at a receiver: relayed from the sender over TLS 1.3, our
/// own Received header below the receiver's, then the message as alice sent it.
fn assert_relayed(path: &std::path::Path, receiver_host: &str, sent: &[u8]) {
    let d = read_delivered(path);
    assert_eq!(d.return_path, format!("Return-Path: <{ALICE}>"));
    assert_eq!(d.delivered_to, format!("Delivered-To: {REMOTE_BOB}"));
    let r = &d.received;
    assert!(
        r.starts_with("Received: from mx.example.test ([127.0.0.1])\r\n"),
        "{r}"
    );
    assert!(
        r.contains(&format!("\r\n\tby {receiver_host} (mta) with ESMTPS id ")),
        "{r}"
    );
    assert!(r.contains("\r\n\t(using TLSv1.3 with cipher "), "{r}");
    let (ours, rest) = split_first_field(&d.rest, "Received");
    assert!(
        ours.contains("by mx.example.test (mta) with ESMTPSA id "),
        "{ours}"
    );
    assert_same_bytes("the relayed message after the Received headers", rest, sent);
}

#[test]
fn delivered_through_mx_with_starttls() {
    let dns = TestDns::start(&[
        "--mx-host=remote.test,mx1.remote.test,10",
        "--host-record=mx1.remote.test,127.0.0.2",
    ]);
    let (port, rx) = on_shared_port("the receiver", |p| {
        try_remote_receiver("mx1.remote.test", "127.0.0.2", p)
    });
    let tx = start_sender(sender(&dns, port, ""));
    let sent = message(REMOTE_BOB, "through mx");
    let id = submit(&tx, &[REMOTE_BOB], &sent);

    let files = rx.wait_for_mail(REMOTE_BOB, 1, 10);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_relayed(&files[0], "mx1.remote.test", &sent);
    tx.wait_for_empty_queue(secs(10));
    let log = tx.log();
    assert!(
        log.contains(&format!("msg{{id={id}}}")) && log.contains("remote attempt"),
        "{log}"
    );
}

#[test]
fn swaks_submission_is_relayed() {
    let dns = TestDns::start(&[
        "--mx-host=remote.test,mx1.remote.test,10",
        "--host-record=mx1.remote.test,127.0.0.2",
    ]);
    let (port, rx) = on_shared_port("the receiver", |p| {
        try_remote_receiver("mx1.remote.test", "127.0.0.2", p)
    });
    let tx = start_sender(sender(&dns, port, ""));
    let server = tx.submission_addr().to_string();
    let out = mta_tests::run(
        "swaks",
        std::process::Command::new("swaks")
            .args(["--server", &server, "--timeout", "10", "--tls"])
            .args(["--auth", "PLAIN", "--auth-user", ALICE])
            .args(["--auth-password", mta_tests::ALICE_PASSWORD])
            .args(["--from", ALICE, "--to", REMOTE_BOB]),
        b"",
        secs(30),
    );
    out.assert_success("swaks to the submission port");
    let files = rx.wait_for_mail(REMOTE_BOB, 1, 10);
    let d = read_delivered(&files[0]);
    assert!(
        d.received.contains("(using TLSv1.3 with cipher "),
        "{}",
        d.received
    );
    assert!(
        String::from_utf8_lossy(&d.rest).contains("This is a test mailing"),
        "{}",
        String::from_utf8_lossy(&d.rest)
    );
    tx.wait_for_empty_queue(secs(10));
}

#[test]
fn next_mx_when_the_first_refuses_connections() {
    // MX 10 is 127.0.0.3, where nothing listens on P; MX 20 is the receiver.
    let dns = TestDns::start(&[
        "--mx-host=remote.test,mx2.remote.test,10",
        "--mx-host=remote.test,mx1.remote.test,20",
        "--host-record=mx2.remote.test,127.0.0.3",
        "--host-record=mx1.remote.test,127.0.0.2",
    ]);
    let (port, rx) = on_shared_port("the receiver", |p| {
        try_remote_receiver("mx1.remote.test", "127.0.0.2", p)
    });
    let tx = start_sender(sender(&dns, port, ""));
    let sent = message(REMOTE_BOB, "fallback");
    submit(&tx, &[REMOTE_BOB], &sent);

    let files = rx.wait_for_mail(REMOTE_BOB, 1, 10);
    assert_relayed(&files[0], "mx1.remote.test", &sent);
    tx.wait_for_empty_queue(secs(10));
    let log = tx.log();
    assert!(
        log.contains("connection attempt failed; trying the next host")
            && log.contains("mx2.remote.test"),
        "the refused first MX should be logged:\n{log}"
    );
}

#[test]
fn lower_preference_number_wins() {
    // Both MX hosts are up: every message goes to preference 10 (mx2, 127.0.0.3), none to
    // preference 20 (mx1, 127.0.0.2). Three messages, so a coin toss rarely passes.
    let dns = TestDns::start(&[
        "--mx-host=remote.test,mx1.remote.test,20",
        "--mx-host=remote.test,mx2.remote.test,10",
        "--host-record=mx1.remote.test,127.0.0.2",
        "--host-record=mx2.remote.test,127.0.0.3",
    ]);
    let (port, (mx1, mx2)) = on_shared_port("two receivers", |p| {
        let mx1 = try_remote_receiver("mx1.remote.test", "127.0.0.2", p)?;
        let mx2 = try_remote_receiver("mx2.remote.test", "127.0.0.3", p)?;
        Ok((mx1, mx2))
    });
    let tx = start_sender(sender(&dns, port, ""));
    for n in 0..3 {
        submit(
            &tx,
            &[REMOTE_BOB],
            &message(REMOTE_BOB, &format!("pref {n}")),
        );
    }
    let files = mx2.wait_for_mail(REMOTE_BOB, 3, 10);
    for f in &files {
        let d = read_delivered(f);
        assert!(
            d.received.contains("by mx2.remote.test (mta)"),
            "{}",
            d.received
        );
    }
    tx.wait_for_empty_queue(secs(10));
    assert!(
        mx1.maildir_new(REMOTE_BOB).is_empty(),
        "the less preferred MX got mail"
    );
}

#[test]
fn implicit_mx_from_the_a_record() {
    // No MX at all: the domain's own address (RFC 5321 §5.1).
    let dns = TestDns::start(&["--host-record=remote.test,127.0.0.2"]);
    let (port, rx) = on_shared_port("the receiver", |p| {
        try_remote_receiver("remote.test", "127.0.0.2", p)
    });
    let tx = start_sender(sender(&dns, port, ""));
    let sent = message(REMOTE_BOB, "implicit mx");
    submit(&tx, &[REMOTE_BOB], &sent);
    let files = rx.wait_for_mail(REMOTE_BOB, 1, 10);
    assert_relayed(&files[0], "remote.test", &sent);
    tx.wait_for_empty_queue(secs(10));
}

#[test]
fn receiver_down_at_first_gets_it_on_retry() {
    let dns = TestDns::start(&[
        "--mx-host=remote.test,mx1.remote.test,10",
        "--host-record=mx1.remote.test,127.0.0.2",
    ]);
    // Nobody listens on 127.0.0.2:P yet.
    let port = shared_port();
    let tx = start_sender(sender(&dns, port, ""));
    let sent = message(REMOTE_BOB, "retry");
    let id = submit(&tx, &[REMOTE_BOB], &sent);

    let rcpt = tx.wait_for_deferral(&id, REMOTE_BOB, 1, secs(10));
    let last = rcpt["last_result"].as_str().unwrap_or_default();
    assert!(
        last.starts_with("4.") && last.contains("mx1.remote.test"),
        "a temporary failure naming the MX: {rcpt}"
    );

    let rx = try_remote_receiver("mx1.remote.test", "127.0.0.2", port)
        .unwrap_or_else(|e| panic!("the receiver could not take port {port} after all: {e}"));
    let files = rx.wait_for_mail(REMOTE_BOB, 1, 15);
    assert_relayed(&files[0], "mx1.remote.test", &sent);
    tx.wait_for_empty_queue(secs(10));
    assert_eq!(rx.maildir_new(REMOTE_BOB).len(), 1, "delivered once");
}

#[test]
fn remote_4xx_reply_is_retried() {
    // A receiver that says 451 to the first RCPT and 250 afterwards. (The sender may keep
    // the connection open for the retry: the answer counts RCPTs, not connections.)
    let dns = TestDns::start(&[
        "--mx-host=remote.test,mx1.remote.test,10",
        "--host-record=mx1.remote.test,127.0.0.2",
    ]);
    let (port, fake) = on_shared_port("the fake receiver", |p| {
        let rcpts = AtomicUsize::new(0);
        FakeSmtp::start(
            SocketAddr::from(([127, 0, 0, 2], p)),
            Script {
                rcpt: Box::new(move |_, _| match rcpts.fetch_add(1, Ordering::SeqCst) {
                    0 => "451 4.2.1 mailbox busy, try later".into(),
                    _ => "250 2.1.5 OK".into(),
                }),
                ..Script::default()
            },
        )
    });
    let tx = start_sender(sender(&dns, port, ""));
    let sent = message(REMOTE_BOB, "busy");
    let id = submit(&tx, &[REMOTE_BOB], &sent);

    let rcpt = tx.wait_for_deferral(&id, REMOTE_BOB, 1, secs(10));
    let last = rcpt["last_result"].as_str().unwrap_or_default();
    assert!(
        last.starts_with("451 4.2.1 mailbox busy"),
        "the remote reply is the last result: {rcpt}"
    );
    wait_for(secs(15), "a delivered transaction at the fake", || {
        fake.transactions()
            .iter()
            .any(|t| t.data_reply.starts_with("250"))
    });
    tx.wait_for_empty_queue(secs(10));
    let delivered: Vec<_> = fake
        .transactions()
        .into_iter()
        .filter(|t| !t.wire_data.is_empty())
        .collect();
    assert_eq!(delivered.len(), 1, "{}", fake.transcript());
    let first = &fake.transactions()[0];
    assert!(
        first.wire_data.is_empty() && first.rcpts[0].1.starts_with("451"),
        "the first attempt was refused with 451 and sent no data\n{}",
        fake.transcript()
    );
    assert_same_bytes(
        "the message at the fake after our Received header",
        split_first_field(&unstuff(&delivered[0].wire_data), "Received").1,
        &sent,
    );
}

#[test]
fn deferred_message_survives_kill_9() {
    let dns = TestDns::start(&[
        "--mx-host=remote.test,mx1.remote.test,10",
        "--host-record=mx1.remote.test,127.0.0.2",
    ]);
    // Nobody listens on 127.0.0.2:P until the sender is dead.
    let port = shared_port();
    let mut tx = start_sender(sender(&dns, port, ""));
    let sent = message(REMOTE_BOB, "durable relay");
    let id = submit(&tx, &[REMOTE_BOB], &sent);
    tx.wait_for_deferral(&id, REMOTE_BOB, 1, secs(10));

    tx.kill9();
    let rx = try_remote_receiver("mx1.remote.test", "127.0.0.2", port)
        .unwrap_or_else(|e| panic!("the receiver could not take port {port}: {e}"));
    tx.restart();

    let files = rx.wait_for_mail(REMOTE_BOB, 1, 15);
    assert_relayed(&files[0], "mx1.remote.test", &sent);
    tx.wait_for_empty_queue(secs(10));
    assert_eq!(
        rx.maildir_new(REMOTE_BOB).len(),
        1,
        "delivered exactly once"
    );
    let d = read_delivered(&files[0]);
    let (ours, _) = split_first_field(&d.rest, "Received");
    assert!(ours.contains(&format!(" id {id}")), "{ours}");
}

#[test]
fn refused_and_garbled_greetings_fall_through_to_the_next_mx() {
    // MX 5 greets with garbage, MX 10 with 554; MX 20 is the real receiver.
    let dns = TestDns::start(&[
        "--mx-host=remote.test,mx3.remote.test,5",
        "--mx-host=remote.test,mx2.remote.test,10",
        "--mx-host=remote.test,mx1.remote.test,20",
        "--host-record=mx3.remote.test,127.0.0.4",
        "--host-record=mx2.remote.test,127.0.0.3",
        "--host-record=mx1.remote.test,127.0.0.2",
    ]);
    let greeter = |text: &'static str| Script {
        greeting: Box::new(move |_| text.into()),
        ..Script::default()
    };
    let (port, (garbled, refusing, rx)) = on_shared_port("two fakes and a receiver", |p| {
        let garbled = FakeSmtp::start(
            SocketAddr::from(([127, 0, 0, 4], p)),
            greeter("hello? \u{1b}[31m this is not SMTP"),
        )?;
        let refusing = FakeSmtp::start(
            SocketAddr::from(([127, 0, 0, 3], p)),
            greeter("554 5.7.1 no service for you"),
        )?;
        let rx = try_remote_receiver("mx1.remote.test", "127.0.0.2", p)?;
        Ok((garbled, refusing, rx))
    });
    let tx = start_sender(sender(&dns, port, ""));
    let sent = message(REMOTE_BOB, "greetings");
    submit(&tx, &[REMOTE_BOB], &sent);

    let files = rx.wait_for_mail(REMOTE_BOB, 1, 10);
    assert_relayed(&files[0], "mx1.remote.test", &sent);
    tx.wait_for_empty_queue(secs(10));
    assert_eq!(garbled.connections(), 1, "{}", garbled.transcript());
    assert_eq!(refusing.connections(), 1, "{}", refusing.transcript());
    assert!(garbled.transactions().is_empty() && refusing.transactions().is_empty());
    assert!(
        refusing.transcript().contains("C: QUIT"),
        "QUIT after a refused greeting (RFC 5321 §3.1):\n{}",
        refusing.transcript()
    );
    assert!(
        !tx.log().contains('\u{1b}'),
        "remote text reaches the log without control characters"
    );
}

#[test]
fn local_and_remote_recipients_in_one_message() {
    let dns = TestDns::start(&[
        "--mx-host=remote.test,mx1.remote.test,10",
        "--host-record=mx1.remote.test,127.0.0.2",
    ]);
    let (port, rx) = on_shared_port("the receiver", |p| {
        try_remote_receiver("mx1.remote.test", "127.0.0.2", p)
    });
    let tx = start_sender(sender(&dns, port, ""));
    let sent = message(REMOTE_BOB, "both");
    let id = submit(&tx, &[ALICE, REMOTE_BOB], &sent);

    let remote = rx.wait_for_mail(REMOTE_BOB, 1, 10);
    assert_relayed(&remote[0], "mx1.remote.test", &sent);
    let local = tx.wait_for_mail(ALICE, 1, 10);
    let d = read_delivered(&local[0]);
    assert_eq!(d.delivered_to, format!("Delivered-To: {ALICE}"));
    assert!(d.received.contains(&format!(" id {id}")), "{}", d.received);
    assert!(d.rest.ends_with(&sent));
    tx.wait_for_empty_queue(secs(10));
}

#[test]
fn mx_host_without_an_address_is_skipped() {
    // MX 10 names a host that does not exist; MX 20 is the receiver.
    let dns = TestDns::start(&[
        "--mx-host=remote.test,ghost.remote.test,10",
        "--mx-host=remote.test,mx1.remote.test,20",
        "--host-record=mx1.remote.test,127.0.0.2",
    ]);
    let (port, rx) = on_shared_port("the receiver", |p| {
        try_remote_receiver("mx1.remote.test", "127.0.0.2", p)
    });
    let tx = start_sender(sender(&dns, port, ""));
    let sent = message(REMOTE_BOB, "ghost");
    submit(&tx, &[REMOTE_BOB], &sent);
    let files = rx.wait_for_mail(REMOTE_BOB, 1, 10);
    assert_relayed(&files[0], "mx1.remote.test", &sent);
    tx.wait_for_empty_queue(secs(10));
}
