//! msmtp, the sendmail-like client many servers and desktops use, submitting to `mta` with
//! a config file of its own: on 587 with STARTTLS and AUTH, and on 465 (implicit TLS),
//! verifying mta's certificate by name. Beside the swaks and smtplib tests.

use std::process::Command;

use mta_tests::{ALICE, ALICE_PASSWORD, KeptDir, TestMta, read_delivered, run, secs};

const BOB: &str = "bob@example.test";

/// Writes an msmtp config with one account per port and returns its path.
fn config(dir: &KeptDir, mta: &TestMta) -> std::path::PathBuf {
    let text = format!(
        "defaults\n\
         tls on\n\
         tls_trust_file {cert}\n\
         tls_host_override mx.example.test\n\
         auth plain\n\
         user {ALICE}\n\
         password {ALICE_PASSWORD}\n\
         from {ALICE}\n\
         logfile {log}\n\
         \n\
         account submission\n\
         host 127.0.0.1\n\
         port {sub}\n\
         tls_starttls on\n\
         \n\
         account submissions\n\
         host 127.0.0.1\n\
         port {subs}\n\
         tls_starttls off\n",
        cert = mta.cert_path().display(),
        log = dir.path().join("msmtp.log").display(),
        sub = mta.submission_addr().port(),
        subs = mta.listener("submissions").port(),
    );
    let path = dir.path().join("msmtprc");
    std::fs::write(&path, text).unwrap();
    // msmtp refuses a config file with a password that others may read.
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    path
}

fn msmtp(config: &std::path::Path, account: &str, subject: &str) -> mta_tests::Output {
    let message = format!("From: {ALICE}\nTo: {BOB}\nSubject: {subject}\n\nsent with msmtp\n");
    run(
        "msmtp",
        Command::new("msmtp")
            .arg("-C")
            .arg(config)
            .args(["-a", account, BOB]),
        message.as_bytes(),
        secs(30),
    )
}

#[test]
fn msmtp_submits_on_587_with_starttls_and_on_465() {
    let mta = TestMta::start("");
    mta.add_user(ALICE, ALICE_PASSWORD);
    mta.add_user(BOB, "bob-password-1");
    let dir = KeptDir::new();
    let config = config(&dir, &mta);
    for (n, account) in ["submission", "submissions"].into_iter().enumerate() {
        msmtp(&config, account, account).assert_success(account);
        let files = mta.wait_for_mail(BOB, n + 1, 10);
        assert_eq!(files.len(), n + 1, "once each: {files:?}");
        let mine = files
            .iter()
            .map(|f| read_delivered(f))
            .find(|d| String::from_utf8_lossy(&d.rest).contains(&format!("Subject: {account}\r\n")))
            .unwrap_or_else(|| panic!("no message with Subject: {account}"));
        assert_eq!(mine.return_path, format!("Return-Path: <{ALICE}>"));
        assert!(
            mine.received.contains(" with ESMTPSA id "),
            "{}",
            mine.received
        );
    }
    let log = std::fs::read_to_string(dir.path().join("msmtp.log")).unwrap();
    assert_eq!(log.matches("exitcode=EX_OK").count(), 2, "{log}");
}
