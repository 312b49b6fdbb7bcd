//! Checks on a received message's header section, made after the final dot and before the
//! message is queued: bounded header size and count, the mail-loop limit on `Received:`
//! fields (RFC 5321 §6.3), and, for authenticated submission, that every `From:` address
//! is one the user may send as (the envelope check alone would let a user forge the header).

use mta_core::address::Address;
use mta_core::config::Config;
use mta_core::policy;
use mta_core::reply::Reply;

/// At most this many header fields.
pub const MAX_HEADER_FIELDS: usize = 1000;
/// At most this many octets of header section.
pub const MAX_HEADER_OCTETS: usize = 1024 * 1024;
/// More `Received:` fields than this means a loop (RFC 5321 §6.3 suggests 100; Postfix
/// uses 50).
pub const MAX_RECEIVED: usize = 50;

/// The header fields of a message, unfolded: (name, value), in order.
pub fn fields(data: &[u8]) -> Result<Vec<(String, String)>, Reply> {
    let end = header_end(data);
    if end > MAX_HEADER_OCTETS {
        return Err(Reply::HEADER_TOO_LARGE);
    }
    let mut out: Vec<(String, String)> = Vec::new();
    for line in data[..end].split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        let text = String::from_utf8_lossy(line);
        if line[0] == b' ' || line[0] == b'\t' {
            // A continuation line (RFC 5322 §2.2.3); one before any field is ignored.
            if let Some((_, value)) = out.last_mut() {
                value.push(' ');
                value.push_str(text.trim());
            }
            continue;
        }
        let Some((name, value)) = text.split_once(':') else {
            // Not a header field: the header section ends here (the body started without
            // its blank line); nothing after it is a header.
            break;
        };
        out.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        if out.len() > MAX_HEADER_FIELDS {
            return Err(Reply::HEADER_TOO_LARGE);
        }
    }
    Ok(out)
}

/// Where the header section ends (the offset of its blank line, or the end of the data).
fn header_end(data: &[u8]) -> usize {
    data.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(data.len(), |i| i + 2)
}

/// Checks a message before it is queued. `user` is the authenticated submitter, if any.
///
/// # Errors
/// The reply to send instead of `250`.
pub fn check(data: &[u8], config: &Config, user: Option<&Address>) -> Result<(), Reply> {
    let fields = fields(data)?;
    let received = fields.iter().filter(|(n, _)| n == "received").count();
    if received > MAX_RECEIVED {
        return Err(Reply::MAIL_LOOP);
    }
    let Some(user) = user else {
        return Ok(());
    };
    let froms: Vec<&str> = fields
        .iter()
        .filter(|(n, _)| n == "from")
        .map(|(_, v)| v.as_str())
        .collect();
    if froms.is_empty() {
        return Err(Reply::NO_FROM_HEADER);
    }
    for value in froms {
        let addresses = mailboxes(value).ok_or(Reply::FROM_NOT_OWNED)?;
        for a in addresses {
            let path = mta_core::address::ReversePath::Address(a);
            if !policy::may_send_as(config, user, &path) {
                return Err(Reply::FROM_NOT_OWNED);
            }
        }
    }
    Ok(())
}

/// The addresses of an RFC 5322 `mailbox-list` / `address-list` (display names, comments,
/// angle addresses, groups). `None` when any part does not parse: a header we cannot read
/// is not trusted.
pub fn mailboxes(value: &str) -> Option<Vec<Address>> {
    let cleaned = strip_comments(value)?;
    let mut out = Vec::new();
    for part in split_outside_quotes(&cleaned, &[',', ';', ':']) {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let spec = match angle_addr(part)? {
            Some(inner) => inner,
            None => part,
        };
        if spec.is_empty() {
            continue;
        }
        out.push(Address::parse(spec).ok()?);
    }
    (!out.is_empty()).then_some(out)
}

/// The `<…>` of a `name-addr` (outside quoted strings): `Some(Some(inner))`, `Some(None)`
/// for a bare addr-spec, `None` when the brackets are unbalanced.
fn angle_addr(part: &str) -> Option<Option<&str>> {
    let (mut quoted, mut escaped) = (false, false);
    let (mut open, mut close) = (None, None);
    for (i, c) in part.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => open = Some(i),
            '>' if !quoted => close = Some(i),
            _ => {}
        }
    }
    match (open, close) {
        (Some(o), Some(c)) if o < c => Some(Some(part[o + 1..c].trim())),
        (None, None) => Some(None),
        _ => None,
    }
}

