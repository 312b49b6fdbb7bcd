//! SPF, DKIM and DMARC on port 25: the results in one `Authentication-Results:` header, the
//! `[inbound]` policies (DMARC p=reject refused, p=quarantine marked, SPF fail refused only when
//! asked), DNS failure deferring instead of refusing, forged results removed. DKIM signatures
//! come from Python's dkimpy, so this side is checked against a signer we did not write.

use std::path::Path;
use std::process::Command;

use mta_tests::{KeptDir, MtaBuilder, Reply, ServfailDns, SmtpClient, TestDns, TestMta, run, secs};

use crate::dkim::{Key, keygen, txt_record};

const BOB: &str = "bob@example.test";

/// The zone: one domain per SPF outcome, DMARC policies, and a DKIM key for `signed.test`.
fn zone(key: &Key) -> TestDns {
    TestDns::start(&[
        &txt_record("pass.test", "v=spf1 ip4:127.0.0.0/8 -all"),
        &txt_record("fail.test", "v=spf1 ip4:192.0.2.1 -all"),
        &txt_record("soft.test", "v=spf1 ip4:192.0.2.1 ~all"),
        &txt_record("reject.test", "v=spf1 ip4:192.0.2.1 -all"),
        &txt_record("_dmarc.reject.test", "v=DMARC1; p=reject"),
        &txt_record("quarantine.test", "v=spf1 ip4:192.0.2.1 -all"),
        &txt_record("_dmarc.quarantine.test", "v=DMARC1; p=quarantine"),
        &txt_record("signed.test", "v=spf1 ip4:192.0.2.1 -all"),
        &txt_record("_dmarc.signed.test", "v=DMARC1; p=reject"),
        &key.dnsmasq(),
    ])
}

/// A receiver for `example.test` (bob) resolving through `dns_toml`, with `inbound` as its
/// `[inbound]` table.
fn receiver(dns_toml: &str, inbound: &str) -> TestMta {
    let rx = MtaBuilder::new()
        .toml(&format!("{dns_toml}[inbound]\n{inbound}\n"))
        .start();
    rx.add_user(BOB, "bob-password-1");
    rx
}

/// Sends `message` to bob on the smtp listener with `MAIL FROM:<from>`; the reply to the dot.
fn send(rx: &TestMta, from: &str, message: &str) -> Reply {
    let mut c = SmtpClient::connect(rx.smtp_addr());
    c.reply("the greeting");
    c.expect("EHLO client.pass.test", 250);
    let reply = c.send_message(from, &[BOB], message.as_bytes());
    let _ = c.send_line("QUIT");
    reply
}

fn message(from: &str, subject: &str) -> String {
    format!("From: <{from}>\r\nTo: <{BOB}>\r\nSubject: {subject}\r\n\r\nHello.\r\n")
}

/// Bob's delivered message whose subject is `subject`, as text with folding undone.
fn delivered(rx: &TestMta, subject: &str) -> String {
    let mut found = None;
    mta_tests::wait_for(
        secs(10),
        &format!("the message {subject:?} for bob"),
        || {
            found = rx.maildir_new(BOB).into_iter().find_map(|f| {
                let text = String::from_utf8_lossy(&mta_tests::crlf(&std::fs::read(&f).ok()?))
                    .into_owned();
                text.contains(&format!("Subject: {subject}\r\n"))
                    .then_some(text)
            });
            found.is_some()
        },
    );
    found.unwrap().replace("\r\n\t", " ")
}

fn auth_results(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("Authentication-Results: "))
        .map(str::to_string)
        .collect()
}

/// Signs `message` with dkimpy for `key`.
pub fn dkimpy_sign(key: &Key, message: &str) -> String {
    const SIGN: &str = r#"
import sys, dkim
msg = sys.stdin.buffer.read()
sig = dkim.sign(msg, sys.argv[2].encode(), sys.argv[3].encode(), open(sys.argv[1], 'rb').read(),
                include_headers=[b'from', b'to', b'subject'])
sys.stdout.buffer.write(sig + msg)
"#;
    let out = run(
        "dkimpy sign",
        Command::new("python3")
            .args(["-c", SIGN])
            .arg(&key.file)
            .arg(&key.selector)
            .arg(&key.domain),
        message.as_bytes(),
        secs(30),
    );
    out.assert_success("dkimpy sign");
    out.stdout.replace("\r\n", "\n").replace('\n', "\r\n")
}

fn signing_key(dir: &Path) -> Key {
    keygen(dir, "signed.test", "py", "rsa")
}

