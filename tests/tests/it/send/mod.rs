//! `mta send` against our own server (this file), against TLS it must refuse in words
//! (`tls`), and against other peers: a hostile server, Python's aiosmtpd, swaks' own
//! transcript (`peers`). Each test names the behaviour it proves.

mod peers;
mod tls;

use std::process::Command;

use mta_tests::{
    ALICE, ALICE_PASSWORD, Output, TestMta, assert_same_bytes, mta_bin, queue_id, read_delivered,
    run, secs,
};

const BOB: &str = "bob@example.test";

fn server() -> TestMta {
    let mta = TestMta::start("");
    mta.add_user(ALICE, ALICE_PASSWORD);
    mta.add_user(BOB, "bob-password-1");
    mta
}

/// `mta send` to the submission port over STARTTLS, verifying our certificate for the name
/// `localhost`, as alice, with `extra` arguments and `stdin`.
pub fn mta_send(mta: &TestMta, extra: &[&str], stdin: &[u8]) -> Output {
    let cert = mta.cert_path();
    let server = mta.submission_addr().to_string();
    run(
        "mta send",
        Command::new(mta_bin())
            .args(["send", "--server", &server, "--tls", "starttls", "--cafile"])
            .arg(&cert)
            .args(["--tls-name", "localhost", "--user", ALICE, "--from", ALICE])
            .args(["--timeout", "10"])
            .args(extra)
            .env("MTA_PASSWORD", ALICE_PASSWORD),
        stdin,
        secs(30),
    )
}

#[test]
fn round_trip_over_starttls() {
    let mta = server();
    let out = mta_send(
        &mta,
        &[
            "--to",
            BOB,
            "--subject",
            "round trip",
            "--body",
            "hello bob",
        ],
        b"",
    );
    out.assert_success("mta send");
    assert!(
        out.stdout.starts_with(&format!(
            "accepted <{BOB}>: 250 2.1.5 Recipient OK\nsent to 1 of 1 recipient: 250 "
        )),
        "{out}"
    );
    let id = queue_id(out.stdout.trim());
    let files = mta.wait_for_mail(BOB, 1, 10);
    let d = read_delivered(&files[0]);
    assert!(d.received.contains(&format!(" id {id}")), "{}", d.received);
    let rest = String::from_utf8_lossy(&d.rest);
    assert!(rest.contains("Subject: round trip\r\n"), "{rest}");
    assert!(rest.contains("hello bob"), "{rest}");
}

/// A message with everything that tempts a server to touch it: lines starting with a dot,
/// lines that are only dots, 8-bit UTF-8, trailing spaces and tabs, a 998-octet line, an
/// empty last line.
pub fn tricky_message(headers: &str) -> Vec<u8> {
    let mut m = String::from(headers);
    m.push_str("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n");
    m.push_str("Content-Transfer-Encoding: 8bit\r\n\r\n");
    m.push_str(".a line that starts with a dot\r\n");
    m.push_str("..\r\n");
    m.push_str(".\r\n");
    m.push_str("...three\r\n");
    m.push_str("Grüße aus Köln — 日本語のテキスト ✓\r\n");
    m.push_str("trailing spaces   \r\n\ttab first\r\n");
    for i in 0..300 {
        m.push_str(&format!(
            "line {i:03}: the quick brown fox jumps over the lazy dog\r\n"
        ));
    }
    m.push_str(&"x".repeat(998));
    m.push_str("\r\n.\r\n\r\n");
    m.into_bytes()
}

