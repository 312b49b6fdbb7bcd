//! `Authentication-Results:` fields that arrive claiming to be ours (RFC 8601 §5: a border
//! MTA removes every one that claims its authserv-id, so that only its own verdict speaks in
//! its name). Done for all mail from other servers, whether `[inbound] checks` runs or not.
//!
//! A field is ours when its authserv-id (RFC 8601 §2.2: `[CFWS] authserv-id`, where
//! authserv-id is an RFC 2045 `value`, a token or a quoted-string, and CFWS is RFC 5322 §3.2.2
//! white space and nested comments) is our hostname or one of our local domains, compared
//! without case, final dots and white space around it (Unicode's too), in A-labels. However
//! the id is written (a comment before it, quotes, quoted-pairs, folding, a comment right
//! after it) the same id is found, and the
//! field is found wherever a lenient reader would see one ([`headers::all_fields`]: white
//! space before the colon, after a line that is not a field). A field whose authserv-id
//! cannot be read at all is removed too: a sloppy reader might take it for ours.

use std::borrow::Cow;
use std::ops::Range;

use crate::headers;

/// `data` without the `Authentication-Results:` fields that claim one of the names in
/// `ours` (or whose authserv-id cannot be read), and how many were removed. Borrowed when
/// nothing is removed: a large message is not copied to remove nothing.
pub fn strip_forged<'a>(data: &'a [u8], ours: &[&str]) -> (Cow<'a, [u8]>, usize) {
    let forged = forged_fields(data, ours);
    if forged.is_empty() {
        return (Cow::Borrowed(data), 0);
    }
    let mut out = data.to_vec();
    remove(&mut out, &forged);
    (Cow::Owned(out), forged.len())
}

/// [`strip_forged`] in place: the fields are cut out of `data` itself, which never grows
/// (no second buffer for the message). Returns how many were removed.
pub fn remove_forged(data: &mut Vec<u8>, ours: &[&str]) -> usize {
    let forged = forged_fields(data, ours);
    remove(data, &forged);
    forged.len()
}

/// Where the fields to remove lie in `data`, in order, apart.
fn forged_fields(data: &[u8], ours: &[&str]) -> Vec<Range<usize>> {
    headers::all_fields(data)
        .into_iter()
        .filter(|f| f.name.eq_ignore_ascii_case("Authentication-Results"))
        .filter(|f| claims_ours(f.value, ours))
        .map(|f| f.range)
        .collect()
}

/// Cuts the ordered, disjoint `ranges` out of `data`, moving what follows each one down.
pub(crate) fn remove(data: &mut Vec<u8>, ranges: &[Range<usize>]) {
    let Some(first) = ranges.first() else {
        return;
    };
    let mut to = first.start;
    for (i, range) in ranges.iter().enumerate() {
        let next = ranges.get(i + 1).map_or(data.len(), |r| r.start);
        data.copy_within(range.end..next, to);
        to += next - range.end;
    }
    data.truncate(to);
}

/// True when an `Authentication-Results:` value speaks for one of `ours`, or cannot be read.
pub(crate) fn claims_ours(value: &[u8], ours: &[&str]) -> bool {
    let Some(id) = authserv_id(value) else {
        return true;
    };
    let id = comparable(&id);
    ours.iter().any(|name| comparable(name.as_bytes()) == id)
}

/// An id as a lenient reader compares it: without white space around it (Unicode's too)
/// and final dots, in lower case, an internationalized name in A-labels.
fn comparable(id: &[u8]) -> String {
    let text = String::from_utf8_lossy(id);
    let text = text.trim().trim_end_matches('.').trim_end();
    mta_core::address::Domain::parse(text)
        .map_or_else(|_| text.to_lowercase(), |d| d.as_str().to_string())
}

/// True for an RFC 2045 token character: US-ASCII but SPACE, controls and tspecials. Octets
/// above 127 count as token characters (RFC 8616 allows UTF-8 in header values), so an
/// internationalized id is read whole rather than cut.
pub(crate) fn is_token(b: u8) -> bool {
    !(b <= 0x20 || b == 0x7f || b"()<>@,;:\\\"/[]?=".contains(&b))
}

