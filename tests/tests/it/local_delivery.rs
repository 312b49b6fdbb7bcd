//! Local delivery options: an alias with several targets, a domain's catch-all and
//! plus-addressing into real Maildirs (over port 25, no AUTH), and LMTP delivery to a real
//! LMTP server (Python's aiosmtpd) whose per-recipient replies after the final dot become
//! per-recipient outcomes: delivered, bounced, retried.

use std::path::Path;

use mta_tests::{
    KeptDir, LmtpServer, SmtpClient, TestMta, queue_id, read_delivered, secs, wait_for,
    with_inbound_default,
};

/// example.test has users and an alias; other.test has only a catch-all.
fn two_domains(dir: &Path, extra_toml: &str) -> String {
    format!(
        "hostname = \"mx.example.test\"\n\
         data_dir = {:?}\n\
         local_domains = [\"example.test\", \"other.test\"]\n\
         allow_root = true\n\
         {}\n\
         [aliases]\n\
         \"team@example.test\" = [\"alice@example.test\", \"bob@example.test\"]\n\
         \"@other.test\" = [\"carol@example.test\"]\n\
         [listen]\n\
         smtp = [\"127.0.0.1:0\"]\n\
         submission = [\"127.0.0.1:0\"]\n\
         submissions = [\"127.0.0.1:0\"]\n",
        dir.join("data").display().to_string(),
        with_inbound_default(extra_toml),
    )
}

/// Connects to port 25 and says EHLO.
fn smtp(mta: &TestMta) -> SmtpClient {
    let mut c = SmtpClient::connect(mta.smtp_addr());
    c.reply("the greeting");
    c.expect("EHLO client.test", 250);
    c
}

#[test]
fn alias_catch_all_and_tags_into_maildirs() {
    let mta = TestMta::start_config(|dir| two_domains(dir, ""));
    for user in ["alice", "bob", "carol"] {
        mta.add_user(
            &format!("{user}@example.test"),
            &format!("{user}-password-1"),
        );
    }
    // A user with the delimiter in its name would steal a tag's mail: refused.
    let bad = mta.mta(
        &["user", "add", "bob+x@example.test", "--password-stdin"],
        b"bob-password-2\n",
    );
    assert!(!bad.status.success(), "{bad}");
    assert!(bad.stderr.contains("recipient delimiter"), "{bad}");

    let mut c = smtp(&mta);
    c.expect("MAIL FROM:<someone@remote.test>", 250);
    for rcpt in [
        "team@example.test",
        "bob+news@example.test",
        "whoever@other.test",
    ] {
        c.expect(&format!("RCPT TO:<{rcpt}>"), 250);
    }
    // A tag makes no unknown user known, and opens no relay.
    let refused = c.command("RCPT TO:<nobody+x@example.test>");
    assert!(refused.matches(550, Some("5.1.1")), "{refused}");
    let refused = c.command("RCPT TO:<bob+x@remote.test>");
    assert!(refused.matches(550, Some("5.7.1")), "{refused}");
    c.expect("DATA", 354);
    c.send_raw(b"From: someone@remote.test\r\nSubject: options\r\n\r\nhello\r\n.\r\n")
        .expect("sending the message");
    let reply = c.reply("the reply to the final dot");
    assert_eq!(reply.code, 250, "{reply}");
    let id = queue_id(&reply.to_string());

    // The alias reaches both its targets, the tag reaches bob's own Maildir (a second copy,
    // for a second address), the catch-all reaches carol.
    let alice = mta.wait_for_mail("alice@example.test", 1, 20);
    let bob = mta.wait_for_mail("bob@example.test", 2, 20);
    let carol = mta.wait_for_mail("carol@example.test", 1, 20);
    mta.wait_for_empty_queue(secs(20));
    let to = |files: &[std::path::PathBuf]| -> Vec<String> {
        let mut v: Vec<String> = files
            .iter()
            .map(|f| read_delivered(f).delivered_to)
            .collect();
        v.sort();
        v
    };
    assert_eq!(to(&alice), ["Delivered-To: alice@example.test"]);
    assert_eq!(
        to(&bob),
        [
            "Delivered-To: bob+news@example.test",
            "Delivered-To: bob@example.test"
        ]
    );
    assert_eq!(to(&carol), ["Delivered-To: carol@example.test"]);
    for file in alice.iter().chain(&bob).chain(&carol) {
        let d = read_delivered(file);
        assert!(d.received.contains(&id), "{}", d.received);
        assert!(String::from_utf8_lossy(&d.rest).ends_with("\r\n\r\nhello\r\n"));
    }
    // No Maildir was made for the tagged name or the catch-all's address.
    assert!(mta.maildir_new("bob+news@example.test").is_empty());
    assert!(mta.maildir_new("whoever@other.test").is_empty());
}

#[test]
fn plus_addressing_off_refuses_tags() {
    let mta = TestMta::start("[local]\nrecipient_delimiter = \"\"\n");
    mta.add_user("bob@example.test", "bob-password-1");
    let mut c = smtp(&mta);
    c.expect("MAIL FROM:<someone@remote.test>", 250);
    let refused = c.command("RCPT TO:<bob+news@example.test>");
    assert!(refused.matches(550, Some("5.1.1")), "{refused}");
    c.expect("RCPT TO:<bob@example.test>", 250);
}

