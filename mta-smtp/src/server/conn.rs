//! The connection loop: reads lines, feeds the [`Session`], writes replies, and carries out
//! its actions (STARTTLS, DATA, password checks), with the timeouts and limits of RFC 5321
//! §4.5.3.2 applied to every read and write.
//!
//! Time limits, all from `[limits]`: `command_timeout` for each command line and for each
//! read during DATA (so a client that stalls mid-message is dropped), `data_timeout` for a
//! whole message, and `session_timeout` for the whole connection (so a client that trickles
//! bytes cannot hold a session for ever); each wait is also cut short at the session's end.
//! Password checks are admitted, delayed and bounded by [`super::logins`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mta_core::auth::Verified;
use mta_core::config::{AuthBackend, Limits, LocalDelivery};
use mta_core::envelope::{Envelope, ListenerKind, MessageId, Origin, Recipient, Vouched};
use mta_core::metrics::METRICS;
use mta_core::reply::Reply;
use mta_core::seams::{MessageView, SessionFacts};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, timeout};
use tracing::{debug, info, warn};

use super::bdat::Chunks;
use super::budget::Reservation;
use super::data::{DataEnd, read_data};
use super::idle::{IdleLimit, is_stalled};
use super::line::{Line, read_line};
use super::log_text::{escape, transcript};
use super::logins::{self, Admit, LoginPolicy, Outcome};
use super::message::{Trace, assemble};
use super::pipeline::remove_fields;
use super::session::{Action, Context, Session, Transaction};
use super::{Shared, stopping};
use crate::client::RcptResult;
use crate::dovecot_auth;
use crate::tls;

/// Read buffer per connection. Command lines are at most 512 octets and text lines 1000;
/// 2 KiB keeps an idle session small (8 KiB was the default) at the cost of more reads for
/// a large message.
const READ_BUFFER: usize = 2048;

/// How one phase (plaintext or TLS) of a connection ended.
enum PhaseEnd<S> {
    /// The connection is finished.
    Closed,
    /// The client asked for STARTTLS and got 220: hand over the raw stream.
    StartTls(S),
}

/// How the data phase ended.
enum AfterData {
    /// Answer and read the next command.
    Answer(Reply),
    /// Answer and close: the data could not be trusted to end where the client thinks, or
    /// time ran out.
    Close(Reply),
    /// The client went away.
    Lost,
}

/// The outcome of a password check.
enum Checked {
    /// The user database's answer.
    Verified(Verified),
    /// Not asked: the client address has failed too often lately (blocked).
    Locked,
    /// Not asked now: too many checks waiting, or the client's attempts in progress reach
    /// its limit. Nothing was counted.
    Busy,
}

/// Serves one accepted TCP connection to its end.
pub async fn serve(shared: Arc<Shared>, tcp: TcpStream, peer: SocketAddr, listener: ListenerKind) {
    let _ = tcp.set_nodelay(true);
    serve_stream(&shared, tcp, peer, listener).await;
}

/// Serves one connection over any stream to its end: the greeting (after the TLS handshake
/// on `submissions`), the dialogue, STARTTLS when `shared.tls` has a certificate. The server
/// calls it through [`serve`]; tests and fuzzing call it over in-memory streams.
pub async fn serve_stream<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    stream: S,
    peer: SocketAddr,
    listener: ListenerKind,
) {
    let deadline = Instant::now() + shared.config.limits.session_timeout;
    let ctx = Context {
        config: shared.config.clone(),
        users: shared.users.clone(),
        listener,
        peer,
        tls: None,
        starttls_available: shared.tls.is_some() && listener != ListenerKind::Submissions,
        sending: shared.sending.clone(),
    };
    if listener == ListenerKind::Submissions {
        // RFC 8314 §3: TLS from the first byte, then the greeting.
        let Some(acceptor) = shared.tls.clone() else {
            warn!("implicit TLS listener without a certificate; closing");
            return;
        };
        return Box::pin(tls_phase(shared, acceptor, stream, ctx, true, deadline)).await;
    }
    let session = Session::new(ctx.clone());
    let Ok(PhaseEnd::StartTls(reader)) = phase(
        shared,
        BufReader::with_capacity(READ_BUFFER, stream),
        session,
        true,
        deadline,
    )
    .await
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
    let stream = reader.into_inner();
    Box::pin(tls_phase(shared, acceptor, stream, ctx, false, deadline)).await;
}

