//! Checks on a received message's header section, made after the final dot (so the
//! dialogue stays in step) and before the message is queued: bounded header size and field
//! count, the mail-loop limit on `Received:` fields (RFC 5321 §6.3), and, for an
//! authenticated submission, that the originator fields name only addresses the user may
//! send as (the envelope check alone would let a user forge the header everyone reads).
//!
//! The originator fields are `From:` (required) and, when present, `Sender:`,
//! `Resent-From:` and `Resent-Sender:` (RFC 5322 §3.6.2, §3.6.6): every mailbox in every one
//! of them must be the user's own address or an alias that expands to them
//! ([`policy::may_send_as`]). A message without `From:` is refused rather than given one
//! (RFC 6409 §8.1 lets an MSA add it; we would have to guess the display name). A header
//! section that cannot be read clearly (a line that is neither a field nor a continuation
//! before the blank line, invalid UTF-8 in an originator field, an address list that does not
//! parse) is refused too: a check that guesses can be fooled.

use mta_core::address::{Address, ReversePath};
use mta_core::config::{Config, Limits};
use mta_core::policy;
use mta_core::reply::Reply;

use super::mailbox::mailboxes;

/// Where the header section stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// At the blank line before the body, or at the end of a message without a body.
    Clean,
    /// At a line that is neither a field nor a continuation: no blank line before the body,
    /// or a malformed field. Readers differ on what follows, so a submission is refused.
    Malformed,
}

/// The header section as far as the checks need it.
#[derive(Debug, Default)]
struct Header {
    /// Number of `Received:` fields.
    received: usize,
    /// The unfolded values of the originator fields: (lower-case name, raw value).
    originators: Vec<(String, Vec<u8>)>,
    /// A `From:` field came after a line that is neither a field nor a continuation, where
    /// a strict reader (the DMARC check's) has ended the header section.
    hidden_from: bool,
}

impl Header {
    /// Whether the message names one author that every reader sees: at most one `From:`
    /// field, not hidden after a malformed line, with at most one mailbox (a value that does
    /// not parse is left to the DMARC check, as before).
    fn author_is_clear(&self) -> bool {
        let mut froms = self.originators.iter().filter(|(name, _)| name == "from");
        let Some((_, value)) = froms.next() else {
            return true;
        };
        let several = std::str::from_utf8(value)
            .ok()
            .and_then(mailboxes)
            .is_some_and(|m| m.len() > 1);
        froms.next().is_none() && !self.hidden_from && !several
    }
}

/// Field names whose mailboxes must all be the authenticated user's.
const ORIGINATORS: [&str; 4] = ["from", "sender", "resent-from", "resent-sender"];

/// Checks a message before it is queued. `user` is the authenticated submitter, if any.
///
/// # Errors
/// The reply to send instead of `250`.
pub fn check(data: &[u8], config: &Config, user: Option<&Address>) -> Result<(), Reply> {
    if data.first().is_some_and(|&b| b == b' ' || b == b'\t') {
        return Err(Reply::LEADING_CONTINUATION);
    }
    let (header, end) = read_header(data, &config.limits)?;
    if header.received > config.limits.max_received {
        return Err(Reply::MAIL_LOOP);
    }
    let Some(user) = user else {
        return match header.author_is_clear() {
            true => Ok(()),
            false => Err(Reply::AMBIGUOUS_AUTHOR),
        };
    };
    if end == End::Malformed {
        return Err(Reply::FROM_NOT_OWNED);
    }
    if !header.originators.iter().any(|(name, _)| name == "from") {
        return Err(Reply::NO_FROM_HEADER);
    }
    for (name, value) in &header.originators {
        let refusal = match name.as_str() {
            "from" => Reply::FROM_NOT_OWNED,
            _ => Reply::SENDER_HEADER_NOT_OWNED,
        };
        let addresses = std::str::from_utf8(value)
            .ok()
            .and_then(mailboxes)
            .ok_or_else(|| refusal.clone())?;
        for a in addresses {
            if !policy::may_send_as(config, user, &ReversePath::Address(a)) {
                return Err(refusal);
            }
        }
    }
    Ok(())
}

