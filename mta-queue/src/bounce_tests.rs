//! Unit tests of bounce.

use super::*;
use crate::QueueSettings;
use mta_core::address::ReversePath;
use mta_core::envelope::{RcptState, Recipient, Vouched};
use mta_core::outcome::Verdict;

fn addr(a: &str) -> Address {
    Address::parse(a).expect("test address")
}

fn original(sender: ReversePath) -> Envelope {
    let mut e = Envelope::generated(
        MessageId::parse("0190000000000000abcd").expect("id"),
        vec![addr("b@remote.test")],
        "mx.test",
        1_795_886_158,
        100,
    );
    e.sender = sender;
    e.recipients.push(Recipient::pending(addr("c@remote.test")));
    e.recipients.push(Recipient::pending(addr("d@remote.test")));
    e
}

fn rcpt(a: &str, status: &str, diagnostic: &str, mx: Option<&str>) -> DsnRecipient {
    DsnRecipient {
        address: addr(a),
        status: status.into(),
        diagnostic: diagnostic.into(),
        remote_mta: mx.map(str::to_string),
    }
}

const BODY: &[u8] = b"Received: from client.test\r\n\tby mx.test\r\nFrom: <a@local.test>\r\n\
Subject: hello\r\nMessage-ID: <1@local.test>\r\n\r\nSECRET BODY LINE\r\n";

fn dsn(kind: DsnKind, rcpts: &[DsnRecipient], body: &[u8]) -> String {
    let sender = ReversePath::Address(addr("a@local.test"));
    let bytes = build(
        kind,
        &Domain::parse("mx.test").expect("domain"),
        &MessageId::parse("01900000000000001234").expect("id"),
        &original(sender),
        rcpts,
        body,
        1_795_886_158,
    )
    .expect("a DSN is due");
    String::from_utf8(bytes).expect("utf-8")
}