/// The TLS handshake on `stream` (within `command_timeout`), then the session over TLS
/// (with the greeting first when `greet`: implicit TLS) to its end.
async fn tls_phase<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    acceptor: tokio_rustls::TlsAcceptor,
    stream: S,
    ctx: Context,
    greet: bool,
    deadline: Instant,
) {
    let handshake = wait(shared.config.limits.command_timeout, deadline);
    let stream = match Box::pin(timeout(handshake, acceptor.accept(stream))).await {
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
    let session = Session::new(ctx);
    let _ = Box::pin(phase(
        shared,
        BufReader::with_capacity(READ_BUFFER, stream),
        session,
        greet,
        deadline,
    ))
    .await;
}

/// Runs one session over `io` until it closes or asks for STARTTLS.
async fn phase<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    mut io: BufReader<S>,
    mut session: Session,
    greet: bool,
    deadline: Instant,
) -> std::io::Result<PhaseEnd<BufReader<S>>> {
    let limits = &shared.config.limits;
    let mut shutdown = shared.shutdown.clone();
    let mut out = Vec::new();
    if greet {
        out.extend_from_slice(session.greeting().to_wire().as_bytes());
    }
    // The message of a BDAT transaction between its chunks (RFC 3030).
    let mut chunks: Option<Chunks<'_>> = None;
    loop {
        // PIPELINING (RFC 2920): replies to a batch of commands go out together, once no
        // more input is waiting.
        if io.buffer().is_empty() && !out.is_empty() {
            send(&mut io, &mut out, limits.command_timeout, deadline).await?;
        }
        let line = match next_line(&mut io, &session, &mut shutdown, limits, deadline).await? {
            Ok(line) => line,
            Err(last) => return close(io, out, last).await,
        };
        let action = match line {
            Line::Complete(l) => {
                debug!(line = %transcript(&l, session.expects_sasl()), "C:");
                session.handle(&l)
            }
            Line::TooLong => session.count_errors(Action::Reply(Reply::LINE_TOO_LONG)),
            Line::BareLineEnding => Action::Close(Reply::BARE_LINE_ENDING),
            Line::Nul => Action::Close(Reply::NUL_IN_COMMAND),
            Line::Eof => return Ok(PhaseEnd::Closed),
        };
        let action = carry_out(shared, &mut session, action).await;
        // CHUNKING (RFC 3030): chunks are read here; DATA after one is refused.
        let bdat = bdat_io::carry_out(shared, &mut io, &mut session, &mut chunks, action, deadline);
        let Some(action) = Box::pin(bdat).await? else {
            return Ok(PhaseEnd::Closed);
        };
        match action {
            Action::Reply(r) => {
                debug!(reply = %r, "S:");
                out.extend_from_slice(r.to_wire().as_bytes());
            }
            Action::Close(r) => return close(io, out, r).await,
            Action::StartTls(r) => {
                out.extend_from_slice(r.to_wire().as_bytes());
                send(&mut io, &mut out, limits.command_timeout, deadline).await?;
                return Ok(PhaseEnd::StartTls(io));
            }
            Action::StartData(r) => {
                if !io.buffer().is_empty() {
                    // RFC 2920 §3.1: DATA ends a pipelined group; text sent before our 354
                    // is not a message.
                    session.take_transaction();
                    return close(io, out, Reply::DATA_BEFORE_354).await;
                }
                if shared.guards.memory.is_spent(limits.message_memory) {
                    // No room for another message in memory now: a temporary refusal
                    // before 354, so the client tries again later without sending it.
                    session.take_transaction();
                    warn!("DATA refused: the memory budget for messages is spent");
                    out.extend_from_slice(Reply::NO_MESSAGE_MEMORY.to_wire().as_bytes());
                    continue;
                }
                out.extend_from_slice(r.to_wire().as_bytes());
                send(&mut io, &mut out, limits.command_timeout, deadline).await?;
                let after = Box::pin(receive(shared, &mut io, &mut session, deadline)).await?;
                match after_message(&mut session, after) {
                    Some(Action::Reply(r)) => out.extend_from_slice(r.to_wire().as_bytes()),
                    Some(Action::Close(r)) => return close(io, out, r).await,
                    None => return Ok(PhaseEnd::Closed),
                    _ => unreachable!("after_message returns Reply or Close"),
                }
            }
            checks => unreachable!("{checks:?} is carried out above"),
        }
    }
}

