//! The per-domain TLS policy for MX delivery (`[outbound.tls."remote.test"]`): every
//! receiver presents its own self-signed certificate (names: its hostname, localhost,
//! 127.0.0.1), which is trusted only when it is the domain's `ca_file`.

use std::path::PathBuf;

use mta_tests::relay::{
    REMOTE_BOB, message, sender, split_first_field, start_sender, submit, try_remote_receiver,
};
use mta_tests::{TestDns, TestMta, on_shared_port, read_delivered, secs};

/// dnsmasq with remote.test's MX `mx1.remote.test` on 127.0.0.2, plus `extra`.
fn dns(extra: &[&str]) -> TestDns {
    let mut records = vec![
        "--mx-host=remote.test,mx1.remote.test,10",
        "--host-record=mx1.remote.test,127.0.0.2",
    ];
    records.extend_from_slice(extra);
    TestDns::start(&records)
}

/// The `[outbound.tls."remote.test"]` table.
fn policy(mode: &str, ca_file: Option<PathBuf>) -> String {
    let ca = ca_file
        .map(|p| format!("ca_file = {:?}\n", p.display().to_string()))
        .unwrap_or_default();
    format!("[outbound.tls.\"remote.test\"]\nmode = \"{mode}\"\n{ca}")
}

/// The receiver's Received header of the only message in bob's Maildir.
fn received_at(rx: &TestMta) -> String {
    let files = rx.wait_for_mail(REMOTE_BOB, 1, 10);
    assert_eq!(files.len(), 1, "{files:?}");
    read_delivered(&files[0]).received
}

/// The `tls="…"` of the sender's log lines for remote attempts.
fn logged_tls(tx: &TestMta) -> Vec<String> {
    tx.log()
        .lines()
        .filter(|l| l.contains("remote attempt"))
        .filter_map(|l| l.split(" tls=\"").nth(1))
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_string)
        .collect()
}

#[test]
fn opportunistic_accepts_an_untrusted_certificate_and_records_it() {
    // bob@remote.test is delivered; down.test's MX is down, so the message stays queued and
    // bob's entry shows what his delivery recorded.
    let dns = dns(&[
        "--mx-host=down.test,mx.down.test,10",
        "--host-record=mx.down.test,127.0.0.3",
    ]);
    let (port, rx) = on_shared_port("the receiver", |p| {
        try_remote_receiver("mx1.remote.test", "127.0.0.2", p)
    });
    let tx = start_sender(sender(&dns, port, "").toml(&policy("opportunistic", None)));
    let down = "carol@down.test";
    let id = submit(
        &tx,
        &[REMOTE_BOB, down],
        &message(REMOTE_BOB, "opportunistic"),
    );

    let r = received_at(&rx);
    assert!(r.contains(" with ESMTPS id "), "{r}");
    assert!(r.contains("(using TLSv1.3 with cipher "), "{r}");
    tx.wait_for_deferral(&id, down, 1, secs(10));
    let bob = tx
        .queued_recipient(&id, REMOTE_BOB)
        .expect("the message is still queued for carol");
    assert_eq!(bob["state"], "delivered", "{bob}");
    let last = bob["last_result"].as_str().unwrap_or_default();
    assert!(
        last.contains("TLSv1.3") && last.contains("unverified (UnknownIssuer)"),
        "{bob}"
    );
    let tls = logged_tls(&tx);
    assert!(
        tls.iter().any(|t| t.starts_with("TLSv1.3 ")
            && t.ends_with(" unverified (UnknownIssuer) policy=opportunistic")),
        "{tls:?}"
    );
}

/// A sender whose policy for remote.test is `required` without a CA file: the receiver's
/// certificate cannot verify. Returns after two deferred attempts.
fn required_without_trust() -> (TestDns, TestMta, TestMta, serde_json::Value) {
    let dns = dns(&[]);
    let (port, rx) = on_shared_port("the receiver", |p| {
        try_remote_receiver("mx1.remote.test", "127.0.0.2", p)
    });
    let tx = start_sender(sender(&dns, port, "").toml(&policy("required", None)));
    let id = submit(&tx, &[REMOTE_BOB], &message(REMOTE_BOB, "required"));
    let rcpt = tx.wait_for_deferral(&id, REMOTE_BOB, 2, secs(15));
    (dns, rx, tx, rcpt)
}

#[test]
fn required_tls_with_an_untrusted_certificate_stays_deferred() {
    let (_dns, rx, _tx, rcpt) = required_without_trust();
    let last = rcpt["last_result"].as_str().unwrap_or_default();
    assert!(last.starts_with("4."), "a temporary failure: {rcpt}");
    assert!(
        last.contains("TLS") && last.contains("mx1.remote.test"),
        "the last result names the TLS failure and the host: {rcpt}"
    );
    assert!(
        rx.maildir_new(REMOTE_BOB).is_empty(),
        "never sent in plaintext"
    );
    let queue = rx.queue_json();
    assert!(
        queue["records"].as_array().is_some_and(Vec::is_empty),
        "nothing reached the receiver's queue: {queue}"
    );
}

/// config.md, TLS per domain: under `required`, "Any failure (no STARTTLS, a handshake
/// error, a certificate that does not verify) defers the message with `4.7.5`".
#[test]
fn required_tls_failure_is_reported_as_4_7_5() {
    let (_dns, _rx, _tx, rcpt) = required_without_trust();
    let last = rcpt["last_result"].as_str().unwrap_or_default();
    assert!(
        last.contains("4.7.5"),
        "the documented enhanced code 4.7.5 is missing: {rcpt}"
    );
}