#[test]
fn spf_outcomes_are_recorded() {
    let keys = KeptDir::new();
    let dns = zone(&signing_key(keys.path()));
    let rx = receiver(&dns.config_toml(), "");
    for (domain, want) in [
        ("pass.test", "spf=pass"),
        ("fail.test", "spf=fail"),
        ("soft.test", "spf=softfail"),
        ("none.test", "spf=none"),
    ] {
        let from = format!("someone@{domain}");
        let reply = send(&rx, &from, &message(&from, domain));
        assert_eq!(reply.code, 250, "{domain}: {reply}");
        let text = delivered(&rx, domain);
        let results = auth_results(&text);
        assert_eq!(results.len(), 1, "{text}");
        assert!(results[0].starts_with("mx.example.test;"), "{}", results[0]);
        assert!(
            results[0].contains(&format!("{want} ")),
            "{domain}: {}",
            results[0]
        );
        assert!(results[0].contains("dkim=none"), "{}", results[0]);
        assert!(!text.contains("X-Spam-Flag"), "{text}");
    }
    let logged = "auth=spf=softfail dkim=none dmarc=none";
    mta_tests::wait_for(secs(5), logged, || rx.log().contains(logged));
}

#[test]
fn spf_fail_is_refused_only_when_configured() {
    let keys = KeptDir::new();
    let dns = zone(&signing_key(keys.path()));
    let rx = receiver(&dns.config_toml(), "spf_reject = true");
    let reply = send(&rx, "x@fail.test", &message("x@fail.test", "refused"));
    assert_eq!(
        (reply.code, reply.to_string().contains("5.7.23")),
        (550, true),
        "{reply}"
    );
    let reply = send(
        &rx,
        "x@soft.test",
        &message("x@soft.test", "softfail passes"),
    );
    assert_eq!(reply.code, 250, "{reply}");
}

#[test]
fn dkim_pass_and_a_changed_body_fails() {
    let keys = KeptDir::new();
    let key = signing_key(keys.path());
    let dns = zone(&key);
    let rx = receiver(&dns.config_toml(), "");
    // From signed.test, SPF fails (192.0.2.1 only) but DKIM passes and aligns: DMARC passes.
    let signed = dkimpy_sign(&key, &message("news@signed.test", "dkim good"));
    assert_eq!(send(&rx, "news@signed.test", &signed).code, 250);
    let results = auth_results(&delivered(&rx, "dkim good")).join("");
    assert!(
        results.contains("dkim=pass header.d=signed.test header.s=py"),
        "{results}"
    );
    assert!(results.contains("spf=fail"), "{results}");
    assert!(results.contains("dmarc=pass"), "{results}");
    // The body changed after signing: DKIM fails, and DMARC (p=reject) refuses it.
    let tampered = dkimpy_sign(&key, &message("news@signed.test", "dkim bad"))
        .replace("Hello.", "Hello, changed.");
    let reply = send(&rx, "news@signed.test", &tampered);
    assert_eq!(
        (reply.code, reply.to_string().contains("5.7.1")),
        (550, true),
        "{reply}"
    );
    let logged = "dkim=fail dmarc=fail p=reject";
    mta_tests::wait_for(secs(5), logged, || rx.log().contains(logged));
    // With dmarc_reject off it is delivered, the failure recorded and the message marked.
    let lenient = receiver(&dns.config_toml(), "dmarc_reject = false");
    assert_eq!(send(&lenient, "news@signed.test", &tampered).code, 250);
    let text = delivered(&lenient, "dkim bad");
    let results = auth_results(&text).join("");
    assert!(
        results.contains("dkim=fail (body hash did not verify) header.d=signed.test"),
        "{results}"
    );
    assert!(results.contains("dmarc=fail"), "{results}");
    assert!(text.contains("X-Spam-Flag: YES\r\n"), "{text}");
}

#[test]
fn dmarc_reject_is_refused_and_quarantine_marked() {
    let keys = KeptDir::new();
    let dns = zone(&signing_key(keys.path()));
    let rx = receiver(&dns.config_toml(), "");
    let reply = send(
        &rx,
        "ceo@reject.test",
        &message("ceo@reject.test", "wire money"),
    );
    assert_eq!(reply.code, 550, "{reply}");
    assert!(
        reply.to_string().contains("5.7.1") && reply.to_string().contains("reject.test"),
        "{reply}"
    );
    let reply = send(
        &rx,
        "ceo@quarantine.test",
        &message("ceo@quarantine.test", "maybe"),
    );
    assert_eq!(reply.code, 250, "{reply}");
    let text = delivered(&rx, "maybe");
    let results = auth_results(&text).join("");
    assert!(
        results.contains("dmarc=fail") && results.contains("policy.dmarc=quarantine"),
        "{results}"
    );
    assert!(text.contains("X-Spam-Flag: YES\r\n"), "{text}");
    assert_eq!(
        rx.maildir_new(BOB).len(),
        1,
        "the rejected message was not delivered"
    );
}

