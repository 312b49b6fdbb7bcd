//! The frame codec against a reference model written the plain way, on random input.

use proptest::prelude::*;

use super::*;

/// The reference reader: the whole frame first, then its fields by splitting on NULs.
fn model(buf: &[u8]) -> Result<Option<(Reply, usize)>, ()> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = ((buf[0] as usize) << 24)
        | ((buf[1] as usize) << 16)
        | ((buf[2] as usize) << 8)
        | buf[3] as usize;
    if len == 0 || len > 1024 * 1024 {
        return Err(());
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    let letter = buf[4];
    let data = buf[5..4 + len].to_vec();
    let int = |b: &[u8]| {
        ((b[0] as u32) << 24) | ((b[1] as u32) << 16) | ((b[2] as u32) << 8) | b[3] as u32
    };
    // The strings of `data`, when it is exactly `n` NUL-terminated ones.
    let strings = |data: &[u8], n: usize| -> Result<Vec<Vec<u8>>, ()> {
        if data.last() != Some(&0) {
            return Err(());
        }
        let parts: Vec<Vec<u8>> = data[..data.len() - 1]
            .split(|&b| b == 0)
            .map(<[u8]>::to_vec)
            .collect();
        if parts.len() == n { Ok(parts) } else { Err(()) }
    };
    let reply = match letter {
        b'O' if data.len() >= 12 => Reply::OptNeg {
            version: int(&data[0..4]),
            actions: int(&data[4..8]),
            steps: int(&data[8..12]),
        },
        b'a' if data.is_empty() => Reply::Accept,
        b'c' if data.is_empty() => Reply::Continue,
        b'r' if data.is_empty() => Reply::Reject,
        b't' if data.is_empty() => Reply::TempFail,
        b'd' if data.is_empty() => Reply::Discard,
        b'p' if data.is_empty() => Reply::Progress,
        b's' if data.is_empty() => Reply::Skip,
        b'y' => Reply::ReplyCode(strings(&data, 1)?.remove(0)),
        b'q' => Reply::Quarantine(strings(&data, 1)?.remove(0)),
        b'h' => {
            let mut s = strings(&data, 2)?;
            let value = s.pop().unwrap();
            Reply::AddHeader {
                name: s.pop().unwrap(),
                value,
            }
        }
        b'm' | b'i' if data.len() >= 4 => {
            let index = int(&data[..4]);
            let mut s = strings(&data[4..], 2)?;
            let (value, name) = (s.pop().unwrap(), s.pop().unwrap());
            if letter == b'm' {
                Reply::ChangeHeader { index, name, value }
            } else {
                Reply::InsertHeader { index, name, value }
            }
        }
        b'b' => Reply::ReplaceBody(data),
        b'+' | b'-' => Reply::Recipient(letter),
        _ => return Err(()),
    };
    Ok(Some((reply, 4 + len)))
}

fn text() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(1u8..=255, 0..40)
}

fn reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(version, actions, steps)| {
            Reply::OptNeg {
                version,
                actions,
                steps,
            }
        }),
        Just(Reply::Accept),
        Just(Reply::Continue),
        Just(Reply::Reject),
        Just(Reply::TempFail),
        Just(Reply::Discard),
        Just(Reply::Progress),
        Just(Reply::Skip),
        text().prop_map(Reply::ReplyCode),
        text().prop_map(Reply::Quarantine),
        (text(), text()).prop_map(|(name, value)| Reply::AddHeader { name, value }),
        (any::<u32>(), text(), text()).prop_map(|(index, name, value)| Reply::ChangeHeader {
            index,
            name,
            value
        }),
        (any::<u32>(), text(), text()).prop_map(|(index, name, value)| Reply::InsertHeader {
            index,
            name,
            value
        }),
        proptest::collection::vec(any::<u8>(), 0..200).prop_map(Reply::ReplaceBody),
        prop_oneof![Just(b'+'), Just(b'-')].prop_map(Reply::Recipient),
    ]
}

/// Random bytes that often look like a frame: a small plausible length, a known letter.
fn frame_like() -> impl Strategy<Value = Vec<u8>> {
    let letters = proptest::sample::select(b"OacrtdpsyqhmibQ+-\0".to_vec());
    (
        0u32..40,
        letters,
        proptest::collection::vec(any::<u8>(), 0..48),
    )
        .prop_map(|(len, letter, mut rest)| {
            let mut buf = len.to_be_bytes().to_vec();
            buf.push(letter);
            buf.append(&mut rest);
            buf
        })
}

proptest! {
    #[test]
    fn decode_of_encode_is_identity(r in reply(), tail in proptest::collection::vec(any::<u8>(), 0..8)) {
        let frame = encode_reply(&r);
        let mut buf = frame.clone();
        buf.extend_from_slice(&tail);
        prop_assert_eq!(decode(&buf), Ok(Some((r, frame.len()))));
        // Every strict prefix is an incomplete frame, never an error.
        for cut in 0..frame.len() {
            prop_assert_eq!(decode(&frame[..cut]), Ok(None));
        }
    }

    #[test]
    fn decoder_agrees_with_the_model(buf in prop_oneof![
        frame_like(),
        proptest::collection::vec(any::<u8>(), 0..64),
    ]) {
        let ours = decode(&buf).map_err(|_| ());
        prop_assert_eq!(ours, model(&buf));
    }

    #[test]
    fn commands_are_framed(chunk in proptest::collection::vec(any::<u8>(), 0..300), name in "[A-Za-z-]{1,20}") {
        for (command, data_len) in [
            (Command::Body(&chunk), chunk.len()),
            (Command::Helo(&name), name.len() + 1),
            (Command::Eom, 0),
            (Command::OptNeg { version: 6, actions: 1, steps: 2 }, 12),
        ] {
            let frame = encode(&command);
            prop_assert_eq!(&frame[..4], &(data_len as u32 + 1).to_be_bytes()[..]);
            prop_assert_eq!(frame[4], command.letter());
            prop_assert_eq!(frame.len(), 5 + data_len);
        }
    }
}

#[test]
fn lengths_are_checked_before_anything_is_read() {
    // A length of 4 GiB is refused on its four octets alone, with nothing reserved.
    assert_eq!(
        decode(&[0xff, 0xff, 0xff, 0xff]),
        Err(DecodeError::Length(u32::MAX))
    );
    assert_eq!(decode(&[0, 0, 0, 0, b'a']), Err(DecodeError::Length(0)));
    let over = (MAX_FRAME as u32 + 1).to_be_bytes();
    assert!(decode(&over).is_err());
    assert_eq!(decode(&[0, 0, 0, 1, b'Z']), Err(DecodeError::Letter(b'Z')));
    assert_eq!(
        decode(&[0, 0, 0, 2, b'a', 0]),
        Err(DecodeError::Malformed('a'))
    );
    // A `y` text without its NUL, an `h` with one string.
    assert!(decode(&[0, 0, 0, 3, b'y', b'5', b'5']).is_err());
    assert!(decode(&[0, 0, 0, 3, b'h', b'X', 0]).is_err());
}

#[test]
fn macros_and_connect_layout() {
    let frame = encode(&Command::Macros {
        stage: b'C',
        pairs: vec![("j", "mx.example".to_string())],
    });
    assert_eq!(frame, b"\0\0\0\x0fDCj\0mx.example\0");
    let frame = encode(&Command::Connect {
        host: "h",
        family: b'4',
        port: 25,
        address: "1.2.3.4".to_string(),
    });
    assert_eq!(frame, b"\0\0\0\x0eCh\0\x34\0\x191.2.3.4\0");
}
