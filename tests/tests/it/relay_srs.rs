//! Forwarding with SRS: an alias on `mx.example.test` forwards a stranger's mail to
//! `bob@remote.test`, whose server checks SPF. The copy leaves with an SRS sender in
//! example.test, so it passes; a bounce to that address comes back and reaches the stranger's
//! own server; forged and expired SRS addresses are refused at RCPT; a user's submission, a
//! local copy and `<>` keep their sender. The expected addresses are computed by a separate
//! implementation in Python (hmac, hashlib), not by the code under test.

use std::process::Command;

use mta_tests::relay::{REMOTE_BOB, message, receiver, sender, start_sender, submit};
use mta_tests::{
    ALICE, KeptDir, SmtpClient, TestDns, TestMta, on_shared_port, read_delivered, run, secs,
};

use crate::dkim::{keygen, txt_record};

const STRANGER: &str = "someone@third.test";

/// The forwarder, bob's server (checking SPF) and the stranger's server, with their DNS.
struct World {
    _keys: KeptDir,
    _dns: TestDns,
    tx: TestMta,
    rx: TestMta,
    third: TestMta,
}

/// `srs` is the forwarder's `[srs]` table (empty for the defaults).
fn world(srs: &str) -> World {
    let keys = KeptDir::new();
    // A key for the stranger's domain on the forwarder: it must still not sign what it
    // forwards, which is not ours to vouch for.
    let third_key = keygen(keys.path(), "third.test", "fwd", "ed25519");
    let dns = TestDns::start(&[
        "--mx-host=remote.test,mx1.remote.test,10",
        "--host-record=mx1.remote.test,127.0.0.2",
        "--mx-host=third.test,mx.third.test,10",
        "--host-record=mx.third.test,127.0.0.3",
        // The forwarder's domain names the forwarder; the stranger's does not.
        &txt_record("example.test", "v=spf1 ip4:127.0.0.0/8 -all"),
        &txt_record("third.test", "v=spf1 ip4:192.0.2.1 -all"),
    ]);
    let inbound = format!("{}[inbound]\nchecks = true\n", dns.config_toml());
    let (port, (rx, third)) = on_shared_port("two receivers", |p| {
        let rx = receiver("mx1.remote.test", &["remote.test"], "127.0.0.2", p)
            .toml(&inbound)
            .try_start()?;
        rx.add_user(REMOTE_BOB, "bob-password-1");
        let third = receiver("mx.third.test", &["third.test"], "127.0.0.3", p)
            .toml(&inbound)
            .try_start()?;
        third.add_user(STRANGER, "someone-password-1");
        Ok((rx, third))
    });
    let tx = start_sender(
        sender(&dns, port, "")
            .toml(&third_key.toml())
            .toml(
                "[aliases]\n\"fwd@example.test\" = [\"bob@remote.test\"]\n\
                 \"both@example.test\" = [\"alice@example.test\", \"bob@remote.test\"]\n\
                 [inbound]\nchecks = true\n",
            )
            .toml(srs),
    );
    World {
        _keys: keys,
        _dns: dns,
        tx,
        rx,
        third,
    }
}

/// Sends `message` on `mta`'s port 25 from `from` (`""` for `<>`) to `to`; the final reply
/// code (the RCPT's when it was refused).
fn send(mta: &TestMta, from: &str, to: &str, message: &[u8]) -> (u16, String) {
    let mut c = SmtpClient::connect(mta.smtp_addr());
    c.reply("the greeting");
    c.expect("EHLO mx1.remote.test", 250);
    let reply = c.send_message(from, &[to], message);
    let _ = c.send_line("QUIT");
    (reply.code, c.transcript())
}

/// The reply to `RCPT TO:<to>` on `mta`'s port 25 after `MAIL FROM:<from>`, and the
/// transcript.
fn rcpt(mta: &TestMta, from: &str, to: &str) -> (String, String) {
    let mut c = SmtpClient::connect(mta.smtp_addr());
    c.reply("the greeting");
    c.expect("EHLO mx1.remote.test", 250);
    c.expect(&format!("MAIL FROM:<{from}>"), 250);
    let reply = c.command(&format!("RCPT TO:<{to}>"));
    let _ = c.send_line("QUIT");
    (reply.to_string(), c.transcript())
}

/// A stranger's message, carrying a DKIM signature of its own that must arrive untouched.
fn stranger_message(to: &str, subject: &str) -> Vec<u8> {
    format!(
        "DKIM-Signature: v=1; a=rsa-sha256; d=third.test; s=orig; h=from; bh=x; b=x\r\n\
         From: <{STRANGER}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n\r\nHello.\r\n"
    )
    .into_bytes()
}

/// The SRS address for `sender` made with the secret in `data_dir/srs.key` on `day`, by
/// Python's hmac: HMAC-SHA256 over `TT=domain=local` in lower case, the first 4 base64
/// characters, TT the day modulo 1024 in base32.
fn python_srs(data_dir: &std::path::Path, sender: &str, day: u64) -> String {
    python_srs_with(&data_dir.join("srs.key"), sender, day)
}