/// The authserv-id at the start of an `Authentication-Results:` value (folding included),
/// unquoted; `None` when the value does not start with `[CFWS] authserv-id` (an unclosed
/// comment or quoted-string, nothing but CFWS, or a character that starts neither a token nor
/// a quoted-string). Iterative, so nesting depth costs no stack.
pub fn authserv_id(value: &[u8]) -> Option<Vec<u8>> {
    let mut i = 0;
    // CFWS: folding white space and comments; `depth` counts open parentheses.
    let mut depth = 0usize;
    while let Some(&b) = value.get(i) {
        match (depth, b) {
            (0, b' ' | b'\t' | b'\r' | b'\n') => {}
            (0, b'(') => depth = 1,
            (0, _) => break,
            (_, b'\\') => i += 1, // quoted-pair: the next octet is literal
            (_, b'(') => depth += 1,
            (_, b')') => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    if depth > 0 || i >= value.len() {
        return None;
    }
    if value[i] == b'"' {
        let mut id = Vec::new();
        i += 1;
        loop {
            match *value.get(i)? {
                b'"' => return Some(id),
                b'\\' => id.push(*value.get(i + 1)?),
                // Folding inside a quoted-string: the CRLF goes, the white space stays.
                b'\r' | b'\n' => {}
                c => id.push(c),
            }
            i += if value[i] == b'\\' { 2 } else { 1 };
        }
    }
    let token: Vec<u8> = value[i..]
        .iter()
        .copied()
        .take_while(|&b| is_token(b))
        .collect();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const OURS: &[&str] = &["mx.example.org", "example.org"];

    /// Each form that once got past the check, with our name; all are removed.
    const FORGED: &[&str] = &[
        "Authentication-Results: mx.example.org; spf=pass",
        "Authentication-Results: MX.Example.ORG.; dkim=pass",
        "Authentication-Results: (trust me) mx.example.org; dmarc=pass",
        "Authentication-Results: ((nested) \\) comment) mx.example.org; dmarc=pass",
        "Authentication-Results: \"mx.example.org\"; dkim=pass",
        "Authentication-Results: \"mx.exa\\mple.org\"; dkim=pass",
        "Authentication-Results : mx.example.org; spf=pass",
        "Authentication-Results\t: mx.example.org; spf=pass",
        "Authentication-Results: mx.example.org(comment); spf=pass",
        "Authentication-Results: mx.example.org (comment); spf=pass",
        "Authentication-Results:\r\n\t(folded)\r\n mx.example.org 1; spf=pass",
        "authentication-results: example.org; dmarc=pass",
        "Authentication-Results: (unclosed mx.example.org; spf=pass",
        "Authentication-Results: ; spf=pass",
        "Authentication-Results:",
    ];

    #[test]
    fn every_form_of_our_id_is_removed() {
        for forged in FORGED {
            for before in ["", "Subject: a\r\nnot a field\r\n"] {
                let msg = format!(
                    "{before}{forged}\r\nAuthentication-Results: other.test; spf=pass\r\n\r\nbody\r\n"
                );
                let (out, n) = strip_forged(msg.as_bytes(), OURS);
                assert_eq!(n, 1, "{msg:?}");
                assert_eq!(
                    String::from_utf8(out.into_owned()).unwrap(),
                    format!("{before}Authentication-Results: other.test; spf=pass\r\n\r\nbody\r\n"),
                    "{msg:?}"
                );
            }
        }
    }

    /// Spellings of our id that a lenient reader takes for it (final dots, white space
    /// inside quotes, Unicode white space, an internationalized name in U-labels) are
    /// removed too.
    #[test]
    fn lenient_spellings_of_our_id_are_removed() {
        let ours = &["mx.example.org", "xn--bcher-kva.example"];
        for id in [
            "mx.example.org..",
            "\"mx.example.org \"",
            "\"  MX.example.org. \"",
            "\u{a0}mx.example.org",
            "mx.example.org\u{a0}",
            "b\u{fc}cher.example",
            "B\u{dc}CHER.example.",
        ] {
            let msg =
                format!("Authentication-Results: {id}; spf=pass\r\nSubject: a\r\n\r\nbody\r\n");
            let (out, n) = strip_forged(msg.as_bytes(), ours);
            assert_eq!(
                (n, &*out),
                (1, &b"Subject: a\r\n\r\nbody\r\n"[..]),
                "{id:?}"
            );
        }
        let other = "Authentication-Results: \"mx.example.org x\"; spf=pass\r\n\r\n";
        assert_eq!(strip_forged(other.as_bytes(), ours).1, 0);
    }

    #[test]
    fn others_and_the_body_stay() {
        let msg = "Authentication-Results: mx.example.org.evil.test; spf=pass\r\n\
                   Authentication-Results: \"other example.org\"; spf=pass\r\n\
                   Authentication-Results: (mx.example.org) other.test; spf=pass\r\n\
                   X-Authentication-Results: mx.example.org; spf=pass\r\n\
                   \r\n\
                   Authentication-Results: mx.example.org; in the body\r\n";
        assert_eq!(
            strip_forged(msg.as_bytes(), OURS),
            (Cow::Borrowed(msg.as_bytes()), 0)
        );
    }

    /// Nothing to remove: the message itself comes back, not a copy; in place, the same
    /// buffer is kept. Something to remove: cut out of the same buffer, which never grows.
    #[test]
    fn nothing_removed_is_nothing_copied() {
        let msg = b"Authentication-Results: other.test; spf=pass\r\nSubject: a\r\n\r\nbody\r\n";
        let (out, n) = strip_forged(msg, OURS);
        assert!(
            matches!(out, Cow::Borrowed(b) if std::ptr::eq(b, &msg[..])),
            "{out:?}"
        );
        assert_eq!(n, 0);
        let mut data = msg.to_vec();
        let (at, capacity) = (data.as_ptr(), data.capacity());
        assert_eq!(remove_forged(&mut data, OURS), 0);
        assert_eq!(
            (data.as_ptr(), data.capacity(), &data[..]),
            (at, capacity, &msg[..])
        );
        let mut data =
            b"Authentication-Results: mx.example.org; spf=pass\r\nSubject: a\r\n\r\nb\r\n".to_vec();
        let (at, capacity) = (data.as_ptr(), data.capacity());
        assert_eq!(remove_forged(&mut data, OURS), 1);
        assert_eq!((data.as_ptr(), data.capacity()), (at, capacity));
        assert_eq!(data, b"Subject: a\r\n\r\nb\r\n");
    }

    #[test]
    fn ids_as_the_grammar_reads_them() {
        let id = |v: &str| authserv_id(v.as_bytes()).map(|i| String::from_utf8(i).unwrap());
        assert_eq!(id(" mx.test; spf=pass").as_deref(), Some("mx.test"));
        assert_eq!(id("(a (b) \\( c) mx.test").as_deref(), Some("mx.test"));
        assert_eq!(id(" \"a\\\"b\"").as_deref(), Some("a\"b"));
        assert_eq!(id(" \"a\r\n b\"").as_deref(), Some("a b"));
        assert_eq!(id(" \"\"").as_deref(), Some(""));
        assert_eq!(id(" \"open"), None);
        assert_eq!(id(" (open"), None);
        assert_eq!(id(" ;"), None);
        assert_eq!(id(""), None);
    }

    /// The reference: RFC 8601 §2.2 `[CFWS] authserv-id` written out production by
    /// production, recursively, straight from the grammar.
    mod model {
        use super::super::is_token;

        /// `FWS`: any run of white space and line breaks (the data is already CRLF-checked).
        fn fws(s: &[u8]) -> &[u8] {
            let n = s
                .iter()
                .take_while(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
                .count();
            &s[n..]
        }

        /// `comment = "(" *([FWS] ccontent) [FWS] ")"`, `ccontent = ctext / quoted-pair /
        /// comment`: the rest after it, or `None` when it does not close.
        fn comment(s: &[u8]) -> Option<&[u8]> {
            let mut rest = s.strip_prefix(b"(")?;
            loop {
                match rest.first()? {
                    b')' => return Some(&rest[1..]),
                    b'(' => rest = comment(rest)?,
                    b'\\' => rest = rest.get(2..)?,
                    _ => rest = &rest[1..],
                }
            }
        }

        /// `CFWS = (1*([FWS] comment) [FWS]) / FWS`, optional.
        fn cfws(mut s: &[u8]) -> Option<&[u8]> {
            loop {
                s = fws(s);
                if s.first() == Some(&b'(') {
                    s = comment(s)?;
                } else {
                    return Some(s);
                }
            }
        }

        /// `quoted-string = DQUOTE *([FWS] qcontent) [FWS] DQUOTE`, its content unquoted.
        fn quoted_string(s: &[u8]) -> Option<Vec<u8>> {
            let mut rest = s.strip_prefix(b"\"")?;
            let mut out = Vec::new();
            loop {
                match rest.first()? {
                    b'"' => return Some(out),
                    b'\\' => {
                        out.push(*rest.get(1)?);
                        rest = &rest[2..];
                    }
                    b'\r' | b'\n' => rest = &rest[1..],
                    &c => {
                        out.push(c);
                        rest = &rest[1..];
                    }
                }
            }
        }

        /// `token = 1*<any CHAR except SPACE, CTLs, or tspecials>` (RFC 2045 §5.1).
        fn token(s: &[u8]) -> Option<Vec<u8>> {
            let n = s.iter().take_while(|&&b| is_token(b)).count();
            (n > 0).then(|| s[..n].to_vec())
        }

        pub fn authserv_id(value: &[u8]) -> Option<Vec<u8>> {
            let s = cfws(value)?;
            if s.first() == Some(&b'"') {
                quoted_string(s)
            } else {
                token(s)
            }
        }
    }

    /// Values built from the pieces the grammar cares about.
    fn value() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(&b"("[..]),
            Just(&b")"[..]),
            Just(&b"\\"[..]),
            Just(&b"\""[..]),
            Just(&b" "[..]),
            Just(&b"\t"[..]),
            Just(&b"\r\n "[..]),
            Just(&b";"[..]),
            Just(&b"."[..]),
            Just(&b"="[..]),
            Just(&b"@"[..]),
            Just(&b"mx.example.org"[..]),
            Just(&b"a"[..]),
            Just("é".as_bytes()),
            Just(&b"\x7f"[..]),
        ];
        prop::collection::vec(piece, 0..24).prop_map(|p| p.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn parser_agrees_with_the_grammar(v in value()) {
            prop_assert_eq!(authserv_id(&v), model::authserv_id(&v));
        }

        #[test]
        fn any_octets_agree_too(v in prop::collection::vec(any::<u8>(), 0..40)) {
            prop_assert_eq!(authserv_id(&v), model::authserv_id(&v));
        }

        /// Against the obvious construction (the pieces between the forged fields, put
        /// together in a new buffer): the copy and the in-place removal give the same bytes
        /// and count, over headers made of our fields, others and junk.
        #[test]
        fn removal_in_place_matches_a_rebuilt_copy(
            parts in prop::collection::vec((0usize..4, value()), 0..8),
        ) {
            let mut msg = Vec::new();
            for (kind, v) in &parts {
                let name: &[u8] = match kind {
                    0 => b"Authentication-Results:",
                    1 => b"Authentication-Results: mx.example.org;",
                    2 => b"Subject:",
                    _ => b"junk ",
                };
                msg.extend_from_slice(name);
                msg.extend_from_slice(v);
                msg.extend_from_slice(b"\r\n");
            }
            msg.extend_from_slice(b"\r\nAuthentication-Results: mx.example.org; body\r\n");
            let ranges: Vec<_> = headers::all_fields(&msg)
                .into_iter()
                .filter(|f| f.name.eq_ignore_ascii_case("Authentication-Results"))
                .filter(|f| claims_ours(f.value, OURS))
                .map(|f| f.range)
                .collect();
            let mut model = Vec::new();
            let mut pos = 0;
            for r in &ranges {
                model.extend_from_slice(&msg[pos..r.start]);
                pos = r.end;
            }
            model.extend_from_slice(&msg[pos..]);
            let (copy, n) = strip_forged(&msg, OURS);
            prop_assert_eq!((&*copy, n), (model.as_slice(), ranges.len()));
            prop_assert_eq!(matches!(copy, Cow::Borrowed(_)), ranges.is_empty());
            let mut in_place = msg.clone();
            prop_assert_eq!(remove_forged(&mut in_place, OURS), ranges.len());
            prop_assert_eq!(in_place, model);
        }

        /// Whatever else the header holds, after stripping no field claims our name.
        #[test]
        fn nothing_of_ours_survives(v in value(), junk in prop::bool::ANY) {
            let mut msg = Vec::new();
            if junk {
                msg.extend_from_slice(b"junk line\r\n");
            }
            msg.extend_from_slice(b"Authentication-Results:");
            msg.extend_from_slice(&v);
            msg.extend_from_slice(b"\r\n\r\nbody\r\n");
            let (out, _) = strip_forged(&msg, OURS);
            for f in headers::all_fields(&out) {
                prop_assert!(!claims_ours(f.value, OURS));
            }
        }
    }
}
