//! The connection of `mta send`: one command and one reply at a time, each shown in the
//! transcript (`--transcript`), server replies parsed (RFC 5321 §4.2), the TLS handshake
//! (implicit, RFC 8314, or after STARTTLS, RFC 3207, with nothing read before it kept,
//! §4.2), the message dot-stuffed (§4.5.2), and the EHLO keywords (§4.1.1.1). Every
//! connect, reply, write and handshake is bounded by `--timeout`. The order of the steps is
//! `session`'s; AUTH is `auth`'s.
//!
//! Server replies reach the terminal only through `mta_core::text::terminal`: a hostile
//! server's ESC, BEL or OSC sequences are shown escaped, never obeyed.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mta_core::text::terminal;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::tls::{self, Recording};

/// The steps of a session, in order; a failure in one gives its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Resolving the name and opening the TCP connection.
    Connect,
    /// The server's 220.
    Greeting,
    /// EHLO (or HELO).
    Ehlo,
    /// STARTTLS or the implicit TLS handshake, with the certificate check.
    Tls,
    /// AUTH.
    Auth,
    /// MAIL FROM.
    Mail,
    /// RCPT TO (all refused).
    Rcpt,
    /// DATA's 354.
    Data,
    /// The reply to the message.
    Message,
}

impl Phase {
    /// The exit code of a failure in this phase (as swaks numbers them where it has one).
    pub fn exit_code(self) -> u8 {
        match self {
            Phase::Connect => 20,
            Phase::Greeting => 21,
            Phase::Ehlo => 22,
            Phase::Mail => 23,
            Phase::Rcpt => 24,
            Phase::Data => 25,
            Phase::Message => 26,
            Phase::Auth => 28,
            Phase::Tls => 29,
        }
    }
}

/// Why the session stopped early: the phase and what happened, in words.
#[derive(Debug)]
pub struct Failure {
    /// Where it failed.
    pub phase: Phase,
    /// What happened (server text already escaped).
    pub message: String,
}

pub(super) fn fail<T>(phase: Phase, message: impl Into<String>) -> Result<T, Failure> {
    Err(Failure {
        phase,
        message: message.into(),
    })
}

/// One server reply: its code and the text of each line (after the code and separator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// 200..=599 (or 100..=199, which is never success).
    pub code: u16,
    /// The text of each line, as sent (invalid UTF-8 replaced); escape before printing.
    pub lines: Vec<String>,
}

impl Reply {
    fn class(&self) -> u16 {
        self.code / 100
    }
}

/// `550 5.1.1 text` on one line, lines joined by a space, control characters escaped.
impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.lines.join(" ");
        let text = text.trim();
        if text.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{} {}", self.code, terminal(text, false))
        }
    }
}

/// Longest reply line we read (RFC 5321 §4.5.3.1.5 says 512; a test client is lenient).
const MAX_LINE: usize = 4096;
/// Most lines in one reply.
const MAX_LINES: usize = 200;

/// Parses one reply line: the code, whether more lines follow, the text.
pub fn parse_line(line: &[u8]) -> Option<(u16, bool, String)> {
    let digits = line.get(..3)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let code = u16::from(digits[0] - b'0') * 100
        + u16::from(digits[1] - b'0') * 10
        + u16::from(digits[2] - b'0');
    if !(100..=599).contains(&code) {
        return None;
    }
    let (more, text) = match line.get(3) {
        None => (false, &line[3..]),
        Some(b' ') => (false, &line[4..]),
        Some(b'-') => (true, &line[4..]),
        Some(_) => return None,
    };
    Some((code, more, String::from_utf8_lossy(text).into_owned()))
}

enum Stream {
    Plain(Recording),
    Tls(Box<TlsStream<Recording>>),
    /// Only while the plain stream is handed to the handshake.
    Upgrading,
}

/// A connection with its read buffer, its timeout and its transcript.
pub struct Conn {
    stream: Stream,
    buf: Vec<u8>,
    timeout: Duration,
    transcript: bool,
    peer: SocketAddr,
}

