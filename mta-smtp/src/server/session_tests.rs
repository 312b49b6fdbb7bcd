//! Dialogue tables for [`Session`]: lines in, reply codes out. Each step is
//! `(client line, expected code)`; a password check is carried out inline as the
//! connection loop would.

use super::*;
use mta_core::auth::UserDb;
use std::sync::OnceLock;

struct Users(Arc<UserDb>);
impl UserDirectory for Users {
    fn current(&self) -> Arc<UserDb> {
        self.0.clone()
    }
}

fn users() -> Arc<UserDb> {
    static DB: OnceLock<Arc<UserDb>> = OnceLock::new();
    DB.get_or_init(|| {
        let mut db = UserDb::default();
        db.add(
            Address::parse("alice@example.org").unwrap(),
            "correct horse",
        )
        .unwrap();
        Arc::new(db)
    })
    .clone()
}

fn session(listener: ListenerKind, tls: bool) -> Session {
    session_with(listener, tls, 20)
}

fn session_with(listener: ListenerKind, tls: bool, max_errors: u32) -> Session {
    let config = Config::from_toml(
        "test.toml",
        &format!(
            r#"
hostname = "mx.example.org"
local_domains = ["example.org"]
[limits]
max_message_size = 10000
max_recipients = 100
max_errors = {max_errors}
[aliases]
"sales@example.org" = ["alice@example.org"]
"team@example.org" = ["alice@example.org", "carol@remote.test"]
"#
        ),
        "unused",
    )
    .unwrap();
    Session::new(Context {
        config: Arc::new(config),
        users: Arc::new(Users(users())),
        listener,
        peer: "127.0.0.1:40000".parse().unwrap(),
        tls: tls.then(|| "TLSv1.3 TLS13_AES_128_GCM_SHA256".to_string()),
        starttls_available: !tls,
        sending: Default::default(),
    })
}

/// Runs the dialogue and returns each step's (code, action kind).
fn run(s: &mut Session, steps: &[(&str, u16)]) {
    for (line, want) in steps {
        let mut action = s.handle(line.as_bytes());
        if let Action::CheckPassword { login, password } = &action {
            let verified = users().verify(login, password);
            action = s.auth_checked(verified);
        }
        if action == Action::CheckRoom {
            action = s.room_checked(Ok(()));
        }
        let code = match &action {
            Action::Reply(r) | Action::Close(r) | Action::StartTls(r) | Action::StartData(r) => {
                r.code
            }
            Action::SkipChunk { reply, .. } => reply.code,
            // A chunk to read: marked 1.
            Action::Chunk { .. } => 1,
            Action::CheckPassword { .. }
            | Action::CheckRoom
            | Action::CheckRecipients { .. }
            | Action::CheckDnsbl => 0,
        };
        assert_eq!(code, *want, "after {line:?}: {action:?}");
    }
}

fn b64(s: &str) -> String {
    B64.encode(s)
}

#[test]
fn inbound_port_25() {
    let mut s = session(ListenerKind::Smtp, false);
    run(
        &mut s,
        &[
            ("MAIL FROM:<a@remote.test>", 503),
            ("EHLO client.test", 250),
            ("AUTH PLAIN", 502),
            ("RCPT TO:<alice@example.org>", 503),
            ("DATA", 503),
            ("MAIL FROM:<a@remote.test>", 250),
            ("MAIL FROM:<a@remote.test>", 503),
            ("RCPT TO:<bob@remote.test>", 550),
            ("RCPT TO:<nobody@example.org>", 550),
            ("RCPT TO:<alice@example.org>", 250),
            ("RCPT TO:<Sales@Example.ORG>", 250),
            ("RCPT TO:<postmaster>", 250),
            ("VRFY alice", 252),
            ("NOOP", 250),
            ("DATA", 354),
        ],
    );
    let tx = s.take_transaction().unwrap();
    let rcpts: Vec<String> = tx.recipients.iter().map(|a| a.to_string()).collect();
    assert_eq!(
        rcpts,
        ["alice@example.org", "postmaster@example.org"],
        "hostname is not local here"
    );
    run(&mut s, &[("DATA", 503), ("RSET", 250), ("QUIT", 221)]);
}

