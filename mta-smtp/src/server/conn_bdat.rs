//! The connection loop's part in CHUNKING (RFC 3030): each chunk is read under the same
//! time limits as the data after DATA (`command_timeout` per read, `data_timeout` for the
//! whole message from its first chunk, the session's end, the shutdown grace), answered `250` when it is not the last, and at
//! `LAST` the message goes through the same pipeline and queue as one sent with DATA: its
//! `250` comes only once the queue has it on disk.

use std::io;

use mta_core::reply::Reply;
use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio::time::{Instant, timeout};
use tracing::{info, warn};

use super::super::bdat::{Chunks, State, chunk_ok, read_chunk, skip_chunk};
use super::super::data::DataEnd;
use super::super::idle::{IdleLimit, is_stalled};
use super::super::session::{Action, Session};
use super::super::{Shared, stopping};
use super::{AfterData, accept, after_message, timed_out, wait};

/// Carries out what CHUNKING asks of the connection: a chunk is read (or skipped) and
/// answered; DATA after a chunk of the open transaction is refused and the transaction
/// reset (RFC 3030 §3). Any other action as it is; `None` when the client went away.
///
/// # Errors
/// I/O errors of the connection.
pub(super) async fn carry_out<'s, S: AsyncRead + AsyncWrite + Unpin>(
    shared: &'s Shared,
    io: &mut BufReader<S>,
    session: &mut Session,
    chunks: &mut Option<Chunks<'s>>,
    action: Action,
    deadline: Instant,
) -> io::Result<Option<Action>> {
    let next = match action {
        Action::Chunk { size, last } => {
            Box::pin(chunk(shared, io, session, chunks, (size, last), deadline)).await
        }
        Action::SkipChunk { size, reply } => Ok(Some(
            match skip(shared, io, session, size, reply, deadline).await? {
                Ok(action) => action,
                Err(reply) => Action::Close(reply),
            },
        )),
        Action::StartData(_) if chunks.is_some() => {
            session.take_transaction();
            *chunks = None;
            Ok(Some(
                session.count_errors(Action::Reply(Reply::DATA_AFTER_BDAT)),
            ))
        }
        other => Ok(Some(other)),
    };
    if !session.in_transaction() {
        // RSET, EHLO, a refusal or the last chunk ended the transaction: its chunks go, and
        // the memory they held is given back.
        *chunks = None;
    }
    next
}

/// Reads the chunk `BDAT size [LAST]` announced into `chunks` (started with the first
/// chunk of a transaction) and answers it. `None` when the client went away, mid-chunk
/// included: nothing is queued then.
///
/// # Errors
/// I/O errors of the connection.
async fn chunk<'s, S: AsyncRead + AsyncWrite + Unpin>(
    shared: &'s Shared,
    io: &mut BufReader<S>,
    session: &mut Session,
    chunks: &mut Option<Chunks<'s>>,
    (size, last): (u64, bool),
    deadline: Instant,
) -> io::Result<Option<Action>> {
    let limits = &shared.config.limits;
    let max = limits.max_message_size;
    let message = chunks
        .get_or_insert_with(|| Chunks::new(shared.guards.memory.reserve(limits.message_memory)));
    // As after DATA, the whole message has `data_timeout`: a client that trickles small
    // chunks must not hold its buffer (and the memory budget) for the whole session.
    let left = limits
        .data_timeout
        .saturating_sub(message.started().elapsed());
    if left.is_zero() {
        session.take_transaction();
        *chunks = None;
        return Ok(Some(Action::Close(timed_out(deadline))));
    }
    let mut reader = IdleLimit::new(io, limits.command_timeout);
    let read = read_chunk(&mut reader, size, message, max);
    let mut shutdown = shared.shutdown.clone();
    let grace_over = async {
        stopping(&mut shutdown).await;
        tokio::time::sleep(shared.config.shutdown_grace * 9 / 10).await;
    };
    let read = tokio::select! {
        r = timeout(wait(left, deadline), read) => r,
        () = grace_over => Ok(Err(io::ErrorKind::Interrupted.into())),
    };
    let failed = match read {
        Ok(Ok(())) => None,
        Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {
            info!("stopping and the message is still incomplete; closing");
            Some(Some(Action::Close(Reply::SHUTTING_DOWN)))
        }
        Ok(Err(e)) if is_stalled(&e) => {
            info!("client stalled during BDAT; closing");
            Some(Some(Action::Close(Reply::TIMEOUT)))
        }
        Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => Some(None),
        Ok(Err(e)) => return Err(e),
        Err(_) => Some(Some(Action::Close(timed_out(deadline)))),
    };
    if let Some(action) = failed {
        session.take_transaction();
        *chunks = None;
        return Ok(action);
    }
    let state = chunks.as_ref().map_or(State::Fine, |c| c.state(max));
    let total = chunks.as_ref().map_or(0, Chunks::size);
    if state != State::Fine {
        // The first chunk that breaks a rule ends the transaction; chunks pipelined after it
        // get 503 and are thrown away.
        session.take_transaction();
        *chunks = None;
        return Ok(after_message(
            session,
            refusal(state, limits.message_memory),
        ));
    }
    if !last {
        return Ok(Some(Action::Reply(chunk_ok(size, total))));
    }
    let message = chunks.take().expect("a chunk was just read into it");
    let (end, mut held) = message.finish(max);
    let mut tx = session
        .take_transaction()
        .expect("BDAT is read only inside a transaction");
    let after = match end {
        DataEnd::Message(data) => accept(shared, session, &mut tx, data, &mut held).await,
        DataEnd::TooBig => refusal(State::TooBig, limits.message_memory),
        DataEnd::LineTooLong => refusal(State::LineTooLong, limits.message_memory),
        DataEnd::NoMemory => refusal(State::NoMemory, limits.message_memory),
        DataEnd::Malformed | DataEnd::Eof => refusal(State::Malformed, limits.message_memory),
    };
    Ok(after_message(session, after))
}

/// The answer to a message that broke a rule, as after DATA.
fn refusal(state: State, budget: u64) -> AfterData {
    match state {
        State::Fine | State::Malformed => {
            warn!("bare CR/LF or NUL in BDAT data; refusing and closing");
            AfterData::Close(Reply::BARE_LINE_ENDING_DATA)
        }
        State::LineTooLong => AfterData::Answer(Reply::DATA_LINE_TOO_LONG),
        State::TooBig => AfterData::Answer(Reply::MESSAGE_TOO_BIG),
        State::NoMemory => {
            warn!(
                budget,
                "message refused: the memory budget for messages is spent"
            );
            AfterData::Answer(Reply::NO_MESSAGE_MEMORY)
        }
    }
}

/// Reads and throws away a chunk refused before it was read, then gives `reply` (counted as
/// an error). `Err` with the reply to close with when the chunk could not be read.
///
/// # Errors
/// I/O errors of the connection.
async fn skip<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    io: &mut BufReader<S>,
    session: &mut Session,
    size: u64,
    reply: Reply,
    deadline: Instant,
) -> io::Result<Result<Action, Reply>> {
    let limits = &shared.config.limits;
    let mut reader = IdleLimit::new(io, limits.command_timeout);
    let read = timeout(
        wait(limits.data_timeout, deadline),
        skip_chunk(&mut reader, size),
    );
    match read.await {
        Ok(Ok(())) => Ok(Ok(session.count_errors(Action::Reply(reply)))),
        Ok(Err(e)) if is_stalled(&e) => Ok(Err(Reply::TIMEOUT)),
        Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(Err(reply)),
        Ok(Err(e)) => Err(e),
        Err(_) => Ok(Err(timed_out(deadline))),
    }
}
