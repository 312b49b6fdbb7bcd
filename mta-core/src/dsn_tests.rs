use super::*;
use proptest::prelude::*;

/// The reference xtext decoder: RFC 3461 §4's grammar read literally, one production at a
/// time, on characters.
fn reference_decode(text: &str) -> Option<Vec<u8>> {
    const HEX: &str = "0123456789ABCDEF";
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('+') {
            let mut chars = after.chars();
            let hi = HEX.find(chars.next()?)?;
            let lo = HEX.find(chars.next()?)?;
            out.push((hi * 16 + lo) as u8);
            rest = &after[2..];
        } else {
            let c = rest.chars().next()?;
            let xchar = ('!'..='~').contains(&c) && c != '+' && c != '=';
            if !xchar {
                return None;
            }
            out.push(c as u8);
            rest = &rest[1..];
        }
    }
    Some(out)
}

/// Strings made mostly of the characters xtext is about.
fn xtextish() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just('+'),
            Just('='),
            Just(' '),
            Just('\r'),
            Just('\n'),
            Just('\u{7f}'),
            Just('é'),
            proptest::char::range('0', '9'),
            proptest::char::range('A', 'F'),
            proptest::char::range('a', 'f'),
            proptest::char::range('!', '~'),
        ],
        0..24,
    )
    .prop_map(|v| v.into_iter().collect())
}

proptest! {
    #[test]
    fn xtext_decoder_matches_the_reference(text in xtextish()) {
        prop_assert_eq!(xtext_decode(&text).ok(), reference_decode(&text));
    }

    #[test]
    fn xtext_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let encoded = xtext_encode(&bytes);
        prop_assert!(encoded.bytes().all(|b| (33..=126).contains(&b) && b != b'='));
        prop_assert_eq!(reference_decode(&encoded), Some(bytes));
    }

    /// Whatever the client sends, a decoded ENVID or ORCPT that is accepted is one line of
    /// printable ASCII: it cannot start a header field of its own in a notice.
    #[test]
    fn accepted_values_are_printable(text in xtextish()) {
        let printable = |s: &str| s.bytes().all(|b| (0x20..=0x7e).contains(&b));
        if let Ok(v) = parse_envid(&text) {
            prop_assert!(printable(&v));
            prop_assert!(text.len() <= MAX_ENVID);
        }
        if let Ok(o) = Orcpt::parse(&format!("rfc822;{text}")) {
            prop_assert!(printable(&o.address));
            let decoded = reference_decode(&text).unwrap();
            prop_assert_eq!(o.address.as_bytes(), &decoded[..]);
        }
    }

    /// NOTIFY against a model: a set of distinct keywords from the three, or NEVER alone.
    #[test]
    fn notify_matches_the_model(words in proptest::collection::vec(
        prop_oneof![Just("SUCCESS"), Just("failure"), Just("Delay"), Just("NEVER"), Just(""), Just("X")],
        1..5,
    )) {
        let value = words.join(",");
        let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
        let distinct = upper.iter().collect::<std::collections::BTreeSet<_>>().len() == upper.len();
        let model = if upper == ["NEVER"] {
            Some(Notify::default())
        } else if distinct && upper.iter().all(|w| ["SUCCESS", "FAILURE", "DELAY"].contains(&w.as_str())) {
            Some(Notify {
                success: upper.iter().any(|w| w == "SUCCESS"),
                failure: upper.iter().any(|w| w == "FAILURE"),
                delay: upper.iter().any(|w| w == "DELAY"),
            })
        } else {
            None
        };
        prop_assert_eq!(Notify::parse(&value).ok(), model);
        if let Some(n) = model {
            prop_assert_eq!(Notify::parse(&n.keyword()), Ok(n));
        }
    }
}

#[test]
fn xtext_cases() {
    assert_eq!(xtext_decode("a+2Bb").unwrap(), b"a+b");
    assert_eq!(xtext_decode("").unwrap(), b"");
    for bad in ["+zz", "+2", "+", "a=b", "a b", "+2b", "é"] {
        assert_eq!(xtext_decode(bad), Err(DsnError::BadXtext), "{bad}");
    }
    assert_eq!(xtext_encode(b"a+b=c d"), "a+2Bb+3Dc+20d");
}

#[test]
fn parameters() {
    assert_eq!(Ret::parse("hdrs"), Ok(Ret::Hdrs));
    assert_eq!(Ret::parse("FULL"), Ok(Ret::Full));
    assert_eq!(Ret::parse("BOTH"), Err(DsnError::BadRet));
    assert_eq!(parse_envid("QQ+2B1"), Ok("QQ+1".to_string()));
    assert_eq!(parse_envid(&"a".repeat(100)).map(|v| v.len()), Ok(100));
    assert_eq!(parse_envid(&"a".repeat(101)), Err(DsnError::TooLong));
    assert_eq!(parse_envid("a+0D+0AX: y"), Err(DsnError::BadXtext));
    assert_eq!(parse_envid("a+0D+0AX:+20y"), Err(DsnError::NotPrintable));
    assert_eq!(parse_envid(""), Err(DsnError::BadXtext));
    assert_eq!(
        Orcpt::parse("RFC822;a+2Bb@example.org"),
        Ok(Orcpt {
            addr_type: "rfc822".into(),
            address: "a+b@example.org".into()
        })
    );
    assert!(Orcpt::parse("utf-8;a@example.org").is_ok());
    assert_eq!(Orcpt::parse("x400;a"), Err(DsnError::BadOrcpt));
    assert_eq!(Orcpt::parse("a@example.org"), Err(DsnError::BadOrcpt));
    assert_eq!(Orcpt::parse("rfc822;"), Err(DsnError::BadXtext));
    let long = format!("rfc822;{}", "a".repeat(494));
    assert_eq!(Orcpt::parse(&long), Err(DsnError::TooLong));
    assert_eq!(
        Orcpt::parse("rfc822;a+2Bb@example.org").unwrap().param(),
        "rfc822;a+2Bb@example.org"
    );
    assert_eq!(Notify::parse("NEVER,SUCCESS"), Err(DsnError::BadNotify));
    assert_eq!(Notify::parse("SUCCESS,SUCCESS"), Err(DsnError::BadNotify));
    assert_eq!(Notify::parse(""), Err(DsnError::BadNotify));
    assert_eq!(check_auth_param("<>"), Ok(()));
    assert_eq!(check_auth_param("a+2Bb@example.org"), Ok(()));
    assert_eq!(check_auth_param("a=b"), Err(DsnError::BadXtext));
    assert_eq!(check_auth_param(""), Err(DsnError::BadXtext));
}

#[test]
fn what_each_notify_asks_for() {
    let none = RcptDsn::default();
    assert!(none.wants_failure() && none.wants_delay() && !none.wants_success());
    let never = RcptDsn {
        notify: Some(Notify::default()),
        orcpt: None,
    };
    assert!(!never.wants_failure() && !never.wants_delay() && !never.wants_success());
    let success = RcptDsn {
        notify: Some(Notify::parse("SUCCESS").unwrap()),
        orcpt: None,
    };
    assert!(!success.wants_failure() && !success.wants_delay() && success.wants_success());
}
