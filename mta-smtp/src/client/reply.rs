//! Server replies as the client reads them, sans I/O: framing a byte buffer into lines and
//! parsing lines into [`ServerReply`]s, strictly.
//!
//! RFC 5321 §4.2 (`Reply-line = *( Reply-code "-" [ textstring ] CRLF ) Reply-code
//! [ SP textstring ] CRLF`, every line of a multi-line reply with the same code),
//! §4.2.1 (codes 2xx–5xx; we accept 200–599), §4.5.3.1.5 (a reply line is at most 512
//! octets including CRLF), RFC 3463 / RFC 2034 §4 (the enhanced status code that starts
//! the text). A reply is at most [`MAX_REPLY_LINES`] lines: a server that never ends one
//! cannot make us read forever.

use std::fmt;

/// RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets, CRLF included.
pub const MAX_REPLY_LINE: usize = 512;

/// Our bound on the lines of one reply (RFC 5321 sets none; EHLO lists are ~20 lines).
pub const MAX_REPLY_LINES: usize = 100;

/// The most of a remote server's text (a reply, or an error that quotes one or lists TLSA
/// records) kept in a queue record, a bounce or a log line, in octets. A reply may be
/// [`MAX_REPLY_LINES`] lines of [`MAX_REPLY_LINE`] octets (~50 KB); stored whole for every
/// recipient of every attempt, it would inflate the queue and the logs by that much.
pub const MAX_KEPT_TEXT: usize = 1024;

/// `text` cut to at most `max` octets on a character boundary, `…` marking the cut. The
/// start is kept: a reply's code and enhanced status code come first.
pub fn cut(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return std::borrow::Cow::Borrowed(text);
    }
    const MARK: &str = "…";
    let mut end = max.saturating_sub(MARK.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}{MARK}", &text[..end]))
}

/// One reply from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerReply {
    /// The basic code, 200..=599.
    pub code: u16,
    /// The RFC 3463 code (`5.1.1`) when the first line starts with one whose class matches
    /// the basic code; it is then stripped from the text of every line that repeats it.
    pub enhanced: Option<String>,
    /// The text, lines joined by `\n`. Control characters are replaced by `?` and invalid
    /// UTF-8 by U+FFFD, so it is safe to log and to quote in a bounce.
    pub text: String,
}

impl ServerReply {
    /// A reply we make up ourselves (pre-checks, interrupted transactions).
    pub fn local(code: u16, enhanced: &str, text: &str) -> ServerReply {
        ServerReply {
            code,
            enhanced: Some(enhanced.to_string()),
            text: text.to_string(),
        }
    }

    /// 2xx.
    pub fn is_success(&self) -> bool {
        self.code / 100 == 2
    }

    /// 4xx: try again later.
    pub fn is_transient(&self) -> bool {
        self.code / 100 == 4
    }

    /// 5xx: do not try again.
    pub fn is_permanent(&self) -> bool {
        self.code / 100 == 5
    }

    /// The text's lines (one for a single-line reply).
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.text.split('\n')
    }
}

/// `550 5.1.1 text` on one line: lines of a multi-line reply are joined by a space, so the
/// result fits a log line or a DSN `Diagnostic-Code`.
impl fmt::Display for ServerReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(e) = &self.enhanced {
            write!(f, " {e}")?;
        }
        for (i, line) in self.lines().enumerate() {
            if i == 0 && line.is_empty() {
                continue;
            }
            write!(f, " {line}")?;
        }
        Ok(())
    }
}

/// Why bytes from the server are not a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// No CRLF within [`MAX_REPLY_LINE`] octets.
    #[error("reply line longer than {MAX_REPLY_LINE} octets")]
    LineTooLong,
    /// A line ended in a bare LF.
    #[error("reply line ends in a bare LF, not CRLF")]
    BareLf,
    /// A line had a CR that is not part of its CRLF.
    #[error("reply line has a bare CR")]
    BareCr,
    /// Not `ddd`, `ddd text` or `ddd-text`.
    #[error("malformed reply line {0:?}")]
    Malformed(String),
    /// A code outside 200–599.
    #[error("reply code {0} is outside 200-599")]
    BadCode(u16),
    /// A multi-line reply changed its code.
    #[error("multi-line reply changes code from {first} to {then}")]
    MixedCodes {
        /// The first line's code.
        first: u16,
        /// The offending line's code.
        then: u16,
    },
    /// More than [`MAX_REPLY_LINES`] lines.
    #[error("reply has more than {MAX_REPLY_LINES} lines")]
    TooManyLines,
}

