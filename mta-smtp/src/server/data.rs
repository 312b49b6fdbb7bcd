//! Reading the message after DATA (RFC 5321 §4.1.1.4, §4.5.2): lines up to `<CRLF>.<CRLF>`,
//! dot-unstuffed, with the size limit applied as data arrives.
//!
//! Only `<CRLF>.<CRLF>` ends the data. A bare CR or LF anywhere is refused at once and the
//! connection closed, so no other ending can be read as the end of a message (SMTP
//! smuggling). A NUL is refused the same way. These rules hold on every line, also on one
//! over 1000 octets that is not kept: a long line ending in a bare LF is a framing
//! violation, never the end of a long line. A message over the size limit, or with a
//! well-framed line over 1000 octets, is read to its end and then refused, keeping the
//! dialogue in step.
//! So is one that would pass the server's budget for message bytes in memory: the buffer
//! grows in bounded steps, each reserved from the budget before it is allocated, so the
//! budget counts the memory the message really takes (its capacity, not only its length).

use std::io;

use tokio::io::AsyncBufRead;

use super::budget::Reservation;
use super::line::{Line, MAX_TEXT_LINE, read_line};

/// How far the body's buffer grows past what the next line needs: doubling while the
/// message is small, at most this much at a time once it is large. Its capacity, all of it
/// reserved from the budget, stays within this of the message's length (a doubling buffer
/// held up to twice the message).
const GROWTH_STEP: usize = 256 * 1024;

/// The first allocation for a body: a small message grows no more than once or twice.
const FIRST_CAPACITY: usize = 4096;

/// How the data phase ended.
#[derive(Debug, PartialEq, Eq)]
pub enum DataEnd {
    /// The message, unstuffed, every line ending in CRLF.
    Message(Vec<u8>),
    /// The message was larger than the limit (read to its end, not kept).
    TooBig,
    /// A line was longer than 1000 octets (read to its end, not kept).
    LineTooLong,
    /// Keeping the message would pass the budget for message bytes in memory (read to its
    /// end, not kept).
    NoMemory,
    /// A bare CR or LF, or a NUL: the data cannot be trusted to end where the client
    /// thinks. Answer and close.
    Malformed,
    /// The connection closed before the final dot.
    Eof,
}

/// Reads the data of one message, keeping at most `max_size` octets. The buffer that keeps
/// them is reserved in `budget` before it is allocated, capacity and all (the reservation
/// holds it until the caller drops it).
///
/// # Errors
/// I/O errors of the underlying reader.
pub async fn read_data<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    max_size: u64,
    budget: &mut Reservation<'_>,
) -> io::Result<DataEnd> {
    let mut body = Vec::new();
    let mut size: u64 = 0;
    let mut too_long = false;
    let mut no_memory = false;
    loop {
        let line = match read_line(reader, MAX_TEXT_LINE).await? {
            Line::Complete(l) => l,
            Line::TooLong => {
                too_long = true;
                continue;
            }
            Line::Nul | Line::BareLineEnding => return Ok(DataEnd::Malformed),
            Line::Eof => return Ok(DataEnd::Eof),
        };
        if line == b"." {
            break;
        }
        // Every line that starts with a dot was stuffed by the client (§4.5.2), so the
        // 1000-octet limit (§4.5.3.1.6) applies to the line without that dot.
        let text = line.strip_prefix(b".").unwrap_or(&line);
        if text.len() + 2 > MAX_TEXT_LINE - 1 {
            too_long = true;
        }
        size += text.len() as u64 + 2;
        let keep = size <= max_size && !too_long && !no_memory;
        let most = usize::try_from(max_size).unwrap_or(usize::MAX);
        if keep && make_room(&mut body, text.len() + 2, most, budget) {
            body.extend_from_slice(text);
            body.extend_from_slice(b"\r\n");
        } else {
            // Over a limit: stop keeping data, but read on to the dot.
            no_memory |= keep;
            body = Vec::new();
            budget.release();
        }
    }
    if too_long {
        Ok(DataEnd::LineTooLong)
    } else if size > max_size {
        Ok(DataEnd::TooBig)
    } else if no_memory {
        Ok(DataEnd::NoMemory)
    } else {
        Ok(DataEnd::Message(body))
    }
}