/// [`python_srs`] with the secret in `key`.
fn python_srs_with(key: &std::path::Path, sender: &str, day: u64) -> String {
    const SRS: &str = r#"
import base64, hashlib, hmac, sys
key = open(sys.argv[1], 'rb').read()
local, domain = sys.argv[2].rsplit('@', 1)
t = int(sys.argv[3]) % 1024
b32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567'
tt = b32[t // 32] + b32[t % 32]
mac = hmac.new(key, f'{tt}={domain}={local}'.lower().encode(), hashlib.sha256).digest()
h = base64.b64encode(mac[:3]).decode()
print(f'SRS0={h}={tt}={domain}={local}@example.test')
"#;
    let out = run(
        "python SRS",
        Command::new("python3")
            .args(["-c", SRS])
            .arg(key)
            .arg(sender)
            .arg(day.to_string()),
        b"",
        secs(30),
    );
    out.assert_success("python SRS");
    out.stdout.trim().to_string()
}

fn today() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970");
    now.as_secs() / 86_400
}

/// The `Authentication-Results:` value of a delivered file, unfolded.
fn auth_results(path: &std::path::Path) -> String {
    let text = String::from_utf8_lossy(&mta_tests::read_crlf(path)).replace("\r\n\t", " ");
    text.lines()
        .find_map(|l| l.strip_prefix("Authentication-Results: "))
        .unwrap_or_default()
        .to_string()
}

/// The stranger's mail, forwarded: bob's server sees the SRS sender and SPF passes; the
/// copy keeps its own signature and gets none of ours; a bounce to the SRS address reaches
/// the stranger; a forged and an expired one are refused at RCPT.
#[test]
fn forwarded_mail_passes_spf_and_its_bounce_comes_back() {
    let w = world("");
    let day = today();
    let sent = stranger_message("fwd@example.test", "forwarded");
    let (code, transcript) = send(&w.tx, STRANGER, "fwd@example.test", &sent);
    assert_eq!(code, 250, "{transcript}");
    let files = w.rx.wait_for_mail(REMOTE_BOB, 1, 10);
    let d = read_delivered(&files[0]);
    let made = [day, day + 1].map(|d| python_srs(&w.tx.data_dir(), STRANGER, d));
    let srs = d
        .return_path
        .strip_prefix("Return-Path: <")
        .and_then(|r| r.strip_suffix('>'))
        .expect("a Return-Path")
        .to_string();
    assert!(made.contains(&srs), "{srs} is not one of {made:?}");
    let results = auth_results(&files[0]);
    assert!(results.contains("; spf=pass "), "{results}");
    // Quoted: the hash may hold `/` or `+`, and `=` is always there.
    assert!(
        results.contains(&format!("smtp.mailfrom=\"{srs}\"")),
        "{results}"
    );
    assert!(
        d.rest.ends_with(&sent),
        "the message arrives as it was sent"
    );
    let text = String::from_utf8_lossy(&std::fs::read(&files[0]).expect("read")).to_string();
    assert_eq!(text.matches("DKIM-Signature:").count(), 1, "{text}");
    w.tx.wait_for_empty_queue(secs(10));

    // Bob's server bounces it (from <>, to the SRS address): the stranger gets it.
    let bounce = message(STRANGER, "Undelivered Mail Returned to Sender");
    let (code, transcript) = send(&w.tx, "", &srs, &bounce);
    assert_eq!(code, 250, "{transcript}");
    let files = w.third.wait_for_mail(STRANGER, 1, 10);
    let d = read_delivered(&files[0]);
    assert_eq!(d.return_path, "Return-Path: <>");
    assert_eq!(d.delivered_to, format!("Delivered-To: {STRANGER}"));
    assert!(d.rest.ends_with(&bounce));

    // Only bounces: a sender other than <> is refused.
    let (reply, transcript) = rcpt(&w.tx, "spam@remote.test", &srs);
    assert!(reply.starts_with("550 5.7.1"), "{transcript}");
    // One changed hash character, and one 22 days old: refused at RCPT.
    let hash = &srs[5..9];
    let other = if hash.starts_with(['A', 'a']) {
        "B"
    } else {
        "A"
    };
    let forged = format!("SRS0={other}{}", &srs[6..]);
    let expired = python_srs(&w.tx.data_dir(), STRANGER, day - 22);
    for refused in [forged, expired] {
        let (reply, transcript) = rcpt(&w.tx, "", &refused);
        assert!(reply.starts_with("550 5.1.1"), "{refused}: {transcript}");
    }
    // 21 days old is still taken.
    let old = python_srs(&w.tx.data_dir(), STRANGER, day - 21);
    let (code, transcript) = send(&w.tx, "", &old, &bounce);
    assert_eq!(code, 250, "{old}: {transcript}");
    w.third.wait_for_mail(STRANGER, 2, 10);
    w.tx.wait_for_empty_queue(secs(10));
}

