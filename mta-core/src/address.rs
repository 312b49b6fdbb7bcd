//! Mail addresses and domains as SMTP carries them (RFC 5321 §4.1.2, RFC 6531 for SMTPUTF8).
//!
//! A [`Domain`] is always stored in its routable form: lower-case ASCII, internationalised
//! names converted to A-labels (IDNA), so the domain that policy checks is exactly the domain
//! that delivery routes to. A local part keeps its case (RFC 5321 §2.4) but is compared
//! case-insensitively by [`Address::key`], as every mailbox we own is.
//!
//! No RFC 2047 decoding, no comments, no obsolete syntax: what is not in the RFC 5321 grammar
//! is refused with an [`AddressError`].

use std::fmt;
use std::net::IpAddr;

/// RFC 5321 §4.5.3.1.1: local part at most 64 octets.
pub const MAX_LOCAL_PART: usize = 64;
/// RFC 5321 §4.5.3.1.2: domain at most 255 octets.
pub const MAX_DOMAIN: usize = 255;
/// RFC 5321 §4.5.3.1.3: path (with the angle brackets) at most 256 octets.
pub const MAX_PATH: usize = 256;

/// Why a domain, address or path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Nothing where an address or domain was expected.
    #[error("empty address")]
    Empty,
    /// A limit of RFC 5321 §4.5.3.1 was exceeded.
    #[error("{what} longer than {max} octets")]
    TooLong {
        /// Which part was too long.
        what: &'static str,
        /// The limit.
        max: usize,
    },
    /// A character that the grammar does not allow where it stands.
    #[error("invalid character {0:?} in address")]
    BadChar(char),
    /// The domain is not a valid host name or address literal.
    #[error("invalid domain {0:?}")]
    BadDomain(String),
    /// The local part is not a dot-string or quoted-string.
    #[error("invalid local part")]
    BadLocalPart,
    /// The path is not `<...>` as RFC 5321 §4.1.2 writes it.
    #[error("invalid path syntax")]
    BadPath,
}

/// A domain in routable form: lower-case ASCII (A-labels), or an address literal `[…]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Domain(String);

impl Domain {
    /// Parses a domain or address literal, converting internationalised names to A-labels.
    ///
    /// # Errors
    /// [`AddressError`] when the text is not a domain RFC 5321 §4.1.2 allows; a trailing dot
    /// is refused (it is not in the grammar, and it must not route differently from policy).
    pub fn parse(text: &str) -> Result<Domain, AddressError> {
        if text.is_empty() {
            return Err(AddressError::Empty);
        }
        if text.len() > MAX_DOMAIN {
            return Err(AddressError::TooLong {
                what: "domain",
                max: MAX_DOMAIN,
            });
        }
        if let Some(inner) = text.strip_prefix('[') {
            return parse_literal(text, inner);
        }
        if let Some(c) = text.chars().find(|c| c.is_control() || *c == ' ') {
            return Err(AddressError::BadChar(c));
        }
        let ascii = if text.is_ascii() {
            text.to_ascii_lowercase()
        } else {
            idna::domain_to_ascii_strict(text)
                .map_err(|_| AddressError::BadDomain(text.to_string()))?
        };
        if ascii.len() > MAX_DOMAIN || !valid_hostname(&ascii) {
            return Err(AddressError::BadDomain(text.to_string()));
        }
        Ok(Domain(ascii))
    }

    /// The routable form: lower-case ASCII, or the literal with its brackets.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for an address literal such as `[192.0.2.1]`: never one of our local domains.
    pub fn is_literal(&self) -> bool {
        self.0.starts_with('[')
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn parse_literal(text: &str, inner: &str) -> Result<Domain, AddressError> {
    let body = inner
        .strip_suffix(']')
        .ok_or_else(|| AddressError::BadDomain(text.to_string()))?;
    let ip = match body.strip_prefix("IPv6:") {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().map(IpAddr::V6),
        None => body.parse::<std::net::Ipv4Addr>().map(IpAddr::V4),
    }
    .map_err(|_| AddressError::BadDomain(text.to_string()))?;
    Ok(Domain(match ip {
        IpAddr::V4(v4) => format!("[{v4}]"),
        IpAddr::V6(v6) => format!("[IPv6:{v6}]"),
    }))
}

/// RFC 1035 §2.3.1 as RFC 5321 uses it: labels of letters, digits and inner hyphens.
fn valid_hostname(name: &str) -> bool {
    name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    })
}

