//! Crash during relay: the sender is killed with SIGKILL at random
//! moments while it relays to a counting receiver (which answers the final dot after a
//! random delay, to widen the window between its `250` and the sender's record of it),
//! restarted, and drained. Nothing is lost at the receiver, duplicates are counted, and
//! after every kill no recipient is marked delivered that the receiver did not get. Each
//! message also goes to a domain whose MX refuses connections, so its record stays in the
//! queue and shows the receiving domain's recipient as delivered or pending.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mta_tests::counting_smtp::{CountingSmtp, Fault};
use mta_tests::load::Rng;
use mta_tests::relay::{REMOTE_BOB, login, message, sender, start_sender};
use mta_tests::{ALICE, TestDns, TestMta, on_shared_port, queue_id, secs};

/// Kills in CI; `scripts/soak-relay-kill.sh` sets `MTA_RELAY_KILLS`.
fn rounds() -> usize {
    std::env::var("MTA_RELAY_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6)
}
const PER_ROUND: usize = 12;
/// A recipient whose MX never answers: keeps every message in the queue.
const STUCK: &str = "carol@down.test";

/// Submits `n` messages in one session; returns (queue id, Message-ID) of each that got
/// 250 (the session may not outlive a kill, but here it always ends before one).
fn submit_batch(tx: &TestMta, round: usize, n: usize, seed: u64) -> Vec<(String, String)> {
    let mut c = login(tx);
    let mut out = Vec::new();
    for i in 0..n {
        let subject = format!("crash-{seed}-r{round}-{i}");
        let reply = c.send_message(ALICE, &[REMOTE_BOB, STUCK], &message(REMOTE_BOB, &subject));
        assert_eq!(reply.code, 250, "{}", c.transcript());
        out.push((
            queue_id(&reply.to_string()),
            format!("{subject}@example.test"),
        ));
    }
    let _ = c.send_line("QUIT");
    out
}

/// With the sender stopped: every recipient its queue marks delivered was received.
/// Returns how many recipients at the receiving domain are marked delivered.
fn check_delivered_marks(tx: &TestMta, mids: &HashMap<String, String>, rx: &CountingSmtp) -> usize {
    // The queue first: the receiver counts a message before its 250, so anything marked
    // in this snapshot is in the receiver's count taken after it.
    let queue = tx.queue_json();
    let got = rx.accepted();
    let mut marked = 0;
    for r in queue["records"].as_array().expect("records") {
        let id = r["envelope"]["id"].as_str().unwrap_or_default();
        for rcpt in r["envelope"]["recipients"].as_array().expect("recipients") {
            if rcpt["address"] == REMOTE_BOB && rcpt["state"] == "delivered" {
                marked += 1;
                let mid = &mids[id];
                assert!(
                    got.contains_key(mid),
                    "{id} ({mid}) is marked delivered but the receiver never got it: {r}"
                );
            }
        }
    }
    marked
}

#[test]
fn kill_9_while_relaying_loses_nothing_and_marks_nothing_falsely() {
    let (mut rng, seed) = Rng::from_env();
    let rounds = rounds();
    println!("crash during relay: {rounds} rounds of {PER_ROUND} messages, seed {seed}");
    let dns = TestDns::start(&[
        "--mx-host=remote.test,mx1.remote.test,10",
        "--host-record=mx1.remote.test,127.0.0.2",
        "--mx-host=down.test,mx1.down.test,10",
        "--host-record=mx1.down.test,127.0.0.3",
    ]);
    // The delay before each 250: 0-60 ms, drawn per connection.
    let delays = std::sync::Arc::new(AtomicU64::new(seed));
    let (port, rx) = on_shared_port("the counting receiver", |p| {
        let delays = delays.clone();
        CountingSmtp::start(
            SocketAddr::from(([127, 0, 0, 2], p)),
            Box::new(move |_| {
                let x = delays.fetch_add(0x9e37_79b9, Ordering::SeqCst);
                Fault::SlowDot(Duration::from_millis(Rng::new(x).next_u64() % 60))
            }),
        )
    });
    let mut tx = start_sender(sender(&dns, port, ""));
    let mut mids: HashMap<String, String> = HashMap::new();
    let mut kills = Vec::new();
    for round in 0..rounds {
        for (id, mid) in submit_batch(&tx, round, PER_ROUND, seed) {
            mids.insert(id, mid);
        }
        let at = Duration::from_millis(rng.range(0, 400));
        std::thread::sleep(at);
        tx.kill9();
        let marked = check_delivered_marks(&tx, &mids, &rx);
        let received: usize = rx.accepted().values().sum();
        println!(
            "round {round}: killed {at:?} after the batch; {marked} recipients marked \
             delivered in the queue, all at the receiver; receiver has {received} copies"
        );
        kills.push(at);
        tx.restart();
    }
    tx.wait_logged(
        secs(60),
        "every receiving-domain recipient delivered",
        || check_delivered_marks(&tx, &mids, &rx) == mids.len(),
    );
    tx.kill9();
    assert_eq!(check_delivered_marks(&tx, &mids, &rx), mids.len());
    let got = rx.accepted();
    let lost: Vec<&String> = mids.values().filter(|m| !got.contains_key(*m)).collect();
    let dups: usize = got.values().map(|n| n - 1).sum();
    println!(
        "crash during relay figures: {} kills, {} messages, {} lost at the receiver, \
         {dups} duplicates, {} connections",
        kills.len(),
        mids.len(),
        lost.len(),
        rx.connection_times().len()
    );
    assert!(lost.is_empty(), "never received: {lost:?}");
    assert!(
        got.keys().all(|m| mids.values().any(|v| v == m)),
        "received something never sent: {got:?}"
    );
}