/// With SRS off the same forward keeps the stranger's sender and fails SPF at bob's server:
/// the test above would see it.
#[test]
fn without_srs_the_forward_fails_spf() {
    let w = world("[srs]\nenabled = false\n");
    let sent = stranger_message("fwd@example.test", "unrewritten");
    let (code, transcript) = send(&w.tx, STRANGER, "fwd@example.test", &sent);
    assert_eq!(code, 250, "{transcript}");
    let files = w.rx.wait_for_mail(REMOTE_BOB, 1, 10);
    let d = read_delivered(&files[0]);
    assert_eq!(d.return_path, format!("Return-Path: <{STRANGER}>"));
    let results = auth_results(&files[0]);
    assert!(results.contains("; spf=fail "), "{results}");
    assert!(
        results.contains(&format!("smtp.mailfrom={STRANGER};")),
        "{results}"
    );
    assert!(!w.tx.data_dir().join("srs.key").exists());
    w.tx.wait_for_empty_queue(secs(10));
}

/// Not rewritten: a user's submission to a remote address, the local copy of a forwarded
/// message, and `<>`.
#[test]
fn only_forwarded_mail_from_strangers_is_rewritten() {
    let w = world("");
    submit(&w.tx, &[REMOTE_BOB], &message(REMOTE_BOB, "from alice"));
    let files = w.rx.wait_for_mail(REMOTE_BOB, 1, 10);
    assert_eq!(
        read_delivered(&files[0]).return_path,
        format!("Return-Path: <{ALICE}>")
    );

    let sent = stranger_message("both@example.test", "to both");
    let (code, transcript) = send(&w.tx, STRANGER, "both@example.test", &sent);
    assert_eq!(code, 250, "{transcript}");
    let local = w.tx.wait_for_mail(ALICE, 1, 10);
    assert_eq!(
        read_delivered(&local[0]).return_path,
        format!("Return-Path: <{STRANGER}>")
    );
    let files = w.rx.wait_for_mail(REMOTE_BOB, 2, 10);
    let srs: Vec<String> = files
        .iter()
        .map(|f| read_delivered(f).return_path)
        .filter(|r| r.starts_with("Return-Path: <SRS0="))
        .collect();
    assert_eq!(srs.len(), 1, "the remote copy is rewritten: {srs:?}");

    let (code, transcript) = send(&w.tx, "", "fwd@example.test", &message(REMOTE_BOB, "null"));
    assert_eq!(code, 250, "{transcript}");
    let files = w.rx.wait_for_mail(REMOTE_BOB, 3, 10);
    let nulls = files
        .iter()
        .filter(|f| read_delivered(f).return_path == "Return-Path: <>")
        .count();
    assert_eq!(nulls, 1, "<> stays <>");
    w.tx.wait_for_empty_queue(secs(10));
}

/// `mta srs rotate` and a reload: new forwards use the new secret, a bounce to an address made
/// with the previous one is still taken, and a third secret's address is not.
#[test]
fn rotation_keeps_the_previous_secret() {
    let w = world("");
    let day = today();
    let before = python_srs(&w.tx.data_dir(), STRANGER, day);
    let out = w.tx.mta(&["srs", "rotate"], b"");
    assert!(out.status.success(), "{out:?}");
    let previous = w.tx.data_dir().join("srs.key.previous");
    assert_eq!(python_srs_with(&previous, STRANGER, day), before);
    w.tx.hangup();
    w.tx.wait_logged(secs(10), "the reload", || {
        w.tx.log().contains("config reloaded")
    });

    let sent = stranger_message("fwd@example.test", "after rotation");
    let (code, transcript) = send(&w.tx, STRANGER, "fwd@example.test", &sent);
    assert_eq!(code, 250, "{transcript}");
    let files = w.rx.wait_for_mail(REMOTE_BOB, 1, 10);
    let made = [day, day + 1].map(|d| python_srs(&w.tx.data_dir(), STRANGER, d));
    let return_path = read_delivered(&files[0]).return_path;
    assert!(
        made.iter()
            .any(|m| return_path == format!("Return-Path: <{m}>")),
        "{return_path} is not one of {made:?}"
    );

    let bounce = message(STRANGER, "Undelivered Mail Returned to Sender");
    let (code, transcript) = send(&w.tx, "", &before, &bounce);
    assert_eq!(code, 250, "{transcript}");
    w.third.wait_for_mail(STRANGER, 1, 10);
    // Rotated once more, the first secret is gone.
    let out = w.tx.mta(&["srs", "rotate"], b"");
    assert!(out.status.success(), "{out:?}");
    w.tx.hangup();
    w.tx.wait_logged(secs(10), "the second reload", || {
        w.tx.log().matches("config reloaded").count() == 2
    });
    let (reply, transcript) = rcpt(&w.tx, "", &before);
    assert!(reply.starts_with("550 5.1.1"), "{transcript}");
    w.tx.wait_for_empty_queue(secs(10));
}