#[test]
fn raw_message_arrives_byte_for_byte() {
    let mta = server();
    let raw = tricky_message(
        "From: Alice <alice@example.test>\r\nTo: Bob <bob@example.test>\r\n\
         Subject: raw\r\nMessage-ID: <raw-1@example.test>\r\n\
         Date: Sat, 28 Nov 2026 10:00:00 +0000\r\n",
    );
    let out = mta_send(&mta, &["--to", BOB, "--raw"], &raw);
    out.assert_success("mta send --raw");
    assert!(
        out.stdout
            .contains("\nsent to 1 of 1 recipient: 250 2.0.0 "),
        "{out}"
    );
    let id = queue_id(out.stdout.trim());

    let files = mta.wait_for_mail(BOB, 1, 10);
    assert_eq!(files.len(), 1);
    let d = read_delivered(&files[0]);
    assert_eq!(d.return_path, format!("Return-Path: <{ALICE}>"));
    assert_eq!(d.delivered_to, format!("Delivered-To: {BOB}"));
    let r = &d.received;
    assert!(
        r.starts_with("Received: from mta-send.localhost ([127.0.0.1])\r\n"),
        "{r}"
    );
    assert!(
        r.contains(&format!(
            "\r\n\tby mx.example.test (mta) with ESMTPSA id {id}"
        )),
        "{r}"
    );
    assert!(r.contains("\r\n\t(using TLSv1.3 with cipher "), "{r}");
    assert!(r.ends_with(" +0000\r\n") && r.contains(";\r\n\t"), "{r}");
    assert_same_bytes("the delivered message after our headers", &d.rest, &raw);
}

#[test]
fn send_fails_on_an_untrusted_certificate() {
    let mta = server();
    // No --cafile: the self-signed certificate is not trusted, so nothing is sent.
    let server = mta.submission_addr().to_string();
    let out = run(
        "mta send",
        Command::new(mta_bin())
            .args([
                "send", "--server", &server, "--tls", "starttls", "--user", ALICE,
            ])
            .args(["--from", ALICE, "--to", BOB, "--timeout", "10"])
            .env("MTA_PASSWORD", ALICE_PASSWORD),
        b"",
        secs(30),
    );
    assert!(!out.status.success(), "{out}");
    assert!(!out.stderr.contains("panicked"), "{out}");
    assert!(mta.queue_json()["records"].as_array().unwrap().is_empty());
}

