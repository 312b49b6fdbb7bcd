//! `kill -9` under load: 20 concurrent submitters with unique Message-IDs
//! (1–200 KiB), the server killed with SIGKILL at a random moment, sometimes again while it
//! starts or while it delivers what it recovered, then restarted and drained. Every message
//! that got `250` must be in the Maildir, whole; duplicates are counted and bounded by what
//! was in flight at the kills; no partial file ever shows in `new/`.
//!
//! CI runs 10 cycles; `scripts/soak-kill.sh` runs the same test with `MTA_KILL_CYCLES=50`.
//! `MTA_TEST_SEED` repeats a run (the seed is printed).

use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mta_tests::load::{Load, LoadSpec, MaildirScan, Outcome, Rng};
use mta_tests::{TestMta, mta_bin, secs};

const BOB: &str = "bob@example.test";
/// Concurrent submitters.
const SESSIONS: usize = 20;
/// Messages each submitter sends per cycle, at most (the kill usually comes first).
const PER_SESSION: usize = 4;
/// Concurrent deliveries in `mta serve` (`DELIVERY_CONCURRENCY`): what a kill while it
/// delivers may leave half-recorded.
const DELIVERIES_IN_FLIGHT: usize = 64;

/// Where the kill of one cycle came.
#[derive(Debug, Clone, Copy)]
enum Extra {
    /// Only the kill under load.
    None,
    /// Another kill while the restarted server starts (before its ready line).
    StartUp,
    /// Another kill while the restarted server delivers what it recovered.
    Recovery,
}

fn cycles() -> usize {
    std::env::var("MTA_KILL_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
}

/// Starts `mta serve` on `mta`'s config (the `TestMta` itself is dead) and kills it with
/// SIGKILL after `after`, whether or not it is ready by then.
fn kill_during_start_up(mta: &TestMta, after: Duration) {
    let mut child = Command::new(mta_bin())
        .arg("serve")
        .arg("--config")
        .arg(mta.config_path())
        .current_dir(mta.dir())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start mta serve: {e}"));
    std::thread::sleep(after);
    let _ = child.kill();
    let _ = child.wait();
}

fn maildir_new(mta: &TestMta) -> std::path::PathBuf {
    mta.data_dir().join("mail/example.test/bob/Maildir/new")
}

#[test]
fn kill_9_under_load_loses_nothing_that_got_250() {
    let (mut rng, seed) = Rng::from_env();
    let cycles = cycles();
    println!("kill -9 under load: {cycles} cycles, {SESSIONS} sessions, seed {seed}");
    let mut mta = TestMta::start("shutdown_grace = \"2s\"\n");
    mta.add_user(BOB, "bob-password-1");

    let mut acked: HashMap<String, String> = HashMap::new();
    let mut no_reply: HashSet<String> = HashSet::new();
    let mut scan = MaildirScan::default();
    let (mut kills, mut allowed_dups) = (0usize, 0usize);
    let started = Instant::now();
    for cycle in 0..cycles {
        let spec = LoadSpec {
            addr: mta.smtp_addr(),
            sessions: SESSIONS,
            messages: Some(PER_SESSION),
            sizes: (1024, 200 * 1024),
            rcpt: BOB.into(),
            tag: format!("c{cycle}-{seed}"),
            seed: rng.next_u64(),
        };
        let load = Load::start(&spec);
        // A short run (two cycles on a busy machine) could kill every cycle before the first
        // 250 and so test nothing: the last cycle of a run without a 250 yet first waits
        // (bounded) for one, then draws its kill time.
        if cycle + 1 == cycles && acked.is_empty() {
            let deadline = Instant::now() + secs(60);
            while load.accepted() == 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let kill_at = Duration::from_millis(rng.range(20, 1500));
        std::thread::sleep(kill_at);
        let (connected, awaiting) = (load.connected(), load.awaiting_reply());
        mta.kill9();
        kills += 1;
        // The bound on duplicates: at most the sessions in flight at each kill.
        allowed_dups += connected.max(awaiting);
        let reports = load.join();
        let (mut ok, mut lost_reply) = (0, 0);
        for r in &reports {
            for (mid, outcome) in &r.transactions {
                match outcome {
                    Outcome::Accepted(id) => {
                        ok += 1;
                        acked.insert(mid.clone(), id.clone());
                    }
                    Outcome::NoReply => {
                        lost_reply += 1;
                        no_reply.insert(mid.clone());
                    }
                    Outcome::Refused(r) => panic!("{mid} refused under load: {r}"),
                }
            }
        }
        // Nothing partial in new/ right after the kill.
        scan.update(&maildir_new(&mta), BOB);
        assert!(scan.bad.is_empty(), "after kill {kills}: {:?}", scan.bad);

        let extra = match rng.range(0, 2) {
            0 => Extra::None,
            1 => Extra::StartUp,
            _ => Extra::Recovery,
        };
        match extra {
            Extra::None => {}
            Extra::StartUp => {
                kill_during_start_up(&mta, Duration::from_millis(rng.range(0, 300)));
                kills += 1;
            }
            Extra::Recovery => {
                mta.restart();
                std::thread::sleep(Duration::from_millis(rng.range(0, 400)));
                mta.kill9();
                kills += 1;
                allowed_dups += DELIVERIES_IN_FLIGHT;
            }
        }
        scan.update(&maildir_new(&mta), BOB);
        assert!(scan.bad.is_empty(), "after kill {kills}: {:?}", scan.bad);
        mta.restart();
        mta.wait_for_empty_queue(secs(60));
        scan.update(&maildir_new(&mta), BOB);
        println!(
            "cycle {cycle}: killed after {kill_at:?} with {connected} sessions connected, \
             {awaiting} awaiting a reply; extra kill {extra:?}; {ok} got 250, {lost_reply} \
             lost their reply; Maildir {} files, duplicates so far {:?}",
            scan.files(),
            scan.duplicates()
        );
    }
    mta.stop();
    scan.update(&maildir_new(&mta), BOB);

    let missing: Vec<&String> = acked
        .keys()
        .filter(|m| !scan.copies.contains_key(*m))
        .collect();
    let unknown: Vec<&String> = scan
        .copies
        .keys()
        .filter(|m| !acked.contains_key(*m) && !no_reply.contains(*m))
        .collect();
    let (dup_ids, dup_copies) = scan.duplicates();
    let delivered_without_reply = no_reply
        .iter()
        .filter(|m| scan.copies.contains_key(*m))
        .count();
    println!(
        "kill -9 figures: {cycles} cycles, {kills} kills, {:?}; {} messages got 250, {} lost: \
         {}; {} had no reply ({} of them delivered anyway); {} files in new/, {} partial or \
         altered; {dup_ids} messages delivered twice or more ({dup_copies} extra copies, bound \
         {allowed_dups})",
        started.elapsed(),
        acked.len(),
        missing.len(),
        if missing.is_empty() { "none" } else { "SOME" },
        no_reply.len(),
        delivered_without_reply,
        scan.files(),
        scan.bad.len(),
    );
    assert!(
        missing.is_empty(),
        "acknowledged but never delivered: {missing:?}"
    );
    assert!(
        scan.bad.is_empty(),
        "partial or altered files: {:?}",
        scan.bad
    );
    assert!(unknown.is_empty(), "delivered but never sent: {unknown:?}");
    assert!(
        dup_copies <= allowed_dups,
        "{dup_copies} extra copies > {allowed_dups}"
    );
    assert!(!acked.is_empty(), "no message got 250 in {cycles} cycles");
}