/// The boundary from the top-level Content-Type, and the body split on it.
fn parts(message: &str) -> (String, Vec<String>) {
    let (head, body) = message.split_once("\r\n\r\n").expect("header/body");
    let boundary = head
        .split("boundary=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("boundary parameter")
        .to_string();
    let delimiter = format!("\r\n--{boundary}");
    let mut pieces: Vec<String> = body.split(&delimiter).map(str::to_string).collect();
    assert_eq!(pieces.pop().as_deref(), Some("--\r\n"), "close delimiter");
    pieces.remove(0); // preamble
    (boundary, pieces)
}

#[test]
fn failed_dsn_is_a_multipart_report() {
    let rcpts = [
        rcpt(
            "b@remote.test",
            "5.1.1",
            "550 5.1.1 no such user",
            Some("mx1.remote.test"),
        ),
        rcpt("c@remote.test", "5.4.4", "5.4.4 no MX and no address", None),
    ];
    let text = dsn(DsnKind::Failed, &rcpts, BODY);
    assert!(text.lines().all(|l| l.len() <= 998));
    assert!(!text.replace("\r\n", "").contains('\n'), "CRLF only");
    let (head, _) = text.split_once("\r\n\r\n").expect("header/body");
    for want in [
        "From: Mail Delivery System <MAILER-DAEMON@mx.test>\r\n",
        "To: <a@local.test>\r\n",
        "Subject: Undelivered Mail Returned to Sender\r\n",
        "Date: Sat, 28 Nov 2026 17:15:58 +0000\r\n",
        "Message-ID: <01900000000000001234@mx.test>\r\n",
        "Auto-Submitted: auto-replied\r\n",
        "MIME-Version: 1.0\r\n",
        "Content-Type: multipart/report; report-type=delivery-status;\r\n",
    ] {
        assert!(head.contains(want), "missing {want:?} in\n{head}");
    }
    let (boundary, parts) = parts(&text);
    assert!(boundary.contains("01900000000000001234"));
    assert_eq!(parts.len(), 3);
    let types: Vec<&str> = parts
        .iter()
        .map(|p| {
            p.lines()
                .find_map(|l| l.strip_prefix("Content-Type: "))
                .expect("part content type")
        })
        .collect();
    assert_eq!(
        types,
        [
            "text/plain; charset=utf-8",
            "message/delivery-status",
            "text/rfc822-headers"
        ]
    );
    assert!(parts[0].contains("<b@remote.test>: 550 5.1.1 no such user (from mx1.remote.test)"));

    let status = &parts[1];
    assert!(status.contains("Reporting-MTA: dns; mx.test\r\n"));
    assert!(status.contains("Arrival-Date: Sat, 28 Nov 2026 17:15:58 +0000\r\n"));
    let finals: Vec<&str> = status
        .lines()
        .filter_map(|l| l.strip_prefix("Final-Recipient: "))
        .collect();
    assert_eq!(finals, ["rfc822; b@remote.test", "rfc822; c@remote.test"]);
    let statuses: Vec<&str> = status
        .lines()
        .filter_map(|l| l.strip_prefix("Status: "))
        .collect();
    assert_eq!(statuses, ["5.1.1", "5.4.4"]);
    assert_eq!(status.matches("Action: failed\r\n").count(), 2);
    assert!(status.contains("Remote-MTA: dns; mx1.remote.test\r\n"));
    assert!(status.contains("Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n"));
    assert!(status.contains("Diagnostic-Code: X-mta; 5.4.4 no MX and no address\r\n"));
    // Per-recipient groups are separated from the per-message fields by a blank line.
    assert!(status.contains("\r\n\r\nFinal-Recipient: rfc822; b@remote.test"));

    let headers = &parts[2];
    assert!(headers.contains("Subject: hello\r\n"));
    assert!(headers.contains("Received: from client.test\r\n\tby mx.test\r\n"));
    assert!(!text.contains("SECRET BODY LINE"), "never the body");
}

#[test]
fn delayed_dsn() {
    let rcpts = [rcpt(
        "d@remote.test",
        "4.4.1",
        "4.4.1 connection refused",
        None,
    )];
    let text = dsn(DsnKind::Delayed, &rcpts, BODY);
    assert!(text.contains("Subject: Delayed Mail (still being retried)\r\n"));
    assert!(text.contains("Action: delayed\r\nStatus: 4.4.1\r\n"));
    assert!(!text.contains("Action: failed"));
    // A status that is not a code is replaced by the kind's default.
    let text = dsn(
        DsnKind::Delayed,
        &[rcpt("d@remote.test", "junk", "", None)],
        BODY,
    );
    assert!(text.contains("Status: 4.0.0\r\n"));
    assert!(!text.contains("Diagnostic-Code"));
}

#[test]
fn null_sender_or_no_recipients_gets_no_dsn() {
    let host = Domain::parse("mx.test").expect("domain");
    let id = MessageId::generate(1);
    let rcpts = [rcpt("b@remote.test", "5.1.1", "550 5.1.1 no", None)];
    let bounce = original(ReversePath::Null);
    assert_eq!(
        build(DsnKind::Failed, &host, &id, &bounce, &rcpts, BODY, 0),
        None
    );
    let normal = original(ReversePath::Address(addr("a@local.test")));
    assert_eq!(
        build(DsnKind::Failed, &host, &id, &normal, &[], BODY, 0),
        None
    );
}

#[test]
fn status_codes() {
    let f = DsnKind::Failed;
    let d = DsnKind::Delayed;
    let table = [
        ("550 5.1.1 no such user", f, "5.1.1"),
        ("550-5.7.1 blocked", f, "5.7.1"),
        ("5.1.10 null MX", f, "5.1.10"),
        ("4.4.0 connection refused", d, "4.4.0"),
        ("451 4.3.0 (4.3.0) try later", d, "4.3.0"),
        (
            "5.4.7 gave up after 5 days in the queue; last result: 451 4.1.1 x",
            f,
            "5.4.7",
        ),
        // A class that disagrees with the notification is not taken (RFC 3464 §2.3.4).
        (
            "4.4.7 gave up after 5 days in the queue; last result: 550 5.1.1 x",
            f,
            "5.0.0",
        ),
        // The status follows the reply code, in its class; prose is not a status.
        ("451 mailbox 5.1.1 is busy", d, "4.0.0"),
        ("451 4.2.1 busy (was 5.1.1)", d, "4.2.1"),
        ("451 5.1.1 class disagrees", d, "4.0.0"),
        ("550 user unknown (4.4.1 earlier)", f, "5.0.0"),
        ("connection refused: 550 5.1.1", f, "5.0.0"),
        ("4.7.5 DANE: 550 5.1.1 somewhere", d, "4.7.5"),
        ("connection refused", f, "5.0.0"),
        ("connection refused", d, "4.0.0"),
        ("", f, "5.0.0"),
        ("421 from 5.6.7.8 too busy", d, "4.0.0"),
        ("250 2.0.0 ok", f, "5.0.0"),
        ("550 5.1.1234 odd", f, "5.0.0"),
        ("550 5..1 odd", f, "5.0.0"),
    ];
    for (result, kind, want) in table {
        assert_eq!(
            status_of(Some(&read(result, kind)), kind),
            want,
            "{result:?}"
        );
    }
}

/// A result as records written before outcomes were typed keep it, read back.
fn read(text: &str, kind: DsnKind) -> Outcome {
    let verdict = match kind {
        DsnKind::Failed => Verdict::Failed,
        DsnKind::Delayed => Verdict::Deferred,
        DsnKind::Delivered | DsnKind::Relayed => Verdict::Delivered,
    };
    Outcome::from_text(verdict, text)
}

/// The reference: a result built from its parts (a reply code or none, an enhanced code
/// or none, then any text at all), and what the status must be from those parts alone.
fn reference_status(code: Option<u16>, status: Option<(u8, u16, u16)>, kind: DsnKind) -> String {
    let want_class = match kind {
        DsnKind::Failed => 5,
        DsnKind::Delayed => 4,
        DsnKind::Delivered | DsnKind::Relayed => 2,
    };
    let found = match (code, status) {
        (Some(c), Some((class, s, d))) if u16::from(class) == c / 100 => Some((class, s, d)),
        (Some(c), _) => Some(((c / 100) as u8, 0, 0)),
        (None, Some(st)) => Some(st),
        (None, None) => None,
    };
    match found {
        Some((class, s, d)) if class == want_class => format!("{class}.{s}.{d}"),
        _ => format!("{want_class}.0.0"),
    }
}

proptest::proptest! {
    #[test]
    fn status_agrees_with_the_reference(
        code in proptest::option::of(200u16..600),
        status in proptest::option::of((proptest::sample::select(vec![2u8, 4, 5]), 0u16..1000, 0u16..1000)),
        dash in proptest::bool::ANY,
        failed in proptest::bool::ANY,
        prose in "[a-z]{1,8}( [ -~]{0,40})?",
        noise in proptest::collection::vec((2u8..6, 0u16..1000, 0u16..1000), 0..3),
    ) {
        let kind = if failed { DsnKind::Failed } else { DsnKind::Delayed };
        let mut text = String::new();
        if let Some(c) = code {
            text.push_str(&format!("{c}{}", if dash { '-' } else { ' ' }));
        }
        if let Some((c, s, d)) = status {
            text.push_str(&format!("{c}.{s}.{d} "));
        }
        // Prose starts with a letter, so it is never read as a code; status-like tokens in it
        // are noise.
        text.push_str(&prose);
        for (c, s, d) in noise {
            text.push_str(&format!(" {c}.{s}.{d}"));
        }
        proptest::prop_assert_eq!(status_of(Some(&read(&text, kind)), kind), reference_status(code, status, kind), "{:?}", text);
    }
}

#[test]
fn diagnostics_are_cleaned() {
    let evil = "550 5.1.1 no\r\nFinal-Recipient: rfc822; x@y\r\n\x1b[31mred\x00\t é";
    let rcpts = [rcpt("b@remote.test", "5.1.1", evil, Some("mx\r\nX: y"))];
    let text = dsn(DsnKind::Failed, &rcpts, BODY);
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("Final-Recipient:"))
            .count(),
        1
    );
    assert!(!text.contains('\x1b') && !text.contains('\0'));
    assert!(text.contains(
        "Diagnostic-Code: smtp; 550 5.1.1 no Final-Recipient: rfc822; x@y [31mred ?\r\n"
    ));
    assert!(text.contains("Remote-MTA: dns; mx X: y\r\n"));

    let long = "550 5.1.1 ".to_string() + &"x".repeat(5000);
    let text = dsn(
        DsnKind::Failed,
        &[rcpt("b@remote.test", "5.1.1", &long, None)],
        BODY,
    );
    assert!(text.lines().all(|l| l.len() <= 998));
    assert!(text.contains("xxx...\r\n"));
    assert_eq!(clean("  a \r\n b  ", 100), "a b");
}