/// `mta send ARGS` with `env` and `stdin`, no MTA_PASSWORD unless `env` sets it, bounded.
pub fn send(args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Output {
    let mut cmd = Command::new(mta_bin());
    cmd.arg("send").args(args).env_remove("MTA_PASSWORD");
    for (k, v) in env {
        cmd.env(k, v);
    }
    run("mta send", &mut cmd, stdin, secs(60))
}

/// The commands of a transcript (swaks' ` -> `/` ~> ` lines, ours the same), each as its
/// verb, with the message lines between DATA and the final dot left out and SASL
/// responses written `SASL`.
pub fn commands(transcript: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_data = false;
    for line in transcript.lines() {
        let Some(cmd) = line
            .strip_prefix(" -> ")
            .or_else(|| line.strip_prefix(" ~> "))
        else {
            continue;
        };
        if in_data {
            in_data = cmd != ".";
            continue;
        }
        let verb = cmd
            .split([' ', ':'])
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let known = [
            "EHLO", "HELO", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA", "QUIT", "RSET",
        ];
        if verb == "DATA" {
            in_data = true;
        }
        out.push(if known.contains(&verb.as_str()) {
            verb
        } else {
            "SASL".into()
        });
    }
    out
}

#[test]
fn transcript_shows_the_dialogue_with_auth_hidden() {
    let mta = server();
    let out = mta_send(&mta, &["-v", "--to", BOB, "--subject", "seen"], b"");
    out.assert_success("mta send -v");
    let t = &out.stderr;
    for want in [
        "<-  220 ",
        " -> EHLO mta-send.localhost",
        " -> STARTTLS",
        "=== TLS started with TLSv1.3 TLS13_",
        " ~> EHLO mta-send.localhost",
        " ~> AUTH PLAIN <redacted>",
        "<~  235 ",
        &format!(" ~> MAIL FROM:<{ALICE}>"),
        &format!(" ~> RCPT TO:<{BOB}>"),
        " ~> DATA",
        "<~  354 ",
        " ~> Subject: seen",
        " ~> .",
        " ~> QUIT",
        "<~  221 ",
    ] {
        assert!(t.contains(want), "no {want:?} in\n{t}");
    }
    use base64::Engine as _;
    let token =
        base64::engine::general_purpose::STANDARD.encode(format!("\0{ALICE}\0{ALICE_PASSWORD}"));
    assert!(!t.contains(&token) && !t.contains(ALICE_PASSWORD), "{t}");
    assert_eq!(
        commands(t),
        [
            "EHLO", "STARTTLS", "EHLO", "AUTH", "MAIL", "RCPT", "DATA", "QUIT"
        ]
    );
}

#[test]
fn quit_after_stops_at_each_step_and_sends_nothing() {
    let mta = server();
    let table: &[(&str, &[&str])] = &[
        ("connect", &["QUIT"]),
        ("ehlo", &["EHLO", "QUIT"]),
        ("starttls", &["EHLO", "STARTTLS", "QUIT"]),
        ("auth", &["EHLO", "STARTTLS", "EHLO", "AUTH", "QUIT"]),
        (
            "mail",
            &["EHLO", "STARTTLS", "EHLO", "AUTH", "MAIL", "QUIT"],
        ),
        (
            "rcpt",
            &["EHLO", "STARTTLS", "EHLO", "AUTH", "MAIL", "RCPT", "QUIT"],
        ),
        (
            "data",
            &["EHLO", "STARTTLS", "EHLO", "AUTH", "MAIL", "RCPT", "DATA"],
        ),
    ];
    for (step, want) in table {
        let out = mta_send(&mta, &["-v", "--to", BOB, "--quit-after", step], b"");
        out.assert_success(&format!("--quit-after {step}"));
        assert!(
            out.stdout.contains(&format!("stopped after {step}")),
            "{out}"
        );
        assert_eq!(commands(&out.stderr), *want, "--quit-after {step}\n{out}");
    }
    // With implicit TLS the handshake comes first: starttls is connect, ehlo the only EHLO.
    let cert = mta.cert_path();
    let implicit = mta.submissions_addr().to_string();
    for (step, want) in [
        ("connect", &["QUIT"][..]),
        ("starttls", &["QUIT"]),
        ("ehlo", &["EHLO", "QUIT"]),
    ] {
        let out = send(
            &[
                "-v",
                "--server",
                &implicit,
                "--tls",
                "implicit",
                "--cafile",
                cert.to_str().unwrap(),
                "--tls-name",
                "localhost",
                "--from",
                ALICE,
                "--to",
                BOB,
                "--quit-after",
                step,
            ],
            &[],
            b"",
        );
        out.assert_success(&format!("--tls implicit --quit-after {step}"));
        assert!(out.stderr.contains("=== TLS started with TLSv1.3"), "{out}");
        assert_eq!(
            commands(&out.stderr),
            want,
            "--tls implicit --quit-after {step}\n{out}"
        );
    }
    // Not even the message cut off after DATA's 354 was queued.
    assert!(mta.queue_json()["records"].as_array().unwrap().is_empty());
    assert!(mta.maildir_new(BOB).is_empty());
}

#[test]
fn headers_attachments_and_a_body_file_arrive() {
    let mta = server();
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body.txt");
    std::fs::write(&body, "line one\nline two\n").unwrap();
    let pdf = dir.path().join("report.pdf");
    std::fs::write(&pdf, b"%PDF-1.4 \x00\x01\x02 binary").unwrap();
    let notes = dir.path().join("notes");
    std::fs::write(&notes, "plain notes\n").unwrap();
    let out = mta_send(
        &mta,
        &[
            "--to",
            BOB,
            "--subject",
            "ours",
            "--header",
            "Subject: theirs",
            "--header",
            "X-Test: one",
            "--header",
            "X-Test: two",
            "--body",
            &format!("@{}", body.display()),
            "--attach",
            &pdf.display().to_string(),
            "--attach",
            &notes.display().to_string(),
        ],
        b"",
    );
    out.assert_success("mta send with headers and attachments");
    let files = mta.wait_for_mail(BOB, 1, 10);
    let rest = String::from_utf8_lossy(&read_delivered(&files[0]).rest).into_owned();
    let head = rest.split("\r\n\r\n").next().unwrap();
    assert!(
        head.contains("\r\nSubject: theirs\r\n") || head.starts_with("Subject: theirs"),
        "{rest}"
    );
    assert!(!head.contains("ours"), "{rest}");
    assert!(
        rest.contains("\r\nX-Test: one\r\nX-Test: two\r\n\r\n"),
        "{rest}"
    );
    assert!(head.contains("Message-ID: <"), "{rest}");
    assert!(head.contains("Content-Type: multipart/mixed;"), "{rest}");
    assert!(rest.contains("line one\r\nline two\r\n"), "{rest}");
    assert!(rest.contains("Content-Type: application/pdf"), "{rest}");
    assert!(rest.contains("filename=\"report.pdf\""), "{rest}");
    assert!(rest.contains("Content-Transfer-Encoding: base64"), "{rest}");
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(b"%PDF-1.4 \x00\x01\x02 binary");
    assert!(rest.contains(&encoded), "{rest}");
    assert!(
        rest.contains("Content-Type: text/plain; charset=utf-8"),
        "{rest}"
    );
    assert!(rest.contains("filename=\"notes\""), "{rest}");
}

#[test]
fn a_data_file_is_sent_as_it_is_with_crlf() {
    let mta = server();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("message.eml");
    let unix = "From: alice@example.test\nTo: bob@example.test\nSubject: from a file\n\
                Message-ID: <file-1@example.test>\nDate: Sat, 28 Nov 2026 10:00:00 +0000\n\n\
                .dot first\nlast line\n";
    std::fs::write(&file, unix).unwrap();
    let out = mta_send(
        &mta,
        &["--to", BOB, "--data", &format!("@{}", file.display())],
        b"",
    );
    out.assert_success("mta send --data @FILE");
    let files = mta.wait_for_mail(BOB, 1, 10);
    let d = read_delivered(&files[0]);
    assert_same_bytes(
        "the delivered message",
        &d.rest,
        unix.replace('\n', "\r\n").as_bytes(),
    );
}

#[test]
fn several_recipients_each_get_a_result_and_the_exit_code_says_what_failed() {
    let mta = server();
    let nobody = "nobody@example.test";
    let out = mta_send(
        &mta,
        &["--to", BOB, "--to", nobody, "--subject", "two"],
        b"",
    );
    assert_eq!(out.code(), 30, "{out}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[0],
        format!("accepted <{BOB}>: 250 2.1.5 Recipient OK"),
        "{out}"
    );
    assert!(
        lines[1].starts_with(&format!("refused  <{nobody}>: 550 5.1.1 ")),
        "{out}"
    );
    assert!(
        lines[2].starts_with("sent to 1 of 2 recipients: 250 2.0.0 "),
        "{out}"
    );
    mta.wait_for_mail(BOB, 1, 10);

    // Every recipient refused: 24, and no DATA.
    let out = mta_send(
        &mta,
        &["-v", "--to", nobody, "--to", "nobody2@example.test"],
        b"",
    );
    assert_eq!(out.code(), 24, "{out}");
    assert!(out.stderr.contains("every recipient was refused"), "{out}");
    assert!(
        !commands(&out.stderr).contains(&"DATA".to_string()),
        "{out}"
    );

    // A comma-separated list is several recipients too.
    let out = mta_send(&mta, &["--to", &format!("{BOB},{ALICE}")], b"");
    out.assert_success("--to a,b");
    assert!(out.stdout.contains("sent to 2 of 2 recipients"), "{out}");

    // A wrong password: 28; a sender alice may not use: 23.
    let cert = mta.cert_path();
    let server = mta.submission_addr().to_string();
    let common = [
        "--server",
        &server,
        "--cafile",
        cert.to_str().unwrap(),
        "--tls-name",
        "localhost",
        "--user",
        ALICE,
        "--to",
        BOB,
    ];
    let out = send(
        &[&common[..], &["--from", ALICE]].concat(),
        &[("MTA_PASSWORD", "wrong")],
        b"",
    );
    assert_eq!(out.code(), 28, "{out}");
    assert!(out.stderr.contains("AUTH: login refused: 535"), "{out}");
    let out = send(
        &[&common[..], &["--from", BOB]].concat(),
        &[("MTA_PASSWORD", ALICE_PASSWORD)],
        b"",
    );
    assert_eq!(out.code(), 23, "{out}");
    assert!(
        out.stderr.contains(&format!("sender <{BOB}> refused: 5")),
        "{out}"
    );
}

#[test]
fn auth_login_and_a_password_file() {
    let mta = server();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, format!("{ALICE_PASSWORD}\nnot this line\n")).unwrap();
    let cert = mta.cert_path();
    let server = mta.submission_addr().to_string();
    let out = send(
        &[
            "--server",
            &server,
            "--cafile",
            cert.to_str().unwrap(),
            "--tls-name",
            "localhost",
            "--user",
            ALICE,
            "--password-file",
            file.to_str().unwrap(),
            "--auth",
            "login",
            "--from",
            ALICE,
            "--to",
            BOB,
            "-v",
        ],
        &[],
        b"",
    );
    out.assert_success("--auth login --password-file");
    assert!(out.stderr.contains(" ~> AUTH LOGIN\n"), "{out}");
    assert!(out.stderr.contains(" ~> <redacted>\n"), "{out}");
    assert!(!out.stderr.contains(ALICE_PASSWORD), "{out}");
}

