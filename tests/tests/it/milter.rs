//! Milters (`[[inbound.milter]]`) with the test milter for what rspamd never does: header and
//! body changes made as libmilter counts fields; defer, discard, quarantine, reject, a reply
//! code of the filter's own (kept in its class), a recipient refused at RCPT; and every way a
//! filter can fail (hangs, garbage, closes mid-message, an absurd frame length, an action we
//! never allow, endless progress) ending in `on_failure`. Nothing is lost: each message that
//! got 250 is delivered or was dropped on purpose (logged), and a deferred one queues nothing.

use std::time::Duration;

use mta_tests::milter::{
    Act, TestMilter, add_header, bare, change_header, frame, insert_header, quarantine, reply_code,
};
use mta_tests::{
    ALICE, ALICE_PASSWORD, Reply, SmtpClient, TestMta, read_delivered, secs, wait_for,
};

const BOB: &str = "bob@example.test";

/// A server whose port 25 (and, with `submission`, 587) passes the milter at `milter`.
fn server(milter: &str, timeout: &str, on_failure: &str, submission: bool) -> TestMta {
    let listeners = if submission {
        "[\"smtp\", \"submission\"]"
    } else {
        "[\"smtp\"]"
    };
    let mta = TestMta::start(&format!(
        "[inbound]\nchecks = false\n\
         [[inbound.milter]]\naddress = \"{milter}\"\nlisteners = {listeners}\n\
         timeout = \"{timeout}\"\non_failure = \"{on_failure}\"\n"
    ));
    mta.add_user(ALICE, ALICE_PASSWORD);
    mta.add_user(BOB, "bob-password-1");
    mta
}

/// Sends `message` to bob on port 25; the reply to the final dot.
fn send(mta: &TestMta, message: &str) -> Reply {
    let mut c = SmtpClient::connect(mta.smtp_addr());
    c.reply("the greeting");
    c.expect("EHLO client.test", 250);
    let reply = c.send_message("someone@remote.test", &[BOB], message.as_bytes());
    let _ = c.send_line("QUIT");
    reply
}

fn message(subject: &str) -> String {
    format!(
        "From: someone@remote.test\r\nTo: bob@example.test\r\nSubject: {subject}\r\n\
         X-Remove: this one goes\r\n\r\nThe body of {subject}.\r\n"
    )
}

/// The delivered messages' text after our `Received:`.
fn delivered(mta: &TestMta) -> Vec<String> {
    mta.maildir_new(BOB)
        .iter()
        .map(|f| String::from_utf8_lossy(&read_delivered(f).rest).into_owned())
        .collect()
}

#[test]
fn header_and_body_changes_are_made_as_libmilter_counts_fields() {
    let edits = vec![
        insert_header(0, "X-First", "inserted at 0"),
        change_header(1, "subject", "changed"),
        change_header(1, "X-Remove", ""),
        change_header(1, "X-Absent", ""),
        add_header("X-Added", "folded\n\tsecond line"),
        frame(b'b', b"New body,\nLF only.\r\n"),
        bare(b'a'),
    ];
    let milter = TestMilter::start(Box::new(move |_| (b'E', Act::Send(edits.clone()))), 0);
    let mta = server(milter.address(), "10s", "tempfail", false);
    let reply = send(&mta, &message("original"));
    assert_eq!(reply.code, 250, "{reply}");
    let files = mta.wait_for_mail(BOB, 1, 30);
    let got = String::from_utf8_lossy(&read_delivered(&files[0]).rest).into_owned();
    assert_eq!(
        got,
        "X-First: inserted at 0\r\nFrom: someone@remote.test\r\nTo: bob@example.test\r\n\
         Subject: changed\r\nX-Added: folded\r\n\tsecond line\r\n\r\nNew body,\r\nLF only.\r\n"
    );
}