#[test]
fn header_section_and_boundary() {
    assert_eq!(
        header_section(b"A: 1\r\nB: 2\r\n\r\nbody"),
        b"A: 1\r\nB: 2\r\n"
    );
    assert_eq!(header_section(b"A: 1\nB: 2\n\nbody"), b"A: 1\nB: 2\n");
    assert_eq!(header_section(b"A: 1\r\n"), b"A: 1\r\n");
    assert_eq!(header_section(b"\r\nbody"), b"");
    // Headers capped at 64 KiB, whole lines only.
    let mut big = Vec::new();
    for i in 0..5000 {
        big.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "y".repeat(40)).as_bytes());
    }
    big.extend_from_slice(b"\r\nbody");
    let part = header_part(&big);
    assert!(part.len() <= MAX_HEADERS && part.len() > MAX_HEADERS - 100);
    assert!(part.ends_with(b"\r\n"));

    // An original that contains our boundary gets another one.
    let id = MessageId::parse("01900000000000001234").expect("id");
    let trap = b"X-Trap: =_mta-dsn-01900000000000001234\r\n\r\nbody".to_vec();
    let text = dsn(
        DsnKind::Failed,
        &[rcpt("b@remote.test", "5.1.1", "550 5.1.1 no", None)],
        &trap,
    );
    let (boundary, parts) = parts(&text);
    assert_eq!(boundary, format!("=_mta-dsn-{id}-1"));
    assert_eq!(parts.len(), 3);
}

