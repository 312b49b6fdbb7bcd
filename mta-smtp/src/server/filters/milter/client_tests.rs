//! A filter's own reply line (`y`) against a model of the trust decision: the code is kept
//! only in the class it claims, and nothing but printable text reaches the client.

use proptest::prelude::*;

use super::*;
use mta_core::reply::Reply;

/// The class a `y` text may have: `Some(code)` when it starts with a 4xx or 5xx code followed
/// by a space, a hyphen or nothing.
fn model(text: &[u8]) -> Option<u16> {
    let s: Vec<u8> = text
        .iter()
        .copied()
        .take_while(|&b| b != b'\r' && b != b'\n')
        .collect();
    if s.len() < 3
        || !(s[0] == b'4' || s[0] == b'5')
        || !s[1].is_ascii_digit()
        || !s[2].is_ascii_digit()
    {
        return None;
    }
    if s.len() > 3 && s[3] != b' ' && s[3] != b'-' {
        return None;
    }
    Some(((s[0] - b'0') as u16) * 100 + ((s[1] - b'0') as u16) * 10 + (s[2] - b'0') as u16)
}

proptest! {
    #[test]
    fn reply_codes_agree_with_the_model(text in prop_oneof![
        "[2-6][0-9]{2}[ -]?([245]\\.[0-9]\\.[0-9] )?[ -~\r\n\x00\x7f]{0,30}",
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(|v| String::from_utf8_lossy(&v).into_owned()),
    ]) {
        let got = reply_code(text.as_bytes());
        prop_assert_eq!(got.as_ref().map(|r| r.code), model(text.as_bytes()));
        if let Some(r) = got {
            let class = if r.code >= 500 { "5." } else { "4." };
            prop_assert!(r.enhanced.unwrap().starts_with(class));
            prop_assert!(!r.text.is_empty());
            prop_assert!(r.text.bytes().all(|b| (0x20..0x7f).contains(&b)));
        }
    }
}

#[test]
fn reply_code_examples() {
    let r = reply_code(b"554 5.7.1 Spam message rejected").unwrap();
    assert_eq!(
        (r.code, r.enhanced, &*r.text),
        (554, Some("5.7.1"), "Spam message rejected")
    );
    // An enhanced code of another class is not kept: ours follows the basic code.
    let r = reply_code(b"450 5.1.1 later\r\n450 second line").unwrap();
    assert_eq!(
        (r.code, r.enhanced, &*r.text),
        (450, Some("4.7.1"), "later")
    );
    let r = reply_code(b"550").unwrap();
    assert_eq!(r.text, Reply::FILTER_REJECT.text);
    assert_eq!(reply_code(b"250 fine"), None);
    assert_eq!(reply_code(b"5501 x"), None);
    assert_eq!(reply_code(b"abc"), None);
    assert_eq!(reply_code(b"550 bell\x07").unwrap().text, "bell?");
}
