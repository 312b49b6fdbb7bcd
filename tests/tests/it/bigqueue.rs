//! A big queue to a dead destination costs what it must: few connection attempts per retry
//! round however many messages wait, and a restart that keeps every message's due time
//! instead of retrying the whole queue at once. Connections are counted by a listener that
//! accepts and closes them at once ([`Trap`]): counts, never timings.

use std::collections::HashMap;
use std::net::SocketAddr;

use mta_tests::relay::{login, message, receiver, start_sender};
use mta_tests::{ALICE, MtaBuilder, TestDns, TestMta, Trap, on_shared_port, secs, wait_for};

const DEAD: &str = "victim@dead.test";

/// A sender whose MX for `dead.test` is `127.0.0.9` on `port`, with `queue` as its
/// `[queue]` table; alice may send any number of messages.
fn sender(dns: &TestDns, port: u16, queue: &str) -> TestMta {
    start_sender(MtaBuilder::new().toml(&format!(
        "{}[outbound]\nport = {port}\n[queue]\n{queue}\n\
         [limits.sending]\nmessages_per_hour = 0\nmessages_per_day = 0\n",
        dns.config_toml()
    )))
}

fn dead_dns() -> TestDns {
    TestDns::start(&[
        "--mx-host=dead.test,mx.dead.test,10",
        "--host-record=mx.dead.test,127.0.0.9",
    ])
}

/// Submits `n` messages from alice to `to` in one session.
fn submit_many(mta: &TestMta, to: &str, n: usize) {
    let mut c = login(mta);
    for i in 0..n {
        let reply = c.send_message(ALICE, &[to], &message(to, &format!("many {i}")));
        assert_eq!(reply.code, 250, "message {i}\n{}", c.transcript());
    }
    let _ = c.send_line("QUIT");
}

/// Every queued message's id with its next attempt (wall clock, ms) and its recipient's
/// attempts and last result.
fn queued(mta: &TestMta) -> HashMap<String, (u64, u64, String)> {
    let queue = mta.queue_json();
    let mut out = HashMap::new();
    for r in queue["records"].as_array().expect("records") {
        let id = r["envelope"]["id"].as_str().expect("id").to_string();
        let rcpt = &r["envelope"]["recipients"][0];
        out.insert(
            id,
            (
                r["next_attempt_ms"].as_u64().expect("next_attempt_ms"),
                rcpt["attempts"].as_u64().unwrap_or(0),
                rcpt["last_result"].as_str().unwrap_or("").to_string(),
            ),
        );
    }
    out
}

#[test]
fn a_restart_keeps_due_times_and_retries_nothing_early() {
    let (port, trap) = on_shared_port("the trap", |p| {
        Trap::listen(SocketAddr::from(([127, 0, 0, 9], p)))
    });
    let dns = dead_dns();
    let mut tx = sender(&dns, port, "retry_first = \"1h\"\nretry_max = \"1h\"");
    let messages = 200;
    submit_many(&tx, DEAD, messages);
    wait_for(secs(120), "every message tried once", || {
        let q = queued(&tx);
        q.len() == messages && q.values().all(|(_, attempts, _)| *attempts >= 1)
    });
    let before = queued(&tx);
    tx.restart();
    let connections = trap.connections();
    // A few seconds after the server is ready: nothing is due for an hour, so nothing may
    // connect. A count over a bounded window, not a timing.
    std::thread::sleep(secs(5));
    assert_eq!(
        trap.connections(),
        connections,
        "connections to the dead MX after the restart\n{}",
        tx.log()
    );
    let after = queued(&tx);
    assert_eq!(after.len(), messages);
    for (id, (due, attempts, _)) in &before {
        let (due_after, attempts_after, _) = after[id];
        // Shown on the wall clock: the queue clock of each run may differ from it by the
        // drift of the monotonic clock, a few ms, never an hour.
        assert!(
            due.abs_diff(due_after) < 60_000,
            "{id}: next attempt {due} before the restart, {due_after} after"
        );
        assert_eq!(*attempts, attempts_after, "{id}");
    }
}