#[test]
fn mail_waits_for_room_in_the_queue() {
    let mut s = session(ListenerKind::Smtp, false);
    run(&mut s, &[("EHLO client.test", 250)]);
    assert_eq!(s.handle(b"MAIL FROM:<a@remote.test>"), Action::CheckRoom);
    let refused = s.room_checked(Err(Reply::INSUFFICIENT_STORAGE));
    assert_eq!(refused, Action::Reply(Reply::INSUFFICIENT_STORAGE));
    // No transaction was started: the client may try again at once.
    run(
        &mut s,
        &[
            ("RCPT TO:<alice@example.org>", 503),
            ("MAIL FROM:<a@remote.test>", 250),
            ("RCPT TO:<alice@example.org>", 250),
        ],
    );
}

#[test]
fn ehlo_advertises_by_state() {
    let ehlo = |s: &mut Session| match s.handle(b"EHLO c.test") {
        Action::Reply(r) => r.text.to_string(),
        other => panic!("{other:?}"),
    };
    let plain25 = ehlo(&mut session(ListenerKind::Smtp, false));
    assert!(
        plain25.contains("STARTTLS") && !plain25.contains("AUTH"),
        "{plain25}"
    );
    assert!(plain25.contains("SIZE 10000") && plain25.contains("SMTPUTF8"));
    let plain587 = ehlo(&mut session(ListenerKind::Submission, false));
    assert!(
        plain587.contains("STARTTLS") && !plain587.contains("AUTH"),
        "{plain587}"
    );
    let tls587 = ehlo(&mut session(ListenerKind::Submission, true));
    assert!(
        !tls587.contains("STARTTLS") && tls587.contains("AUTH PLAIN LOGIN"),
        "{tls587}"
    );
    // RFC 8689 §3: REQUIRETLS only over TLS.
    assert!(!plain25.contains("REQUIRETLS") && tls587.contains("REQUIRETLS"));
    let tls25 = ehlo(&mut session(ListenerKind::Smtp, true));
    assert!(tls25.contains("REQUIRETLS"), "{tls25}");
}

#[test]
fn requiretls_needs_a_tls_session() {
    let mut plain = session(ListenerKind::Smtp, false);
    run(
        &mut plain,
        &[
            ("EHLO c.test", 250),
            ("MAIL FROM:<a@remote.test> REQUIRETLS", 530),
            ("MAIL FROM:<a@remote.test>", 250),
        ],
    );
    let mut tls = session(ListenerKind::Smtp, true);
    run(
        &mut tls,
        &[
            ("EHLO c.test", 250),
            ("MAIL FROM:<a@remote.test> requiretls", 250),
            ("RCPT TO:<alice@example.org>", 250),
        ],
    );
    assert!(tls.take_transaction().expect("a transaction").require_tls);
}

#[test]
fn submission_needs_tls_then_auth() {
    let mut s = session(ListenerKind::Submission, false);
    run(
        &mut s,
        &[
            ("EHLO c.test", 250),
            (
                &format!("AUTH PLAIN {}", b64("\0alice@example.org\0correct horse")),
                538,
            ),
            ("MAIL FROM:<alice@example.org>", 530),
            ("STARTTLS", 220),
        ],
    );
    let mut s = session(ListenerKind::Submissions, true);
    run(
        &mut s,
        &[
            ("EHLO c.test", 250),
            ("MAIL FROM:<alice@example.org>", 530),
            (
                &format!("AUTH PLAIN {}", b64("\0alice@example.org\0wrong")),
                535,
            ),
            (
                &format!("AUTH PLAIN {}", b64("\0alice@example.org\0correct horse")),
                235,
            ),
            (
                &format!("AUTH PLAIN {}", b64("\0alice@example.org\0correct horse")),
                503,
            ),
            ("MAIL FROM:<bob@example.org>", 553),
            ("MAIL FROM:<>", 553),
            ("MAIL FROM:<sales@example.org> SIZE=20000", 552),
            ("MAIL FROM:<sales@example.org>", 250),
            ("RCPT TO:<anyone@remote.test>", 250),
            ("RCPT TO:<nobody@example.org>", 550),
            ("DATA", 354),
        ],
    );
}

