//! The connection loop: reads lines, feeds the [`Session`], writes replies, and carries out
//! its actions (STARTTLS, DATA, password checks), with the timeouts and limits of RFC 5321
//! §4.5.3.2 applied to every read.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mta_core::envelope::{Envelope, ListenerKind, MessageId, Origin, Recipient};
use mta_core::reply::Reply;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tracing::{debug, info, warn};

use super::Shared;
use super::data::{DataEnd, read_data};
use super::line::{Line, read_line};
use super::message::{Trace, assemble};
use super::session::{Action, Context, Session};
use crate::tls;

/// How one phase (plaintext or TLS) of a connection ended.
enum PhaseEnd<S> {
    /// The connection is finished.
    Closed,
    /// The client asked for STARTTLS and got 220: hand over the raw stream.
    StartTls(S),
}

/// Serves one accepted connection to its end.
pub async fn serve(shared: Arc<Shared>, tcp: TcpStream, peer: SocketAddr, listener: ListenerKind) {
    let _ = tcp.set_nodelay(true);
    let ctx = Context {
        config: shared.config.clone(),
        users: shared.users.clone(),
        listener,
        peer,
        tls: None,
        starttls_available: shared.tls.is_some() && listener != ListenerKind::Submissions,
    };
    let limit = shared.config.limits.command_timeout;
    let deadline = Instant::now() + super::limits::MAX_SESSION_TIME;
    if listener == ListenerKind::Submissions {
        // RFC 8314 §3: TLS from the first byte, then the greeting.
        let Some(acceptor) = shared.tls.clone() else {
            warn!("implicit TLS listener without a certificate; closing");
            return;
        };
        let stream = match timeout(limit, acceptor.accept(tcp)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return info!(error = %e, "TLS handshake failed"),
            Err(_) => return info!("TLS handshake timed out"),
        };
        let ctx = Context {
            tls: Some(tls::describe(stream.get_ref().1)),
            starttls_available: false,
            ..ctx
        };
        info!(tls = ctx.tls.as_deref().unwrap_or(""), "TLS established");
        let _ = phase(
            &shared,
            BufReader::new(stream),
            Session::new(ctx),
            true,
            deadline,
        )
        .await;
        return;
    }
    let session = Session::new(ctx.clone());
    let Ok(PhaseEnd::StartTls(reader)) =
        phase(&shared, BufReader::new(tcp), session, true, deadline).await
    else {
        return;
    };
    // RFC 3207 §4.2 and CVE-2011-0411: anything the client pipelined after STARTTLS is
    // thrown away with the plaintext buffer, never read as a command after the handshake.
    if !reader.buffer().is_empty() {
        warn!(
            bytes = reader.buffer().len(),
            "discarding data pipelined after STARTTLS"
        );
    }
    let acceptor = shared
        .tls
        .clone()
        .expect("STARTTLS is offered only with a certificate");
    let stream = match timeout(limit, acceptor.accept(reader.into_inner())).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return info!(error = %e, "TLS handshake failed"),
        Err(_) => return info!("TLS handshake timed out"),
    };
    let ctx = Context {
        tls: Some(tls::describe(stream.get_ref().1)),
        starttls_available: false,
        ..ctx
    };
    info!(tls = ctx.tls.as_deref().unwrap_or(""), "TLS established");
    let _ = phase(
        &shared,
        BufReader::new(stream),
        Session::new(ctx),
        false,
        deadline,
    )
    .await;
}

/// Serves one plaintext session over any stream (no TLS: STARTTLS is offered only when
/// `shared.tls` is set, and then ends the session here). For tests and fuzzing over
/// in-memory streams; the server itself uses [`serve`].
pub async fn serve_stream<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    io: S,
    peer: SocketAddr,
    listener: ListenerKind,
) {
    let ctx = Context {
        config: shared.config.clone(),
        users: shared.users.clone(),
        listener,
        peer,
        tls: None,
        starttls_available: false,
    };
    let deadline = Instant::now() + super::limits::MAX_SESSION_TIME;
    let _ = phase(shared, BufReader::new(io), Session::new(ctx), true, deadline).await;
}

