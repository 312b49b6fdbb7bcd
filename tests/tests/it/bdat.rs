//! CHUNKING (RFC 3030) against the real server: a message sent in BDAT chunks, cut in any
//! way and pipelined, is stored byte for byte as the same message sent with DATA; every bad
//! chunk gets its RFC reply, the dialogue stays in step (or the connection closes when it
//! cannot), and nothing is queued from a refused or unfinished transaction.

use mta_tests::{SmtpClient, TestMta};
use mta_tests::{assert_same_bytes, read_delivered};

const BOB: &str = "bob@example.test";

fn server(extra_toml: &str) -> TestMta {
    let mta = TestMta::start(extra_toml);
    mta.add_user(BOB, "bob-password-1");
    mta
}

fn client(mta: &TestMta) -> SmtpClient {
    let mut c = SmtpClient::connect(mta.smtp_addr());
    c.reply("the greeting");
    c.expect("EHLO client.test", 250);
    c
}

/// Messages the server logged as received (each is logged once it is queued, before its
/// `250`).
/// How many messages `mta` logged as received so far.
fn received(mta: &TestMta) -> usize {
    mta.log().matches("received").count()
}

/// [`received`], once the log shows a delivery: the server logs "received" before
/// "delivered", and its log is read by another thread, so counting before that line is read
/// could miss one.
fn received_after_delivery(mta: &TestMta) -> usize {
    mta.wait_logged(mta_tests::secs(10), "a delivery in the log", || {
        mta.log().contains("delivered")
    });
    received(mta)
}

