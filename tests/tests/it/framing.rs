//! SMTP framing against a real server: a DATA line over 1000 octets must not switch off the
//! line-ending checks (SMTP smuggling after a long line), whatever way the client cuts its
//! writes; a refused DATA framing closes the connection, and nothing after it is answered,
//! queued or delivered.

use std::time::Duration;

use mta_tests::{SmtpClient, TestMta};

const BOB: &str = "bob@example.test";

fn server(extra_toml: &str) -> TestMta {
    let mta = TestMta::start(extra_toml);
    mta.add_user(BOB, "bob-password-1");
    mta
}

fn queued(mta: &TestMta) -> usize {
    mta.queue_json()["records"].as_array().map_or(0, Vec::len)
}

/// The smuggled transaction: a second message from a sender the client may not use.
const SMUGGLED: &[u8] = b"MAIL FROM:<admin@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n";
const SMUGGLED_BODY: &[u8] = b"From: admin@example.test\r\nSubject: smuggled\r\n\r\nevil\r\n.\r\n";

/// Sends `parts` as separate writes with a pause between them, so that each usually lands
/// in its own read on the server. Writes after the server has closed may fail; that is
/// what the test wants, so their errors are ignored.
fn send_parts(c: &mut SmtpClient, parts: &[Vec<u8>]) {
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(100));
        }
        if c.send_raw(part).is_err() {
            return;
        }
    }
}

/// `<line of `len` octets><ending>` then a smuggled transaction, cut into writes in every
/// way that matters: one write; the long line alone; the ending split; the smuggled DATA at
/// the end of a write and its message in the next (so the server would see an empty buffer
/// when it answers DATA, and take the second message). Each time: a 5xx to the first
/// message, then the connection is closed with nothing more said, and nothing is queued or
/// delivered.
#[test]
fn smuggling_after_an_over_long_data_line_is_refused_and_closes() {
    let mta = server("");
    let endings: [&[u8]; 8] = [
        b"\n.\r\n",
        b"\n.\n",
        b"\r.\r\n",
        b"\r\n.\n",
        b"\r\n.\r",
        b"\n.\r",
        b"\r.\n",
        b"\r\n\0.\r\n",
    ];
    let mut cases = 0;
    for len in [1001usize, 70_000] {
        for ending in endings {
            let long: Vec<u8> = std::iter::repeat_n(b'a', len).collect();
            let mut prefix = b"From: someone@remote.test\r\nSubject: innocent\r\n\r\n".to_vec();
            prefix.extend_from_slice(&long);
            let whole = [prefix.as_slice(), ending, SMUGGLED, SMUGGLED_BODY].concat();
            let split = ending.len() / 2;
            let chunkings: Vec<Vec<Vec<u8>>> = vec![
                vec![whole.clone()],
                vec![prefix.clone(), [ending, SMUGGLED, SMUGGLED_BODY].concat()],
                vec![
                    [prefix.as_slice(), &ending[..split]].concat(),
                    [&ending[split..], SMUGGLED, SMUGGLED_BODY].concat(),
                ],
                vec![
                    [prefix.as_slice(), ending, SMUGGLED].concat(),
                    SMUGGLED_BODY.to_vec(),
                ],
                vec![
                    prefix.clone(),
                    ending.to_vec(),
                    SMUGGLED.to_vec(),
                    SMUGGLED_BODY.to_vec(),
                ],
            ];
            for (n, parts) in chunkings.iter().enumerate() {
                cases += 1;
                let what = format!("line of {len}, ending {ending:?}, chunking {n}");
                let mut c = SmtpClient::connect(mta.smtp_addr());
                c.reply("the greeting");
                c.expect("EHLO client.test", 250);
                c.expect("MAIL FROM:<someone@remote.test>", 250);
                c.expect(&format!("RCPT TO:<{BOB}>"), 250);
                c.expect("DATA", 354);
                send_parts(&mut c, parts);
                let r = c.reply("the refusal");
                assert!(
                    r.matches(550, Some("5.6.0")),
                    "{what}: {r:?}\n{}",
                    c.transcript()
                );
                assert!(
                    c.is_closed(),
                    "{what}: the server answered after refusing the framing\n{}",
                    c.transcript()
                );
            }
        }
    }
    assert_eq!(cases, 2 * 8 * 5);
    assert_eq!(queued(&mta), 0, "nothing was queued");
    // A message sent after all of them is delivered, and it is the only one.
    let mut c = SmtpClient::connect(mta.smtp_addr());
    c.reply("the greeting");
    c.expect("EHLO client.test", 250);
    let r = c.send_message(
        "someone@remote.test",
        &[BOB],
        b"From: someone@remote.test\r\nSubject: honest\r\n\r\nhello\r\n",
    );
    assert_eq!(r.code, 250, "{}", c.transcript());
    let mail = mta.wait_for_mail(BOB, 1, 10);
    assert_eq!(mail.len(), 1, "only the honest message was delivered");
    let text = std::fs::read_to_string(&mail[0]).expect("the delivered message");
    assert!(text.contains("Subject: honest"), "{text}");
    assert!(
        !text.contains("smuggled") && !text.contains("evil"),
        "{text}"
    );
}

