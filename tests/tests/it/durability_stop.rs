//! Graceful stop under load: SIGTERM while 20 sessions send. Every
//! session's transaction in flight gets its `250` or `421 4.3.2` (never silence, never
//! another code), the server exits 0 within its bound, and after a restart everything that
//! got `250` is delivered, once. `shutdown.rs` covers idle sessions.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mta_tests::load::{Load, LoadSpec, MaildirScan, Outcome, Rng};
use mta_tests::{TestMta, secs};

const BOB: &str = "bob@example.test";
const SESSIONS: usize = 20;
const CYCLES: usize = 3;
/// `shutdown_grace` of the server under test.
const GRACE: Duration = Duration::from_secs(3);

fn is_shutting_down(reply: &str) -> bool {
    reply.starts_with("421 4.3.2")
}

#[test]
fn sigterm_under_load_answers_every_session_and_loses_nothing() {
    let (mut rng, seed) = Rng::from_env();
    println!("graceful stop under load: {CYCLES} cycles, {SESSIONS} sessions, seed {seed}");
    let mut mta = TestMta::start(&format!("shutdown_grace = \"{}s\"\n", GRACE.as_secs()));
    mta.add_user(BOB, "bob-password-1");
    let mut acked: HashMap<String, String> = HashMap::new();
    for cycle in 0..CYCLES {
        let load = Load::start(&LoadSpec {
            addr: mta.smtp_addr(),
            sessions: SESSIONS,
            messages: None,
            sizes: (1024, 200 * 1024),
            rcpt: BOB.into(),
            tag: format!("stop{cycle}-{seed}"),
            seed: rng.next_u64(),
        });
        std::thread::sleep(Duration::from_millis(rng.range(200, 1200)));
        let (connected, awaiting) = (load.connected(), load.awaiting_reply());
        let signalled = Instant::now();
        // Bounded by the grace period for sessions and the one for deliveries, each plus
        // the server's extra second, and slack for a busy machine.
        let status = mta.stop_within(2 * GRACE + secs(4));
        let took = signalled.elapsed();
        assert_eq!(status.code(), Some(0), "exit status {status}");
        let reports = load.join();

        let (mut ok, mut told_421) = (0, 0);
        for (i, r) in reports.iter().enumerate() {
            for (mid, outcome) in &r.transactions {
                match outcome {
                    Outcome::Accepted(id) => {
                        ok += 1;
                        acked.insert(mid.clone(), id.clone());
                    }
                    Outcome::Refused(reply) if reply.contains("421 4.3.2") => {}
                    other => panic!("session {i}: {mid} got {other:?} on SIGTERM ({r:?})"),
                }
            }
            let last = r.last_reply.as_deref().unwrap_or("");
            let polite = is_shutting_down(last) && r.closed_after_421;
            assert!(
                polite || r.end.starts_with("refused connection"),
                "session {i} ended without 421 4.3.2: {r:?}"
            );
            if polite {
                told_421 += 1;
            }
        }
        println!(
            "cycle {cycle}: SIGTERM with {connected} sessions connected, {awaiting} awaiting \
             a reply; exit 0 after {took:?} (grace {GRACE:?}); {ok} messages got 250, \
             {told_421} sessions got 421 4.3.2"
        );
        mta.restart();
    }
    mta.wait_for_empty_queue(secs(60));
    let mut scan = MaildirScan::default();
    scan.update(
        &mta.data_dir().join("mail/example.test/bob/Maildir/new"),
        BOB,
    );
    let missing: Vec<&String> = acked
        .keys()
        .filter(|m| !scan.copies.contains_key(*m))
        .collect();
    let (dup_ids, dup_copies) = scan.duplicates();
    println!(
        "graceful stop figures: {} got 250, {} lost, {} files, {} partial, {dup_ids} \
         duplicated ({dup_copies} extra copies)",
        acked.len(),
        missing.len(),
        scan.files(),
        scan.bad.len()
    );
    assert!(missing.is_empty(), "got 250 but not delivered: {missing:?}");
    assert!(scan.bad.is_empty(), "{:?}", scan.bad);
    assert_eq!(dup_copies, 0, "a graceful stop must not duplicate");
}