/// Reads the header section of `data` (lines ending in CRLF, as the DATA reader leaves
/// them), applying the size and field-count bounds as it goes.
fn read_header(data: &[u8], limits: &Limits) -> Result<(Header, End), Reply> {
    let mut header = Header::default();
    let mut fields = 0usize;
    let mut size = 0usize;
    // The index in `originators` of the field a continuation line belongs to, if any.
    let mut current: Option<Option<usize>> = None;
    let mut malformed = false;
    let mut rest = data;
    while !rest.is_empty() {
        let (line, after) = match rest.windows(2).position(|w| w == b"\r\n") {
            Some(i) => (&rest[..i], &rest[i + 2..]),
            None => (rest, &rest[rest.len()..]),
        };
        rest = after;
        if line.is_empty() {
            break;
        }
        let continuation = line[0] == b' ' || line[0] == b'\t';
        let name = if continuation { None } else { field_name(line) };
        if name.is_none() && (!continuation || current.is_none()) {
            // Neither a field nor a continuation. A lenient reader (and the checks that
            // read the header as one, `headers::all_fields`) goes on to the blank line, so
            // the bounds go on over the fields it finds there.
            malformed = true;
            current = None;
            continue;
        }
        size += line.len() + 2;
        if size > limits.max_header_size {
            return Err(Reply::HEADER_TOO_LARGE);
        }
        let Some(name) = name else {
            // RFC 5322 §2.2.3: unfolding removes the CRLF only.
            if let Some(Some(i)) = current {
                header.originators[i].1.extend_from_slice(line);
            }
            continue;
        };
        fields += 1;
        if fields > limits.max_headers {
            return Err(Reply::HEADER_TOO_LARGE);
        }
        let name = name.to_ascii_lowercase();
        current = Some(None);
        if name == "received" {
            header.received += 1;
        } else if ORIGINATORS.contains(&name.as_str()) {
            header.hidden_from |= malformed && name == "from";
            let colon = line
                .iter()
                .position(|&b| b == b':')
                .expect("field_name found it");
            header.originators.push((name, line[colon + 1..].to_vec()));
            current = Some(Some(header.originators.len() - 1));
        }
    }
    let end = if malformed {
        End::Malformed
    } else {
        End::Clean
    };
    Ok((header, end))
}

