//! `outbound.relay`: all remote mail goes to a smarthost, a second `mta` here
//! (`smarthost.test` on 127.0.0.2, its certificate trusted through `relay_ca_file`), where
//! alice@example.test is a user with her own password. The smarthost relays on to the
//! final MX for anything.test (`mx.anything.test` on 127.0.0.3:P).

use mta_tests::relay::{receiver, sender, split_first_field, start_sender, submit};
use mta_tests::{
    ALICE, MtaBuilder, TestDns, TestMta, on_shared_port, read_delivered, secs, shared_port,
};

/// Alice's password at the smarthost (not the one she uses at the sender).
const RELAY_PASSWORD: &str = "smarthost-password-1";
/// The recipient, in a third domain.
const DAVE: &str = "dave@anything.test";
/// The variable the sender reads the smarthost password from.
const PASSWORD_VAR: &str = "MTA_TEST_RELAY_PASSWORD";

fn dns() -> TestDns {
    TestDns::start(&[
        "--host-record=smarthost.test,127.0.0.2",
        "--mx-host=anything.test,mx.anything.test,10",
        "--host-record=mx.anything.test,127.0.0.3",
    ])
}

/// The smarthost: submission (STARTTLS) and submissions (implicit TLS) on 127.0.0.2, MX
/// hosts on `port`, alice as its user.
fn smarthost(dns: &TestDns, port: u16) -> TestMta {
    let mta = MtaBuilder::new()
        .hostname("smarthost.test")
        .local_domains(&["example.test"])
        .smtp(&[])
        .submission(&["127.0.0.2:0"])
        .submissions(&["127.0.0.2:0"])
        .toml(&format!(
            "{}[outbound]\nport = {port}\n[queue]\nretry_first = \"1s\"\nretry_max = \"2s\"\n",
            dns.config_toml()
        ))
        .start();
    mta.add_user(ALICE, RELAY_PASSWORD);
    mta
}

/// `[outbound]` keys for the smarthost at `port` with `tls`, alice's login and `extra`.
fn relay_keys(port: u16, tls: &str, extra: &str) -> String {
    format!(
        "relay = \"smarthost.test:{port}\"\nrelay_tls = \"{tls}\"\n\
         relay_user = \"{ALICE}\"\n{extra}"
    )
}

fn ca_file(mta: &TestMta) -> String {
    format!(
        "relay_ca_file = {:?}\n",
        mta.cert_path().display().to_string()
    )
}

fn message() -> Vec<u8> {
    mta_tests::relay::message(DAVE, "via the smarthost")
}

#[test]
fn smarthost_with_starttls_and_auth_from_the_environment() {
    let dns = dns();
    let (port, final_mx) = on_shared_port("the final MX", |p| {
        let mx = receiver("mx.anything.test", &["anything.test"], "127.0.0.3", p).try_start()?;
        mx.add_user(DAVE, "dave-password-1");
        Ok(mx)
    });
    let hub = smarthost(&dns, port);
    let keys = relay_keys(
        hub.submission_addr().port(),
        "starttls",
        &format!("relay_password_env = \"{PASSWORD_VAR}\"\n{}", ca_file(&hub)),
    );
    let tx = start_sender(sender(&dns, port, &keys).env(PASSWORD_VAR, RELAY_PASSWORD));
    let sent = message();
    let id = submit(&tx, &[DAVE], &sent);

    let files = final_mx.wait_for_mail(DAVE, 1, 15);
    let d = read_delivered(&files[0]);
    assert_eq!(d.return_path, format!("Return-Path: <{ALICE}>"));
    assert!(
        d.received.starts_with("Received: from smarthost.test (")
            && d.received
                .contains("by mx.anything.test (mta) with ESMTPS id "),
        "{}",
        d.received
    );
    let (at_hub, rest) = split_first_field(&d.rest, "Received");
    assert!(
        at_hub.starts_with("Received: from mx.example.test (")
            && at_hub.contains("\tby smarthost.test (mta) with ESMTPSA id ")
            && at_hub.contains("(using TLSv1.3 with cipher "),
        "the sender logged in at the smarthost over TLS: {at_hub}"
    );
    let (at_sender, rest) = split_first_field(rest, "Received");
    assert!(
        at_sender.contains(&format!("by mx.example.test (mta) with ESMTPSA id {id}")),
        "{at_sender}"
    );
    mta_tests::assert_same_bytes("the message", rest, &sent);
    tx.wait_for_empty_queue(secs(10));
    hub.wait_for_empty_queue(secs(10));
    // The sender went to the smarthost, never to the final MX itself.
    let log = tx.log();
    assert!(log.contains("mx=smarthost.test"), "{log}");
    assert!(!log.contains("mx.anything.test"), "{log}");
}