#[test]
fn auth_plain_and_login_steps() {
    let mut s = session(ListenerKind::Submission, true);
    run(
        &mut s,
        &[
            ("EHLO c.test", 250),
            ("AUTH PLAIN", 334),
            ("*", 501),
            ("AUTH PLAIN", 334),
            ("not base64!", 501),
            ("AUTH LOGIN", 334),
            (&b64("alice@example.org"), 334),
            (&b64("correct horse"), 235),
        ],
    );
    let mut s = session(ListenerKind::Submission, true);
    run(
        &mut s,
        &[
            ("EHLO c.test", 250),
            (&format!("AUTH LOGIN {}", b64("ALICE@example.org")), 334),
            (&b64("correct horse"), 235),
            ("MAIL FROM:<alice@example.org>", 250),
        ],
    );
    let mut s = session(ListenerKind::Submission, true);
    run(
        &mut s,
        &[
            ("EHLO c.test", 250),
            (
                &format!(
                    "AUTH PLAIN {}",
                    b64("bob@example.org\0alice@example.org\0correct horse")
                ),
                535,
            ),
            (
                &format!("AUTH PLAIN {}", b64("\0nobody@example.org\0correct horse")),
                535,
            ),
            ("AUTH CRAM-MD5", 504),
        ],
    );
}

#[test]
fn errors_are_bounded_and_lines_limited() {
    let mut s = session_with(ListenerKind::Smtp, false, 5);
    run(&mut s, &[("EHLO c.test", 250)]);
    let long = format!("NOOP {}", "x".repeat(600));
    run(
        &mut s,
        &[
            (&long, 500),
            ("BOGUS", 500),
            ("BOGUS", 500),
            ("BOGUS", 500),
            ("BOGUS", 421),
        ],
    );
    let mut s = session(ListenerKind::Smtp, false);
    match s.handle(b"GET / HTTP/1.1") {
        Action::Close(r) => assert_eq!(r.code, 500),
        other => panic!("{other:?}"),
    }
}

#[test]
fn smtputf8_is_needed_for_utf8_recipients() {
    let mut s = session(ListenerKind::Submission, true);
    run(
        &mut s,
        &[
            ("EHLO c.test", 250),
            (
                &format!("AUTH PLAIN {}", b64("\0alice@example.org\0correct horse")),
                235,
            ),
            ("MAIL FROM:<alice@example.org>", 250),
            ("RCPT TO:<ñ@remote.test>", 553),
            ("RSET", 250),
            ("MAIL FROM:<alice@example.org> SMTPUTF8", 250),
            ("RCPT TO:<ñ@remote.test>", 250),
        ],
    );
}