#[test]
fn dns_failure_defers_and_never_refuses() {
    let dns = ServfailDns::start();
    let rx = receiver(&dns.config_toml(), "");
    let reply = send(&rx, "a@pass.test", &message("a@pass.test", "dns down"));
    assert_eq!(
        reply.code,
        451,
        "DMARC could not be looked up: {reply}\n{}",
        rx.log()
    );
    assert!(reply.to_string().contains("4.7.1"), "{reply}");
    let strict_spf = receiver(
        &dns.config_toml(),
        "dmarc_reject = false\nspf_reject = true",
    );
    let reply = send(
        &strict_spf,
        "a@pass.test",
        &message("a@pass.test", "dns down"),
    );
    assert_eq!(reply.code, 451, "{reply}");
    assert!(reply.to_string().contains("4.7.24"), "{reply}");
    // No policy needs the answer: delivered, with the temporary errors recorded.
    let lenient = receiver(&dns.config_toml(), "dmarc_reject = false");
    assert_eq!(
        send(&lenient, "a@pass.test", &message("a@pass.test", "recorded")).code,
        250
    );
    let results = auth_results(&delivered(&lenient, "recorded")).join("");
    assert!(results.contains("spf=temperror"), "{results}");
    assert!(results.contains("dmarc=temperror"), "{results}");
}

#[test]
fn forged_results_are_removed_and_submissions_are_not_checked() {
    let keys = KeptDir::new();
    let dns = zone(&signing_key(keys.path()));
    let rx = receiver(&dns.config_toml(), "");
    let forged = "Authentication-Results: MX.Example.Test; dmarc=pass header.from=bank.test\r\n\
                  Authentication-Results: elsewhere.test; spf=pass\r\n\
                  From: <a@pass.test>\r\nTo: <bob@example.test>\r\nSubject: forged\r\n\r\nx\r\n";
    assert_eq!(send(&rx, "a@pass.test", forged).code, 250);
    let text = delivered(&rx, "forged");
    let results = auth_results(&text);
    assert_eq!(results.len(), 2, "{text}");
    assert!(
        results[0].starts_with("mx.example.test;") && results[0].contains("spf=pass"),
        "{text}"
    );
    assert_eq!(results[1], "elsewhere.test; spf=pass");
    assert!(!text.contains("bank.test"), "{text}");
    // Alice's own mail on submission gets no checks and no header.
    rx.add_user(mta_tests::ALICE, mta_tests::ALICE_PASSWORD);
    let mut c = SmtpClient::connect(rx.submission_addr());
    c.reply("the greeting");
    c.expect("EHLO client.example.test", 250);
    c.expect("STARTTLS", 220);
    c.upgrade_tls(&rx.cert_path());
    c.expect("EHLO client.example.test", 250);
    assert_eq!(
        c.auth_plain(mta_tests::ALICE, mta_tests::ALICE_PASSWORD)
            .code,
        235
    );
    // A user cannot speak in our name either: a field claiming it is removed.
    let own = format!(
        "Authentication-Results: (c) \"mx.example.test\"; dmarc=pass\r\n\
         From: <{}>\r\nTo: <{BOB}>\r\nSubject: from alice\r\n\r\nhi\r\n",
        mta_tests::ALICE
    );
    assert_eq!(
        c.send_message(mta_tests::ALICE, &[BOB], own.as_bytes())
            .code,
        250
    );
    let text = delivered(&rx, "from alice");
    assert!(auth_results(&text).is_empty(), "{text}");
}

/// The DMARC check reads the `From:` a strict parser finds. A message whose first line is a
/// continuation (it would join the field we put in front of it, and hide the `From:`), or
/// whose author is unclear (two `From:` fields, one after a line that is not a field, one
/// with several mailboxes), would pass for `dmarc=none` where the plain message is refused
/// under `p=reject`: each is refused outright.
#[test]
fn hidden_or_several_authors_do_not_escape_dmarc() {
    let keys = mta_tests::KeptDir::new();
    let dns = zone(&signing_key(keys.path()));
    let rx = receiver(&dns.config_toml(), "");
    let plain = send(&rx, "x@pass.test", &message("ceo@reject.test", "plain"));
    assert_eq!(plain.code, 550, "the plain forgery: {plain}");
    let forged = message("ceo@reject.test", "forged");
    for (what, data, code) in [
        (
            "a leading continuation line",
            format!(" ; dmarc=pass header.from=reject.test\r\n{forged}"),
            554,
        ),
        (
            "a From: after a line that is not a field",
            format!("Subject: y\r\nnot a field\r\n{forged}"),
            550,
        ),
        (
            "two From: fields",
            format!("From: <x@pass.test>\r\n{forged}"),
            550,
        ),
        (
            "a From: with two mailboxes",
            forged.replace(
                "From: <ceo@reject.test>",
                "From: <ceo@reject.test>, <x@pass.test>",
            ),
            550,
        ),
    ] {
        let reply = send(&rx, "x@pass.test", &data);
        assert_eq!(reply.code, code, "{what}: {reply}");
    }
}
