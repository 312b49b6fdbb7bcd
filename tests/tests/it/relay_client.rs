//! What our SMTP client does with the receiver's extensions (docs/relay.md, "The SMTP
//! client"): SIZE and SMTPUTF8 are respected before anything is sent, and an open
//! connection carries the next message after a RSET.

use std::net::SocketAddr;

use mta_tests::dsn::wait_for_dsn;
use mta_tests::fake_smtp::{FakeSmtp, Script};
use mta_tests::relay::{
    REMOTE_BOB, REMOTE_BOB_PASSWORD, login, message, receiver, sender, start_sender, submit,
};
use mta_tests::{ALICE, TestDns, on_shared_port, queue_id, secs, wait_for};

fn dns() -> TestDns {
    TestDns::start(&[
        "--mx-host=remote.test,mx1.remote.test,10",
        "--host-record=mx1.remote.test,127.0.0.2",
    ])
}

#[test]
fn message_over_the_receivers_size_fails_5_3_4_unsent() {
    let dns = dns();
    let (port, rx) = on_shared_port("a receiver taking 1024 octets", |p| {
        let rx = receiver("mx1.remote.test", &["remote.test"], "127.0.0.2", p)
            .toml("[limits]\nmax_message_size = 1024\n")
            .try_start()?;
        rx.add_user(REMOTE_BOB, REMOTE_BOB_PASSWORD);
        Ok(rx)
    });
    let tx = start_sender(sender(&dns, port, ""));
    let mut big = message(REMOTE_BOB, "too big");
    big.extend_from_slice("x".repeat(70).as_bytes());
    for _ in 0..30 {
        big.extend_from_slice(format!("{}\r\n", "y".repeat(70)).as_bytes());
    }
    let id = submit(&tx, &[REMOTE_BOB], &big);

    let (_, dsn) = wait_for_dsn(&tx, ALICE, secs(10));
    assert_eq!(dsn.final_recipients(), [REMOTE_BOB]);
    let r = dsn.recipient(REMOTE_BOB);
    assert_eq!(r.expect("Status"), "5.3.4", "{r:?}");
    assert_eq!(dsn.per_message.expect("X-Mta-Queue-ID"), id);
    tx.wait_for_empty_queue(secs(10));
    assert!(rx.maildir_new(REMOTE_BOB).is_empty());
    assert!(
        !rx.log().contains("received msg="),
        "nothing may be sent: {}",
        rx.log()
    );
}

#[test]
fn utf8_recipient_to_a_server_without_smtputf8_fails_5_6_7() {
    // The fake offers no SMTPUTF8: the message cannot go there, and the bounce uses the
    // RFC 6533 types because the recipient's address is UTF-8.
    let dns = dns();
    let (port, fake) = on_shared_port("the fake receiver", |p| {
        FakeSmtp::start(SocketAddr::from(([127, 0, 0, 2], p)), Script::default())
    });
    let tx = start_sender(sender(&dns, port, ""));
    let to = "bøb@remote.test";
    let mut c = login(&tx);
    c.expect(&format!("MAIL FROM:<{ALICE}> SMTPUTF8"), 250);
    c.expect(&format!("RCPT TO:<{to}>"), 250);
    c.expect("DATA", 354);
    c.send_raw(&message(to, "utf8")).unwrap();
    let reply = c.command(".");
    assert_eq!(reply.code, 250, "{}", c.transcript());
    queue_id(&reply.to_string());

    let (_, dsn) = wait_for_dsn(&tx, ALICE, secs(10));
    assert!(dsn.global, "RFC 6533 report types for a UTF-8 recipient");
    assert_eq!(dsn.final_recipients(), [to]);
    assert_eq!(dsn.recipient(to).expect("Status"), "5.6.7");
    tx.wait_for_empty_queue(secs(10));
    assert!(
        fake.transactions().is_empty(),
        "no MAIL FROM may reach a server without SMTPUTF8:\n{}",
        fake.transcript()
    );
}