#[test]
fn utf8_recipient_uses_global_types() {
    let rcpts = [rcpt("jörg@remote.test", "5.1.1", "550 5.1.1 no", None)];
    let text = dsn(
        DsnKind::Failed,
        &rcpts,
        "Subject: grüße\r\n\r\nx".as_bytes(),
    );
    assert!(text.contains("Content-Type: message/global-delivery-status\r\n"));
    assert!(text.contains("Final-Recipient: utf-8; jörg@remote.test\r\n"));
    assert!(text.contains("Content-Type: message/global-headers\r\n"));
    assert!(text.contains("Content-Transfer-Encoding: 8bit\r\n"));
}

#[tokio::test]
async fn send_dsn_queues_a_bounce_to_the_sender() {
    let dir = tempfile::tempdir().expect("temp dir");
    let queue = crate::Queue::open(
        dir.path(),
        QueueSettings::new(Domain::parse("mx.test").expect("domain")),
    )
    .expect("open queue");
    let orig = original(ReversePath::Address(addr("a@local.test")));
    let rcpts = [rcpt(
        "b@remote.test",
        "5.1.1",
        "550 5.1.1 no such user",
        None,
    )];
    let id = queue
        .send_dsn(DsnKind::Failed, &orig, &rcpts, BODY)
        .await
        .expect("stored")
        .expect("a DSN is due");
    let (record, body) = queue.store().load(&id).expect("load").expect("present");
    let env = &record.envelope;
    assert_eq!(env.sender, ReversePath::Null);
    assert_eq!(env.recipients.len(), 1);
    assert_eq!(env.recipients[0].address, addr("a@local.test"));
    assert_eq!(env.recipients[0].state, RcptState::Pending);
    assert_eq!(env.size, body.len() as u64);
    assert_eq!(env.origin.peer, "local");
    assert_eq!(env.origin.helo, "mx.test");
    let text = String::from_utf8(body.to_vec()).expect("utf-8");
    assert!(text.contains(&format!("Message-ID: <{id}@mx.test>\r\n")));
    assert!(text.contains("Final-Recipient: rfc822; b@remote.test\r\n"));

    // A bounce of a bounce is never sent.
    let bounce = env.clone();
    assert_eq!(
        queue
            .send_dsn(DsnKind::Failed, &bounce, &rcpts, BODY)
            .await
            .expect("no error"),
        None
    );
    assert_eq!(queue.store().len(), 1);
}

