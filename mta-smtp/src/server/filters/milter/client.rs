//! One conversation with one milter about one message, all of it at the end of DATA: options,
//! then connect, HELO, MAIL, each RCPT, DATA, the header fields, the end of the header, the
//! body in pieces, the end of the message, and the filter's answers. Every wait is bounded by
//! the milter's `timeout`, the whole conversation by four times it.

use std::net::IpAddr;
use std::time::Duration;

use mta_core::config::{Milter, MilterAddress};
use mta_core::reply::Reply as SmtpReply;
use mta_core::seams::{MessageView, SessionFacts};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::{Instant, timeout_at};

use super::codec::{self, Command, DecodeError, Reply, action, step};
use super::edits::{self, Edit, EditError};
use crate::headers;

/// The actions we allow: add, change and delete header fields, replace the body, quarantine.
/// Never recipients: a filter adding one would send the message where the client did not
/// ask, outside our relay checks, and removing one would drop mail the client was told we
/// accepted; nor the sender (`SMFIF_CHGFROM`), which our bounces and SPF records rely on.
pub const ACTIONS: u32 =
    action::ADD_HEADERS | action::CHANGE_BODY | action::CHANGE_HEADERS | action::QUARANTINE;

/// The steps a filter may leave out or not answer. rspamd answers none but the end of the
/// message whatever we offer, so every "no reply" is offered.
pub const STEPS: u32 = step::NO_CONNECT
    | step::NO_HELO
    | step::NO_MAIL
    | step::NO_RCPT
    | step::NO_BODY
    | step::NO_HEADERS
    | step::NO_EOH
    | step::NR_HEADER
    | step::NO_UNKNOWN
    | step::NO_DATA
    | step::SKIP
    | step::NR_CONNECT
    | step::NR_HELO
    | step::NR_MAIL
    | step::NR_RCPT
    | step::NR_DATA
    | step::NR_UNKNOWN
    | step::NR_EOH
    | step::NR_BODY;

/// The largest body piece we send, as libmilter's `MILTER_CHUNK_SIZE`.
pub const CHUNK: usize = 65535;

