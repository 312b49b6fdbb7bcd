//! Storage faults: the data dir on a small tmpfs that fills up, in bytes or in
//! inodes, while senders keep sending. Every reply is `250` or a 4xx, never a 5xx; the server
//! does not crash; once space is freed it accepts mail again without a restart; and every
//! message that got `250` is delivered. Each test prints its figures.
//!
//! Mounting a tmpfs needs root: where that is not permitted the tests say so and skip.

use std::collections::HashSet;

use mta_tests::faults::{
    Sent, Tally, Tmpfs, delivered_tags, message, send_until_refused, try_send,
};
use mta_tests::{SmtpClient, TestMta, base_config, secs};

const BOB: &str = "bob@example.test";
const FROM: &str = "sender@remote.test";
/// Mostly under sled's 128 KiB blob threshold, some over it (blob files need inodes).
const SIZES: &[usize] = &[2_000, 60_000, 150_000, 10_000, 200_000, 30_000];

/// A server whose data dir is a tmpfs of its own. Fields drop in order: the server is
/// killed before the file system is unmounted.
struct OnTmpfs {
    mta: TestMta,
    fs: Tmpfs,
}

/// Starts a server on a fresh tmpfs (`options`) with fast retries and the given floors;
/// Panics, saying why, when this machine does not let us mount (the suite runs as root).
fn on_tmpfs(test: &str, options: &str, min_free_space: u64, min_free_inodes: u64) -> OnTmpfs {
    let extra = format!(
        "[queue]\nretry_first = \"1s\"\nretry_max = \"2s\"\n\
         min_free_space = {min_free_space}\nmin_free_inodes = {min_free_inodes}\n"
    );
    let mut mounted = None;
    let mta = TestMta::start_config(|dir| {
        mounted = Some(Tmpfs::mount(&dir.join("data"), options));
        base_config(dir, &extra)
    });
    match mounted.expect("the config closure ran") {
        Ok(fs) => {
            mta.add_user(BOB, "bob-password-1");
            OnTmpfs { mta, fs }
        }
        Err(why) => {
            drop(mta);
            panic!("{test} needs to mount a tmpfs (run the suite as root): {why}");
        }
    }
}

/// Truncates the ballast file so that about `free` bytes are free again.
fn leave_free(fs: &Tmpfs, name: &str, written: u64, free: u64) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(fs.path().join(name))
        .expect("open the ballast");
    f.set_len(written.saturating_sub(free))
        .expect("shrink the ballast");
}

/// Panics unless every refusal is a 4xx (no 5xx caused by disk) and no connection broke.
fn assert_only_4xx(test: &str, tally: &Tally) {
    assert!(
        tally.broken.is_empty(),
        "{test}: connections broke: {:?}",
        tally.broken
    );
    for (tag, stage, reply) in &tally.refused {
        let allowed = match *stage {
            // The floor, or the store still unusable after an error.
            "MAIL" => reply.matches(452, Some("4.3.1")) || reply.matches(451, Some("4.3.0")),
            // A write or flush error: for lack of space, or any other.
            "." => reply.matches(451, Some("4.3.0")) || reply.matches(452, Some("4.3.1")),
            _ => false,
        };
        assert!(allowed, "{test}: {tag} refused at {stage} with {reply}");
    }
}

