//! CHUNKING (RFC 3030): `BDAT <size> [LAST]` and the chunks of octets that follow it.
//!
//! A chunk is exactly `size` octets, not dot-stuffed and not ended by any marker, so the
//! framing of the SMTP stream itself is never in doubt: the reader consumes exactly the
//! announced octets, whatever they hold, and the next command starts after them. What the
//! chunks hold together is the message, and it meets the same rules as one sent with DATA,
//! because it may later be relayed with DATA to a server that reads lines:
//!
//! - a bare CR or LF, or a NUL, anywhere in the message (also across the boundary of two
//!   chunks) is refused with the DATA reply and the connection closed, so a message whose
//!   line endings another server could read differently is never queued (SMTP smuggling);
//!   a `.` line is data (RFC 3030 §2: no transparency) and is stuffed again when relayed;
//! - a line over 1000 octets with its CRLF (RFC 5321 §4.5.3.1.6) refuses the message;
//! - the size limit counts the octets of all chunks: past it nothing more is kept, but the
//!   rest of the chunk is still read and thrown away (RFC 3030 §2: the receiver consumes
//!   the whole chunk before it answers), so the dialogue stays in step;
//! - the buffer grows as octets arrive, each step reserved from the server's memory budget
//!   before it is allocated: an announced size is never allocated up front.
//!
//! The first chunk that breaks a rule is answered with the refusal and the transaction is
//! reset; chunks the client pipelined after it get `503` (no transaction), each read and
//! thrown away. A message whose last line has no CRLF gets one at `LAST`, as a DATA client
//! would have sent it.

use std::io;

use mta_core::reply::Reply;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use super::budget::Reservation;
use super::data::{DataEnd, make_room};

/// The most digits a chunk size may have: `u64` has 20, and no real size needs more.
const MAX_SIZE_DIGITS: usize = 20;

/// A text line's limit with its CRLF (RFC 5321 §4.5.3.1.6).
const MAX_LINE: usize = 1000;

/// Parses the arguments of `BDAT`: `1*DIGIT [SP "LAST"]` (RFC 3030 §2), LAST in any case.
///
/// # Errors
/// The `501` to answer; the caller closes, since the octets that follow cannot be counted.
pub fn parse(rest: &str) -> Result<(u64, bool), Reply> {
    let mut words = rest.split(' ');
    let size = words.next().unwrap_or("");
    let last = match (words.next(), words.next()) {
        (None, _) => false,
        (Some(w), None) if w.eq_ignore_ascii_case("LAST") => true,
        _ => return Err(Reply::BAD_BDAT_SYNTAX),
    };
    if size.is_empty() || size.len() > MAX_SIZE_DIGITS || !size.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(Reply::BAD_BDAT_SYNTAX);
    }
    size.parse::<u64>()
        .map(|n| (n, last))
        .map_err(|_| Reply::BAD_BDAT_SYNTAX)
}

/// The message as its chunks arrive: the octets kept so far, and the framing state carried
/// from one chunk to the next.
#[derive(Debug)]
pub struct Chunks<'a> {
    body: Vec<u8>,
    /// When the first chunk was announced: the whole message has `data_timeout` from here.
    started: tokio::time::Instant,
    /// The budget this message's buffer is reserved in.
    held: Reservation<'a>,
    /// Octets received in all chunks.
    size: u64,
    /// The last octet received was a CR.
    prev_cr: bool,
    /// Octets of the current line so far (a CR included).
    line: usize,
    malformed: bool,
    too_long: bool,
    no_memory: bool,
}

/// What the chunks received so far amount to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Nothing wrong yet.
    Fine,
    /// A bare CR or LF, or a NUL: refuse and close.
    Malformed,
    /// A line over 1000 octets.
    LineTooLong,
    /// Over the size limit.
    TooBig,
    /// Over the memory budget.
    NoMemory,
}

