//! The message data on the wire when our header fields (DKIM signatures) go in front of the
//! body as a part of their own: the octets must be exactly those of the two joined and then
//! dot-stuffed (RFC 5321 §4.5.2) and ended (§4.1.1.4), as they were sent before.

use std::time::Duration;

use proptest::prelude::*;
use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;

use super::super::dot::DotStuffer;
use super::super::wire::{Stream, Wire};

/// What the client sent before the prefix was a part of its own: prefix and body joined in
/// one buffer, then stuffed.
fn joined_then_stuffed(prefix: &[u8], body: &[u8]) -> Vec<u8> {
    let mut joined = prefix.to_vec();
    joined.extend_from_slice(body);
    let mut out = Vec::new();
    let mut stuffer = DotStuffer::new();
    stuffer.push(&joined, &mut out);
    stuffer.finish(&mut out);
    out
}

/// The rule read off the RFC, line by line: every line (up to and with its LF) that starts
/// with `.` gets one more; data that is not empty and does not end in CRLF gets one; then
/// `.` CRLF.
fn by_the_rfc(prefix: &[u8], body: &[u8]) -> Vec<u8> {
    let data = [prefix, body].concat();
    let mut out = Vec::new();
    for line in data.split_inclusive(|&b| b == b'\n') {
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    if !data.is_empty() && !data.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// The octets [`Wire::body`] writes for `prefix` and `body`, read from the other end of a
/// Unix socket pair.
fn on_the_wire(prefix: &[u8], body: &[u8]) -> Vec<u8> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let reader = tokio::spawn(async move {
            let mut theirs = theirs;
            let mut got = Vec::new();
            theirs.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut wire = Wire::new(Stream::Unix(ours));
        wire.body(Duration::from_secs(30), prefix, body)
            .await
            .unwrap();
        drop(wire);
        reader.await.unwrap()
    })
}

/// Octets that make the stuffer's cases: dots, CR and LF alone or together, other text.
fn octets(max: usize) -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(&b"."[..]),
        Just(&b"\r\n"[..]),
        Just(&b"\r"[..]),
        Just(&b"\n"[..]),
        Just(&b"a"[..]),
        Just(&b"\xc3\xa9"[..]),
        Just(&b".\r\n"[..]),
    ];
    prop::collection::vec(piece, 0..max).prop_map(|p| p.concat())
}

/// Header-field-like lines, each ending in CRLF (what the signer gives), `.` allowed first.
fn prefix() -> impl Strategy<Value = Vec<u8>> {
    let line = prop::collection::vec(prop_oneof![Just(b'.'), Just(b'a'), Just(b':')], 0..8)
        .prop_map(|mut l| {
            l.extend_from_slice(b"\r\n");
            l
        });
    prop::collection::vec(line, 0..4).prop_map(|l| l.concat())
}

proptest! {
    #[test]
    fn prefix_and_body_go_out_as_if_joined(prefix in prefix(), body in octets(64)) {
        let sent = on_the_wire(&prefix, &body);
        prop_assert_eq!(&sent, &joined_then_stuffed(&prefix, &body));
        prop_assert_eq!(&sent, &by_the_rfc(&prefix, &body));
    }
}

#[test]
fn a_body_starting_with_a_dot_is_stuffed_after_the_prefix() {
    let sent = on_the_wire(b"DKIM-Signature: v=1\r\n", b".hidden\r\n.\r\n");
    assert_eq!(sent, b"DKIM-Signature: v=1\r\n..hidden\r\n..\r\n.\r\n");
}

#[test]
fn large_bodies_cross_the_write_size_as_if_joined() {
    // Dots, lone CRs and LFs around every 64 KiB boundary of the body and of the joined
    // data, a body without a final CRLF.
    let prefix = b"DKIM-Signature: v=1; a=ed25519-sha256;\r\n\tb=abc\r\n".to_vec();
    let mut body = Vec::new();
    for i in 0..200_000usize {
        body.push(match i % 65_536 {
            0 | 65_535 => b'\n',
            1 | 65_534 => b'.',
            2 => b'\r',
            _ if i % 77 == 0 => b'\r',
            _ if i % 78 == 0 => b'\n',
            _ => b'x',
        });
    }
    let sent = on_the_wire(&prefix, &body);
    assert!(sent == joined_then_stuffed(&prefix, &body));
    assert!(sent == by_the_rfc(&prefix, &body));
}

#[test]
#[should_panic(expected = "must end in CRLF")]
fn a_prefix_not_ending_in_crlf_is_a_bug() {
    on_the_wire(b"DKIM-Signature: v=1", b"body\r\n");
}