/// XCLIENT and XFORWARD (Postfix: let a proxy claim another client address, name or login),
/// and ATRN/TURN/ETRN (turn the connection around or start a queue run): none exists here.
/// Each gets 500 5.5.1, is not advertised, and leaves the session exactly as it was.
#[test]
fn identity_and_queue_extensions_do_not_exist() {
    let commands = [
        "XCLIENT ADDR=1.2.3.4",
        "XCLIENT ADDR=192.0.2.1 NAME=trusted.example LOGIN=alice@example.org",
        "xclient addr=1.2.3.4",
        "XFORWARD",
        "XFORWARD ADDR=1.2.3.4 HELO=trusted.example",
        "ATRN",
        "ATRN example.org",
        "TURN",
        "ETRN",
        "ETRN example.org",
    ];
    for (listener, tls) in [
        (ListenerKind::Smtp, false),
        (ListenerKind::Submission, true),
    ] {
        let mut s = session(listener, tls);
        let ehlo = match s.handle(b"EHLO client.test") {
            Action::Reply(r) => r.text.to_string(),
            other => panic!("{other:?}"),
        };
        for word in ["XCLIENT", "XFORWARD", "ATRN", "TURN", "ETRN"] {
            assert!(!ehlo.contains(word), "{word} advertised: {ehlo}");
        }
        if listener == ListenerKind::Smtp {
            run(&mut s, &[("MAIL FROM:<a@remote.test>", 250)]);
        }
        for cmd in commands {
            match s.handle(cmd.as_bytes()) {
                Action::Reply(r) => {
                    assert_eq!((r.code, r.enhanced), (500, Some("5.5.1")), "{cmd}")
                }
                other => panic!("{cmd}: {other:?}"),
            }
            assert_eq!(s.context().peer.to_string(), "127.0.0.1:40000", "{cmd}");
            assert_eq!(s.helo(), Some("client.test"), "{cmd}");
            assert_eq!(s.user(), None, "{cmd}");
        }
        if listener == ListenerKind::Smtp {
            // The transaction survived, and port 25 rules still hold: no relaying.
            run(
                &mut s,
                &[
                    ("RCPT TO:<bob@remote.test>", 550),
                    ("RCPT TO:<alice@example.org>", 250),
                    ("DATA", 354),
                ],
            );
        } else {
            run(&mut s, &[("MAIL FROM:<alice@example.org>", 530)]);
        }
    }
}

#[test]
fn lmtp_recipients_wait_for_the_lmtp_server() {
    let mut config = (*session(ListenerKind::Smtp, false).ctx.config).clone();
    config.local.delivery = mta_core::config::LocalDelivery::Lmtp(
        mta_core::config::LmtpAddress::Tcp("127.0.0.1:24".parse().unwrap()),
    );
    let mut s = Session::new(Context {
        config: Arc::new(config),
        ..session(ListenerKind::Smtp, false).ctx
    });
    run(
        &mut s,
        &[
            ("EHLO client.test", 250),
            ("MAIL FROM:<a@remote.test>", 250),
        ],
    );
    let alice = Address::parse("alice@example.org").unwrap();
    let asked = Action::CheckRecipients {
        from: mta_core::address::parse_reverse_path("<a@remote.test>").unwrap(),
        rcpts: vec![alice.clone()],
    };
    assert_eq!(s.handle(b"RCPT TO:<sales@example.org>"), asked);
    assert_eq!(
        s.recipients_checked(Err(Reply::MAILBOX_REFUSED)),
        Action::Reply(Reply::MAILBOX_REFUSED)
    );
    assert_eq!(s.handle(b"RCPT TO:<alice@example.org>"), asked);
    assert_eq!(
        s.recipients_checked(Ok(())),
        Action::Reply(Reply::RECIPIENT_OK)
    );
    let tx = s.take_transaction().unwrap();
    assert_eq!((tx.recipients, tx.rcpt_count), (vec![alice], 1));
}