/// A mailbox `local@domain`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    /// Canonical local part: unquoted when it is a valid dot-string, else the quoted form.
    local: String,
    domain: Domain,
}

impl Address {
    /// Parses `local@domain` (no angle brackets).
    ///
    /// # Errors
    /// [`AddressError`] for anything outside RFC 5321's `Mailbox` (with RFC 6531's UTF-8).
    pub fn parse(text: &str) -> Result<Address, AddressError> {
        if text.is_empty() {
            return Err(AddressError::Empty);
        }
        if let Some(c) = text.chars().find(|c| c.is_control()) {
            return Err(AddressError::BadChar(c));
        }
        let (local, rest) = split_local(text)?;
        let domain = Domain::parse(rest)?;
        Ok(Address { local, domain })
    }

    /// Builds an address from parts already known to be valid (for example a user name
    /// checked by [`Address::parse`] elsewhere).
    ///
    /// # Errors
    /// As [`Address::parse`].
    pub fn from_parts(local: &str, domain: &Domain) -> Result<Address, AddressError> {
        Address::parse(&format!("{local}@{domain}"))
    }

    /// The local part as received (canonical quoting), case preserved.
    pub fn local_part(&self) -> &str {
        &self.local
    }

    /// The domain in routable form.
    pub fn domain(&self) -> &Domain {
        &self.domain
    }

    /// The lookup key for mailboxes we own: local part and domain in lower case.
    pub fn key(&self) -> String {
        format!("{}@{}", self.local.to_lowercase(), self.domain)
    }

    /// True when the local part is not ASCII: such an address needs SMTPUTF8 (RFC 6531).
    pub fn needs_smtputf8(&self) -> bool {
        !self.local.is_ascii()
    }

    /// True when the local part can safely name a directory: a dot-atom with no `/`, no
    /// leading dot and no `..` (it is never used as a path unless this holds).
    pub fn is_path_safe(&self) -> bool {
        let l = &self.local;
        !l.starts_with('"')
            && !l.starts_with('.')
            && !l.contains("..")
            && !l.contains('/')
            && !l.contains('\\')
            && !l.chars().any(|c| c.is_control())
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

/// RFC 5322 atext, plus any non-ASCII character (RFC 6531 §3.3 UTF8-non-ascii).
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || "!#$%&'*+-/=?^_`{|}~".contains(c)
        || (!c.is_ascii() && !c.is_control())
}

fn is_dot_string(s: &str) -> bool {
    !s.is_empty()
        && s.split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(is_atext))
}

/// Splits off the local part, returning it in canonical form and the text after the `@`.
fn split_local(text: &str) -> Result<(String, &str), AddressError> {
    let (local, rest) = if let Some(quoted) = text.strip_prefix('"') {
        let mut content = String::new();
        let mut chars = quoted.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    end = Some(i);
                    break;
                }
                '\\' => match chars.next() {
                    Some((_, q)) if (' '..='~').contains(&q) => content.push(q),
                    _ => return Err(AddressError::BadLocalPart),
                },
                // RFC 5321 qtextSMTP: %d32-33 / %d35-91 / %d93-126, plus UTF-8.
                c if (' '..='~').contains(&c) || (!c.is_ascii() && !c.is_control()) => {
                    content.push(c)
                }
                c => return Err(AddressError::BadChar(c)),
            }
        }
        let end = end.ok_or(AddressError::BadLocalPart)?;
        let rest = quoted[end + 1..]
            .strip_prefix('@')
            .ok_or(AddressError::BadLocalPart)?;
        let canonical = if is_dot_string(&content) {
            content
        } else {
            let mut q = String::from("\"");
            for c in content.chars() {
                if c == '"' || c == '\\' {
                    q.push('\\');
                }
                q.push(c);
            }
            q.push('"');
            q
        };
        (canonical, rest)
    } else {
        let at = text.find('@').ok_or(AddressError::BadLocalPart)?;
        let local = &text[..at];
        if !is_dot_string(local) {
            return match local.chars().find(|c| *c != '.' && !is_atext(*c)) {
                Some(c) => Err(AddressError::BadChar(c)),
                None => Err(AddressError::BadLocalPart),
            };
        }
        (local.to_string(), &text[at + 1..])
    };
    if local.len() > MAX_LOCAL_PART {
        return Err(AddressError::TooLong {
            what: "local part",
            max: MAX_LOCAL_PART,
        });
    }
    Ok((local, rest))
}