#[tokio::test]
async fn no_dsn_to_an_address_literal() {
    let dir = tempfile::tempdir().expect("temp dir");
    let queue = crate::Queue::open(
        dir.path(),
        QueueSettings::new(Domain::parse("mx.test").expect("domain")),
    )
    .expect("open queue");
    let rcpts = [rcpt(
        "b@remote.test",
        "5.1.1",
        "550 5.1.1 no such user",
        None,
    )];
    for literal in ["x@[127.0.0.12]", "x@[IPv6:::1]", "x@[192.0.2.1]"] {
        let orig = original(ReversePath::Address(addr(literal)));
        let sent = queue
            .send_dsn(DsnKind::Failed, &orig, &rcpts, BODY)
            .await
            .expect("no error");
        assert_eq!(sent, None, "{literal}");
    }
    assert_eq!(queue.store().len(), 0);
}

/// A DSN is signed with our DKIM key, so it must not carry header text a stranger chose:
/// mail from another server (even with its sender verified) gets no header part (RFC 3464
/// §2 lets the third part be left out) and no quote of its headers anywhere; an
/// authenticated user's mail and our own keep them.
#[test]
fn only_vouched_mail_gets_its_headers_back() {
    let body = b"From: <a@local.test>\r\nSubject: CHOSEN-SUBJECT\r\n\
X-Replay: CHOSEN-FIELD signed by you\r\n\r\nbody\r\n";
    let rcpts = [rcpt(
        "b@remote.test",
        "5.1.1",
        "550 5.1.1 no such user",
        Some("mx1.remote.test"),
    )];
    for (vouched, with_headers) in [
        (Vouched::SenderVerified, false),
        (Vouched::Unverified, false),
        (Vouched::Unrecorded, false),
        (Vouched::User, true),
        (Vouched::Generated, true),
    ] {
        for kind in [DsnKind::Failed, DsnKind::Delayed] {
            let mut original = original(ReversePath::Address(addr("a@local.test")));
            original.vouched = vouched;
            let bytes = build(
                kind,
                &Domain::parse("mx.test").expect("domain"),
                &MessageId::parse("01900000000000001234").expect("id"),
                &original,
                &rcpts,
                body,
                1_795_886_158,
            )
            .expect("a DSN is due");
            let text = String::from_utf8(bytes).expect("utf-8");
            let (_, parts) = parts(&text);
            let what = format!("{vouched:?} {kind:?}");
            assert_eq!(parts.len(), if with_headers { 3 } else { 2 }, "{what}");
            assert_eq!(text.contains("CHOSEN"), with_headers, "{what}");
            assert_eq!(text.contains("text/rfc822-headers"), with_headers, "{what}");
            assert_eq!(
                parts[0].contains("headers of your message are attached"),
                with_headers && kind == DsnKind::Failed,
                "{what}"
            );
            // The report still names the recipient, its status and the remote reply.
            assert!(
                parts[0].contains("<b@remote.test>: 550 5.1.1 no such user"),
                "{what}"
            );
            assert!(parts[1].contains("Final-Recipient: rfc822; b@remote.test\r\n"));
            assert!(parts[1].contains("Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n"));
        }
    }
}

