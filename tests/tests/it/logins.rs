//! Password guessing against a real server, from several loopback addresses: concurrent
//! guesses from one address are held to the limit, a stranger cannot lock the owner out,
//! `mta auth blocked|unblock` list and clear what the server holds, a flood of attempts is
//! answered `454 4.7.0` past the bounded line of password checks, and the control socket
//! refuses a user other than root and mta's own.

use std::net::IpAddr;
use std::sync::{Arc, Barrier};

use mta_tests::{ALICE, ALICE_PASSWORD, Reply, SmtpClient, TestMta};

fn ip(text: &str) -> IpAddr {
    text.parse().expect("an IP address")
}

/// A TLS session from `source`, after EHLO.
fn session(mta: &TestMta, source: &str) -> SmtpClient {
    let mut c = SmtpClient::connect_tls_from(mta.submissions_addr(), ip(source), &mta.cert_path());
    c.reply("the greeting");
    c.expect("EHLO client.test", 250);
    c
}

/// One AUTH from `source` in a new session.
fn login(mta: &TestMta, source: &str, user: &str, password: &str) -> Reply {
    session(mta, source).auth_plain(user, password)
}

/// `n` sessions from `source` say EHLO, then all send their AUTH at once; the replies.
fn at_once(
    mta: &TestMta,
    source: &'static str,
    n: usize,
    user: impl Fn(usize) -> String,
) -> Vec<Reply> {
    let ready = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let mut c = session(mta, source);
            let (ready, user) = (ready.clone(), user(i));
            std::thread::spawn(move || {
                ready.wait();
                c.auth_plain(&user, "wrong-password-1")
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("client thread"))
        .collect()
}

fn count(replies: &[Reply], code: u16) -> usize {
    replies
        .iter()
        .filter(|r| {
            r.code == code && r.enhanced() == Some(if code == 535 { "5.7.8" } else { "4.7.0" })
        })
        .count()
}

#[test]
fn thirty_concurrent_guesses_from_one_address_check_at_most_the_limit() {
    let mta = TestMta::start("[limits]\nmax_sessions_per_ip = 40\nauth_failures = 5\n");
    mta.add_user(ALICE, ALICE_PASSWORD);
    let replies = at_once(&mta, "127.0.0.2", 30, |_| ALICE.to_string());
    let (checked, blocked, busy) = (
        count(&replies, 535),
        count(&replies, 421),
        count(&replies, 454),
    );
    assert!(
        (1..=5).contains(&checked),
        "{checked} passwords checked against a limit of 5: {replies:?}"
    );
    assert_eq!(checked + blocked + busy, 30, "{replies:?}");
    // Once the five failures are in, the address is blocked, even with the right password.
    let r = login(&mta, "127.0.0.2", ALICE, ALICE_PASSWORD);
    assert!(r.matches(421, Some("4.7.0")), "{r}");
}

#[test]
fn a_stranger_cannot_lock_the_owner_out() {
    let mta = TestMta::start("[limits]\nauth_failures = 3\n");
    mta.add_user(ALICE, ALICE_PASSWORD);
    // The owner's usual address.
    assert_eq!(login(&mta, "127.0.0.1", ALICE, ALICE_PASSWORD).code, 235);
    // A stranger hammers the account until its own address is blocked.
    for i in 0..3 {
        let r = login(&mta, "127.0.0.2", ALICE, &format!("guess-{i}-xxxx"));
        assert!(r.matches(535, Some("5.7.8")), "guess {i}: {r}");
    }
    let r = login(&mta, "127.0.0.2", ALICE, "guess-3-xxxx");
    assert!(r.matches(421, Some("4.7.0")), "{r}");
    // The owner gets in from home at once, and from a new address after a delay.
    assert_eq!(login(&mta, "127.0.0.1", ALICE, ALICE_PASSWORD).code, 235);
    assert_eq!(login(&mta, "127.0.0.3", ALICE, ALICE_PASSWORD).code, 235);
    let log = mta.log();
    let delayed: Vec<&str> = log.lines().filter(|l| l.contains("AUTH delayed")).collect();
    assert!(
        delayed.iter().any(|l| l.contains("127.0.0.3")),
        "the new address waited: {delayed:?}"
    );
    assert!(
        !delayed.iter().any(|l| l.contains("ip=127.0.0.1 ")),
        "the trusted address did not: {delayed:?}"
    );
}

#[test]
fn blocks_are_listed_and_cleared_by_the_operator() {
    let mta = TestMta::start("[limits]\nauth_failures = 2\n");
    mta.add_user(ALICE, ALICE_PASSWORD);
    let none = mta.mta(&["auth", "blocked"], b"");
    none.assert_success("mta auth blocked");
    assert!(
        none.stdout
            .contains("no address is blocked and no account is delayed"),
        "{none}"
    );
    for i in 0..2 {
        login(&mta, "127.0.0.4", ALICE, &format!("guess-{i}-xxxx"));
    }
    assert_eq!(login(&mta, "127.0.0.4", ALICE, ALICE_PASSWORD).code, 421);
    let text = mta.mta(&["auth", "blocked"], b"");
    text.assert_success("mta auth blocked");
    assert!(
        text.stdout
            .contains("address 127.0.0.4  blocked  2 failures  until "),
        "{text}"
    );
    assert!(
        text.stdout
            .contains(&format!("account {ALICE}  delayed 2s  2 failures")),
        "{text}"
    );
    let json = mta.mta(&["auth", "blocked", "--json"], b"");
    json.assert_success("mta auth blocked --json");
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(v["addresses"][0]["address"], "127.0.0.4", "{v}");
    assert_eq!(v["accounts"][0]["account"], ALICE, "{v}");
    assert!(v["addresses"][0]["until"].as_u64().is_some(), "{v}");

    let out = mta.mta(&["auth", "unblock", "127.0.0.4"], b"");
    out.assert_success("mta auth unblock");
    assert!(out.stdout.contains("unblocked 127.0.0.4"), "{out}");
    let out = mta.mta(&["auth", "unblock", ALICE], b"");
    assert!(out.stdout.contains(&format!("unblocked {ALICE}")), "{out}");
    assert_eq!(login(&mta, "127.0.0.4", ALICE, ALICE_PASSWORD).code, 235);
    let after = mta.mta(&["auth", "blocked"], b"");
    assert!(after.stdout.contains("no address is blocked"), "{after}");
}

#[test]
fn without_a_server_mta_auth_says_so() {
    let mut mta = TestMta::start("");
    mta.stop();
    let out = mta.mta(&["auth", "blocked"], b"");
    assert_eq!(out.code(), 1, "{out}");
    assert!(out.stderr.contains("no running server found"), "{out}");
    assert!(!out.stdout.contains("no address is blocked"), "{out}");
}

/// More attempts at once than the checks that run (one per CPU, at most 8) and the 64 that
/// may wait: the rest get `454` at once.
#[test]
fn a_hundred_concurrent_attempts_get_454_past_the_line_of_checks() {
    let mta = TestMta::start(
        "[limits]\nmax_sessions_per_ip = 150\nmax_sessions_per_network = 150\nauth_failures = 100\n",
    );
    let replies = at_once(&mta, "127.0.0.5", 100, |i| format!("u{i}@example.test"));
    let (checked, busy) = (count(&replies, 535), count(&replies, 454));
    assert_eq!(checked + busy, 100, "{replies:?}");
    assert!(
        busy >= 1,
        "every attempt was checked or waited: {replies:?}"
    );
    assert!(
        mta.log().contains("too many password checks waiting"),
        "the refusals are logged"
    );
    // The session stays usable after a 454: a later attempt is checked.
    let mut c = session(&mta, "127.0.0.5");
    assert_eq!(c.auth_plain("x@example.test", "wrong-password-1").code, 535);
}

#[test]
fn the_control_socket_refuses_other_users() {
    use std::os::unix::fs::PermissionsExt;
    let mta = TestMta::start("");
    // Open every fence but the peer check, as a careless chmod would.
    let open = |path: &std::path::Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
    };
    open(mta.dir(), 0o755);
    open(mta.config_path(), 0o644);
    open(&mta.data_dir(), 0o755);
    open(&mta.data_dir().join("control.sock"), 0o666);
    let as_nobody = |args: &[&str]| {
        let mut cmd = std::process::Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(mta_tests::mta_bin())
            .args(args)
            .arg("--config")
            .arg(mta.config_path());
        mta_tests::run("mta as nobody", &mut cmd, b"", mta_tests::secs(20))
    };
    let out = as_nobody(&["reload"]);
    assert_eq!(out.code(), 1, "{out}");
    assert!(
        out.stderr
            .contains("permission denied: uid 65534 may not use the control socket"),
        "{out}"
    );
    let out = as_nobody(&["auth", "blocked"]);
    assert_eq!(out.code(), 1, "{out}");
    assert!(out.stderr.contains("permission denied: uid 65534"), "{out}");
    mta.wait_logged(mta_tests::secs(10), "the refusal in the log", || {
        mta.log().contains("control socket: connection refused")
    });
    assert!(
        !mta.log().contains("reloaded"),
        "nobody's reload was not carried out"
    );
    // Root still may.
    mta.mta(&["reload"], b"")
        .assert_success("mta reload as root");
}