#[test]
fn lmtp_refusal_at_rcpt_is_ours_before_acceptance() {
    // The LMTP server is asked at RCPT time: a mailbox it does not have is refused to the
    // client, so nothing is accepted that would later bounce to a sender who may be forged.
    let lmtp_dir = KeptDir::new();
    let lmtp = LmtpServer::start(lmtp_dir.path());
    let mta = TestMta::start(&format!(
        "[local]\ndelivery = \"lmtp\"\nlmtp = \"{}\"\n",
        lmtp.addr()
    ));
    for user in ["ok", "nouser"] {
        mta.add_user(
            &format!("{user}@example.test"),
            &format!("{user}-password-1"),
        );
    }
    let mut c = smtp(&mta);
    c.expect("MAIL FROM:<x@stranger.test>", 250);
    let refused = c.command("RCPT TO:<nouser@example.test>");
    assert!(refused.matches(550, Some("5.1.1")), "{refused}");
    c.expect("RCPT TO:<ok@example.test>", 250);
    c.expect("DATA", 354);
    c.send_raw(b"From: x@stranger.test\r\nSubject: rcpt check\r\n\r\nhi\r\n.\r\n")
        .expect("write");
    let reply = c.reply("the reply to the final dot");
    assert_eq!(reply.code, 250, "{reply}");
    mta.wait_for_empty_queue(secs(20));
    assert_eq!(lmtp.messages("ok@example.test").len(), 1);
    assert!(lmtp.messages("nouser@example.test").is_empty());
    assert!(
        mta.log()
            .contains("RCPT refused: the LMTP server does not take it"),
        "{}",
        mta.log()
    );
}

#[test]
fn lmtp_replies_per_recipient_become_delivered_bounced_retried() {
    let lmtp_dir = KeptDir::new();
    let lmtp = LmtpServer::start(lmtp_dir.path());
    let extra = format!(
        "[local]\ndelivery = \"lmtp\"\nlmtp = \"{}\"\n\
         [queue]\nretry_first = \"1s\"\nretry_max = \"2s\"\n",
        lmtp.addr()
    );
    let mta = TestMta::start(&extra);
    for user in ["sender", "ok", "gone", "busy"] {
        mta.add_user(
            &format!("{user}@example.test"),
            &format!("{user}-password-1"),
        );
    }
    // Submitted by sender@ with AUTH: its failures are reported to it (mail from another
    // server is bounced only to a sender SPF or DKIM vouched for).
    let mut c = SmtpClient::connect(mta.submission_addr());
    c.reply("the greeting");
    c.expect("EHLO client.test", 250);
    c.expect("STARTTLS", 220);
    c.upgrade_tls(&mta.cert_path());
    c.expect("EHLO client.test", 250);
    assert_eq!(
        c.auth_plain("sender@example.test", "sender-password-1")
            .code,
        235
    );
    let body = b"From: sender@example.test\r\nSubject: lmtp\r\n\r\nfirst line\r\n.leading dot\r\n";
    let reply = c.send_message(
        "sender@example.test",
        &["ok@example.test", "gone@example.test", "busy@example.test"],
        body,
    );
    assert_eq!(reply.code, 250, "{reply}");
    let id = queue_id(&reply.to_string());

    // 2xx: delivered, byte for byte after our Received header (dot-stuffing undone by the
    // server), from the original sender.
    let what = "ok@ delivered over LMTP";
    wait_for(secs(20), what, || {
        !lmtp.messages("ok@example.test").is_empty()
    });
    let (from, got) = &lmtp.messages("ok@example.test")[0];
    assert_eq!(from, "sender@example.test");
    let got = String::from_utf8_lossy(got);
    assert!(got.starts_with("Received: from client.test"), "{got}");
    assert!(got.contains(&id), "{got}");
    assert!(
        got.ends_with("\r\n\r\nfirst line\r\n.leading dot\r\n"),
        "{got}"
    );

    // 4xx: deferred, retried by the queue, then delivered (the server accepts the second
    // try); delivered recipients are not sent again.
    let what = "busy@ delivered on a retry";
    mta.wait_logged(secs(30), what, || {
        !lmtp.messages("busy@example.test").is_empty()
    });
    assert!(mta.log().contains("4.2.0"), "the 451 is logged");

    // 5xx: failed, and the sender gets a bounce (delivered over LMTP too, from <>).
    let what = "a bounce to sender@";
    wait_for(secs(20), what, || {
        !lmtp.messages("sender@example.test").is_empty()
    });
    let (from, bounce) = &lmtp.messages("sender@example.test")[0];
    assert_eq!(from, "<>", "a bounce has the null sender");
    let bounce = String::from_utf8_lossy(bounce);
    assert!(bounce.contains("gone@example.test"), "{bounce}");
    assert!(bounce.contains("5.1.1"), "{bounce}");
    assert!(!bounce.contains("busy@example.test"), "{bounce}");

    mta.wait_for_empty_queue(secs(20));
    assert!(lmtp.messages("gone@example.test").is_empty());
    assert_eq!(lmtp.messages("ok@example.test").len(), 1, "ok@ got it once");
    assert_eq!(lmtp.messages("busy@example.test").len(), 1);
}

#[test]
fn lmtp_server_unreachable_defers() {
    let dir = KeptDir::new();
    let socket = dir.path().join("no-lmtp.sock");
    let extra = format!(
        "[local]\ndelivery = \"lmtp\"\nlmtp = {:?}\n",
        socket.display().to_string()
    );
    let mta = TestMta::start(&extra);
    mta.add_user("bob@example.test", "bob-password-1");
    let mut c = smtp(&mta);
    let reply = c.send_message(
        "someone@remote.test",
        &["bob@example.test"],
        b"Subject: x\r\n\r\nx\r\n",
    );
    assert_eq!(reply.code, 250, "{reply}");
    let id = queue_id(&reply.to_string());
    let rcpt = mta.wait_for_deferral(&id, "bob@example.test", 1, secs(20));
    let why = rcpt["last_result"].as_str().unwrap_or_default();
    assert!(
        why.contains("LMTP") && why.contains("no-lmtp.sock"),
        "{rcpt}"
    );
}
