//! Relayed bodies arrive untouched: dot-stuffing on the wire is undone exactly, and an
//! S/MIME signature still verifies at the far end.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use mta_tests::fake_smtp::{FakeSmtp, Script, unstuff};
use mta_tests::relay::{
    REMOTE_BOB, sender, split_first_field, start_sender, submit, try_remote_receiver,
};
use mta_tests::{
    ALICE, TestDns, TestMta, assert_same_bytes, on_shared_port, read_delivered, run, secs, wait_for,
};

use crate::send::tricky_message;

fn dns() -> TestDns {
    TestDns::start(&[
        "--mx-host=remote.test,mx1.remote.test,10",
        "--host-record=mx1.remote.test,127.0.0.2",
    ])
}

const HEADERS: &str = "From: Alice <alice@example.test>\r\nTo: Bob <bob@remote.test>\r\n\
    Subject: dots\r\nMessage-ID: <dots-1@example.test>\r\n\
    Date: Sat, 28 Nov 2026 10:00:00 +0000\r\n";

/// The message in bob's only Maildir file at `rx`, after the receiver's and the sender's
/// Received headers.
fn relayed_body(rx: &TestMta) -> Vec<u8> {
    let files = rx.wait_for_mail(REMOTE_BOB, 1, 10);
    assert_eq!(files.len(), 1, "{files:?}");
    let d = read_delivered(&files[0]);
    let (ours, rest) = split_first_field(&d.rest, "Received");
    assert!(ours.contains("by mx.example.test (mta)"), "{ours}");
    rest.to_vec()
}

#[test]
fn dots_arrive_byte_for_byte() {
    // Lines of just ".", lines starting with "." and "..", 8-bit text, a 998-octet line.
    let dns = dns();
    let (port, rx) = on_shared_port("the receiver", |p| {
        try_remote_receiver("mx1.remote.test", "127.0.0.2", p)
    });
    let tx = start_sender(sender(&dns, port, ""));
    let sent = tricky_message(HEADERS);
    submit(&tx, &[REMOTE_BOB], &sent);
    assert_same_bytes("the relayed message", &relayed_body(&rx), &sent);
    tx.wait_for_empty_queue(secs(10));
}

#[test]
fn dots_are_stuffed_on_the_wire() {
    // The fake receiver keeps the data exactly as sent: every line starting with a dot has
    // one more in front, nothing else changes.
    let dns = dns();
    let (port, fake) = on_shared_port("the fake receiver", |p| {
        FakeSmtp::start(SocketAddr::from(([127, 0, 0, 2], p)), Script::default())
    });
    let tx = start_sender(sender(&dns, port, ""));
    let sent = tricky_message(HEADERS);
    submit(&tx, &[REMOTE_BOB], &sent);
    wait_for(secs(10), "the message at the fake receiver", || {
        !fake.transactions().is_empty()
    });
    tx.wait_for_empty_queue(secs(10));
    let t = &fake.transactions()[0];
    assert!(
        t.mail_from.starts_with(&format!("MAIL FROM:<{ALICE}>")),
        "{}",
        fake.transcript()
    );
    assert!(
        t.mail_from.contains("BODY=8BITMIME"),
        "8-bit data is announced: {}",
        t.mail_from
    );
    let wire = &t.wire_data;
    for line in wire.split_inclusive(|&b| b == b'\n') {
        assert!(
            line.ends_with(b"\r\n"),
            "a line without CRLF on the wire: {line:?}"
        );
        assert!(
            line != b".\r\n",
            "an unstuffed lone dot would end the data early"
        );
    }
    let text = String::from_utf8_lossy(wire);
    for stuffed in [
        "\r\n..a line that starts",
        "\r\n...\r\n",
        "\r\n..\r\n",
        "\r\n....three\r\n",
    ] {
        assert!(text.contains(stuffed), "{stuffed:?} not on the wire");
    }
    let (_, body) = split_first_field(wire, "Received");
    let unstuffed_wire = unstuff(wire);
    let (_, unstuffed) = split_first_field(&unstuffed_wire, "Received");
    assert_same_bytes("the unstuffed wire data", unstuffed, &sent);
    let dot_lines = sent
        .split_inclusive(|&b| b == b'\n')
        .filter(|l| l.starts_with(b"."))
        .count();
    assert_eq!(
        body.len(),
        sent.len() + dot_lines,
        "exactly the {dot_lines} lines starting with a dot got one more"
    );
}