/// `limits.max_commands_without_progress` (20 by default): the 21st line in a row that
/// does not move the session towards a message gets 421 instead of its reply; a 354 or a
/// successful AUTH starts the count again, and an accepted RCPT is not counted (so many
/// recipients are fine, but MAIL, RCPT, RSET for ever is not).
#[test]
fn sessions_without_progress_are_closed() {
    let mut s = session(ListenerKind::Smtp, false);
    run(&mut s, &[("EHLO client.test", 250)]);
    for _ in 0..19 {
        run(&mut s, &[("NOOP", 250)]);
    }
    run(&mut s, &[("NOOP", 421)]);

    let mut s = session(ListenerKind::Smtp, false);
    let mut steps = vec![("EHLO client.test", 250)];
    steps.extend([("RSET", 250), ("HELP", 214), ("VRFY x", 252)].repeat(3));
    steps.push(("MAIL FROM:<a@remote.test>", 250));
    steps.extend([("RCPT TO:<alice@example.org>", 250)].repeat(40));
    steps.extend([("NOOP", 250)].repeat(9));
    steps.extend([("DATA", 354)]);
    run(&mut s, &steps);
    s.take_transaction();
    let mut steps = [("NOOP", 250)].repeat(20);
    steps.push(("NOOP", 421));
    run(&mut s, &steps);

    let mut s = session(ListenerKind::Submission, true);
    let mut steps = [("NOOP", 250)].repeat(19);
    let auth = format!("AUTH PLAIN {}", b64("\0alice@example.org\0correct horse"));
    steps.push((&auth, 235));
    steps.extend([("NOOP", 250)].repeat(20));
    steps.push(("RSET", 421));
    run(&mut s, &steps);

    // Recipients accepted and thrown away again and again are no progress.
    let mut s = session(ListenerKind::Smtp, false);
    let mut steps = vec![("EHLO client.test", 250)];
    let cycle = [
        ("MAIL FROM:<a@remote.test>", 250),
        ("RCPT TO:<alice@example.org>", 250),
        ("RSET", 250),
    ];
    steps.extend(cycle.repeat(9));
    steps.push(("MAIL FROM:<a@remote.test>", 250));
    steps.push(("RCPT TO:<alice@example.org>", 250));
    steps.push(("RSET", 421));
    run(&mut s, &steps);
}

mod progress_model {
    use super::*;
    use proptest::prelude::*;

    const LINES: [&str; 9] = [
        "NOOP",
        "RSET",
        "HELP",
        "EHLO client.test",
        "MAIL FROM:<a@remote.test>",
        "RCPT TO:<alice@example.org>",
        "RCPT TO:<x@remote.test>",
        "DATA",
        "BOGUS",
    ];

    proptest! {
        /// The 421 for no progress comes exactly when a small model says: it follows the
        /// transaction (EHLO, MAIL, RCPT, DATA, RSET) to know which lines move towards a
        /// message (a 354) and which are not counted (an accepted RCPT), counts the others,
        /// and expects the close on the first line past the limit that is not MAIL (answered
        /// only after the room check).
        #[test]
        fn no_progress_closes_as_the_model_says(picks in prop::collection::vec(0..LINES.len(), 0..120)) {
            let mut s = session_with(ListenerKind::Smtp, false, 100_000);
            let limit = s.context().config.limits.max_commands_without_progress;
            let (mut helo, mut tx, mut rcpt, mut idle) = (false, false, false, 0u32);
            for pick in picks {
                let line = LINES[pick];
                idle += 1;
                let mut progress = false;
                match line {
                    "EHLO client.test" => (helo, tx, rcpt) = (true, false, false),
                    "RSET" => (tx, rcpt) = (false, false),
                    "MAIL FROM:<a@remote.test>" if helo && !tx => tx = true,
                    "RCPT TO:<alice@example.org>" if tx => {
                        rcpt = true;
                        idle -= 1;
                    }
                    "DATA" if tx && rcpt => progress = true,
                    _ => {}
                }
                let mut action = s.handle(line.as_bytes());
                if action == Action::CheckRoom {
                    action = s.room_checked(Ok(()));
                    prop_assert!(matches!(action, Action::Reply(ref r) if r.code == 250));
                    continue;
                }
                if progress {
                    idle = 0;
                    prop_assert!(!matches!(action, Action::Close(_)), "{} {:?}", line, action);
                    if line == "DATA" {
                        // The message is read and answered; the transaction ends.
                        prop_assert!(matches!(action, Action::StartData(_)));
                        s.take_transaction();
                        (tx, rcpt) = (false, false);
                    }
                } else if idle > limit {
                    prop_assert_eq!(action, Action::Close(Reply::NO_PROGRESS), "{}", line);
                    return Ok(());
                } else {
                    prop_assert!(matches!(action, Action::Reply(ref r) if r.code != 421), "{} {:?}", line, action);
                }
            }
        }
    }
}

