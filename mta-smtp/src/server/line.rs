//! Framing: reading one CRLF-terminated line with a length limit, from any buffered
//! reader. A line is never buffered past its limit (the rest is read and thrown away), and
//! a bare CR or LF or a NUL is reported, never silently accepted (SMTP smuggling, RFC 5321
//! §2.3.8; NUL is not allowed in commands, §4.1.1.4 and §4.1.2, nor in text lines).

use std::io;

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// RFC 5321 §4.5.3.1.4: a command line is at most 512 octets with its CRLF.
pub const MAX_COMMAND_LINE: usize = 512;
/// RFC 4954 §4: an AUTH command or SASL response line may be up to 12288 octets.
pub const MAX_AUTH_LINE: usize = 12288;
/// RFC 5321 §4.5.3.1.6: a text line is at most 1000 octets with its CRLF; one more is
/// allowed for the dot that transparency (§4.5.2) may have added.
pub const MAX_TEXT_LINE: usize = 1001;

/// One framed line.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A line; the CRLF is removed.
    Complete(Vec<u8>),
    /// A well-framed line (it ends in CRLF and has no other CR) without NUL, longer than the
    /// limit; it has been read to its end and discarded.
    TooLong,
    /// The line ended in a bare LF, or had a CR not followed by LF, whatever its length.
    BareLineEnding,
    /// A well-framed line holding a NUL octet, whatever its length; read to its end.
    Nul,
    /// The peer closed the connection (a partial last line is dropped).
    Eof,
}

/// Reads one line of at most `max` octets including CRLF.
///
/// A line ends at the first LF. It is well framed only when the octet before that LF is a
/// CR and it has no other CR; this is checked on every line, kept or not, so a line over
/// the limit cannot end in a bare LF or hide a bare CR (SMTP smuggling after a long line).
/// A well-framed line with a NUL anywhere in it is [`Line::Nul`], whatever its length.
/// Only the first `max` octets are ever buffered.
///
/// # Errors
/// I/O errors of the underlying reader.
pub async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R, max: usize) -> io::Result<Line> {
    let mut line = Vec::new();
    let mut too_long = false;
    let mut shape = Shape::default();
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(Line::Eof);
        }
        let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..=i], true),
            None => (available, false),
        };
        let taken = chunk.len();
        shape.add(if done { &chunk[..taken - 1] } else { chunk });
        if !too_long {
            if line.len() + chunk.len() > max {
                too_long = true;
                line = Vec::new();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        reader.consume(taken);
        if done {
            break;
        }
    }
    if !shape.well_framed() {
        return Ok(Line::BareLineEnding);
    }
    if shape.nul {
        return Ok(Line::Nul);
    }
    if too_long {
        return Ok(Line::TooLong);
    }
    // `line` ends with "\r\n" and has no other CR.
    line.truncate(line.len() - 2);
    Ok(Line::Complete(line))
}

/// What framing needs to know of a line's octets before its LF, gathered as they stream
/// past (a line over the limit is not kept, but still checked).
#[derive(Default)]
struct Shape {
    /// CR octets seen.
    crs: usize,
    /// The last octet seen was a CR.
    ends_in_cr: bool,
    /// A NUL octet was seen.
    nul: bool,
}

impl Shape {
    fn add(&mut self, octets: &[u8]) {
        if let Some(&last) = octets.last() {
            self.crs = self
                .crs
                .saturating_add(octets.iter().filter(|&&b| b == b'\r').count());
            self.nul |= octets.contains(&0);
            self.ends_in_cr = last == b'\r';
        }
    }

    /// Exactly one CR, right before the LF.
    fn well_framed(&self) -> bool {
        self.ends_in_cr && self.crs == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::BufReader;

    async fn lines(input: &[u8], max: usize, capacity: usize) -> Vec<Line> {
        let mut r = BufReader::with_capacity(capacity, input);
        let mut out = Vec::new();
        loop {
            let l = read_line(&mut r, max).await.unwrap();
            let end = l == Line::Eof;
            out.push(l);
            if end {
                return out;
            }
        }
    }

    #[tokio::test]
    async fn framing_in_any_chunking() {
        let input = b"EHLO a\r\n0123456789\r\nbare\nlf\r\ncr\rin\r\nok\r\npartial";
        for capacity in [1, 2, 3, 7, 64] {
            let got = lines(input, 10, capacity).await;
            assert_eq!(
                got,
                vec![
                    Line::Complete(b"EHLO a".to_vec()),
                    Line::TooLong,
                    Line::BareLineEnding,
                    Line::Complete(b"lf".to_vec()),
                    Line::BareLineEnding,
                    Line::Complete(b"ok".to_vec()),
                    Line::Eof,
                ],
                "capacity {capacity}"
            );
        }
    }

    #[tokio::test]
    async fn limit_counts_crlf() {
        assert_eq!(
            lines(b"12345678\r\n", 10, 4).await[0],
            Line::Complete(b"12345678".to_vec())
        );
        assert_eq!(lines(b"123456789\r\n", 10, 4).await[0], Line::TooLong);
    }

    /// Every framing rule holds on a line over the limit too: it is refused for its bare
    /// CR or LF wherever that is (in the part kept, in the part thrown away, at its end),
    /// never taken as a long line ending where the client wants (SMTP smuggling after a
    /// long line); a NUL in it is reported; the next line starts after its LF.
    #[tokio::test]
    async fn over_long_lines_keep_every_framing_rule() {
        let long = "a".repeat(600);
        let no_nul = Line::TooLong;
        let nul = || Line::Nul;
        let next = || Line::Complete(b"NEXT".to_vec());
        let dot = || Line::Complete(b".".to_vec());
        let table = vec![
            (
                "LONG\n.\r\nNEXT\r\n",
                vec![Line::BareLineEnding, dot(), next()],
            ),
            ("LONG\r.\r\nNEXT\r\n", vec![Line::BareLineEnding, next()]),
            ("LONG\r\r\nNEXT\r\n", vec![Line::BareLineEnding, next()]),
            ("LONG\rLONG\r\nNEXT\r\n", vec![Line::BareLineEnding, next()]),
            ("a\rLONG\r\nNEXT\r\n", vec![Line::BareLineEnding, next()]),
            ("LONG\n", vec![Line::BareLineEnding]),
            ("LONG\r\nNEXT\r\n", vec![no_nul, next()]),
            ("LONG\r\n.\n", vec![Line::TooLong, Line::BareLineEnding]),
            ("LONG\r\n.\r\n", vec![Line::TooLong, dot()]),
            ("LONG\0LONG\r\nNEXT\r\n", vec![nul(), next()]),
            ("\0LONG\r\n", vec![nul()]),
            ("LONG\0\r\n", vec![nul()]),
            ("a\0b\r\nNEXT\r\n", vec![nul(), next()]),
            ("\0\r\n", vec![nul()]),
            ("LONG\0\n", vec![Line::BareLineEnding]),
            ("a\0b\rc\r\n", vec![Line::BareLineEnding]),
        ];
        for (template, mut want) in table {
            want.push(Line::Eof);
            let input = template.replace("LONG", &long);
            for capacity in [1, 2, 7, 64, 511, 512, 513, 4096] {
                let got = lines(input.as_bytes(), 512, capacity).await;
                assert_eq!(got, want, "{template:?}, capacity {capacity}");
            }
        }
    }
}