/// The DSN fields before outcomes were typed, kept as the reference: the status read from
/// the text (`old_status_of`) and the remote host after its last ` (from `.
fn old_status_of(result: &str, kind: DsnKind) -> String {
    let fallback = kind.fallback_status();
    let text = result.trim_start();
    let b = text.as_bytes();
    let status = if b.len() >= 3
        && matches!(b[0], b'2'..=b'5')
        && b[1].is_ascii_digit()
        && b[2].is_ascii_digit()
        && matches!(b.get(3), None | Some(b' ' | b'-'))
    {
        let after = text.get(4..).unwrap_or("");
        let token = after.split(' ').next().unwrap_or("");
        match mta_core::outcome::is_status_code(token) && token.as_bytes()[0] == b[0] {
            true => token.to_string(),
            false => format!("{}.0.0", char::from(b[0])),
        }
    } else {
        let token = text.split(' ').next().unwrap_or("");
        match mta_core::outcome::is_status_code(token) {
            true => token.to_string(),
            false => return fallback.to_string(),
        }
    };
    match status.as_bytes()[0] == fallback.as_bytes()[0] {
        true => status,
        false => fallback.to_string(),
    }
}
fn old_split_remote(result: &str) -> (&str, Option<String>) {
    let Some(at) = result.rfind(" (from ") else {
        return (result, None);
    };
    let host = result[at + 7..].split([' ', ')']).next().unwrap_or("");
    let host = (!host.is_empty()).then(|| host.to_string());
    (&result[..at], host)
}

proptest::proptest! {
    /// A DSN line made from an outcome read back from its text says what the text-searching
    /// DSN said of that text: the same status, diagnostic and remote host (a server's host
    /// name; an LMTP server, which has none, is no longer named `lmtp`).
    #[test]
    fn typed_dsn_fields_match_the_text_reading(
        code in proptest::option::of(proptest::sample::select(vec!["250", "421", "451", "550", "554"])),
        status in proptest::option::of(proptest::sample::select(vec!["2.0.0", "4.4.1", "4.7.5", "5.1.1", "5.1.10", "5.7.30"])),
        prose in "[a-z]{1,8}( [a-z0-9.]{1,8}){0,4}",
        from in proptest::option::of(proptest::sample::select(vec!["mx1.remote.test [192.0.2.1] TLSv1.3 x policy=mta-sts", "h.test [::1] plaintext policy=configured"])),
        failed in proptest::bool::ANY,
    ) {
        let kind = if failed { DsnKind::Failed } else { DsnKind::Delayed };
        let mut text = [code, status].into_iter().flatten().collect::<Vec<_>>().join(" ");
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(&prose);
        if let Some(at) = from {
            text.push_str(&format!(" (from {at})"));
        }
        let mut r = Recipient::pending(Address::parse("b@remote.test").unwrap());
        r.last_result = Some(read(&text, kind));
        let line = DsnRecipient::of(&r, kind);
        let (diagnostic, remote) = old_split_remote(&text);
        proptest::prop_assert_eq!(&line.status, &old_status_of(diagnostic, kind));
        proptest::prop_assert_eq!(&line.diagnostic, diagnostic);
        proptest::prop_assert_eq!(&line.remote_mta, &remote);
    }
}

/// The status a DSN gives comes from the typed fields: an enhanced code of another class
/// than the reply code is not the status (the `451 … 5.1.1` case), whatever the text says.
#[test]
fn typed_status_ignores_an_enhanced_code_of_another_class() {
    let odd = Outcome::failed("5.1.1", "mailbox busy").with_code(451);
    assert_eq!(status_of(Some(&odd), DsnKind::Delayed), "4.0.0");
    assert_eq!(status_of(Some(&odd), DsnKind::Failed), "5.0.0");
    let ours = Outcome::deferred("4.4.1", "no host took the message");
    assert_eq!(status_of(Some(&ours), DsnKind::Delayed), "4.4.1");
    assert_eq!(status_of(None, DsnKind::Failed), "5.0.0");
}