/// Records a message's outcome in the metrics and turns it into what to do next (a reply,
/// counted as an error when it is one, or a close); `None` when the client went away.
fn after_message(session: &mut Session, after: AfterData) -> Option<Action> {
    let listener = session.context().listener.name();
    match &after {
        AfterData::Answer(reply) | AfterData::Close(reply) if reply.code == 250 => {
            METRICS.accepted(listener);
        }
        AfterData::Answer(reply) | AfterData::Close(reply) => {
            METRICS.rejected(listener, reply.code, reply.enhanced.unwrap_or(""));
        }
        AfterData::Lost => {}
    }
    match after {
        AfterData::Answer(reply) => Some(session.count_errors(Action::Reply(reply))),
        AfterData::Close(reply) => Some(Action::Close(reply)),
        AfterData::Lost => None,
    }
}

/// Carries out the checks the session asked for (a password, recipients with the LMTP
/// server, room in the queue) and gives it the answers; any other action as it is.
async fn carry_out(shared: &Shared, session: &mut Session, action: Action) -> Action {
    match action {
        Action::CheckPassword { login, password } => {
            let (ip, listener) = (session.context().peer.ip(), session.context().listener);
            match Box::pin(check_password(shared, ip, listener, login, password)).await {
                Checked::Verified(result) => session.auth_checked(result),
                Checked::Locked => Action::Close(Reply::AUTH_LOCKED),
                Checked::Busy => session.auth_unavailable(Reply::AUTH_BUSY),
            }
        }
        Action::CheckRecipients { from, rcpts } => {
            let checked = Box::pin(check_recipients(shared, &from, &rcpts)).await;
            session.recipients_checked(checked)
        }
        Action::CheckDnsbl => {
            let standing = shared.dnsbl.check(session.context().peer.ip()).await;
            session.dnsbl_checked(standing)
        }
        Action::CheckRoom => {
            let room = shared.queue.room().await.map_err(|e| {
                warn!(error = %e, "MAIL refused: no room in the queue");
                e.reply()
            });
            session.room_checked(room)
        }
        other => other,
    }
}

/// The next command line, or the reply to close with: the server is stopping, the client
/// was too slow, or the session is over.
async fn next_line<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut BufReader<S>,
    session: &Session,
    shutdown: &mut watch::Receiver<bool>,
    limits: &Limits,
    deadline: Instant,
) -> std::io::Result<Result<Line, Reply>> {
    // Checked before each command, not only while waiting: a client that always has the
    // next command ready would otherwise never meet the limit.
    if Instant::now() >= deadline {
        warn!("session time limit reached");
        return Ok(Err(Reply::SESSION_TOO_LONG));
    }
    let read = timeout(
        wait(limits.command_timeout, deadline),
        read_line(io, session.line_limit()),
    );
    tokio::select! {
        biased;
        () = stopping(shutdown) => Ok(Err(Reply::SHUTTING_DOWN)),
        r = read => match r {
            Err(_) => Ok(Err(timed_out(deadline))),
            Ok(line) => line.map(Ok),
        },
    }
}

/// How long the next wait may last: `limit`, but never past the session's `deadline`.
fn wait(limit: Duration, deadline: Instant) -> Duration {
    limit.min(deadline.saturating_duration_since(Instant::now()))
}

/// The reply when a wait ran out: the session's end, or the wait's own limit.
fn timed_out(deadline: Instant) -> Reply {
    if Instant::now() >= deadline {
        warn!("session time limit reached");
        Reply::SESSION_TOO_LONG
    } else {
        info!("client too slow; closing");
        Reply::TIMEOUT
    }
}

/// Writes the pending replies. A client that does not read them (so our writes block) is
/// given as long as for a command, and never past the session's end.
async fn send<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut BufReader<S>,
    out: &mut Vec<u8>,
    limit: Duration,
    deadline: Instant,
) -> std::io::Result<()> {
    match timeout(wait(limit, deadline), io.write_all(out)).await {
        Ok(written) => written?,
        Err(_) => {
            info!("client does not read its replies; closing");
            return Err(std::io::ErrorKind::TimedOut.into());
        }
    }
    out.clear();
    Ok(())
}

