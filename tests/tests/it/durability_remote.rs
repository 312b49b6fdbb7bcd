//! Remote faults: a receiver that says `421` at the greeting or `451` to
//! RCPT, or drops the connection after the final dot without a reply, is retried with a growing delay
//! (`retry_in` doubles: 1 s, then 2 s) until it recovers, and then gets the message once (a
//! drop after the dot may duplicate: counted); one that trickles its replies a byte a second
//! is waited for, within the RFC 5321 §4.5.3.2 timeouts; a DNS server that never answers
//! defers, never bounces. SERVFAIL is covered in relay_bounce.rs
//! (`servfail_defers_and_never_bounces`).

use std::net::SocketAddr;
use std::time::Instant;

use mta_tests::counting_smtp::{CountingSmtp, Fault};
use mta_tests::relay::{REMOTE_BOB, message, start_sender, submit};
use mta_tests::silent_dns::SilentDns;
use mta_tests::{ALICE, MtaBuilder, TestDns, TestMta, on_shared_port, secs, shared_port};

/// `retry_in` of each `deferred` line the sender logged for message `id`, in order.
fn retry_delays(tx: &TestMta, id: &str) -> Vec<String> {
    tx.log()
        .lines()
        .filter(|l| l.contains(id) && l.contains(" deferred "))
        .filter_map(|l| {
            let v = l.split_once("retry_in=")?.1;
            Some(v.split_whitespace().next()?.to_string())
        })
        .collect()
}

/// A sender to `remote.test` (one MX on 127.0.0.2) that retries after 1 s, then 2 s, 4 s.
fn sender_and_receiver(plan: fn(usize) -> Fault) -> (TestDns, CountingSmtp, TestMta) {
    let dns = TestDns::start(&[
        "--mx-host=remote.test,mx1.remote.test,10",
        "--host-record=mx1.remote.test,127.0.0.2",
    ]);
    let (port, rx) = on_shared_port("the counting receiver", |p| {
        CountingSmtp::start(SocketAddr::from(([127, 0, 0, 2], p)), Box::new(plan))
    });
    let tx = start_sender(MtaBuilder::new().toml(&format!(
        "{}[outbound]\nport = {port}\n[queue]\nretry_first = \"1s\"\nretry_max = \"4s\"\n",
        dns.config_toml()
    )));
    (dns, rx, tx)
}

/// Sends one message through a receiver that fails twice with `fault` (as `plan` says),
/// then recovers; checks the two deferrals, their growing delay and the one delivery;
/// returns the receiver.
fn retried_until_it_recovers(name: &str, fault: Fault, plan: fn(usize) -> Fault) -> CountingSmtp {
    let (_dns, rx, tx) = sender_and_receiver(plan);
    let started = Instant::now();
    let id = submit(&tx, &[REMOTE_BOB], &message(REMOTE_BOB, name));
    let mid = format!("{name}@example.test");
    tx.wait_logged(secs(30), "the message at the receiver", || {
        rx.accepted().contains_key(&mid)
    });
    tx.wait_for_empty_queue(secs(10));
    let took = started.elapsed();
    let delays = retry_delays(&tx, &id);
    let gaps: Vec<_> = rx
        .connection_times()
        .windows(2)
        .map(|w| w[1] - w[0])
        .collect();
    println!(
        "{name} ({fault:?}): delivered after {took:?}, {} connections {gaps:?} apart, \
         retry_in {delays:?}, accepted {} time(s), dropped after the dot {} time(s)",
        gaps.len() + 1,
        rx.accepted()[&mid],
        rx.dropped().len()
    );
    assert_eq!(
        delays,
        ["1s", "2s"],
        "two deferrals, the delay doubling\n{}",
        tx.log()
    );
    assert_eq!(rx.accepted()[&mid], 1, "one delivery\n{}", rx.transcript());
    assert_eq!(rx.accepted().len(), 1, "{:?}", rx.accepted());
    assert!(
        tx.maildir_new(ALICE).is_empty(),
        "no bounce or delay notice to the sender"
    );
    rx
}

#[test]
fn greeting_421_is_retried_with_growing_delay() {
    let rx = retried_until_it_recovers("greeting-421", Fault::Greeting421, |i| {
        if i < 2 {
            Fault::Greeting421
        } else {
            Fault::None
        }
    });
    assert_eq!(rx.connection_times().len(), 3, "{}", rx.transcript());
}

#[test]
fn drop_after_the_dot_is_retried_and_the_duplicates_counted() {
    let rx = retried_until_it_recovers("dropped-after-dot", Fault::DropAfterDot, |i| {
        if i < 2 {
            Fault::DropAfterDot
        } else {
            Fault::None
        }
    });
    // The receiver had the whole message three times and acknowledged it once: a real
    // server that kept the first two would hold two duplicates (RFC 1047).
    assert_eq!(rx.dropped().len(), 2, "{}", rx.transcript());
}

#[test]
fn reply_trickled_a_byte_a_second_is_waited_for() {
    let (_dns, rx, tx) = sender_and_receiver(|_| Fault::Trickle);
    let started = Instant::now();
    let id = submit(&tx, &[REMOTE_BOB], &message(REMOTE_BOB, "trickle"));
    tx.wait_logged(secs(60), "the trickled message at the receiver", || {
        !rx.accepted().is_empty()
    });
    tx.wait_for_empty_queue(secs(20));
    println!(
        "trickle: delivered after {:?} over {} connection(s), retry_in {:?}",
        started.elapsed(),
        rx.connection_times().len(),
        retry_delays(&tx, &id)
    );
    assert_eq!(rx.accepted()["trickle@example.test"], 1);
    assert_eq!(
        rx.connection_times().len(),
        1,
        "no retry: {}",
        rx.transcript()
    );
}

#[test]
fn dns_timeout_defers_and_never_bounces() {
    let dns = SilentDns::start();
    let tx = start_sender(MtaBuilder::new().toml(&format!(
        "{}[outbound]\nport = {}\n[queue]\nretry_first = \"1s\"\nretry_max = \"2s\"\n",
        dns.config_toml(),
        shared_port()
    )));
    let started = Instant::now();
    let id = submit(&tx, &[REMOTE_BOB], &message(REMOTE_BOB, "dns-timeout"));
    let rcpt = tx.wait_for_deferral(&id, REMOTE_BOB, 1, secs(40));
    let last = rcpt["last_result"].as_str().unwrap_or_default();
    println!(
        "dns timeout: deferred after {:?} ({} queries unanswered): {last}",
        started.elapsed(),
        dns.queries()
    );
    assert!(last.starts_with("4."), "a temporary failure: {rcpt}");
    assert!(dns.queries() >= 1, "the MX query reached the DNS server");
    assert_eq!(rcpt["state"], "pending", "{rcpt}");
    assert!(
        tx.maildir_new(ALICE).is_empty(),
        "no bounce for DNS trouble"
    );
}

#[test]
fn rcpt_451_is_retried_with_growing_delay() {
    // relay.rs `remote_4xx_reply_is_retried` checks the 451 reaches the queue and the
    // message arrives once; this adds the doubling delay. The sender keeps the connection
    // for its retries, so the receiver counts RCPTs, not connections.
    retried_until_it_recovers("rcpt-451", Fault::Rcpt451First(2), |_| {
        Fault::Rcpt451First(2)
    });
}