/// `chunks` as BDAT commands with their octets, the last with `LAST`.
fn wire(chunks: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let last = if i + 1 == chunks.len() { " LAST" } else { "" };
        out.extend_from_slice(format!("BDAT {}{last}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

/// A message with what DATA would stuff (lines that are or start with a dot), an empty
/// line, a line of 998 octets, and 8-bit text.
fn message() -> Vec<u8> {
    let mut m =
        b"From: someone@remote.test\r\nTo: bob@example.test\r\nSubject: chunks\r\n\r\n".to_vec();
    m.extend_from_slice(b".\r\n..two\r\n.three\r\n\r\nend of paragraph\r\n");
    m.extend(std::iter::repeat_n(b'x', 998));
    m.extend_from_slice(b"\r\ncaf\xc3\xa9\r\n.\r\nlast line\r\n");
    m
}

/// The same message sent with DATA and with BDAT in several chunkings (whole; cut inside a
/// CRLF and after a dot; an empty `BDAT 0 LAST` at the end; one octet per chunk for a
/// start), each chunking pipelined in one write: every copy in the Maildir is the DATA copy
/// byte for byte after our trace header.
#[test]
fn chunked_messages_are_stored_as_the_same_message_sent_with_data() {
    let mta = server("");
    let msg = message();
    let mut c = client(&mta);
    let ehlo = c.command("EHLO client.test");
    assert!(ehlo.lines.iter().any(|l| l == "CHUNKING"), "{ehlo:?}");
    assert!(!ehlo.lines.iter().any(|l| l.contains("BINARYMIME")));
    let r = c.send_message("someone@remote.test", &[BOB], &msg);
    assert_eq!(r.code, 250, "{}", c.transcript());
    let want = read_delivered(&mta.wait_for_mail(BOB, 1, 10)[0]).rest;

    let crlf = msg.windows(2).position(|w| w == b"\r\n").unwrap();
    let dot = msg.windows(3).position(|w| w == b"\n.\r").unwrap();
    let chunkings: Vec<Vec<&[u8]>> = vec![
        vec![&msg],
        vec![&msg[..=crlf], &msg[crlf + 1..=dot + 1], &msg[dot + 2..]],
        vec![&msg[..100], &msg[100..], b""],
        vec![&msg[..1], &msg[1..2], &msg[2..3], &msg[3..]],
    ];
    for chunks in &chunkings {
        let replies = c.send_chunks("someone@remote.test", &[BOB], chunks);
        let (last, each) = replies.split_last().unwrap();
        for r in each {
            assert!(r.matches(250, Some("2.0.0")), "{}", c.transcript());
        }
        assert!(last.matches(250, Some("2.0.0")), "{}", c.transcript());
        assert!(last.lines[0].contains("queued as"), "{last:?}");
    }
    let mail = mta.wait_for_mail(BOB, 1 + chunkings.len(), 10);
    assert_eq!(mail.len(), 1 + chunkings.len());
    for path in &mail {
        assert_same_bytes("the chunked copy", &read_delivered(path).rest, &want);
    }
    // Two whole transactions pipelined in one write.
    let one = b"From: someone@remote.test\r\nSubject: p1\r\n\r\none\r\n";
    let two = b"From: someone@remote.test\r\nSubject: p2\r\n\r\ntwo\r\n";
    let mut wire = Vec::new();
    for m in [&one[..], &two[..]] {
        wire.extend_from_slice(
            format!(
                "MAIL FROM:<someone@remote.test>\r\nRCPT TO:<{BOB}>\r\nBDAT {} LAST\r\n",
                m.len()
            )
            .as_bytes(),
        );
        wire.extend_from_slice(m);
    }
    c.send_raw(&wire).unwrap();
    for _ in 0..2 {
        assert_eq!(c.reply("MAIL").code, 250, "{}", c.transcript());
        assert_eq!(c.reply("RCPT").code, 250, "{}", c.transcript());
        let r = c.reply("BDAT LAST");
        assert!(r.lines[0].contains("queued as"), "{}", c.transcript());
    }
    c.expect("QUIT", 221);
    assert_eq!(
        mta.wait_for_mail(BOB, 3 + chunkings.len(), 10).len(),
        3 + chunkings.len()
    );
}

/// Each bad input gets the reply RFC 3030 and RFC 5321 give it, the chunk's octets are
/// never read as commands (NOOP after it is answered 250), or the connection closes when
/// the octets cannot be counted; none of these transactions is queued.
#[test]
fn bad_chunks_get_their_replies_and_queue_nothing() {
    let mta = server("[limits]\nmax_message_size = 2000\nmax_errors = 50\n");
    let start = |c: &mut SmtpClient| {
        c.expect("MAIL FROM:<someone@remote.test>", 250);
        c.expect(&format!("RCPT TO:<{BOB}>"), 250);
    };
    let raw = |c: &mut SmtpClient, bytes: &[u8], what: &str| {
        c.send_raw(bytes).unwrap();
        c.reply(what)
    };
    let in_step = |c: &mut SmtpClient| {
        // Were the chunk's octets read as commands, this would get their replies first.
        c.expect("NOOP", 250);
    };

    // BDAT before MAIL: 503, the octets skipped (they look like a whole transaction).
    let mut c = client(&mta);
    let inner = format!("MAIL FROM:<a@remote.test>\r\nRCPT TO:<{BOB}>\r\nDATA\r\n");
    let r = raw(
        &mut c,
        format!("BDAT {} LAST\r\n{inner}", inner.len()).as_bytes(),
        "503",
    );
    assert!(r.matches(503, Some("5.5.1")), "{}", c.transcript());
    in_step(&mut c);

    // After MAIL without an accepted recipient: 554, skipped.
    c.expect("MAIL FROM:<someone@remote.test>", 250);
    c.expect("RCPT TO:<nobody@example.test>", 550);
    let r = raw(&mut c, b"BDAT 5 LAST\r\nNOOP\r", "554");
    assert!(r.matches(554, Some("5.5.1")), "{}", c.transcript());
    c.expect("RSET", 250);

    // DATA after BDAT: 503 and the transaction reset, so the next chunk has none.
    start(&mut c);
    let r = raw(&mut c, b"BDAT 6\r\nSubj: ", "the first chunk");
    assert_eq!(r.code, 250, "{}", c.transcript());
    let r = c.command("DATA");
    assert!(r.matches(503, Some("5.5.1")), "{}", c.transcript());
    let r = raw(&mut c, b"BDAT 5 LAST\r\nx\r\n\r\n", "503 after the reset");
    assert!(r.matches(503, Some("5.5.1")), "{}", c.transcript());
    in_step(&mut c);

    // Over the size limit across chunks: 552 at the chunk that passes it (read whole),
    // the rest of the pipelined chunks 503.
    start(&mut c);
    let two = format!("{}\r\n", "a".repeat(548)).repeat(2);
    let bytes = format!("BDAT 1100\r\n{two}BDAT 1100\r\n{two}BDAT 1100 LAST\r\n{two}");
    c.send_raw(bytes.as_bytes()).unwrap();
    assert_eq!(c.reply("chunk 1").code, 250, "{}", c.transcript());
    let r = c.reply("chunk 2");
    assert!(r.matches(552, Some("5.3.4")), "{}", c.transcript());
    let r = c.reply("chunk 3");
    assert!(r.matches(503, Some("5.5.1")), "{}", c.transcript());
    in_step(&mut c);
    // One chunk announced far over the limit is read and thrown away, never allocated.
    start(&mut c);
    let big = "b".repeat(50_000);
    let r = raw(
        &mut c,
        format!("BDAT {} LAST\r\n{big}", big.len()).as_bytes(),
        "552",
    );
    assert!(r.matches(552, Some("5.3.4")), "{}", c.transcript());
    in_step(&mut c);

    // A line over 1000 octets in a chunk.
    start(&mut c);
    let long = "c".repeat(999);
    let r = raw(
        &mut c,
        format!("BDAT 1001 LAST\r\n{long}\r\n").as_bytes(),
        "550",
    );
    assert!(r.matches(550, Some("5.6.0")), "{}", c.transcript());
    in_step(&mut c);

    // RSET between chunks drops what was received: the next transaction starts empty.
    start(&mut c);
    let r = raw(
        &mut c,
        b"BDAT 18\r\nSubject: dropped\r\n",
        "the first chunk",
    );
    assert_eq!(r.code, 250, "{}", c.transcript());
    c.expect("RSET", 250);
    let r = raw(&mut c, b"BDAT 3 LAST\r\nx\r\n", "503 after RSET");
    assert!(r.matches(503, Some("5.5.1")), "{}", c.transcript());
    c.expect("QUIT", 221);

    // Sizes that cannot be counted: 501 and the connection closed.
    for bad in [
        "BDAT",
        "BDAT x LAST",
        "BDAT -5",
        "BDAT 123456789012345678901",
        "BDAT 5 LATER",
    ] {
        let mut c = client(&mta);
        start(&mut c);
        let r = c.command(bad);
        assert!(r.matches(501, Some("5.5.4")), "{bad}: {}", c.transcript());
        assert!(c.is_closed(), "{bad}: {}", c.transcript());
    }

    // A bare LF or CR inside the message, also across two chunks, or a NUL: 550 and closed.
    let framings: [&[&[u8]]; 4] = [
        &[b"ab\nc\r\n"],
        &[b"ab\r", b"c\r\n"],
        &[b"ab\r", b"\nc\n"],
        &[b"a\0b\r\n"],
    ];
    for chunks in framings {
        let mut c = client(&mta);
        start(&mut c);
        let bytes = wire(chunks);
        c.send_raw(&bytes).unwrap();
        let mut r = c.reply("the refusal");
        if r.code == 250 {
            r = c.reply("the refusal after a first chunk");
        }
        assert!(
            r.matches(550, Some("5.6.0")),
            "{bytes:?}: {}",
            c.transcript()
        );
        assert!(c.is_closed(), "{bytes:?}: {}", c.transcript());
    }

    // The connection closes mid-chunk: nothing queued.
    let mut c = client(&mta);
    start(&mut c);
    c.send_raw(b"BDAT 100 LAST\r\nFrom: someone@remote.test\r\n\r\nhalf")
        .unwrap();
    drop(c);

    // BINARYMIME is not offered, so BODY=BINARYMIME is refused.
    let mut c = client(&mta);
    let r = c.command("MAIL FROM:<someone@remote.test> BODY=BINARYMIME");
    assert!(r.matches(555, Some("5.5.4")), "{}", c.transcript());

    // Nothing of the above was queued: a last honest message is the only one delivered.
    let honest = b"From: someone@remote.test\r\nSubject: honest\r\n\r\nhello\r\n";
    let replies = c.send_chunks("someone@remote.test", &[BOB], &[honest]);
    assert!(
        replies[0].lines[0].contains("queued as"),
        "{}",
        c.transcript()
    );
    let mail = mta.wait_for_mail(BOB, 1, 10);
    assert_eq!(received_after_delivery(&mta), 1, "{}", mta.log());
    assert_eq!(mail.len(), 1);
    assert_same_bytes("the honest message", &read_delivered(&mail[0]).rest, honest);
}

/// A lying size: more octets than announced. The extra octets are read as commands, each
/// under the same checks as any command (here a relay attempt, refused), so they cannot
/// bring a second message past them; the first message is exactly the announced octets.
#[test]
fn octets_past_a_chunk_are_commands_under_every_check() {
    let mta = server("");
    let mut c = client(&mta);
    c.expect("MAIL FROM:<someone@remote.test>", 250);
    c.expect(&format!("RCPT TO:<{BOB}>"), 250);
    let first = b"From: someone@remote.test\r\nSubject: first\r\n\r\nhello\r\n";
    let smuggled = b"MAIL FROM:<someone@remote.test>\r\nRCPT TO:<victim@remote.test>\r\nBDAT 27 LAST\r\nSubject: smuggled\r\n\r\nevil\r\n";
    let mut wire = format!("BDAT {} LAST\r\n", first.len()).into_bytes();
    wire.extend_from_slice(first);
    wire.extend_from_slice(smuggled);
    c.send_raw(&wire).unwrap();
    let r = c.reply("the first message");
    assert!(r.lines[0].contains("queued as"), "{}", c.transcript());
    assert_eq!(c.reply("MAIL").code, 250, "{}", c.transcript());
    let r = c.reply("RCPT to another domain");
    assert!(r.matches(550, Some("5.7.1")), "{}", c.transcript());
    let r = c.reply("BDAT without a recipient");
    assert!(r.matches(554, Some("5.5.1")), "{}", c.transcript());
    c.expect("NOOP", 250);
    c.expect("QUIT", 221);
    let mail = mta.wait_for_mail(BOB, 1, 10);
    assert_eq!(mail.len(), 1);
    assert_same_bytes("the first message", &read_delivered(&mail[0]).rest, first);
    assert_eq!(received_after_delivery(&mta), 1, "{}", mta.log());
}

/// `BDAT 0 LAST` alone is an empty message: it gets what an empty DATA gets (the same
/// pipeline decides both). After chunks with the message in them, it ends the message.
#[test]
fn an_empty_last_chunk() {
    let mta = server("");
    let mut c = client(&mta);
    c.expect("MAIL FROM:<someone@remote.test>", 250);
    c.expect(&format!("RCPT TO:<{BOB}>"), 250);
    c.expect("DATA", 354);
    c.send_raw(b".\r\n").unwrap();
    let by_data = c.reply("the empty DATA");
    let by_bdat = c.send_chunks("someone@remote.test", &[BOB], &[b""]);
    assert_eq!(
        (by_bdat[0].code, by_bdat[0].enhanced()),
        (by_data.code, by_data.enhanced()),
        "{}",
        c.transcript()
    );
    let msg = b"From: someone@remote.test\r\nSubject: s\r\n\r\nbody\r\n";
    let r = c.send_chunks("someone@remote.test", &[BOB], &[msg, b""]);
    assert!(r[1].lines[0].contains("queued as"), "{}", c.transcript());
    let n = if by_data.code == 250 { 3 } else { 1 };
    assert_eq!(mta.wait_for_mail(BOB, n, 10).len(), n);
}

/// The `250` to `BDAT … LAST` is a promise as the `250` to DATA is: `mta serve` under
/// `strace -f` while 4 sessions send 5 chunked messages each, pipelined; for every
/// `250 … queued as ID` a sync of a file of the queue store returned after the message's
/// last octet was read on that connection and before the `250` was written on it.
#[test]
fn every_250_to_the_last_chunk_follows_a_store_sync() {
    use std::collections::HashSet;

    use mta_tests::strace::{TracedMta, check_trace, strace_works};
    use mta_tests::{KeptDir, mta_with_config, queue_id};

    if let Err(why) = strace_works() {
        panic!("this test needs a working strace (scripts/test.sh installs it): {why}");
    }
    let dir = KeptDir::new();
    let mta = TracedMta::start(dir.path());
    mta_with_config(
        &dir.path().join("mta.toml"),
        &["user", "add", BOB, "--password-stdin"],
        b"bob-password-1\n",
    )
    .assert_success("mta user add");
    let addr = mta.smtp_addr();
    let sessions: Vec<_> = (0..4)
        .map(|s| {
            std::thread::spawn(move || {
                let mut c = SmtpClient::connect(addr);
                c.reply("the greeting");
                c.expect("EHLO client.test", 250);
                let mut ids = Vec::new();
                for m in 0..5 {
                    let msg = format!(
                        "From: someone@remote.test\r\nSubject: {s}-{m}\r\n\r\n{}\r\n",
                        "body line\r\n".repeat(200)
                    );
                    let (a, b) = msg.as_bytes().split_at(msg.len() / 2);
                    let replies = c.send_chunks("someone@remote.test", &[BOB], &[a, b]);
                    ids.push(queue_id(&replies[1].lines[0]));
                }
                c.expect("QUIT", 221);
                ids
            })
        })
        .collect();
    let acked: HashSet<String> = sessions
        .into_iter()
        .flat_map(|s| s.join().expect("a session"))
        .collect();
    assert_eq!(acked.len(), 20);
    let trace = mta.stop();
    let store = format!("{}/", dir.path().join("data").join("queue").display());
    let order = check_trace(&trace, &store);
    assert!(
        order.unproven.is_empty(),
        "250 without a store sync before it: {:?}",
        order.unproven
    );
    let proven: HashSet<String> = order.proven.into_iter().collect();
    let missing: Vec<_> = acked.difference(&proven).collect();
    assert!(
        missing.is_empty(),
        "acks the trace does not show with a sync: {missing:?}"
    );
}

/// As after DATA, the whole message has `limits.data_timeout`, not each chunk: a client that
/// sends a small chunk now and then, each within `command_timeout`, is closed with `421`
/// once the message has taken `data_timeout`, and nothing is queued.
#[test]
fn a_message_of_trickled_chunks_has_data_timeout_in_all() {
    let mta = server("[limits]\ndata_timeout = \"2s\"\ncommand_timeout = \"1s\"\n");
    let mut c = client(&mta);
    c.expect("MAIL FROM:<someone@remote.test>", 250);
    c.expect(&format!("RCPT TO:<{BOB}>"), 250);
    let started = std::time::Instant::now();
    let mut last = None;
    for i in 0..12 {
        std::thread::sleep(std::time::Duration::from_millis(500));
        c.send_raw(b"BDAT 3\r\nx\r\n").unwrap();
        let r = c.reply(&format!("chunk {i}"));
        if r.code != 250 {
            last = Some(r);
            break;
        }
    }
    let r = last.unwrap_or_else(|| panic!("6 s of chunks all taken\n{}", c.transcript()));
    assert!(r.matches(421, Some("4.4.2")), "{}", c.transcript());
    assert!(started.elapsed() < std::time::Duration::from_secs(4));
    assert!(c.is_closed(), "{}", c.transcript());
    assert_eq!(received(&mta), 0, "{}", mta.log());
}
