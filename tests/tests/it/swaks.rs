//! swaks, the SMTP swiss army knife, against every listener.

use std::net::SocketAddr;
use std::process::Command;

use mta_tests::{ALICE, ALICE_PASSWORD, Output, TestMta, read_delivered, run, secs};

const BOB: &str = "bob@example.test";

fn server() -> TestMta {
    let mta = TestMta::start("");
    mta.add_user(ALICE, ALICE_PASSWORD);
    mta.add_user(BOB, "bob-password-1");
    mta
}

/// Runs swaks against `server` with `args` after the common ones.
fn swaks(server: SocketAddr, args: &[&str]) -> Output {
    run(
        "swaks",
        Command::new("swaks")
            .args(["--server", &server.to_string(), "--timeout", "10"])
            .args(["--helo", "swaks.client.test"])
            .args(args),
        b"",
        secs(30),
    )
}

fn auth_args<'a>(mech: &'a str, password: &'a str) -> [&'a str; 10] {
    [
        "--auth",
        mech,
        "--auth-user",
        ALICE,
        "--auth-password",
        password,
        "--from",
        ALICE,
        "--to",
        BOB,
    ]
}

/// Waits for one message in bob's Maildir and checks it came from alice through us with
/// the `with` protocol `with` (RFC 3848).
fn assert_delivered_to_bob(mta: &TestMta, with: &str) {
    let files = mta.wait_for_mail(BOB, 1, 10);
    assert_eq!(files.len(), 1, "{files:?}");
    let d = read_delivered(&files[0]);
    assert_eq!(d.return_path, format!("Return-Path: <{ALICE}>"));
    assert_eq!(d.delivered_to, format!("Delivered-To: {BOB}"));
    assert!(
        d.received
            .starts_with("Received: from swaks.client.test ([127.0.0.1])\r\n"),
        "{}",
        d.received
    );
    assert!(
        d.received.contains(&format!(" (mta) with {with} id ")),
        "expected `with {with}` in {}",
        d.received
    );
    let rest = String::from_utf8_lossy(&d.rest);
    assert!(rest.contains("This is a test mailing"), "{rest}");
}

#[test]
fn submission_starttls_auth_plain() {
    let mta = server();
    let mut args = vec!["--tls"];
    args.extend(auth_args("PLAIN", ALICE_PASSWORD));
    let out = swaks(mta.submission_addr(), &args);
    out.assert_success("swaks --tls --auth PLAIN");
    assert!(out.all().contains("235 2.7.0"), "{out}");
    assert_delivered_to_bob(&mta, "ESMTPSA");
}

#[test]
fn submission_starttls_auth_login() {
    let mta = server();
    let mut args = vec!["--tls"];
    args.extend(auth_args("LOGIN", ALICE_PASSWORD));
    let out = swaks(mta.submission_addr(), &args);
    out.assert_success("swaks --tls --auth LOGIN");
    assert_delivered_to_bob(&mta, "ESMTPSA");
}

#[test]
fn submissions_implicit_tls() {
    let mta = server();
    let mut args = vec!["--tlsc"];
    args.extend(auth_args("PLAIN", ALICE_PASSWORD));
    let out = swaks(mta.submissions_addr(), &args);
    out.assert_success("swaks --tlsc");
    assert_delivered_to_bob(&mta, "ESMTPSA");
}

#[test]
fn smtp_port_without_auth_to_a_local_user() {
    let mta = server();
    let out = swaks(mta.smtp_addr(), &["--from", ALICE, "--to", BOB]);
    out.assert_success("swaks to port 25");
    assert_delivered_to_bob(&mta, "ESMTP");
}

#[test]
fn wrong_password_is_refused() {
    let mta = server();
    let mut args = vec!["--tls"];
    args.extend(auth_args("PLAIN", "not-the-password"));
    let out = swaks(mta.submission_addr(), &args);
    assert!(!out.status.success(), "swaks should fail: {out}");
    assert!(out.all().contains("535 5.7.8"), "{out}");
    assert!(mta.queue_json()["records"].as_array().unwrap().is_empty());
    assert!(mta.maildir_new(BOB).is_empty());
}

#[test]
fn relay_denied_on_the_smtp_port() {
    let mta = server();
    let out = swaks(
        mta.smtp_addr(),
        &[
            "--from",
            "someone@remote.test",
            "--to",
            "victim@elsewhere.test",
        ],
    );
    assert!(!out.status.success(), "swaks should fail: {out}");
    assert!(out.all().contains("550 5.7.1"), "{out}");
    let queue = mta.queue_json();
    assert!(
        queue["records"].as_array().unwrap().is_empty(),
        "nothing may be queued: {queue}"
    );
    assert!(
        !mta.data_dir().join("mail").exists(),
        "nothing may be delivered"
    );
}
