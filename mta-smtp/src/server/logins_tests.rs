use super::*;

use proptest::prelude::*;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

const POLICY: LoginPolicy = LoginPolicy {
    failures: 5,
    window: Duration::from_secs(600),
};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Admits and finishes one attempt at `now`; what `admit` said, as text.
fn attempt(t: &Logins, who: &str, login: &str, outcome: Outcome, now: Instant) -> String {
    match t.admit(ip(who), login, POLICY, now) {
        Admit::Check { ticket, delay } => {
            ticket.finish(outcome, now);
            format!("checked after {}s", delay.as_secs())
        }
        Admit::Blocked { until } => format!("blocked for {}s", (until - now).as_secs()),
        Admit::Busy => "busy".into(),
    }
}

#[test]
fn clients_are_addresses_or_ipv6_networks() {
    let table = [
        ("192.0.2.1", "192.0.2.1"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::"),
        ("::1", "::"),
    ];
    for (peer, client) in table {
        assert_eq!(client_of(ip(peer)), ip(client), "{peer}");
    }
}

#[test]
fn delays_double_up_to_the_cap() {
    let got: Vec<u64> = (0..9).map(|n| delay_for(n).as_secs()).collect();
    assert_eq!(got, [0, 1, 2, 4, 8, 16, 30, 30, 30]);
    assert_eq!(delay_for(u32::MAX), MAX_DELAY);
}

/// Thirty attempts at once from one address: only the limit is admitted, whatever the order
/// in which they finish.
#[test]
fn reservations_hold_the_limit_for_concurrent_attempts() {
    let t = Logins::default();
    let now = Instant::now();
    let mut admitted = Vec::new();
    let mut refused = 0;
    for i in 0..30 {
        match t.admit(ip("192.0.2.1"), &format!("u{i}@example.org"), POLICY, now) {
            Admit::Check { ticket, .. } => admitted.push(ticket),
            Admit::Busy => refused += 1,
            Admit::Blocked { .. } => panic!("nothing failed yet"),
        }
    }
    assert_eq!((admitted.len(), refused), (5, 25));
    // A dropped ticket (the session went away) frees its place and counts nothing.
    admitted.pop();
    let Admit::Check { ticket: last, .. } = t.admit(ip("192.0.2.1"), "x", POLICY, now) else {
        panic!("a place was free");
    };
    for ticket in admitted {
        ticket.finish(Outcome::Failure, now);
    }
    assert!(matches!(
        t.admit(ip("192.0.2.1"), "x", POLICY, now),
        Admit::Busy
    ));
    last.finish(Outcome::Failure, now);
    assert!(matches!(
        t.admit(ip("192.0.2.1"), "x", POLICY, now),
        Admit::Blocked { .. }
    ));
    // Another address is not affected.
    assert!(matches!(
        t.admit(ip("192.0.2.2"), "x", POLICY, now),
        Admit::Check { .. }
    ));
}

#[test]
fn a_stranger_delays_the_account_but_never_locks_the_owner_out() {
    let t = Logins::default();
    let start = Instant::now();
    let at = |s| start + secs(s);
    // The owner logs in from home.
    assert_eq!(
        attempt(
            &t,
            "198.51.100.7",
            "alice@example.org",
            Outcome::Success,
            at(0)
        ),
        "checked after 0s"
    );
    // Strangers fail from many addresses, each below its own block.
    let mut said = Vec::new();
    for i in 0..8 {
        let who = format!("203.0.113.{i}");
        said.push(attempt(
            &t,
            &who,
            "Alice@Example.org",
            Outcome::Failure,
            at(1),
        ));
    }
    assert_eq!(
        said,
        [0, 1, 2, 4, 8, 16, 30, 30].map(|s| format!("checked after {s}s"))
    );
    // From home the owner is not delayed; from a hotel, delayed but checked.
    assert_eq!(
        attempt(
            &t,
            "198.51.100.7",
            "alice@example.org",
            Outcome::Success,
            at(2)
        ),
        "checked after 0s"
    );
    assert_eq!(
        attempt(
            &t,
            "192.0.2.99",
            "alice@example.org",
            Outcome::Success,
            at(3)
        ),
        "checked after 30s"
    );
    // Now the hotel is trusted too.
    assert_eq!(
        attempt(
            &t,
            "192.0.2.99",
            "alice@example.org",
            Outcome::Success,
            at(4)
        ),
        "checked after 0s"
    );
    // Other accounts are not delayed; the streak ends after a quiet window.
    assert_eq!(
        attempt(&t, "192.0.2.50", "bob@example.org", Outcome::Success, at(5)),
        "checked after 0s"
    );
    assert_eq!(
        attempt(
            &t,
            "192.0.2.51",
            "alice@example.org",
            Outcome::Failure,
            at(601)
        ),
        "checked after 0s"
    );
}

#[test]
fn an_address_is_blocked_then_listed_and_cleared() {
    let t = Logins::default();
    let start = Instant::now();
    for i in 0..5 {
        attempt(
            &t,
            "2001:db8::1",
            "alice@example.org",
            Outcome::Failure,
            start + secs(i),
        );
    }
    let now = start + secs(10);
    assert_eq!(
        attempt(
            &t,
            "2001:db8::ffff",
            "bob@example.org",
            Outcome::Success,
            now
        ),
        "blocked for 590s",
        "the whole /64, whatever the account, even with the right password"
    );
    assert_eq!(
        t.held(POLICY, now),
        vec![
            Held::Client {
                client: ip("2001:db8::"),
                failures: 5,
                until: start + secs(600),
            },
            Held::Account {
                account: "alice@example.org".into(),
                failures: 5,
                delay: secs(16),
                until: start + secs(604),
            },
        ]
    );
    assert!(t.unblock("2001:db8::42"), "any address of the /64");
    assert!(!t.unblock("2001:db8::42"), "nothing left to clear");
    assert!(t.unblock("ALICE@example.org"));
    assert_eq!(t.held(POLICY, now), vec![]);
    assert_eq!(
        attempt(
            &t,
            "2001:db8::1",
            "alice@example.org",
            Outcome::Success,
            now
        ),
        "checked after 0s"
    );
    // The block ends by itself when the oldest failure leaves the window.
    let t = Logins::default();
    for i in 0..5 {
        attempt(&t, "192.0.2.1", "x", Outcome::Failure, start + secs(60 * i));
    }
    assert!(matches!(
        t.admit(ip("192.0.2.1"), "y", POLICY, start + secs(599)),
        Admit::Blocked { .. }
    ));
    assert_eq!(
        attempt(&t, "192.0.2.1", "y", Outcome::Failure, start + secs(600)),
        "checked after 0s",
        "four failures left in the window; the account y has none"
    );
}

#[test]
fn the_tables_are_bounded() {
    let t = Logins::default();
    let now = Instant::now();
    let peer = |i: u32| IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
    let ms = |i: u32| now + Duration::from_millis(i.into());
    for i in 0..(MAX_TRACKED as u32 + 10) {
        attempt(
            &t,
            &peer(i).to_string(),
            &format!("u{i}@example.org"),
            Outcome::Failure,
            ms(i),
        );
    }
    assert_eq!(t.tracked(), (MAX_TRACKED, MAX_TRACKED));
    // Logins are tracked by a bounded key.
    let long = "x".repeat(20_000);
    attempt(&t, "192.0.2.1", &long, Outcome::Failure, ms(20_000));
    assert!(t.held(POLICY, ms(20_000)).iter().all(|h| match h {
        Held::Account { account, .. } => account.len() <= 256,
        Held::Client { .. } => true,
    }));
}

#[tokio::test]
async fn password_checks_queue_then_refuse() {
    let checks = Arc::new(PasswordChecks::new(2, 3));
    let a = checks.turn(MAX_WAIT).await.expect("first runs");
    let b = checks.turn(MAX_WAIT).await.expect("second runs");
    assert_eq!(checks.running(), 2);
    // Three wait in line; the fourth is refused at once.
    let mut waiting = Vec::new();
    for _ in 0..3 {
        let checks = checks.clone();
        waiting.push(tokio::spawn(async move {
            checks.turn(MAX_WAIT).await.map(|_| ())
        }));
    }
    for _ in 0..100 {
        if checks.waiting.load(Ordering::SeqCst) == 3 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(checks.waiting.load(Ordering::SeqCst), 3);
    assert_eq!(checks.turn(MAX_WAIT).await.err(), Some(TooBusy));
    drop((a, b));
    for w in waiting {
        assert_eq!(w.await.expect("task"), Ok(()));
    }
    assert_eq!(checks.running(), 0);
    // A wait that lasts too long is refused too.
    let _c = checks.turn(MAX_WAIT).await.expect("runs");
    let _d = checks.turn(MAX_WAIT).await.expect("runs");
    assert_eq!(
        checks.turn(Duration::from_millis(20)).await.err(),
        Some(TooBusy)
    );
}

/// The checks run on a fixed set of threads, as many as may run at once, whoever asks: the
/// memory the allocator keeps after an argon2 check is kept per thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_checks_run_on_their_own_few_threads() {
    let checks = Arc::new(PasswordChecks::new(2, 16));
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let checks = checks.clone();
        tasks.push(tokio::spawn(async move {
            let turn = checks.turn(MAX_WAIT).await.expect("a turn");
            checks
                .run(turn, || {
                    std::thread::current()
                        .name()
                        .unwrap_or("unnamed")
                        .to_string()
                })
                .await
                .expect("ran")
        }));
    }
    let mut names = std::collections::BTreeSet::new();
    for t in tasks {
        names.insert(t.await.expect("task"));
    }
    assert!(
        names.iter().all(|n| n.starts_with("mta-password-")) && names.len() <= 2,
        "{names:?}"
    );
    assert_eq!(checks.running(), 0);
    assert_eq!(
        checks
            .run(checks.turn(MAX_WAIT).await.unwrap(), || panic!("boom"))
            .await,
        None::<()>
    );
    assert_eq!(checks.running(), 0, "a check that panicked frees its turn");
}

