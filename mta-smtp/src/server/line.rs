//! Framing: reading one CRLF-terminated line with a length limit, from any buffered
//! reader. A line is never buffered past its limit (the rest is read and thrown away), and
//! a bare CR or LF is reported, never silently accepted (SMTP smuggling, RFC 5321 §2.3.8).

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
    /// The line was longer than the limit; it has been read to its end and discarded.
    TooLong,
    /// The line ended in a bare LF, or had a CR not followed by LF.
    BareLineEnding,
    /// The peer closed the connection (a partial last line is dropped).
    Eof,
}

/// Reads one line of at most `max` octets including CRLF.
///
/// # Errors
/// I/O errors of the underlying reader.
pub async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R, max: usize) -> io::Result<Line> {
    let mut line = Vec::new();
    let mut too_long = false;
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
        if !too_long {
            if line.len() + chunk.len() > max {
                too_long = true;
                line.clear();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        reader.consume(taken);
        if done {
            break;
        }
    }
    if too_long {
        return Ok(Line::TooLong);
    }
    // `line` ends with '\n'. It must be "\r\n", and no other CR may appear.
    line.pop();
    if line.pop() != Some(b'\r') || line.contains(&b'\r') {
        return Ok(Line::BareLineEnding);
    }
    Ok(Line::Complete(line))
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
}