#[test]
fn smarthost_with_implicit_tls_and_a_password_file() {
    let dns = dns();
    // Nothing listens at the final MX: the message waits in the smarthost's queue.
    let hub = smarthost(&dns, shared_port());
    let pass = hub.dir().join("relay.pass");
    std::fs::write(&pass, format!("{RELAY_PASSWORD}\nsecond line is ignored\n")).unwrap();
    let keys = relay_keys(
        hub.submissions_addr().port(),
        "implicit",
        &format!(
            "relay_password_file = {:?}\n{}",
            pass.display().to_string(),
            ca_file(&hub)
        ),
    );
    let tx = start_sender(sender(&dns, shared_port(), &keys));
    // Alice, local at the sender, stays there: only dave goes to the smarthost.
    let id = submit(&tx, &[DAVE, ALICE], &message());

    tx.wait_for_empty_queue(secs(10));
    assert_eq!(tx.maildir_new(ALICE).len(), 1, "alice's copy stays local");
    let mut queued = None;
    hub.wait_logged(secs(10), "the message in the smarthost's queue", || {
        queued = hub.queue_json()["records"]
            .as_array()
            .and_then(|r| r.first().cloned());
        queued.is_some()
    });
    let record = queued.expect("a record");
    let env = &record["envelope"];
    assert_eq!(env["sender"], format!("<{ALICE}>"), "{record}");
    let rcpts: Vec<&str> = env["recipients"]
        .as_array()
        .expect("recipients is an array")
        .iter()
        .filter_map(|r| r["address"].as_str())
        .collect();
    assert_eq!(rcpts, [DAVE], "{record}");
    assert!(hub.maildir_new(ALICE).is_empty());
    let origin = &env["origin"];
    assert_eq!(origin["listener"], "submissions", "{record}");
    assert_eq!(origin["auth_user"], ALICE, "{record}");
    assert_eq!(origin["helo"], "mx.example.test", "{record}");
    assert!(
        origin["tls"]
            .as_str()
            .is_some_and(|t| t.starts_with("TLSv1.3 ")),
        "{record}"
    );
    let show = hub.mta(
        &["queue", "show", env["id"].as_str().unwrap(), "--json"],
        b"",
    );
    show.assert_success("mta queue show");
    assert!(
        show.stdout.contains(&format!("with ESMTPSA id {id}")),
        "the sender's Received header travels along: {show}"
    );
}

#[test]
fn smarthost_with_an_untrusted_certificate_is_not_used() {
    let dns = dns();
    let hub = smarthost(&dns, shared_port());
    let keys = relay_keys(
        hub.submission_addr().port(),
        "starttls",
        &format!("relay_password_env = \"{PASSWORD_VAR}\"\n"),
    );
    let tx = start_sender(sender(&dns, shared_port(), &keys).env(PASSWORD_VAR, RELAY_PASSWORD));
    let id = submit(&tx, &[DAVE], &message());

    let rcpt = tx.wait_for_deferral(&id, DAVE, 1, secs(10));
    let last = rcpt["last_result"].as_str().unwrap_or_default();
    assert!(
        last.starts_with("4.") && last.contains("smarthost.test") && last.contains("TLS"),
        "{rcpt}"
    );
    let queue = hub.queue_json();
    assert!(
        queue["records"].as_array().is_some_and(Vec::is_empty),
        "nothing reached the smarthost: {queue}"
    );
    let log = hub.log();
    assert!(
        log.contains("TLS handshake failed") && !log.contains("TLS established"),
        "the sender gave up in the handshake, before any login: {log}"
    );
}

#[test]
fn smarthost_refusing_the_password_defers() {
    let dns = dns();
    let hub = smarthost(&dns, shared_port());
    let keys = relay_keys(
        hub.submission_addr().port(),
        "starttls",
        &format!("relay_password_env = \"{PASSWORD_VAR}\"\n{}", ca_file(&hub)),
    );
    let tx = start_sender(sender(&dns, shared_port(), &keys).env(PASSWORD_VAR, "wrong-password"));
    let id = submit(&tx, &[DAVE], &message());

    let rcpt = tx.wait_for_deferral(&id, DAVE, 1, secs(10));
    let last = rcpt["last_result"].as_str().unwrap_or_default();
    assert!(last.starts_with("4.") && last.contains("535"), "{rcpt}");
    assert!(
        !last.contains("wrong-password") && !tx.log().contains("wrong-password"),
        "the password must not be logged"
    );
    assert!(
        tx.maildir_new(ALICE).is_empty(),
        "a refused login does not bounce"
    );
    assert!(hub.log().contains("authentication failed"), "{}", hub.log());
}
