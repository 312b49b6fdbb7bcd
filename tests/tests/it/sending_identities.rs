//! Sending identities for machines (`[senders]`): a service account allowed `*@host.example.test`
//! sends as `root@host.example.test` with swaks (envelope and `From:`), another user cannot,
//! and the pattern covers no other domain; `mta user show` lists what each may send as.

use std::net::SocketAddr;
use std::process::Command;

use mta_tests::{ALICE, ALICE_PASSWORD, Output, TestMta, base_config, read_delivered, run, secs};

const BOB: &str = "bob@example.test";
const APP: &str = "app@example.test";
const APP_PASSWORD: &str = "app-password-1";

fn server() -> TestMta {
    let mta = TestMta::start_config(|dir| {
        base_config(
            dir,
            "[senders]\n\"app@example.test\" = [\"*@host.example.test\"]\n\
             [aliases]\n\"info@example.test\" = [\"app@example.test\"]\n",
        )
        .replace(
            "local_domains = [\"example.test\"]",
            "local_domains = [\"example.test\", \"host.example.test\"]",
        )
    });
    mta.add_user(ALICE, ALICE_PASSWORD);
    mta.add_user(BOB, "bob-password-1");
    mta.add_user(APP, APP_PASSWORD);
    mta
}

/// swaks on the submission port with STARTTLS, logged in as `user`, sending as `from` to bob.
fn swaks(server: SocketAddr, user: &str, password: &str, from: &str) -> Output {
    run(
        "swaks",
        Command::new("swaks")
            .args(["--server", &server.to_string(), "--timeout", "10"])
            .args(["--helo", "swaks.client.test", "--tls"])
            .args(["--auth", "PLAIN", "--auth-user", user])
            .args(["--auth-password", password])
            .args(["--from", from, "--to", BOB]),
        b"",
        secs(30),
    )
}

#[test]
fn a_service_account_sends_as_any_address_of_its_domain_and_no_one_else_does() {
    let mta = server();
    let out = swaks(
        mta.submission_addr(),
        APP,
        APP_PASSWORD,
        "root@host.example.test",
    );
    out.assert_success("swaks as app, from root@host.example.test");
    let files = mta.wait_for_mail(BOB, 1, 10);
    let d = read_delivered(&files[0]);
    assert_eq!(d.return_path, "Return-Path: <root@host.example.test>");
    let rest = String::from_utf8_lossy(&d.rest);
    assert!(rest.contains("From: root@host.example.test"), "{rest}");
    // Alice has no such pattern; app's pattern covers no other domain.
    for (user, password, from) in [
        (ALICE, ALICE_PASSWORD, "root@host.example.test"),
        (APP, APP_PASSWORD, "root@example.test"),
        (APP, APP_PASSWORD, "root@sub.host.example.test"),
    ] {
        let out = swaks(mta.submission_addr(), user, password, from);
        assert!(!out.status.success(), "{user} sent as {from}:\n{out}");
        assert!(out.all().contains("553 5.7.1"), "{user} as {from}:\n{out}");
    }
    assert_eq!(mta.maildir_new(BOB).len(), 1, "only app's message arrived");
    let show = mta.mta(&["user", "show", APP], b"");
    show.assert_success("mta user show");
    // What it may send as, then its sending counters (from the running server).
    assert!(
        show.stdout.starts_with(
            "login app@example.test\nalias info@example.test\nsender *@host.example.test\nuser "
        ),
        "{show}"
    );
    let show = mta.mta(&["user", "show", ALICE], b"");
    assert!(
        show.stdout.starts_with("login alice@example.test\nuser "),
        "{show}"
    );
    let show = mta.mta(&["user", "show", "nobody@example.test"], b"");
    assert!(!show.status.success(), "{show}");
}