#[test]
fn what_the_milter_is_told_headers_body_in_pieces_and_the_user() {
    let milter = TestMilter::start(Box::new(|_| (b'E', Act::Send(vec![bare(b'a')]))), 0);
    let mta = server(milter.address(), "10s", "tempfail", true);
    // A body of 200 000 octets goes in pieces of at most 65 535.
    let line = format!("{}\r\n", "x".repeat(98));
    let body = line.repeat(2000);
    let text = format!(
        "From: alice@example.test\r\nTo: bob@example.test\r\nSubject: big\r\n \tfolded\r\n\r\n{body}"
    );
    let mut c = SmtpClient::connect_tls(mta.submissions_addr(), &mta.cert_path());
    c.reply("the greeting");
    c.expect("EHLO client.test", 250);
    assert_eq!(c.auth_plain(ALICE, ALICE_PASSWORD).code, 235);
    let reply = c.send_message(ALICE, &[BOB], text.as_bytes());
    assert_eq!(reply.code, 250, "{reply}");
    mta.wait_for_mail(BOB, 1, 30);
    let talk = &milter.conversations()[0];
    let letters: String = talk.iter().map(|(l, _)| *l as char).collect();
    assert!(letters.starts_with("ODCHDMDRTLLLNB"), "{letters}");
    assert!(letters.ends_with("BEQ"), "{letters}");
    let pieces: Vec<&Vec<u8>> = talk
        .iter()
        .filter(|(l, _)| *l == b'B')
        .map(|(_, d)| d)
        .collect();
    assert!(
        pieces.iter().all(|p| p.len() <= 65535),
        "a body piece over 64 KiB"
    );
    assert_eq!(
        pieces
            .iter()
            .flat_map(|p| p.iter().copied())
            .collect::<Vec<u8>>(),
        body.as_bytes()
    );
    let mail_macros = &talk
        .iter()
        .find(|(l, d)| *l == b'D' && d[0] == b'M')
        .unwrap()
        .1;
    let mail_macros = String::from_utf8_lossy(mail_macros);
    assert!(
        mail_macros.contains("{auth_authen}\0alice@example.test\0"),
        "{mail_macros:?}"
    );
    let subject = talk
        .iter()
        .find(|(l, d)| *l == b'L' && d.starts_with(b"Subject\0"))
        .unwrap();
    assert_eq!(subject.1, b"Subject\0big\n \tfolded\0");
    let rcpt = talk.iter().find(|(l, _)| *l == b'R').unwrap();
    assert_eq!(rcpt.1, b"<bob@example.test>\0");
}