/// A client that never moves towards a message (NOOP, RSET, HELP for ever) is closed with
/// `421 4.7.0` after `limits.max_commands_without_progress` commands, so it cannot hold one
/// of the limited sessions until the session timeout; a client that sends mail is not.
#[test]
fn a_session_without_progress_is_closed() {
    let mta = server("[limits]\nmax_commands_without_progress = 8\n");
    let mut c = SmtpClient::connect(mta.smtp_addr());
    c.reply("the greeting");
    c.expect("EHLO client.test", 250);
    for verb in ["NOOP", "RSET", "HELP", "NOOP", "VRFY bob", "NOOP", "RSET"] {
        assert!(c.command(verb).code < 400, "{}", c.transcript());
    }
    let r = c.command("NOOP");
    assert!(r.matches(421, Some("4.7.0")), "{r:?}\n{}", c.transcript());
    assert!(c.is_closed(), "{}", c.transcript());

    // Every accepted RCPT starts the count again: two messages with NOOPs between them.
    let mut c = SmtpClient::connect(mta.smtp_addr());
    c.reply("the greeting");
    c.expect("EHLO client.test", 250);
    for i in 0..2 {
        for _ in 0..6 {
            c.expect("NOOP", 250);
        }
        let message = format!("From: someone@remote.test\r\nSubject: {i}\r\n\r\nhello\r\n");
        let r = c.send_message("someone@remote.test", &[BOB], message.as_bytes());
        assert_eq!(r.code, 250, "{}", c.transcript());
    }
    c.expect("QUIT", 221);
    assert_eq!(mta.wait_for_mail(BOB, 2, 10).len(), 2);
}

/// Sessions per network: with `max_sessions_per_ip = 2` and `max_sessions_per_network = 3`,
/// addresses of one IPv4 /24 (127.0.0.x) share three places, whichever address they come
/// from; another /24 (127.0.1.x) is not affected; a place freed is usable again.
/// Many networks of one provider's block (here an IPv4 /16) together get a fifth of all
/// sessions, never all of them; another block still gets in.
#[test]
fn one_block_of_many_networks_gets_at_most_a_fifth_of_the_sessions() {
    let mta = server(
        "[limits]\nmax_sessions = 50\nmax_sessions_per_ip = 1\nmax_sessions_per_network = 2\n",
    );
    let open = |source: String| {
        let mut c = SmtpClient::connect_from(mta.smtp_addr(), source.parse().expect("an address"));
        let r = c.reply("the greeting or refusal");
        (c, r)
    };
    // 5 networks of 2 addresses each: 10 sessions, a fifth of 50.
    let mut held = Vec::new();
    for net in 1..=5 {
        for host in [2, 3] {
            let (c, r) = open(format!("127.0.{net}.{host}"));
            assert_eq!(r.code, 220, "127.0.{net}.{host}: {r:?}");
            held.push(c);
        }
    }
    let (mut over, r) = open("127.0.6.2".to_string());
    assert!(r.matches(421, Some("4.7.0")), "per block: {r:?}");
    assert!(over.is_closed());
    let (_other, r) = open("127.1.0.2".to_string());
    assert_eq!(r.code, 220, "another /16");
    drop(held);
    mta_tests::wait_for(
        mta_tests::secs(10),
        "a place in the /16 to be free again",
        || open("127.0.6.2".to_string()).1.code == 220,
    );
}

#[test]
fn one_network_gets_at_most_its_share_of_sessions() {
    let mta = server("[limits]\nmax_sessions_per_ip = 2\nmax_sessions_per_network = 3\n");
    let from = |text: &str| -> std::net::IpAddr { text.parse().expect("an address") };
    let open = |source: &str| {
        let mut c = SmtpClient::connect_from(mta.smtp_addr(), from(source));
        let r = c.reply("the greeting or refusal");
        (c, r)
    };
    let (a1, r) = open("127.0.0.2");
    assert_eq!(r.code, 220);
    let (_a2, r) = open("127.0.0.2");
    assert_eq!(r.code, 220);
    let (mut a3, r) = open("127.0.0.2");
    assert!(r.matches(421, Some("4.7.0")), "per address: {r:?}");
    assert!(r.lines[0].contains("address"), "{r:?}");
    assert!(a3.is_closed());
    let (_b1, r) = open("127.0.0.3");
    assert_eq!(r.code, 220, "a second address of the /24");
    let (mut c1, r) = open("127.0.0.4");
    assert!(r.matches(421, Some("4.7.0")), "per network: {r:?}");
    assert!(r.lines[0].contains("network"), "{r:?}");
    assert!(c1.is_closed());
    let (_d1, r) = open("127.0.1.5");
    assert_eq!(r.code, 220, "another /24");
    drop(a1);
    mta_tests::wait_for(
        mta_tests::secs(10),
        "a place in the /24 to be free again",
        || open("127.0.0.4").1.code == 220,
    );
}