/// RFC 4954 §5: `AUTH=` on MAIL is taken (and ignored) where AUTH is offered, whatever it
/// names; it never makes a session authenticated. Where AUTH is not offered it stays an
/// unknown parameter.
#[test]
fn mail_auth_parameter_only_where_auth_is_offered() {
    let mut inbound = session(ListenerKind::Smtp, true);
    run(
        &mut inbound,
        &[
            ("EHLO client.test", 250),
            ("MAIL FROM:<a@remote.test> AUTH=<>", 555),
            ("MAIL FROM:<a@remote.test>", 250),
        ],
    );
    let mut sub = session(ListenerKind::Submission, true);
    let login = format!("AUTH PLAIN {}", b64("\0alice@example.org\0correct horse"));
    run(
        &mut sub,
        &[
            ("EHLO client.test", 250),
            ("MAIL FROM:<alice@example.org> AUTH=<>", 530),
            (&login, 235),
            ("MAIL FROM:<alice@example.org> AUTH=<>", 250),
            ("RSET", 250),
            ("MAIL FROM:<alice@example.org> AUTH=bob+40example.org", 250),
            ("RSET", 250),
            ("MAIL FROM:<alice@example.org> AUTH=bob=x", 501),
        ],
    );
    assert_eq!(
        sub.user().map(|u| u.to_string()).as_deref(),
        Some("alice@example.org")
    );
}

/// RFC 4954 §4: `AUTH PLAIN =` is an empty initial response; the server asks with `334 `.
#[test]
fn auth_plain_with_an_empty_initial_response() {
    let mut s = session(ListenerKind::Submission, true);
    run(
        &mut s,
        &[
            ("EHLO client.test", 250),
            ("AUTH PLAIN =", 334),
            (&b64("\0alice@example.org\0correct horse"), 235),
        ],
    );
    assert!(s.user().is_some());
}

/// DSN is offered on every listener; the parameters land in the transaction, and an alias
/// with one target passes its NOTIFY on to it unchanged, with the address the client wrote
/// as ORCPT.
#[test]
fn dsn_parameters_reach_the_transaction() {
    for (listener, tls) in [
        (ListenerKind::Smtp, false),
        (ListenerKind::Submission, false),
        (ListenerKind::Submissions, true),
    ] {
        match session(listener, tls).handle(b"EHLO c.test") {
            Action::Reply(r) => assert!(r.text.lines().any(|l| l == "DSN"), "{}", r.text),
            other => panic!("{other:?}"),
        }
    }
    let mut s = session(ListenerKind::Smtp, false);
    run(
        &mut s,
        &[
            ("EHLO client.test", 250),
            ("MAIL FROM:<a@remote.test> RET=HDRS ENVID=id+2B1", 250),
            ("RCPT TO:<sales@example.org> NOTIFY=SUCCESS", 250),
            ("RCPT TO:<alice@example.org> NOTIFY=NEVER", 250),
            ("RCPT TO:<bob@example.org> NOTIFY=NEVER,SUCCESS", 501),
        ],
    );
    let tx = s.take_transaction().unwrap();
    assert_eq!(tx.dsn.envid.as_deref(), Some("id+1"));
    assert_eq!(tx.dsn.ret, Some(mta_core::dsn::Ret::Hdrs));
    let alice = tx.dsn_of(&Address::parse("alice@example.org").unwrap());
    assert!(
        alice.wants_success(),
        "the alias's NOTIFY comes first: {alice:?}"
    );
    assert_eq!(
        alice.orcpt.map(|o| o.address).as_deref(),
        Some("sales@example.org")
    );
}