/// Runs openssl with `args` in `dir`; panics unless it succeeds.
fn openssl(dir: &Path, args: &[&str]) -> mta_tests::Output {
    let out = run(
        "openssl",
        Command::new("openssl").args(args).current_dir(dir),
        b"",
        secs(30),
    );
    out.assert_success(&format!("openssl {}", args.join(" ")));
    out
}

#[test]
fn smime_signature_survives_relaying() {
    let dns = dns();
    let (port, rx) = on_shared_port("the receiver", |p| {
        try_remote_receiver("mx1.remote.test", "127.0.0.2", p)
    });
    let tx = start_sender(sender(&dns, port, ""));

    let dir = tx.dir().join("smime");
    std::fs::create_dir(&dir).unwrap();
    openssl(
        &dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=alice",
            "-keyout",
            "k.pem",
            "-out",
            "c.pem",
            "-days",
            "1",
        ],
    );
    // Dots at line starts, trailing spaces and an 8-bit line inside the signed content.
    std::fs::write(
        dir.join("body.txt"),
        "Content-Type: text/plain; charset=utf-8\n\nsigned by alice\n.\n.dot\n..two\n\
         trailing   \nGrüße\n",
    )
    .unwrap();
    openssl(
        &dir,
        &[
            "smime",
            "-sign",
            "-signer",
            "c.pem",
            "-inkey",
            "k.pem",
            "-in",
            "body.txt",
            "-out",
            "signed.eml",
        ],
    );
    // openssl mixes LF (its own lines) and CRLF (the canonical signed part): all CRLF.
    let signed = std::fs::read_to_string(dir.join("signed.eml")).unwrap();
    let signed = signed.replace("\r\n", "\n").replace('\n', "\r\n");
    let sent = format!(
        "From: Alice <{ALICE}>\r\nTo: <{REMOTE_BOB}>\r\nSubject: signed\r\n\
         Message-ID: <smime-1@example.test>\r\nDate: Sat, 28 Nov 2026 10:00:00 +0000\r\n{signed}"
    );
    std::fs::write(dir.join("sent.eml"), &sent).unwrap();
    openssl(
        &dir,
        &[
            "smime",
            "-verify",
            "-noverify",
            "-in",
            "sent.eml",
            "-out",
            "/dev/null",
        ],
    );

    submit(&tx, &[REMOTE_BOB], sent.as_bytes());
    let files = rx.wait_for_mail(REMOTE_BOB, 1, 10);
    let file = files[0].display().to_string();
    let out = openssl(
        &dir,
        &[
            "smime",
            "-verify",
            "-noverify",
            "-in",
            &file,
            "-out",
            "verified.txt",
        ],
    );
    assert!(out.stderr.contains("Verification successful"), "{out}");
    let content = std::fs::read_to_string(dir.join("verified.txt")).unwrap();
    assert!(
        content.contains("\n..two\r") && content.contains("Grüße"),
        "{content:?}"
    );
    assert_same_bytes("the relayed message", &relayed_body(&rx), sent.as_bytes());
}

#[test]
fn dots_across_write_boundaries() {
    // The body goes out in 64 KiB writes. With every line a lone "." (3 octets), the
    // boundaries at 64, 128 and 192 KiB fall at each of the three positions in a line
    // (65536 mod 3 = 1): before the dot, before the CR, between CR and LF.
    let dns = dns();
    let (port, rx) = on_shared_port("the receiver", |p| {
        try_remote_receiver("mx1.remote.test", "127.0.0.2", p)
    });
    let tx = start_sender(sender(&dns, port, ""));
    let mut sent = HEADERS
        .replace("Subject: dots", "Subject: many dots")
        .into_bytes();
    sent.extend_from_slice(b"\r\n");
    for _ in 0..(4 * 65536 / 3) {
        sent.extend_from_slice(b".\r\n");
    }
    sent.extend_from_slice(b"end\r\n");
    submit(&tx, &[REMOTE_BOB], &sent);
    assert_same_bytes("the relayed message", &relayed_body(&rx), &sent);
    tx.wait_for_empty_queue(secs(10));
}