/// Sends what is pending plus a last reply, then closes.
async fn close<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: BufReader<S>,
    mut out: Vec<u8>,
    last: Reply,
) -> std::io::Result<PhaseEnd<BufReader<S>>> {
    debug!(reply = %last, "S: (closing)");
    out.extend_from_slice(last.to_wire().as_bytes());
    let _ = timeout(Duration::from_secs(5), async {
        io.write_all(&out).await?;
        io.shutdown().await
    })
    .await;
    Ok(PhaseEnd::Closed)
}

/// Checks a password off the async threads, once [`logins`] admits the attempt: a blocked
/// client address is refused, an account with recent failures makes an untrusted client
/// wait first, and the argon2 work waits for its turn among a bounded number (or gets
/// `454`). Records and logs each outcome (never the password). The same argon2 work is done
/// for unknown users as for known ones (`UserDb::verify`). With `[auth] backend =
/// "dovecot"` Dovecot checks it instead, after the same admission; when it cannot be asked
/// the client gets `454` and nothing is counted.
async fn check_password(
    shared: &Shared,
    ip: IpAddr,
    listener: ListenerKind,
    login: String,
    password: String,
) -> Checked {
    let policy = LoginPolicy::from_limits(&shared.config.limits);
    let guards = &shared.guards;
    let ticket = match guards
        .logins
        .admit(ip, &login, policy, std::time::Instant::now())
    {
        Admit::Check { ticket, delay } => {
            if !delay.is_zero() {
                info!(%ip, login = %escape(&login), delay = ?delay, "AUTH delayed: recent failures for this account");
                tokio::time::sleep(delay).await;
            }
            ticket
        }
        Admit::Blocked { until } => {
            let left = until.saturating_duration_since(std::time::Instant::now());
            warn!(%ip, login = %escape(&login), blocked_for = ?Duration::from_secs(left.as_secs()), "AUTH refused: client address blocked after too many failures");
            return Checked::Locked;
        }
        Admit::Busy => {
            warn!(%ip, login = %escape(&login), "AUTH refused for now: attempts in progress reach this address's limit");
            return Checked::Busy;
        }
    };
    let result = match &shared.config.auth.backend {
        AuthBackend::File => match verify_file(shared, ip, &login, password).await {
            Some(result) => result,
            None => return Checked::Busy,
        },
        AuthBackend::Dovecot { socket } => {
            // Only after our own lockout admitted the attempt: a blocked client never
            // reaches Dovecot. `secured`: the session takes AUTH only over TLS.
            let client = dovecot_auth::Client { ip, secured: true };
            match dovecot_auth::verify(socket, &login, &password, client).await {
                Ok(result) => result,
                Err(e) => {
                    warn!(%ip, login = %escape(&login), error = %e, "AUTH refused for now: Dovecot could not check the password");
                    return Checked::Busy;
                }
            }
        }
    };
    let now = std::time::Instant::now();
    match &result {
        Verified::Rejected => {
            ticket.finish(Outcome::Failure, now);
            METRICS.auth_failure(listener.name());
            warn!(%ip, login = %escape(&login), "authentication failed");
        }
        Verified::User(user) => {
            ticket.finish(Outcome::Success, now);
            info!(user = %escape(&user.to_string()), "authenticated");
        }
    }
    Checked::Verified(result)
}

/// Checks `password` against the users file, when argon2 work gets its turn (`None`: too
/// many checks waiting).
async fn verify_file(
    shared: &Shared,
    ip: IpAddr,
    login: &str,
    password: String,
) -> Option<Verified> {
    let guards = &shared.guards;
    let Ok(turn) = guards.password_checks.turn(logins::MAX_WAIT).await else {
        warn!(%ip, login = %escape(login), "AUTH refused for now: too many password checks waiting");
        return None;
    };
    let users = shared.users.current();
    let who = login.to_string();
    // The turn goes with the work: a session that ends mid-check does not free the place
    // of argon2 work still running.
    Some(
        guards
            .password_checks
            .run(turn, move || {
                logins::with_scratch(|scratch| users.verify_with(&who, &password, scratch))
            })
            .await
            .unwrap_or(Verified::Rejected),
    )
}

