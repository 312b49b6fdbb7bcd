use proptest::prelude::*;

use super::*;

fn keys() -> Keys {
    Keys {
        current: Secret::new([7; SECRET_LEN]),
        previous: None,
    }
}

fn ours() -> Domain {
    Domain::parse("example.test").unwrap()
}

fn addr(text: &str) -> Address {
    Address::parse(text).unwrap()
}

const MAX_AGE: u64 = 21;

/// Reference: the timestamp spelt out digit by digit from the RFC 4648 base32 table.
fn model_timestamp(day: u64) -> String {
    let table = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let t = (day % 1024) as usize;
    format!(
        "{}{}",
        &table[t / 32..t / 32 + 1],
        &table[t % 32..t % 32 + 1]
    )
}

/// Reference: an address made on day `made` is young enough on `today` when one of the last
/// `max` days (today included) has the same timestamp.
fn model_fresh(made: u64, today: u64, max: u64) -> bool {
    (0..=max).any(|k| {
        today
            .checked_sub(k)
            .is_some_and(|d| d % 1024 == made % 1024)
    })
}

/// Reference: the fields of an SRS0 local part, split by hand.
fn model_fields(local: &str) -> Option<(String, String, String, String)> {
    let rest = local.strip_prefix("SRS0=")?;
    let fields: Vec<&str> = rest.split('=').collect();
    if fields.len() < 4 {
        return None;
    }
    Some((
        fields[0].to_string(),
        fields[1].to_string(),
        fields[2].to_string(),
        fields[3..].join("="),
    ))
}

fn local_part() -> impl Strategy<Value = String> {
    // atext with `=`, `.` between atoms: what a real sender's local part may hold.
    "[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]{1,12}(\\.[a-zA-Z0-9=+_-]{1,10}){0,3}"
}

fn domain() -> impl Strategy<Value = String> {
    "[a-z0-9]{1,10}(\\.[a-z0-9]{1,8}){0,2}\\.(test|org|de)"
}

proptest! {
    /// Encode then decode gives the sender back while the address is young enough, and
    /// `Expired` after; the address has the shape the reference model reads.
    #[test]
    fn round_trip(local in local_part(), dom in domain(), made in 0u64..40_000, later in 0u64..1023) {
        let sender = addr(&format!("{local}@{dom}"));
        let keys = keys();
        match forward(&keys, &ours(), &sender, made) {
            Ok(srs) => {
                prop_assert_eq!(srs.domain(), &ours());
                prop_assert!(srs.local_part().len() <= MAX_LOCAL_PART);
                let (h, tt, d, l) = model_fields(srs.local_part()).expect("SRS0 shape");
                prop_assert_eq!(h.len(), 4);
                prop_assert_eq!(tt, model_timestamp(made));
                prop_assert_eq!(d, dom);
                prop_assert_eq!(&l, sender.local_part());
                let today = made + later;
                let got = reverse(&keys, srs.local_part(), today, MAX_AGE);
                if model_fresh(made, today, MAX_AGE) {
                    prop_assert_eq!(got, Reverse::Valid(sender.clone()));
                } else {
                    prop_assert_eq!(got, Reverse::Invalid(Invalid::Expired));
                }
                // Case-insensitive: an MTA that lower- or upper-cases the local part on the
                // way back still reaches the sender (in the case it was given).
                for folded in [srs.local_part().to_lowercase(), srs.local_part().to_uppercase()] {
                    match reverse(&keys, &folded, made, MAX_AGE) {
                        Reverse::Valid(a) => prop_assert_eq!(a.key(), sender.key()),
                        other => prop_assert!(false, "{folded}: {other:?}"),
                    }
                }
            }
            Err(ForwardError::TooLong) => {
                let len = "SRS0=HHHH=TT==".len() + dom.len() + sender.local_part().len();
                prop_assert!(len > MAX_LOCAL_PART, "{len}");
            }
            Err(ForwardError::Quoted) => prop_assert!(false, "dot-atom read as quoted"),
        }
    }

    /// The timestamp is the reference model's and reads back to the day modulo 1024.
    #[test]
    fn timestamps(day in 0u64..10_000_000) {
        let tt = timestamp(day);
        prop_assert_eq!(&tt, &model_timestamp(day));
        prop_assert_eq!(timestamp_value(&tt), Some(day % 1024));
        prop_assert_eq!(timestamp_value(&tt.to_lowercase()), Some(day % 1024));
    }

    /// Anything that is not SRS0/SRS1 is left to the other lookups; nothing panics.
    #[test]
    fn any_local_part(local in "\\PC{0,70}", today in 0u64..100_000) {
        let got = reverse(&keys(), &local, today, MAX_AGE);
        let upper = local.to_ascii_uppercase();
        if !upper.starts_with("SRS0=") && !upper.starts_with("SRS1=") {
            prop_assert_eq!(got, Reverse::NotSrs);
        } else {
            prop_assert!(!matches!(got, Reverse::NotSrs));
        }
    }
}

/// Every change of one character of a valid address (other than its case) is refused: in the
/// hash, the timestamp, the original domain or the original local part.
#[test]
fn any_single_character_change_is_refused() {
    let keys = keys();
    let day = 20_000;
    let alphabet: Vec<char> = "abcdefghijklmnopqrstuvwxyz0123456789+/=.-_"
        .chars()
        .collect();
    for sender in [
        "someone@third.test",
        "a@b.de",
        "first.last+tag@mail.example.org",
        "x=y@d.test",
    ] {
        let srs = forward(&keys, &ours(), &addr(sender), day).unwrap();
        let local: Vec<char> = srs.local_part().chars().collect();
        for at in "SRS0=".len()..local.len() {
            for &c in &alphabet {
                if c.eq_ignore_ascii_case(&local[at]) {
                    continue;
                }
                let mut changed = local.clone();
                changed[at] = c;
                let changed: String = changed.into_iter().collect();
                let got = reverse(&keys, &changed, day, MAX_AGE);
                assert!(
                    !matches!(got, Reverse::Valid(_)),
                    "{changed} (from {srs}) was accepted: {got:?}"
                );
            }
        }
    }
}