/// An LMTP server is named by a socket address or path, not a DNS name: its failures get no
/// `Remote-MTA: dns; …` line. Reading the text named it `lmtp`.
#[test]
fn an_lmtp_server_is_no_remote_mta() {
    let text = "452 4.2.2 mailbox full (from lmtp 127.0.0.1:24)";
    assert_eq!(old_split_remote(text).1.as_deref(), Some("lmtp"));
    let mut r = Recipient::pending(addr("b@local.test"));
    r.last_result = Some(read(text, DsnKind::Delayed));
    let line = DsnRecipient::of(&r, DsnKind::Delayed);
    assert_eq!(line.remote_mta, None);
    assert_eq!(line.status, "4.2.2");
    assert_eq!(line.diagnostic, "452 4.2.2 mailbox full");
    let rcpts = [line];
    let dsn = dsn(DsnKind::Delayed, &rcpts, BODY);
    assert!(!dsn.contains("Remote-MTA"), "{dsn}");
}

fn dsn_for(kind: DsnKind, original: &Envelope, rcpts: &[DsnRecipient], body: &[u8]) -> String {
    let bytes = build(
        kind,
        &Domain::parse("mx.test").expect("domain"),
        &MessageId::parse("01900000000000001234").expect("id"),
        original,
        rcpts,
        body,
        1_795_886_158,
    )
    .expect("a DSN is due");
    String::from_utf8(bytes).expect("utf-8")
}

fn with_dsn(envid: Option<&str>, orcpt: Option<(&str, &str)>, ret: Option<Ret>) -> Envelope {
    let mut e = original(ReversePath::Address(addr("a@local.test")));
    e.dsn.envid = envid.map(str::to_string);
    e.dsn.ret = ret;
    e.recipients[0].dsn.orcpt = orcpt.map(|(t, a)| mta_core::dsn::Orcpt {
        addr_type: t.to_string(),
        address: a.to_string(),
    });
    e
}

/// The names of the fields in the delivery-status part, in order (continuation lines
/// belong to the field before them).
fn status_fields(text: &str) -> Vec<String> {
    let (_, parts) = parts(text);
    let body = parts[1].split_once("\r\n\r\n").expect("part body").1;
    body.split("\r\n")
        .filter(|l| !l.is_empty() && !l.starts_with([' ', '\t']))
        .map(|l| l.split_once(':').map_or(l, |(name, _)| name).to_string())
        .collect()
}

/// RFC 3464 §2.2.1 and §2.3.1: ENVID and ORCPT come back, and a success notice has the
/// same form as a bounce with another Action.
#[test]
fn success_notice_with_envid_and_orcpt() {
    let e = with_dsn(Some("QQ314159"), Some(("rfc822", "b+x@remote.test")), None);
    let rcpts = [rcpt("b@remote.test", "2.0.0", "250 2.0.0 ok", None)];
    let text = dsn_for(DsnKind::Delivered, &e, &rcpts, BODY);
    assert!(text.contains("Subject: Successful Mail Delivery Report\r\n"));
    assert!(text.contains("\r\nOriginal-Envelope-Id: QQ314159\r\nReporting-MTA: dns; mx.test\r\n"));
    assert!(text.contains(
        "\r\nOriginal-Recipient: rfc822; b+x@remote.test\r\nFinal-Recipient: rfc822; b@remote.test\r\nAction: delivered\r\nStatus: 2.0.0\r\n"
    ));
    let relayed = dsn_for(DsnKind::Relayed, &e, &rcpts, BODY);
    assert!(relayed.contains("Action: relayed\r\n"));
    assert!(!relayed.contains("Action: delivered"));
}