/// Asks the LMTP server whether it takes `rcpts` (RFC 2033: LHLO, MAIL, RCPT, no DATA).
/// Refused only when it refuses every one of them for good; when it cannot be asked, or
/// answers `4xx`, the recipient is accepted and the queue tries later, as before.
async fn check_recipients(
    shared: &Shared,
    from: &mta_core::address::ReversePath,
    rcpts: &[mta_core::address::Address],
) -> Result<(), Reply> {
    let config = &shared.config;
    let LocalDelivery::Lmtp(at) = &config.local.delivery else {
        return Ok(());
    };
    let asked = crate::client::lmtp::probe(
        at,
        config.hostname.as_str(),
        config.outbound.connect_timeout,
        &crate::client::Timeouts::default(),
        from,
        rcpts,
    )
    .await;
    match asked {
        Ok(results)
            if results
                .iter()
                .all(|r| matches!(r, RcptResult::Permanent(_))) =>
        {
            let why: Vec<String> = results.iter().map(|r| r.reply().to_string()).collect();
            info!(
                rcpts = %escape(&rcpts.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(",")),
                lmtp = %escape(&why.join(" | ")),
                "RCPT refused: the LMTP server does not take it"
            );
            Err(Reply::MAILBOX_REFUSED)
        }
        Ok(_) => Ok(()),
        Err(e) => {
            warn!(lmtp = %at, error = %e, "RCPT check with the LMTP server failed; accepting");
            Ok(())
        }
    }
}

/// Reads the message after 354, runs the listener's pipeline on it and queues it.
async fn receive<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    io: &mut BufReader<S>,
    session: &mut Session,
    deadline: Instant,
) -> std::io::Result<AfterData> {
    let limits = &shared.config.limits;
    // The message's bytes count against the server's budget until this is dropped: once
    // the message is queued or refused.
    let mut held = shared.guards.memory.reserve(limits.message_memory);
    let (mut tx, data) = match read_message(shared, io, session, deadline, &mut held).await? {
        Ok(read) => read,
        Err(after) => return Ok(after),
    };
    Ok(accept(shared, session, &mut tx, data, &mut held).await)
}