/// Sends one message on a new connection, every 100 ms, until it is accepted or `timeout`
/// has passed; returns its tag when accepted.
fn send_after_freeing(mta: &TestMta, tag: &str, timeout: std::time::Duration) -> Option<String> {
    let m = message(tag, FROM, BOB, 3_000);
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let mut c = SmtpClient::connect(mta.smtp_addr());
        c.reply("the greeting");
        c.expect("EHLO sender.test", 250);
        let sent = try_send(&mut c, FROM, BOB, &m);
        let _ = c.send_line("QUIT");
        match sent {
            Sent::Accepted => return Some(tag.to_string()),
            Sent::Refused(_, r) if r.code / 100 == 4 => {}
            other => panic!("{tag}: after freeing space: {other:?}"),
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// After space is freed, new mail must be accepted without a restart: the store is
/// reopened in place. The one exception is sled wedged by the error (a flush stuck inside
/// it, logged as such): then only a new process can open the store, and this restarts the
/// server to check that nothing was lost. Returns the new message's tag and whether a
/// restart was needed.
fn accepted_again(mta: &mut TestMta, test: &str) -> (String, bool) {
    let tag = format!("{test}-after");
    if let Some(tag) = send_after_freeing(mta, &tag, secs(10)) {
        return (tag, false);
    }
    assert!(
        mta.log().contains("queue store stuck inside sled"),
        "{test}: mail still refused 10 s after space was freed, and sled is not stuck"
    );
    mta.kill9();
    mta.restart();
    let tag = send_after_freeing(mta, &tag, secs(10))
        .unwrap_or_else(|| panic!("{test}: mail refused even after a restart"));
    (tag, true)
}

/// Waits until every accepted message is in bob's Maildir; returns (delivered files,
/// duplicates among the accepted).
fn wait_all_delivered(mta: &TestMta, accepted: &[String]) -> (usize, usize) {
    let want: HashSet<&str> = accepted.iter().map(String::as_str).collect();
    mta.wait_logged(secs(60), "every accepted message in the Maildir", || {
        let got = delivered_tags(&mta.maildir_new(BOB));
        let got: HashSet<&str> = got.iter().map(String::as_str).collect();
        want.is_subset(&got)
    });
    let tags = delivered_tags(&mta.maildir_new(BOB));
    let unique: HashSet<&String> = tags.iter().collect();
    let dups = tags.iter().filter(|t| want.contains(t.as_str())).count() - want.len();
    (unique.len(), dups)
}

fn figures(test: &str, tally: &Tally) -> String {
    let at = |s: &str| tally.refused.iter().filter(|r| r.1 == s).count();
    let mut codes: Vec<String> = tally.refused.iter().map(|r| r.2.to_string()).collect();
    codes.sort();
    codes.dedup();
    format!(
        "{test}: {} accepted, {} refused ({} at MAIL, {} at the dot), replies {codes:?}",
        tally.accepted.len(),
        tally.refused.len(),
        at("MAIL"),
        at(".")
    )
}

/// With no floor the disk fills for real: messages that no longer fit are refused at the
/// dot (452 before anything is written, or 451/452 when a write or flush fails), Maildir
/// deliveries are deferred, and mail is accepted again once space is back.
#[test]
fn disk_full_is_4xx_and_recovers_without_restart() {
    let test = "disk_full";
    let s = on_tmpfs(test, "size=32m", 0, 0);
    let written = s.fs.fill_bytes("ballast");
    leave_free(&s.fs, "ballast", written, 10 * 1024 * 1024);
    let tally = send_until_refused(s.mta.smtp_addr(), "full", 4, SIZES, (FROM, BOB), 3, 300);
    println!("{}", figures(test, &tally));
    assert_only_4xx(test, &tally);
    assert!(!tally.refused.is_empty(), "{test}: the disk never filled");
    assert!(!tally.accepted.is_empty(), "{test}: nothing was accepted");
    std::fs::remove_file(s.fs.path().join("ballast")).expect("remove the ballast");
    finish(test, s, tally);
}

/// Below `min_free_space` new mail is refused at MAIL FROM with 452 4.3.1, before the
/// client sends anything; freeing space lets it in again at once.
#[test]
fn free_space_floor_refuses_at_mail_from() {
    let test = "free_space_floor";
    let floor = 8 * 1024 * 1024;
    let mut s = on_tmpfs(test, "size=32m", floor, 0);
    let written = s.fs.fill_bytes("ballast");
    leave_free(&s.fs, "ballast", written, floor + 3 * 1024 * 1024);
    let tally = send_until_refused(s.mta.smtp_addr(), "floor", 4, SIZES, (FROM, BOB), 2, 300);
    println!("{}", figures(test, &tally));
    assert_only_4xx(test, &tally);
    assert!(
        !tally.refused.is_empty(),
        "{test}: the floor was never reached"
    );
    for (tag, stage, reply) in &tally.refused {
        assert!(
            *stage == "MAIL" && reply.matches(452, Some("4.3.1")),
            "{test}: {tag} refused at {stage} with {reply}: above the floor nothing may fail"
        );
    }
    assert!(
        !s.mta.log().contains("queue store failed"),
        "{test}: the floor should keep the store from ever failing"
    );
    std::fs::remove_file(s.fs.path().join("ballast")).expect("remove the ballast");
    let tag = send_after_freeing(&s.mta, "floor-after", secs(10));
    assert!(tag.is_some(), "{test}: refused although space is back");
    let mut tally = tally;
    tally.accepted.extend(tag);
    let (delivered, dups) = wait_all_delivered(&s.mta, &tally.accepted);
    println!(
        "{test}: all {} accepted delivered ({delivered} distinct, {dups} duplicates)",
        tally.accepted.len()
    );
    assert!(
        s.mta.stop().success(),
        "{test}: mta serve did not stop cleanly"
    );
}

/// Out of inodes (no inode floor): blob files for large messages and Maildir files cannot
/// be created. Every reply is still 250 or 4xx, and everything accepted arrives once inodes
/// are freed.
#[test]
fn inode_exhaustion_is_4xx_and_recovers_without_restart() {
    let test = "inodes";
    let s = on_tmpfs(test, "size=64m,nr_inodes=400", 0, 0);
    let made = s.fs.fill_inodes("ballast");
    // Leave some inodes: mail gets through until they run out.
    for n in (made.saturating_sub(40))..made {
        std::fs::remove_file(s.fs.path().join("ballast").join(n.to_string()))
            .expect("free an inode");
    }
    let tally = send_until_refused(s.mta.smtp_addr(), "inode", 4, SIZES, (FROM, BOB), 3, 300);
    println!("{}", figures(test, &tally));
    assert_only_4xx(test, &tally);
    assert!(
        !tally.refused.is_empty(),
        "{test}: the inodes never ran out"
    );
    assert!(!tally.accepted.is_empty(), "{test}: nothing was accepted");
    std::fs::remove_dir_all(s.fs.path().join("ballast")).expect("remove the ballast");
    finish(test, s, tally);
}

/// Once space is back: new mail accepted without a restart (or, if sled was wedged, after
/// one), every accepted message delivered, and a clean stop.
fn finish(test: &str, mut s: OnTmpfs, mut tally: Tally) {
    let (tag, restarted) = accepted_again(&mut s.mta, test);
    tally.accepted.push(tag);
    let (delivered, dups) = wait_all_delivered(&s.mta, &tally.accepted);
    let log = s.mta.log();
    println!(
        "{test}: all {} accepted delivered ({delivered} distinct in the Maildir, {dups} \
         duplicates); store errors {}, reopened in place {} time(s), restart needed: {restarted}",
        tally.accepted.len(),
        log.matches("queue store failed").count(),
        log.matches("queue store reopened after an error").count(),
    );
    assert!(
        s.mta.stop().success(),
        "{test}: mta serve did not stop cleanly"
    );
}

/// Point 8: a queue record that no longer decodes is moved aside (to the store's `corrupt`
/// tree, kept for the operator) with a log line naming it; every other message is delivered.
#[test]
fn damaged_record_is_set_aside_and_the_rest_delivered() {
    let mut mta = TestMta::start("[queue]\nretry_first = \"1s\"\nretry_max = \"2s\"\n");
    mta.add_user(BOB, "bob-password-1");
    // Hold delivery: a regular file where bob's mail directory must go.
    let domain_dir = mta.data_dir().join("mail").join("example.test");
    std::fs::create_dir_all(&domain_dir).expect("mkdir");
    let blocker = domain_dir.join("bob");
    std::fs::write(&blocker, b"not a directory").expect("write the blocker");
    let mut c = SmtpClient::connect(mta.smtp_addr());
    c.reply("the greeting");
    c.expect("EHLO sender.test", 250);
    let ids: Vec<String> = (0..4)
        .map(|n| {
            let m = message(&format!("rec-{n}"), FROM, BOB, 2_000);
            let reply = c.send_message(FROM, &[BOB], &m);
            assert_eq!(reply.code, 250, "{}", c.transcript());
            mta_tests::queue_id(&reply.to_string())
        })
        .collect();
    c.expect("QUIT", 221);
    assert!(mta.stop().success(), "mta serve did not stop cleanly");

    // Damage one record the way a disk or a bad edit might: it no longer decodes.
    let damaged = &ids[1];
    {
        let db = sled::open(mta.data_dir().join("queue")).expect("open the stopped store");
        let envelopes = db.open_tree("envelopes").expect("envelopes tree");
        assert!(
            envelopes.get(damaged).expect("read").is_some(),
            "{damaged} is queued"
        );
        envelopes
            .insert(damaged.as_bytes(), &b"{\"envelope\": 42"[..])
            .expect("damage the record");
        db.flush().expect("flush");
    }
    std::fs::remove_file(&blocker).expect("remove the blocker");
    mta.restart();

    mta.wait_for_mail(BOB, 3, 30);
    let tags = delivered_tags(&mta.maildir_new(BOB));
    for (n, id) in ids.iter().enumerate() {
        let tag = format!("rec-{n}");
        let want = usize::from(id != damaged);
        assert_eq!(
            tags.iter().filter(|t| **t == tag).count(),
            want,
            "{tag} ({id}) delivered {want} time(s): {tags:?}"
        );
    }
    // The damaged record is met when it is due (a restart keeps due times), which may be
    // after the others are delivered.
    mta.wait_logged(secs(30), "a log line naming the damaged record", || {
        mta.log()
            .lines()
            .any(|l| l.contains("corrupt queue record moved aside") && l.contains(damaged.as_str()))
    });
    mta.wait_for_empty_queue(secs(20));
    let listed = mta.queue_json();
    let errors = listed["errors"].as_array().expect("errors is an array");
    assert!(
        errors
            .iter()
            .any(|e| e.as_str().is_some_and(|e| e.contains(damaged.as_str()))),
        "mta queue list names the record set aside: {listed}"
    );
    println!(
        "corrupt record: {damaged} set aside and listed, the other {} delivered once each",
        ids.len() - 1
    );
}

/// Point 8: a queue store that is garbage stops start-up with a clear message and a
/// non-zero exit, and not one byte of it is changed.
#[test]
fn garbage_store_stops_start_up_and_changes_nothing() {
    let mut mta = TestMta::start("");
    assert!(mta.stop().success(), "mta serve did not stop cleanly");
    let queue = mta.data_dir().join("queue");
    let log = queue.join("db");
    let len = std::fs::metadata(&log).expect("the store has a log").len() as usize;
    // Deterministic noise (xorshift), as long as the log was.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let noise: Vec<u8> = (0..len.max(4096))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&log, &noise).expect("write the noise");
    let before = snapshot(&queue);
    let config = std::fs::read_to_string(mta.config_path()).expect("read the config");
    let (_, out) = mta_tests::serve_expecting_failure(mta.dir(), &config);
    assert_ne!(
        out.status.code(),
        Some(0),
        "mta serve started on garbage: {out}"
    );
    assert!(
        out.stderr.contains("is damaged") && out.stderr.contains("nothing in it was changed"),
        "no clear message: {out}"
    );
    assert!(
        out.stderr.contains("Corrupt store"),
        "no pointer to the docs: {out}"
    );
    assert_eq!(snapshot(&queue), before, "the damaged store was changed");
    println!(
        "garbage store: mta serve exited with {} and changed nothing",
        out.status
    );
}

/// Every file under `dir` with its bytes, sorted by path.
fn snapshot(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push((path.clone(), mta_tests::read_crlf(&path)));
            }
        }
    }
    out.sort();
    out
}