/// Makes room in `body` for `need` more octets, growing it by at most [`GROWTH_STEP`] past
/// the need (never past `most` in all) and reserving the new capacity in `budget` before it
/// is allocated: false, with nothing reserved or allocated, when the budget has no room even
/// for the need alone.
pub(super) fn make_room(
    body: &mut Vec<u8>,
    need: usize,
    most: usize,
    budget: &mut Reservation<'_>,
) -> bool {
    let (len, capacity) = (body.len(), body.capacity());
    if capacity - len >= need {
        return true;
    }
    let least = len + need;
    let step = capacity.clamp(FIRST_CAPACITY, GROWTH_STEP);
    let wanted = (capacity + step).min(most).max(least);
    for target in [wanted, least] {
        if budget.grow((target - capacity) as u64) {
            body.reserve_exact(target - len);
            debug_assert_eq!(body.capacity(), target);
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::super::budget::MessageMemory;
    use super::*;
    use tokio::io::{AsyncReadExt, BufReader};

    async fn read(input: &[u8], max: u64, capacity: usize) -> (DataEnd, Vec<u8>) {
        let mut r = BufReader::with_capacity(capacity, input);
        let memory = MessageMemory::default();
        let end = read_data(&mut r, max, &mut memory.reserve(u64::MAX))
            .await
            .unwrap();
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).await.unwrap();
        (end, rest)
    }

    #[tokio::test]
    async fn ends_and_unstuffs() {
        for capacity in [1, 3, 16, 4096] {
            let (end, rest) =
                read(b"Subject: x\r\n\r\n..dot\r\n.\r\nQUIT\r\n", 1000, capacity).await;
            assert_eq!(
                end,
                DataEnd::Message(b"Subject: x\r\n\r\n.dot\r\n".to_vec())
            );
            assert_eq!(rest, b"QUIT\r\n", "the next command is left unread");
            let (end, _) = read(b".\r\n", 1000, capacity).await;
            assert_eq!(end, DataEnd::Message(Vec::new()));
        }
    }

    #[tokio::test]
    async fn smuggling_endings_are_refused() {
        // Each of these must never end the data; the whole message is refused instead.
        let endings: [&[u8]; 9] = [
            b"\n.\n",
            b"\r.\r",
            b"\r.\n",
            b"\n.\r",
            b"\n.\r\n",
            b"\r\n.\n",
            b"\r.\r\n",
            b"\r\n.\r",
            b"\r\n\0.\r\n",
        ];
        for ending in endings {
            let mut input = b"Subject: a\r\n\r\nbody".to_vec();
            input.extend_from_slice(ending);
            input.extend_from_slice(
                b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<v@y.test>\r\nDATA\r\nsmuggled\r\n.\r\n",
            );
            let (end, _) = read(&input, 100_000, 7).await;
            assert_eq!(end, DataEnd::Malformed, "ending {ending:?}");
        }
    }

    #[tokio::test]
    async fn limits_read_to_the_dot() {
        let big = format!("{}\r\n.\r\nNOOP\r\n", "a".repeat(500));
        let (end, rest) = read(big.as_bytes(), 100, 64).await;
        assert_eq!((end, rest.as_slice()), (DataEnd::TooBig, &b"NOOP\r\n"[..]));
        let (end, _) = read(big.as_bytes(), 502, 64).await;
        assert!(matches!(end, DataEnd::Message(_)));
        let ok = format!("{}\r\n..{}\r\n.\r\n", "a".repeat(998), "b".repeat(997));
        assert!(matches!(
            read(ok.as_bytes(), 100_000, 64).await.0,
            DataEnd::Message(_)
        ));
        let over = format!("{}\r\n.\r\n", "a".repeat(999));
        assert_eq!(
            read(over.as_bytes(), 100_000, 64).await.0,
            DataEnd::LineTooLong
        );
        let long = format!("{}\r\n.\r\nNOOP\r\n", "a".repeat(1000));
        let (end, rest) = read(long.as_bytes(), 100_000, 64).await;
        assert_eq!(
            (end, rest.as_slice()),
            (DataEnd::LineTooLong, &b"NOOP\r\n"[..])
        );
        let (end, _) = read(b"no end\r\n", 100, 4).await;
        assert_eq!(end, DataEnd::Eof);
    }

    #[tokio::test]
    async fn the_memory_budget_is_reserved_and_read_to_the_dot() {
        let memory = MessageMemory::default();
        let msg = b"12345678\r\n..abc\r\n.\r\nNOOP\r\n";
        // Fits: the reservation holds exactly the bytes kept until it is dropped.
        let mut held = memory.reserve(16);
        let mut r = BufReader::with_capacity(4, &msg[..]);
        let end = read_data(&mut r, 1000, &mut held).await.unwrap();
        assert_eq!(end, DataEnd::Message(b"12345678\r\n.abc\r\n".to_vec()));
        assert_eq!((held.bytes(), memory.held()), (16, 16));
        // Another message does not fit beside it: read to the dot, refused, nothing held.
        let mut other = memory.reserve(16);
        let mut r = BufReader::with_capacity(4, &msg[..]);
        assert_eq!(
            read_data(&mut r, 1000, &mut other).await.unwrap(),
            DataEnd::NoMemory
        );
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"NOOP\r\n", "the next command is left unread");
        assert_eq!((other.bytes(), memory.held()), (0, 16));
        drop(held);
        assert_eq!(memory.held(), 0);
        // The size limit still has the last word, as before.
        let mut r = BufReader::with_capacity(4, &msg[..]);
        let end = read_data(&mut r, 10, &mut memory.reserve(5)).await.unwrap();
        assert_eq!(end, DataEnd::TooBig);
        assert_eq!(memory.held(), 0);
    }

    /// The buffer never holds more than the budget reserved for it: its whole capacity is
    /// reserved, and that stays within one growth step of the message (a buffer that
    /// doubled held up to twice what was reserved). A budget of exactly the message's size
    /// still takes it.
    #[tokio::test]
    async fn the_buffer_stays_within_what_the_budget_reserved() {
        for (lines, width) in [(1, 10), (3, 998), (700, 998), (5000, 78), (40_000, 3)] {
            let line = format!("{}\r\n", "x".repeat(width));
            let mut input = line.repeat(lines).into_bytes();
            let n = input.len() as u64;
            input.extend_from_slice(b".\r\n");
            for limit in [u64::MAX, n] {
                let memory = MessageMemory::default();
                let mut held = memory.reserve(limit);
                let mut r = BufReader::with_capacity(2048, &input[..]);
                let end = read_data(&mut r, 30 << 20, &mut held).await.unwrap();
                let DataEnd::Message(body) = end else {
                    panic!("{lines} x {width}, budget {limit}: {end:?}");
                };
                assert_eq!(body.len() as u64, n);
                let capacity = body.capacity() as u64;
                assert_eq!(
                    held.bytes(),
                    capacity,
                    "{lines} x {width}: all of it reserved"
                );
                assert_eq!(memory.held(), capacity);
                let slack = (GROWTH_STEP as u64).min(n.max(FIRST_CAPACITY as u64));
                assert!(
                    capacity <= n + slack,
                    "{lines} x {width}: {capacity} for {n}"
                );
            }
        }
    }

    /// The smuggling endings after a line over 1000 octets (the audit's case: the reader
    /// used to skip its checks until the next LF, so `<long line>\n.\r\n` ended the data):
    /// each is refused as malformed wherever the reads are cut (the connection loop then
    /// closes). A well-framed long line is only too long, and the dialogue stays in step.
    #[tokio::test]
    async fn over_long_lines_keep_every_framing_rule() {
        let endings: [&[u8]; 11] = [
            b"\n.\r\n",
            b"\n.\n",
            b"\r.\r\n",
            b"\r.\n",
            b"\r\n.\n",
            b"\r\n.\r",
            b"\n.\r",
            b"\r.\r",
            b"\r\n\0.\r\n",
            b"\0\r\n.\r\n",
            b"\r\r\n.\r\n",
        ];
        let smuggled = b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<v@y.test>\r\nDATA\r\nx\r\n.\r\n";
        for len in [999, 1000, 1001, 1100, 5000, 20_000] {
            for ending in endings {
                let mut input = b"Subject: a\r\n\r\n".to_vec();
                input.extend(std::iter::repeat_n(b'a', len));
                input.extend_from_slice(ending);
                input.extend_from_slice(smuggled);
                for capacity in [1, 7, 1000, 1001, 1002, 2048, 8192] {
                    let (end, _) = read(&input, 100_000, capacity).await;
                    assert_eq!(end, DataEnd::Malformed, "{len} {ending:?} {capacity}");
                }
            }
            let mut fine = b"Subject: a\r\n\r\n".to_vec();
            fine.extend(std::iter::repeat_n(b'a', len));
            fine.extend_from_slice(b"\r\n.\r\nNOOP\r\n");
            let (end, rest) = read(&fine, 100_000, 64).await;
            let want = if len + 2 > 1000 {
                DataEnd::LineTooLong
            } else {
                DataEnd::Message(fine[..fine.len() - 9].to_vec())
            };
            assert_eq!((end, rest.as_slice()), (want, &b"NOOP\r\n"[..]), "{len}");
        }
    }
}