/// Connection by connection: what the milter does and what the client must be told.
fn cases() -> Vec<(&'static str, u8, Act, u16, &'static str)> {
    let send = |frames: Vec<Vec<u8>>| Act::Send(frames);
    vec![
        (
            "tempfail",
            b'E',
            send(vec![bare(b't')]),
            451,
            "4.7.1 Message deferred",
        ),
        ("discard", b'E', send(vec![bare(b'd')]), 250, "2.0.0 OK"),
        (
            "own reply",
            b'E',
            send(vec![reply_code("554 5.7.1 Go away")]),
            554,
            "5.7.1 Go away",
        ),
        (
            "own 4xx, 5xx enhanced",
            b'E',
            send(vec![reply_code("421 5.1.1 Later")]),
            421,
            "4.7.1 Later",
        ),
        (
            "reply code 250",
            b'E',
            send(vec![reply_code("250 fine")]),
            451,
            "4.7.1 Message filter unavailable",
        ),
        (
            "quarantine",
            b'E',
            send(vec![quarantine("looks bad"), bare(b'a')]),
            250,
            "2.0.0 OK",
        ),
        (
            "reject at RCPT",
            b'R',
            send(vec![bare(b'r')]),
            550,
            "5.7.1 Message rejected",
        ),
        (
            "add a recipient",
            b'E',
            send(vec![frame(b'+', b"<evil@remote.test>\0"), bare(b'a')]),
            451,
            "4.7.1 Message filter unavailable",
        ),
        (
            "garbage",
            b'E',
            send(vec![b"\0\0\0\x02Z!".to_vec()]),
            451,
            "4.7.1 Message filter unavailable",
        ),
        (
            "absurd length",
            b'E',
            send(vec![vec![0xff, 0xff, 0xff, 0xff, b'a']]),
            451,
            "4.7.1 Message filter unavailable",
        ),
        (
            "ends mid-frame",
            b'E',
            send(vec![b"\0\0\0\x10h".to_vec()]),
            451,
            "4.7.1 Message filter unavailable",
        ),
        (
            "closes mid-message",
            b'L',
            Act::Close,
            451,
            "4.7.1 Message filter unavailable",
        ),
        (
            "hangs",
            b'E',
            Act::Hang,
            451,
            "4.7.1 Message filter unavailable",
        ),
        (
            "progress, then accept",
            b'E',
            Act::Progress {
                every: Duration::from_millis(500),
                times: 6,
                then: vec![bare(b'a')],
            },
            250,
            "2.0.0 OK queued",
        ),
        (
            "endless progress",
            b'E',
            Act::Progress {
                every: Duration::from_millis(500),
                times: 100,
                then: vec![],
            },
            451,
            "4.7.1 Message filter unavailable",
        ),
        (
            "accept",
            b'E',
            send(vec![bare(b'a')]),
            250,
            "2.0.0 OK queued",
        ),
    ]
}

#[test]
fn every_decision_and_every_failure_and_nothing_lost() {
    let script: Vec<(u8, Act)> = cases()
        .into_iter()
        .map(|(_, at, act, _, _)| (at, act))
        .collect();
    let milter = TestMilter::start(Box::new(move |n| script[n].clone()), 0);
    // Each reply may take 2 s; progress waits 0.5 s between reports, so only the endless
    // one reaches the bound of the whole conversation (8 s).
    let mta = server(milter.address(), "2s", "tempfail", false);
    let mut queued = Vec::new();
    for (name, _, _, code, text) in cases() {
        let reply = send(&mta, &message(name));
        assert_eq!(reply.code, code, "{name}: {reply}\n{}", mta.log());
        let line = reply.lines.join(" ");
        assert!(line.starts_with(text), "{name}: {reply}");
        if line.contains("queued") {
            queued.push(name);
        }
    }
    // Exactly the messages answered "queued" arrive; the discarded and quarantined ones
    // were dropped on purpose, and said so.
    let files = mta.wait_for_mail(BOB, queued.len(), 30);
    assert_eq!(files.len(), queued.len());
    for name in queued {
        assert!(
            delivered(&mta)
                .iter()
                .any(|m| m.contains(&format!("Subject: {name}\r\n")))
        );
    }
    mta.wait_for_empty_queue(secs(30));
    let log = mta.log();
    assert!(log.contains("discarded by a filter"), "{log}");
    assert!(log.contains("quarantined it (looks bad)"), "{log}");
    assert!(
        log.contains("asks to add a recipient, which we never allow"),
        "{log}"
    );
    assert!(
        log.contains("frame length 4294967295 is out of bounds"),
        "{log}"
    );
    assert_eq!(mta.maildir_new(BOB).len(), 2);
}