/// Point 5, end to end: when the flush after a message fails (here: sled's log renamed away
/// under the running server, so the `fdatasync` of it fails), that message gets
/// `451 4.3.0`, never 250; new mail is refused with a 4xx while the store cannot be
/// reopened, and accepted again, without a restart, once it can.
#[test]
fn flush_error_is_451_and_the_store_reopens_in_place() {
    let mta = TestMta::start("[queue]\nretry_first = \"1s\"\nretry_max = \"2s\"\n");
    mta.add_user(BOB, "bob-password-1");
    let mut c = SmtpClient::connect(mta.smtp_addr());
    c.reply("the greeting");
    c.expect("EHLO sender.test", 250);
    let mut accepted = Vec::new();
    assert_eq!(
        try_send(&mut c, FROM, BOB, &message("flush-0", FROM, BOB, 2_000)),
        Sent::Accepted
    );
    accepted.push("flush-0".to_string());

    let log = mta.data_dir().join("queue").join("db");
    let away = mta.data_dir().join("queue").join("db.away");
    std::fs::rename(&log, &away).expect("move the log away");
    let sent = try_send(&mut c, FROM, BOB, &message("flush-1", FROM, BOB, 2_000));
    match &sent {
        Sent::Refused(".", r) => assert!(r.matches(451, Some("4.3.0")), "{r}"),
        other => panic!("the message whose flush failed got {other:?}"),
    }
    // The store is given up and cannot be reopened while its log is gone.
    match try_send(&mut c, FROM, BOB, &message("flush-2", FROM, BOB, 2_000)) {
        Sent::Refused("MAIL", r) => assert!(r.code / 100 == 4, "{r}"),
        other => panic!("with the store given up: {other:?}"),
    }
    assert!(!log.exists(), "no empty log was made in its place");
    std::fs::rename(&away, &log).expect("put the log back");
    let _ = c.send_line("QUIT");
    let tag = send_after_freeing(&mta, "flush-3", secs(10));
    accepted.push(tag.expect("accepted again without a restart"));
    let (delivered, dups) = wait_all_delivered(&mta, &accepted);
    let reopened = mta.log().contains("queue store reopened after an error");
    assert!(reopened, "the store was not reopened in place");
    println!(
        "flush error: 451 4.3.0 at the dot, store reopened in place; {} accepted delivered \
         ({delivered} distinct in the Maildir, {dups} duplicates)",
        accepted.len()
    );
}