// --- The reference model: decisions recomputed from the whole history of events. ---

/// What the model and the real tables are asked to do.
#[derive(Debug, Clone)]
enum Op {
    /// Time passes.
    Wait(u64),
    /// An attempt from client `.0` for login `.1` asks to be admitted.
    Begin(usize, usize),
    /// The `.0`-th attempt in progress ends.
    End(usize, Outcome),
    /// The `.0`-th attempt in progress is abandoned (the session went away).
    Abandon(usize),
    /// The operator clears client `.0` or login `.1`.
    UnblockClient(usize),
    UnblockAccount(usize),
}

/// Peer addresses, and the client each counts as (by hand, not by `client_of`).
const PEERS: [(&str, usize); 5] = [
    ("192.0.2.1", 0),
    ("::ffff:192.0.2.1", 0),
    ("192.0.2.2", 1),
    ("2001:db8::1", 2),
    ("2001:db8::2:3", 2),
];
/// Logins, and the account each names (by hand).
const LOGINS: [(&str, usize); 4] = [
    ("alice@example.org", 0),
    ("ALICE@Example.ORG", 0),
    ("bob@example.org", 1),
    ("not an address", 2),
];
const CLIENT_NAMES: [&str; 3] = ["192.0.2.1", "192.0.2.2", "2001:db8::"];
const ACCOUNT_NAMES: [&str; 3] = ["alice@example.org", "bob@example.org", "not an address"];