/// The timestamp wraps every 1024 days: an address made on day 1023 is one day old on day
/// 1024, and the age is counted across the wrap.
#[test]
fn timestamp_wrap() {
    let keys = keys();
    let sender = addr("someone@third.test");
    for made in [1023u64, 1020, 2047, 1024 * 30 + 1010] {
        let srs = forward(&keys, &ours(), &sender, made).unwrap();
        for age in 0..=MAX_AGE {
            assert_eq!(
                reverse(&keys, srs.local_part(), made + age, MAX_AGE),
                Reverse::Valid(sender.clone()),
                "made {made}, age {age}"
            );
        }
        assert_eq!(
            reverse(&keys, srs.local_part(), made + MAX_AGE + 1, MAX_AGE),
            Reverse::Invalid(Invalid::Expired)
        );
        // A day in the future reads as 1023 days old.
        assert_eq!(
            reverse(&keys, srs.local_part(), made - 1, MAX_AGE),
            Reverse::Invalid(Invalid::Expired)
        );
    }
    assert_eq!(timestamp(1023), "77");
    assert_eq!(timestamp(1024), "AA");
}

/// The local part may reach 64 octets and no more (RFC 5321 §4.5.3.1.1); a quoted one is
/// not rewritten.
#[test]
fn long_and_quoted_local_parts() {
    let keys = keys();
    // "SRS0=HHHH=TT=" (13) + "d.test" (6) + "=" (1) = 20: 44 octets of local part fit.
    let fits = addr(&format!("{}@d.test", "a".repeat(44)));
    let srs = forward(&keys, &ours(), &fits, 5).unwrap();
    assert_eq!(srs.local_part().len(), 64);
    assert_eq!(
        reverse(&keys, srs.local_part(), 5, MAX_AGE),
        Reverse::Valid(fits)
    );
    let over = addr(&format!("{}@d.test", "a".repeat(45)));
    assert_eq!(
        forward(&keys, &ours(), &over, 5),
        Err(ForwardError::TooLong)
    );
    let quoted = addr("\"a b\"@d.test");
    assert_eq!(
        forward(&keys, &ours(), &quoted, 5),
        Err(ForwardError::Quoted)
    );
}

/// Another forwarder's SRS0 address is wrapped whole and comes back whole.
#[test]
fn srs_of_another_forwarder() {
    let keys = keys();
    let theirs = addr("SRS0=abCD=AB=third.test=someone@fwd.test");
    let srs = forward(&keys, &ours(), &theirs, 77).unwrap();
    assert_eq!(
        srs.local_part(),
        format!(
            "SRS0={}={}=fwd.test=SRS0=abCD=AB=third.test=someone",
            &srs.local_part()[5..9],
            timestamp(77)
        )
    );
    assert_eq!(
        reverse(&keys, srs.local_part(), 80, MAX_AGE),
        Reverse::Valid(theirs)
    );
}

/// After a rotation the previous secret still verifies; a secret we never had does not.
#[test]
fn rotation() {
    let old = keys();
    let sender = addr("someone@third.test");
    let made = forward(&old, &ours(), &sender, 9).unwrap();
    let rotated = Keys {
        current: Secret::new([8; SECRET_LEN]),
        previous: Some(old.current.clone()),
    };
    assert_eq!(
        reverse(&rotated, made.local_part(), 9, MAX_AGE),
        Reverse::Valid(sender.clone())
    );
    let new = forward(&rotated, &ours(), &sender, 9).unwrap();
    assert_ne!(new, made);
    assert_eq!(
        reverse(&rotated, new.local_part(), 9, MAX_AGE),
        Reverse::Valid(sender.clone())
    );
    let stranger = Keys {
        current: Secret::new([9; SECRET_LEN]),
        previous: None,
    };
    assert_eq!(
        reverse(&stranger, made.local_part(), 9, MAX_AGE),
        Reverse::Invalid(Invalid::BadHash)
    );
    assert_eq!(format!("{:?}", rotated.current), "Secret(..)");
}

#[test]
fn malformed_and_not_srs() {
    let keys = keys();
    let table = [
        ("alice", Reverse::NotSrs),
        ("SRS0", Reverse::NotSrs),
        ("srs0x=a=b=c=d", Reverse::NotSrs),
        (
            "SRS1=abcd=fwd.test==abcd=AB=x.test=y",
            Reverse::Invalid(Invalid::Malformed),
        ),
        ("SRS0=abcd=AB=x.test", Reverse::Invalid(Invalid::Malformed)),
        (
            "SRS0=abcd=A1=x.test=y",
            Reverse::Invalid(Invalid::Malformed),
        ),
        (
            "SRS0=abcd=ABC=x.test=y",
            Reverse::Invalid(Invalid::Malformed),
        ),
        (
            "SRS0=abcd=AB=[127.0.0.1]=y",
            Reverse::Invalid(Invalid::Malformed),
        ),
        ("SRS0=abcd=AB=x.test=", Reverse::Invalid(Invalid::Malformed)),
        ("SRS0=abcd=AB=x.test=y", Reverse::Invalid(Invalid::BadHash)),
        ("SRS0=abcde=AB=x.test=y", Reverse::Invalid(Invalid::BadHash)),
    ];
    for (local, want) in table {
        assert_eq!(reverse(&keys, local, 100, MAX_AGE), want, "{local}");
    }
}
