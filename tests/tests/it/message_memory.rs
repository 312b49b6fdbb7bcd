//! The budget for message bytes held in memory (`limits.message_memory`): a message that
//! would pass it is read to its end and refused with `452 4.3.1`, DATA while it is spent
//! gets `452 4.3.1` before `354`, and every byte is given back once a message is queued.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use mta_tests::{ALICE, SmtpClient, TestMta, secs, wait_for};

const MIB: usize = 1 << 20;

/// `limits.message_memory` as the metrics endpoint reports it now.
fn held(metrics: SocketAddr) -> u64 {
    let mut s = TcpStream::connect(metrics).expect("connect to the metrics listener");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read the response");
    text.lines()
        .find_map(|l| l.strip_prefix("mta_message_memory_bytes "))
        .map_or(0, |v| v.trim().parse().expect("a number"))
}

/// Message lines of 512 octets (CRLF included) adding up to exactly `total` octets.
fn filler(total: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(total);
    while out.len() < total {
        let n = (total - out.len()).min(512);
        assert!(n >= 2, "a line needs its CRLF");
        out.extend(std::iter::repeat_n(b'x', n - 2));
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn client(mta: &TestMta) -> SmtpClient {
    let mut c = SmtpClient::connect(mta.smtp_addr());
    c.reply("the greeting");
    c.expect("EHLO client.test", 250);
    c
}

#[test]
fn concurrent_messages_share_one_memory_budget() {
    let mta = TestMta::start(
        "[limits]\nmax_message_size = 1048576\nmessage_memory = 1048576\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n",
    );
    mta.add_user(ALICE, "alice-password-1");
    let metrics = mta.listener("metrics");

    // The first client sends 600 KiB of its message and waits before the dot.
    let mut first = client(&mta);
    first.expect("MAIL FROM:<a@remote.test>", 250);
    first.expect(&format!("RCPT TO:<{ALICE}>"), 250);
    first.expect("DATA", 354);
    let mut head = format!("Subject: first{}\r\n\r\n", " ".repeat(512 - 16)).into_bytes();
    assert_eq!(head.len(), 514);
    head.extend(filler(600 * 1024 - head.len()));
    first.send_raw(&head).unwrap();
    // Held: the buffer's whole capacity, which grows at most 256 KiB past what it keeps.
    wait_for(secs(30), "the first 600 KiB to be held", || {
        (600 * 1024..(600 + 256) * 1024).contains(&held(metrics))
    });
    let first_held = held(metrics);

    // A second 600 KiB message does not fit beside it: read to its dot, then refused with
    // a temporary error, the dialogue still in step.
    let mut second = client(&mta);
    let mut message = b"Subject: second\r\n\r\n".to_vec();
    message.extend(filler(600 * 1024));
    let reply = second.send_message("b@remote.test", &[ALICE], &message);
    assert!(reply.matches(452, Some("4.3.1")), "{}", second.transcript());
    second.expect("NOOP", 250);
    assert_eq!(
        held(metrics),
        first_held,
        "the refused message holds nothing"
    );

    // The first fills the budget exactly (its buffer never grows past the size limit):
    // DATA now gets 452 4.3.1 before 354.
    first.send_raw(&filler(MIB - 600 * 1024)).unwrap();
    wait_for(secs(30), "the whole budget to be held", || {
        held(metrics) == MIB as u64
    });
    let mut third = client(&mta);
    third.expect("MAIL FROM:<c@remote.test>", 250);
    third.expect(&format!("RCPT TO:<{ALICE}>"), 250);
    let reply = third.expect("DATA", 452);
    assert!(reply.matches(452, Some("4.3.1")), "{}", third.transcript());
    third.expect("NOOP", 250);

    // The first message is accepted, our `Received:` added although the budget is full;
    // its bytes are given back when it is queued, so the second client's next try is
    // accepted too.
    first.send_raw(b".\r\n").unwrap();
    let reply = first.reply("the reply to the first message");
    assert_eq!(reply.code, 250, "{}", first.transcript());
    assert_eq!(held(metrics), 0, "queued: nothing held");
    let reply = second.send_message("b@remote.test", &[ALICE], &message);
    assert_eq!(reply.code, 250, "{}", second.transcript());
    assert_eq!(held(metrics), 0, "queued: nothing held");
    mta.wait_for_mail(ALICE, 2, 30);
}
