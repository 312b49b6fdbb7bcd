//! `mta` relaying to a real Postfix (a private instance, `mta_tests::postfix`) found by MX
//! in the test DNS, each message checked where Postfix stored it:
//!
//! - DKIM-signed by mta, the signature verifies (dkimpy) on Postfix's stored file;
//! - 150 recipients in one message (more than the old default `limits.max_recipients` of
//!   100), 9 of them unknown to Postfix (550 at RCPT): each known mailbox gets it once, and
//!   the sender gets one bounce naming the 9;
//! - Postfix answers `451` for a recipient (an access map), then, after the map changes and
//!   `postfix reload`, the retry delivers it once.

use mta_tests::postfix::{Postfix, PostfixBuilder};
use mta_tests::relay::{REMOTE_BOB, message, sender, start_sender, submit};
use mta_tests::{ALICE, KeptDir, MtaBuilder, TestDns, on_shared_port, secs};

use crate::dkim::{dkimpy, keygen};

/// DNS naming Postfix the MX of remote.test on 127.0.0.2, with `more` records.
fn dns(more: &[&str]) -> TestDns {
    let mut args = vec![
        "--mx-host=remote.test,mx1.remote.test,10",
        "--host-record=mx1.remote.test,127.0.0.2",
    ];
    args.extend_from_slice(more);
    TestDns::start(&args)
}

/// Starts Postfix as mx1.remote.test on 127.0.0.2 and a shared port, as `build` sets it up.
fn postfix(build: impl Fn(PostfixBuilder) -> PostfixBuilder) -> (u16, Postfix) {
    on_shared_port("postfix", |port| {
        build(PostfixBuilder::new("mx1.remote.test", "127.0.0.2", port)).try_start()
    })
}

#[test]
fn dkim_signed_by_mta_verifies_where_postfix_stored_it() {
    let keys = KeptDir::new();
    let rsa = keygen(keys.path(), "example.test", "pf", "rsa");
    let dns = dns(&[&rsa.dnsmasq()]);
    let (port, postfix) = postfix(|b| b.mailboxes(&[REMOTE_BOB]));
    let tx = start_sender(sender(&dns, port, "").toml(&rsa.toml()));
    submit(
        &tx,
        &[REMOTE_BOB],
        &message(REMOTE_BOB, "signed for postfix"),
    );
    let files = postfix.wait_for_mail(REMOTE_BOB, 1, secs(30));
    assert_eq!(files.len(), 1, "{files:?}");
    let stored = std::fs::read(&files[0]).unwrap();
    assert!(
        String::from_utf8_lossy(&stored).contains("DKIM-Signature:"),
        "{}",
        String::from_utf8_lossy(&stored)
    );
    assert_eq!(dkimpy(&files[0], &[&rsa]), ["pass"]);
}

#[test]
fn of_150_recipients_the_known_get_it_once_and_the_unknown_bounce_once() {
    // Fewer unknown than Postfix's smtpd_soft_error_limit (10): past it each refusal is
    // slowed down by a second, and past smtpd_hard_error_limit (20) the session is closed.
    let known: Vec<String> = (0..141).map(|n| format!("k{n:03}@remote.test")).collect();
    let unknown: Vec<String> = (0..9).map(|n| format!("u{n:03}@remote.test")).collect();
    let dns = dns(&[]);
    let known_refs: Vec<&str> = known.iter().map(String::as_str).collect();
    let (port, postfix) = postfix(|b| b.mailboxes(&known_refs));
    let tx = start_sender(sender(&dns, port, ""));
    let all: Vec<&str> = known
        .iter()
        .zip(&unknown)
        .flat_map(|(k, u)| [k.as_str(), u.as_str()])
        .chain(known[9..].iter().map(String::as_str))
        .collect();
    assert_eq!(all.len(), 150);
    submit(&tx, &all, &message("list@remote.test", "to many"));
    for k in &known {
        postfix.wait_for_mail(k, 1, secs(60));
    }
    let bounces = tx.wait_for_mail(ALICE, 1, 60);
    tx.wait_for_empty_queue(secs(60));
    for k in &known {
        assert_eq!(postfix.maildir_new(k).len(), 1, "{k}");
    }
    let bounces_now = tx.maildir_new(ALICE);
    assert_eq!(bounces_now, bounces, "one bounce");
    let dsn = mta_tests::dsn::read_dsn(&bounces[0]);
    let mut failed = dsn.final_recipients();
    failed.sort();
    assert_eq!(failed, unknown);
    let log = postfix.log();
    assert_eq!(
        log.matches("status=sent").count(),
        141,
        "each known mailbox once"
    );
}

#[test]
fn a_451_from_postfix_is_retried_and_delivered_once() {
    let dns = dns(&[]);
    let (port, postfix) = postfix(|b| {
        b.mailboxes(&[REMOTE_BOB])
            .etc_file("access", &format!("{REMOTE_BOB} 451 4.7.1 not now\n"))
            .main_cf(
                "smtpd_recipient_restrictions",
                "check_recipient_access texthash:$config_directory/access",
            )
    });
    // Retries further apart than mta keeps an idle connection (5 s): a Postfix smtpd
    // process keeps the maps it started with for as long as its client stays connected,
    // even across `postfix reload`, and the retry must meet a new one.
    let tx = start_sender(MtaBuilder::new().toml(&format!(
        "{}[outbound]\nport = {port}\n[queue]\nretry_first = \"7s\"\nretry_max = \"7s\"\n",
        dns.config_toml()
    )));
    let id = submit(&tx, &[REMOTE_BOB], &message(REMOTE_BOB, "later"));
    let entry = tx.wait_for_deferral(&id, REMOTE_BOB, 1, secs(30));
    let last = entry["last_result"].as_str().unwrap_or_default();
    assert!(last.contains("451") && last.contains("not now"), "{entry}");
    assert!(postfix.maildir_new(REMOTE_BOB).is_empty());
    postfix.write_etc("access", "");
    postfix.reload();
    postfix.wait_for_mail(REMOTE_BOB, 1, secs(30));
    tx.wait_for_empty_queue(secs(30));
    assert_eq!(postfix.maildir_new(REMOTE_BOB).len(), 1, "delivered once");
}
