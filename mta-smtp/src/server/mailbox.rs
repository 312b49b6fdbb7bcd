//! The addresses in an RFC 5322 §3.4 address list, as `From:`, `Sender:` and their
//! `Resent-` forms carry them: display names (atoms, quoted strings, encoded words left
//! encoded), comments, angle addresses, bare addr-specs and groups. The value is unfolded
//! already (RFC 5322 §2.2.3).
//!
//! Strict on purpose: this decides whether a user may send a message, so whatever is not
//! clearly a list of mailboxes is refused (`None`), not guessed at. Refused: two addresses in
//! one mailbox (`<a@x> <b@y>`), an unquoted `@` in a display name (`bob@x <a@y>`, shown by
//! many readers as if it were the address), source routes (`<@relay:a@x>`), unbalanced
//! quotes, comments or brackets, control characters, a name without an address, an
//! unterminated group. No RFC 2047 decoding: an encoded word is a display name or nothing.

use mta_core::address::Address;

/// A lexical token of RFC 5322 §3.2 (comments and white space dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// An atom; dots included, so `a.b` (dot-atom) and `John Q. Public` (obs-phrase) are
    /// atoms.
    Atom(String),
    /// A quoted string, with its quotes and backslashes as written.
    Quoted(String),
    /// A domain literal, with its brackets.
    Literal(String),
    /// One of `< > @ , ; :`.
    Special(char),
}

/// Every mailbox address in `value`, in order; `None` when any part is not RFC 5322 syntax
/// or the list names no mailbox at all.
pub fn mailboxes(value: &str) -> Option<Vec<Address>> {
    let tokens = tokenize(value)?;
    let mut out = Vec::new();
    let mut i = 0;
    let mut in_group = false;
    loop {
        let start = i;
        while matches!(tokens.get(i), Some(Token::Atom(_) | Token::Quoted(_))) {
            i += 1;
        }
        let words = &tokens[start..i];
        match tokens.get(i) {
            // name-addr: any display name, then <addr-spec>.
            Some(Token::Special('<')) => {
                let (address, next) = addr_spec(&tokens, i + 1)?;
                if tokens.get(next) != Some(&Token::Special('>')) {
                    return None;
                }
                out.push(address);
                i = separator(&tokens, next + 1, in_group)?;
            }
            // A bare addr-spec: exactly one word before the `@`.
            Some(Token::Special('@')) if words.len() == 1 => {
                let (address, next) = addr_spec(&tokens, start)?;
                out.push(address);
                i = separator(&tokens, next, in_group)?;
            }
            // group = display-name ":" [group-list] ";"
            Some(Token::Special(':')) if !in_group && !words.is_empty() => {
                in_group = true;
                i += 1;
            }
            Some(Token::Special(';')) if in_group && words.is_empty() => {
                in_group = false;
                i += 1;
                match tokens.get(i) {
                    None => break,
                    Some(Token::Special(',')) => i += 1,
                    Some(_) => return None,
                }
            }
            // An empty list element (RFC 5322 §4.4 obs-mbox-list).
            Some(Token::Special(',')) if words.is_empty() => i += 1,
            None if words.is_empty() => break,
            _ => return None,
        }
    }
    (!in_group && !out.is_empty()).then_some(out)
}

/// `local-part "@" domain` from `tokens[i..]`: the address and the index after it.
fn addr_spec(tokens: &[Token], i: usize) -> Option<(Address, usize)> {
    let local = match tokens.get(i)? {
        Token::Atom(a) | Token::Quoted(a) => a,
        Token::Literal(_) | Token::Special(_) => return None,
    };
    if tokens.get(i + 1) != Some(&Token::Special('@')) {
        return None;
    }
    let domain = match tokens.get(i + 2)? {
        Token::Atom(d) | Token::Literal(d) => d,
        Token::Quoted(_) | Token::Special(_) => return None,
    };
    let address = Address::parse(&format!("{local}@{domain}")).ok()?;
    Some((address, i + 3))
}

/// After a mailbox: the end, a `,` (consumed), or the `;` that closes the group (left for
/// the caller). The index to go on from.
fn separator(tokens: &[Token], i: usize, in_group: bool) -> Option<usize> {
    match tokens.get(i) {
        None => Some(i),
        Some(Token::Special(',')) => Some(i + 1),
        Some(Token::Special(';')) if in_group => Some(i),
        Some(_) => None,
    }
}

fn tokenize(value: &str) -> Option<Vec<Token>> {
    let mut tokens = Vec::new();
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {}
            '(' => {
                // Comments nest (RFC 5322 §3.2.2); a quoted-pair may escape a parenthesis.
                let mut depth = 1;
                while depth > 0 {
                    match chars.next()? {
                        '\\' => {
                            chars.next()?;
                        }
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        c if c.is_control() && c != '\t' => return None,
                        _ => {}
                    }
                }
            }
            '"' => tokens.push(Token::Quoted(delimited(&mut chars, '"', '"')?)),
            '[' => tokens.push(Token::Literal(delimited(&mut chars, '[', ']')?)),
            '<' | '>' | '@' | ',' | ';' | ':' => tokens.push(Token::Special(c)),
            c if is_atom_char(c) => {
                let mut atom = String::from(c);
                while let Some(&n) = chars.peek().filter(|n| is_atom_char(**n)) {
                    atom.push(n);
                    chars.next();
                }
                tokens.push(Token::Atom(atom));
            }
            // `)`, `]`, `\` outside their context, and control characters.
            _ => return None,
        }
    }
    Some(tokens)
}

