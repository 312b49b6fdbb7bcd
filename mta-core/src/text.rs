//! Text that someone else chose, on its way into a log or onto an operator's terminal: the
//! one place that decides how it is written, so a client, a remote server or a DNS record
//! cannot forge log lines or fields (CR, LF, escape sequences, bidi overrides, quotes),
//! flood them, or send escape sequences to a terminal, and never sees credentials logged.
//!
//! Everything a peer chose (command lines, EHLO names, MAIL/RCPT addresses, AUTH logins,
//! remote replies, DNS record text) goes through [`escape`] or [`transcript`] before it
//! reaches a `tracing` field, and through [`terminal`] before a CLI prints it.

use std::fmt;

/// Longest client text written to a log, in characters; the rest is cut with `…`.
const MAX_CHARS: usize = 256;

/// `text` as the bytes of a message on the wire: every line ending CRLF, a bare LF made one
/// (reports built by mail-builder end lines with CRLF already; none is left bare).
pub fn crlf(text: &str) -> Vec<u8> {
    text.replace("\r\n", "\n")
        .replace('\n', "\r\n")
        .into_bytes()
}

/// Client text as a log field value: written as it is when it is plain (printable, no
/// spaces, quotes or backslashes), else in double quotes with every character that is not
/// printable escaped as `\u{..}` (control, format and separator characters alike).
pub fn escape(text: &str) -> Escaped<'_> {
    Escaped(text)
}

/// See [`escape`].
pub struct Escaped<'a>(&'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0;
        let cut = text.chars().count() > MAX_CHARS;
        let shown = text.chars().take(MAX_CHARS);
        let plain = !text.is_empty()
            && !cut
            && text
                .chars()
                .all(|c| !matches!(c, ' ' | '"' | '\\') && c.escape_debug().eq(std::iter::once(c)));
        if plain {
            return f.write_str(text);
        }
        f.write_str("\"")?;
        for c in shown {
            write!(f, "{}", c.escape_debug())?;
        }
        if cut {
            f.write_str("…")?;
        }
        f.write_str("\"")
    }
}

/// A command line for the debug transcript: SASL responses and AUTH's initial response are
/// hidden (they carry the password), everything else escaped.
pub fn transcript(line: &[u8], sasl: bool) -> String {
    if sasl {
        return "<redacted>".into();
    }
    let text = String::from_utf8_lossy(line);
    // Compare bytes: a multi-byte character after "AUTH" must not split a slice.
    if line.len() >= 5 && line[..5].eq_ignore_ascii_case(b"AUTH ") {
        let mechanism = text[5..].split(' ').find(|w| !w.is_empty()).unwrap_or("");
        return format!("AUTH {} <redacted>", escape(mechanism));
    }
    escape(&text).to_string()
}

/// Text for an operator's terminal: kept as it is, except that every control character
/// (ESC, BEL, CR, the C1 range…) and bidi override is written as `\u{..}`, so remote text
/// cannot move the cursor, set the window title or hide what follows. Newlines and tabs are
/// kept when `keep_newlines` is set (a multi-line DNS record or reply printed as lines).
pub fn terminal(text: &str, keep_newlines: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let keep = (keep_newlines && (c == '\n' || c == '\t'))
            || (!c.is_control() && c.escape_debug().eq(std::iter::once(c)))
            || c == ' '
            || c == '"'
            || c == '\''
            || c == '\\';
        if keep {
            out.push(c);
        } else {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_ends_every_line_with_crlf_and_adds_no_cr() {
        assert_eq!(crlf("a\r\nb\nc\r\n"), b"a\r\nb\r\nc\r\n");
        assert_eq!(crlf("a\rb"), b"a\rb");
    }

    #[test]
    fn client_text_cannot_forge_log_lines() {
        let table: &[(&str, &str)] = &[
            ("client.test", "client.test"),
            ("alice@example.org", "alice@example.org"),
            ("ñandú@example.org", "ñandú@example.org"),
            ("", "\"\""),
            ("a b", "\"a b\""),
            ("x\r\nINFO forged", "\"x\\r\\nINFO forged\""),
            ("\u{1b}[31mred", "\"\\u{1b}[31mred\""),
            ("evil\u{202e}gro.elpmaxe", "\"evil\\u{202e}gro.elpmaxe\""),
            ("zero\u{200b}width", "\"zero\\u{200b}width\""),
            (
                "\"a rcpts=x@y\"@example.org",
                "\"\\\"a rcpts=x@y\\\"@example.org\"",
            ),
            ("back\\slash", "\"back\\\\slash\""),
        ];
        for (input, want) in table {
            assert_eq!(escape(input).to_string(), *want, "{input:?}");
        }
        let long = "a".repeat(1000);
        let shown = escape(&long).to_string();
        assert_eq!(shown, format!("\"{}…\"", "a".repeat(MAX_CHARS)));
    }

    #[test]
    fn transcript_never_shows_credentials() {
        let table: &[(&[u8], bool, &str)] = &[
            (b"AUTH PLAIN AGFAYgBw", false, "AUTH PLAIN <redacted>"),
            (b"auth login", false, "AUTH login <redacted>"),
            (b"AUTH  PLAIN  xyz", false, "AUTH PLAIN <redacted>"),
            (b"AUTH \x1b[2J", false, "AUTH \"\\u{1b}[2J\" <redacted>"),
            (b"cGFzc3dvcmQ=", true, "<redacted>"),
            (b"MAIL FROM:<a@b>\x1b", false, "\"MAIL FROM:<a@b>\\u{1b}\""),
            (b"AUTH\xc3\xa9", false, "AUTHé"),
            (b"QUIT", false, "QUIT"),
            (b"\xff\xfe", false, "\u{fffd}\u{fffd}"),
        ];
        for (line, sasl, want) in table {
            assert_eq!(transcript(line, *sasl), *want, "{line:?}");
        }
    }

    #[test]
    fn terminal_text_loses_its_escapes() {
        assert_eq!(terminal("250 ok", false), "250 ok");
        assert_eq!(
            terminal("a\x1b]0;pwned\x07b", false),
            "a\\u{1b}]0;pwned\\u{7}b"
        );
        assert_eq!(terminal("x\r\ny", false), "x\\u{d}\\u{a}y");
        assert_eq!(terminal("x\ny", true), "x\ny");
        assert_eq!(terminal("\u{202e}evil", false), "\\u{202e}evil");
        assert_eq!(terminal("\u{9b}31m", false), "\\u{9b}31m");
        assert_eq!(terminal("caf\u{e9} \"q\" \\", false), "caf\u{e9} \"q\" \\");
    }

    #[test]
    fn log_fields_escape_line_breaks() {
        assert_eq!(escape("plain").to_string(), "plain");
        assert_eq!(
            escape("a\r\nINFO forged").to_string(),
            "\"a\\r\\nINFO forged\""
        );
    }
}
