//! Message data on the wire, sans I/O: dot-stuffing and the end-of-data marker.
//!
//! RFC 5321 §4.5.2 (a line starting with `.` gets one more `.`), §4.1.1.4 (data ends with
//! `CRLF . CRLF`, so a body that does not end in CRLF gets one first), RFC 1870 §3 (the
//! SIZE we declare counts the body with its CRLFs but without stuffing or the final dot).
//!
//! The body is already CRLF-only (our server refuses bare CR and LF). A line start is taken
//! to be after any LF anyway: were a bare LF ever to slip through, a server that ends lines
//! at a bare LF could otherwise read `LF . CRLF` as the end of data (SMTP smuggling).

/// Dot-stuffs a body handed over in pieces of any size.
#[derive(Debug)]
pub struct DotStuffer {
    at_line_start: bool,
    prev_cr: bool,
    ends_with_crlf: bool,
    empty: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        DotStuffer::new()
    }
}

impl DotStuffer {
    /// A stuffer at the start of the body.
    pub fn new() -> DotStuffer {
        DotStuffer {
            at_line_start: true,
            prev_cr: false,
            ends_with_crlf: false,
            empty: true,
        }
    }

    /// Appends `chunk`, stuffed, to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let mut rest = chunk;
        while !rest.is_empty() {
            if self.at_line_start && rest[0] == b'.' {
                out.push(b'.');
            }
            let (line, tail) = match rest.iter().position(|&b| b == b'\n') {
                Some(lf) => rest.split_at(lf + 1),
                None => (rest, &[][..]),
            };
            out.extend_from_slice(line);
            self.at_line_start = line.last() == Some(&b'\n');
            self.ends_with_crlf = match line {
                [.., b'\r', b'\n'] => true,
                [b'\n'] => self.prev_cr,
                _ => false,
            };
            self.prev_cr = line.last() == Some(&b'\r');
            rest = tail;
        }
        self.empty &= chunk.is_empty();
    }

    /// Appends the end of data to `out`: a CRLF when the body did not end with one, then
    /// `.` CRLF.
    pub fn finish(self, out: &mut Vec<u8>) {
        if !self.empty && !self.ends_with_crlf {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

/// The size to declare with `SIZE=` (RFC 1870 §3) for `prefix` then `body`: both, plus the
/// CRLF we add when the body does not end with one. `prefix` is empty or whole lines (see
/// [`check_prefix`]), so only the body's end counts.
pub fn message_size(prefix: &[u8], body: &[u8]) -> u64 {
    check_prefix(prefix);
    let added = if body.is_empty() || body.ends_with(b"\r\n") {
        0
    } else {
        2
    };
    let len = |b: &[u8]| u64::try_from(b.len()).unwrap_or(u64::MAX);
    len(prefix).saturating_add(len(body)).saturating_add(added)
}

/// Header fields put in front of a body (our `DKIM-Signature:` fields) are empty or end in
/// CRLF: otherwise the body's first line would be glued to the last field, and a body
/// starting with `.` would not be stuffed as the line start it is. Our own code builds the
/// prefix, so anything else is a bug, not a peer's doing.
pub fn check_prefix(prefix: &[u8]) {
    assert!(
        prefix.is_empty() || prefix.ends_with(b"\r\n"),
        "a prefix to the message data must end in CRLF"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &[(&[u8], &[u8])] = &[
        (b"", b".\r\n"),
        (b"\r\n", b"\r\n.\r\n"),
        (b"a\r\n", b"a\r\n.\r\n"),
        (b"a", b"a\r\n.\r\n"),
        (b".", b"..\r\n.\r\n"),
        (b".\r\n", b"..\r\n.\r\n"),
        (b"..\r\n", b"...\r\n.\r\n"),
        (b"a\r\n.\r\nb\r\n", b"a\r\n..\r\nb\r\n.\r\n"),
        (b"a\r\n..\r\n.x\r\n", b"a\r\n...\r\n..x\r\n.\r\n"),
        (b"a.b\r\n x.\r\n", b"a.b\r\n x.\r\n.\r\n"),
        (b"a\r\n\r\n.", b"a\r\n\r\n..\r\n.\r\n"),
        (b"ends in CR\r", b"ends in CR\r\r\n.\r\n"),
        // A bare LF still starts a line for stuffing (smuggling guard), and does not count
        // as the CRLF the end marker needs.
        (b"a\n.\r\n", b"a\n..\r\n.\r\n"),
        (b"a\n", b"a\n\r\n.\r\n"),
        (b"\xc3\xa9.\r\n", b"\xc3\xa9.\r\n.\r\n"),
    ];

    #[test]
    fn whole_bodies() {
        for (body, want) in TABLE {
            let mut out = Vec::new();
            let mut s = DotStuffer::new();
            s.push(body, &mut out);
            s.finish(&mut out);
            assert_eq!(out, *want, "{:?}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn any_split_gives_the_same_bytes() {
        for (body, want) in TABLE {
            for cut in 0..=body.len() {
                for cut2 in cut..=body.len() {
                    let mut out = Vec::new();
                    let mut s = DotStuffer::new();
                    s.push(&body[..cut], &mut out);
                    s.push(&body[cut..cut2], &mut out);
                    s.push(&body[cut2..], &mut out);
                    s.finish(&mut out);
                    assert_eq!(out, *want, "{body:?} cut at {cut} and {cut2}");
                }
            }
        }
    }

    #[test]
    fn declared_size() {
        let table: &[(&[u8], u64)] = &[(b"", 0), (b"a", 3), (b"a\r\n", 3), (b".\r\n", 3)];
        for (body, want) in table {
            assert_eq!(message_size(b"", body), *want, "{body:?}");
            assert_eq!(message_size(b"F: v\r\n", body), *want + 6, "{body:?}");
        }
    }
}
