//! A tiny blocking SMTP client for dialog tests: send a line, read a whole (multi-line)
//! reply, upgrade to TLS (STARTTLS or implicit) trusting the test server's self-signed
//! certificate. Every read and write has a 10 s timeout.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// Every socket read and write gives up after this long.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// A reply line longer than this is a broken server, not a reply.
const MAX_LINE: usize = 64 * 1024;

/// One SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code.
    pub code: u16,
    /// The text of each line, after `NNN ` or `NNN-`.
    pub lines: Vec<String>,
}

impl Reply {
    /// The enhanced status code (RFC 3463) the first line starts with, if any.
    pub fn enhanced(&self) -> Option<&str> {
        let first = self.lines.first()?.split(' ').next()?;
        let parts: Vec<&str> = first.split('.').collect();
        let is_code = parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        is_code.then_some(first)
    }

    /// True when the code is `code` and, if `enhanced` is given, the enhanced code equals
    /// it or starts with it followed by a dot (`5.7` matches `5.7.1`).
    pub fn matches(&self, code: u16, enhanced: Option<&str>) -> bool {
        self.code == code
            && enhanced.is_none_or(|want| {
                self.enhanced()
                    .is_some_and(|e| e == want || e.starts_with(&format!("{want}.")))
            })
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.lines.join(" / "))
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
    /// Between taking the plain stream and installing the TLS one.
    Upgrading,
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
            Stream::Upgrading => Err(io::Error::other("TLS upgrade failed earlier")),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
            Stream::Upgrading => Err(io::Error::other("TLS upgrade failed earlier")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
            Stream::Upgrading => Ok(()),
        }
    }
}