#[test]
fn header_changes_past_the_size_limit_are_refused_as_they_come() {
    // 40 fields of 60 000 octets: 2.4 MB of changes to a message that may have 100 000.
    let big = "x".repeat(60_000);
    let mut edits: Vec<Vec<u8>> = (0..40).map(|_| add_header("X-Big", &big)).collect();
    edits.push(bare(b'a'));
    let milter = TestMilter::start(Box::new(move |_| (b'E', Act::Send(edits.clone()))), 0);
    let mta = TestMta::start(&format!(
        "[limits]\nmax_message_size = 100000\n\
         [inbound]\nchecks = false\n\
         [[inbound.milter]]\naddress = \"{}\"\nlisteners = [\"smtp\"]\n\
         timeout = \"10s\"\non_failure = \"tempfail\"\n",
        milter.address()
    ));
    mta.add_user(BOB, "bob-password-1");
    let reply = send(&mta, &message("big changes"));
    assert_eq!(reply.code, 451, "{reply}\n{}", mta.log());
    // The changes stop being kept at the first that passes the limit, not after all of them.
    let log = mta.log();
    let said = log
        .split("the changed message would be ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or_else(|| panic!("no size refusal logged\n{log}"));
    assert!(
        said <= 100_000 + 60_010,
        "kept {said} octets of changes\n{log}"
    );
    assert!(mta.maildir_new(BOB).is_empty());
    // Many small changes: no more are kept than a message may have fields.
    drop(milter);
    let mut edits: Vec<Vec<u8>> = (0..5000).map(|_| add_header("X-T", "t")).collect();
    edits.push(bare(b'a'));
    let milter = TestMilter::start(Box::new(move |_| (b'E', Act::Send(edits.clone()))), 0);
    let mta = TestMta::start(&format!(
        "[limits]\nmax_headers = 100\n\
         [inbound]\nchecks = false\n\
         [[inbound.milter]]\naddress = \"{}\"\nlisteners = [\"smtp\"]\n\
         timeout = \"10s\"\non_failure = \"tempfail\"\n",
        milter.address()
    ));
    mta.add_user(BOB, "bob-password-1");
    let reply = send(&mta, &message("many changes"));
    assert_eq!(reply.code, 451, "{reply}\n{}", mta.log());
    assert!(
        mta.log().contains("asks for more than 100 header changes"),
        "{}",
        mta.log()
    );
    assert!(mta.maildir_new(BOB).is_empty());
}

#[test]
fn a_milter_on_a_unix_socket_under_the_sandbox() {
    let dir = mta_tests::KeptDir::new();
    let path = dir.path().join("milter.sock");
    let edits = vec![add_header("X-Unix", "yes"), bare(b'a')];
    let milter = TestMilter::start_unix(
        &path,
        Box::new(move |_| (b'E', Act::Send(edits.clone()))),
        0,
    );
    let mta = server(milter.address(), "10s", "tempfail", false);
    assert!(mta.log().contains("sandbox in force"), "{}", mta.log());
    let reply = send(&mta, &message("over a unix socket"));
    assert_eq!(reply.code, 250, "{reply}\n{}", mta.log());
    let files = mta.wait_for_mail(BOB, 1, 30);
    let got = String::from_utf8_lossy(&read_delivered(&files[0]).rest).into_owned();
    assert!(got.contains("\r\nX-Unix: yes\r\n\r\n"), "{got}");
    // listeners = ["smtp"]: a user's submission does not pass it.
    let mut c = SmtpClient::connect_tls(mta.submissions_addr(), &mta.cert_path());
    c.reply("the greeting");
    c.expect("EHLO client.test", 250);
    assert_eq!(c.auth_plain(ALICE, ALICE_PASSWORD).code, 235);
    let text = "From: alice@example.test\r\nTo: bob@example.test\r\nSubject: mine\r\n\r\nHi.\r\n";
    assert_eq!(c.send_message(ALICE, &[BOB], text.as_bytes()).code, 250);
    let files = mta.wait_for_mail(BOB, 2, 30);
    assert_eq!(milter.conversations().len(), 1);
    let mine: Vec<String> = files
        .iter()
        .map(|f| String::from_utf8_lossy(&read_delivered(f).rest).into_owned())
        .filter(|m| m.contains("Subject: mine"))
        .collect();
    assert!(!mine[0].contains("X-Unix"), "{}", mine[0]);
}

#[test]
fn on_failure_accept_passes_mail_when_the_milter_is_down() {
    // A port nothing listens on: bound, then given up.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mta = server(&format!("inet:{port}"), "2s", "accept", false);
    let reply = send(&mta, &message("unfiltered"));
    assert_eq!(reply.code, 250, "{reply}");
    mta.wait_for_mail(BOB, 1, 30);
    wait_for(secs(5), "the failure logged", || {
        mta.log().contains("milter failed; accepting unfiltered")
    });
    // The same with tempfail: 451 and nothing queued.
    let mta = server(&format!("inet:{port}"), "2s", "tempfail", false);
    let reply = send(&mta, &message("deferred"));
    assert_eq!(
        (reply.code, reply.enhanced()),
        (451, Some("4.7.1")),
        "{reply}"
    );
    assert!(mta.maildir_new(BOB).is_empty());
    mta.wait_for_empty_queue(secs(5));
}

/// rspamd itself, through its milter proxy: GTUBE is refused with rspamd's own reply, a
/// clean message is delivered with the headers rspamd adds, and with rspamd stopped the
/// `on_failure` setting decides.
#[test]
fn rspamd_rejects_gtube_marks_clean_mail_and_its_absence_defers() {
    let mut rspamd = mta_tests::rspamd::TestRspamd::start();
    let mta = server(&rspamd.address(), "60s", "tempfail", false);
    let gtube = "From: someone@remote.test\r\nTo: bob@example.test\r\nSubject: test\r\n\r\n\
                 XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n";
    let reply = send(&mta, gtube);
    // rspamd's own reply: the pattern's name as its text.
    assert_eq!(
        (reply.code, reply.lines[0].as_str()),
        (554, "5.7.1 Gtube pattern"),
        "{reply}\n{}",
        rspamd.log()
    );
    let reply = send(&mta, &message("a clean one"));
    assert_eq!(reply.code, 250, "{reply}\n{}", mta.log());
    let files = mta.wait_for_mail(BOB, 1, 60);
    let got = String::from_utf8_lossy(&read_delivered(&files[0]).rest).into_owned();
    let head = got.split("\r\n\r\n").next().unwrap();
    for field in [
        "X-Spamd-Result: ",
        "X-Rspamd-Server: ",
        "X-Rspamd-Action: no action",
    ] {
        assert!(head.contains(field), "no {field} in\n{got}");
    }
    assert!(
        got.ends_with("\r\n\r\nThe body of a clean one.\r\n"),
        "{got}"
    );
    assert_eq!(mta.maildir_new(BOB).len(), 1, "GTUBE was delivered");

    rspamd.stop();
    let reply = send(&mta, &message("while rspamd is down"));
    assert_eq!(
        (reply.code, reply.enhanced()),
        (451, Some("4.7.1")),
        "{reply}"
    );
    mta.wait_for_empty_queue(secs(5));
    assert_eq!(mta.maildir_new(BOB).len(), 1);
}

/// A milter added to the config is used from the next message after `mta reload`.
#[test]
fn a_milter_added_by_reload_filters_the_next_message() {
    let milter = TestMilter::start(
        Box::new(|_| {
            (
                b'E',
                Act::Send(vec![reply_code("550 5.7.1 Not after reload")]),
            )
        }),
        0,
    );
    let mta = TestMta::start("");
    mta.add_user(BOB, "bob-password-1");
    assert_eq!(send(&mta, &message("before")).code, 250);
    let mut config = std::fs::read_to_string(mta.config_path()).unwrap();
    config.push_str(&format!(
        "\n[[inbound.milter]]\naddress = \"{}\"\n",
        milter.address()
    ));
    std::fs::write(mta.config_path(), config).unwrap();
    mta.mta(&["reload"], b"").assert_success("mta reload");
    let reply = send(&mta, &message("after"));
    assert_eq!(
        (reply.code, reply.lines[0].as_str()),
        (550, "5.7.1 Not after reload"),
        "{reply}"
    );
    assert_eq!(milter.conversations().len(), 1);
}
