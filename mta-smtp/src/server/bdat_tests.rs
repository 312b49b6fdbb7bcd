use super::super::budget::MessageMemory;
use super::*;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, BufReader};

#[test]
fn parses_sizes() {
    assert_eq!(parse("0"), Ok((0, false)));
    assert_eq!(parse("123 LAST"), Ok((123, true)));
    assert_eq!(parse("5 last"), Ok((5, true)));
    assert_eq!(parse("18446744073709551615"), Ok((u64::MAX, false)));
    for bad in [
        "",
        " ",
        "x",
        "-1",
        "+1",
        "1 LAST x",
        "1  LAST",
        "1 FIRST",
        "12a",
        "0x10",
        "18446744073709551616",
        "000000000000000000001",
    ] {
        assert_eq!(parse(bad), Err(Reply::BAD_BDAT_SYNTAX), "{bad:?}");
    }
}

/// Feeds `input` (BDAT octets then whatever follows) through the reader in chunks of the
/// given sizes and finishes the message: the outcome and what was left unread.
async fn run(
    input: &[u8],
    sizes: &[u64],
    max: u64,
    capacity: usize,
    budget: u64,
) -> (Vec<State>, DataEnd, Vec<u8>) {
    let memory = MessageMemory::default();
    let mut r = BufReader::with_capacity(capacity, input);
    let mut chunks = Chunks::new(memory.reserve(budget));
    let mut states = Vec::new();
    for &size in sizes {
        read_chunk(&mut r, size, &mut chunks, max).await.unwrap();
        states.push(chunks.state(max));
    }
    let (end, held) = chunks.finish(max);
    if let DataEnd::Message(body) = &end {
        assert_eq!(
            held.bytes(),
            body.capacity() as u64,
            "the buffer is all reserved"
        );
        assert!(held.bytes() <= budget.max(2));
    }
    drop(held);
    assert_eq!(memory.held(), 0, "everything given back");
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).await.unwrap();
    (states, end, rest)
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

/// The rules written plainly, on the whole message at once: no NUL, every CR followed by
/// LF and every LF preceded by CR, a CRLF added to a last line without one, no line over
/// 1000 octets with its CRLF, the size limit on what the chunks held plus that CRLF.
fn model(message: &[u8], max: u64) -> DataEnd {
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
    if m.split(|&b| b == b'\n').any(|line| line.len() + 1 > 1000) {
        return DataEnd::LineTooLong;
    }
    if m.len() as u64 > max {
        return DataEnd::TooBig;
    }
    DataEnd::Message(m)
}

#[test]
fn chunks_read_exactly_their_size_and_dots_are_data() {
    block_on(async {
        let input = b".\r\n..x\r\nQUIT\r\nNOOP\r\n";
        let (states, end, rest) = run(input, &[3, 5, 0], 1000, 2, u64::MAX).await;
        assert_eq!(states, vec![State::Fine; 3]);
        assert_eq!(end, DataEnd::Message(b".\r\n..x\r\n".to_vec()));
        assert_eq!(rest, b"QUIT\r\nNOOP\r\n", "the next command is left unread");
        // A CRLF split over two chunks is one line ending; a CR ending the message is not.
        let (_, end, _) = run(b"a\r\nb\r", &[2, 3], 1000, 7, u64::MAX).await;
        assert_eq!(end, DataEnd::Malformed);
        let (_, end, _) = run(b"a\r\nb", &[2, 2], 1000, 7, u64::MAX).await;
        assert_eq!(end, DataEnd::Message(b"a\r\nb\r\n".to_vec()));
        let (_, end, _) = run(b"", &[0], 1000, 7, u64::MAX).await;
        assert_eq!(end, DataEnd::Message(Vec::new()));
    });
}

#[test]
fn over_the_limits_the_chunk_is_still_read_whole() {
    block_on(async {
        let mut input = vec![b'a'; 5000];
        input.extend_from_slice(b"\r\nNOOP\r\n");
        let (states, end, rest) = run(&input, &[5002], 100, 64, u64::MAX).await;
        assert_eq!((states[0], end), (State::LineTooLong, DataEnd::LineTooLong));
        assert_eq!(rest, b"NOOP\r\n");
        let input = "abc\r\n".repeat(100) + "NOOP\r\n";
        let (states, end, rest) = run(input.as_bytes(), &[250, 250], 300, 64, u64::MAX).await;
        assert_eq!(states, vec![State::Fine, State::TooBig]);
        assert_eq!(end, DataEnd::TooBig);
        assert_eq!(rest, b"NOOP\r\n");
        // The memory budget: refused, read to the chunk's end, nothing held.
        let (states, end, rest) = run(input.as_bytes(), &[500], 100_000, 64, 100).await;
        assert_eq!((states[0], end), (State::NoMemory, DataEnd::NoMemory));
        assert_eq!(rest, b"NOOP\r\n");
    });
}

/// A lying size: fewer octets than announced, then the connection closes.
#[test]
fn a_short_chunk_is_an_unexpected_end() {
    block_on(async {
        let memory = MessageMemory::default();
        let mut chunks = Chunks::new(memory.reserve(u64::MAX));
        let mut r = BufReader::with_capacity(4, &b"only ten.."[..]);
        let e = read_chunk(&mut r, 11, &mut chunks, 1000).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        let mut r = BufReader::with_capacity(4, &b"only ten.."[..]);
        let e = skip_chunk(&mut r, u64::MAX).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    });
}

fn message() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        6 => Just(b"\r\n".to_vec()),
        6 => proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'.'), Just(b' ')], 0..40),
        1 => Just(vec![b'x'; 997]),
        1 => Just(vec![b'x'; 998]),
        1 => Just(vec![b'\r']),
        1 => Just(vec![b'\n']),
        1 => Just(vec![0]),
        1 => Just(b".\r\n".to_vec()),
    ];
    proptest::collection::vec(piece, 0..30).prop_map(|p| p.concat())
}

proptest! {
    /// Any chunking of any message, read through a buffer of any size, gives what the plain
    /// model says of the whole message, and leaves the next command unread.
    #[test]
    fn any_chunking_matches_the_model(
        msg in message(),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        capacity in 1usize..64,
        max in prop_oneof![Just(u64::MAX), 0u64..3000],
    ) {
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(msg.len() + 1)).collect();
        points.push(0);
        points.push(msg.len());
        points.sort_unstable();
        let sizes: Vec<u64> = points.windows(2).map(|w| (w[1] - w[0]) as u64).collect();
        let mut input = msg.clone();
        input.extend_from_slice(b"NEXT\r\n");
        let (_, end, rest) = block_on(run(&input, &sizes, max, capacity, u64::MAX));
        prop_assert_eq!(rest, b"NEXT\r\n".to_vec());
        prop_assert_eq!(end, model(&msg, max));
    }
}
