//! Reference models of every framing rule, written to be obviously right rather than fast:
//! each takes the whole byte stream at once (no read boundaries, no buffers, no state
//! carried between reads) and says what the real reader must decide and how many octets it
//! must have consumed. The property tests and the `line`, `data` and `client_reply` fuzz
//! targets run the real readers over the same bytes, cut at random read boundaries, and
//! require the same decisions, byte for byte.
//!
//! The rules (RFC 5321 §2.3.8, §4.1.1.4, §4.5.2, §4.5.3.1):
//! - a line ends at the first LF; it is well framed when the octet before that LF is a CR
//!   and it has no other CR; anything else is a bare CR or LF, whatever the line's length;
//! - a well-framed line with a NUL anywhere in it is refused as such, whatever its length
//!   (in commands the connection then closes, RFC 5321 §4.1.1.4);
//! - a command or text line is at most its limit, CRLF included;
//! - in DATA only a well-framed line holding just `.` ends the message; a bare CR or LF or a
//!   NUL on any line refuses it (and the connection closes); a leading dot is removed and
//!   does not count towards the 1000-octet text line limit.

use mta_smtp::client::reply::{MAX_REPLY_LINE, ReplyError};
use mta_smtp::server::data::DataEnd;
use mta_smtp::server::line::Line;

const CR: u8 = b'\r';
const LF: u8 = b'\n';

/// The octets of the first line of `stream` before its LF, and the octets the line takes
/// with its LF; `None` when there is no LF.
fn first_line(stream: &[u8]) -> Option<(&[u8], usize)> {
    let lf = stream.iter().position(|&b| b == LF)?;
    Some((&stream[..lf], lf + 1))
}

/// Exactly one CR, and it is the last octet.
fn well_framed(before_lf: &[u8]) -> bool {
    before_lf.last() == Some(&CR) && before_lf.iter().filter(|&&b| b == CR).count() == 1
}

/// What `server::line::read_line(.., max)` must return for `stream`, and how many octets
/// it must consume (at the end of the stream: all of them).
pub fn line(stream: &[u8], max: usize) -> (Line, usize) {
    let Some((before_lf, taken)) = first_line(stream) else {
        return (Line::Eof, stream.len());
    };
    let decision = if !well_framed(before_lf) {
        Line::BareLineEnding
    } else if before_lf.contains(&0) {
        Line::Nul
    } else if taken > max {
        Line::TooLong
    } else {
        Line::Complete(before_lf[..before_lf.len() - 1].to_vec())
    };
    (decision, taken)
}

/// RFC 5321 §4.5.3.1.6: a text line is at most 1000 octets, CRLF included, not counting
/// the dot transparency adds (§4.5.2).
const MAX_TEXT: usize = 1000;

/// What `server::data::read_data(.., max_size)` must return for `stream`, and how many
/// octets it must consume.
pub fn data(stream: &[u8], max_size: u64) -> (DataEnd, usize) {
    let mut pos = 0;
    let mut body = Vec::new();
    let mut too_long = false;
    loop {
        let Some((before_lf, taken)) = first_line(&stream[pos..]) else {
            return (DataEnd::Eof, stream.len());
        };
        pos += taken;
        if !well_framed(before_lf) || before_lf.contains(&0) {
            return (DataEnd::Malformed, pos);
        }
        let text = &before_lf[..before_lf.len() - 1];
        if text == b"." {
            break;
        }
        let text = text.strip_prefix(b".").unwrap_or(text);
        if text.len() + 2 > MAX_TEXT {
            too_long = true;
        }
        body.extend_from_slice(text);
        body.extend_from_slice(b"\r\n");
    }
    let end = if too_long {
        DataEnd::LineTooLong
    } else if body.len() as u64 > max_size {
        DataEnd::TooBig
    } else {
        DataEnd::Message(body)
    };
    (end, pos)
}

/// What `client::reply::take_line` must return for the buffer `buf`, and how many octets it
/// must remove from its front (none unless a line is returned).
pub fn reply_line(buf: &[u8]) -> (Result<Option<Vec<u8>>, ReplyError>, usize) {
    match first_line(buf) {
        Some((_, taken)) if taken > MAX_REPLY_LINE => (Err(ReplyError::LineTooLong), 0),
        Some((before_lf, _)) if before_lf.last() != Some(&CR) => (Err(ReplyError::BareLf), 0),
        Some((before_lf, _)) if !well_framed(before_lf) => (Err(ReplyError::BareCr), 0),
        Some((before_lf, taken)) => (Ok(Some(before_lf[..before_lf.len() - 1].to_vec())), taken),
        None if buf.len() >= MAX_REPLY_LINE => (Err(ReplyError::LineTooLong), 0),
        None => (Ok(None), 0),
    }
}

/// A message received in BDAT chunks (RFC 3030), judged on the chunks put together: a NUL,
/// a CR not followed by LF (a CR at the very end included) or an LF not preceded by CR
/// refuses it as malformed; a CRLF is added to a last line without one; a line over 1000
/// octets with its CRLF refuses it; then the size limit, on the message with that CRLF.
pub fn bdat(message: &[u8], max_size: u64) -> DataEnd {
    let bad_cr =
        (0..message.len()).any(|i| message[i] == b'\r' && message.get(i + 1) != Some(&b'\n'));
    let bad_lf =
        (0..message.len()).any(|i| message[i] == b'\n' && (i == 0 || message[i - 1] != b'\r'));
    if message.contains(&0) || bad_cr || bad_lf {
        return DataEnd::Malformed;
    }
    let mut m = message.to_vec();
    if !m.is_empty() && !m.ends_with(b"\r\n") {
        m.extend_from_slice(b"\r\n");
    }
    if m.split_inclusive(|&b| b == b'\n')
        .any(|line| line.len() > 1000)
    {
        return DataEnd::LineTooLong;
    }
    if m.len() as u64 > max_size {
        return DataEnd::TooBig;
    }
    DataEnd::Message(m)
}