#[test]
fn next_message_reuses_the_open_connection() {
    let dns = dns();
    let (port, fake) = on_shared_port("the fake receiver", |p| {
        FakeSmtp::start(SocketAddr::from(([127, 0, 0, 2], p)), Script::default())
    });
    let tx = start_sender(sender(&dns, port, ""));
    submit(&tx, &[REMOTE_BOB], &message(REMOTE_BOB, "first"));
    wait_for(secs(10), "the first message at the fake", || {
        fake.transactions().len() == 1
    });
    submit(&tx, &[REMOTE_BOB], &message(REMOTE_BOB, "second"));
    wait_for(secs(10), "the second message at the fake", || {
        fake.transactions().len() == 2
    });
    tx.wait_for_empty_queue(secs(10));
    let ts = fake.transactions();
    assert_eq!(
        (ts[0].connection, ts[1].connection),
        (0, 0),
        "one connection for both:\n{}",
        fake.transcript()
    );
    assert_eq!(fake.connections(), 1, "{}", fake.transcript());
    let transcript = fake.transcript();
    let rset = transcript
        .find("C: RSET")
        .expect("a RSET before the second message");
    let second_mail = transcript.rfind("C: MAIL FROM").unwrap();
    assert!(rset < second_mail, "{transcript}");
}

#[test]
fn one_transaction_for_all_recipients_of_a_domain() {
    let dns = dns();
    let (port, fake) = on_shared_port("the fake receiver", |p| {
        FakeSmtp::start(SocketAddr::from(([127, 0, 0, 2], p)), Script::default())
    });
    let tx = start_sender(sender(&dns, port, ""));
    let carol = "carol@remote.test";
    submit(
        &tx,
        &[REMOTE_BOB, carol],
        &message(REMOTE_BOB, "two at once"),
    );
    tx.wait_for_empty_queue(secs(10));
    let ts = fake.transactions();
    assert_eq!(ts.len(), 1, "{}", fake.transcript());
    let rcpts: Vec<&str> = ts[0].rcpts.iter().map(|(line, _)| line.as_str()).collect();
    assert_eq!(
        rcpts,
        [
            format!("RCPT TO:<{REMOTE_BOB}>"),
            format!("RCPT TO:<{carol}>")
        ]
    );
}

#[test]
fn a_dead_kept_connection_is_replaced() {
    // The receiver dies (kill -9) and comes back while the sender keeps its connection
    // from the first message: the second message goes over a new one.
    let dns = dns();
    let (port, mut rx) = on_shared_port("the receiver", |p| {
        mta_tests::relay::try_remote_receiver("mx1.remote.test", "127.0.0.2", p)
    });
    let tx = start_sender(sender(&dns, port, ""));
    submit(&tx, &[REMOTE_BOB], &message(REMOTE_BOB, "before"));
    rx.wait_for_mail(REMOTE_BOB, 1, 10);
    tx.wait_for_empty_queue(secs(10));
    rx.kill9();
    rx.restart();
    submit(&tx, &[REMOTE_BOB], &message(REMOTE_BOB, "after"));
    let files = rx.wait_for_mail(REMOTE_BOB, 2, 10);
    assert_eq!(files.len(), 2);
    tx.wait_for_empty_queue(secs(10));
    assert!(
        !tx.log().contains("recipient deferred"),
        "the dead connection cost no retry: {}",
        tx.log()
    );
}

#[test]
fn a_connection_that_got_421_is_closed_not_kept() {
    // RFC 5321 §3.8: a 421 means the server is closing; replies after it (to pipelined
    // commands) may still be on their way. The fake answers the first RCPT on its first
    // connection with 421 and then goes on serving: reused, that connection would carry the
    // next message after a RSET.
    let dns = dns();
    let (port, fake) = on_shared_port("the fake receiver", |p| {
        let script = Script {
            rcpt: Box::new(|connection, _| match connection {
                0 => "421 4.3.2 closing this channel".into(),
                _ => "250 2.1.5 OK".into(),
            }),
            ..Script::default()
        };
        FakeSmtp::start(SocketAddr::from(([127, 0, 0, 2], p)), script)
    });
    let tx = start_sender(sender(&dns, port, ""));
    let first = submit(&tx, &[REMOTE_BOB], &message(REMOTE_BOB, "first"));
    let entry = tx.wait_for_deferral(&first, REMOTE_BOB, 1, secs(10));
    assert!(
        entry["last_result"]
            .as_str()
            .is_some_and(|r| r.starts_with("421 4.3.2")),
        "{entry}"
    );
    let carol = "carol@remote.test";
    submit(&tx, &[carol], &message(carol, "second"));
    wait_for(secs(10), "the second message at the fake", || {
        fake.transactions()
            .iter()
            .any(|t| t.rcpts.iter().any(|(l, _)| l.contains(carol)) && !t.wire_data.is_empty())
    });
    let transcript = fake.transcript();
    assert!(
        !transcript.lines().any(|l| l.starts_with("0 C: RSET")),
        "the connection that got 421 carried another transaction:\n{transcript}"
    );
    assert!(fake.connections() >= 2, "{transcript}");
}