/// Runs one session over `io` until it closes or asks for STARTTLS.
async fn phase<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    mut io: BufReader<S>,
    mut session: Session,
    greet: bool,
    deadline: Instant,
) -> std::io::Result<PhaseEnd<BufReader<S>>> {
    let config = shared.config.clone();
    let mut shutdown = shared.shutdown.clone();
    let mut out = Vec::new();
    if greet {
        out.extend_from_slice(session.greeting().to_wire().as_bytes());
    }
    loop {
        // PIPELINING (RFC 2920): replies to a batch of commands go out together, once no
        // more input is waiting.
        if io.buffer().is_empty() && !out.is_empty() {
            io.write_all(&out).await?;
            out.clear();
        }
        let line = tokio::select! {
            biased;
            _ = shutdown.changed() => {
                return close(io, out, Reply::SHUTTING_DOWN).await;
            }
            r = timeout(wait(config.limits.command_timeout, deadline), read_line(&mut io, session.line_limit())) => match r {
                Err(_) if Instant::now() >= deadline => return close(io, out, Reply::SESSION_TOO_LONG).await,
                Err(_) => return close(io, out, Reply::TIMEOUT).await,
                Ok(line) => line?,
            },
        };
        let action = match line {
            Line::Complete(l) => {
                debug!(line = %redact(&l, session.expects_sasl()), "C:");
                session.handle(&l)
            }
            Line::TooLong => session.count_errors(Action::Reply(Reply::LINE_TOO_LONG)),
            Line::BareLineEnding => Action::Close(Reply::BARE_LINE_ENDING),
            Line::Eof => return Ok(PhaseEnd::Closed),
        };
        let action = match action {
            Action::CheckPassword { login, password } => {
                let ip = session.context().peer.ip();
                if shared.guards.auth.locked(ip, &login, Instant::now()) {
                    warn!(login = %escape(&login), "AUTH refused: too many recent failures from this address or for this account");
                    return close(io, out, Reply::AUTH_LOCKED).await;
                }
                let users = shared.users.current();
                let who = login.clone();
                let result = tokio::task::spawn_blocking(move || users.verify(&who, &password))
                    .await
                    .unwrap_or(mta_core::auth::Verified::Rejected);
                match &result {
                    mta_core::auth::Verified::Rejected => {
                        shared.guards.auth.failed(ip, &login, Instant::now());
                        warn!(login = %escape(&login), "authentication failed");
                    }
                    mta_core::auth::Verified::User(user) => info!(%user, "authenticated"),
                }
                session.auth_checked(result)
            }
            other => other,
        };
        match action {
            Action::Reply(r) => {
                debug!(reply = %r, "S:");
                out.extend_from_slice(r.to_wire().as_bytes());
            }
            Action::Close(r) => return close(io, out, r).await,
            Action::StartTls(r) => {
                out.extend_from_slice(r.to_wire().as_bytes());
                io.write_all(&out).await?;
                return Ok(PhaseEnd::StartTls(io));
            }
            Action::StartData(r) => {
                if !io.buffer().is_empty() {
                    // RFC 2920 §3.1: DATA ends a pipelined group; text sent before our 354
                    // is not a message.
                    session.take_transaction();
                    return close(
                        io,
                        out,
                        Reply::new(554, "5.5.0", "Data sent before 354; improper pipelining"),
                    )
                    .await;
                }
                out.extend_from_slice(r.to_wire().as_bytes());
                io.write_all(&out).await?;
                out.clear();
                let reply = match receive(shared, &mut io, &mut session, deadline).await? {
                    Some(reply) => reply,
                    None => return Ok(PhaseEnd::Closed),
                };
                // After malformed data or a timeout the dialogue is out of step: close.
                let close_after = reply == Reply::BARE_LINE_ENDING_DATA || reply.code == 421;
                let reply = session.count_errors(Action::Reply(reply));
                match reply {
                    Action::Reply(r) if !close_after => {
                        out.extend_from_slice(r.to_wire().as_bytes())
                    }
                    Action::Reply(r) | Action::Close(r) => return close(io, out, r).await,
                    _ => unreachable!("count_errors returns Reply or Close"),
                }
            }
            Action::CheckPassword { .. } => unreachable!("handled above"),
        }
    }
}

/// Sends what is pending plus a last reply, then closes.
async fn close<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: BufReader<S>,
    mut out: Vec<u8>,
    last: Reply,
) -> std::io::Result<PhaseEnd<BufReader<S>>> {
    debug!(reply = %last, "S: (closing)");
    out.extend_from_slice(last.to_wire().as_bytes());
    let _ = timeout(std::time::Duration::from_secs(5), async {
        io.write_all(&out).await?;
        io.shutdown().await
    })
    .await;
    Ok(PhaseEnd::Closed)
}

