//! Python's smtplib, a client we did not write: STARTTLS on submission and implicit TLS on
//! submissions, both verifying our certificate (its IP SAN 127.0.0.1) and logging in.

use std::process::Command;

use mta_tests::{ALICE, ALICE_PASSWORD, TestMta, read_delivered, run, secs};

const BOB: &str = "bob@example.test";

const SCRIPT: &str = r#"
import smtplib, ssl, sys
submission, submissions, cafile, user, password, rcpt = sys.argv[1:7]
ctx = ssl.create_default_context(cafile=cafile)
assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
msg = "From: {0}\r\nTo: {1}\r\nSubject: from python {2}\r\n\r\nhello from smtplib\r\n"
with smtplib.SMTP("127.0.0.1", int(submission), local_hostname="python.client.test", timeout=10) as s:
    s.starttls(context=ctx)
    s.login(user, password)
    refused = s.sendmail(user, [rcpt], msg.format(user, rcpt, "starttls"))
    assert refused == {}, refused
with smtplib.SMTP_SSL("127.0.0.1", int(submissions), local_hostname="python.client.test", context=ctx, timeout=10) as s:
    s.login(user, password)
    refused = s.sendmail(user, [rcpt], msg.format(user, rcpt, "implicit"))
    assert refused == {}, refused
print("sent 2")
"#;

#[test]
fn smtplib_starttls_and_implicit_tls() {
    let mta = TestMta::start("");
    mta.add_user(ALICE, ALICE_PASSWORD);
    mta.add_user(BOB, "bob-password-1");
    let cert = mta.cert_path();
    let out = run(
        "python3 smtplib",
        Command::new("python3")
            .args(["-c", SCRIPT])
            .arg(mta.submission_addr().port().to_string())
            .arg(mta.submissions_addr().port().to_string())
            .arg(&cert)
            .args([ALICE, ALICE_PASSWORD, BOB]),
        b"",
        secs(30),
    );
    out.assert_success("python3 smtplib");
    assert!(out.stdout.contains("sent 2"), "{out}");
    let files = mta.wait_for_mail(BOB, 2, 10);
    assert_eq!(files.len(), 2);
    let mut subjects: Vec<String> = files
        .iter()
        .map(|f| {
            let d = read_delivered(f);
            assert!(
                d.received
                    .starts_with("Received: from python.client.test ([127.0.0.1])"),
                "{}",
                d.received
            );
            assert!(d.received.contains("with ESMTPSA id"), "{}", d.received);
            let rest = String::from_utf8_lossy(&d.rest).into_owned();
            rest.lines()
                .find(|l| l.starts_with("Subject: "))
                .unwrap_or_else(|| panic!("no Subject in {rest}"))
                .to_string()
        })
        .collect();
    subjects.sort();
    assert_eq!(
        subjects,
        [
            "Subject: from python implicit",
            "Subject: from python starttls"
        ]
    );
}
