//! Client text on its way into a log: the one place that decides how it is written, so a
//! client cannot forge log lines or fields (CR, LF, escape sequences, bidi overrides,
//! quotes) or flood them, and never sees its credentials logged.
//!
//! Everything a client chose (command lines, EHLO names, MAIL/RCPT addresses, AUTH logins)
//! goes through [`escape`] or [`transcript`] before it reaches a `tracing` field.

use std::fmt;

/// Longest client text written to a log, in characters; the rest is cut with `…`.
const MAX_CHARS: usize = 256;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
