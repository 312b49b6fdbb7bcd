//! The real framing readers against [`crate::model`], over a stream cut at given read
//! boundaries: shared by the property tests below and the `line`,
//! `data` and `client_reply` targets. Each function panics at the first difference.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use mta_smtp::client::reply::take_line;
use mta_smtp::server::data::{DataEnd, read_data};
use mta_smtp::server::line::{Line, MAX_AUTH_LINE, MAX_COMMAND_LINE, MAX_TEXT_LINE, read_line};
use tokio::io::{AsyncRead, BufReader, ReadBuf};

use crate::model;

/// How a stream is cut into reads: each read returns at most the next of `reads` octets
/// (round and round), through a buffer of `capacity` octets, as a socket under a
/// `BufReader` would.
#[derive(Debug, Clone)]
pub struct Cuts {
    /// Octets per read, each ≥ 1.
    pub reads: Vec<usize>,
    /// The buffered reader's capacity, ≥ 1.
    pub capacity: usize,
}

impl Cuts {
    /// Cuts chosen by the first four octets of a fuzz input (the rest is the stream): a
    /// buffer capacity, a largest read, and a seed for the read sizes.
    pub fn from_fuzz(input: &[u8]) -> (Cuts, &[u8]) {
        const CAPACITIES: [usize; 8] = [1, 2, 3, 7, 64, 512, 2048, 8192];
        const LARGEST: [usize; 8] = [1, 2, 5, 13, 100, 1000, 4096, 70_000];
        let (head, stream) = input.split_at(input.len().min(4));
        let byte = |i: usize| head.get(i).copied().unwrap_or(0);
        let capacity = CAPACITIES[usize::from(byte(0) & 7)];
        let largest = LARGEST[usize::from(byte(1) & 7)];
        let mut seed = u32::from_le_bytes([byte(1), byte(2), byte(3), 0x5a]) | 1;
        let reads = (0..16)
            .map(|_| {
                // xorshift32: any fixed, cheap sequence will do.
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                1 + seed as usize % largest
            })
            .collect();
        (Cuts { reads, capacity }, stream)
    }
}

/// A stream that hands out `data` in the sizes `reads` gives.
struct Chunked<'a> {
    data: &'a [u8],
    pos: usize,
    reads: &'a [usize],
    next: usize,
}

impl AsyncRead for Chunked<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        let size = me.reads[me.next % me.reads.len()].max(1);
        me.next += 1;
        let n = size.min(buf.remaining()).min(me.data.len() - me.pos);
        buf.put_slice(&me.data[me.pos..me.pos + n]);
        me.pos += n;
        Poll::Ready(Ok(()))
    }
}

fn reader<'a>(stream: &'a [u8], cuts: &'a Cuts) -> BufReader<Chunked<'a>> {
    let chunked = Chunked {
        data: stream,
        pos: 0,
        reads: &cuts.reads,
        next: 0,
    };
    BufReader::with_capacity(cuts.capacity.max(1), chunked)
}

/// Octets the reader's user has consumed: read from the stream and no longer buffered.
fn consumed(r: &BufReader<Chunked<'_>>) -> usize {
    r.get_ref().pos - r.buffer().len()
}

/// Every `Chunked` read is ready at once, so one poll finishes any of these futures.
fn run<T>(fut: impl std::future::Future<Output = T>) -> T {
    let mut fut = std::pin::pin!(fut);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => unreachable!("an in-memory read never waits"),
    }
}

/// The command-line reader: the stream read line after line, with each limit the server
/// uses, must give the model's lines and consume the model's octets.
pub fn check_lines(stream: &[u8], cuts: &Cuts) {
    for max in [MAX_COMMAND_LINE, MAX_AUTH_LINE, MAX_TEXT_LINE, 16] {
        let mut r = reader(stream, cuts);
        let mut at = 0;
        loop {
            let got = run(read_line(&mut r, max)).expect("reading memory never fails");
            let (want, taken) = model::line(&stream[at..], max);
            at += taken;
            assert_eq!(got, want, "max {max}, line ending at {at}, {cuts:?}");
            assert_eq!(consumed(&r), at, "octets consumed, max {max}, {cuts:?}");
            if got == Line::Eof {
                break;
            }
        }
    }
}

/// The DATA reader: message after message until the stream ends or one is malformed, each
/// decision and the octets consumed as the model says; a kept message is within the limit.
pub fn check_data(stream: &[u8], cuts: &Cuts, max_size: u64) {
    let mut r = reader(stream, cuts);
    let mut at = 0;
    loop {
        // An unlimited memory budget: the budget's own rules are tested in mta-smtp.
        let memory = mta_smtp::server::budget::MessageMemory::default();
        let got = run(read_data(&mut r, max_size, &mut memory.reserve(u64::MAX)))
            .expect("reading memory never fails");
        let (want, taken) = model::data(&stream[at..], max_size);
        at += taken;
        assert_eq!(got, want, "message ending at {at}, {cuts:?}");
        assert_eq!(consumed(&r), at, "octets consumed, {cuts:?}");
        match got {
            DataEnd::Message(body) => assert!(body.len() as u64 <= max_size),
            DataEnd::TooBig | DataEnd::LineTooLong => {}
            DataEnd::NoMemory => unreachable!("an unlimited budget is never spent"),
            DataEnd::Malformed | DataEnd::Eof => return,
        }
    }
}