/// A session still in the middle of DATA when the grace period ends is told `421 4.3.2`
/// before the server exits, and its half message is not queued.
#[test]
fn session_stuck_in_data_past_the_grace_period_gets_421() {
    let mut mta = TestMta::start("shutdown_grace = \"1s\"\n");
    mta.add_user(BOB, "bob-password-1");
    let mut c = mta_tests::SmtpClient::connect(mta.smtp_addr());
    c.reply("the greeting");
    c.expect("EHLO client.test", 250);
    c.expect("MAIL FROM:<a@remote.test>", 250);
    c.expect(&format!("RCPT TO:<{BOB}>"), 250);
    c.expect("DATA", 354);
    c.send_raw(b"Subject: half\r\n\r\nthe first half, and then nothing\r\n")
        .expect("write the first half");
    let signalled = Instant::now();
    let status = mta.stop_within(2 * secs(1) + secs(4));
    println!(
        "stuck in DATA: exit {status} after {:?} (grace 1s)",
        signalled.elapsed()
    );
    let reply = c.read_reply();
    assert!(
        reply.as_ref().is_ok_and(|r| r.matches(421, Some("4.3.2"))),
        "expected 421 4.3.2 for the unfinished message, got {reply:?}\n{}",
        c.transcript()
    );
    assert!(c.is_closed(), "still open after 421");
    mta.restart();
    mta.wait_for_empty_queue(secs(10));
    assert!(
        mta.maildir_new(BOB).is_empty(),
        "half a message was delivered"
    );
}

/// The grace period bounds the whole stop, not each of its parts: with a session stuck in
/// DATA and a delivery stuck on a receiver that trickles its greeting a byte a second, the
/// server still exits within `shutdown_grace` (plus its one second for the final flush), and
/// the cut-short delivery is still queued.
#[test]
fn grace_period_bounds_sessions_and_deliveries_together() {
    use mta_tests::counting_smtp::{CountingSmtp, Fault};
    use mta_tests::relay::{REMOTE_BOB, message, start_sender, submit};
    use mta_tests::{ALICE, TestDns, on_shared_port, wait_for};

    let dns = TestDns::start(&[
        "--mx-host=remote.test,mx1.remote.test,10",
        "--host-record=mx1.remote.test,127.0.0.2",
    ]);
    let (port, rx) = on_shared_port("the trickling receiver", |p| {
        CountingSmtp::start(
            std::net::SocketAddr::from(([127, 0, 0, 2], p)),
            Box::new(|_| Fault::Trickle),
        )
    });
    let mut tx = start_sender(mta_tests::MtaBuilder::new().toml(&format!(
        "shutdown_grace = \"5s\"\n{}[outbound]\nport = {port}\n",
        dns.config_toml()
    )));
    let id = submit(&tx, &[REMOTE_BOB], &message(REMOTE_BOB, "stuck delivery"));
    wait_for(secs(10), "the delivery attempt to connect", || {
        !rx.connection_times().is_empty()
    });
    let mut c = mta_tests::SmtpClient::connect(tx.smtp_addr());
    c.reply("the greeting");
    c.expect("EHLO client.test", 250);
    c.expect("MAIL FROM:<a@remote.test>", 250);
    c.expect(&format!("RCPT TO:<{ALICE}>"), 250);
    c.expect("DATA", 354);
    c.send_raw(b"Subject: half\r\n\r\nhalf\r\n").expect("write");

    let signalled = Instant::now();
    // Grace, its extra second, slack. Sessions and deliveries in turn would take about
    // 0.9 × 5 + 5 + 1 = 10.5 s.
    let status = tx.stop_within(secs(5) + secs(1) + secs(3));
    let took = signalled.elapsed();
    println!("stuck session and stuck delivery: exit {status} after {took:?} (grace 5s)");
    assert_eq!(status.code(), Some(0));
    let reply = c.read_reply();
    assert!(
        reply.as_ref().is_ok_and(|r| r.matches(421, Some("4.3.2"))),
        "{reply:?}"
    );
    let rcpt = tx
        .queued_recipient(&id, REMOTE_BOB)
        .expect("the cut-short delivery is still queued");
    assert_eq!(rcpt["state"], "pending", "{rcpt}");
}
