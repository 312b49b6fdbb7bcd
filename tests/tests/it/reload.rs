//! Reloading without a restart: `mta reload` and SIGHUP take a good new config for new
//! sessions while an open session goes on with the old one; a bad config or one that needs a
//! restart is refused and the old one stays; a certificate renewed on disk is served without
//! any reload.

use std::path::Path;
use std::process::Command;

use mta_tests::{SmtpClient, TestMta, run, secs, wait_for};

const BOB: &str = "bob@example.test";

fn server(extra: &str) -> TestMta {
    let mta = TestMta::start(extra);
    mta.add_user(BOB, "bob-password-1");
    mta
}

/// A session on the smtp listener, after EHLO and `MAIL FROM`.
fn open_transaction(mta: &TestMta) -> SmtpClient {
    let mut c = SmtpClient::connect(mta.smtp_addr());
    c.reply("the greeting");
    c.expect("EHLO client.test", 250);
    c.expect("MAIL FROM:<someone@remote.test>", 250);
    c
}

/// Appends `text` to the server's config file.
fn append_config(mta: &TestMta, text: &str) {
    let mut config = std::fs::read_to_string(mta.config_path()).unwrap();
    config.push_str(text);
    std::fs::write(mta.config_path(), config).unwrap();
}

#[test]
fn good_config_reloads_for_new_sessions_and_open_ones_go_on() {
    let mta = server("");
    let mut open = open_transaction(&mta);
    assert_eq!(open.command("RCPT TO:<team@example.test>").code, 550);
    append_config(
        &mta,
        "\n[aliases]\n\"team@example.test\" = [\"bob@example.test\"]\n",
    );
    let out = mta.mta(&["reload"], b"");
    out.assert_success("mta reload");
    assert_eq!(out.stdout.trim(), "reloaded");
    // The open session keeps its settings and is not cut.
    assert_eq!(open.command("RCPT TO:<team@example.test>").code, 550);
    assert_eq!(open.command("RCPT TO:<bob@example.test>").code, 250);
    open.expect("DATA", 354);
    open.send_raw(b"Subject: still here\r\n\r\nbody\r\n.\r\n")
        .unwrap();
    let reply = open.reply("the reply to the final dot");
    assert_eq!(reply.code, 250, "{}", open.transcript());
    // A new session has the alias.
    let mut fresh = open_transaction(&mta);
    assert_eq!(fresh.command("RCPT TO:<team@example.test>").code, 250);

    // SIGHUP does the same.
    append_config(&mta, "\"sales@example.test\" = [\"bob@example.test\"]\n");
    mta.hangup();
    wait_for(secs(10), "the SIGHUP reload", || {
        mta.log().matches("config reloaded").count() == 2
    });
    let mut after = open_transaction(&mta);
    assert_eq!(after.command("RCPT TO:<sales@example.test>").code, 250);
}

#[test]
fn bad_config_is_refused_and_the_old_one_stays() {
    let mta = server("");
    let good = std::fs::read_to_string(mta.config_path()).unwrap();
    std::fs::write(
        mta.config_path(),
        format!("{good}\n[limits]\nmax_recipients = 5\n"),
    )
    .unwrap();
    // `mta reload` reads the file first and shows the errors, as check-config does.
    let out = mta.mta(&["reload"], b"");
    assert_eq!(out.code(), 2, "{}", out.all());
    assert!(
        out.stderr
            .contains("limits.max_recipients: 5 is below the minimum"),
        "{}",
        out.all()
    );
    // SIGHUP: the server refuses it itself and says why in its log.
    mta.hangup();
    wait_for(secs(5), "the refusal in the log", || {
        let log = mta.log();
        log.contains("reload refused") && log.contains("max_recipients")
    });
    // Still serving with the old config.
    let mut c = open_transaction(&mta);
    assert_eq!(c.command("RCPT TO:<bob@example.test>").code, 250);

    // A change that needs a restart is refused and named.
    let moved = good.replace("smtp = [\"127.0.0.1:0\"]", "smtp = [\"127.0.0.1:1\"]");
    assert_ne!(
        moved, good,
        "the test config has the smtp listener on 127.0.0.1:0"
    );
    std::fs::write(mta.config_path(), moved).unwrap();
    let out = mta.mta(&["reload"], b"");
    assert_ne!(out.code(), 0);
    assert!(
        out.stderr
            .contains("[listen] changed, which needs a restart"),
        "{}",
        out.all()
    );
}

