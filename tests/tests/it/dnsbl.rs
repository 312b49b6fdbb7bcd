//! DNS blocklists (`[[inbound.dnsbl]]`, RFC 5782) with dnsmasq serving the lists on loopback
//! and clients connecting from the loopback address the list names: a listed client is
//! refused at RCPT on port 25 (postmaster still reachable), an unlisted one is not, a user on
//! submission is never looked up, a list's refusal codes and answers outside 127.0.0.0/8 never
//! block, a list that never answers does not block, mark mode adds `X-DNSBL:` (and removes a
//! client's own), and the weights of several lists add up towards the threshold.

use std::net::IpAddr;

use mta_tests::silent_dns::SilentDns;
use mta_tests::{ALICE, ALICE_PASSWORD, SmtpClient, TestDns, TestMta, read_delivered, secs};

const BOB: &str = "bob@example.test";
const LISTED: &str = "127.0.0.2";
const UNLISTED: &str = "127.0.0.1";

/// The lists: `zen.test` names 127.0.0.2 (with a TXT record saying why), answers a refusal
/// code for 127.0.0.3 and an address outside 127.0.0.0/8 for 127.0.0.4; `other.test` names
/// 127.0.0.2 and 127.0.0.5.
fn lists() -> TestDns {
    TestDns::start(&[
        "--host-record=2.0.0.127.zen.test,127.0.0.2",
        "--txt-record=2.0.0.127.zen.test,\"Listed: see http://zen.test/q?127.0.0.2\"",
        "--host-record=3.0.0.127.zen.test,127.255.255.254",
        "--host-record=4.0.0.127.zen.test,192.0.2.1",
        "--host-record=2.0.0.127.other.test,127.0.0.3",
        "--host-record=5.0.0.127.other.test,127.0.0.3",
    ])
}

/// A server asking `lists` (TOML tables) through `dns` (a `[dns]` table).
fn server(dns: &str, inbound: &str, lists: &str) -> TestMta {
    let mta = TestMta::start(&format!(
        "{dns}\n[inbound]\nchecks = false\n{inbound}\n{lists}"
    ));
    mta.add_user(ALICE, ALICE_PASSWORD);
    mta.add_user(BOB, "bob-password-1");
    mta
}

const ZEN: &str = "[[inbound.dnsbl]]\nzone = \"zen.test\"\n";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("an address")
}

/// A session on port 25 from `source`, after EHLO and MAIL.
fn from(mta: &TestMta, source: &str) -> SmtpClient {
    let mut c = SmtpClient::connect_from(mta.smtp_addr(), ip(source));
    c.reply("the greeting");
    c.expect("EHLO client.test", 250);
    c.expect("MAIL FROM:<someone@remote.test>", 250);
    c
}

fn message(subject: &str, extra: &str) -> String {
    from_message("someone@remote.test", subject, extra)
}

fn from_message(from: &str, subject: &str, extra: &str) -> String {
    format!("From: {from}\r\nTo: {BOB}\r\nSubject: {subject}\r\n{extra}\r\nHello.\r\n")
}

/// The delivered messages' text after our `Received:`.
fn delivered(mta: &TestMta, n: usize) -> Vec<String> {
    mta.wait_for_mail(BOB, n, 20)
        .iter()
        .map(|f| String::from_utf8_lossy(&read_delivered(f).rest).into_owned())
        .collect()
}

#[test]
fn listed_client_is_refused_at_rcpt_but_reaches_postmaster() {
    let dns = lists();
    let mta = server(&dns.config_toml(), "", ZEN);
    let mut c = from(&mta, LISTED);
    let r = c.command(&format!("RCPT TO:<{BOB}>"));
    assert_eq!(
        (r.code, r.enhanced()),
        (554, Some("5.7.1")),
        "{}",
        c.transcript()
    );
    let text = r.to_string();
    assert!(text.contains("[127.0.0.2] listed by zen.test"), "{text}");
    assert!(
        text.contains("Listed: see http://zen.test/q?127.0.0.2"),
        "{text}"
    );
    // RFC 5321 §4.5.1: postmaster is still reachable, both ways of naming it.
    c.expect("RCPT TO:<Postmaster>", 250);
    c.expect("RCPT TO:<postmaster@example.test>", 250);
    // And bob stays refused.
    assert_eq!(c.command(&format!("RCPT TO:<{BOB}>")).code, 554);
    c.expect("QUIT", 221);
    mta.wait_logged(secs(10), "the listing logged", || {
        mta.log().contains("client listed by DNS blocklists")
    });

    // The unlisted client's mail goes through.
    let mut c = SmtpClient::connect_from(mta.smtp_addr(), ip(UNLISTED));
    c.reply("the greeting");
    c.expect("EHLO client.test", 250);
    let r = c.send_message("someone@remote.test", &[BOB], message("ok", "").as_bytes());
    assert_eq!(r.code, 250, "{}", c.transcript());
    assert_eq!(delivered(&mta, 1).len(), 1);
}