/// RFC 3461 §6.2.7.3: an alias that expands to several addresses is treated like a list,
/// so its targets do not get `SUCCESS` (no success notice per target to a sender who may be
/// forged); `FAILURE` and `DELAY` pass on, with the alias as ORCPT.
#[test]
fn an_alias_to_several_targets_drops_notify_success() {
    let mut s = session(ListenerKind::Smtp, false);
    run(
        &mut s,
        &[
            ("EHLO client.test", 250),
            ("MAIL FROM:<a@remote.test> RET=FULL", 250),
            ("RCPT TO:<team@example.org> NOTIFY=SUCCESS,FAILURE", 250),
        ],
    );
    let tx = s.take_transaction().unwrap();
    for target in ["alice@example.org", "carol@remote.test"] {
        let dsn = tx.dsn_of(&Address::parse(target).unwrap());
        assert!(!dsn.wants_success(), "{target}: {dsn:?}");
        assert!(dsn.wants_failure(), "{target}: {dsn:?}");
        assert_eq!(
            dsn.orcpt.map(|o| o.address).as_deref(),
            Some("team@example.org")
        );
    }
}

/// BDAT (RFC 3030): offered in EHLO; a chunk outside a transaction or without recipients is
/// skipped with 503/554; a size that cannot be counted closes with 501; only chunks with
/// octets (or the last) count as progress.
#[test]
fn bdat_in_the_dialogue() {
    let mut s = session(ListenerKind::Smtp, false);
    match s.handle(b"EHLO c.test") {
        Action::Reply(r) => assert!(r.text.lines().any(|l| l == "CHUNKING"), "{r:?}"),
        other => panic!("{other:?}"),
    }
    run(
        &mut s,
        &[
            ("BDAT 10", 503),
            ("BDAT 0 LAST", 503),
            ("MAIL FROM:<a@remote.test>", 250),
            ("BDAT 5 LAST", 554),
            ("RCPT TO:<alice@example.org>", 250),
            ("BDAT 5", 1),
            ("bdat 0 last", 1),
            ("MAIL FROM:<a@remote.test> BODY=BINARYMIME", 555),
        ],
    );
    for bad in [
        "BDAT",
        "BDAT x",
        "BDAT -1",
        "BDAT 1 LASTX",
        "BDAT 123456789012345678901",
    ] {
        let mut s = session(ListenerKind::Smtp, false);
        match s.handle(bad.as_bytes()) {
            Action::Close(r) => assert_eq!(r, Reply::BAD_BDAT_SYNTAX, "{bad}"),
            other => panic!("{bad}: {other:?}"),
        }
    }
    // Empty chunks do not hold a session for ever.
    let mut s = session(ListenerKind::Smtp, false);
    run(
        &mut s,
        &[
            ("EHLO c.test", 250),
            ("MAIL FROM:<a@remote.test>", 250),
            ("RCPT TO:<alice@example.org>", 250),
        ],
    );
    let closed = (0..1000).find_map(|_| match s.handle(b"BDAT 0") {
        Action::Close(r) => Some(r),
        _ => None,
    });
    assert_eq!(closed, Some(Reply::NO_PROGRESS));
}

/// Two submission sessions of alice sharing one limiter that allows one message a day:
/// MAIL reserves it, so the other session's MAIL gets 450 4.7.1; RSET gives it back; port 25
/// is not counted.
#[test]
fn sending_limit_reserved_at_mail_and_given_back_by_rset() {
    let limited = |sending: &Arc<super::super::sending_limits::SendingLimiter>, kind| {
        let s = session(kind, true);
        let mut config = (*s.ctx.config).clone();
        config.limits.sending.default.messages_per_day = 1;
        Session::new(Context {
            config: Arc::new(config),
            sending: sending.clone(),
            ..s.ctx
        })
    };
    let sending = Arc::default();
    let auth = (
        "AUTH PLAIN AGFsaWNlQGV4YW1wbGUub3JnAGNvcnJlY3QgaG9yc2U=",
        235,
    );
    let (mut a, mut b) = (
        limited(&sending, ListenerKind::Submission),
        limited(&sending, ListenerKind::Submission),
    );
    let start = [("EHLO client.test", 250), auth];
    run(&mut a, &start);
    run(&mut b, &start);
    run(&mut a, &[("MAIL FROM:<alice@example.org>", 250)]);
    run(&mut b, &[("MAIL FROM:<alice@example.org>", 450)]);
    run(&mut a, &[("RSET", 250)]);
    run(&mut b, &[("MAIL FROM:<alice@example.org>", 250)]);
    run(&mut a, &[("MAIL FROM:<alice@example.org>", 450)]);
    // EHLO drops b's transaction too.
    run(&mut b, &[("EHLO client.test", 250)]);
    run(&mut a, &[("MAIL FROM:<alice@example.org>", 250)]);
    // Mail from other servers is not counted, whatever the limiter says.
    let mut inbound = limited(&sending, ListenerKind::Smtp);
    run(
        &mut inbound,
        &[
            ("EHLO client.test", 250),
            ("MAIL FROM:<alice@example.org>", 250),
        ],
    );
}