impl Conn {
    /// Resolves `host` and connects to the first address that answers, within `timeout` in
    /// all.
    pub async fn connect(
        host: &str,
        port: u16,
        timeout: Duration,
        transcript: bool,
    ) -> Result<Conn, Failure> {
        let secs = timeout.as_secs_f64();
        let addrs: Vec<SocketAddr> =
            match tokio::time::timeout(timeout, tokio::net::lookup_host((host, port))).await {
                Err(_) => {
                    return fail(
                        Phase::Connect,
                        format!("no address for {host} within {secs} s"),
                    );
                }
                Ok(Err(e)) => {
                    return fail(
                        Phase::Connect,
                        format!("cannot resolve {host:?}: {e} (check --server)"),
                    );
                }
                Ok(Ok(a)) => a.collect(),
            };
        let mut last = format!("{host} has no address");
        let deadline = tokio::time::Instant::now() + timeout;
        for addr in addrs {
            if transcript {
                eprintln!("=== Trying {addr}...");
            }
            match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
                Ok(Ok(tcp)) => {
                    if transcript {
                        eprintln!("=== Connected to {addr}.");
                    }
                    return Ok(Conn {
                        stream: Stream::Plain(Recording::new(tcp)),
                        buf: Vec::new(),
                        timeout,
                        transcript,
                        peer: addr,
                    });
                }
                Ok(Err(e)) => last = format!("cannot connect to {addr}: {e}"),
                Err(_) => {
                    last = format!("cannot connect to {addr}: no answer within {secs} s");
                    break;
                }
            }
        }
        fail(
            Phase::Connect,
            format!("{last} (check --server and the port)"),
        )
    }

    /// The address connected to.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    fn show(&self, outgoing: bool, line: &str) {
        if self.transcript {
            let arrow = match (outgoing, self.is_tls()) {
                (true, false) => " -> ",
                (true, true) => " ~> ",
                (false, false) => "<-  ",
                (false, true) => "<~  ",
            };
            eprintln!("{arrow}{line}");
        }
    }

    /// Says something about the session in the transcript.
    pub fn note(&self, text: &str) {
        if self.transcript {
            eprintln!("=== {text}");
        }
    }

    /// The TLS handshake on the connection (RFC 3207 §4.2: whatever the server sent before
    /// it is an attack, and refused).
    pub async fn start_tls(
        &mut self,
        config: Arc<rustls::ClientConfig>,
        name: &str,
        implicit: bool,
    ) -> Result<(), Failure> {
        if !self.buf.is_empty() {
            return fail(
                Phase::Tls,
                format!(
                    "the server sent {} octets after its STARTTLS reply, before the handshake \
                     (STARTTLS command injection, RFC 3207 §4.2): not going on",
                    self.buf.len()
                ),
            );
        }
        let server_name = tls::server_name(name).map_err(|e| Failure {
            phase: Phase::Tls,
            message: format!("{e:#}"),
        })?;
        let Stream::Plain(mut plain) = std::mem::replace(&mut self.stream, Stream::Upgrading)
        else {
            return fail(Phase::Tls, "TLS is already on");
        };
        plain.record();
        let connector = TlsConnector::from(config);
        let handshake = connector
            .connect_with(server_name, plain, |_| {})
            .into_fallible();
        let secs = self.timeout.as_secs_f64();
        let tls = match tokio::time::timeout(self.timeout, handshake).await {
            Ok(Ok(tls)) => tls,
            // The stream comes back with what it read: a plaintext greeting tells the port.
            Ok(Err((e, plain))) => {
                return fail(Phase::Tls, tls::explain(&e, plain.seen(), name, implicit));
            }
            Err(_) => {
                return fail(
                    Phase::Tls,
                    format!("no TLS handshake within {secs} s (--timeout)"),
                );
            }
        };
        let (_, session) = tls.get_ref();
        let version = session
            .protocol_version()
            .and_then(|v| v.as_str())
            .unwrap_or("TLS")
            .replace('_', ".");
        let cipher = session
            .negotiated_cipher_suite()
            .and_then(|c| c.suite().as_str())
            .unwrap_or("?");
        self.stream = Stream::Tls(Box::new(tls));
        self.note(&format!("TLS started with {version} {cipher}"));
        Ok(())
    }

    async fn read_more(
        &mut self,
        phase: Phase,
        waiting_for: &str,
        deadline: tokio::time::Instant,
    ) -> Result<(), Failure> {
        let mut chunk = [0u8; 4096];
        let secs = self.timeout.as_secs_f64();
        let read = async {
            match &mut self.stream {
                Stream::Plain(s) => s.read(&mut chunk).await,
                Stream::Tls(s) => s.read(&mut chunk).await,
                Stream::Upgrading => Ok(0),
            }
        };
        match tokio::time::timeout_at(deadline, read).await {
            Err(_) => fail(
                phase,
                format!("no {waiting_for} from the server within {secs} s (--timeout)"),
            ),
            Ok(Err(e)) => fail(phase, format!("reading the {waiting_for}: {e}")),
            Ok(Ok(0)) => fail(
                phase,
                format!("the server closed the connection instead of sending the {waiting_for}"),
            ),
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
        }
    }

    /// Reads one reply, showing each line in the transcript. The whole reply must come
    /// within the timeout: a server sending a byte at a time cannot stretch it.
    pub async fn reply(&mut self, phase: Phase, waiting_for: &str) -> Result<Reply, Failure> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut lines = Vec::new();
        loop {
            let Some(end) = self.buf.iter().position(|&b| b == b'\n') else {
                if self.buf.len() > MAX_LINE {
                    return fail(
                        phase,
                        format!("the {waiting_for} has a line over {MAX_LINE} octets"),
                    );
                }
                self.read_more(phase, waiting_for, deadline).await?;
                continue;
            };
            let raw: Vec<u8> = self.buf.drain(..=end).collect();
            let line = raw.strip_suffix(b"\n").unwrap_or(&raw);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let shown = terminal(&String::from_utf8_lossy(line), false);
            self.show(false, &shown);
            let Some((code, more, text)) = parse_line(line) else {
                return fail(
                    phase,
                    format!("the server's {waiting_for} is not an SMTP reply: {shown:?}"),
                );
            };
            if let Some(&(first, _)) = lines.first()
                && first != code
            {
                return fail(
                    phase,
                    format!("the server's {waiting_for} mixes codes {first} and {code}"),
                );
            }
            lines.push((code, text));
            if !more {
                break;
            }
            if lines.len() >= MAX_LINES {
                return fail(
                    phase,
                    format!("the {waiting_for} has over {MAX_LINES} lines"),
                );
            }
        }
        Ok(Reply {
            code: lines[0].0,
            lines: lines.into_iter().map(|(_, t)| t).collect(),
        })
    }

    async fn write(&mut self, bytes: &[u8], phase: Phase) -> Result<(), Failure> {
        let secs = self.timeout.as_secs_f64();
        for chunk in bytes.chunks(64 * 1024) {
            let write = async {
                match &mut self.stream {
                    Stream::Plain(s) => {
                        s.write_all(chunk).await?;
                        s.flush().await
                    }
                    Stream::Tls(s) => {
                        s.write_all(chunk).await?;
                        s.flush().await
                    }
                    Stream::Upgrading => Ok(()),
                }
            };
            match tokio::time::timeout(self.timeout, write).await {
                Err(_) => {
                    return fail(phase, format!("cannot send within {secs} s (--timeout)"));
                }
                Ok(Err(e)) => return fail(phase, format!("sending to the server: {e}")),
                Ok(Ok(())) => {}
            }
        }
        Ok(())
    }

    /// Sends one command line (CRLF added), shown as `shown` (secrets hidden).
    pub async fn send(&mut self, line: &str, shown: &str, phase: Phase) -> Result<(), Failure> {
        self.show(true, shown);
        self.write(format!("{line}\r\n").as_bytes(), phase).await
    }

    /// Sends a command and reads its reply.
    pub async fn command(
        &mut self,
        line: &str,
        phase: Phase,
        waiting_for: &str,
    ) -> Result<Reply, Failure> {
        self.send(line, &terminal(line, false), phase).await?;
        self.reply(phase, waiting_for).await
    }

    /// Sends the message (dot-stuffed, with the final `.`), shown line by line up to a
    /// bound.
    pub async fn data(&mut self, message: &[u8]) -> Result<(), Failure> {
        let mut wire = Vec::with_capacity(message.len() + message.len() / 50 + 5);
        let mut stuffer = mta_smtp::client::dot::DotStuffer::new();
        stuffer.push(message, &mut wire);
        stuffer.finish(&mut wire);
        if self.transcript {
            const SHOWN: usize = 100;
            let lines: Vec<&[u8]> = wire.split(|&b| b == b'\n').collect();
            let count = lines.len().saturating_sub(1);
            for line in lines.iter().take(SHOWN.min(count)) {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                self.show(true, &terminal(&String::from_utf8_lossy(line), false));
            }
            if count > SHOWN {
                self.note(&format!(
                    "... {} more lines ({} octets in all)",
                    count - SHOWN,
                    wire.len()
                ));
            }
        }
        self.write(&wire, Phase::Message).await
    }

    /// QUIT and its reply, errors ignored: the outcome is known by now.
    pub async fn quit(&mut self) {
        if self.send("QUIT", "QUIT", Phase::Message).await.is_ok() {
            let _ = self.reply(Phase::Message, "reply to QUIT").await;
        }
    }
}