impl<'a> Chunks<'a> {
    /// An empty message whose buffer is reserved in `held`.
    pub fn new(held: Reservation<'a>) -> Chunks<'a> {
        Chunks {
            body: Vec::new(),
            started: tokio::time::Instant::now(),
            held,
            size: 0,
            prev_cr: false,
            line: 0,
            malformed: false,
            too_long: false,
            no_memory: false,
        }
    }

    /// When the first chunk was announced.
    pub fn started(&self) -> tokio::time::Instant {
        self.started
    }

    /// Octets received in all chunks so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The first rule the message broke, worst first.
    pub fn state(&self, max_size: u64) -> State {
        if self.malformed {
            State::Malformed
        } else if self.too_long {
            State::LineTooLong
        } else if self.size > max_size {
            State::TooBig
        } else if self.no_memory {
            State::NoMemory
        } else {
            State::Fine
        }
    }

    /// Takes `octets` of a chunk: checks their framing and keeps them while the message is
    /// within `max_size` and the budget.
    fn add(&mut self, octets: &[u8], max_size: u64) {
        for &b in octets {
            if self.prev_cr && b != b'\n' {
                self.malformed = true;
            }
            match b {
                b'\n' if !self.prev_cr => self.malformed = true,
                b'\n' => {
                    self.too_long |= self.line + 1 > MAX_LINE;
                    self.line = 0;
                }
                0 => self.malformed = true,
                _ => self.line = self.line.saturating_add(1),
            }
            self.prev_cr = b == b'\r';
        }
        self.size = self.size.saturating_add(octets.len() as u64);
        let keep = self.state(max_size) == State::Fine;
        let most = usize::try_from(max_size).unwrap_or(usize::MAX);
        if keep && make_room(&mut self.body, octets.len(), most, &mut self.held) {
            self.body.extend_from_slice(octets);
        } else {
            self.no_memory |= keep;
            self.body = Vec::new();
            self.held.release();
        }
    }

    /// The whole message after `LAST`, with a CRLF added to a last line without one, and
    /// the reservation that holds it; or why it is refused.
    pub fn finish(mut self, max_size: u64) -> (DataEnd, Reservation<'a>) {
        if self.prev_cr {
            self.malformed = true;
        } else if self.line > 0 {
            self.add(b"\r\n", max_size);
        }
        let end = match self.state(max_size) {
            State::Fine => DataEnd::Message(self.body),
            State::Malformed => DataEnd::Malformed,
            State::LineTooLong => DataEnd::LineTooLong,
            State::TooBig => DataEnd::TooBig,
            State::NoMemory => DataEnd::NoMemory,
        };
        (end, self.held)
    }
}

/// Reads one chunk of exactly `size` octets into `chunks`, never more.
///
/// # Errors
/// I/O errors of the reader, and [`io::ErrorKind::UnexpectedEof`] when the connection
/// closes before the chunk is complete.
pub async fn read_chunk<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    size: u64,
    chunks: &mut Chunks<'_>,
    max_size: u64,
) -> io::Result<()> {
    let mut left = size;
    while left > 0 {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let n = available
            .len()
            .min(usize::try_from(left).unwrap_or(usize::MAX));
        chunks.add(&available[..n], max_size);
        reader.consume(n);
        left -= n as u64;
    }
    Ok(())
}

/// Reads and throws away a chunk of `size` octets (one answered with an error before it
/// was read).
///
/// # Errors
/// As [`read_chunk`].
pub async fn skip_chunk<R: AsyncBufRead + Unpin>(reader: &mut R, size: u64) -> io::Result<()> {
    let mut left = size;
    while left > 0 {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let n = available
            .len()
            .min(usize::try_from(left).unwrap_or(usize::MAX));
        reader.consume(n);
        left -= n as u64;
    }
    Ok(())
}

/// The reply to a chunk that was read and kept, not the last one.
pub fn chunk_ok(size: u64, total: u64) -> Reply {
    Reply::new(
        250,
        "2.0.0",
        format!("{size} octets received, {total} in all"),
    )
}

#[cfg(test)]
#[path = "bdat_tests.rs"]
mod tests;
