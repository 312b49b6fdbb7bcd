//! The changes against a model that keeps the header section as a list of (name, value).

use proptest::prelude::*;

use super::*;

fn render(fields: &[(String, String)], body: &str) -> Vec<u8> {
    let mut s = String::new();
    for (n, v) in fields {
        s.push_str(&format!("{n}: {v}\r\n"));
    }
    s.push_str("\r\n");
    s.push_str(body);
    s.into_bytes()
}

/// The changes made the plain way.
fn model(mut fields: Vec<(String, String)>, edits: &[Edit]) -> Vec<(String, String)> {
    for e in edits {
        match e {
            Edit::Add { name, value } => fields.push((name.clone(), value.clone())),
            Edit::Insert { index, name, value } => {
                let at = std::cmp::min(*index as usize, fields.len());
                fields.insert(at, (name.clone(), value.clone()));
            }
            Edit::Change { index, name, value } => {
                let mut seen = 0;
                let mut hit = None;
                for (i, (n, _)) in fields.iter().enumerate() {
                    if n.to_lowercase() == name.to_lowercase() {
                        seen += 1;
                        if seen == (*index).max(1) {
                            hit = Some(i);
                            break;
                        }
                    }
                }
                match hit {
                    Some(i) if value.is_empty() => {
                        fields.remove(i);
                    }
                    Some(i) => fields[i].1 = value.clone(),
                    None if value.is_empty() => {}
                    None => fields.push((name.clone(), value.clone())),
                }
            }
        }
    }
    fields
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![Just("X-A"), Just("x-a"), Just("Subject"), Just("X-B")].prop_map(str::to_string)
}

fn edit() -> impl Strategy<Value = Edit> {
    let value = prop_oneof![Just(String::new()), "[a-z]{1,5}"];
    prop_oneof![
        (name(), "[a-z]{1,5}").prop_map(|(name, value)| Edit::Add { name, value }),
        (0u32..6, name(), value.clone()).prop_map(|(index, name, value)| Edit::Change {
            index,
            name,
            value
        }),
        (0u32..6, name(), "[a-z]{1,5}").prop_map(|(index, name, value)| Edit::Insert {
            index,
            name,
            value
        }),
    ]
}

proptest! {
    #[test]
    fn edits_agree_with_the_model(
        fields in proptest::collection::vec((name(), "[a-z]{1,5}"), 0..5),
        edits in proptest::collection::vec(edit(), 0..6),
        new_body in proptest::option::of("[a-z\r\n]{0,10}"),
    ) {
        let data = render(&fields, "body\r\n");
        let got = apply(&data, &edits, new_body.as_deref().map(str::as_bytes), 1 << 20).unwrap();
        let want = render(&model(fields, &edits), new_body.as_deref().unwrap_or("body\r\n"));
        prop_assert_eq!(got, want);
    }

    #[test]
    fn values_are_folded_or_refused(value in "[a-z \t\r\n\x01]{0,12}") {
        // Accepted values make exactly one field: every line break is CRLF before white
        // space, and nothing else is a control character but tab.
        if let Ok(v) = field_value("X", value.as_bytes()) {
            let field = format!("X: {v}\r\n");
            let found = crate::headers::fields(field.as_bytes());
            prop_assert_eq!(found.len(), 1);
            prop_assert_eq!(found[0].range.end, field.len());
            prop_assert!(!v.contains('\x01'));
        }
    }
}

#[test]
fn names_values_bodies_and_size() {
    assert!(field_name(b"X-Spam").is_ok());
    for bad in [&b""[..], b"X Spam", b"X:Spam", b"X\x7f", &[b'a'; 201]] {
        assert!(field_name(bad).is_err(), "{bad:?}");
    }
    assert_eq!(field_value("X", b"a\n\tb").unwrap(), "a\r\n\tb");
    assert_eq!(field_value("X", b"a\r\n b").unwrap(), "a\r\n b");
    for bad in [&b"a\nb"[..], b"a\rb", b"a\n", b"a\x00", b"a\n \n b"] {
        assert!(field_value("X", bad).is_err(), "{bad:?}");
    }
    assert_eq!(body(b"a\nb\r\nc").unwrap(), b"a\r\nb\r\nc");
    assert_eq!(body(b"a\rb"), Err(EditError::Body));
    // A NUL is refused in a client's data, so a filter may not put one in either.
    assert_eq!(body(b"a\r\nb\0c\r\n"), Err(EditError::Body));
    let data = b"A: 1\r\n\r\nbody\r\n";
    assert!(matches!(
        apply(data, &[], Some(&[b'x'; 100]), 50),
        Err(EditError::TooBig(_))
    ));
    assert_eq!(body_start(data), 8);
    assert_eq!(body_start(b"A: 1\r\n"), 6);
}