/// A self-signed certificate for `name` in `dir/NAME.{crt,key}`.
fn make_cert(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    mta_tests::certs::self_signed(dir, name, name)
}

/// The subject CN of the certificate served after STARTTLS on `mta`'s submission port.
fn served_name(mta: &TestMta) -> String {
    const SCRIPT: &str = r#"
import smtplib, ssl, sys
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=10) as s:
    s.starttls(context=ctx)
    der = s.sock.getpeercert(binary_form=True)
import subprocess
pem = ssl.DER_cert_to_PEM_cert(der)
out = subprocess.run(["openssl", "x509", "-noout", "-subject"], input=pem.encode(), capture_output=True)
print(out.stdout.decode().strip())
"#;
    let port = mta.submission_addr().port().to_string();
    let out = run(
        "served certificate",
        Command::new("python3").args(["-c", SCRIPT, &port]),
        b"",
        secs(30),
    );
    out.assert_success("python3 starttls");
    out.stdout.trim().to_string()
}

#[test]
fn renewed_certificate_files_are_served_without_a_reload() {
    let dir = mta_tests::KeptDir::new();
    let (cert, key) = make_cert(dir.path(), "first.example.test");
    let live_cert = dir.path().join("live.crt");
    let live_key = dir.path().join("live.key");
    std::fs::copy(&cert, &live_cert).unwrap();
    std::fs::copy(&key, &live_key).unwrap();
    let mta = TestMta::start(&format!(
        "[tls]\ncert = {:?}\nkey = {:?}\n",
        live_cert.display().to_string(),
        live_key.display().to_string()
    ));
    assert!(served_name(&mta).contains("first.example.test"));
    // An ACME client renews: new files moved into place (key first, then the chain).
    let (cert2, key2) = make_cert(dir.path(), "second.example.test");
    std::fs::rename(&key2, &live_key).unwrap();
    std::fs::rename(&cert2, &live_cert).unwrap();
    wait_for(secs(10), "the renewed certificate to be served", || {
        served_name(&mta).contains("second.example.test")
    });
    assert!(
        mta.log().contains("serving the new certificate"),
        "{}",
        mta.log()
    );
    // A broken renewal (garbage in the chain file) keeps the last good certificate.
    std::fs::write(&live_cert, "not a certificate\n").unwrap();
    wait_for(secs(10), "the broken files to be noticed", || {
        let _ = served_name(&mta);
        mta.log()
            .contains("cannot be used; keeping the old certificate")
    });
    assert!(served_name(&mta).contains("second.example.test"));
}

#[test]
fn process_settings_and_connection_limits_need_a_restart() {
    let mta = server("");
    let good = std::fs::read_to_string(mta.config_path()).unwrap();
    for (change, key) in [
        ("user = \"nobody\"\n", "user"),
        ("sandbox = false\n", "sandbox"),
        ("allow_root = false\n", "allow_root"),
    ] {
        let text = match key {
            "allow_root" => good.replace("allow_root = true\n", change),
            _ => format!("{change}{good}"),
        };
        assert_ne!(text, good, "{key}");
        std::fs::write(mta.config_path(), text).unwrap();
        let out = mta.mta(&["reload"], b"");
        assert_ne!(out.code(), 0, "{key}: {}", out.all());
        assert!(
            out.stderr
                .contains(&format!("{key} changed, which needs a restart")),
            "{key}: {}",
            out.all()
        );
    }
    assert!(!good.contains("[local]"), "{good}");
    std::fs::write(
        mta.config_path(),
        format!("{good}\n[local]\nmail_group = \"root\"\n"),
    )
    .unwrap();
    let out = mta.mta(&["reload"], b"");
    assert!(
        out.stderr
            .contains("local.mail_group changed, which needs a restart"),
        "{}",
        out.all()
    );
    let limits = good.replace("[outbound]\n", "[outbound]\nmax_per_domain = 1\n");
    assert_ne!(limits, good, "the test config has an [outbound] table");
    std::fs::write(mta.config_path(), limits).unwrap();
    let out = mta.mta(&["reload"], b"");
    assert!(
        out.stderr
            .contains("outbound.max_per_domain changed, which needs a restart"),
        "{}",
        out.all()
    );
    // The file as it was reloads.
    std::fs::write(mta.config_path(), &good).unwrap();
    mta.mta(&["reload"], b"")
        .assert_success("reload of the unchanged file");
}