/// Runs the listener's pipeline on a message read in full (after DATA or the last BDAT
/// chunk), adds our header fields and queues it: the reply to give, `250` only once the
/// queue has it on disk.
async fn accept(
    shared: &Shared,
    session: &Session,
    tx: &mut Transaction,
    mut data: Vec<u8>,
    held: &mut Reservation<'_>,
) -> AfterData {
    let ctx = session.context();
    let helo = session.helo().unwrap_or("unknown");
    let facts = SessionFacts {
        listener: ctx.listener,
        peer: ctx.peer,
        helo,
        user: session.user(),
    };
    let view = MessageView {
        from: &tx.from,
        recipients: &tx.recipients,
        data: &data,
    };
    let passed = match shared.pipelines.of(ctx.listener).run(&facts, &view).await {
        Ok(passed) => passed,
        Err(reply) => return AfterData::Answer(reply),
    };
    let Some(mut passed) = passed.unless_discarded(&view) else {
        return AfterData::Answer(Reply::DISCARDED);
    };
    if let Some(rewritten) = passed.rewritten.take() {
        // A filter's data replaces the client's; a larger one is counted like ours.
        held.take(rewritten.len().saturating_sub(data.len()) as u64);
        data = rewritten;
    }
    if ctx.listener == ListenerKind::Smtp && shared.dnsbl.configured() {
        super::dnsbl::mark_fields(&mut passed, session.dnsbl_mark());
    }
    let removed = remove_fields(&mut data, &passed.remove);
    if removed > 0 {
        info!(removed, "removed header fields the filters named");
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let id = MessageId::generate(now.as_millis() as u64);
    let trace = Trace {
        ctx,
        helo,
        esmtp: session.esmtp(),
        user: session.user(),
        id: &id,
        now: now.as_secs(),
    };
    let body = assemble(&trace, tx, &passed.add, data, held);
    let envelope = envelope(&trace, tx, passed.vouched, body.len());
    let rcpts: Vec<String> = tx.recipients.iter().map(|r| r.to_string()).collect();
    let size = body.len();
    match shared.queue.enqueue(envelope, body).await {
        Ok(()) => {
            if let Some(slot) = tx.sending.take() {
                slot.commit(&tx.recipients).await;
            }
            info!(
                msg = %id,
                from = %escape(&tx.from.to_string()),
                rcpts = %escape(&rcpts.join(",")),
                helo = %escape(helo),
                size,
                auth = %passed.summary,
                user = session.user().map(|u| escape(&u.to_string()).to_string()),
                "received"
            );
            AfterData::Answer(Reply::new(250, "2.0.0", format!("OK queued as {id}")))
        }
        Err(e) => {
            warn!(error = %e, "message not accepted: queue write failed");
            AfterData::Answer(e.reply())
        }
    }
}

/// Reads the message data after 354 into memory counted in `held`: the transaction and the
/// data, or how the data phase ended without a message.
async fn read_message<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    io: &mut BufReader<S>,
    session: &mut Session,
    deadline: Instant,
    held: &mut Reservation<'_>,
) -> std::io::Result<Result<(Transaction, Vec<u8>), AfterData>> {
    let limits = &shared.config.limits;
    // Each read waits at most command_timeout; the whole message data_timeout; all of it
    // ends with the session.
    let mut reader = IdleLimit::new(io, limits.command_timeout);
    let read = read_data(&mut reader, limits.max_message_size, held);
    // On SIGTERM a message being sent may finish within the grace period; one still
    // incomplete near its end gets 421 4.3.2 while we can still say it, not a bare close
    // when the process exits (the server waits `shutdown_grace` for sessions).
    let mut shutdown = shared.shutdown.clone();
    let grace_over = async {
        stopping(&mut shutdown).await;
        tokio::time::sleep(shared.config.shutdown_grace * 9 / 10).await;
    };
    let read = tokio::select! {
        r = timeout(wait(limits.data_timeout, deadline), read) => r,
        () = grace_over => {
            session.take_transaction();
            info!("stopping and the message is still incomplete; closing");
            return Ok(Err(AfterData::Close(Reply::SHUTTING_DOWN)));
        }
    };
    let end = match read {
        Ok(Ok(end)) => end,
        Ok(Err(e)) if is_stalled(&e) => {
            session.take_transaction();
            info!("client stalled during DATA; closing");
            return Ok(Err(AfterData::Close(Reply::TIMEOUT)));
        }
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            session.take_transaction();
            return Ok(Err(AfterData::Close(timed_out(deadline))));
        }
    };
    let tx = session
        .take_transaction()
        .expect("DATA is accepted only inside a transaction");
    Ok(match end {
        DataEnd::Message(data) => Ok((tx, data)),
        DataEnd::TooBig => Err(AfterData::Answer(Reply::MESSAGE_TOO_BIG)),
        DataEnd::LineTooLong => Err(AfterData::Answer(Reply::DATA_LINE_TOO_LONG)),
        DataEnd::NoMemory => {
            warn!(
                budget = limits.message_memory,
                "message refused: the memory budget for messages is spent"
            );
            Err(AfterData::Answer(Reply::NO_MESSAGE_MEMORY))
        }
        DataEnd::Malformed => {
            warn!("bare CR/LF or NUL in message data; refusing and closing");
            Err(AfterData::Close(Reply::BARE_LINE_ENDING_DATA))
        }
        DataEnd::Eof => Err(AfterData::Lost),
    })
}

/// The envelope of a message assembled as `trace` says, `size` octets long.
fn envelope(trace: &Trace<'_>, tx: &Transaction, vouched: Vouched, size: usize) -> Envelope {
    let ctx = trace.ctx;
    Envelope {
        id: trace.id.clone(),
        sender: tx.from.clone(),
        recipients: tx
            .recipients
            .iter()
            .map(|r| Recipient {
                dsn: tx.dsn_of(r),
                ..Recipient::pending(r.clone())
            })
            .collect(),
        received_at: trace.now,
        size: size as u64,
        origin: Origin {
            listener: ctx.listener,
            peer: ctx.peer.to_string(),
            helo: trace.helo.to_string(),
            auth_user: trace.user.map(|u| u.to_string()),
            tls: ctx.tls.clone(),
        },
        delay_warned: false,
        require_tls: tx.require_tls,
        vouched,
        dsn: tx.dsn.clone(),
    }
}

#[path = "conn_bdat.rs"]
mod bdat_io;

#[cfg(test)]
#[path = "conn_tests.rs"]
mod tests;