/// Reads the message after 354 and queues it. `None` when the connection was lost.
async fn receive<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    io: &mut BufReader<S>,
    session: &mut Session,
    deadline: Instant,
) -> std::io::Result<Option<Reply>> {
    let config = &shared.config;
    let end = match timeout(
        wait(config.limits.data_timeout, deadline),
        read_data(io, config.limits.max_message_size),
    )
    .await
    {
        Ok(end) => end?,
        Err(_) => {
            session.take_transaction();
            if Instant::now() >= deadline {
                return Ok(Some(Reply::SESSION_TOO_LONG));
            }
            return Ok(Some(Reply::TIMEOUT));
        }
    };
    let tx = session
        .take_transaction()
        .expect("DATA is accepted only inside a transaction");
    let data = match end {
        DataEnd::Message(data) => data,
        DataEnd::TooBig => return Ok(Some(Reply::MESSAGE_TOO_BIG)),
        DataEnd::LineTooLong => return Ok(Some(Reply::DATA_LINE_TOO_LONG)),
        DataEnd::Malformed => {
            warn!("bare CR/LF or NUL in message data; refusing and closing");
            return Ok(Some(Reply::BARE_LINE_ENDING_DATA));
        }
        DataEnd::Eof => return Ok(None),
    };
    if let Err(reply) = super::inspect::check(&data, config, session.user()) {
        warn!(reply = %reply, "message refused after DATA");
        return Ok(Some(reply));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let id = MessageId::generate(now.as_millis() as u64);
    let ctx = session.context();
    let trace = Trace {
        ctx,
        helo: session.helo().unwrap_or("unknown"),
        esmtp: session.esmtp(),
        user: session.user(),
        id: &id,
        now: now.as_secs(),
    };
    let body = assemble(&trace, &tx, &data);
    let envelope = Envelope {
        id: id.clone(),
        sender: tx.from.clone(),
        recipients: tx
            .recipients
            .iter()
            .cloned()
            .map(Recipient::pending)
            .collect(),
        received_at: now.as_secs(),
        size: body.len() as u64,
        origin: Origin {
            listener: ctx.listener,
            peer: ctx.peer.to_string(),
            helo: trace.helo.to_string(),
            auth_user: session.user().map(|u| u.to_string()),
            tls: ctx.tls.clone(),
        },
        delay_warned: false,
    };
    let rcpts: Vec<String> = tx.recipients.iter().map(|r| r.to_string()).collect();
    let size = body.len();
    match shared.queue.enqueue(envelope, body).await {
        Ok(()) => {
            info!(msg = %id, from = %tx.from, rcpts = %rcpts.join(","), size, "received");
            Ok(Some(Reply::new(250, "2.0.0", format!("OK queued as {id}"))))
        }
        Err(e) => {
            warn!(error = %e, "message not accepted: queue write failed");
            Ok(Some(e.reply()))
        }
    }
}

/// How long the next read may wait: `limit`, but never past the session's `deadline`.
fn wait(limit: Duration, deadline: Instant) -> Duration {
    limit.min(deadline.saturating_duration_since(Instant::now()))
}

/// Client text for a log field: control characters escaped, at most 256 characters.
fn escape(text: &str) -> String {
    text.chars()
        .take(256)
        .flat_map(char::escape_debug)
        .collect()
}

/// A command line for the debug transcript: AUTH data and SASL responses are hidden, and
/// control characters escaped.
fn redact(line: &[u8], sasl: bool) -> String {
    if sasl {
        return "<redacted>".into();
    }
    let text = String::from_utf8_lossy(line);
    if text.len() >= 5 && text[..5].eq_ignore_ascii_case("AUTH ") {
        let mech: Vec<&str> = text.split(' ').take(2).collect();
        return format!("{} <redacted>", mech.join(" "));
    }
    text.escape_debug().to_string()
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn transcript_never_shows_credentials() {
        assert_eq!(
            redact(b"AUTH PLAIN AGFAYgBw", false),
            "AUTH PLAIN <redacted>"
        );
        assert_eq!(redact(b"auth login", false), "auth login <redacted>");
        assert_eq!(redact(b"cGFzc3dvcmQ=", true), "<redacted>");
        assert_eq!(
            redact(b"MAIL FROM:<a@b>\x1b", false),
            "MAIL FROM:<a@b>\\u{1b}"
        );
    }
}