/// The name of a header field line (RFC 5322 §3.6.8: printable ASCII but `:`; §4.5.3
/// obs-optional allows white space before the colon), or `None` when it is not one.
fn field_name(line: &[u8]) -> Option<&str> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = line[..colon].trim_ascii_end();
    let valid = !name.is_empty() && name.iter().all(|b| (0x21..=0x7e).contains(b));
    valid.then(|| std::str::from_utf8(name).expect("printable ASCII"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::from_toml(
            "t.toml",
            "hostname = \"mx.example.org\"\nlocal_domains = [\"example.org\"]\n\
             [aliases]\n\"info@example.org\" = [\"alice@example.org\"]\n\
             \"team@example.org\" = [\"alice@example.org\", \"bob@example.org\"]\n",
            "x",
        )
        .unwrap()
    }

    #[test]
    fn authenticated_originators_must_be_owned() {
        let cfg = config();
        let alice = Address::parse("alice@example.org").unwrap();
        let from_not_owned = Some((550, "5.7.1"));
        let table: &[(&str, Option<(u16, &str)>)] = &[
            ("From: Alice <alice@example.org>\r\n\r\nbody\r\n", None),
            ("From: ALICE@Example.org\r\n\r\n", None),
            ("FROM : alice@example.org\r\n\r\n", None),
            ("From: Info\r\n <info@example.org>\r\n\r\n", None),
            (
                "From: \"Alice\"\r\n\t(the boss)\r\n <alice@example.org>\r\n\r\n",
                None,
            ),
            ("From: Team <team@example.org>\r\n\r\n", None),
            ("From: alice@example.org, info@example.org\r\n\r\n", None),
            (
                "From: alice@example.org\r\nSender: info@example.org\r\n\r\n",
                None,
            ),
            ("From: alice@example.org\r\nSubject: x", None),
            (
                "Subject: a\r\nFrom: alice@example.org\r\n\r\nFrom: bob@example.org\r\n",
                None,
            ),
            ("From: bob@example.org\r\n\r\n", from_not_owned),
            (
                "From: alice@example.org, bob@example.org\r\n\r\n",
                from_not_owned,
            ),
            (
                "From: alice@example.org,\r\n bob@example.org\r\n\r\n",
                from_not_owned,
            ),
            (
                "From: crew: alice@example.org, bob@example.org;\r\n\r\n",
                from_not_owned,
            ),
            (
                "Sender: alice@example.org\r\nFrom: bob@example.org\r\n\r\n",
                from_not_owned,
            ),
            (
                "From: alice@example.org\r\nFrom: bob@example.org\r\n\r\n",
                from_not_owned,
            ),
            (
                "From: \"alice@example.org\" <bob@example.org>\r\n\r\n",
                from_not_owned,
            ),
            (
                "From: alice@example.org <bob@example.org>\r\n\r\n",
                from_not_owned,
            ),
            (
                "From: <bob@example.org> <alice@example.org>\r\n\r\n",
                from_not_owned,
            ),
            (
                "From: =?utf-8?b?YWxpY2U=?= <bob@example.org>\r\n\r\n",
                from_not_owned,
            ),
            (
                "From: =?utf-8?q?alice=40example.org?=\r\n\r\n",
                from_not_owned,
            ),
            ("From: garbage <<\r\n\r\n", from_not_owned),
            (
                "From: alice@example.org\r\nno colon here\r\n\r\n",
                from_not_owned,
            ),
            (
                "From: alice@example.org\r\nBad Name: x\r\n\r\n",
                from_not_owned,
            ),
            (
                " folded: first\r\nFrom: alice@example.org\r\n\r\n",
                Some((554, "5.6.0")),
            ),
            (
                "From: alice@example.org\r\nSender: bob@example.org\r\n\r\n",
                Some((550, "5.7.1")),
            ),
            (
                "From: alice@example.org\r\nResent-From: bob@example.org\r\n\r\n",
                Some((550, "5.7.1")),
            ),
            (
                "From: alice@example.org\r\nresent-sender: <>\r\n\r\n",
                Some((550, "5.7.1")),
            ),
            ("Subject: no from\r\n\r\n", Some((550, "5.6.0"))),
            (
                "Subject: x\r\n\r\nFrom: alice@example.org\r\n",
                Some((550, "5.6.0")),
            ),
            ("", Some((550, "5.6.0"))),
        ];
        for (msg, want) in table {
            let got = check(msg.as_bytes(), &cfg, Some(&alice))
                .err()
                .map(|r| (r.code, r.enhanced.unwrap_or("")));
            assert_eq!(got, *want, "{msg:?}");
            // Port 25 does not check whose the originators are (only that the author is
            // clear: `port_25_needs_one_clear_author`).
            let port25 = check(msg.as_bytes(), &cfg, None);
            assert!(
                [
                    Ok(()),
                    Err(Reply::AMBIGUOUS_AUTHOR),
                    Err(Reply::LEADING_CONTINUATION)
                ]
                .contains(&port25),
                "port 25 does not check originators: {msg:?} {port25:?}"
            );
        }
        let not_utf8 = check(b"From: alice@example.org\xff\r\n\r\n", &cfg, Some(&alice));
        assert_eq!(not_utf8, Err(Reply::FROM_NOT_OWNED));
        // The two replies name the field at fault.
        let sender = check(
            b"From: alice@example.org\r\nSender: bob@example.org\r\n\r\n",
            &cfg,
            Some(&alice),
        );
        assert_eq!(sender, Err(Reply::SENDER_HEADER_NOT_OWNED));
    }

    /// Mail from another server must name one author every reader sees: DMARC is judged on
    /// the `From:` a strict reader finds, and a mail client may show another.
    #[test]
    fn port_25_needs_one_clear_author() {
        let cfg = config();
        let table: &[(&str, Result<(), Reply>)] = &[
            ("From: ceo@bank.test\r\nSubject: t\r\n\r\nb\r\n", Ok(())),
            ("Subject: no author\r\n\r\nb\r\n", Ok(())),
            (
                " ; dmarc=pass header.from=bank.test\r\nFrom: ceo@bank.test\r\n\r\n",
                Err(Reply::LEADING_CONTINUATION),
            ),
            (
                "\tx\r\nFrom: ceo@bank.test\r\n\r\n",
                Err(Reply::LEADING_CONTINUATION),
            ),
            (
                "Subject: y\r\nnot a field\r\nFrom: ceo@bank.test\r\n\r\n",
                Err(Reply::AMBIGUOUS_AUTHOR),
            ),
            (
                "From: x@stranger.test\r\nFrom: ceo@bank.test\r\n\r\n",
                Err(Reply::AMBIGUOUS_AUTHOR),
            ),
            (
                "FROM: ceo@bank.test\r\nfrom : x@stranger.test\r\n\r\n",
                Err(Reply::AMBIGUOUS_AUTHOR),
            ),
            (
                "From: <ceo@bank.test>, <x@stranger.test>\r\n\r\n",
                Err(Reply::AMBIGUOUS_AUTHOR),
            ),
            // A From: before the malformed line is the one every reader sees.
            ("From: ceo@bank.test\r\nnot a field\r\n\r\n", Ok(())),
            // In the body, not a header.
            ("From: a@b.test\r\n\r\nFrom: ceo@bank.test\r\n", Ok(())),
        ];
        for (msg, want) in table {
            assert_eq!(&check(msg.as_bytes(), &cfg, None), want, "{msg:?}");
        }
    }

    #[test]
    fn loops_and_header_bounds() {
        let mut cfg = config();
        let max_received = cfg.limits.max_received;
        let mut msg = "Received: from a by b; now\r\n".repeat(max_received);
        msg.push_str("\r\nbody\r\n");
        assert_eq!(check(msg.as_bytes(), &cfg, None), Ok(()));
        let looped = format!("received : x\r\n{msg}");
        assert_eq!(check(looped.as_bytes(), &cfg, None), Err(Reply::MAIL_LOOP));
        // "Received:" in the body is not a header.
        let body = format!("Subject: x\r\n\r\n{}", "Received: x\r\n".repeat(60));
        assert_eq!(check(body.as_bytes(), &cfg, None), Ok(()));

        cfg.limits.max_headers = 100;
        cfg.limits.max_header_size = 2000;
        let fields = |n: usize| format!("{}\r\nbody\r\n", "X-A: 1\r\n".repeat(n));
        assert_eq!(check(fields(100).as_bytes(), &cfg, None), Ok(()));
        assert_eq!(
            check(fields(101).as_bytes(), &cfg, None),
            Err(Reply::HEADER_TOO_LARGE)
        );
        // Size counts folded lines and CRLFs, up to the blank line only.
        let sized = |n: usize| format!("X-A: {}\r\n \r\n\r\n{}", "a".repeat(n), "b".repeat(5000));
        assert_eq!(check(sized(1990).as_bytes(), &cfg, None), Ok(()));
        assert_eq!(
            check(sized(1991).as_bytes(), &cfg, None),
            Err(Reply::HEADER_TOO_LARGE)
        );
        // A message that is all header (no blank line) is bounded too.
        let no_body = "X-A: a\r\n".repeat(300);
        assert_eq!(
            check(no_body.as_bytes(), &cfg, None),
            Err(Reply::HEADER_TOO_LARGE)
        );
        // A line that is not a field does not end the bounds: the fields a lenient reader
        // finds after it (as the spoofing and forged-result checks do) count as well.
        let after_junk = |n: usize| format!("From: x@y.test\r\njunk\r\n{}", "a:b\r\n".repeat(n));
        assert_eq!(check(after_junk(99).as_bytes(), &cfg, None), Ok(()));
        assert_eq!(
            check(after_junk(100).as_bytes(), &cfg, None),
            Err(Reply::HEADER_TOO_LARGE)
        );
        let folded = format!("From: x@y.test\r\njunk\r\nX: {}\r\n", " a\r\n".repeat(500));
        assert_eq!(
            check(folded.as_bytes(), &cfg, None),
            Err(Reply::HEADER_TOO_LARGE)
        );
        // Text without fields after it is not bounded: a message without its blank line.
        let text = format!("From: x@y.test\r\n{}", "just text\r\n \r\n".repeat(1000));
        assert_eq!(check(text.as_bytes(), &cfg, None), Ok(()));
        let alice = Address::parse("alice@example.org").unwrap();
        let submitted = format!("From: alice@example.org\r\n{text}");
        assert_eq!(
            check(submitted.as_bytes(), &cfg, Some(&alice)),
            Err(Reply::FROM_NOT_OWNED)
        );
    }
}