/// Takes one CRLF-terminated line off the front of `buf`, without its CRLF. `Ok(None)`:
/// no complete line yet, read more.
///
/// A line ends at the first LF, which must follow a CR; no other CR may appear in it
/// (RFC 5321 §2.3.8). On an error nothing is taken, so every later call fails the same way:
/// the connection cannot get back in step and must be closed.
///
/// # Errors
/// [`ReplyError::LineTooLong`] when [`MAX_REPLY_LINE`] octets hold no line end (stop
/// reading: the server is not speaking SMTP), [`ReplyError::BareLf`] for a line ending in LF
/// alone, [`ReplyError::BareCr`] for a CR elsewhere in the line.
pub fn take_line(buf: &mut Vec<u8>) -> Result<Option<Vec<u8>>, ReplyError> {
    let window = &buf[..buf.len().min(MAX_REPLY_LINE)];
    match window.iter().position(|&b| b == b'\n') {
        Some(lf) => {
            if lf == 0 || buf[lf - 1] != b'\r' {
                return Err(ReplyError::BareLf);
            }
            if buf[..lf - 1].contains(&b'\r') {
                return Err(ReplyError::BareCr);
            }
            let mut line: Vec<u8> = buf.drain(..=lf).collect();
            line.truncate(lf - 1);
            Ok(Some(line))
        }
        None if buf.len() >= MAX_REPLY_LINE => Err(ReplyError::LineTooLong),
        None => Ok(None),
    }
}

/// Collects the lines of one reply.
#[derive(Debug, Default)]
pub struct ReplyParser {
    code: Option<u16>,
    enhanced: Option<String>,
    lines: Vec<String>,
}

impl ReplyParser {
    /// A parser waiting for the first line.
    pub fn new() -> ReplyParser {
        ReplyParser::default()
    }

    /// Adds one line (without CRLF). `Ok(Some(reply))` once the last line is in.
    ///
    /// # Errors
    /// [`ReplyError`] for a malformed line, a bad or changing code, or too many lines.
    pub fn push(&mut self, line: &[u8]) -> Result<Option<ServerReply>, ReplyError> {
        let (code, last, text) = split_line(line)?;
        match self.code {
            None => {
                self.code = Some(code);
                let (enhanced, rest) = enhanced_code(code, &text);
                self.enhanced = enhanced.map(str::to_string);
                self.lines.push(rest.to_string());
            }
            Some(first) if first != code => {
                return Err(ReplyError::MixedCodes { first, then: code });
            }
            Some(_) => {
                let rest = match &self.enhanced {
                    Some(e) => strip_enhanced(&text, e),
                    None => &text,
                };
                self.lines.push(rest.to_string());
            }
        }
        if last {
            return Ok(Some(ServerReply {
                code,
                enhanced: self.enhanced.take(),
                text: std::mem::take(&mut self.lines).join("\n"),
            }));
        }
        if self.lines.len() >= MAX_REPLY_LINES {
            return Err(ReplyError::TooManyLines);
        }
        Ok(None)
    }
}

/// `(code, is_last_line, text)`.
fn split_line(line: &[u8]) -> Result<(u16, bool, String), ReplyError> {
    let malformed = || ReplyError::Malformed(printable(line));
    let digits = line.get(..3).ok_or_else(malformed)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(malformed());
    }
    let code = digits
        .iter()
        .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    if !(200..=599).contains(&code) {
        return Err(ReplyError::BadCode(code));
    }
    match line.get(3) {
        None => Ok((code, true, String::new())),
        Some(b' ') => Ok((code, true, printable(&line[4..]))),
        Some(b'-') => Ok((code, false, printable(&line[4..]))),
        Some(_) => Err(malformed()),
    }
}

/// Server text made safe for logs and bounces.
fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if c.is_control() && c != '\t' { '?' } else { c })
        .collect()
}

/// RFC 3463 §2: `class "." subject "." detail`, class 2, 4 or 5 and equal to the reply's
/// first digit (RFC 2034 §4), subject and detail 1–3 digits.
fn enhanced_code(code: u16, text: &str) -> (Option<&str>, &str) {
    let (token, rest) = text.split_once(' ').unwrap_or((text, ""));
    let mut parts = token.split('.');
    let ok = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(class), Some(subject), Some(detail), None) => {
            let digits = |s: &str, max: usize| {
                (1..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
            };
            let class_ok = match class {
                "2" | "4" | "5" => class.parse::<u16>() == Ok(code / 100),
                _ => false,
            };
            class_ok && digits(subject, 3) && digits(detail, 3)
        }
        _ => false,
    };
    if ok {
        (Some(token), rest)
    } else {
        (None, text)
    }
}