#[test]
fn submission_is_never_looked_up() {
    let dns = lists();
    let mta = server(&dns.config_toml(), "", ZEN);
    let mut c = SmtpClient::connect_tls_from(mta.submissions_addr(), ip(LISTED), &mta.cert_path());
    c.reply("the greeting");
    c.expect("EHLO client.test", 250);
    assert_eq!(
        c.auth_plain(ALICE, ALICE_PASSWORD).code,
        235,
        "{}",
        c.transcript()
    );
    let r = c.send_message(
        ALICE,
        &[BOB],
        from_message(ALICE, "from alice", "").as_bytes(),
    );
    assert_eq!(r.code, 250, "{}", c.transcript());
    c.expect("QUIT", 221);
    assert_eq!(delivered(&mta, 1).len(), 1);
    assert!(
        !dns.log().contains("2.0.0.127.zen.test"),
        "submission asked the list:\n{}",
        dns.log()
    );
}

#[test]
fn refusal_codes_and_answers_outside_loopback_never_block() {
    let dns = lists();
    let mta = server(&dns.config_toml(), "", ZEN);
    for source in ["127.0.0.3", "127.0.0.4", "127.0.0.3"] {
        let mut c = from(&mta, source);
        c.expect(&format!("RCPT TO:<{BOB}>"), 250);
        c.expect("QUIT", 221);
    }
    // The log is read from the server's stderr as it comes: wait for both lines.
    mta.wait_logged(secs(10), "the odd answers logged", || {
        let log = mta.log();
        log.contains("refused our query") && log.contains("answered outside 127.0.0.0/8")
    });
    let log = mta.log();
    // Logged, once an hour: the second client on 127.0.0.3 adds no line.
    assert_eq!(log.matches("refused our query").count(), 1, "{log}");
    assert_eq!(
        log.matches("answered outside 127.0.0.0/8").count(),
        1,
        "{log}"
    );
}

#[test]
fn a_list_that_never_answers_does_not_block() {
    let silent = SilentDns::start();
    let mta = server(&silent.config_toml(), "", ZEN);
    let mut c = from(&mta, LISTED);
    c.expect(&format!("RCPT TO:<{BOB}>"), 250);
    c.expect("QUIT", 221);
    assert!(silent.queries() > 0, "the list was never asked");
    mta.wait_logged(secs(10), "the silent list logged", || {
        mta.log().contains("did not answer in time")
    });
}

#[test]
fn mark_mode_adds_the_field_and_removes_a_clients_own() {
    let dns = lists();
    let mta = server(&dns.config_toml(), "dnsbl_action = \"mark\"", ZEN);
    let forged = "X-DNSBL: nothing to see\r\n";
    for (source, subject) in [(LISTED, "listed"), (UNLISTED, "unlisted")] {
        let mut c = SmtpClient::connect_from(mta.smtp_addr(), ip(source));
        c.reply("the greeting");
        c.expect("EHLO client.test", 250);
        let m = message(subject, forged);
        let r = c.send_message("someone@remote.test", &[BOB], m.as_bytes());
        assert_eq!(r.code, 250, "{}", c.transcript());
        c.expect("QUIT", 221);
    }
    let mail = delivered(&mta, 2);
    let listed = mail.iter().find(|m| m.contains("Subject: listed")).unwrap();
    let unlisted = mail
        .iter()
        .find(|m| m.contains("Subject: unlisted"))
        .unwrap();
    assert!(
        listed.contains("X-DNSBL: 127.0.0.2 listed by zen.test (127.0.0.2)\r\n"),
        "{listed}"
    );
    assert_eq!(listed.matches("X-DNSBL:").count(), 1, "{listed}");
    assert!(!unlisted.contains("X-DNSBL"), "{unlisted}");
}

#[test]
fn weights_add_up_to_the_threshold() {
    let dns = lists();
    let both = "[[inbound.dnsbl]]\nzone = \"zen.test\"\nreturns = [\"127.0.0.2\"]\n\
                [[inbound.dnsbl]]\nzone = \"other.test\"\nreturns = [\"127.0.0.0/30\"]\n";
    let mta = server(&dns.config_toml(), "dnsbl_threshold = 2", both);
    // 127.0.0.5 is on one list only: 1 of 2.
    let mut c = from(&mta, "127.0.0.5");
    c.expect(&format!("RCPT TO:<{BOB}>"), 250);
    c.expect("QUIT", 221);
    // 127.0.0.2 is on both: 2 of 2.
    let mut c = from(&mta, LISTED);
    let r = c.command(&format!("RCPT TO:<{BOB}>"));
    assert_eq!(r.code, 554, "{}", c.transcript());
    assert!(
        r.to_string().contains("zen.test, other.test"),
        "{}",
        r.to_string()
    );
}

#[test]
fn an_ipv6_client_is_looked_up_by_its_nibbles() {
    // ::1 reversed: 1, then 31 zeros (RFC 5782 §2.4).
    let name = format!("1.{}zen.test", "0.".repeat(31));
    let dns = TestDns::start(&[&format!("--host-record={name},127.0.0.2")]);
    let mta = TestMta::start_config(|dir| {
        mta_tests::base_config(
            dir,
            &format!("{}\n[inbound]\nchecks = false\n{ZEN}", dns.config_toml()),
        )
        .replace("smtp = [\"127.0.0.1:0\"]", "smtp = [\"[::1]:0\"]")
    });
    mta.add_user(BOB, "bob-password-1");
    let mut c = from(&mta, "::1");
    let r = c.command(&format!("RCPT TO:<{BOB}>"));
    assert_eq!(r.code, 554, "{}", c.transcript());
    assert!(r.to_string().contains("[::1] listed by zen.test"), "{r}");
    assert!(dns.log().contains(&name), "{}", dns.log());
}
