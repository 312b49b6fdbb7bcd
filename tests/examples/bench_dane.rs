//! What DANE costs on the relay path: the same `mta` sender relays the same messages to the
//! same receiver (`mx1.remote.test`, TLS with a self-signed certificate pinned by a
//! `3 1 1` TLSA record in nsd's signed zone) three ways, interleaved over the rounds:
//!
//! - `dane validate`: DANE, DNSSEC validated by `mta` itself (the default);
//! - `dane resolver`: DANE, trusting the AD bit of a validating dnsmasq on loopback;
//! - `no dane`: `outbound.dane = false` (opportunistic TLS, certificate unverified).
//!
//! For each: the latency of the first delivery (cold caches: the DNSSEC chain is fetched)
//! and the rate of `N` more messages, submitted on one session, from the first submission to
//! the last delivery in the receiver's Maildir. Run through `scripts/bench-dane.sh`, which
//! builds the release binaries and sets `MTA_BIN`.
//!
//!     bench_dane [N] [ROUNDS]     (defaults: 500 messages, 3 rounds)

use std::time::{Duration, Instant};

use mta_tests::certs::spki_sha256;
use mta_tests::relay::{REMOTE_BOB, login, message, try_remote_receiver};
use mta_tests::{ALICE, ALICE_PASSWORD, MtaBuilder, SignedDns, TestDns, TestMta, on_shared_port};

/// The longest any wait here may take.
const LIMIT: Duration = Duration::from_secs(300);

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(500, |a| a.parse().expect("N: a number"));
    let rounds: usize = args
        .next()
        .map_or(3, |a| a.parse().expect("ROUNDS: a number"));
    let (port, rx) = on_shared_port("the receiver", |p| {
        try_remote_receiver("mx1.remote.test", "127.0.0.2", p)
    });
    let hash = spki_sha256(&rx.cert_path());
    let dns = SignedDns::start(
        &[
            "remote.test. 300 IN MX 10 mx1.remote.test.",
            "mx1.remote.test. 300 IN A 127.0.0.2",
            &format!("_25._tcp.mx1.remote.test. 300 IN TLSA 3 1 1 {hash}"),
        ],
        &[],
        &[],
    );
    let validating = TestDns::validating(dns.addr(), &dns.root_ds());
    let anchor = format!(
        "dane_trust_anchor = {:?}\n",
        dns.trust_anchor().display().to_string()
    );
    let setups = [
        (
            "dane validate",
            dns.config_toml(),
            anchor.clone(),
            "verified policy=dane",
        ),
        (
            "dane resolver",
            validating.config_toml(),
            "dnssec = \"resolver\"\n".to_string(),
            "verified policy=dane",
        ),
        (
            "no dane",
            dns.config_toml(),
            "dane = false\n".to_string(),
            "policy=opportunistic",
        ),
    ];
    println!("bench_dane: {n} messages per run, {rounds} round(s)");
    println!(
        "{:<14} {:>6} {:>14} {:>10}",
        "setup", "round", "first (ms)", "msg/s"
    );
    let mut delivered = 0;
    for round in 1..=rounds {
        for (label, dns_toml, outbound, expect) in &setups {
            let tx = MtaBuilder::new()
                .toml(&format!(
                    "{dns_toml}[outbound]\nport = {port}\n{outbound}\n[queue]\nretry_first = \"1s\"\n"
                ))
                .start();
            tx.add_user(ALICE, ALICE_PASSWORD);
            let first = run(&tx, &rx, 1, &mut delivered);
            assert!(
                tx.log().contains(expect),
                "{label}: no {expect:?} in the log\n{}",
                tx.log()
            );
            let all = run(&tx, &rx, n, &mut delivered);
            let rate = n as f64 / all.as_secs_f64();
            println!(
                "{label:<14} {round:>6} {:>14.1} {rate:>10.0}",
                first.as_secs_f64() * 1000.0
            );
        }
    }
}

/// Submits `n` messages to bob on one session; the time until the receiver has them all.
fn run(tx: &TestMta, rx: &TestMta, n: usize, delivered: &mut usize) -> Duration {
    let start = Instant::now();
    let mut session = login(tx);
    let body = message(REMOTE_BOB, "bench");
    for _ in 0..n {
        let reply = session.send_message(ALICE, &[REMOTE_BOB], &body);
        assert_eq!(reply.code, 250, "{}", session.transcript());
    }
    let _ = session.send_line("QUIT");
    *delivered += n;
    while rx.maildir_new(REMOTE_BOB).len() < *delivered {
        assert!(
            start.elapsed() < LIMIT,
            "not all delivered within {LIMIT:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}