fn strip_enhanced<'t>(text: &'t str, enhanced: &str) -> &'t str {
    match text.strip_prefix(enhanced) {
        Some("") => "",
        Some(rest) => rest.strip_prefix(' ').unwrap_or(text),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(lines: &[&[u8]]) -> Result<Option<ServerReply>, ReplyError> {
        let mut p = ReplyParser::new();
        let mut out = Ok(None);
        for l in lines {
            out = p.push(l);
            if !matches!(out, Ok(None)) {
                break;
            }
        }
        out
    }

    /// Lines in; code, enhanced code and text out.
    type Good<'a> = (&'a [&'a [u8]], u16, Option<&'a str>, &'a str);
    /// Buffer in; line (or error) and what is left out.
    type Framed<'a> = (&'a [u8], Result<Option<&'a [u8]>, ReplyError>, &'a [u8]);

    #[test]
    fn good_replies() {
        let table: &[Good] = &[
            (&[b"250 OK"], 250, None, "OK"),
            (&[b"250"], 250, None, ""),
            (&[b"250 "], 250, None, ""),
            (
                &[b"550 5.1.1 No such user"],
                550,
                Some("5.1.1"),
                "No such user",
            ),
            (&[b"550 5.1.1"], 550, Some("5.1.1"), ""),
            (&[b"451 4.3.0 try later"], 451, Some("4.3.0"), "try later"),
            // Class must match the code: a 2.x.x in a 5xx reply is just text.
            (&[b"550 2.1.1 odd"], 550, None, "2.1.1 odd"),
            (&[b"250 1.2.3.4 seen"], 250, None, "1.2.3.4 seen"),
            (&[b"250 2.0.1234 x"], 250, None, "2.0.1234 x"),
            (
                &[b"250-mx.example.test", b"250-PIPELINING", b"250 SIZE 10"],
                250,
                None,
                "mx.example.test\nPIPELINING\nSIZE 10",
            ),
            (
                &[b"550-5.7.1 first", b"550-5.7.1 second", b"550 5.7.1 third"],
                550,
                Some("5.7.1"),
                "first\nsecond\nthird",
            ),
            (&[b"250-", b"250 x"], 250, None, "\nx"),
            // Control characters and invalid UTF-8 are made printable.
            (&[b"250 a\x1b[31mb\xff"], 250, None, "a?[31mb\u{fffd}"),
        ];
        for (lines, code, enhanced, text) in table {
            let reply = parse(lines).expect("valid").expect("complete");
            assert_eq!(reply.code, *code, "{lines:?}");
            assert_eq!(reply.enhanced.as_deref(), *enhanced, "{lines:?}");
            assert_eq!(reply.text, *text, "{lines:?}");
        }
    }

    #[test]
    fn bad_replies() {
        let table: &[(&[&[u8]], ReplyError)] = &[
            (&[b""], ReplyError::Malformed(String::new())),
            (&[b"25"], ReplyError::Malformed("25".into())),
            (
                &[b"hello there"],
                ReplyError::Malformed("hello there".into()),
            ),
            (&[b"250_x"], ReplyError::Malformed("250_x".into())),
            (&[b"2500"], ReplyError::Malformed("2500".into())),
            (&[b"+OK"], ReplyError::Malformed("+OK".into())),
            (&[b"199 x"], ReplyError::BadCode(199)),
            (&[b"600 x"], ReplyError::BadCode(600)),
            (&[b"000"], ReplyError::BadCode(0)),
            (
                &[b"250-a", b"251 b"],
                ReplyError::MixedCodes {
                    first: 250,
                    then: 251,
                },
            ),
            (&[b"250-a", b"x"], ReplyError::Malformed("x".into())),
        ];
        for (lines, want) in table {
            assert_eq!(parse(lines), Err(want.clone()), "{lines:?}");
        }
    }

    #[test]
    fn line_limit_per_reply() {
        let mut p = ReplyParser::new();
        for _ in 0..MAX_REPLY_LINES - 1 {
            assert_eq!(p.push(b"250-x"), Ok(None));
        }
        assert_eq!(p.push(b"250-x"), Err(ReplyError::TooManyLines));
        let mut p = ReplyParser::new();
        for _ in 0..MAX_REPLY_LINES - 1 {
            assert_eq!(p.push(b"250-x"), Ok(None));
        }
        let reply = p.push(b"250 last").expect("100 lines are allowed");
        assert_eq!(reply.map(|r| r.lines().count()), Some(MAX_REPLY_LINES));
    }

    #[test]
    fn framing() {
        let long = vec![b'a'; MAX_REPLY_LINE];
        let mut just_fits = vec![b'a'; MAX_REPLY_LINE - 2];
        just_fits.extend_from_slice(b"\r\n");
        let table: &[Framed] = &[
            (b"250 OK\r\nrest", Ok(Some(b"250 OK")), b"rest"),
            (b"250 OK\r", Ok(None), b"250 OK\r"),
            (b"250 OK", Ok(None), b"250 OK"),
            (b"", Ok(None), b""),
            (b"\r\n", Ok(Some(b"")), b""),
            (b"250 OK\n", Err(ReplyError::BareLf), b"250 OK\n"),
            (b"\n", Err(ReplyError::BareLf), b"\n"),
            (b"250 a\rb\r\n", Err(ReplyError::BareCr), b"250 a\rb\r\n"),
            (b"250 OK\r\r\n", Err(ReplyError::BareCr), b"250 OK\r\r\n"),
            (b"\r\r\n", Err(ReplyError::BareCr), b"\r\r\n"),
            (&long, Err(ReplyError::LineTooLong), &long),
            (&just_fits, Ok(Some(&just_fits[..MAX_REPLY_LINE - 2])), b""),
        ];
        for (input, want, left) in table {
            let mut buf = input.to_vec();
            let got = take_line(&mut buf);
            assert_eq!(
                got,
                want.clone().map(|o| o.map(<[u8]>::to_vec)),
                "{input:?}"
            );
            assert_eq!(&buf[..], *left, "{input:?}");
        }
    }

    #[test]
    fn cut_keeps_the_start_within_the_bound() {
        assert_eq!(cut("451 4.3.0 short", 1024), "451 4.3.0 short");
        let long = format!("451 4.3.0 {}", "é".repeat(600));
        let kept = cut(&long, MAX_KEPT_TEXT);
        assert!(kept.len() <= MAX_KEPT_TEXT, "{}", kept.len());
        assert!(kept.starts_with("451 4.3.0 é") && kept.ends_with('…'));
        // Reference: the longest prefix on a character boundary that leaves room for the mark.
        for max in 0..40 {
            let text = "aé€😀".repeat(4);
            let got = cut(&text, max);
            let want = match text.len() <= max {
                true => text.clone(),
                false => {
                    let prefix: String = text
                        .char_indices()
                        .take_while(|(i, c)| i + c.len_utf8() + "…".len() <= max)
                        .map(|(_, c)| c)
                        .collect();
                    format!("{prefix}…")
                }
            };
            assert_eq!(got, want, "max {max}");
        }
    }

    #[test]
    fn display_is_one_line() {
        let table = [
            (&[&b"250 OK"[..]][..], "250 OK"),
            (&[b"250"], "250"),
            (&[b"550 5.1.1 No such user"], "550 5.1.1 No such user"),
            (&[b"550-5.7.1 a", b"550 5.7.1 b"], "550 5.7.1 a b"),
            (&[b"250-", b"250 b"], "250 b"),
        ];
        for (lines, want) in table {
            let reply = parse(lines).expect("valid").expect("complete");
            assert_eq!(reply.to_string(), want);
        }
    }

    /// A reply line over the limit, or one with a bare CR or LF, is an error that takes
    /// nothing off the buffer, so what follows it (here a well-formed reply that a hostile
    /// server lines up behind it) is never read as a reply: every later call fails the same.
    #[test]
    fn a_bad_line_cannot_desync_what_follows() {
        let long = "a".repeat(MAX_REPLY_LINE);
        let table: &[(String, ReplyError)] = &[
            (format!("250-{long}\r\n250 OK\r\n"), ReplyError::LineTooLong),
            (format!("250-{long}\n250 OK\r\n"), ReplyError::LineTooLong),
            (format!("250 {long}"), ReplyError::LineTooLong),
            ("250-x\n250 OK\r\n".into(), ReplyError::BareLf),
            ("250-x\r250 OK\r\n".into(), ReplyError::BareCr),
            ("250 x\r\r\n354 go\r\n".into(), ReplyError::BareCr),
        ];
        for (input, want) in table {
            let mut buf = input.clone().into_bytes();
            for _ in 0..3 {
                assert_eq!(take_line(&mut buf), Err(want.clone()), "{input:?}");
                assert_eq!(buf, input.as_bytes(), "nothing is taken");
            }
        }
    }
}