/// The sender of MAIL FROM: an address, or the null path `<>` of bounces (RFC 5321 §4.5.5).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ReversePath {
    /// `<>`: a notification that must never itself be bounced.
    Null,
    /// An ordinary sender.
    Address(Address),
}

impl ReversePath {
    /// The address, unless this is the null path.
    pub fn address(&self) -> Option<&Address> {
        match self {
            ReversePath::Null => None,
            ReversePath::Address(a) => Some(a),
        }
    }
}

impl fmt::Display for ReversePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReversePath::Null => f.write_str("<>"),
            ReversePath::Address(a) => write!(f, "<{a}>"),
        }
    }
}

/// The recipient of RCPT TO: an address, or the bare `<Postmaster>` (RFC 5321 §4.1.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ForwardPath {
    /// `<Postmaster>` without a domain: our own postmaster.
    Postmaster,
    /// An ordinary recipient.
    Address(Address),
}

/// True when `name` is one or more DNS labels of letters, digits and hyphens (LDH, A-labels),
/// none empty, none over 63 octets, none starting or ending with a hyphen, `max_len` octets
/// at most in all: DKIM selectors, MTA-STS `mx` patterns.
pub fn is_ldh_name(name: &str, max_len: usize) -> bool {
    !name.is_empty()
        && name.len() <= max_len
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Parses the `<...>` of MAIL FROM (which may be `<>`).
///
/// # Errors
/// [`AddressError`] for a path outside RFC 5321 §4.1.2.
pub fn parse_reverse_path(path: &str) -> Result<ReversePath, AddressError> {
    if path == "<>" {
        return Ok(ReversePath::Null);
    }
    parse_mailbox_path(path).map(ReversePath::Address)
}

/// Parses the `<...>` of RCPT TO.
///
/// # Errors
/// [`AddressError`] for a path outside RFC 5321 §4.1.2, and for `<>`.
pub fn parse_forward_path(path: &str) -> Result<ForwardPath, AddressError> {
    if path.eq_ignore_ascii_case("<postmaster>") {
        return Ok(ForwardPath::Postmaster);
    }
    parse_mailbox_path(path).map(ForwardPath::Address)
}

/// `<` [ A-d-l `:` ] Mailbox `>`. A source route is parsed and dropped, as RFC 5321 §4.1.2
/// and Appendix C tell a server to; what counts is the final mailbox.
fn parse_mailbox_path(path: &str) -> Result<Address, AddressError> {
    if path.len() > MAX_PATH {
        return Err(AddressError::TooLong {
            what: "path",
            max: MAX_PATH,
        });
    }
    let inner = path
        .strip_prefix('<')
        .and_then(|p| p.strip_suffix('>'))
        .ok_or(AddressError::BadPath)?;
    let mailbox = if inner.starts_with('@') {
        let colon = inner.find(':').ok_or(AddressError::BadPath)?;
        for hop in inner[..colon].split(',') {
            let hop = hop.strip_prefix('@').ok_or(AddressError::BadPath)?;
            Domain::parse(hop)?;
        }
        &inner[colon + 1..]
    } else {
        inner
    };
    Address::parse(mailbox)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains() {
        let ok = [
            ("Example.ORG", "example.org"),
            ("a-b.c1.test", "a-b.c1.test"),
            ("bücher.example", "xn--bcher-kva.example"),
            ("[127.0.0.1]", "[127.0.0.1]"),
            ("[IPv6:::1]", "[IPv6:::1]"),
            ("localhost", "localhost"),
        ];
        for (input, want) in ok {
            assert_eq!(Domain::parse(input).unwrap().as_str(), want, "{input}");
        }
        let bad = [
            "",
            "example.org.",
            ".example.org",
            "exa mple.org",
            "a..b",
            "-a.b",
            "a_b.test",
            "[1.2.3]",
            "[127.0.0.1",
            "a\0b",
        ];
        for input in bad {
            assert!(Domain::parse(input).is_err(), "{input:?} should be refused");
        }
        assert!(Domain::parse(&"a".repeat(64)).is_err());
        assert!(Domain::parse(&format!("{}.test", "a.".repeat(130))).is_err());
    }

    #[test]
    fn addresses() {
        let ok = [
            ("alice@example.org", "alice@example.org"),
            ("Alice.B@EXAMPLE.org", "Alice.B@example.org"),
            ("\"alice\"@example.org", "alice@example.org"),
            ("\"a b\"@example.org", "\"a b\"@example.org"),
            ("\"a\\\"b\"@example.org", "\"a\\\"b\"@example.org"),
            ("\"user@remote\"@example.org", "\"user@remote\"@example.org"),
            ("user%remote@example.org", "user%remote@example.org"),
            ("remote!user@example.org", "remote!user@example.org"),
            ("ñoño@example.org", "ñoño@example.org"),
            ("u@[127.0.0.1]", "u@[127.0.0.1]"),
        ];
        for (input, want) in ok {
            assert_eq!(Address::parse(input).unwrap().to_string(), want, "{input}");
        }
        let bad = [
            "",
            "alice",
            "@example.org",
            "alice@",
            "a..b@example.org",
            ".a@example.org",
            "a.@example.org",
            "a b@example.org",
            "a\0b@example.org",
            "a\rb@example.org",
            "\"unterminated@example.org",
            "\"a\"b@example.org",
            "a@b@example.org",
            "alice@example.org.",
            "=?utf-8?q?a?=@example.org\u{7}",
        ];
        for input in bad {
            assert!(
                Address::parse(input).is_err(),
                "{input:?} should be refused"
            );
        }
        assert!(Address::parse(&format!("{}@x.test", "a".repeat(65))).is_err());
        assert!(Address::parse(&format!("{}@x.test", "a".repeat(64))).is_ok());
    }

    #[test]
    fn keys_and_safety() {
        let a = Address::parse("Alice@Example.org").unwrap();
        assert_eq!(a.key(), "alice@example.org");
        assert!(a.is_path_safe());
        assert!(!Address::parse("\"../x\"@e.test").unwrap().is_path_safe());
        assert!(!Address::parse("a/b@e.test").unwrap().is_path_safe());
        assert!(Address::parse("ñ@e.test").unwrap().needs_smtputf8());
    }

    #[test]
    fn paths() {
        assert_eq!(parse_reverse_path("<>").unwrap(), ReversePath::Null);
        assert_eq!(
            parse_forward_path("<POSTMASTER>").unwrap(),
            ForwardPath::Postmaster
        );
        let routed = parse_forward_path("<@local.test,@b.test:user@remote.test>").unwrap();
        assert_eq!(
            routed,
            ForwardPath::Address(Address::parse("user@remote.test").unwrap())
        );
        for bad in [
            "a@b.test",
            "<a@b.test",
            "<>",
            "<@x.test user@b.test>",
            "<<a@b.test>>",
        ] {
            assert!(parse_forward_path(bad).is_err(), "{bad}");
        }
        let long = format!("<{}@{}.test>", "a".repeat(64), "b".repeat(190));
        assert!(parse_forward_path(&long).is_err());
    }
}
