//! Outbound CHUNKING (RFC 3030): to a receiver that offers it, the message goes in BDAT
//! chunks of at most 1 MiB, not dot-stuffed, byte for byte as it was submitted; to one that
//! does not, it goes with DATA as before.

use std::net::SocketAddr;

use mta_tests::fake_smtp::{FakeSmtp, Script, Transaction, unstuff};
use mta_tests::relay::{REMOTE_BOB, message, sender, start_sender, submit};
use mta_tests::{ALICE, TestDns, on_shared_port, secs, wait_for};

fn dns() -> TestDns {
    TestDns::start(&[
        "--mx-host=remote.test,mx1.remote.test,10",
        "--host-record=mx1.remote.test,127.0.0.2",
    ])
}

/// A message of about 2.5 MiB whose lines DATA would stuff (`.` and `..x`).
fn big_message() -> Vec<u8> {
    let mut m = message(REMOTE_BOB, "chunked");
    m.extend_from_slice(b".\r\n..x\r\n.y\r\n");
    for i in 0..33_000 {
        m.extend_from_slice(format!("{i:08} {}\r\n", "z".repeat(70)).as_bytes());
    }
    m.extend_from_slice(b".\r\nend\r\n");
    m
}

fn delivered(fake: &FakeSmtp) -> Transaction {
    wait_for(secs(20), "the message at the fake receiver", || {
        fake.transactions().iter().any(|t| !t.data_reply.is_empty())
    });
    fake.transactions()
        .into_iter()
        .find(|t| !t.data_reply.is_empty())
        .expect("a transaction with data")
}

#[test]
fn a_receiver_with_chunking_gets_bdat_chunks_unstuffed() {
    let dns = dns();
    let (port, fake) = on_shared_port("the chunking fake receiver", |p| {
        FakeSmtp::start_chunking(SocketAddr::from(([127, 0, 0, 2], p)), Script::default())
    });
    let tx = start_sender(sender(&dns, port, ""));
    let msg = big_message();
    submit(&tx, &[REMOTE_BOB], &msg);
    let t = delivered(&fake);
    assert!(t.chunks.len() >= 3, "{:?}", t.chunks);
    assert!(
        t.chunks.iter().all(|&c| c > 0 && c <= 1 << 20),
        "{:?}",
        t.chunks
    );
    assert_eq!(t.chunks.iter().sum::<usize>(), t.wire_data.len());
    assert!(
        t.wire_data.ends_with(&msg),
        "the chunks end with the message as submitted, unstuffed"
    );
    let transcript = fake.transcript();
    assert!(
        !transcript.lines().any(|l| l.ends_with("C: DATA")),
        "{transcript}"
    );
    assert!(
        transcript
            .lines()
            .any(|l| l.contains("C: BDAT") && l.ends_with(" LAST")),
        "{transcript}"
    );
    tx.wait_for_empty_queue(secs(10));
}

#[test]
fn a_receiver_without_chunking_gets_data() {
    let dns = dns();
    let (port, fake) = on_shared_port("the fake receiver", |p| {
        FakeSmtp::start(SocketAddr::from(([127, 0, 0, 2], p)), Script::default())
    });
    let tx = start_sender(sender(&dns, port, ""));
    let msg = big_message();
    submit(&tx, &[REMOTE_BOB], &msg);
    let t = delivered(&fake);
    assert!(t.chunks.is_empty());
    assert!(unstuff(&t.wire_data).ends_with(&msg));
    assert!(!fake.transcript().contains("C: BDAT"));
    tx.wait_for_empty_queue(secs(10));
}

/// A refusal of the last chunk decides the recipients as a refusal after DATA does: a
/// `5xx` fails the message (and bounces it), never a false delivery.
#[test]
fn a_refused_last_chunk_fails_the_recipient() {
    let dns = dns();
    let (port, fake) = on_shared_port("the refusing chunking fake", |p| {
        let script = Script {
            data: Box::new(|_| "554 5.7.1 not this one".into()),
            ..Script::default()
        };
        FakeSmtp::start_chunking(SocketAddr::from(([127, 0, 0, 2], p)), script)
    });
    let tx = start_sender(sender(&dns, port, ""));
    let id = submit(&tx, &[REMOTE_BOB], &message(REMOTE_BOB, "refused"));
    let _ = delivered(&fake);
    wait_for(secs(10), "the failure logged", || {
        tx.log().contains("554 5.7.1 not this one") && tx.queue_record(&id).is_none()
    });
}

/// A receiver that offers CHUNKING but answers BDAT `502` (a middlebox that passes the
/// keyword and blocks the command) has not judged the message: the attempt fails for now,
/// the host is remembered, and the next attempt sends DATA to it. Delivered, never bounced.
#[test]
fn bdat_not_implemented_falls_back_to_data() {
    let dns = dns();
    let (port, fake) = on_shared_port("the fake that blocks BDAT", |p| {
        let script = Script {
            bdat: Box::new(|_, _| Some("502 5.5.1 command not implemented".into())),
            ..Script::default()
        };
        FakeSmtp::start_chunking(SocketAddr::from(([127, 0, 0, 2], p)), script)
    });
    let tx = start_sender(sender(&dns, port, ""));
    let msg = message(REMOTE_BOB, "blocked bdat");
    let id = submit(&tx, &[REMOTE_BOB], &msg);
    let t = delivered(&fake);
    assert!(t.chunks.is_empty(), "{:?}", t.chunks);
    assert!(unstuff(&t.wire_data).ends_with(&msg));
    let transcript = fake.transcript();
    assert!(transcript.contains("C: BDAT"), "{transcript}");
    assert!(
        transcript.lines().any(|l| l.ends_with("C: DATA")),
        "{transcript}"
    );
    tx.wait_for_empty_queue(secs(20));
    assert!(tx.queue_record(&id).is_none());
    assert!(tx.maildir_new(ALICE).is_empty(), "no bounce: {}", tx.log());
}
