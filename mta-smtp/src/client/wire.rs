//! The socket under the client: plain TCP or TLS, our own read buffer (so that what the
//! server sent ahead is visible and can be thrown away at STARTTLS, RFC 3207 §4.2), reply
//! reads bounded by the §4.5.3.1.5 line limit and by a per-phase timeout (RFC 5321
//! §4.5.3.2), and writes bounded by the same timeouts.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::client::TlsStream;

use super::reply::{ReplyParser, ServerReply, take_line};
use super::transaction::Expect;
use super::{ClientError, Phase};

/// How much one read asks the socket for.
const READ_CHUNK: usize = 4096;

/// The connection's byte stream.
pub(super) enum Stream {
    /// Before STARTTLS, or with no TLS at all.
    Plain(TcpStream),
    /// After the handshake.
    Tls(Box<TlsStream<TcpStream>>),
    /// A Unix socket (LMTP to a local server, RFC 2033); never upgraded to TLS.
    Unix(UnixStream),
    /// Only while the TCP stream is being handed to the TLS handshake; an I/O error if used.
    Detached,
}

fn detached() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "stream is being upgraded to TLS",
    )
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Detached => Poll::Ready(Err(detached())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Detached => Poll::Ready(Err(detached())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
            Stream::Detached => Poll::Ready(Err(detached())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Detached => Poll::Ready(Ok(())),
        }
    }
}

/// Runs `fut` under `limit`, a timeout becoming [`ClientError::Timeout`] for `phase`.
pub(super) async fn timed<T>(
    phase: Phase,
    limit: Duration,
    fut: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(result) => result,
        Err(_) => Err(ClientError::Timeout { phase }),
    }
}

/// How much message data one write carries (each write has the data-block timeout).
const BODY_CHUNK: usize = 64 * 1024;

/// A stream with a read buffer that only we look into.
pub(super) struct Wire {
    stream: Stream,
    buf: Vec<u8>,
}

impl Wire {
    /// Reads a reply and checks it is what `phase` needs.
    ///
    /// # Errors
    /// The read failed, or the reply is not `want`.
    pub(super) async fn reply(
        &mut self,
        phase: Phase,
        limit: std::time::Duration,
        want: Expect,
    ) -> Result<ServerReply, ClientError> {
        let reply = self.read_reply(phase, limit).await?;
        expect(phase, want, &reply)?;
        Ok(reply)
    }

    /// A reply to nothing is a protocol violation (RFC 5321 §4.2: one reply per command).
    ///
    /// # Errors
    /// The server sent octets that answer no command of ours.
    pub(super) fn ensure_idle(&self, phase: Phase) -> Result<(), ClientError> {
        match self.unread() {
            0 => Ok(()),
            n => Err(protocol(
                phase,
                format!("the server sent {n} octets that answer no command of ours"),
            )),
        }
    }

    pub(super) fn new(stream: Stream) -> Wire {
        Wire {
            stream,
            buf: Vec::with_capacity(READ_CHUNK),
        }
    }

    /// Reads one whole reply within `limit`.
    pub(super) async fn read_reply(
        &mut self,
        phase: Phase,
        limit: Duration,
    ) -> Result<ServerReply, ClientError> {
        timed(phase, limit, self.read_reply_untimed(phase)).await
    }

    async fn read_reply_untimed(&mut self, phase: Phase) -> Result<ServerReply, ClientError> {
        let mut parser = ReplyParser::new();
        loop {
            let line = self.read_line(phase).await?;
            let pushed = parser.push(&line).map_err(|e| ClientError::Protocol {
                phase,
                reason: e.to_string(),
            })?;
            if let Some(reply) = pushed {
                tracing::debug!(%phase, "S: {reply}");
                return Ok(reply);
            }
        }
    }