/// `--raw` with `--user` and no other password source once took the message's first line
/// as the password. Run without a controlling terminal (setsid), it must refuse instead.
#[test]
fn a_message_on_stdin_is_never_the_password() {
    let mta = server();
    let cert = mta.cert_path();
    let server = mta.submission_addr().to_string();
    let message = format!("{ALICE_PASSWORD}\r\nSubject: x\r\n\r\nbody\r\n");
    let mut cmd = Command::new("setsid");
    cmd.arg(mta_bin())
        .args([
            "send",
            "--server",
            &server,
            "--cafile",
            cert.to_str().unwrap(),
        ])
        .args([
            "--tls-name",
            "localhost",
            "--user",
            ALICE,
            "--from",
            ALICE,
            "--to",
            BOB,
        ])
        .arg("--raw")
        .env_remove("MTA_PASSWORD");
    let out = run(
        "setsid mta send --raw",
        &mut cmd,
        message.as_bytes(),
        secs(60),
    );
    assert_eq!(out.code(), 2, "{out}");
    assert!(out.stderr.contains("stdin carries the message"), "{out}");
    assert!(out.stderr.contains("--password-file"), "{out}");
    assert!(mta.queue_json()["records"].as_array().unwrap().is_empty());
    assert!(mta.maildir_new(BOB).is_empty());
}

