//! One slow, dead or hostile destination starves nothing and reaches nothing internal: MX
//! hosts that accept TCP and never greet, an MX answer of 500 records, a destination that
//! closes every connection, MX records and address literals pointing at loopback, and a
//! storm of reloads against `outbound.max_per_domain`.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use mta_tests::relay::{
    REMOTE_BOB, login, message, sender, start_sender, submit, try_remote_receiver,
};
use mta_tests::{ALICE, TestDns, Trap, on_shared_port, secs, wait_for};

/// What a [`Host`] does with each connection.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Keeps it open without a word.
    Silent,
    /// Greets, then never answers anything.
    Greet,
    /// Greets and answers EHLO, then never answers anything (MAIL stalls).
    Ehlo,
    /// Answers as a slow SMTP server, counting transactions open at once.
    Slow,
}

/// A host that accepts connections and counts them, those open at once included.
struct Host {
    accepted: Arc<AtomicUsize>,
    open_max: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Host {
    fn listen(addr: SocketAddr, mode: Mode) -> Result<Host, String> {
        let listener =
            TcpListener::bind(addr).map_err(|e| format!("{addr} is already in use: {e}"))?;
        listener.set_nonblocking(true).expect("nonblocking");
        let accepted = Arc::new(AtomicUsize::new(0));
        let open_now = Arc::new(AtomicUsize::new(0));
        let open_max = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, n, m, s) = (
            accepted.clone(),
            open_now.clone(),
            open_max.clone(),
            stop.clone(),
        );
        let thread = std::thread::spawn(move || {
            let held = Mutex::new(Vec::new());
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        a.fetch_add(1, Ordering::SeqCst);
                        let (n, m, s) = (n.clone(), m.clone(), s.clone());
                        match mode {
                            Mode::Silent => held.lock().unwrap().push(conn),
                            Mode::Slow => {
                                std::thread::spawn(move || slow_smtp(conn, &n, &m));
                            }
                            Mode::Greet | Mode::Ehlo => {
                                std::thread::spawn(move || stall(conn, mode, &n, &m, &s));
                            }
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok(Host {
            accepted,
            open_max,
            stop,
            thread: Some(thread),
        })
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// The most connections (or, [`Mode::Slow`], transactions) open at once.
    fn open_max(&self) -> usize {
        self.open_max.load(Ordering::SeqCst)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Greets (and with [`Mode::Ehlo`] answers EHLO), then reads and never answers, until the
/// client closes or the host stops; counts the connections open at once.
fn stall(conn: TcpStream, mode: Mode, now: &AtomicUsize, max: &AtomicUsize, stop: &AtomicBool) {
    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
    max.fetch_max(n, Ordering::SeqCst);
    conn.set_read_timeout(Some(Duration::from_millis(200))).ok();
    let mut out = conn.try_clone().expect("clone");
    let mut lines = BufReader::new(conn);
    let _ = out.write_all(b"220 stall.test ESMTP\r\n");
    let mut line = String::new();
    let mut answered = false;
    while !stop.load(Ordering::Relaxed) {
        match lines.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) if line.ends_with('\n') => {
                if mode == Mode::Ehlo && !answered {
                    answered = true;
                    let _ = out.write_all(b"250 stall.test\r\n");
                }
                line.clear();
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    now.fetch_sub(1, Ordering::SeqCst);
}

/// Plaintext SMTP that takes every message, holding each transaction open for a while so
/// that concurrent ones overlap; counts transactions (MAIL to the final reply) open at once.
fn slow_smtp(conn: TcpStream, now: &AtomicUsize, max: &AtomicUsize) {
    conn.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut out = conn.try_clone().expect("clone");
    let mut lines = BufReader::new(conn);
    let _ = out.write_all(b"220 slow.test ESMTP\r\n");
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" | "HELO" => b"250 slow.test\r\n",
            "MAIL" => {
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(n, Ordering::SeqCst);
                b"250 ok\r\n"
            }
            "RCPT" | "RSET" | "NOOP" => b"250 ok\r\n",
            "DATA" => {
                let _ = out.write_all(b"354 go\r\n");
                let mut body = String::new();
                loop {
                    body.clear();
                    if lines.read_line(&mut body).unwrap_or(0) == 0 || body == ".\r\n" {
                        break;
                    }
                }
                std::thread::sleep(Duration::from_millis(300));
                now.fetch_sub(1, Ordering::SeqCst);
                b"250 taken\r\n"
            }
            "QUIT" => {
                let _ = out.write_all(b"221 bye\r\n");
                return;
            }
            _ => b"500 what\r\n",
        };
        if out.write_all(reply).is_err() {
            return;
        }
    }
}

/// The attempts recorded for every queued recipient of `domain`.
fn attempts(mta: &mta_tests::TestMta, domain: &str) -> Vec<u64> {
    let queue = mta.queue_json();
    let mut out = Vec::new();
    for r in queue["records"].as_array().expect("records") {
        for rcpt in r["envelope"]["recipients"].as_array().expect("recipients") {
            if rcpt["address"]
                .as_str()
                .is_some_and(|a| a.ends_with(domain))
            {
                out.push(rcpt["attempts"].as_u64().unwrap_or(0));
            }
        }
    }
    out
}

/// Submits `n` messages from alice to `to` in one session.
fn submit_many(mta: &mta_tests::TestMta, to: &str, n: usize) {
    let mut c = login(mta);
    for i in 0..n {
        let reply = c.send_message(ALICE, &[to], &message(to, &format!("many {i}")));
        assert_eq!(reply.code, 250, "message {i}\n{}", c.transcript());
    }
    let _ = c.send_line("QUIT");
}

/// MX records in the hostile answer: 18 KB, more than a UDP answer carries, so the
/// resolver gets it whole over TCP (dnsmasq sets TC on UDP). The hosts' addresses come from
/// one `--address` rule, not a `--host-record` each: with those, dnsmasq adds 500 address
/// records to the answer, and past 16 KB its name compression points where a 14-bit
/// pointer cannot reach, which makes the answer unreadable (the lookup then fails).
const MX_RECORDS: usize = 500;

#[test]
fn many_mx_records_give_at_most_ten_connections() {
    let (port, trap) = on_shared_port("the trap", |p| {
        Trap::listen(SocketAddr::from(([127, 0, 0, 5], p)))
    });
    let mut records = vec!["--address=/mx.hostile.test/127.0.0.5".to_string()];
    for i in 0..MX_RECORDS {
        records.push(format!("--mx-host=hostile.test,mx{i}.mx.hostile.test,10"));
    }
    let records: Vec<&str> = records.iter().map(String::as_str).collect();
    let dns = TestDns::start(&records);
    let tx = start_sender(sender(&dns, port, "connection_timeout = \"5s\""));
    let id = submit(
        &tx,
        &["victim@hostile.test"],
        &message("victim@hostile.test", "many mx"),
    );
    tx.wait_for_deferral(&id, "victim@hostile.test", 1, secs(60));
    let n = trap.connections();
    eprintln!("{MX_RECORDS} MX records: {n} connections for one attempt");
    assert!(
        (1..=10).contains(&n),
        "one attempt made {n} connections for {MX_RECORDS} MX records\n{}",
        tx.log()
    );
    // The resolver saw every record: the cap, not a cut answer, kept the count down.
    let log = tx.log();
    assert!(
        log.contains(&format!("hosts={MX_RECORDS}")),
        "the MX answer did not arrive whole\n{log}"
    );
}

#[test]
fn hosts_that_never_greet_starve_no_other_delivery() {
    let dns = TestDns::start(&[
        "--mx-host=stall.test,mx.stall.test,10",
        "--host-record=mx.stall.test,127.0.0.6",
        "--mx-host=remote.test,mx1.remote.test,10",
        "--host-record=mx1.remote.test,127.0.0.2",
    ]);
    let (port, rx) = on_shared_port("the receiver", |p| {
        try_remote_receiver("mx1.remote.test", "127.0.0.2", p)
    });
    let stall = Host::listen(SocketAddr::from(([127, 0, 0, 6], port)), Mode::Silent)
        .unwrap_or_else(|e| panic!("{e}"));
    // Small slot counts so that a few stuck messages could fill them; 70 stuck messages are
    // more than the scheduler's 64 remote attempts.
    let tx = start_sender(sender(
        &dns,
        port,
        "max_connections = 4\nmax_per_domain = 2\nconnection_timeout = \"1h\"\nattempt_timeout = \"1h\"",
    ));
    submit_many(&tx, "victim@stall.test", 70);
    wait_for(secs(60), "the stalling host holds 2 connections", || {
        stall.accepted() >= 2
    });
    let unrelated = submit(&tx, &[REMOTE_BOB], &message(REMOTE_BOB, "unrelated"));
    // Attempts stuck waiting for the stalled domain's slots give way within 30 s.
    let files = rx.wait_for_mail(REMOTE_BOB, 1, 120);
    assert_eq!(files.len(), 1, "the unrelated remote message ({unrelated})");
    submit(&tx, &[ALICE], &message(ALICE, "local"));
    let files = tx.wait_for_mail(ALICE, 1, 120);
    assert_eq!(files.len(), 1, "the local message");
    assert!(
        stall.accepted() <= 2,
        "max_per_domain = 2: {}",
        stall.accepted()
    );
}

#[test]
fn a_dead_destination_costs_few_connections_per_round() {
    let (port, trap) = on_shared_port("the trap", |p| {
        Trap::listen(SocketAddr::from(([127, 0, 0, 7], p)))
    });
    let dns = TestDns::start(&[
        "--mx-host=dead.test,mx.dead.test,10",
        "--host-record=mx.dead.test,127.0.0.7",
    ]);
    let tx = start_sender(sender(&dns, port, ""));
    let messages = 20;
    submit_many(&tx, "victim@dead.test", messages);
    wait_for(secs(120), "every message tried 3 times", || {
        let a = attempts(&tx, "@dead.test");
        a.len() == messages && a.iter().all(|n| *n >= 3)
    });
    // 60 attempts or more; one connection each without the suspension.
    let n = trap.connections();
    assert!(
        n < messages,
        "{n} connections for {messages} messages tried 3 times each\n{}",
        tx.log()
    );
    // Attempts already past the check when the third failure came add theirs: the count
    // logged may be above 3.
    assert!(tx.log().contains("is suspended after"), "{}", tx.log());
}

#[test]
fn queue_delete_returns_while_an_attempt_is_stuck() {
    let (port, stall) = on_shared_port("the stalling host", |p| {
        Host::listen(SocketAddr::from(([127, 0, 0, 8], p)), Mode::Silent)
    });
    let dns = TestDns::start(&[
        "--mx-host=stall.test,mx.stall.test,10",
        "--host-record=mx.stall.test,127.0.0.8",
    ]);
    let tx = start_sender(sender(&dns, port, ""));
    let id = submit(
        &tx,
        &["victim@stall.test"],
        &message("victim@stall.test", "stuck"),
    );
    wait_for(secs(30), "the attempt connected", || stall.accepted() >= 1);
    let out = tx.mta(&["queue", "delete", &id], b"");
    out.assert_success("mta queue delete during a stuck attempt");
    assert!(tx.queue_record(&id).is_none(), "still queued");
}

#[test]
fn internal_addresses_are_refused_without_the_allow_list() {
    let (port, trap) = on_shared_port("the trap", |p| {
        Trap::listen(SocketAddr::from(([127, 0, 0, 9], p)))
    });
    let dns = TestDns::start(&[
        "--mx-host=inside.test,mx.inside.test,10",
        "--host-record=mx.inside.test,127.0.0.9",
    ]);
    let tx = start_sender(sender(&dns, port, "allow_internal = []"));
    let via_mx = submit(&tx, &["x@inside.test"], &message("x@inside.test", "mx"));
    let literal = submit(
        &tx,
        &["x@[127.0.0.9]"],
        &message("x@[127.0.0.9]", "literal"),
    );
    tx.wait_for_empty_queue(secs(60));
    assert_eq!(
        trap.connections(),
        0,
        "connected to an internal address\n{}",
        tx.log()
    );
    // Both bounced to alice, with 5.4.4.
    let bounces = tx.wait_for_mail(ALICE, 2, 60);
    for path in &bounces {
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.contains("Status: 5.4.4"), "{text}");
    }
    let log = tx.log();
    assert!(log.contains("internal address"), "{log}");
    let _ = (via_mx, literal);
}

#[test]
fn internal_addresses_are_used_when_allowed() {
    let (port, rx) = on_shared_port("the receiver", |p| {
        try_remote_receiver("mx1.remote.test", "127.0.0.2", p)
    });
    let dns = TestDns::start(&[
        "--mx-host=remote.test,mx1.remote.test,10",
        "--host-record=mx1.remote.test,127.0.0.2",
    ]);
    let tx = start_sender(sender(&dns, port, "allow_internal = [\"127.0.0.2/32\"]"));
    submit(&tx, &[REMOTE_BOB], &message(REMOTE_BOB, "allowed"));
    assert_eq!(rx.wait_for_mail(REMOTE_BOB, 1, 60).len(), 1);
}

#[test]
fn max_per_domain_holds_across_a_reload_storm() {
    let (port, host) = on_shared_port("the slow receiver", |p| {
        Host::listen(SocketAddr::from(([127, 0, 0, 10], p)), Mode::Slow)
    });
    let dns = TestDns::start(&[
        "--mx-host=slow.test,mx.slow.test,10",
        "--host-record=mx.slow.test,127.0.0.10",
    ]);
    let tx = start_sender(sender(&dns, port, "max_per_domain = 2"));
    let messages = 24;
    submit_many(&tx, "r@slow.test", messages);
    // SIGHUPs while the messages go out (bounded: at most 600 of them).
    for _ in 0..600 {
        if tx.queue_json()["records"]
            .as_array()
            .is_some_and(|r| r.is_empty())
        {
            break;
        }
        tx.hangup();
        std::thread::sleep(Duration::from_millis(50));
    }
    tx.wait_for_empty_queue(secs(60));
    let max = host.open_max();
    assert!(max >= 1, "nothing was delivered");
    assert!(
        max <= 2,
        "{max} transactions at once with max_per_domain = 2"
    );
}

/// Domains sharing the stalling host in [`domains_that_greet_then_stall_hold_few_slots`].
const STALLING_DOMAINS: usize = 40;

/// The scenario of the slot tests: a sender (10-minute `connection_timeout`) resolving
/// through `records` sends one message to `victim@{prefix}{i}.test` for each of
/// [`STALLING_DOMAINS`], waits until `holding()` says the stalling hosts hold connections,
/// then submits an unrelated message to bob, which `rx` must get within `within` seconds
/// (long before any stall could time out). Returns the sender and its DNS, still running.
fn stall_then_deliver_unrelated(
    records: &[String],
    port: u16,
    prefix: &str,
    holding: impl Fn() -> bool,
    rx: &mta_tests::TestMta,
    within: u64,
) -> (TestDns, mta_tests::TestMta) {
    let records: Vec<&str> = records.iter().map(String::as_str).collect();
    let dns = TestDns::start(&records);
    let tx = start_sender(sender(
        &dns,
        port,
        "connection_timeout = \"10m\"\nattempt_timeout = \"1h\"",
    ));
    let mut c = login(&tx);
    for i in 0..STALLING_DOMAINS {
        let to = format!("victim@{prefix}{i}.test");
        let reply = c.send_message(ALICE, &[&to], &message(&to, "stall"));
        assert_eq!(reply.code, 250, "message {i}\n{}", c.transcript());
    }
    let _ = c.send_line("QUIT");
    wait_for(secs(60), "the stalling hosts hold connections", holding);
    submit(&tx, &[REMOTE_BOB], &message(REMOTE_BOB, "unrelated"));
    let files = rx.wait_for_mail(REMOTE_BOB, 1, within);
    assert_eq!(files.len(), 1, "the unrelated message\n{}", tx.log());
    (dns, tx)
}

#[test]
fn domains_that_greet_then_stall_hold_few_slots() {
    // 40 domains, one MX host for all of them that greets and then never answers: every
    // attempt would hold one of the 32 overall slots for the 10 minutes of
    // connection_timeout.
    let (port, (rx, stall)) = on_shared_port("the receiver and the stalling host", |p| {
        let rx = try_remote_receiver("mx1.remote.test", "127.0.0.2", p)?;
        let stall = Host::listen(SocketAddr::from(([127, 0, 0, 21], p)), Mode::Greet)?;
        Ok((rx, stall))
    });
    let mut records = vec![
        "--host-record=mx.staller.test,127.0.0.21".to_string(),
        "--mx-host=remote.test,mx1.remote.test,10".to_string(),
        "--host-record=mx1.remote.test,127.0.0.2".to_string(),
    ];
    for i in 0..STALLING_DOMAINS {
        records.push(format!("--mx-host=s{i}.test,mx.staller.test,10"));
    }
    let (_dns, _tx) =
        stall_then_deliver_unrelated(&records, port, "s", || stall.accepted() >= 4, &rx, 60);
    let held = stall.open_max();
    eprintln!(
        "{STALLING_DOMAINS} stalling domains: the host saw at most {held} connections at once, \
         {} in all; the unrelated message was delivered",
        stall.accepted()
    );
    assert!(
        (1..=4).contains(&held),
        "the stalling host held {held} connections at once (accepted {})",
        stall.accepted()
    );
}

#[test]
fn stalls_after_the_greeting_suspend_the_address() {
    // 10 domains on one host that greets and answers EHLO, then never answers MAIL: the
    // connection opens, so only counting the stall as a failure suspends it.
    let (port, stall) = on_shared_port("the stalling host", |p| {
        Host::listen(SocketAddr::from(([127, 0, 0, 22], p)), Mode::Ehlo)
    });
    let mut records = vec!["--host-record=mx.mailstall.test,127.0.0.22".to_string()];
    for i in 0..10 {
        records.push(format!("--mx-host=m{i}.test,mx.mailstall.test,10"));
    }
    let records: Vec<&str> = records.iter().map(String::as_str).collect();
    let dns = TestDns::start(&records);
    let tx = start_sender(sender(&dns, port, "connection_timeout = \"2s\""));
    let mut c = login(&tx);
    let messages = 20;
    for i in 0..messages {
        let to = format!("victim@m{}.test", i % 10);
        let reply = c.send_message(ALICE, &[&to], &message(&to, "mail stalls"));
        assert_eq!(reply.code, 250, "message {i}\n{}", c.transcript());
    }
    let _ = c.send_line("QUIT");
    wait_for(secs(180), "every message tried 3 times", || {
        let a = attempts(&tx, ".test");
        a.len() == messages && a.iter().all(|n| *n >= 3)
    });
    // 60 attempts or more; one connection each without the suspension.
    let n = stall.accepted();
    eprintln!(
        "{messages} messages tried 3 times each on a host that stalls at MAIL: {n} connections"
    );
    assert!(
        n < messages,
        "{n} connections for {messages} messages tried 3 times each\n{}",
        tx.log()
    );
    assert!(tx.log().contains("is suspended after"), "{}", tx.log());
}

#[test]
fn stalls_cut_by_the_attempt_timeout_suspend_the_address_too() {
    // As above, but the attempt's deadline comes long before the connection's: the stall
    // must still count, and the deferral must name the limit that expired.
    let (port, stall) = on_shared_port("the stalling host", |p| {
        Host::listen(SocketAddr::from(([127, 0, 0, 23], p)), Mode::Ehlo)
    });
    let mut records = vec!["--host-record=mx.mailstall2.test,127.0.0.23".to_string()];
    for i in 0..10 {
        records.push(format!("--mx-host=n{i}.test,mx.mailstall2.test,10"));
    }
    let records: Vec<&str> = records.iter().map(String::as_str).collect();
    let dns = TestDns::start(&records);
    let tx = start_sender(sender(
        &dns,
        port,
        "connection_timeout = \"10m\"\nattempt_timeout = \"2s\"",
    ));
    let mut c = login(&tx);
    let messages = 20;
    for i in 0..messages {
        let to = format!("victim@n{}.test", i % 10);
        let reply = c.send_message(ALICE, &[&to], &message(&to, "mail stalls"));
        assert_eq!(reply.code, 250, "message {i}\n{}", c.transcript());
    }
    let _ = c.send_line("QUIT");
    wait_for(secs(180), "every message tried 3 times", || {
        let a = attempts(&tx, ".test");
        a.len() == messages && a.iter().all(|n| *n >= 3)
    });
    let n = stall.accepted();
    eprintln!(
        "{messages} messages tried 3 times each on a host that stalls at MAIL, attempt_timeout \
         2 s: {n} connections"
    );
    let log = tx.log();
    assert!(
        n < messages / 2 && log.contains("is suspended after"),
        "{n} connections for {messages} messages tried 3 times each\n{log}"
    );
    assert!(
        log.contains("the attempt took longer than outbound.attempt_timeout"),
        "the deferral names the attempt's limit\n{log}"
    );
    assert!(
        !log.contains("longer than outbound.connection_timeout"),
        "the connection's own limit did not expire\n{log}"
    );
}

/// The addresses of the stalling hosts in [`eight_addresses_of_one_network_hold_few_slots`]:
/// 127.0.0.41 to 127.0.0.48, all in one /24.
const NETWORK_HOSTS: u8 = 8;

#[test]
fn eight_addresses_of_one_network_hold_few_slots() {
    // 40 domains over 8 addresses of one /24, each a host that greets and then never
    // answers: 4 connections each would hold all 32 overall slots for the 10 minutes of
    // connection_timeout. The receiver is in another /24 (127.0.1.0/24).
    let (port, (rx, stalls)) = on_shared_port("the receiver and the stalling hosts", |p| {
        let rx = try_remote_receiver("mx1.remote.test", "127.0.1.2", p)?;
        let stalls = (0..NETWORK_HOSTS)
            .map(|i| Host::listen(SocketAddr::from(([127, 0, 0, 41 + i], p)), Mode::Greet))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((rx, stalls))
    });
    let mut records = vec![
        "--mx-host=remote.test,mx1.remote.test,10".to_string(),
        "--host-record=mx1.remote.test,127.0.1.2".to_string(),
    ];
    for i in 0..NETWORK_HOSTS {
        records.push(format!("--host-record=mx{i}.net.test,127.0.0.{}", 41 + i));
    }
    for i in 0..STALLING_DOMAINS {
        let mx = i % usize::from(NETWORK_HOSTS);
        records.push(format!("--mx-host=w{i}.test,mx{mx}.net.test,10"));
    }
    let accepted = |stalls: &[Host]| stalls.iter().map(Host::accepted).sum::<usize>();
    let holding = || accepted(&stalls) >= 8;
    let (_dns, tx) = stall_then_deliver_unrelated(&records, port, "w", holding, &rx, 90);
    // Every attempt has had its chance at the hosts by now.
    std::thread::sleep(Duration::from_secs(5));
    // Each host's most at once, added up: no fewer than the network held at once.
    let held: usize = stalls.iter().map(Host::open_max).sum();
    eprintln!(
        "{STALLING_DOMAINS} domains on {NETWORK_HOSTS} stalling addresses of one /24: they held \
         at most {held} connections at once, {} in all; the unrelated message was delivered",
        accepted(&stalls)
    );
    assert!(
        (1..=8).contains(&held),
        "the stalling network held up to {held} connections at once (accepted {})\n{}",
        accepted(&stalls),
        tx.log()
    );
}

#[test]
fn an_address_written_as_ipv6_shares_the_slots_of_its_ipv4_form() {
    // 40 domains on one host that greets then stalls: half reach it by its A record, half by
    // an AAAA record of the same address mapped into IPv6. One host, so 4 slots in all.
    let (port, (rx, stall)) = on_shared_port("the receiver and the stalling host", |p| {
        let rx = try_remote_receiver("mx1.remote.test", "127.0.0.2", p)?;
        let stall = Host::listen(SocketAddr::from(([127, 0, 0, 24], p)), Mode::Greet)?;
        Ok((rx, stall))
    });
    let mut records = vec![
        "--host-record=mx4.staller.test,127.0.0.24".to_string(),
        "--host-record=mx6.staller.test,::ffff:127.0.0.24".to_string(),
        "--mx-host=remote.test,mx1.remote.test,10".to_string(),
        "--host-record=mx1.remote.test,127.0.0.2".to_string(),
    ];
    for i in 0..STALLING_DOMAINS {
        let mx = if i % 2 == 0 { "mx4" } else { "mx6" };
        records.push(format!("--mx-host=t{i}.test,{mx}.staller.test,10"));
    }
    let (_dns, tx) =
        stall_then_deliver_unrelated(&records, port, "t", || stall.accepted() >= 4, &rx, 60);
    // Every attempt has had its chance at the host by now.
    std::thread::sleep(Duration::from_secs(5));
    let held = stall.open_max();
    eprintln!("IPv4 and IPv4-mapped MX addresses of one host: it held {held} connections at once");
    assert!(
        (1..=4).contains(&held),
        "the stalling host held {held} connections at once (accepted {})\n{}",
        stall.accepted(),
        tx.log()
    );
}

#[test]
fn our_own_listener_written_as_ipv6_is_a_mail_loop() {
    let dns = TestDns::start(&[]);
    let (_, tx) = on_shared_port("the sender", |p| {
        let mta = sender(&dns, p, "")
            .smtp(&[&format!("127.0.0.31:{p}")])
            .try_start()?;
        mta.add_user(ALICE, mta_tests::ALICE_PASSWORD);
        Ok(mta)
    });
    for to in ["x@[127.0.0.31]", "x@[IPv6:::ffff:127.0.0.31]"] {
        submit(&tx, &[to], &message(to, "loop"));
    }
    tx.wait_for_empty_queue(secs(60));
    let log = tx.log();
    assert_eq!(
        log.matches("reason=\"a mail loop: one of our own listeners\"")
            .count(),
        2,
        "{log}"
    );
    assert!(
        !log.contains("Relaying denied"),
        "it sent the mail to itself\n{log}"
    );
}