/// The EHLO keywords and their parameters (RFC 5321 §4.1.1.1), upper-cased.
pub struct Extensions(Vec<(String, Vec<String>)>);

impl Extensions {
    /// From an EHLO reply (its first line is the greeting, not an extension).
    pub fn parse(reply: &Reply) -> Extensions {
        let list = reply
            .lines
            .iter()
            .skip(1)
            .filter_map(|line| {
                // Old servers write `AUTH=LOGIN PLAIN`.
                let mut words = line.split([' ', '=']).filter(|w| !w.is_empty());
                let keyword = words.next()?.to_ascii_uppercase();
                Some((keyword, words.map(str::to_ascii_uppercase).collect()))
            })
            .collect();
        Extensions(list)
    }

    /// Whether `keyword` was offered.
    pub fn has(&self, keyword: &str) -> bool {
        self.0.iter().any(|(k, _)| k == keyword)
    }

    /// The SASL mechanisms offered.
    pub fn auth(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (k, params) in &self.0 {
            if k == "AUTH" {
                out.extend(params.iter().cloned());
            }
        }
        out
    }
}

/// Whether a reply is 2xx.
pub fn ok(reply: &Reply) -> bool {
    reply.class() == 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reply_lines() {
        assert_eq!(parse_line(b"250 OK"), Some((250, false, "OK".into())));
        assert_eq!(
            parse_line(b"250-PIPELINING"),
            Some((250, true, "PIPELINING".into()))
        );
        assert_eq!(parse_line(b"354"), Some((354, false, String::new())));
        assert_eq!(
            parse_line(b"220 \x1b]0;x\x07"),
            Some((220, false, "\u{1b}]0;x\u{7}".into()))
        );
        for bad in [
            &b"25 x"[..],
            b"2500 x",
            b"abc",
            b"",
            b"600 x",
            b"099 x",
            b"250_x",
        ] {
            assert_eq!(parse_line(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn hostile_text_is_shown_escaped() {
        let reply = Reply {
            code: 550,
            lines: vec!["\u{1b}]0;owned\u{7}no \u{1b}[2J".into()],
        };
        let shown = reply.to_string();
        assert!(!shown.contains(['\u{1b}', '\u{7}']), "{shown}");
        assert_eq!(shown, "550 \\u{1b}]0;owned\\u{7}no \\u{1b}[2J");
    }

    #[test]
    fn extensions_old_and_new() {
        let reply = Reply {
            code: 250,
            lines: vec![
                "mx.example.test".into(),
                "AUTH=LOGIN".into(),
                "auth plain login".into(),
                "STARTTLS".into(),
            ],
        };
        let ext = Extensions::parse(&reply);
        assert!(ext.has("STARTTLS") && !ext.has("MX.EXAMPLE.TEST"));
        assert_eq!(ext.auth(), ["LOGIN", "PLAIN", "LOGIN"]);
    }

    proptest! {
        /// The reference model of an EHLO reply's keywords: each line after the first, cut
        /// at spaces and `=`, the first word the keyword.
        #[test]
        fn extensions_match_their_model(lines in proptest::collection::vec(
            "[A-Za-z0-9= -]{0,12}", 1..6)) {
            let ext = Extensions::parse(&Reply { code: 250, lines: lines.clone() });
            let mut auth = Vec::new();
            for line in &lines[1..] {
                let words: Vec<String> = line
                    .replace('=', " ")
                    .split_whitespace()
                    .map(str::to_ascii_uppercase)
                    .collect();
                if let Some((keyword, params)) = words.split_first() {
                    prop_assert!(ext.has(keyword));
                    if keyword == "AUTH" {
                        auth.extend(params.iter().cloned());
                    }
                }
            }
            prop_assert_eq!(ext.auth(), auth);
            prop_assert!(!ext.has("") );
        }

        /// The reference model: RFC 5321 §4.2's grammar as a regular expression.
        #[test]
        fn reply_lines_match_the_grammar(line in "[0-9a-z -]{0,6}") {
            let re_ok = line.len() >= 3
                && line[..3].chars().all(|c| c.is_ascii_digit())
                && ("100"..="599").contains(&&line[..3])
                && matches!(line.as_bytes().get(3), None | Some(b' ') | Some(b'-'));
            let parsed = parse_line(line.as_bytes());
            prop_assert_eq!(parsed.is_some(), re_ok, "{:?}", line);
            if let Some((code, more, text)) = parsed {
                prop_assert_eq!(code.to_string(), &line[..3]);
                prop_assert_eq!(more, line.as_bytes().get(3) == Some(&b'-'));
                prop_assert_eq!(text, line.get(4..).unwrap_or(""));
            }
        }
    }
}
