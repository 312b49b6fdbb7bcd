//! Flush before `250`, proven by the order of syscalls: `mta serve` runs
//! under `strace -f` while 20 sessions send 200 messages; for every `250 … queued as ID`, a
//! fsync/fdatasync of a file of the queue store returned after the message's last byte was
//! read on that connection and before the `250` was written on it. Prints the store syncs
//! per message (group commit shares one sync among concurrent messages).

use std::collections::HashSet;

use mta_tests::load::{Load, LoadSpec, Outcome, Rng};
use mta_tests::strace::{TracedMta, check_maildir, check_trace, strace_works};
use mta_tests::{KeptDir, mta_with_config};

const BOB: &str = "bob@example.test";
const SESSIONS: usize = 20;
const PER_SESSION: usize = 10;

#[test]
fn every_250_to_data_follows_a_store_sync() {
    // A test that cannot run fails: scripts/test.sh installs strace.
    if let Err(why) = strace_works() {
        panic!("every_250_to_data_follows_a_store_sync needs a working strace: {why}");
    }
    let (mut rng, seed) = Rng::from_env();
    let dir = KeptDir::new();
    let mta = TracedMta::start(dir.path());
    mta_with_config(
        &dir.path().join("mta.toml"),
        &["user", "add", BOB, "--password-stdin"],
        b"bob-password-1\n",
    )
    .assert_success("mta user add");

    let load = Load::start(&LoadSpec {
        addr: mta.smtp_addr(),
        sessions: SESSIONS,
        messages: Some(PER_SESSION),
        sizes: (1024, 16 * 1024),
        rcpt: BOB.into(),
        tag: format!("sync-{seed}"),
        seed: rng.next_u64(),
    });
    let mut acked = HashSet::new();
    for r in load.join() {
        for (mid, outcome) in r.transactions {
            match outcome {
                Outcome::Accepted(id) => {
                    acked.insert(id);
                }
                other => panic!("{mid}: {other:?} (session ended: {})", r.end),
            }
        }
    }
    assert_eq!(acked.len(), SESSIONS * PER_SESSION, "every message got 250");
    // Every message in the Maildir before the stop (bounded), so that every delivery ran.
    let maildir = dir.path().join("data/mail/example.test/bob/Maildir");
    let new_dir = maildir.join("new");
    for _ in 0..6000 {
        let files = std::fs::read_dir(&new_dir).map_or(0, |d| d.count());
        if files >= acked.len() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let trace = mta.stop();

    let store = format!("{}/", dir.path().join("data").join("queue").display());
    let order = check_trace(&trace, &store);
    let syncs = order.total_store_syncs();
    let log_syncs = order.store_syncs.get("db").copied().unwrap_or(0);
    let mut per_file: Vec<_> = order.store_syncs.iter().collect();
    per_file.sort();
    println!(
        "strace figures: {} messages, {} acks in the trace, {} with a store sync between the \
         last read and the 250, {} without; {syncs} store syncs in all, enqueue and delivery \
         records ({:.2} per message; per file {per_file:?}, numbers are blob files); {log_syncs} \
         of sled's log ({:.2} per message); {} other syncs (Maildir)",
        acked.len(),
        order.acks,
        order.proven.len(),
        order.unproven.len(),
        syncs as f64 / acked.len() as f64,
        log_syncs as f64 / acked.len() as f64,
        order.other_syncs,
    );
    assert!(
        order.unproven.is_empty(),
        "250 without a store sync before it: {:?}",
        order.unproven
    );

    // Local delivery: every file renamed into new/ is covered by a sync of new/ that started
    // after its rename; concurrent deliveries share those syncs; an existing Maildir's
    // directories are opened, not made again for each message.
    let md = check_maildir(
        &trace,
        &new_dir.display().to_string(),
        &dir.path().join("data/mail").display().to_string(),
    );
    println!(
        "strace figures, Maildir: {} renames into new/, {} covered by a later sync of new/; \
         {} syncs of new/ ({:.2} per message); {} mkdir ({} answered EEXIST)",
        md.renames,
        md.covered,
        md.dir_syncs,
        md.dir_syncs as f64 / acked.len() as f64,
        md.mkdirs,
        md.mkdir_exists,
    );
    assert_eq!(md.renames, acked.len(), "one rename into new/ per message");
    assert!(
        md.uncovered.is_empty(),
        "renames without a later sync of new/: {:?}",
        md.uncovered
    );
    assert!(md.dir_syncs >= 1);
    // The first delivery makes the tree (the root's and domain's directories, the user's,
    // the Maildir and its three); concurrent first deliveries may each try some of them.
    assert!(
        md.mkdirs <= 7 * SESSIONS,
        "{} mkdir for {} messages: directories made again for each message",
        md.mkdirs,
        acked.len()
    );
    let proven: HashSet<String> = order.proven.into_iter().collect();
    let missing: Vec<_> = acked.difference(&proven).collect();
    assert!(
        missing.is_empty(),
        "acks the trace does not show (or shows without a sync): {missing:?}"
    );
}

/// The checker itself: a sync that returns after the `250` was written, or one on another
/// file, proves nothing.
#[test]
fn trace_checker_finds_a_250_before_the_sync() {
    let conn = "TCP:[127.0.0.1:25->127.0.0.1:40000]";
    let trace = |sync: &str| {
        format!(
            "1    1.0 recvfrom(7<{conn}>, \"x\\r\\n.\\r\\n\", 2048, 0, NULL, NULL) = 6\n\
             2 1.1 fdatasync(9</d/queue/db> <unfinished ...>\n\
             {sync}\
             1 1.3 sendto(7<{conn}>, \"250 2.0.0 OK queued as 0123456789abcdef0123\\r\\n\", 45, 0) = 45\n\
             2 1.4 <... fdatasync resumed>) = 0\n"
        )
    };
    let late = check_trace(&trace(""), "/d/queue/");
    assert_eq!((late.acks, late.proven.len()), (1, 0), "{late:?}");
    let other = check_trace(&trace("3 1.2 fsync(10</d/mail/x>) = 0\n"), "/d/queue/");
    assert_eq!((other.acks, other.proven.len()), (1, 0), "{other:?}");
    let good = check_trace(&trace("3 1.2 fsync(10</d/queue/blobs>) = 0\n"), "/d/queue/");
    assert_eq!(good.proven, ["0123456789abcdef0123"], "{good:?}");
}
