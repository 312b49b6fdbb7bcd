//! Reading what local delivery wrote: a Maildir file is `Return-Path`, `Delivered-To`, our
//! `Received` header (folded), then the queued message, its lines ending in LF or CRLF.

use std::path::Path;

/// A delivered file, split into the headers delivery and reception added and the rest.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// The first line, without CRLF: `Return-Path: <sender>`.
    pub return_path: String,
    /// The second line, without CRLF: `Delivered-To: rcpt`.
    pub delivered_to: String,
    /// Our `Received:` header with its continuation lines, CRLFs included.
    pub received: String,
    /// Everything after the `Received:` header, byte for byte.
    pub rest: Vec<u8>,
}

/// The Maildir file at `path` with CRLF line ends, as a reader canonicalises it: `mta`
/// stores bare LFs by default (`local.line_endings`). Panics when it cannot be read.
pub fn read_crlf(path: &Path) -> Vec<u8> {
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    crlf(&bytes)
}

/// `bytes` with every bare LF made CRLF.
pub fn crlf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 32);
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' && (i == 0 || bytes[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// Splits the Maildir file at `path` (read as [`read_crlf`]); panics when it does not have
/// the expected shape.
pub fn read_delivered(path: &Path) -> Delivered {
    let bytes = read_crlf(path);
    parse_delivered(&bytes).unwrap_or_else(|e| {
        panic!(
            "{}: {e}\n--- file ---\n{}",
            path.display(),
            String::from_utf8_lossy(&bytes)
        )
    })
}

/// Splits a delivered message (see [`Delivered`]).
///
/// # Errors
/// When a line is not CRLF-terminated or a header is missing or out of place.
pub fn parse_delivered(bytes: &[u8]) -> Result<Delivered, String> {
    let mut pos = 0;
    let mut next_line = |what: &str| -> Result<(usize, usize), String> {
        let start = pos;
        let end = bytes[start..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|i| start + i + 2)
            .ok_or_else(|| format!("no CRLF-terminated line for {what} at byte {start}"))?;
        pos = end;
        Ok((start, end))
    };
    let line = |(s, e): (usize, usize)| String::from_utf8_lossy(&bytes[s..e - 2]).into_owned();
    let return_path = line(next_line("Return-Path")?);
    if !return_path.starts_with("Return-Path: ") {
        return Err(format!("first line is not Return-Path: {return_path:?}"));
    }
    let delivered_to = line(next_line("Delivered-To")?);
    if !delivered_to.starts_with("Delivered-To: ") {
        return Err(format!("second line is not Delivered-To: {delivered_to:?}"));
    }
    let (start, mut end) = next_line("Received")?;
    if !bytes[start..].starts_with(b"Received: ") {
        return Err(format!(
            "third line is not Received: {:?}",
            line((start, end))
        ));
    }
    while bytes.get(end) == Some(&b'\t') {
        end = next_line("a Received continuation")?.1;
    }
    Ok(Delivered {
        return_path,
        delivered_to,
        received: String::from_utf8_lossy(&bytes[start..end]).into_owned(),
        rest: bytes[end..].to_vec(),
    })
}

/// The queue id in a `250 2.0.0 OK queued as ID` reply (20 hex digits); panics otherwise.
pub fn queue_id(reply: &str) -> String {
    let id = reply
        .trim_end()
        .rsplit_once("queued as ")
        .map(|(_, id)| id.trim().to_string())
        .unwrap_or_else(|| panic!("no `queued as` in {reply:?}"));
    assert!(
        id.len() == 20 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "queue id {id:?} in {reply:?} is not 20 hex digits"
    );
    id
}

/// Panics unless `got` equals `want` byte for byte, showing where they part.
#[track_caller]
pub fn assert_same_bytes(what: &str, got: &[u8], want: &[u8]) {
    if got == want {
        return;
    }
    let at = got.iter().zip(want).take_while(|(a, b)| a == b).count();
    let around = |b: &[u8]| {
        String::from_utf8_lossy(&b[at.saturating_sub(40)..(at + 40).min(b.len())]).into_owned()
    };
    panic!(
        "{what}: differs at byte {at} (expected {} bytes, got {}):\n\
         expected: {:?}\n\
         got:      {:?}",
        want.len(),
        got.len(),
        around(want),
        around(got),
    );
}