/// A session whose config has one DNS blocklist.
fn session_with_dnsbl(listener: ListenerKind, tls: bool) -> Session {
    let config = Config::from_toml(
        "test.toml",
        "hostname = \"mx.example.org\"\nlocal_domains = [\"example.org\"]\n\
         [[inbound.dnsbl]]\nzone = \"zen.test\"\n",
        "unused",
    )
    .unwrap();
    Session::new(Context {
        config: Arc::new(config),
        users: Arc::new(Users(users())),
        listener,
        peer: "127.0.0.2:40000".parse().unwrap(),
        tls: tls.then(|| "TLSv1.3 TLS13_AES_128_GCM_SHA256".to_string()),
        starttls_available: false,
        sending: Default::default(),
    })
}

#[test]
fn dnsbl_is_asked_at_the_first_rcpt_and_spares_postmaster() {
    let mut s = session_with_dnsbl(ListenerKind::Smtp, false);
    run(
        &mut s,
        &[
            ("EHLO client.test", 250),
            ("MAIL FROM:<a@remote.test>", 250),
        ],
    );
    assert_eq!(s.handle(b"RCPT TO:<alice@example.org>"), Action::CheckDnsbl);
    let refusal = Reply::new(554, "5.7.1", "Client [127.0.0.2] listed by zen.test");
    // The waiting RCPT is answered with the standing.
    let answered = s.dnsbl_checked(Standing::Reject(refusal.clone()));
    assert_eq!(answered, Action::Reply(refusal.clone()));
    // Asked once: later RCPTs are answered at once.
    assert_eq!(
        s.handle(b"RCPT TO:<alice@example.org>"),
        Action::Reply(refusal)
    );
    run(
        &mut s,
        &[
            ("RCPT TO:<Postmaster>", 250),
            ("RCPT TO:<POSTMASTER@Example.ORG>", 250),
            // Postmaster elsewhere is not ours to except.
            ("RCPT TO:<postmaster@elsewhere.test>", 554),
        ],
    );
    assert_eq!(s.dnsbl_mark(), None);
    // Mark: the RCPT is accepted, the field kept for the message.
    let mut s = session_with_dnsbl(ListenerKind::Smtp, false);
    run(
        &mut s,
        &[
            ("EHLO client.test", 250),
            ("MAIL FROM:<a@remote.test>", 250),
        ],
    );
    assert_eq!(s.handle(b"RCPT TO:<alice@example.org>"), Action::CheckDnsbl);
    let field = "X-DNSBL: 127.0.0.2 listed by zen.test (127.0.0.2)\r\n".to_string();
    assert_eq!(
        s.dnsbl_checked(Standing::Mark(field.clone())),
        Action::Reply(Reply::RECIPIENT_OK)
    );
    assert_eq!(s.dnsbl_mark(), Some(field.as_str()));
}

#[test]
fn dnsbl_is_never_asked_on_submission() {
    let auth = format!("AUTH PLAIN {}", b64("\0alice@example.org\0correct horse"));
    for listener in [ListenerKind::Submission, ListenerKind::Submissions] {
        let mut s = session_with_dnsbl(listener, true);
        run(
            &mut s,
            &[
                ("EHLO client.test", 250),
                (&auth, 235),
                ("MAIL FROM:<alice@example.org>", 250),
                ("RCPT TO:<bob@remote.test>", 250),
            ],
        );
    }
}