/// A client configuration that trusts exactly the certificates in the PEM file `cert`.
pub fn tls_config(cert: &Path) -> Arc<ClientConfig> {
    // Err only when a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(cert)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", cert.display()));
    for c in certs {
        let c = c.unwrap_or_else(|e| panic!("bad PEM in {}: {e}", cert.display()));
        roots
            .add(c)
            .unwrap_or_else(|e| panic!("unusable certificate in {}: {e}", cert.display()));
    }
    Arc::new(
        ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// One connection to an SMTP server.
pub struct SmtpClient {
    stream: Stream,
    /// Bytes read but not yet returned as a line.
    buf: Vec<u8>,
    /// What was said, for failure messages.
    transcript: Vec<String>,
}

impl SmtpClient {
    /// Connects over plain TCP. The greeting is not read: call [`SmtpClient::read_reply`].
    pub fn connect(addr: SocketAddr) -> SmtpClient {
        let tcp = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
        SmtpClient::over(tcp)
    }

    /// Connects over plain TCP from the local address `source` (another loopback address,
    /// to be another client). The greeting is not read.
    pub fn connect_from(addr: SocketAddr, source: std::net::IpAddr) -> SmtpClient {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime to connect with");
        let tcp = runtime
            .block_on(async {
                let socket = match addr {
                    SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                    SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
                };
                socket.bind(SocketAddr::new(source, 0))?;
                tokio::time::timeout(IO_TIMEOUT, socket.connect(addr))
                    .await
                    .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
            })
            .and_then(|tcp| tcp.into_std())
            .and_then(|tcp| tcp.set_nonblocking(false).map(|()| tcp))
            .unwrap_or_else(|e| panic!("cannot connect to {addr} from {source}: {e}"));
        SmtpClient::over(tcp)
    }

    /// Connects with implicit TLS from `source`, as [`SmtpClient::connect_tls`].
    pub fn connect_tls_from(addr: SocketAddr, source: std::net::IpAddr, cert: &Path) -> SmtpClient {
        let mut client = SmtpClient::connect_from(addr, source);
        client.upgrade_tls(cert);
        client
    }

    fn over(tcp: TcpStream) -> SmtpClient {
        tcp.set_read_timeout(Some(IO_TIMEOUT))
            .expect("set_read_timeout");
        tcp.set_write_timeout(Some(IO_TIMEOUT))
            .expect("set_write_timeout");
        let _ = tcp.set_nodelay(true);
        SmtpClient {
            stream: Stream::Plain(tcp),
            buf: Vec::new(),
            transcript: Vec::new(),
        }
    }

    /// Connects with implicit TLS (port 465 style), trusting `cert`, checking the name
    /// `localhost`. The greeting is not read.
    pub fn connect_tls(addr: SocketAddr, cert: &Path) -> SmtpClient {
        let mut client = SmtpClient::connect(addr);
        client.upgrade_tls(cert);
        client
    }

    /// Does the TLS handshake on the open connection (after `STARTTLS` got `220`), trusting
    /// `cert` and checking the name `localhost`.
    pub fn upgrade_tls(&mut self, cert: &Path) {
        assert!(
            self.buf.is_empty(),
            "the server sent data after its 220 to STARTTLS: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        let Stream::Plain(mut tcp) = std::mem::replace(&mut self.stream, Stream::Upgrading) else {
            panic!("TLS is already active");
        };
        let name = ServerName::try_from("localhost").expect("a valid name");
        let mut conn = ClientConnection::new(tls_config(cert), name).expect("a TLS client");
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp)
                .unwrap_or_else(|e| panic!("TLS handshake failed: {e}"));
        }
        self.transcript.push("(TLS established)".into());
        self.stream = Stream::Tls(Box::new(StreamOwned::new(conn, tcp)));
    }

    /// The TLS protocol version, when TLS is active.
    pub fn tls_version(&self) -> Option<rustls::ProtocolVersion> {
        match &self.stream {
            Stream::Tls(s) => s.conn.protocol_version(),
            _ => None,
        }
    }

    /// Sends `line` followed by CRLF.
    pub fn send_line(&mut self, line: &str) -> io::Result<()> {
        self.transcript.push(format!("C: {line}"));
        self.stream.write_all(format!("{line}\r\n").as_bytes())?;
        self.stream.flush()
    }

    /// Sends bytes as they are (message data, several pipelined commands).
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.transcript.push(format!(
            "C: ({} raw bytes) {:?}",
            bytes.len(),
            String::from_utf8_lossy(&bytes[..bytes.len().min(80)])
        ));
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Reads one line without its line ending. EOF (also a reset or a TLS close without
    /// close_notify) is `UnexpectedEof`.
    fn read_line(&mut self) -> io::Result<String> {
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(String::from_utf8_lossy(&line).into_owned());
            }
            if self.buf.len() > MAX_LINE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "reply line too long",
                ));
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads one whole reply (all its lines).
    pub fn read_reply(&mut self) -> io::Result<Reply> {
        let mut lines = Vec::new();
        loop {
            let line = self.read_line()?;
            self.transcript.push(format!("S: {line}"));
            let bad = || {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad reply line {line:?}"),
                )
            };
            let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).ok_or_else(bad)?;
            let (sep, text) = match line.get(3..4) {
                None => (" ", ""),
                Some(sep) => (sep, &line[4..]),
            };
            lines.push(text.to_string());
            match sep {
                "-" => continue,
                " " => return Ok(Reply { code, lines }),
                _ => return Err(bad()),
            }
        }
    }

    /// Sends `line` and reads the reply; panics on an I/O error.
    pub fn command(&mut self, line: &str) -> Reply {
        if let Err(e) = self.send_line(line) {
            panic!("sending {line:?}: {e}\n{}", self.transcript());
        }
        self.reply(&format!("the reply to {line:?}"))
    }

    /// Reads a reply; panics naming `what` on an I/O error.
    pub fn reply(&mut self, what: &str) -> Reply {
        self.read_reply()
            .unwrap_or_else(|e| panic!("reading {what}: {e}\n{}", self.transcript()))
    }

    /// Sends `line` and panics unless the reply has `code`.
    #[track_caller]
    pub fn expect(&mut self, line: &str, code: u16) -> Reply {
        let reply = self.command(line);
        assert_eq!(
            reply.code,
            code,
            "unexpected reply to {line:?}\n{}",
            self.transcript()
        );
        reply
    }

    /// `AUTH PLAIN` with an initial response (RFC 4616); returns the reply.
    pub fn auth_plain(&mut self, user: &str, password: &str) -> Reply {
        use base64::Engine as _;
        let response =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        self.command(&format!("AUTH PLAIN {response}"))
    }

    /// One transaction after EHLO: MAIL, RCPT for each of `to`, DATA, then `message`
    /// (CRLF lines; dot-stuffed here) and the final dot. Panics unless every step but the
    /// last is accepted; returns the reply to the final dot.
    pub fn send_message(&mut self, from: &str, to: &[&str], message: &[u8]) -> Reply {
        self.expect(&format!("MAIL FROM:<{from}>"), 250);
        for rcpt in to {
            self.expect(&format!("RCPT TO:<{rcpt}>"), 250);
        }
        self.expect("DATA", 354);
        let mut data = Vec::with_capacity(message.len() + 16);
        for line in message.split_inclusive(|&b| b == b'\n') {
            if line.starts_with(b".") {
                data.push(b'.');
            }
            data.extend_from_slice(line);
        }
        if !data.ends_with(b"\r\n") {
            data.extend_from_slice(b"\r\n");
        }
        data.extend_from_slice(b".\r\n");
        if let Err(e) = self.send_raw(&data) {
            panic!("sending the message: {e}\n{}", self.transcript());
        }
        self.reply("the reply to the final dot")
    }

    /// One transaction after EHLO with CHUNKING (RFC 3030): MAIL, RCPT for each of `to`,
    /// then `chunks` as `BDAT <size>` commands with their octets as they are (no stuffing),
    /// the last one with `LAST`, all pipelined in one write. Panics unless MAIL and every
    /// RCPT are accepted; returns the replies to the chunks, in order.
    pub fn send_chunks(&mut self, from: &str, to: &[&str], chunks: &[&[u8]]) -> Vec<Reply> {
        self.expect(&format!("MAIL FROM:<{from}>"), 250);
        for rcpt in to {
            self.expect(&format!("RCPT TO:<{rcpt}>"), 250);
        }
        let mut wire = Vec::new();
        for (i, chunk) in chunks.iter().enumerate() {
            let last = if i + 1 == chunks.len() { " LAST" } else { "" };
            wire.extend_from_slice(format!("BDAT {}{last}\r\n", chunk.len()).as_bytes());
            wire.extend_from_slice(chunk);
        }
        if let Err(e) = self.send_raw(&wire) {
            panic!("sending the chunks: {e}\n{}", self.transcript());
        }
        (0..chunks.len())
            .map(|i| self.reply(&format!("the reply to chunk {i}")))
            .collect()
    }

    /// True when the server has closed the connection: the next read finds EOF. False when
    /// it sends more; panics when it sends nothing within 10 s.
    pub fn is_closed(&mut self) -> bool {
        match self.read_line() {
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => true,
            Ok(line) => {
                self.transcript.push(format!("S: {line}"));
                false
            }
            Err(e) => panic!(
                "waiting for the server to close: {e}\n{}",
                self.transcript()
            ),
        }
    }

    /// The dialogue so far, one line each.
    pub fn transcript(&self) -> String {
        self.transcript.join("\n")
    }
}