#[test]
fn required_tls_with_the_receivers_certificate_as_ca_file() {
    let dns = dns(&[]);
    let (port, rx) = on_shared_port("the receiver", |p| {
        try_remote_receiver("mx1.remote.test", "127.0.0.2", p)
    });
    let tx = start_sender(sender(&dns, port, "").toml(&policy("required", Some(rx.cert_path()))));
    submit(&tx, &[REMOTE_BOB], &message(REMOTE_BOB, "required trusted"));

    let r = received_at(&rx);
    assert!(r.contains("(using TLSv1.3 with cipher "), "{r}");
    tx.wait_for_empty_queue(secs(10));
    let tls = logged_tls(&tx);
    assert!(
        !tls.is_empty()
            && tls
                .iter()
                .all(|t| t.ends_with(" verified policy=configured") && !t.contains("unverified")),
        "{tls:?}"
    );
}

#[test]
fn required_tls_checks_the_mx_host_name() {
    // The MX is called mx9.remote.test, but the receiver's (trusted) certificate is for
    // mx1.remote.test: the name does not verify.
    let dns = TestDns::start(&[
        "--mx-host=remote.test,mx9.remote.test,10",
        "--host-record=mx9.remote.test,127.0.0.2",
    ]);
    let (port, rx) = on_shared_port("the receiver", |p| {
        try_remote_receiver("mx1.remote.test", "127.0.0.2", p)
    });
    let tx = start_sender(sender(&dns, port, "").toml(&policy("required", Some(rx.cert_path()))));
    let id = submit(&tx, &[REMOTE_BOB], &message(REMOTE_BOB, "wrong name"));
    let rcpt = tx.wait_for_deferral(&id, REMOTE_BOB, 1, secs(10));
    let last = rcpt["last_result"].as_str().unwrap_or_default();
    assert!(
        last.contains("TLS") && last.contains("mx9.remote.test"),
        "{rcpt}"
    );
    assert!(rx.maildir_new(REMOTE_BOB).is_empty());
}

#[test]
fn required_tls_falls_back_to_the_next_mx_on_a_tls_failure() {
    // MX 5 (mx2, 127.0.0.3) has a certificate nobody trusts; MX 10 (mx1) is trusted.
    let dns = dns(&[
        "--mx-host=remote.test,mx2.remote.test,5",
        "--host-record=mx2.remote.test,127.0.0.3",
    ]);
    let (port, (mx1, mx2)) = on_shared_port("two receivers", |p| {
        let mx1 = try_remote_receiver("mx1.remote.test", "127.0.0.2", p)?;
        let mx2 = try_remote_receiver("mx2.remote.test", "127.0.0.3", p)?;
        Ok((mx1, mx2))
    });
    let tx = start_sender(sender(&dns, port, "").toml(&policy("required", Some(mx1.cert_path()))));
    submit(&tx, &[REMOTE_BOB], &message(REMOTE_BOB, "tls fallback"));

    let r = received_at(&mx1);
    assert!(r.contains("by mx1.remote.test (mta)"), "{r}");
    tx.wait_for_empty_queue(secs(10));
    assert!(mx2.maildir_new(REMOTE_BOB).is_empty());
}

#[test]
fn mode_none_sends_in_plaintext() {
    let dns = dns(&[]);
    let (port, rx) = on_shared_port("the receiver", |p| {
        try_remote_receiver("mx1.remote.test", "127.0.0.2", p)
    });
    let tx = start_sender(sender(&dns, port, "").toml(&policy("none", None)));
    let sent = message(REMOTE_BOB, "plaintext");
    submit(&tx, &[REMOTE_BOB], &sent);

    let files = rx.wait_for_mail(REMOTE_BOB, 1, 10);
    let d = read_delivered(&files[0]);
    assert!(d.received.contains(" with ESMTP id "), "{}", d.received);
    assert!(!d.received.contains("using TLS"), "{}", d.received);
    let (_, rest) = split_first_field(&d.rest, "Received");
    mta_tests::assert_same_bytes("the message", rest, &sent);
    assert_eq!(logged_tls(&tx), ["plaintext policy=configured"]);
}

#[test]
fn required_policy_applies_whatever_the_case_of_the_domain() {
    // The policy is for remote.test; the recipient is written BOB@Remote.TEST. It must
    // not slip through as opportunistic (the receiver's certificate is not trusted).
    let dns = dns(&[]);
    let (port, rx) = on_shared_port("the receiver", |p| {
        try_remote_receiver("mx1.remote.test", "127.0.0.2", p)
    });
    let tx = start_sender(sender(&dns, port, "").toml(&policy("required", None)));
    let to = "BOB@Remote.TEST";
    let id = submit(&tx, &[to], &message(to, "case"));
    let record = tx.queue_record(&id).expect("the message is queued");
    let stored = record["envelope"]["recipients"][0]["address"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let rcpt = tx.wait_for_deferral(&id, &stored, 1, secs(10));
    let last = rcpt["last_result"].as_str().unwrap_or_default();
    assert!(last.contains("TLS"), "{rcpt}");
    assert!(
        rx.maildir_new(REMOTE_BOB).is_empty(),
        "delivered despite the required policy"
    );
}