/// RET=HDRS returns the header section (as without RET); RET=FULL the whole message when
/// it is small enough, else the header section.
#[test]
fn ret_decides_what_is_returned() {
    let part3 = |ret| {
        let text = dsn_for(
            DsnKind::Failed,
            &with_dsn(None, None, ret),
            &[rcpt("b@remote.test", "5.1.1", "550 5.1.1 no", None)],
            BODY,
        );
        parts(&text).1[2].clone()
    };
    for ret in [None, Some(Ret::Hdrs)] {
        let p = part3(ret);
        assert!(p.contains("Content-Type: text/rfc822-headers\r\n"), "{p}");
        assert!(!p.contains("SECRET BODY LINE"));
    }
    let full = part3(Some(Ret::Full));
    assert!(full.contains("Content-Type: message/rfc822\r\n"), "{full}");
    assert!(
        full.contains("Subject: hello\r\nMessage-ID: <1@local.test>\r\n\r\nSECRET BODY LINE\r\n")
    );
    let big = [BODY, &vec![b'x'; MAX_RETURNED]].concat();
    let text = dsn_for(
        DsnKind::Failed,
        &with_dsn(None, None, Some(Ret::Full)),
        &[rcpt("b@remote.test", "5.1.1", "550 5.1.1 no", None)],
        &big,
    );
    let p = &parts(&text).1[2];
    assert!(p.contains("Content-Type: text/rfc822-headers\r\n") && !p.contains("SECRET"));
    let mut requiretls = with_dsn(None, None, Some(Ret::Full));
    requiretls.require_tls = true;
    let text = dsn_for(
        DsnKind::Failed,
        &requiretls,
        &[rcpt(
            "b@remote.test",
            "5.7.30",
            "5.7.30 no REQUIRETLS",
            None,
        )],
        BODY,
    );
    assert!(
        !text.contains("SECRET BODY LINE"),
        "a REQUIRETLS body never comes back"
    );
}

proptest::proptest! {
    /// Whatever an ENVID or ORCPT holds (the parser lets only printable ASCII in; a record
    /// could have been edited by hand), the delivery-status part has exactly the fields we
    /// write: nothing in a value starts a field or a part of its own.
    #[test]
    fn hostile_envid_and_orcpt_add_no_fields(
        envid in "[ -~\r\n\t\x00\x1b\u{80}-\u{10ffff};:]{1,120}",
        orcpt_type in "[ -~\r\n;:]{0,20}",
        orcpt in "[ -~\r\n\t\x00;:]{1,200}",
    ) {
        let e = with_dsn(Some(&envid), Some((&orcpt_type, &orcpt)), None);
        let rcpts = [rcpt("b@remote.test", "2.0.0", "250 ok", None)];
        let text = dsn_for(DsnKind::Delivered, &e, &rcpts, BODY);
        let fields = status_fields(&text);
        let core: Vec<&str> = fields
            .iter()
            .map(String::as_str)
            .filter(|f| !f.starts_with("Original-"))
            .collect();
        proptest::prop_assert_eq!(
            core,
            ["Reporting-MTA", "X-Mta-Queue-ID", "Arrival-Date", "Final-Recipient", "Action", "Status", "Diagnostic-Code"]
        );
        // The optional fields, each at most once and where RFC 3464 puts them.
        let at = |name: &str| fields.iter().position(|f| f == name);
        proptest::prop_assert!(fields.iter().filter(|f| f.starts_with("Original-")).count() <= 2);
        proptest::prop_assert!(at("Original-Envelope-Id").is_none_or(|i| i == 0));
        proptest::prop_assert!(at("Original-Recipient").is_none_or(|i| Some(i + 1) == at("Final-Recipient")));
        // A plain value comes back as it was.
        if envid.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            let line = format!("\r\nOriginal-Envelope-Id: {envid}\r\n");
            proptest::prop_assert!(text.contains(&line));
        }
        proptest::prop_assert_eq!(parts(&text).1.len(), 3);
    }
}