const MODEL_POLICY: LoginPolicy = LoginPolicy {
    failures: 3,
    window: Duration::from_secs(600),
};

#[derive(Debug, Clone, Copy)]
enum Event {
    Failure {
        client: usize,
        account: usize,
        at: u64,
    },
    Success {
        client: usize,
        account: usize,
        at: u64,
    },
    ClearClient(usize),
    ClearAccount(usize),
}

#[derive(Debug, PartialEq, Eq)]
enum Said {
    Check(u64),
    Blocked(u64),
    Busy,
}

#[derive(Default)]
struct Model {
    history: Vec<Event>,
    in_flight: [usize; 3],
}

impl Model {
    fn window(&self) -> u64 {
        MODEL_POLICY.window.as_secs()
    }

    /// Failure times of `client` in the window before `now`, since its last clearing.
    fn client_failures(&self, client: usize, now: u64) -> Vec<u64> {
        let mut times = Vec::new();
        for e in &self.history {
            match *e {
                Event::ClearClient(c) if c == client => times.clear(),
                Event::Failure { client: c, at, .. } if c == client => times.push(at),
                _ => {}
            }
        }
        times.retain(|at| now - at < self.window());
        times
    }

    /// The account's streak and last failure at `now`.
    fn streak(&self, account: usize, now: u64) -> (u32, Option<u64>) {
        let (mut n, mut last) = (0u32, None::<u64>);
        for e in &self.history {
            match *e {
                Event::ClearAccount(a) if a == account => (n, last) = (0, None),
                Event::Failure { account: a, at, .. } if a == account => {
                    if last.is_some_and(|l| at - l >= self.window()) {
                        n = 0;
                    }
                    n += 1;
                    last = Some(at);
                }
                _ => {}
            }
        }
        match last {
            Some(l) if now - l < self.window() => (n, last),
            _ => (0, None),
        }
    }

