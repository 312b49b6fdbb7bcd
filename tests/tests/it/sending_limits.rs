//! `[limits.sending]` and `mta user show|hold|release` end to end: a burst over the hourly cap
//! with Python's smtplib, the counts kept over a restart, twenty parallel sessions of one
//! user, the postmaster's notice once a day, a hold with mail queued for a fake remote, and
//! the CLI's refusals.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};

use mta_tests::fake_smtp::{FakeSmtp, Script};
use mta_tests::relay::{REMOTE_BOB, message, sender, start_sender, submit};
use mta_tests::{
    ALICE, ALICE_PASSWORD, SmtpClient, TestDns, TestMta, on_shared_port, run, secs, wait_for,
};

const POSTMASTER: &str = "postmaster@example.test";
const BOB: &str = "bob@example.test";

/// Sends `count` messages from the user to `rcpt`, one session each, and prints the reply
/// code to MAIL FROM of each, space separated (a refused MAIL ends that session).
const BURST: &str = r#"
import smtplib, ssl, sys
port, cafile, user, password, rcpt, count = sys.argv[1:7]
ctx = ssl.create_default_context(cafile=cafile)
codes = []
for i in range(int(count)):
    with smtplib.SMTP("127.0.0.1", int(port), local_hostname="python.client.test", timeout=10) as s:
        s.starttls(context=ctx)
        s.login(user, password)
        code, text = s.mail(user)
        codes.append("%d:%s" % (code, text.decode().split(" ")[0]))
        if code == 250:
            s.rcpt(rcpt)
            s.data("From: %s\r\nTo: %s\r\nSubject: burst %d\r\n\r\nhello\r\n" % (user, rcpt, i))
print(" ".join(codes))
"#;

fn burst(mta: &TestMta, count: usize) -> String {
    let out = run(
        "python3 smtplib burst",
        Command::new("python3")
            .args(["-c", BURST])
            .arg(mta.submission_addr().port().to_string())
            .arg(mta.cert_path())
            .args([ALICE, ALICE_PASSWORD, BOB])
            .arg(count.to_string()),
        b"",
        secs(60),
    );
    out.assert_success("python3 smtplib burst");
    out.stdout.trim().to_string()
}

fn limited(toml: &str) -> TestMta {
    let mta = TestMta::start(&format!("[limits.sending]\n{toml}"));
    mta.add_user(ALICE, ALICE_PASSWORD);
    mta.add_user(BOB, "bob-password-1");
    mta.add_user(POSTMASTER, "postmaster-password-1");
    mta
}

#[test]
fn burst_gets_450_at_the_message_past_the_cap_and_a_restart_keeps_the_count() {
    let mut mta = limited("messages_per_hour = 3\n");
    assert_eq!(
        burst(&mta, 5),
        "250:2.1.0 250:2.1.0 250:2.1.0 450:4.7.1 450:4.7.1",
        "{}",
        mta.log()
    );
    mta.wait_for_mail(BOB, 3, 10);
    let refusals = mta
        .log()
        .lines()
        .filter(|l| l.contains("sending refused") && l.contains("messages_per_hour"))
        .count();
    assert_eq!(
        refusals,
        2,
        "one log line per refusal, naming the limit\n{}",
        mta.log()
    );
    mta.restart();
    assert_eq!(burst(&mta, 1), "450:4.7.1", "{}", mta.log());
    let show = mta.mta(&["user", "show", ALICE], b"");
    show.assert_success("mta user show");
    assert!(
        show.stdout.contains("last hour     3 messages (limit 3)"),
        "{}",
        show.stdout
    );
    assert_eq!(mta.maildir_new(BOB).len(), 3);
}