/// Why a milter could not decide: its `on_failure` applies.
#[derive(Debug, Error)]
pub enum MilterError {
    /// Connecting failed.
    #[error("cannot connect: {0}")]
    Connect(#[source] std::io::Error),
    /// Reading or writing failed.
    #[error("connection failed: {0}")]
    Io(#[source] std::io::Error),
    /// It did not answer in time (or the conversation took too long in all).
    #[error("no reply in time")]
    Timeout,
    /// It closed the connection before its final answer.
    #[error("closed the connection before its answer")]
    Closed,
    /// It sent bytes that are not a reply.
    #[error("bad reply: {0}")]
    Decode(#[from] DecodeError),
    /// It sent a reply that does not fit where it came, or one we never allowed.
    #[error("{0}")]
    Protocol(String),
    /// It asked for changes we cannot make.
    #[error("its changes cannot be made: {0}")]
    Edit(#[from] EditError),
}

/// What a milter decided about a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go on; with the data as its changes made it, if it asked for any.
    Accept(Option<Vec<u8>>),
    /// Refuse with this reply (a `5xx`).
    Reject(SmtpReply),
    /// Refuse for now with this reply (a `4xx`).
    TempFail(SmtpReply),
    /// Answer 250 and drop the message (`d`).
    Discard,
    /// Hold the message (`q`), with the filter's reason.
    Quarantine(String),
}

/// What we tell a milter of the server.
#[derive(Debug, Clone, Copy)]
pub struct Server<'a> {
    /// Our `hostname` (the `j` macro).
    pub hostname: &'a str,
    /// `limits.max_message_size`: a filter's new data may not be larger.
    pub max_size: usize,
    /// `limits.max_headers`: a filter may ask for no more header changes than this.
    pub max_edits: usize,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Asks `milter` about one message.
///
/// # Errors
/// The milter could not be asked, or answered outside the protocol.
pub async fn ask(
    milter: &Milter,
    server: Server<'_>,
    session: &SessionFacts<'_>,
    message: &MessageView<'_>,
) -> Result<Decision, MilterError> {
    let start = Instant::now();
    let mut talk = Talk {
        io: connect(&milter.address, start + milter.timeout).await?,
        buf: Vec::new(),
        timeout: milter.timeout,
        end: start + milter.timeout * 4,
        steps: 0,
        actions: 0,
    };
    let decision = talk.converse(server, session, message).await;
    // Best effort: a filter that is done may already have closed.
    let _ = talk.send(&Command::Quit).await;
    decision
}

async fn connect(address: &MilterAddress, by: Instant) -> Result<Box<dyn Io>, MilterError> {
    let late = || {
        let e = std::io::Error::new(std::io::ErrorKind::TimedOut, "no connection in time");
        MilterError::Connect(e)
    };
    let io: Box<dyn Io> = match address {
        MilterAddress::Inet(a) => match timeout_at(by, TcpStream::connect(a)).await {
            Ok(s) => Box::new(s.map_err(MilterError::Connect)?),
            Err(_) => return Err(late()),
        },
        MilterAddress::Unix(p) => match timeout_at(by, UnixStream::connect(p)).await {
            Ok(s) => Box::new(s.map_err(MilterError::Connect)?),
            Err(_) => return Err(late()),
        },
    };
    Ok(io)
}

/// How an intermediate step ended.
enum Step {
    /// Send the next step.
    Next,
    /// The filter decided already.
    Done(Decision),
    /// `s`: send no more body.
    Skip,
}

struct Talk {
    io: Box<dyn Io>,
    buf: Vec<u8>,
    timeout: Duration,
    /// The whole conversation ends by then.
    end: Instant,
    /// The steps the filter leaves out or does not answer.
    steps: u32,
    /// The actions we both agreed on.
    actions: u32,
}

impl Talk {
    async fn converse(
        &mut self,
        server: Server<'_>,
        session: &SessionFacts<'_>,
        message: &MessageView<'_>,
    ) -> Result<Decision, MilterError> {
        self.negotiate().await?;
        if let Some(decision) = self.envelope(server, session, message).await? {
            return Ok(decision);
        }
        if let Some(decision) = self.content(message.data).await? {
            return Ok(decision);
        }
        self.send(&Command::Eom).await?;
        self.end_of_message(server, message.data).await
    }

    /// Connect, HELO, MAIL and each RCPT, with their macros; a decision if one came.
    async fn envelope(
        &mut self,
        server: Server<'_>,
        session: &SessionFacts<'_>,
        message: &MessageView<'_>,
    ) -> Result<Option<Decision>, MilterError> {
        let ip = session.peer.ip();
        let (family, address) = match ip {
            IpAddr::V4(v4) => (b'4', v4.to_string()),
            IpAddr::V6(v6) => (b'6', v6.to_string()),
        };
        let pairs = vec![
            ("j", server.hostname.to_string()),
            ("{daemon_name}", "mta".to_string()),
            ("_", format!("unknown [{ip}]")),
            ("{client_addr}", address.clone()),
        ];
        self.send(&Command::Macros { stage: b'C', pairs }).await?;
        let connect = Command::Connect {
            host: "unknown",
            family,
            port: session.peer.port(),
            address,
        };
        if let Step::Done(d) = self
            .step(&connect, step::NO_CONNECT, step::NR_CONNECT)
            .await?
        {
            return Ok(Some(d));
        }
        let helo = Command::Helo(session.helo);
        if let Step::Done(d) = self.step(&helo, step::NO_HELO, step::NR_HELO).await? {
            return Ok(Some(d));
        }
        let mut pairs = vec![("{mail_addr}", bare(&message.from.to_string()))];
        if let Some(user) = session.user {
            pairs.push(("{auth_authen}", user.to_string()));
        }
        self.send(&Command::Macros { stage: b'M', pairs }).await?;
        let mail = Command::Mail(vec![message.from.to_string()]);
        if let Step::Done(d) = self.step(&mail, step::NO_MAIL, step::NR_MAIL).await? {
            return Ok(Some(d));
        }
        for rcpt in message.recipients {
            let pairs = vec![("{rcpt_addr}", rcpt.to_string())];
            self.send(&Command::Macros { stage: b'R', pairs }).await?;
            let command = Command::Rcpt(vec![format!("<{rcpt}>")]);
            if let Step::Done(d) = self.step(&command, step::NO_RCPT, step::NR_RCPT).await? {
                return Ok(Some(d));
            }
        }
        Ok(None)
    }

    /// DATA, the header fields, their end and the body in pieces; a decision if one came.
    async fn content(&mut self, data: &[u8]) -> Result<Option<Decision>, MilterError> {
        if let Step::Done(d) = self
            .step(&Command::Data, step::NO_DATA, step::NR_DATA)
            .await?
        {
            return Ok(Some(d));
        }
        for field in headers::fields(data) {
            // The value without the white space after the colon and without the final CRLF,
            // folded with a bare LF as sendmail hands values to filters.
            let value = crlf_to_lf(field.value.trim_ascii_start());
            let command = Command::Header {
                name: field.name.as_bytes(),
                value: &value,
            };
            if let Step::Done(d) = self
                .step(&command, step::NO_HEADERS, step::NR_HEADER)
                .await?
            {
                return Ok(Some(d));
            }
        }
        if let Step::Done(d) = self.step(&Command::Eoh, step::NO_EOH, step::NR_EOH).await? {
            return Ok(Some(d));
        }
        // Pieces of the one buffer the message is in: the body is never copied whole.
        let body = &data[edits::body_start(data)..];
        for chunk in body.chunks(CHUNK) {
            match self
                .step(&Command::Body(chunk), step::NO_BODY, step::NR_BODY)
                .await?
            {
                Step::Next => {}
                Step::Skip => break,
                Step::Done(d) => return Ok(Some(d)),
            }
        }
        Ok(None)
    }

    /// Options: our version, actions and steps; the filter's must be within them, except
    /// actions (rspamd adds its whole list to ours): those we did not offer are refused
    /// when it asks for them.
    async fn negotiate(&mut self) -> Result<(), MilterError> {
        self.send(&Command::OptNeg {
            version: codec::VERSION,
            actions: ACTIONS,
            steps: STEPS,
        })
        .await?;
        match self.read().await? {
            Reply::OptNeg {
                version,
                actions,
                steps,
            } => {
                if !(2..=codec::VERSION).contains(&version) {
                    return Err(MilterError::Protocol(format!(
                        "speaks protocol version {version}, not 2 to 6"
                    )));
                }
                if steps & !STEPS != 0 {
                    return Err(MilterError::Protocol(format!(
                        "asks for protocol steps {:#x} we did not offer",
                        steps & !STEPS
                    )));
                }
                self.steps = steps;
                self.actions = actions & ACTIONS;
                Ok(())
            }
            other => Err(unexpected(&other, "options")),
        }
    }

    /// Sends `command` unless the filter leaves it out (`skip` in its steps), then reads
    /// its answer unless it does not give one (`no_reply`).
    async fn step(
        &mut self,
        command: &Command<'_>,
        skip: u32,
        no_reply: u32,
    ) -> Result<Step, MilterError> {
        if self.steps & skip != 0 {
            return Ok(Step::Next);
        }
        self.send(command).await?;
        if self.steps & no_reply != 0 {
            return Ok(Step::Next);
        }
        loop {
            let reply = self.read().await?;
            if let Some(decision) = final_reply(&reply)? {
                return Ok(Step::Done(decision));
            }
            match reply {
                Reply::Continue => return Ok(Step::Next),
                Reply::Accept => return Ok(Step::Done(Decision::Accept(None))),
                Reply::Skip if matches!(command, Command::Body(_)) => return Ok(Step::Skip),
                Reply::Progress => continue,
                other => return Err(unexpected(&other, "a step before the end")),
            }
        }
    }

    /// The answers to the end of the message: changes, then one decision.
    async fn end_of_message(
        &mut self,
        server: Server<'_>,
        data: &[u8],
    ) -> Result<Decision, MilterError> {
        let mut changes: Vec<Edit> = Vec::new();
        // The header changes so far are held to the limits as they come, as the body pieces
        // are, so a filter cannot make us keep (or later apply) more than a message's worth.
        let mut edited = 0;
        let mut new_body: Option<Vec<u8>> = None;
        let mut quarantine = None;
        loop {
            let reply = self.read().await?;
            if let Some(decision) = final_reply(&reply)? {
                return Ok(decision);
            }
            match reply {
                Reply::Accept | Reply::Continue => break,
                Reply::Progress => {}
                Reply::AddHeader { name, value } => {
                    self.allowed(action::ADD_HEADERS, "add a header field")?;
                    let name = edits::field_name(&name)?;
                    let value = edits::field_value(&name, &value)?;
                    edited = within(edited, &name, &value, server.max_size)?;
                    changes.push(Edit::Add { name, value });
                }
                Reply::InsertHeader { index, name, value } => {
                    self.allowed(action::ADD_HEADERS, "insert a header field")?;
                    let name = edits::field_name(&name)?;
                    let value = edits::field_value(&name, &value)?;
                    edited = within(edited, &name, &value, server.max_size)?;
                    changes.push(Edit::Insert { index, name, value });
                }
                Reply::ChangeHeader { index, name, value } => {
                    self.allowed(action::CHANGE_HEADERS, "change a header field")?;
                    let name = edits::field_name(&name)?;
                    let value = edits::field_value(&name, &value)?;
                    edited = within(edited, &name, &value, server.max_size)?;
                    changes.push(Edit::Change { index, name, value });
                }
                Reply::ReplaceBody(piece) => {
                    self.allowed(action::CHANGE_BODY, "replace the body")?;
                    let body = new_body.get_or_insert_with(Vec::new);
                    if body.len() + piece.len() > server.max_size {
                        return Err(EditError::TooBig(body.len() + piece.len()).into());
                    }
                    body.extend_from_slice(&piece);
                }
                Reply::Quarantine(reason) => {
                    self.allowed(action::QUARANTINE, "quarantine")?;
                    quarantine = Some(printable(&reason, 200));
                }
                other => return Err(unexpected(&other, "the end of the message")),
            }
            if changes.len() > server.max_edits {
                return Err(MilterError::Protocol(format!(
                    "asks for more than {} header changes",
                    server.max_edits
                )));
            }
        }
        if let Some(reason) = quarantine {
            return Ok(Decision::Quarantine(reason));
        }
        if changes.is_empty() && new_body.is_none() {
            return Ok(Decision::Accept(None));
        }
        let body = new_body.as_deref().map(edits::body).transpose()?;
        let rewritten = edits::apply(data, &changes, body.as_deref(), server.max_size)?;
        Ok(Decision::Accept(Some(rewritten)))
    }

    /// Refuses a change the filter may not ask for.
    fn allowed(&self, action: u32, what: &str) -> Result<(), MilterError> {
        if self.actions & action == 0 {
            return Err(MilterError::Protocol(format!(
                "asks to {what}, which was not agreed"
            )));
        }
        Ok(())
    }

    async fn send(&mut self, command: &Command<'_>) -> Result<(), MilterError> {
        let frame = codec::encode(command);
        let by = self.end;
        match timeout_at(
            by.min(Instant::now() + self.timeout),
            self.io.write_all(&frame),
        )
        .await
        {
            Ok(r) => r.map_err(MilterError::Io),
            Err(_) => Err(MilterError::Timeout),
        }
    }

    /// The next reply, waiting at most `timeout` for it (a progress reply starts a new
    /// wait), and never past the end of the conversation.
    async fn read(&mut self) -> Result<Reply, MilterError> {
        let by = self.end.min(Instant::now() + self.timeout);
        let mut chunk = [0u8; 8192];
        loop {
            if let Some((reply, used)) = codec::decode(&self.buf)? {
                self.buf.drain(..used);
                return Ok(reply);
            }
            let n = match timeout_at(by, self.io.read(&mut chunk)).await {
                Ok(r) => r.map_err(MilterError::Io)?,
                Err(_) => return Err(MilterError::Timeout),
            };
            if n == 0 {
                return Err(MilterError::Closed);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// `so_far` octets of header changes and one more `name: value` line: the new total, or
/// [`EditError::TooBig`] past `max` (the message they would make is larger still).
fn within(so_far: usize, name: &str, value: &str, max: usize) -> Result<usize, EditError> {
    let total = so_far + name.len() + value.len() + 4;
    match total > max {
        true => Err(EditError::TooBig(total)),
        false => Ok(total),
    }
}

/// The decision in `reply`, when it is one that ends the conversation at any step.
fn final_reply(reply: &Reply) -> Result<Option<Decision>, MilterError> {
    Ok(Some(match reply {
        Reply::Reject => Decision::Reject(SmtpReply::FILTER_REJECT),
        Reply::TempFail => Decision::TempFail(SmtpReply::FILTER_TEMPFAIL),
        Reply::Discard => Decision::Discard,
        Reply::ReplyCode(text) => match reply_code(text) {
            Some(r) if r.code >= 500 => Decision::Reject(r),
            Some(r) => Decision::TempFail(r),
            None => {
                return Err(MilterError::Protocol(format!(
                    "reply code {:?} is neither 4xx nor 5xx",
                    printable(text, 60)
                )));
            }
        },
        Reply::Recipient(letter) => {
            return Err(MilterError::Protocol(format!(
                "asks to {} a recipient, which we never allow",
                if *letter == b'+' { "add" } else { "remove" }
            )));
        }
        _ => return Ok(None),
    }))
}

/// A filter's own reply line (`y`), as we send it: its code when that is `4xx` or `5xx`, the
/// enhanced code `4.7.1` or `5.7.1` of that class (whatever the filter wrote there), and its
/// text, first line only, printable ASCII, at most 200 characters. `None` for any other code.
pub fn reply_code(text: &[u8]) -> Option<SmtpReply> {
    let line = text.split(|&b| b == b'\r' || b == b'\n').next()?;
    let code = line.get(..3)?;
    if !code.iter().all(u8::is_ascii_digit) || !matches!(code[0], b'4' | b'5') {
        return None;
    }
    if line.get(3).is_some_and(|&b| b != b' ' && b != b'-') {
        return None;
    }
    let code: u16 = std::str::from_utf8(code).ok()?.parse().ok()?;
    let mut rest = line.get(4..).unwrap_or_default();
    // An enhanced code (`5.7.1 `) is dropped: ours is of the class of the basic code.
    let is_enhanced = |w: &[u8]| {
        let parts: Vec<&[u8]> = w.split(|&b| b == b'.').collect();
        parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.len() <= 3 && p.iter().all(u8::is_ascii_digit))
    };
    let first = rest.split(|&b| b == b' ').next().unwrap_or_default();
    if is_enhanced(first) {
        rest = rest.get(first.len() + 1..).unwrap_or_default();
    }
    let mut words = printable(rest, 200);
    let (enhanced, default) = if code >= 500 {
        ("5.7.1", SmtpReply::FILTER_REJECT.text)
    } else {
        ("4.7.1", SmtpReply::FILTER_TEMPFAIL.text)
    };
    if words.trim().is_empty() {
        words = default.into_owned();
    }
    Some(SmtpReply::new(code, enhanced, words.trim().to_string()))
}

/// `text` with everything but printable ASCII replaced by `?`, at most `max` characters.
fn printable(text: &[u8], max: usize) -> String {
    text.iter()
        .take(max)
        .map(|&b| {
            if (0x20..0x7f).contains(&b) {
                b as char
            } else {
                '?'
            }
        })
        .collect()
}

fn unexpected(reply: &Reply, at: &str) -> MilterError {
    let name = match reply {
        Reply::OptNeg { .. } => "options",
        Reply::Accept => "accept",
        Reply::Continue => "continue",
        Reply::Progress => "progress",
        Reply::Skip => "skip",
        Reply::AddHeader { .. } => "add header",
        Reply::ChangeHeader { .. } => "change header",
        Reply::InsertHeader { .. } => "insert header",
        Reply::ReplaceBody(_) => "replace body",
        Reply::Quarantine(_) => "quarantine",
        Reply::Reject
        | Reply::TempFail
        | Reply::Discard
        | Reply::ReplyCode(_)
        | Reply::Recipient(_) => "decision",
    };
    MilterError::Protocol(format!("sent {name} in answer to {at}"))
}

/// `<a@b>` as `a@b`; `<>` as the empty string.
fn bare(path: &str) -> String {
    path.trim_start_matches('<')
        .trim_end_matches('>')
        .to_string()
}

/// A field value with its CRLFs as bare LFs.
fn crlf_to_lf(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        if value[i] == b'\r' && value.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(value[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