    fn trusted(&self, client: usize, account: usize, now: u64) -> bool {
        self.history.iter().any(|e| {
            matches!(*e, Event::Success { client: c, account: a, at }
                if c == client && a == account && now - at < TRUST.as_secs())
        })
    }

    fn admit(&mut self, client: usize, account: usize, now: u64) -> Said {
        let limit = MODEL_POLICY.failures as usize;
        let fails = self.client_failures(client, now);
        if fails.len() >= limit {
            let oldest_kept = fails[fails.len() - limit];
            return Said::Blocked(oldest_kept + self.window() - now);
        }
        if fails.len() + self.in_flight[client] >= limit {
            return Said::Busy;
        }
        self.in_flight[client] += 1;
        if self.trusted(client, account, now) {
            return Said::Check(0);
        }
        Said::Check(delay_for(self.streak(account, now).0).as_secs())
    }

    fn held(&self, now: u64) -> Vec<String> {
        let limit = MODEL_POLICY.failures as usize;
        let mut out = Vec::new();
        for (c, name) in CLIENT_NAMES.iter().enumerate() {
            let fails = self.client_failures(c, now);
            if fails.len() >= limit {
                let until = fails[fails.len() - limit] + self.window();
                out.push(format!("client {name} {limit} {until}"));
            }
        }
        let mut accounts = Vec::new();
        for (a, name) in ACCOUNT_NAMES.iter().enumerate() {
            if let (n, Some(last)) = self.streak(a, now) {
                let delay = delay_for(n).as_secs();
                accounts.push(format!(
                    "account {name} {n} {delay} {}",
                    last + self.window()
                ));
            }
        }
        accounts.sort();
        out.extend(accounts);
        out
    }
}

fn op() -> impl Strategy<Value = Op> {
    let outcome = prop_oneof![Just(Outcome::Failure), Just(Outcome::Success)];
    prop_oneof![
        3 => prop_oneof![Just(0u64), 1..30u64, 100..700u64, Just(TRUST.as_secs())].prop_map(Op::Wait),
        6 => (0..PEERS.len(), 0..LOGINS.len()).prop_map(|(p, l)| Op::Begin(p, l)),
        6 => (0..8usize, outcome).prop_map(|(k, o)| Op::End(k, o)),
        1 => (0..8usize).prop_map(Op::Abandon),
        1 => (0..PEERS.len()).prop_map(Op::UnblockClient),
        1 => (0..LOGINS.len()).prop_map(Op::UnblockAccount),
    ]
}