#[test]
fn a_dead_destination_costs_a_few_connections_for_300_messages() {
    let (port, trap) = on_shared_port("the trap", |p| {
        Trap::listen(SocketAddr::from(([127, 0, 0, 9], p)))
    });
    let dns = dead_dns();
    // Probes of the suspended destination every 30 s: the first round ends before one.
    let tx = sender(&dns, port, "retry_first = \"30s\"\nretry_max = \"30s\"");
    let messages = 300;
    submit_many(&tx, DEAD, messages);
    wait_for(secs(120), "every message tried once", || {
        let q = queued(&tx);
        q.len() == messages && q.values().all(|(_, attempts, _)| *attempts >= 1)
    });
    let connections = trap.connections();
    eprintln!("{connections} connections to the dead MX for {messages} messages tried once");
    // Three failures suspend it; attempts already past the check when the third came
    // connect too (four slots per domain).
    assert!(
        connections <= 10,
        "{connections} connections for {messages} messages tried once\n{}",
        tx.log()
    );
    let q = queued(&tx);
    let suspended = q
        .values()
        .filter(|(_, _, why)| why.contains("is suspended after"))
        .count();
    assert!(
        suspended + connections >= messages,
        "{suspended} of {messages} deferred as suspended, {connections} connections: {q:?}"
    );
    // The MX comes back on the same address and port: the next probe finds it, and every
    // message goes.
    drop(trap);
    let rx = receiver("mx.dead.test", &["dead.test"], "127.0.0.9", port)
        .user(DEAD, "victim-password-1")
        .start();
    let files = rx.wait_for_mail(DEAD, messages, 300);
    assert_eq!(files.len(), messages, "{}", tx.log());
    wait_for(secs(60), "the queue to empty", || queued(&tx).is_empty());
}

/// The server's peak resident memory (`VmHWM`), KiB.
fn peak_kib(mta: &TestMta) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", mta.pid()))
        .expect("the server's /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc status")
}

#[test]
fn queue_list_of_20000_messages_streams_in_bounded_memory() {
    let (port, _trap) = on_shared_port("the trap", |p| {
        Trap::listen(SocketAddr::from(([127, 0, 0, 9], p)))
    });
    let dns = dead_dns();
    let tx = sender(&dns, port, "retry_first = \"1h\"\nretry_max = \"1h\"");
    let messages = 20_000;
    let sessions = 4;
    std::thread::scope(|s| {
        for _ in 0..sessions {
            s.spawn(|| submit_many(&tx, DEAD, messages / sessions));
        }
    });
    // Resets the peak to what is resident now (proc(5), clear_refs): filling the queue
    // peaked higher than listing should.
    std::fs::write(format!("/proc/{}/clear_refs", tx.pid()), "5").expect("clear_refs");
    let before = peak_kib(&tx);
    let out = tx.mta(&["queue", "list"], b"");
    out.assert_success("mta queue list");
    let grown = peak_kib(&tx).saturating_sub(before);
    eprintln!("server VmHWM grew by {grown} KiB while listing {messages} messages");
    assert!(
        out.stdout
            .ends_with(&format!("\n{messages} message(s) queued\n")),
        "{}",
        &out.stdout[out.stdout.len().saturating_sub(500)..]
    );
    let listed = out
        .stdout
        .lines()
        .filter(|l| l.contains("  from <alice@example.test>  "))
        .count();
    assert_eq!(listed, messages);
    assert!(grown < 50 * 1024, "VmHWM grew by {grown} KiB");
    let json = tx.queue_json();
    assert_eq!(json["records"].as_array().map(Vec::len), Some(messages));
    assert_eq!(json["errors"], serde_json::json!([]));
}

#[test]
fn queue_flush_tries_a_suspended_destination_again_at_once() {
    let (port, trap) = on_shared_port("the trap", |p| {
        Trap::listen(SocketAddr::from(([127, 0, 0, 9], p)))
    });
    let dns = dead_dns();
    // The next probe of the suspended destination would be an hour away.
    let tx = sender(&dns, port, "retry_first = \"1h\"\nretry_max = \"1h\"");
    let messages = 30;
    submit_many(&tx, DEAD, messages);
    wait_for(secs(120), "every message tried once", || {
        let q = queued(&tx);
        q.len() == messages && q.values().all(|(_, attempts, _)| *attempts >= 1)
    });
    let q = queued(&tx);
    assert!(
        q.values()
            .any(|(_, _, why)| why.contains("is suspended after")),
        "the destination was suspended: {q:?}"
    );
    // The MX comes back on the same address and port; the operator flushes the queue.
    drop(trap);
    let rx = receiver("mx.dead.test", &["dead.test"], "127.0.0.9", port)
        .user(DEAD, "victim-password-1")
        .start();
    let out = tx.mta(&["queue", "flush"], b"");
    out.assert_success("mta queue flush");
    // Every message is delivered now, not deferred again as suspended for another hour.
    let files = rx.wait_for_mail(DEAD, messages, 120);
    assert_eq!(files.len(), messages, "{}", tx.log());
    // The domain and its MX's address were suspended.
    assert!(
        out.stdout.starts_with(&format!(
            "{messages} waiting message(s) made due now; 2 suspended destination(s) tried again"
        )),
        "{}",
        out.stdout
    );
    wait_for(secs(60), "the queue to empty", || queued(&tx).is_empty());
    assert!(
        tx.log()
            .contains("suspended destinations resumed by operator"),
        "{}",
        tx.log()
    );
}