/// The rest of a quoted string or domain literal after its `open`, up to `close`, returned
/// with both delimiters and its quoted-pairs as written.
fn delimited(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    open: char,
    close: char,
) -> Option<String> {
    let mut text = String::from(open);
    loop {
        let c = chars.next()?;
        if c.is_control() && c != '\t' {
            return None;
        }
        text.push(c);
        match c {
            '\\' => text.push(chars.next().filter(|c| !c.is_control())?),
            c if c == close => return Some(text),
            '[' if open == '[' => return None,
            _ => {}
        }
    }
}

/// RFC 5322 atext, `.`, and any non-ASCII character (RFC 6532).
fn is_atom_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || "!#$%&'*+-/=?^_`{|}~.".contains(c)
        || (!c.is_ascii() && !c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(value: &str) -> Option<Vec<String>> {
        mailboxes(value).map(|v| v.iter().map(|a| a.to_string()).collect())
    }

    #[test]
    fn address_lists() {
        let table: &[(&str, Option<&[&str]>)] = &[
            ("alice@example.org", Some(&["alice@example.org"])),
            ("<alice@example.org>", Some(&["alice@example.org"])),
            ("Alice <alice@example.org>", Some(&["alice@example.org"])),
            (
                "Alice Q. Public <alice@example.org>",
                Some(&["alice@example.org"]),
            ),
            (
                "\"Smith, Alice\" <alice@example.org>",
                Some(&["alice@example.org"]),
            ),
            (
                "\"a <b@evil.test>\" <alice@example.org>",
                Some(&["alice@example.org"]),
            ),
            (
                "\"quote \\\" inside\" <alice@example.org>",
                Some(&["alice@example.org"]),
            ),
            (
                "alice@example.org (Alice, <x@evil.test>)",
                Some(&["alice@example.org"]),
            ),
            (
                "(nested (comment)) Alice <alice@example.org> (after)",
                Some(&["alice@example.org"]),
            ),
            (
                "Alice (x) <alice(y)@(z)example.org>",
                Some(&["alice@example.org"]),
            ),
            (
                "Alice <alice@example.org>, bob@example.org",
                Some(&["alice@example.org", "bob@example.org"]),
            ),
            (
                "alice@example.org,,bob@example.org,",
                Some(&["alice@example.org", "bob@example.org"]),
            ),
            (
                "team: alice@example.org, Bob <bob@example.org>;",
                Some(&["alice@example.org", "bob@example.org"]),
            ),
            (
                "team: alice@example.org;, carol@example.org",
                Some(&["alice@example.org", "carol@example.org"]),
            ),
            ("\"weird\"@example.org", Some(&["weird@example.org"])),
            ("\"a b\"@example.org", Some(&["\"a b\"@example.org"])),
            ("ALICE@Example.ORG", Some(&["ALICE@example.org"])),
            ("ñandú@example.org", Some(&["ñandú@example.org"])),
            (
                "=?utf-8?q?Al=C3=AFce?= <alice@example.org>",
                Some(&["alice@example.org"]),
            ),
            ("alice@[192.0.2.1]", Some(&["alice@[192.0.2.1]"])),
            // Refused: not a clear list of mailboxes.
            ("", None),
            ("   ", None),
            ("Alice", None),
            ("Alice <>", None),
            ("<alice@example.org", None),
            ("alice@example.org>", None),
            ("alice@example.org (unclosed", None),
            ("alice@example.org unopened)", None),
            ("\"unclosed <alice@example.org>", None),
            ("=?utf-8?q?alice=40example.org?=", None),
            ("<bob@evil.test> <alice@example.org>", None),
            ("Alice <alice@example.org> <bob@evil.test>", None),
            ("bob@evil.test <alice@example.org>", None),
            ("alice@example.org bob@evil.test", None),
            ("<@relay.test:alice@example.org>", None),
            ("alice@example.org.", None),
            ("alice@@example.org", None),
            ("alice\\@x@example.org", None),
            ("undisclosed-recipients:;", None),
            ("team: alice@example.org", None),
            ("a: b: alice@example.org;;", None),
            ("alice@example.org;", None),
            ("Alice <alice@example.org>\u{1b}", None),
            ("Ali\u{0}ce <alice@example.org>", None),
            ("garbage <<", None),
            ("alice@[192.0.2.1", None),
            ("alice@[[192.0.2.1]]", None),
            ("\"x\" \"y\" @example.org", None),
        ];
        for (value, want) in table {
            let want = want.map(|w| w.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            assert_eq!(addrs(value), want, "{value:?}");
        }
    }
}