fn real_held(t: &Logins, start: Instant, now: Instant) -> Vec<String> {
    t.held(MODEL_POLICY, now)
        .into_iter()
        .map(|h| match h {
            Held::Client {
                client,
                failures,
                until,
            } => format!("client {client} {failures} {}", (until - start).as_secs()),
            Held::Account {
                account,
                failures,
                delay,
                until,
            } => format!(
                "account {account} {failures} {} {}",
                delay.as_secs(),
                (until - start).as_secs()
            ),
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The real tables decide as the model does, on random sequences of attempts, outcomes,
    /// waits and operator clearings.
    #[test]
    fn the_tables_agree_with_the_model(ops in proptest::collection::vec(op(), 1..120)) {
        let t = Logins::default();
        let mut model = Model::default();
        let start = Instant::now();
        let mut now = 0u64;
        // Attempts in progress: the real ticket, the model's client and account.
        let mut pending: Vec<(Ticket, usize, usize)> = Vec::new();
        for op in ops {
            let at = start + secs(now);
            match op {
                Op::Wait(s) => now += s,
                Op::Begin(p, l) => {
                    let (peer, client) = PEERS[p];
                    let (login, account) = LOGINS[l];
                    let want = model.admit(client, account, now);
                    let got = match t.admit(ip(peer), login, MODEL_POLICY, at) {
                        Admit::Check { ticket, delay } => {
                            pending.push((ticket, client, account));
                            Said::Check(delay.as_secs())
                        }
                        Admit::Blocked { until } => Said::Blocked((until - at).as_secs()),
                        Admit::Busy => Said::Busy,
                    };
                    prop_assert_eq!(got, want, "{} for {} at {}", peer, login, now);
                }
                Op::End(k, outcome) if !pending.is_empty() => {
                    let (ticket, client, account) = pending.remove(k % pending.len());
                    ticket.finish(outcome, at);
                    model.in_flight[client] -= 1;
                    model.history.push(match outcome {
                        Outcome::Failure => Event::Failure { client, account, at: now },
                        Outcome::Success => Event::Success { client, account, at: now },
                    });
                }
                Op::Abandon(k) if !pending.is_empty() => {
                    let (ticket, client, _) = pending.remove(k % pending.len());
                    drop(ticket);
                    model.in_flight[client] -= 1;
                }
                Op::UnblockClient(p) => {
                    let (peer, client) = PEERS[p];
                    let had = !model.client_failures(client, now).is_empty();
                    let cleared = t.unblock(peer);
                    // Failures within the window are always cleared; older ones may still be
                    // on record, unpruned, and are cleared too.
                    if had {
                        prop_assert!(cleared, "unblock {}", peer);
                    }
                    model.history.push(Event::ClearClient(client));
                }
                Op::UnblockAccount(l) => {
                    let (login, account) = LOGINS[l];
                    t.unblock(login);
                    model.history.push(Event::ClearAccount(account));
                }
                Op::End(..) | Op::Abandon(_) => {}
            }
            let at = start + secs(now);
            prop_assert_eq!(real_held(&t, start, at), model.held(now), "at {}", now);
        }
    }
}

/// A burst of logins takes the CPU that mail leaves: the checks run at a lower priority than
/// the threads that serve sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_checks_run_below_the_sessions_priority() {
    let checks = PasswordChecks::new(1, 1);
    let turn = checks.turn(MAX_WAIT).await.expect("a turn");
    let nice = checks.run(turn, super::own_nice).await.expect("ran");
    // Nice values end at 19.
    assert_eq!(nice, (super::own_nice() + CHECK_NICE).min(MAX_NICE));
}