/// The BDAT chunk reader: `sizes` chunks read from the stream, then the message finished,
/// as [`model::bdat`] says of the chunks put together; each chunk consumes exactly its
/// octets, and a chunk the stream cannot fill is an unexpected end.
pub fn check_bdat(stream: &[u8], sizes: &[usize], cuts: &Cuts, max_size: u64) {
    use mta_smtp::server::bdat::{Chunks, read_chunk};
    let mut r = reader(stream, cuts);
    let memory = mta_smtp::server::budget::MessageMemory::default();
    let mut chunks = Chunks::new(memory.reserve(u64::MAX));
    let mut at = 0;
    for &size in sizes {
        let got = run(read_chunk(&mut r, size as u64, &mut chunks, max_size));
        if at + size > stream.len() {
            let e = got.expect_err("a chunk past the stream's end");
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{cuts:?}");
            return;
        }
        got.expect("reading memory never fails");
        at += size;
        assert_eq!(consumed(&r), at, "octets consumed, {cuts:?}");
    }
    let (got, _held) = chunks.finish(max_size);
    assert_eq!(
        got,
        model::bdat(&stream[..at], max_size),
        "{sizes:?}, {cuts:?}"
    );
}

/// The client's reply framing, as its connection reads: after each read, lines are taken
/// until none is complete; an error ends the connection. Each step as the model says.
pub fn check_reply_lines(stream: &[u8], cuts: &Cuts) {
    let mut buf = Vec::new();
    let mut at = 0;
    let mut next = 0;
    while at < stream.len() {
        let n = cuts.reads[next % cuts.reads.len()]
            .max(1)
            .min(stream.len() - at);
        next += 1;
        buf.extend_from_slice(&stream[at..at + n]);
        at += n;
        loop {
            let (want, taken) = model::reply_line(&buf);
            let before = buf.len();
            let got = take_line(&mut buf);
            assert_eq!(got, want, "after {at} octets, {cuts:?}");
            assert_eq!(before - buf.len(), taken, "octets taken, {cuts:?}");
            match got {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    assert_eq!(take_line(&mut buf), want, "an error stays an error");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Streams made mostly of the octets framing turns on: CR, LF, dots, NUL, CRLF and the
    /// real end of data, runs long enough to pass every limit, and now and then any octet.
    fn stream() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            4 => Just(b"\r".to_vec()),
            4 => Just(b"\n".to_vec()),
            6 => Just(b"\r\n".to_vec()),
            3 => Just(b".".to_vec()),
            3 => Just(b"\r\n.\r\n".to_vec()),
            2 => Just(b"\0".to_vec()),
            4 => (1usize..20).prop_map(|n| vec![b'a'; n]),
            2 => prop_oneof![Just(495usize), Just(508), Just(509), Just(510), Just(996),
                              Just(997), Just(998), Just(999), Just(1000), Just(12_284),
                              Just(12_286), Just(12_287), 1usize..14_000]
                .prop_map(|n| vec![b'x'; n]),
            2 => any::<u8>().prop_map(|b| vec![b]),
        ];
        prop::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
    }

    fn cuts() -> impl Strategy<Value = Cuts> {
        let read = prop_oneof![1usize..4, 1usize..64, 500usize..1100, 1usize..20_000];
        let capacity = prop_oneof![
            Just(1usize),
            1usize..16,
            500usize..1100,
            Just(2048),
            Just(8192)
        ];
        (prop::collection::vec(read, 1..8), capacity)
            .prop_map(|(reads, capacity)| Cuts { reads, capacity })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

        #[test]
        fn command_lines_as_the_model_says(s in stream(), c in cuts()) {
            check_lines(&s, &c);
        }

        #[test]
        fn data_as_the_model_says(s in stream(), c in cuts(), max in prop_oneof![Just(0u64), 1u64..3000, Just(1u64 << 30)]) {
            check_data(&s, &c, max);
        }

        #[test]
        fn bdat_as_the_model_says(
            s in stream(),
            c in cuts(),
            sizes in proptest::collection::vec(0usize..1500, 0..6),
            max in prop_oneof![Just(0u64), 1u64..3000, Just(1u64 << 30)],
        ) {
            check_bdat(&s, &sizes, &c, max);
        }

        #[test]
        fn reply_lines_as_the_model_says(s in stream(), c in cuts()) {
            check_reply_lines(&s, &c);
        }
    }
}
