//! DANE (RFC 7672) end to end: nsd serves a DNSSEC-signed root zone holding `remote.test`
//! ([`SignedDns`]), the sender validates from that zone's key (`outbound.dane_trust_anchor`),
//! and the receivers present certificates no CA vouches for. For each case, the delivery
//! that must succeed and the one that must defer:
//!
//! - DANE-EE (`3 1 1`) matching a self-signed certificate delivers, `policy=dane`; one that
//!   matches nothing defers with `4.7.5`, and nothing is sent;
//! - DANE-TA (`2 0 1`) naming a private CA delivers when the chain is valid for the MX name,
//!   and defers when it is issued for another name;
//! - a host with TLSA records that offers no STARTTLS (the stripped case) defers, also when
//!   every record is unusable, though then any certificate will do;
//! - DANE wins over an MTA-STS `enforce` policy that does not list the MX (RFC 8461 §2);
//! - a REQUIRETLS message is relayed to a host DANE authenticates (RFC 8689 §4.2.1), where
//!   without DANE it is returned (`relay_requiretls.rs`);
//! - TLSA records in an unsigned zone, or of a host named by an unsigned MX answer, are
//!   ignored;
//! - bogus TLSA or MX records defer;
//! - TLS reports count DANE hosts under a `tlsa` policy (success, and `tlsa-invalid`);
//! - a signed domain whose MX host has no TLSA records gets opportunistic TLS;
//! - with a resolver that cannot do DNSSEC (dnsmasq) DANE is not applied, and the log says so
//!   once, not once per delivery;
//! - but a domain that had usable TLSA records is remembered: when validation stops working
//!   (here: a trust anchor that no longer matches the root), its mail needs a certificate
//!   verified against the CA roots, and waits (`policy=dane-memory`) instead of going out with
//!   less; `mta tls list` names it; and an MX answer forged meanwhile gets nothing (only the
//!   hosts that had TLSA records are tried);
//! - `outbound.dnssec = "resolver"` trusts the AD bit of a validating dnsmasq on loopback in
//!   front of the same zone (match delivers, mismatch and bogus defer), and refuses to start
//!   with a name server that is not on loopback.

use std::net::SocketAddr;
use std::path::Path;

use mta_tests::certs::{ca_and_leaf, cert_sha256, spki_sha256};
use mta_tests::fake_smtp::{FakeSmtp, Script};
use mta_tests::relay::{
    REMOTE_BOB, REMOTE_BOB_PASSWORD, message, receiver, sender, start_sender, submit,
    try_remote_receiver,
};
use mta_tests::{
    KeptDir, MtaBuilder, SignedDns, TestDns, TestMta, on_shared_port, secs,
    serve_expecting_failure, wait_for,
};

use crate::relay_mta_sts::PolicyServer;

/// remote.test's MX record and its host's address, in the signed root zone.
const REMOTE: [&str; 2] = [
    "remote.test. 300 IN MX 10 mx1.remote.test.",
    "mx1.remote.test. 300 IN A 127.0.0.2",
];

/// A TLSA record at `_25._tcp.mx1.remote.test`.
fn tlsa(data: &str) -> String {
    format!("_25._tcp.mx1.remote.test. 300 IN TLSA {data}")
}

/// A hash nobody's key has.
const WRONG: &str = "3 1 1 0000000000000000000000000000000000000000000000000000000000000000";

/// The signed zone: remote.test and `more` records.
fn signed(more: &[String]) -> SignedDns {
    let mut records: Vec<String> = REMOTE.iter().map(|r| r.to_string()).collect();
    records.extend_from_slice(more);
    let refs: Vec<&str> = records.iter().map(String::as_str).collect();
    SignedDns::start(&refs, &[], &[])
}

/// The sender, validating DNSSEC from `dns`'s key; `outbound` are more `[outbound]` keys.
fn dane_sender(dns: &SignedDns, port: u16, outbound: &str) -> TestMta {
    start_sender(MtaBuilder::new().toml(&format!(
        "{}[outbound]\nport = {port}\ndane_trust_anchor = {:?}\n{outbound}\n\
         [queue]\nretry_first = \"1s\"\nretry_max = \"2s\"\n",
        dns.config_toml(),
        dns.trust_anchor().display().to_string()
    )))
}