#[test]
fn a_huge_reply_is_cut_where_it_is_stored_and_logged() {
    // 100 lines of 512 octets to every RCPT (RFC 5321's most per line, our most per reply):
    // ~50 KB of remote text per recipient, per attempt.
    let dns = dns();
    let (port, _fake) = on_shared_port("the fake receiver", |p| {
        let script = Script {
            rcpt: Box::new(|_, _| {
                let mut lines: Vec<String> = (0..99)
                    .map(|i| format!("451-4.3.0 {i:03} {}", "x".repeat(496)))
                    .collect();
                lines.push(format!("451 4.3.0 end {}", "y".repeat(496)));
                lines.join("\r\n")
            }),
            ..Script::default()
        };
        FakeSmtp::start(SocketAddr::from(([127, 0, 0, 2], p)), script)
    });
    let tx = start_sender(sender(&dns, port, ""));
    let rcpts: Vec<String> = (0..20).map(|i| format!("r{i}@remote.test")).collect();
    let to: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    let log_before = tx.log().len();
    let id = submit(&tx, &to, &message(to[0], "huge replies"));
    for r in &to {
        tx.wait_for_deferral(&id, r, 1, secs(20));
    }
    let record = tx.queue_record(&id).expect("still queued");
    let stored: usize = record["envelope"]["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let result = r["last_result"].as_str().unwrap_or_default();
            assert!(result.starts_with("451 4.3.0 000 xxx"), "{result}");
            assert!(result.len() <= 1024 + 200, "{} octets stored", result.len());
            result.len()
        })
        .sum();
    let log = tx.log();
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    eprintln!(
        "20 recipients, after the first attempt: {stored} octets of results stored, {} octets \
         logged, longest log line {longest}",
        log.len() - log_before
    );
    assert!(longest <= 2048, "a log line of {longest} octets");
}

#[test]
fn a_huge_starttls_refusal_is_cut_where_it_is_logged() {
    // A receiver that offers STARTTLS and refuses it with 100 lines of 512 octets, then hangs
    // up: the refusal is logged before the client goes on in plaintext.
    use std::io::{BufRead, BufReader, Write};
    let dns = dns();
    let (port, listener) = on_shared_port("the fake receiver", |p| {
        std::net::TcpListener::bind(("127.0.0.2", p)).map_err(|e| e.to_string())
    });
    listener.set_nonblocking(false).unwrap();
    let server = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(secs(20))).unwrap();
        let mut w = conn.try_clone().unwrap();
        let mut r = BufReader::new(conn);
        w.write_all(b"220 mx1.remote.test ESMTP\r\n").unwrap();
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        w.write_all(b"250-mx1.remote.test\r\n250 STARTTLS\r\n")
            .unwrap();
        line.clear();
        r.read_line(&mut line).unwrap();
        assert!(line.starts_with("STARTTLS"), "{line}");
        let mut lines: Vec<String> = (0..99)
            .map(|i| format!("454-4.7.0 {i:03} \u{2028}{}", "x".repeat(490)))
            .collect();
        lines.push(format!("454 4.7.0 end {}", "y".repeat(496)));
        w.write_all(format!("{}\r\n", lines.join("\r\n")).as_bytes())
            .unwrap();
        line.clear();
        let _ = r.read_line(&mut line);
    });
    let tx = start_sender(sender(&dns, port, ""));
    let id = submit(
        &tx,
        &["bob@remote.test"],
        &message("bob@remote.test", "huge refusal"),
    );
    tx.wait_for_deferral(&id, "bob@remote.test", 1, secs(30));
    server.join().unwrap();
    let log = tx.log();
    assert!(log.contains("STARTTLS refused"), "{log}");
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    assert!(longest <= 2048, "a log line of {longest} octets");
    assert!(
        !log.contains('\u{2028}'),
        "a raw line separator from the remote in the log"
    );
}
