//! A client of Dovecot's auth service (`[auth] backend = "dovecot"`): one connection to its
//! `auth-client` Unix socket per password check, speaking Dovecot's authentication client
//! protocol 1.2: `VERSION` and `CPID` from us, `VERSION`, `MECH`, `SPID`, `CUID`, `COOKIE`,
//! `DONE` from it, then one `AUTH` with `service=smtp`, `no-penalty`, `secured`, `rip` and the PLAIN
//! response (RFC 4616) in base64 `resp=`, answered by `OK`, `FAIL` or `CONT`.
//!
//! Everything it says is bounded: each line at most [`MAX_LINE`] octets, the handshake at
//! most [`MAX_HANDSHAKE_LINES`] lines, the whole exchange [`TIMEOUT`]. A missing socket, a
//! slow or broken service, a `FAIL` marked `temp` or `code=temp_fail` and anything we do not
//! understand is [`DovecotError`]: the client gets `454 4.7.0`, never a login.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use mta_core::address::Address;
use mta_core::auth::Verified;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// The whole exchange, connect to verdict.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// The longest line we read from the service, with its LF.
pub const MAX_LINE: usize = 16 * 1024;
/// The most handshake lines before `DONE` (Dovecot sends one `MECH` per mechanism).
pub const MAX_HANDSHAKE_LINES: usize = 64;
/// The id of our one request.
const REQUEST_ID: u32 = 1;

/// Why a password could not be checked now.
#[derive(Debug, thiserror::Error)]
pub enum DovecotError {
    /// The socket could not be reached or failed mid-way.
    #[error("Dovecot auth socket {path}: {source}")]
    Io {
        /// The socket.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// No verdict within [`TIMEOUT`].
    #[error("Dovecot auth gave no answer within {0:?}")]
    Timeout(Duration),
    /// A line we do not understand, too long, or out of place.
    #[error("Dovecot auth answered something we do not understand: {0}")]
    Protocol(String),
    /// `FAIL` with `temp` or `code=temp_fail`: Dovecot cannot check it now either.
    #[error("Dovecot auth failed temporarily")]
    Temporary,
}

/// One line from the service: its command and its arguments, tab-unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// `VERSION`, `MECH`, `DONE`, `OK`, `FAIL`, `CONT`…
    pub command: String,
    /// The fields after it.
    pub args: Vec<String>,
}

/// Reads one line (without its LF): fields split at TAB, each unescaped (Dovecot's
/// `str_tabescape`: `\x01` then `0` NUL, `1` `\x01`, `t` TAB, `r` CR, `n` LF). `None` for an
/// empty line, a bad escape, or text that is not UTF-8.
pub fn parse_line(line: &[u8]) -> Option<Line> {
    let text = std::str::from_utf8(line).ok()?;
    let mut fields = text.split('\t').map(unescape);
    let command = fields.next()??;
    if command.is_empty() {
        return None;
    }
    let args = fields.collect::<Option<Vec<String>>>()?;
    Some(Line { command, args })
}

fn unescape(field: &str) -> Option<String> {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\x01' {
            out.push(c);
            continue;
        }
        out.push(match chars.next()? {
            '0' => '\0',
            '1' => '\x01',
            't' => '\t',
            'r' => '\r',
            'n' => '\n',
            _ => return None,
        });
    }
    Some(out)
}

/// Escapes one field for the service (the inverse of [`parse_line`]'s unescaping).
pub fn escape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    for c in field.chars() {
        match c {
            '\0' => out.push_str("\x010"),
            '\x01' => out.push_str("\x011"),
            '\t' => out.push_str("\x01t"),
            '\r' => out.push_str("\x01r"),
            '\n' => out.push_str("\x01n"),
            c => out.push(c),
        }
    }
    out
}

/// What the session knows of the client, for Dovecot's log and policies.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    /// The client's address (`rip`).
    pub ip: IpAddr,
    /// The connection is encrypted (`secured`): AUTH is only offered over TLS.
    pub secured: bool,
}

/// Checks `login`'s `password` with Dovecot's auth service at `socket`: `Verified::User`
/// with the user Dovecot names (`user=`, else the login) when it says `OK` (without
/// `nologin` or `proxy`),
/// `Verified::Rejected` when it says `FAIL`, and without asking for a login or password
/// with a NUL in it, or an empty login.
///
/// # Errors
/// [`DovecotError`] when it cannot be asked or its answer makes no sense.
pub async fn verify(
    socket: &Path,
    login: &str,
    password: &str,
    client: Client,
) -> Result<Verified, DovecotError> {
    // A NUL would move the boundaries of the PLAIN response (RFC 4616): `login` could carry
    // a password of its own. The session never gives one from PLAIN, LOGIN could.
    if login.contains('\0') || password.contains('\0') || login.is_empty() {
        return Ok(Verified::Rejected);
    }
    match tokio::time::timeout(TIMEOUT, exchange(socket, login, password, client)).await {
        Ok(result) => result,
        Err(_) => Err(DovecotError::Timeout(TIMEOUT)),
    }
}