/// A receiver `host` for `user`'s domain, presenting `cert` and `key`.
fn receiver_with_cert(
    host: &str,
    user: &str,
    (ip, port): (&str, u16),
    (cert, key): (&Path, &Path),
) -> Result<TestMta, String> {
    let tls = format!(
        "[tls]\ncert = {:?}\nkey = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    let domain = user.split('@').nth(1).unwrap_or_default();
    let mta = receiver(host, &[domain], ip, port).toml(&tls).try_start()?;
    mta.add_user(user, REMOTE_BOB_PASSWORD);
    Ok(mta)
}

/// The queue's last result for bob after at least one attempt.
fn deferred(tx: &TestMta, id: &str) -> String {
    let entry = tx.wait_for_deferral(id, REMOTE_BOB, 1, secs(20));
    entry["last_result"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Waits for the delivery line that names the TLS and policy.
fn wait_delivered_with(tx: &TestMta, what: &str) {
    wait_for(secs(10), what, || {
        tx.log()
            .lines()
            .any(|l| l.contains("remote attempt") && l.contains(what))
    });
}

#[test]
fn dane_ee_authenticates_a_self_signed_certificate() {
    let (port, rx) = on_shared_port("the receiver", |p| {
        try_remote_receiver("mx1.remote.test", "127.0.0.2", p)
    });
    let hash = spki_sha256(&rx.cert_path());
    let dns = signed(&[tlsa(&format!("3 1 1 {hash}"))]);
    let tx = dane_sender(&dns, port, "");
    submit(&tx, &[REMOTE_BOB], &message(REMOTE_BOB, "pinned"));
    rx.wait_for_mail(REMOTE_BOB, 1, 10);
    wait_delivered_with(&tx, " verified policy=dane");
    let log = tx.log();
    assert!(
        log.contains("DNSSEC validation works through the resolver"),
        "{log}"
    );
    assert!(log.contains("DANE: the MX host has TLSA records"), "{log}");
}

#[test]
fn dane_ee_that_matches_nothing_defers_and_sends_nothing() {
    let (port, rx) = on_shared_port("the receiver", |p| {
        try_remote_receiver("mx1.remote.test", "127.0.0.2", p)
    });
    let dns = signed(&[tlsa(WRONG)]);
    let tx = dane_sender(&dns, port, "");
    let id = submit(&tx, &[REMOTE_BOB], &message(REMOTE_BOB, "wrong pin"));
    let last = deferred(&tx, &id);
    assert!(last.starts_with("4.7.5 "), "{last}");
    assert!(
        last.contains("no TLSA record (3 1 1 0000") && last.contains("policy=dane"),
        "{last}"
    );
    assert!(rx.maildir_new(REMOTE_BOB).is_empty(), "nothing delivered");
}

#[test]
fn dane_ta_delivers_for_the_mx_name_and_defers_for_another() {
    let dir = KeptDir::new();
    let (ca, chain, key) = ca_and_leaf(dir.path(), "good", "mx1.remote.test");
    let (other_ca, other_chain, other_key) = ca_and_leaf(dir.path(), "other", "elsewhere.test");
    // mx1 (127.0.0.2) has a chain for its name; mx1.other.test (127.0.0.3) one for
    // elsewhere.test, both from CAs their domains publish.
    let carol = "carol@other.test";
    let (port, (rx, other)) = on_shared_port("the receivers", |p| {
        let rx = receiver_with_cert(
            "mx1.remote.test",
            REMOTE_BOB,
            ("127.0.0.2", p),
            (&chain, &key),
        )?;
        let other = receiver_with_cert(
            "mx1.other.test",
            carol,
            ("127.0.0.3", p),
            (&other_chain, &other_key),
        )?;
        Ok((rx, other))
    });
    let dns = SignedDns::start(
        &[
            REMOTE[0],
            REMOTE[1],
            &tlsa(&format!("2 0 1 {}", cert_sha256(&ca))),
            "other.test. 300 IN MX 10 mx1.other.test.",
            "mx1.other.test. 300 IN A 127.0.0.3",
            &format!(
                "_25._tcp.mx1.other.test. 300 IN TLSA 2 0 1 {}",
                cert_sha256(&other_ca)
            ),
        ],
        &[],
        &[],
    );
    let tx = dane_sender(&dns, port, "");
    submit(&tx, &[REMOTE_BOB], &message(REMOTE_BOB, "through the CA"));
    rx.wait_for_mail(REMOTE_BOB, 1, 10);
    wait_delivered_with(&tx, " verified policy=dane");

    let id = submit(&tx, &[carol], &message(carol, "wrong name"));
    let entry = tx.wait_for_deferral(&id, carol, 1, secs(20));
    let last = entry["last_result"].as_str().unwrap_or_default();
    assert!(last.starts_with("4.7.5 "), "{last}");
    assert!(last.contains("DANE-TA"), "{last}");
    assert!(other.maildir_new(carol).is_empty(), "nothing delivered");
}

#[test]
fn a_stripped_starttls_defers() {
    let (port, fake) = on_shared_port("the receiver", |p| {
        FakeSmtp::start(SocketAddr::from(([127, 0, 0, 2], p)), Script::default())
    });
    let dns = signed(&[tlsa(WRONG)]);
    let tx = dane_sender(&dns, port, "");
    let id = submit(&tx, &[REMOTE_BOB], &message(REMOTE_BOB, "stripped"));
    let last = deferred(&tx, &id);
    assert!(last.starts_with("4.7.5 "), "{last}");
    assert!(
        last.contains("STARTTLS") && last.contains("policy=dane"),
        "{last}"
    );
    assert!(
        fake.transactions().is_empty(),
        "nothing went out in plaintext: {}",
        fake.transcript()
    );
}

#[test]
fn a_host_whose_records_are_all_unusable_needs_tls_but_no_authentication() {
    let (port, (fake, rx)) = on_shared_port("the receivers", |p| {
        let fake = FakeSmtp::start(SocketAddr::from(([127, 0, 0, 3], p)), Script::default())?;
        let rx = try_remote_receiver("mx1.remote.test", "127.0.0.2", p)?;
        Ok((fake, rx))
    });
    let unusable = "1 1 1 0000000000000000000000000000000000000000000000000000000000000000";
    let dns = SignedDns::start(
        &[
            REMOTE[0],
            REMOTE[1],
            &tlsa(unusable),
            "plain.test. 300 IN MX 10 mx.plain.test.",
            "mx.plain.test. 300 IN A 127.0.0.3",
            &format!("_25._tcp.mx.plain.test. 300 IN TLSA {unusable}"),
        ],
        &[],
        &[],
    );
    let tx = dane_sender(&dns, port, "");
    // TLS with a certificate nobody vouches for is enough.
    submit(&tx, &[REMOTE_BOB], &message(REMOTE_BOB, "encrypted"));
    rx.wait_for_mail(REMOTE_BOB, 1, 10);
    wait_delivered_with(&tx, ") policy=dane");
    assert!(tx.log().contains(" unverified ("), "{}", tx.log());
    // No STARTTLS is not.
    let carol = "carol@plain.test";
    let id = submit(&tx, &[carol], &message(carol, "stripped"));
    let entry = tx.wait_for_deferral(&id, carol, 1, secs(20));
    let last = entry["last_result"].as_str().unwrap_or_default();
    assert!(last.starts_with("4.7.5 "), "{last}");
    assert!(fake.transactions().is_empty(), "{}", fake.transcript());
}

#[test]
fn dane_wins_over_an_mta_sts_policy_that_does_not_list_the_mx() {
    let dir = KeptDir::new();
    let web = PolicyServer::start(
        dir.path(),
        "version: STSv1\nmode: enforce\nmx: mx9.remote.test\nmax_age: 86400\n",
    );
    let (port, rx) = on_shared_port("the receiver", |p| {
        try_remote_receiver("mx1.remote.test", "127.0.0.2", p)
    });
    let hash = spki_sha256(&rx.cert_path());
    let dns = signed(&[
        tlsa(&format!("3 1 1 {hash}")),
        "_mta-sts.remote.test. 300 IN TXT \"v=STSv1; id=20261129\"".to_string(),
        "mta-sts.remote.test. 300 IN A 127.0.0.1".to_string(),
    ]);
    let tx = dane_sender(&dns, port, &web.outbound_keys());
    submit(&tx, &[REMOTE_BOB], &message(REMOTE_BOB, "dane first"));
    rx.wait_for_mail(REMOTE_BOB, 1, 10);
    wait_delivered_with(&tx, " verified policy=dane");
    assert!(tx.log().contains("MTA-STS policy fetched"), "{}", tx.log());
}

#[test]
fn tls_reports_count_dane_hosts_under_a_tlsa_policy() {
    let rua = "\"v=TLSRPTv1; rua=mailto:tlsrpt@example.test\"";
    let (port, rx) = on_shared_port("the receiver", |p| {
        try_remote_receiver("mx1.remote.test", "127.0.0.2", p)
    });
    let hash = spki_sha256(&rx.cert_path());
    let dns = signed(&[
        tlsa(&format!("3 1 1 {hash}")),
        format!("_smtp._tls.remote.test. 300 IN TXT {rua}"),
        "wrong.test. 300 IN MX 10 mx.wrong.test.".into(),
        "mx.wrong.test. 300 IN A 127.0.0.2".into(),
        format!("_25._tcp.mx.wrong.test. 300 IN TLSA {WRONG}"),
        format!("_smtp._tls.wrong.test. 300 IN TXT {rua}"),
    ]);
    // The reports go to the sender's own domain, a report processor of sorts.
    let tx = dane_sender(
        &dns,
        port,
        "tls_report_interval = \"2s\"\ntls_report_allow = [\"example.test\"]\n",
    );
    tx.add_user("tlsrpt@example.test", "reports-password-1");
    submit(&tx, &[REMOTE_BOB], &message(REMOTE_BOB, "reported"));
    let carol = "carol@wrong.test";
    let id = submit(&tx, &[carol], &message(carol, "refused"));
    rx.wait_for_mail(REMOTE_BOB, 1, 10);
    tx.wait_for_deferral(&id, carol, 1, secs(20));
    // One report per domain and period; the two domains may land in different periods.
    let read = || {
        let files = tx.maildir_new("tlsrpt@example.test");
        let mut cmd = std::process::Command::new("python3");
        cmd.args(["-c", crate::relay_tlsrpt::READ]).args(&files);
        let out = mta_tests::run("read the reports", &mut cmd, b"", secs(30));
        out.assert_success("python3");
        serde_json::from_str::<serde_json::Value>(out.stdout.trim()).unwrap()
    };
    let mut reports = serde_json::Value::Null;
    wait_for(secs(20), "reports for remote.test and wrong.test", || {
        reports = read();
        ["remote.test", "wrong.test"].iter().all(|d| {
            reports
                .as_array()
                .is_some_and(|a| a.iter().any(|r| r["domain"] == *d))
        })
    });
    let by_domain = |d: &str| {
        reports
            .as_array()
            .and_then(|all| all.iter().find(|r| r["domain"] == d))
            .unwrap_or_else(|| panic!("no report for {d}: {reports}"))
            .clone()
    };
    let remote = by_domain("remote.test");
    assert_eq!(
        (&remote["type"], &remote["ok"], &remote["fail"]),
        (&"tlsa".into(), &1.into(), &0.into()),
        "{reports}"
    );
    let wrong = by_domain("wrong.test");
    assert_eq!(wrong["type"], "tlsa", "{reports}");
    assert_eq!(wrong["ok"], 0, "{reports}");
    assert_eq!(
        wrong["results"],
        serde_json::json!(["tlsa-invalid"]),
        "{reports}"
    );
}

#[test]
fn a_requiretls_message_goes_to_a_host_dane_authenticates() {
    let (port, rx) = on_shared_port("the receiver", |p| {
        try_remote_receiver("mx1.remote.test", "127.0.0.2", p)
    });
    let hash = spki_sha256(&rx.cert_path());
    let dns = signed(&[tlsa(&format!("3 1 1 {hash}"))]);
    let tx = dane_sender(&dns, port, "");
    crate::relay_requiretls::submit_requiretls(&tx, "DANE is verified TLS");
    rx.wait_for_mail(REMOTE_BOB, 1, 10);
    wait_delivered_with(&tx, " verified policy=dane");
}

#[test]
fn without_secure_tlsa_records_dane_does_not_apply() {
    let carol = "carol@plain.test";
    let dave = "dave@hosted.test";
    let eve = "eve@signed.test";
    let (port, rx) = on_shared_port("the receiver", |p| {
        let rx = receiver(
            "mx1.remote.test",
            &["plain.test", "hosted.test", "signed.test"],
            "127.0.0.2",
            p,
        )
        .try_start()?;
        for user in [carol, dave, eve] {
            rx.add_user(user, REMOTE_BOB_PASSWORD);
        }
        Ok(rx)
    });
    // plain.test is unsigned, TLSA and all; hosted.test is unsigned but its MX is the
    // signed mx1.remote.test, whose TLSA record matches nothing; signed.test is signed, and
    // its MX host has no TLSA record.
    let dns = SignedDns::start(
        &[
            REMOTE[1],
            &tlsa(WRONG),
            "signed.test. 300 IN MX 10 mx.signed.test.",
            "mx.signed.test. 300 IN A 127.0.0.2",
        ],
        &[
            (
                "plain.test.",
                &[
                    "plain.test. 300 IN MX 10 mx.plain.test.",
                    "mx.plain.test. 300 IN A 127.0.0.2",
                    &format!("_25._tcp.mx.plain.test. 300 IN TLSA {WRONG}"),
                ] as &[&str],
            ),
            (
                "hosted.test.",
                &["hosted.test. 300 IN MX 10 mx1.remote.test."] as &[&str],
            ),
        ],
        &[],
    );
    let tx = dane_sender(&dns, port, "");
    submit(&tx, &[carol, dave, eve], &message(carol, "no DANE"));
    for user in [carol, dave, eve] {
        rx.wait_for_mail(user, 1, 10);
    }
    tx.wait_for_empty_queue(secs(10));
    let log = tx.log();
    assert!(!log.contains("policy=dane"), "{log}");
    assert!(log.contains("policy=opportunistic"), "{log}");
}

#[test]
fn bogus_answers_defer() {
    let (port, rx) = on_shared_port("the receiver", |p| {
        try_remote_receiver("mx1.remote.test", "127.0.0.2", p)
    });
    let hash = spki_sha256(&rx.cert_path());
    // remote.test's TLSA record would match, but its signature does not; so does
    // bogus.test's MX record's.
    let dns = SignedDns::start(
        REMOTE.as_slice(),
        &[],
        &[
            &tlsa(&format!("3 1 1 {hash}")),
            "bogus.test. 300 IN MX 10 mx1.remote.test.",
        ],
    );
    let tx = dane_sender(&dns, port, "");
    let id = submit(&tx, &[REMOTE_BOB], &message(REMOTE_BOB, "bogus"));
    let last = deferred(&tx, &id);
    assert!(last.starts_with("4.7.5 DANE: "), "{last}");
    assert!(last.contains("bogus"), "{last}");
    let carol = "carol@bogus.test";
    let id = submit(&tx, &[carol], &message(carol, "bogus MX"));
    let entry = tx.wait_for_deferral(&id, carol, 1, secs(20));
    let last = entry["last_result"].as_str().unwrap_or_default();
    assert!(
        last.starts_with("4.4.3 the MX answer for bogus.test fails DNSSEC validation"),
        "{last}"
    );
    assert!(rx.maildir_new(REMOTE_BOB).is_empty(), "nothing delivered");
}

#[test]
fn without_dnssec_validation_dane_is_not_applied_and_the_log_says_so() {
    let (port, rx) = on_shared_port("the receiver", |p| {
        try_remote_receiver("mx1.remote.test", "127.0.0.2", p)
    });
    // dnsmasq answers the TLSA record, but no signatures: validation cannot work.
    let dns = TestDns::start(&[
        "--mx-host=remote.test,mx1.remote.test,10",
        "--host-record=mx1.remote.test,127.0.0.2",
        &format!(
            "--dns-rr=_25._tcp.mx1.remote.test,52,030101{}",
            "00".repeat(32)
        ),
    ]);
    let tx = start_sender(sender(&dns, port, ""));
    // Several deliveries, with a reload (which builds a new relay) between them: the state
    // is told once, not per attempt or per relay.
    for n in 1..=3 {
        submit(
            &tx,
            &[REMOTE_BOB],
            &message(REMOTE_BOB, &format!("no dnssec {n}")),
        );
        rx.wait_for_mail(REMOTE_BOB, n, 10);
        let reload = tx.mta(&["reload"], b"");
        assert!(reload.stdout.contains("reloaded"), "{}", reload.stderr);
    }
    wait_for(secs(10), "three delivery lines", || {
        tx.log()
            .lines()
            .filter(|l| l.contains("remote attempt") && l.contains("policy=opportunistic"))
            .count()
            == 3
    });
    let log = tx.log();
    let warnings = log
        .lines()
        .filter(|l| l.contains("DNSSEC validation does not work through the resolver"))
        .count();
    assert_eq!(warnings, 1, "{log}");
}

#[test]
fn trusting_a_validating_resolver_on_loopback() {
    let (port, rx) = on_shared_port("the receiver", |p| {
        try_remote_receiver("mx1.remote.test", "127.0.0.2", p)
    });
    let hash = spki_sha256(&rx.cert_path());
    let dns = SignedDns::start(
        &[
            REMOTE[0],
            REMOTE[1],
            &tlsa(&format!("3 1 1 {hash}")),
            "wrong.test. 300 IN MX 10 mx.wrong.test.",
            "mx.wrong.test. 300 IN A 127.0.0.2",
            &format!("_25._tcp.mx.wrong.test. 300 IN TLSA {WRONG}"),
            "bogus.test. 300 IN MX 10 mx.bogus.test.",
            "mx.bogus.test. 300 IN A 127.0.0.2",
        ],
        &[],
        &[&format!("_25._tcp.mx.bogus.test. 300 IN TLSA 3 1 1 {hash}")],
    );
    let resolver = TestDns::validating(dns.addr(), &dns.root_ds());
    let tx = start_sender(MtaBuilder::new().toml(&format!(
        "{}[outbound]\nport = {port}\ndnssec = \"resolver\"\n\
         [queue]\nretry_first = \"1s\"\nretry_max = \"2s\"\n",
        resolver.config_toml()
    )));
    submit(&tx, &[REMOTE_BOB], &message(REMOTE_BOB, "AD bit"));
    rx.wait_for_mail(REMOTE_BOB, 1, 10);
    wait_delivered_with(&tx, " verified policy=dane");
    assert!(
        tx.log()
            .contains("DNSSEC validation works through the resolver"),
        "{}",
        tx.log()
    );

    let carol = "carol@wrong.test";
    let id = submit(&tx, &[carol], &message(carol, "wrong pin"));
    let entry = tx.wait_for_deferral(&id, carol, 1, secs(20));
    let last = entry["last_result"].as_str().unwrap_or_default();
    assert!(
        last.starts_with("4.7.5 ") && last.contains("no TLSA record (3 1 1 0000"),
        "{last}"
    );

    // The resolver answers SERVFAIL for the bogus record: the host cannot be used.
    let dave = "dave@bogus.test";
    let id = submit(&tx, &[dave], &message(dave, "bogus"));
    let entry = tx.wait_for_deferral(&id, dave, 1, secs(20));
    let last = entry["last_result"].as_str().unwrap_or_default();
    assert!(
        last.starts_with("4.7.5 DANE: ") && last.contains("SERVFAIL"),
        "{last}"
    );
}

#[test]
fn trusting_a_resolver_that_is_not_on_loopback_is_refused() {
    let dir = KeptDir::new();
    let text = format!(
        "data_dir = {:?}\nallow_root = true\n[listen]\nsmtp = [\"127.0.0.1:0\"]\n\
         submission = []\nsubmissions = []\n[dns]\nnameservers = [\"192.0.2.53\"]\n\
         [outbound]\ndnssec = \"resolver\"\n",
        dir.path().join("data").display().to_string()
    );
    let (_, out) = serve_expecting_failure(dir.path(), &text);
    assert_ne!(out.code(), 0, "{}", out.all());
    assert!(
        out.stderr.contains(
            "outbound.dnssec = \"resolver\": name server 192.0.2.53:53 is not on loopback"
        ),
        "{}",
        out.all()
    );
}

#[test]
fn a_domain_that_had_dane_still_needs_verified_tls_when_validation_breaks() {
    // The receiver plays a man in the middle: its certificate matches none of remote.test's
    // TLSA records, so DANE defers. Nothing was ever delivered, so the downgrade memory
    // holds nothing for remote.test: only the DANE memory stands in the way below.
    let (port, rx) = on_shared_port("the receiver", |p| {
        try_remote_receiver("mx1.remote.test", "127.0.0.2", p)
    });
    let dns = signed(&[tlsa(WRONG)]);
    let mut tx = dane_sender(&dns, port, "");
    let first = submit(&tx, &[REMOTE_BOB], &message(REMOTE_BOB, "pinned"));
    let result = deferred(&tx, &first);
    assert!(result.contains("policy=dane"), "{result}");

    // Whoever can corrupt the root DNSKEY answer makes validation fail; a trust anchor of
    // another zone's key does the same: the probe of the root DNSKEY RRset fails.
    let other = signed(&[]);
    let config = std::fs::read_to_string(tx.config_path()).unwrap();
    let ours = format!("{:?}", dns.trust_anchor().display().to_string());
    let theirs = format!("{:?}", other.trust_anchor().display().to_string());
    assert!(config.contains(&ours), "{config}");
    std::fs::write(tx.config_path(), config.replace(&ours, &theirs)).unwrap();
    tx.restart();
    let id = submit(
        &tx,
        &[REMOTE_BOB],
        &message(REMOTE_BOB, "while validation is broken"),
    );
    let result = deferred(&tx, &id);
    assert!(
        result.starts_with("4.7.5") && result.contains("policy=dane-memory"),
        "{result}"
    );
    assert!(
        rx.maildir_new(REMOTE_BOB).is_empty(),
        "mail went to a host DANE had refused"
    );
    let log = tx.log();
    assert!(
        log.contains("DNSSEC validation does not work through the resolver"),
        "{log}"
    );
    assert!(log.contains("this domain had DANE"), "{log}");
    let out = tx.mta(&["tls", "list"], b"");
    let listed = &out.stdout;
    assert!(
        listed.contains("remote.test DANE (TLSA records) seen at"),
        "{listed}"
    );
}

#[test]
fn while_validation_is_broken_a_forged_mx_gets_nothing() {
    // The sender learns that mx1.remote.test has TLSA records (the certificate matches:
    // delivered). Then its DNS is replaced by an attacker's: a root our trust anchor does not
    // validate, and an MX answer naming a host of theirs. Only the remembered host may get
    // remote.test's mail now; the forged one is not even tried.
    let (port, rx) = on_shared_port("the receiver", |p| {
        try_remote_receiver("mx1.remote.test", "127.0.0.2", p)
    });
    let hash = spki_sha256(&rx.cert_path());
    let dns = signed(&[tlsa(&format!("3 1 1 {hash}"))]);
    let mut tx = dane_sender(&dns, port, "");
    submit(&tx, &[REMOTE_BOB], &message(REMOTE_BOB, "pinned"));
    rx.wait_for_mail(REMOTE_BOB, 1, 10);
    wait_delivered_with(&tx, " verified policy=dane");

    let forged = SignedDns::start(
        &[
            "remote.test. 300 IN MX 10 mx.attacker.test.",
            "mx.attacker.test. 300 IN A 127.0.0.2",
        ],
        &[],
        &[],
    );
    let config = std::fs::read_to_string(tx.config_path()).unwrap();
    let ours = dns.addr().to_string();
    assert!(config.contains(&ours), "{config}");
    let config = config.replace(&ours, &forged.addr().to_string());
    std::fs::write(tx.config_path(), config).unwrap();
    tx.restart();
    let id = submit(
        &tx,
        &[REMOTE_BOB],
        &message(REMOTE_BOB, "to the forged MX?"),
    );
    let result = deferred(&tx, &id);
    assert!(
        result.contains("no MX host of remote.test is one that had TLSA records")
            && result.contains("policy=dane-memory"),
        "{result}"
    );
    assert_eq!(rx.maildir_new(REMOTE_BOB).len(), 1, "nothing more arrived");
    assert!(
        tx.log()
            .contains("DANE memory: this MX host never had TLSA records"),
        "{}",
        tx.log()
    );
}