/// Removes `(comments)` outside quoted strings; `None` on unbalanced quotes or parentheses.
fn strip_comments(value: &str) -> Option<String> {
    let mut out = String::with_capacity(value.len());
    let (mut depth, mut quoted, mut escaped) = (0usize, false, false);
    for c in value.chars() {
        if escaped {
            escaped = false;
            if depth == 0 {
                out.push(c);
            }
            continue;
        }
        match c {
            '\\' if quoted || depth > 0 => {
                escaped = true;
                if depth == 0 {
                    out.push(c);
                }
            }
            '"' if depth == 0 => {
                quoted = !quoted;
                out.push(c);
            }
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth = depth.checked_sub(1)?,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    (depth == 0 && !quoted).then_some(out)
}

/// Splits at any of `seps` outside quoted strings and angle brackets. A `:` there ends a
/// group's display name (RFC 5322 §3.4 `group`), which is dropped.
fn split_outside_quotes<'a>(text: &'a str, seps: &[char]) -> Vec<&'a str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut angle, mut escaped) = (0, false, false, false);
    for (i, c) in text.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' if !angle => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ':' if !quoted && !angle && seps.contains(&':') => {
                // A group name ends here: drop it.
                start = i + 1;
            }
            c if !quoted && !angle && seps.contains(&c) => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(value: &str) -> Option<Vec<String>> {
        mailboxes(value).map(|v| v.iter().map(|a| a.to_string()).collect())
    }

    #[test]
    fn from_fields() {
        let table: &[(&str, Option<&[&str]>)] = &[
            ("alice@example.org", Some(&["alice@example.org"])),
            ("Alice <alice@example.org>", Some(&["alice@example.org"])),
            (
                "\"Smith, Alice\" <alice@example.org>",
                Some(&["alice@example.org"]),
            ),
            (
                "\"a <b@evil.test>\" <alice@example.org>",
                Some(&["alice@example.org"]),
            ),
            (
                "alice@example.org (Alice, <x@evil.test>)",
                Some(&["alice@example.org"]),
            ),
            (
                "Alice <alice@example.org>, bob@example.org",
                Some(&["alice@example.org", "bob@example.org"]),
            ),
            (
                "team: alice@example.org, Bob <bob@example.org>;",
                Some(&["alice@example.org", "bob@example.org"]),
            ),
            ("\"weird\"@example.org", Some(&["weird@example.org"])),
            ("<alice@example.org", None),
            ("alice@example.org (unclosed", None),
            ("\"unclosed <alice@example.org>", None),
            ("=?utf-8?q?alice=40example.org?=", None),
            ("", None),
            ("Alice <>", None),
        ];
        for (value, want) in table {
            let want = want.map(|w| w.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            assert_eq!(addrs(value), want, "{value}");
        }
    }

    fn config() -> Config {
        Config::from_toml(
            "t.toml",
            "hostname = \"mx.example.org\"\nlocal_domains = [\"example.org\"]\n[aliases]\n\"info@example.org\" = [\"alice@example.org\"]\n",
            "x",
        )
        .unwrap()
    }

    #[test]
    fn authenticated_from_must_be_owned() {
        let cfg = config();
        let alice = Address::parse("alice@example.org").unwrap();
        let table: &[(&str, Option<u16>)] = &[
            ("From: Alice <alice@example.org>\r\n\r\nbody", None),
            ("From: ALICE@Example.org\r\n\r\n", None),
            ("From: Info\r\n <info@example.org>\r\n\r\n", None),
            ("From: bob@example.org\r\n\r\n", Some(550)),
            (
                "From: alice@example.org, bob@example.org\r\n\r\n",
                Some(550),
            ),
            (
                "Sender: alice@example.org\r\nFrom: bob@example.org\r\n\r\n",
                Some(550),
            ),
            (
                "From: alice@example.org\r\nFrom: bob@example.org\r\n\r\n",
                Some(550),
            ),
            ("Subject: no from\r\n\r\n", Some(550)),
            (
                "From: =?utf-8?b?YWxpY2U=?= <bob@example.org>\r\n\r\n",
                Some(550),
            ),
            ("From: garbage <<\r\n\r\n", Some(550)),
        ];
        for (msg, want) in table {
            let got = check(msg.as_bytes(), &cfg, Some(&alice))
                .err()
                .map(|r| r.code);
            assert_eq!(got, *want, "{msg:?}");
            assert_eq!(
                check(msg.as_bytes(), &cfg, None),
                Ok(()),
                "port 25 does not check From: {msg:?}"
            );
        }
    }

    #[test]
    fn loops_and_header_bounds() {
        let cfg = config();
        let mut msg = "Received: from a by b; now\r\n".repeat(MAX_RECEIVED);
        msg.push_str("\r\nbody\r\n");
        assert_eq!(check(msg.as_bytes(), &cfg, None), Ok(()));
        let looped = format!("Received: x\r\n{msg}");
        assert_eq!(check(looped.as_bytes(), &cfg, None).unwrap_err().code, 554);
        let many = format!("{}\r\nbody", "X-A: 1\r\n".repeat(MAX_HEADER_FIELDS + 1));
        assert_eq!(check(many.as_bytes(), &cfg, None).unwrap_err().code, 552);
        let big = format!("X-A: {}\r\n\r\n", "a".repeat(MAX_HEADER_OCTETS));
        assert_eq!(check(big.as_bytes(), &cfg, None).unwrap_err().code, 552);
        // "Received:" in the body is not a header.
        let body = format!("Subject: x\r\n\r\n{}", "Received: x\r\n".repeat(60));
        assert_eq!(check(body.as_bytes(), &cfg, None), Ok(()));
    }
}