/// On a terminal the password is asked for with echo off: typed into a pty, it never comes
/// back out of it.
#[test]
fn the_password_prompt_on_a_terminal_is_hidden() {
    const PTY: &str = r#"
import os, pty, select, sys, termios, time
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
out, deadline = b'', time.time() + 30
def read(until):
    global out
    while not until() and time.time() < deadline:
        if select.select([fd], [], [], 0.2)[0]:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                return
            if not chunk:
                return
            out += chunk
read(lambda: b'Password for' in out)
# The prompt is written before echo is turned off: wait for that (bounded), then type.
while termios.tcgetattr(fd)[3] & termios.ECHO and time.time() < deadline:
    time.sleep(0.05)
os.write(fd, os.environ['TYPED'].encode() + b'\n')
read(lambda: False)
_, status = os.waitpid(pid, 0)
sys.stdout.buffer.write(out)
sys.exit(os.waitstatus_to_exitcode(status))
"#;
    let mta = server();
    let cert = mta.cert_path();
    let server = mta.submission_addr().to_string();
    let mut cmd = Command::new("python3");
    cmd.args(["-c", PTY])
        .arg(mta_bin())
        .args([
            "send",
            "--server",
            &server,
            "--cafile",
            cert.to_str().unwrap(),
        ])
        .args([
            "--tls-name",
            "localhost",
            "--user",
            ALICE,
            "--from",
            ALICE,
            "--to",
            BOB,
        ])
        .env_remove("MTA_PASSWORD")
        .env("TYPED", ALICE_PASSWORD);
    let out = run("mta send on a pty", &mut cmd, b"", secs(60));
    assert!(out.status.success(), "{out}");
    assert!(
        out.stdout.contains(&format!("Password for {ALICE}: ")),
        "{out}"
    );
    assert!(
        !out.stdout.contains(ALICE_PASSWORD),
        "the password was echoed: {out}"
    );
    assert!(
        out.stdout.contains("sent to 1 of 1 recipient: 250 "),
        "{out}"
    );
}