async fn exchange(
    socket: &Path,
    login: &str,
    password: &str,
    client: Client,
) -> Result<Verified, DovecotError> {
    let io = |source| DovecotError::Io {
        path: socket.display().to_string(),
        source,
    };
    let stream = UnixStream::connect(socket).await.map_err(io)?;
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::with_capacity(4096, read);
    let hello = format!("VERSION\t1\t2\nCPID\t{}\n", std::process::id());
    write.write_all(hello.as_bytes()).await.map_err(io)?;
    handshake(&mut read).await?;
    // Nothing may follow `DONE` before our `AUTH`: a verdict already here answers nothing
    // we asked.
    if !read.buffer().is_empty() {
        return Err(DovecotError::Protocol(
            "data after DONE before our AUTH".to_string(),
        ));
    }
    // `no-penalty`: our own lockout (per client address, before Dovecot is asked) does what
    // Dovecot's growing delay per `rip` would; with both, Dovecot's delay outgrows our
    // timeout and a failure becomes a `454` that our lockout does not count.
    let mut request = format!("AUTH\t{REQUEST_ID}\tPLAIN\tservice=smtp\tno-penalty");
    if client.secured {
        request.push_str("\tsecured");
    }
    let response = B64.encode(format!("\0{login}\0{password}"));
    request.push_str(&format!("\trip={}\tresp={response}\n", client.ip));
    write.write_all(request.as_bytes()).await.map_err(io)?;
    let line = next_line(&mut read).await?;
    verdict(&line, login)
}

/// Reads the service's handshake up to `DONE`: it must speak major version 1 and offer PLAIN.
async fn handshake<R: AsyncBufRead + Unpin>(read: &mut R) -> Result<(), DovecotError> {
    let (mut version, mut plain) = (false, false);
    for _ in 0..MAX_HANDSHAKE_LINES {
        let line = next_line(read).await?;
        match (line.command.as_str(), line.args.first().map(String::as_str)) {
            ("VERSION", Some("1")) => version = true,
            ("VERSION", _) => {
                return Err(DovecotError::Protocol(format!(
                    "version {:?}, not 1",
                    line.args
                        .first()
                        .map(|v| mta_core::text::escape(v).to_string())
                )));
            }
            ("MECH", Some(m)) if m.eq_ignore_ascii_case("PLAIN") => plain = true,
            ("DONE", _) if version && plain => return Ok(()),
            ("DONE", _) => {
                return Err(DovecotError::Protocol(
                    "handshake without VERSION 1 or the PLAIN mechanism".to_string(),
                ));
            }
            _ => {}
        }
    }
    Err(DovecotError::Protocol(format!(
        "no DONE within {MAX_HANDSHAKE_LINES} handshake lines"
    )))
}

/// What the answer to our `AUTH` says.
fn verdict(line: &Line, login: &str) -> Result<Verified, DovecotError> {
    let ours = line.args.first().map(String::as_str) == Some("1");
    let param = |name: &str| {
        line.args.iter().skip(1).find_map(|a| {
            a.split_once('=')
                .filter(|(k, _)| *k == name)
                .map(|(_, v)| v)
        })
    };
    match line.command.as_str() {
        "OK" if ours => {
            let flag = |name: &str| {
                line.args
                    .iter()
                    .skip(1)
                    .any(|a| a.split_once('=').map_or(a.as_str(), |(k, _)| k) == name)
            };
            // `proxy`: the login is for another server, which may be the one to check the
            // password (`nopassword`); we proxy nothing.
            if flag("proxy") || flag("proxy_maybe") {
                return Err(DovecotError::Protocol(
                    "OK for a login to proxy elsewhere".to_string(),
                ));
            }
            // `nologin`: the password matched, but the user may not log in.
            if flag("nologin") {
                return if flag("temp") {
                    Err(DovecotError::Temporary)
                } else {
                    Ok(Verified::Rejected)
                };
            }
            let user = param("user").unwrap_or(login);
            Address::parse(user).map(Verified::User).map_err(|_| {
                DovecotError::Protocol(format!(
                    "OK for user {:?}, which is not a mail address",
                    mta_core::text::escape(user).to_string()
                ))
            })
        }
        "FAIL" if ours => {
            // `temp` (older Dovecot) or `code=temp_fail` (newer): Dovecot could not check.
            if line
                .args
                .iter()
                .skip(1)
                .any(|a| a == "temp" || a == "code=temp_fail")
            {
                Err(DovecotError::Temporary)
            } else {
                Ok(Verified::Rejected)
            }
        }
        "CONT" if ours => Err(DovecotError::Protocol(
            "CONT after a complete PLAIN response".to_string(),
        )),
        other => Err(DovecotError::Protocol(format!(
            "{:?} where the answer to our AUTH was due",
            mta_core::text::escape(other).to_string()
        ))),
    }
}

/// The next line, at most [`MAX_LINE`] octets; an EOF before it is an error.
async fn next_line<R: AsyncBufRead + Unpin>(read: &mut R) -> Result<Line, DovecotError> {
    let mut buf = Vec::new();
    loop {
        let chunk = read.fill_buf().await.map_err(|source| DovecotError::Io {
            path: "(reading)".to_string(),
            source,
        })?;
        if chunk.is_empty() {
            return Err(DovecotError::Protocol(
                "the connection closed mid-exchange".to_string(),
            ));
        }
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(at) => (at + 1, true),
            None => (chunk.len(), false),
        };
        buf.extend_from_slice(&chunk[..take]);
        read.consume(take);
        if buf.len() > MAX_LINE {
            return Err(DovecotError::Protocol(format!(
                "a line longer than {MAX_LINE} octets"
            )));
        }
        if done {
            buf.pop();
            return parse_line(&buf).ok_or_else(|| {
                DovecotError::Protocol(format!(
                    "unreadable line {:?}",
                    mta_core::text::escape(&String::from_utf8_lossy(&buf)).to_string()
                ))
            });
        }
    }
}

#[cfg(test)]
#[path = "dovecot_auth_tests.rs"]
mod tests;
