//! How lines end in the Maildir files local delivery writes (`local.line_endings`): a bare LF
//! by default, as Postfix, qmail and Dovecot's LDA store mail, with the file name's sizes
//! right; CRLF on request, the message byte for byte. An S/MIME signature (`openssl smime`)
//! still verifies on the stored LF file; DKIM on a stored LF file is checked in `dkim.rs`
//! (the receiving server there stores LF) and IMAP sizes in `dovecot.rs`.

use std::process::Command;

use mta_tests::certs::ca_and_leaf;
use mta_tests::{KeptDir, SmtpClient, TestMta, read_delivered, run, secs};

const BOB: &str = "bob@example.test";

/// Sends `message` to bob on port 25 and returns the bytes of the stored file.
fn deliver(mta: &TestMta, message: &[u8]) -> (std::path::PathBuf, Vec<u8>) {
    let mut c = SmtpClient::connect(mta.smtp_addr());
    c.reply("the greeting");
    c.expect("EHLO client.test", 250);
    let r = c.send_message("someone@remote.test", &[BOB], message);
    assert_eq!(r.code, 250, "{}", c.transcript());
    let mail = mta.wait_for_mail(BOB, 1, 10);
    assert_eq!(mail.len(), 1, "delivered once");
    let bytes = std::fs::read(&mail[0]).expect("the stored file");
    (mail[0].clone(), bytes)
}

const MESSAGE: &[u8] =
    b"From: someone@remote.test\r\nTo: bob@example.test\r\nSubject: lines\r\n\r\none\r\ntwo\r\n";

#[test]
fn stored_with_lf_by_default_and_the_sizes_in_the_name() {
    let mta = TestMta::start("");
    mta.add_user(BOB, "bob-password-1");
    let (path, bytes) = deliver(&mta, MESSAGE);
    assert!(
        !bytes.contains(&b'\r'),
        "a CR in the stored file:\n{}",
        String::from_utf8_lossy(&bytes)
    );
    // Read back with CRLF, it is the message as sent after our three header fields.
    assert_eq!(read_delivered(&path).rest, MESSAGE);
    let name = path.file_name().unwrap().to_str().unwrap().to_string();
    let lines = bytes.iter().filter(|&&b| b == b'\n').count();
    let sizes = format!(",S={},W={}", bytes.len(), bytes.len() + lines);
    assert!(name.ends_with(&sizes), "{name} does not end with {sizes}");
}

#[test]
fn crlf_on_request_keeps_the_bytes() {
    let mta = TestMta::start("[local]\nline_endings = \"crlf\"\n");
    mta.add_user(BOB, "bob-password-1");
    let (path, bytes) = deliver(&mta, MESSAGE);
    let delivered = read_delivered(&path);
    let mut want = format!(
        "{}\r\n{}\r\n{}",
        delivered.return_path, delivered.delivered_to, delivered.received
    )
    .into_bytes();
    want.extend_from_slice(MESSAGE);
    assert_eq!(bytes, want, "{}", String::from_utf8_lossy(&bytes));
    let name = path.file_name().unwrap().to_str().unwrap().to_string();
    assert!(name.ends_with(&format!(",S={}", bytes.len())), "{name}");
}

#[test]
fn an_smime_signature_verifies_on_the_stored_lf_file() {
    let dir = KeptDir::new();
    let (ca, chain, key) = ca_and_leaf(dir.path(), "smime", "someone.remote.test");
    let content = dir.path().join("content.txt");
    std::fs::write(&content, "Signed text.\r\nA second line.\r\n").unwrap();
    let signed = dir.path().join("signed.eml");
    let mut sign = Command::new("openssl");
    sign.args(["smime", "-sign", "-text", "-in"])
        .arg(&content)
        .arg("-signer")
        .arg(&chain)
        .arg("-inkey")
        .arg(&key)
        .args(["-from", "someone@remote.test", "-to", BOB])
        .args(["-subject", "signed", "-out"])
        .arg(&signed);
    run("openssl smime -sign", &mut sign, b"", secs(30)).assert_success("openssl smime -sign");
    // openssl writes CRLF in the MIME parts; SMTP wants CRLF everywhere.
    let text = std::fs::read(&signed).unwrap();
    let message = mta_tests::crlf(&text);
    let mta = TestMta::start("");
    mta.add_user(BOB, "bob-password-1");
    let (path, bytes) = deliver(&mta, &message);
    assert!(!bytes.contains(&b'\r'), "a CR in the stored file");
    let mut verify = Command::new("openssl");
    verify
        .args(["smime", "-verify", "-purpose", "any", "-CAfile"])
        .arg(&ca)
        .arg("-in")
        .arg(&path);
    let out = run("openssl smime -verify", &mut verify, b"", secs(30));
    assert!(
        out.status.success() && out.stderr.contains("Verification successful"),
        "{}\n{}\n--- file ---\n{}",
        out.stdout,
        out.stderr,
        String::from_utf8_lossy(&bytes)
    );
    assert!(out.stdout.contains("A second line."), "{}", out.stdout);
}
