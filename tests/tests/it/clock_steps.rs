//! The wall clock stepped under a running server (libfaketime, its offset read from a file
//! the test rewrites; the monotonic clock left alone, as a real step leaves it): a forward
//! step does not make young messages expire, a backward step does not stall deferred ones,
//! and both hold over a restart.

use std::net::TcpListener;
use std::path::PathBuf;

use mta_tests::relay::{message, start_sender, submit};
use mta_tests::{ALICE, MtaBuilder, TestMta, secs};

const FAR: &str = "far@remote.test";

/// libfaketime's preload library, where Debian's `libfaketime` package puts it.
fn libfaketime() -> PathBuf {
    let arch = std::env::consts::ARCH;
    let path = PathBuf::from(format!(
        "/usr/lib/{arch}-linux-gnu/faketime/libfaketime.so.1"
    ));
    assert!(
        path.is_file(),
        "{} is missing: apt-get install libfaketime (scripts/test.sh does)",
        path.display()
    );
    path
}

/// A port on 127.0.0.1 that nothing listens on: the smarthost there refuses every
/// connection, so every attempt defers.
fn closed_port() -> u16 {
    let probe = TcpListener::bind("127.0.0.1:0").expect("bind a probe");
    probe.local_addr().expect("probe address").port()
}

/// A sender whose wall clock is offset by what [`step`] last wrote (`+6d`, `-2h`; none at
/// first), relaying everything to a smarthost that is down; retries after `retry`.
///
/// The offset file is `data/faketime`, named relative to the server's working directory
/// (its temp dir): inside the data dir, where the sandbox lets the server read.
fn sender(retry: &str) -> TestMta {
    start_sender(
        MtaBuilder::new()
            .toml(&format!(
                "[outbound]\nrelay = \"127.0.0.1:{}\"\n\
                 [queue]\nretry_first = \"{retry}\"\nretry_max = \"{retry}\"\n",
                closed_port()
            ))
            .env("LD_PRELOAD", &libfaketime().display().to_string())
            .env("FAKETIME_TIMESTAMP_FILE", "data/faketime")
            .env("FAKETIME_NO_CACHE", "1")
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    )
}

/// Steps the server's wall clock `offset_secs` away from the real one (libfaketime's
/// `offset` notation: `+6d`, `-2h`), and waits until its log shows the new time, so that
/// the step really happened.
fn step(mta: &TestMta, offset: &str, offset_secs: i64) {
    std::fs::write(mta.data_dir().join("faketime"), format!("{offset}\n"))
        .expect("write the offset file");
    let hours = [log_hour(offset_secs), log_hour(offset_secs + 60)];
    // Any connection makes the server log a line with its time.
    mta.wait_logged(secs(10), &format!("log lines dated {hours:?}"), || {
        let _ = std::net::TcpStream::connect(mta.smtp_addr());
        mta.log()
            .lines()
            .any(|l| hours.iter().any(|h| l.starts_with(h.as_str())))
    });
}

/// The UTC hour `offset_secs` from now, as the log starts its lines (`2026-12-13T00:`).
fn log_hour(offset_secs: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64;
    let at = now + offset_secs;
    let hour = at.rem_euclid(86_400) / 3600;
    let days = at.div_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{hour:02}:")
}

fn attempts(mta: &TestMta, id: &str) -> u64 {
    mta.queued_recipient(id, FAR)
        .and_then(|r| r["attempts"].as_u64())
        .unwrap_or(0)
}

fn assert_still_pending(mta: &TestMta, id: &str) {
    let rcpt = mta
        .queued_recipient(id, FAR)
        .unwrap_or_else(|| panic!("{id} left the queue\n{}", mta.log()));
    assert_eq!(rcpt["state"], "pending", "{rcpt}\n{}", mta.log());
    assert!(
        !mta.log().contains("5.4.7"),
        "a young message expired\n{}",
        mta.log()
    );
    assert!(mta.maildir_new(ALICE).is_empty(), "a bounce reached alice");
}

#[test]
fn forward_step_does_not_expire_young_mail_even_over_a_restart() {
    let mut mta = sender("1s");
    let id = submit(&mta, &[FAR], &message(FAR, "forward step"));
    mta.wait_for_deferral(&id, FAR, 1, secs(30));

    // Six days forward: more than queue.max_lifetime (5 days) for a 1-second-old message.
    step(&mta, "+6d", 6 * 86_400);
    let before = attempts(&mta, &id);
    mta.wait_for_deferral(&id, FAR, before + 2, secs(30));
    assert_still_pending(&mta, &id);

    // Restarted on the stepped clock, it is still young.
    mta.restart();
    let before = attempts(&mta, &id);
    mta.wait_for_deferral(&id, FAR, before + 2, secs(30));
    assert_still_pending(&mta, &id);
}

#[test]
fn backward_step_does_not_stall_deferred_mail() {
    let mta = sender("2s");
    let id = submit(&mta, &[FAR], &message(FAR, "backward step"));
    mta.wait_for_deferral(&id, FAR, 1, secs(30));

    // Two hours back (a clock that was ahead, corrected): the next attempt is still due
    // 2 s after the last one, not 2 hours and 2 s.
    step(&mta, "-2h", -2 * 3600);
    let before = attempts(&mta, &id);
    mta.wait_for_deferral(&id, FAR, before + 2, secs(30));
    assert_still_pending(&mta, &id);
    // A message accepted after the step gets a queue id after the earlier one.
    let later = submit(&mta, &[FAR], &message(FAR, "after the step"));
    assert!(later > id, "queue id {later} sorts before {id}");
}