    async fn read_line(&mut self, phase: Phase) -> Result<Vec<u8>, ClientError> {
        loop {
            // An over-long line stops us here, before another byte is read.
            let line = take_line(&mut self.buf).map_err(|e| ClientError::Protocol {
                phase,
                reason: e.to_string(),
            })?;
            if let Some(line) = line {
                return Ok(line);
            }
            let mut chunk = [0u8; READ_CHUNK];
            let n = self
                .stream
                .read(&mut chunk)
                .await
                .map_err(|source| io_error(phase, source))?;
            if n == 0 {
                return Err(ClientError::Closed { phase });
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Writes `bytes` and flushes them (TLS holds records until flushed) within `limit`.
    pub(super) async fn write(
        &mut self,
        phase: Phase,
        limit: Duration,
        bytes: &[u8],
    ) -> Result<(), ClientError> {
        let stream = &mut self.stream;
        timed(phase, limit, async move {
            stream
                .write_all(bytes)
                .await
                .map_err(|source| io_error(phase, source))?;
            stream
                .flush()
                .await
                .map_err(|source| io_error(phase, source))
        })
        .await
    }

    /// Octets the server sent that no reply has consumed yet.
    pub(super) fn unread(&self) -> usize {
        self.buf.len()
    }

    /// Throws away whatever the server sent ahead; returns how many octets that was.
    pub(super) fn discard_unread(&mut self) -> usize {
        let n = self.buf.len();
        self.buf.clear();
        n
    }

    /// Hands out the TCP stream for a TLS handshake; `None` if it is already TLS.
    pub(super) fn take_plain(&mut self) -> Option<TcpStream> {
        match std::mem::replace(&mut self.stream, Stream::Detached) {
            Stream::Plain(tcp) => Some(tcp),
            other => {
                self.stream = other;
                None
            }
        }
    }

    /// Puts the upgraded stream in place. The buffer was emptied before the handshake.
    pub(super) fn set_tls(&mut self, tls: TlsStream<TcpStream>) {
        self.buf.clear();
        self.stream = Stream::Tls(Box::new(tls));
    }

    /// Sends one command line and reads its reply. Our lines come from validated addresses
    /// and config, but a CR or LF inside one would be command injection: it is refused
    /// rather than trusted. The caller logs the line (a credential is logged otherwise).
    pub(super) async fn command(
        &mut self,
        phase: Phase,
        limit: Duration,
        line: &str,
    ) -> Result<ServerReply, ClientError> {
        if line.trim_end_matches("\r\n").contains(['\r', '\n']) {
            return Err(ClientError::Protocol {
                phase,
                reason: "refusing to send a command with an embedded CR or LF".into(),
            });
        }
        self.ensure_idle(phase)?;
        self.write(phase, limit, line.as_bytes()).await?;
        self.read_reply(phase, limit).await
    }

    /// The message data, `prefix` (header fields of ours, such as DKIM signatures: empty or
    /// whole lines) then `body`, dot-stuffed as one stream in writes of about
    /// [`BODY_CHUNK`] (each within `limit`), and the final dot; its reply is the caller's
    /// (one for SMTP, one per recipient for LMTP). The two are never joined in memory: the
    /// body is the queue's own copy, however large. Nothing may come between 354 and our
    /// data.
    pub(super) async fn body(
        &mut self,
        limit: Duration,
        prefix: &[u8],
        body: &[u8],
    ) -> Result<(), ClientError> {
        self.ensure_idle(Phase::Body)?;
        super::dot::check_prefix(prefix);
        let mut stuffer = super::dot::DotStuffer::new();
        let mut out = Vec::with_capacity(BODY_CHUNK + BODY_CHUNK / 16);
        for chunk in prefix.chunks(BODY_CHUNK).chain(body.chunks(BODY_CHUNK)) {
            stuffer.push(chunk, &mut out);
            if out.len() >= BODY_CHUNK {
                self.write(Phase::Body, limit, &out).await?;
                out.clear();
            }
        }
        stuffer.finish(&mut out);
        self.write(Phase::Body, limit, &out).await?;
        tracing::debug!(octets = prefix.len() + body.len(), "C: <message data> .");
        Ok(())
    }

    /// QUIT, its reply, and close, each within `limit`. Whatever is left unread no longer
    /// matters; failures only get logged: the work is done.
    pub(super) async fn quit(&mut self, limit: Duration) {
        self.discard_unread();
        tracing::debug!("C: QUIT");
        let said = match self.write(Phase::Quit, limit, b"QUIT\r\n").await {
            Ok(()) => self.read_reply(Phase::Quit, limit).await.map(drop),
            Err(e) => Err(e),
        };
        if let Err(e) = said {
            tracing::debug!(error = %e, "QUIT went unanswered");
        }
        self.shutdown(limit).await;
    }

    /// Closes our side (a TLS close_notify first) within `limit`; errors do not matter.
    pub(super) async fn shutdown(&mut self, limit: Duration) {
        if let Ok(Err(e)) = tokio::time::timeout(limit, self.stream.shutdown()).await {
            tracing::debug!(error = %e, "shutdown after QUIT failed");
        }
    }
}

/// A closed connection reads better as [`ClientError::Closed`] than as an OS error.
fn io_error(phase: Phase, source: io::Error) -> ClientError {
    match source.kind() {
        io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::UnexpectedEof => ClientError::Closed { phase },
        _ => ClientError::Io { phase, source },
    }
}

/// Ok when `reply` is one that `want` allows in `phase`; else a protocol error naming it.
pub(super) fn expect(phase: Phase, want: Expect, reply: &ServerReply) -> Result<(), ClientError> {
    if want.allows(reply) {
        Ok(())
    } else {
        Err(protocol(phase, format!("unexpected reply {reply}")))
    }
}

/// The error for a server that broke the protocol in `phase`.
pub(super) fn protocol(phase: Phase, reason: String) -> ClientError {
    ClientError::Protocol { phase, reason }
}