#[test]
fn twenty_parallel_sessions_of_one_user_do_not_pass_the_cap() {
    let mta = limited("messages_per_day = 5\n");
    let cert = mta.cert_path();
    let addr = mta.submissions_addr();
    let start = Arc::new(Barrier::new(20));
    let threads: Vec<_> = (0..20u8)
        .map(|i| {
            let (cert, start) = (cert.clone(), start.clone());
            std::thread::spawn(move || {
                // One address each, so the sessions-per-address cap is not what stops them.
                let source = IpAddr::V4(Ipv4Addr::new(127, 0, 1, 10 + i));
                let mut c = SmtpClient::connect_tls_from(addr, source, &cert);
                c.reply("the greeting");
                c.expect("EHLO client.example.test", 250);
                let mut auth = c.auth_plain(ALICE, ALICE_PASSWORD);
                for _ in 0..100 {
                    // 454: too many password checks at once; a real client tries again.
                    if auth.code != 454 {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    auth = c.auth_plain(ALICE, ALICE_PASSWORD);
                }
                assert_eq!(auth.code, 235, "{}", c.transcript());
                start.wait();
                let mail = c.command(&format!("MAIL FROM:<{ALICE}>"));
                if mail.code != 250 {
                    return (mail.code, 0);
                }
                c.expect(&format!("RCPT TO:<{BOB}>"), 250);
                c.expect("DATA", 354);
                let data = format!(
                    "From: <{ALICE}>\r\nTo: <{BOB}>\r\nSubject: parallel\r\n\r\nhi\r\n.\r\n"
                );
                c.send_raw(data.as_bytes()).unwrap();
                (mail.code, c.reply("the final dot").code)
            })
        })
        .collect();
    let results: Vec<(u16, u16)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let accepted = results.iter().filter(|r| r.1 == 250).count();
    let refused = results.iter().filter(|r| r.0 == 450).count();
    assert_eq!((accepted, refused), (5, 15), "{results:?}");
    mta.wait_for_mail(BOB, 5, 10);
}

#[test]
fn the_postmaster_is_told_once_a_day() {
    let mta = limited("messages_per_hour = 1\n");
    assert_eq!(burst(&mta, 2), "250:2.1.0 450:4.7.1");
    let notices = mta.wait_for_mail(POSTMASTER, 1, 10);
    let text = std::fs::read_to_string(&notices[0]).unwrap();
    assert!(
        text.contains(&format!("Subject: Sending limit reached by {ALICE}"))
            && text.contains("messages_per_hour (1 of 1)")
            && text.contains("password may be stolen"),
        "{text}"
    );
    // A second hit the same day: refused again, no second notice.
    assert_eq!(burst(&mta, 1), "450:4.7.1");
    mta.wait_for_empty_queue(secs(10));
    assert_eq!(mta.maildir_new(POSTMASTER).len(), 1, "{}", mta.log());
    assert_eq!(mta.log().matches("sending limit notice queued").count(), 1);
    assert_eq!(mta.log().matches("sending refused").count(), 2);
}

#[test]
fn a_held_user_is_refused_and_its_queued_mail_waits_for_the_release() {
    let dns = TestDns::start(&[
        "--mx-host=remote.test,mx1.remote.test,10",
        "--host-record=mx1.remote.test,127.0.0.2",
    ]);
    // The fake remote defers until told to accept, so that three messages are queued.
    let accept = Arc::new(AtomicBool::new(false));
    let (port, fake) = on_shared_port("the fake receiver", |p| {
        let accept = accept.clone();
        FakeSmtp::start(
            SocketAddr::from(([127, 0, 0, 2], p)),
            Script {
                rcpt: Box::new(move |_, _| {
                    if accept.load(Ordering::SeqCst) {
                        "250 2.1.5 OK".into()
                    } else {
                        "451 4.3.0 not yet".into()
                    }
                }),
                ..Script::default()
            },
        )
    });
    let tx = start_sender(sender(&dns, port, ""));
    let ids: Vec<String> = (0..3)
        .map(|i| {
            submit(
                &tx,
                &[REMOTE_BOB],
                &message(REMOTE_BOB, &format!("held {i}")),
            )
        })
        .collect();
    for id in &ids {
        tx.wait_for_deferral(id, REMOTE_BOB, 1, secs(15));
    }
    let hold = tx.mta(&["user", "hold", ALICE], b"");
    hold.assert_success("mta user hold");
    assert!(
        hold.stdout.contains("held alice@example.test"),
        "{}",
        hold.stdout
    );
    accept.store(true, Ordering::SeqCst);

    // New mail is refused at once.
    let mut c = mta_tests::relay::login(&tx);
    let mail = c.command(&format!("MAIL FROM:<{ALICE}>"));
    assert_eq!(
        (mail.code, mail.enhanced()),
        (450, Some("4.7.1")),
        "{}",
        c.transcript()
    );
    drop(c);

    // Each queued message comes due, is seen to be held, and stays.
    tx.wait_logged(secs(30), "three held messages looked at", || {
        tx.log().matches("held: its user is held").count() >= 3
    });
    let delivered = |f: &FakeSmtp| {
        f.transactions()
            .iter()
            .filter(|t| t.data_reply.starts_with("250"))
            .count()
    };
    assert_eq!(delivered(&fake), 0, "{}", fake.transcript());
    let list = tx.mta(&["queue", "list"], b"");
    list.assert_success("mta queue list");
    assert_eq!(
        list.stdout.matches("held (its user is held)").count(),
        3,
        "{}",
        list.stdout
    );
    let show = tx.mta(&["user", "show", ALICE], b"");
    assert!(
        show.stdout.contains("sending       held"),
        "{}",
        show.stdout
    );

    // The user is deleted while held: the ledger still knows the hold, so the release
    // still works and the queued mail is not stuck.
    tx.mta(&["user", "del", ALICE], b"")
        .assert_success("mta user del");
    wait_for(secs(20), "the server to see the user gone", || {
        tx.mta(&["user", "show", ALICE], b"")
            .stderr
            .contains("no such user")
    });
    let release = tx.mta(&["user", "release", ALICE], b"");
    release.assert_success("mta user release");
    assert!(
        release.stdout.contains("3 queued message(s) due now"),
        "{}",
        release.stdout
    );
    wait_for(secs(30), "three messages delivered", || {
        delivered(&fake) == 3
    });
    tx.wait_for_empty_queue(secs(10));
    // Not held any more: a user added again under the name sends at once.
    tx.add_user(ALICE, ALICE_PASSWORD);
    submit(&tx, &[REMOTE_BOB], &message(REMOTE_BOB, "after release"));
}

#[test]
fn user_commands_refuse_unknown_users_and_a_missing_server() {
    let mut mta = limited("");
    for verb in ["show", "hold", "release"] {
        let out = mta.mta(&["user", verb, "nobody@example.test"], b"");
        assert_ne!(out.code(), 0, "{out}");
        assert!(
            out.stderr.contains("no such user: nobody@example.test"),
            "{out}"
        );
    }
    let out = mta.mta(&["user", "hold", "not an address"], b"");
    assert_ne!(out.code(), 0, "{out}");
    mta.stop();
    let out = mta.mta(&["user", "hold", ALICE], b"");
    assert_ne!(out.code(), 0, "{out}");
    assert!(out.stderr.contains("no running server"), "{out}");
}

#[test]
fn a_new_recipient_past_the_cap_gets_450_and_a_known_one_goes_through() {
    let mta = limited("first_time_recipients_per_day = 2\n");
    let mut c = mta_tests::relay::login(&mta);
    let body = format!("From: <{ALICE}>\r\nSubject: first\r\n\r\nhi\r\n");
    let reply = c.send_message(ALICE, &[BOB, POSTMASTER], body.as_bytes());
    assert_eq!(reply.code, 250, "{}", c.transcript());
    c.expect(&format!("MAIL FROM:<{ALICE}>"), 250);
    let new = c.command(&format!("RCPT TO:<{ALICE}>"));
    assert_eq!(
        (new.code, new.enhanced()),
        (450, Some("4.7.1")),
        "{}",
        c.transcript()
    );
    c.expect(&format!("RCPT TO:<{BOB}>"), 250);
    c.expect("DATA", 354);
    c.send_raw(format!("{body}.\r\n").as_bytes()).unwrap();
    assert_eq!(c.reply("the final dot").code, 250, "{}", c.transcript());
    mta.wait_for_mail(BOB, 2, 10);
    assert!(
        mta.log()
            .lines()
            .any(|l| l.contains("sending refused") && l.contains("first_time_recipients_per_day")),
        "{}",
        mta.log()
    );
}

/// A server for the clock tests: its wall clock offset by `data/faketime` (libfaketime, the
/// monotonic clock left alone, as in `clock_steps.rs`), alice allowed 2 messages an hour.
fn on_faked_clock() -> TestMta {
    let arch = std::env::consts::ARCH;
    let lib = format!("/usr/lib/{arch}-linux-gnu/faketime/libfaketime.so.1");
    assert!(
        std::path::Path::new(&lib).is_file(),
        "{lib} is missing: apt-get install libfaketime (scripts/test.sh does)"
    );
    let mta = mta_tests::MtaBuilder::new()
        .toml("[limits.sending]\nmessages_per_hour = 2\n")
        .env("LD_PRELOAD", &lib)
        .env("FAKETIME_TIMESTAMP_FILE", "data/faketime")
        .env("FAKETIME_NO_CACHE", "1")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .start();
    mta.add_user(ALICE, ALICE_PASSWORD);
    mta.add_user(BOB, "bob-password-1");
    mta
}

#[test]
fn a_clock_step_back_neither_resets_the_counts_nor_blocks_for_ever() {
    let mut mta = on_faked_clock();
    assert_eq!(burst(&mta, 3), "250:2.1.0 250:2.1.0 450:4.7.1");
    // A day back (the queue's clock reads the wall clock when the server starts): the two
    // messages still count.
    std::fs::write(mta.data_dir().join("faketime"), "-1d\n").unwrap();
    mta.restart();
    assert_eq!(burst(&mta, 1), "450:4.7.1", "{}", mta.log());
    // 61 minutes after that, on the same stepped clock: they have left the hour.
    std::fs::write(mta.data_dir().join("faketime"), "-1379m\n").unwrap();
    mta.restart();
    assert_eq!(burst(&mta, 1), "250:2.1.0", "{}", mta.log());
}
