//! Sending a message with BDAT (CHUNKING, RFC 3030) to a server that offers it: MAIL and
//! the RCPTs (pipelined when the server offers PIPELINING), then, when someone was accepted,
//! the message as `BDAT <size>` chunks of at most [`CHUNK`] octets and a last one with
//! `LAST`, no dot-stuffing. Our `prefix` (DKIM signatures) goes first, then the queue's
//! body, each written from where it is, never joined into a copy.
//!
//! With PIPELINING every chunk is written before any reply is read (RFC 3030 §4.2 allows
//! it); without, each chunk waits for its `250`. One reply per chunk: the first that is not
//! `2xx` decides the accepted recipients (the server has reset the transaction, and the
//! chunks after it get `503`, read and ignored); otherwise the reply to `LAST` decides them,
//! as the reply to the final dot does after DATA. Reply octets still waiting after the
//! replies to a group are a protocol error (they shift the replies), as after DATA's 354.
//!
//! A `500`, `502` or `504` to a BDAT (command not recognized or not implemented) is no
//! verdict on the message but a server, or a middlebox before it, that does not take the
//! command it offered: [`ClientError::BdatUnknown`], a temporary failure of the
//! transaction; the relay then sends DATA to that host for a while.

use tracing::debug;

use super::Connection;
use crate::client::reply::ServerReply;
use crate::client::transaction::{self, Expect};
use crate::client::wire::expect;
use crate::client::{ClientError, OutgoingMessage, Phase, RcptResult};

/// The most octets in one chunk.
pub const CHUNK: usize = 1024 * 1024;

/// One chunk: its octets (up to two slices of the prefix, the body, or the CRLF a body
/// without one at its end gets, as DATA would send it) and whether it is the last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk<'a> {
    /// The octets, in order.
    pub parts: Vec<&'a [u8]>,
    /// `BDAT … LAST`.
    pub last: bool,
}

impl Chunk<'_> {
    /// The octets in the chunk.
    pub fn size(&self) -> usize {
        self.parts.iter().map(|p| p.len()).sum()
    }

    /// `BDAT <size>[ LAST]` CRLF.
    pub fn command(&self) -> String {
        let last = if self.last { " LAST" } else { "" };
        format!("BDAT {}{last}\r\n", self.size())
    }
}

/// Cuts `prefix` then `body` into chunks of at most `most` octets (the prefix's own, then the
/// body's), the last one marked; a non-empty body that does not end in CRLF gets one in the
/// last chunk, as [`super::super::dot::DotStuffer`] adds it for DATA. An empty message is one
/// empty last chunk (`BDAT 0 LAST`).
pub fn chunks<'a>(prefix: &'a [u8], body: &'a [u8], most: usize) -> Vec<Chunk<'a>> {
    super::super::dot::check_prefix(prefix);
    let most = most.max(1);
    let mut out: Vec<Chunk<'a>> = prefix
        .chunks(most)
        .chain(body.chunks(most))
        .map(|p| Chunk {
            parts: vec![p],
            last: false,
        })
        .collect();
    if !body.is_empty() && !body.ends_with(b"\r\n") {
        out.push(Chunk {
            parts: vec![b"\r\n"],
            last: false,
        });
    }
    match out.last_mut() {
        Some(c) => c.last = true,
        None => out.push(Chunk {
            parts: Vec::new(),
            last: true,
        }),
    }
    out
}

impl Connection {
    /// MAIL, the RCPTs and the message in BDAT chunks (see the module). One result per
    /// recipient, as [`Connection::send`] gives them.
    pub(super) async fn send_chunked(
        &mut self,
        msg: &OutgoingMessage<'_>,
        mail: &str,
    ) -> Result<Vec<RcptResult>, ClientError> {
        let count = msg.rcpts.len();
        let t = self.timeouts.clone();
        let pipelining = self.extensions.pipelining;
        let (mail_reply, rcpts) = if pipelining {
            let mut group = mail.to_string();
            for rcpt in msg.rcpts {
                group.push_str(&transaction::rcpt_to_with(rcpt, self.dsn_of(msg, rcpt)));
            }
            self.wire.ensure_idle(Phase::Mail)?;
            debug!("C: {} (pipelined with {count} RCPT)", mail.trim_end());
            self.wire
                .write(Phase::Mail, t.mail, group.as_bytes())
                .await?;
            let mail_reply = self
                .wire
                .reply(Phase::Mail, t.mail, Expect::Completion)
                .await?;
            let mut rcpts = Vec::with_capacity(count);
            for _ in 0..count {
                let reply = self
                    .wire
                    .reply(Phase::Rcpt, t.rcpt, Expect::Completion)
                    .await?;
                let closing = reply.code == 421;
                rcpts.push(reply);
                if closing {
                    break;
                }
            }
            (mail_reply, rcpts)
        } else {
            let mail_reply = self.command(Phase::Mail, t.mail, mail).await?;
            expect(Phase::Mail, Expect::Completion, &mail_reply)?;
            let mut rcpts = Vec::with_capacity(count);
            if mail_reply.is_success() {
                for rcpt in msg.rcpts {
                    let line = transaction::rcpt_to_with(rcpt, self.dsn_of(msg, rcpt));
                    let reply = self.command(Phase::Rcpt, t.rcpt, &line).await?;
                    expect(Phase::Rcpt, Expect::Completion, &reply)?;
                    let closing = reply.code == 421;
                    rcpts.push(reply);
                    if closing {
                        break;
                    }
                }
            }
            (mail_reply, rcpts)
        };
        if mail_reply.code == 421 {
            return Ok(transaction::results(count, &mail_reply, &[], None));
        }
        if let Some(closing) = rcpts.iter().find(|r| r.code == 421) {
            let closing = closing.clone();
            let before = &rcpts[..rcpts.len() - 1];
            return Ok(transaction::results(
                count,
                &mail_reply,
                before,
                Some(&closing),
            ));
        }
        if !transaction::any_accepted(&mail_reply, &rcpts) {
            return Ok(transaction::results(count, &mail_reply, &rcpts, None));
        }
        let end = self.chunks(msg, pipelining).await?;
        Ok(transaction::results(count, &mail_reply, &rcpts, Some(&end)))
    }

    /// Writes the chunks and reads one reply per chunk: the first refusal, or the reply to
    /// the last chunk.
    async fn chunks(
        &mut self,
        msg: &OutgoingMessage<'_>,
        pipelining: bool,
    ) -> Result<ServerReply, ClientError> {
        let t = self.timeouts.clone();
        let all = chunks(msg.prefix, msg.body, CHUNK);
        self.wire.ensure_idle(Phase::Body)?;
        // The first refusal, or the reply to the last chunk.
        let mut decided: Option<ServerReply> = None;
        let mut unanswered = 0usize;
        for chunk in &all {
            self.wire
                .write(Phase::Body, t.data_block, chunk.command().as_bytes())
                .await?;
            for part in &chunk.parts {
                self.wire.write(Phase::Body, t.data_block, part).await?;
            }
            debug!(octets = chunk.size(), last = chunk.last, "C: BDAT");
            unanswered += 1;
            if pipelining && !chunk.last {
                continue;
            }
            while unanswered > 0 {
                unanswered -= 1;
                let last_reply = chunk.last && unanswered == 0;
                let (phase, limit) = if last_reply {
                    (Phase::FinalDot, t.final_dot)
                } else {
                    (Phase::Body, t.data_block)
                };
                let reply = self.wire.reply(phase, limit, Expect::Completion).await?;
                if matches!(reply.code, 500 | 502 | 504) {
                    // Not a verdict on the message: the command itself is unknown here, and
                    // any chunk octets already written were read as commands.
                    return Err(ClientError::BdatUnknown(reply));
                }
                if reply.code == 421 {
                    // The server is closing: replies to chunks after it never come.
                    return Ok(decided.unwrap_or(reply));
                }
                if decided.is_none() && (last_reply || !reply.is_success()) {
                    decided = Some(reply);
                }
            }
            // One reply per chunk (RFC 3030 §2): octets still waiting after a group's last
            // reply answer nothing we sent, and the replies read may be shifted (an extra
            // `250` read as the answer to LAST, its real answer left unread). As after a
            // 354, that is a protocol error: a possible duplicate later, never a loss.
            self.wire.ensure_idle(Phase::Body)?;
            if decided.is_some() {
                // Refused before the end (the server has reset the transaction, so the rest
                // is not sent), or the last chunk answered.
                break;
            }
        }
        Ok(decided.expect("the last chunk or a refusal was answered"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn chunk_commands() {
        let c = chunks(b"", b"", 10);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].command(), "BDAT 0 LAST\r\n");
        let c = chunks(b"DKIM: x\r\n", b"abc\r\n", 4);
        let commands: Vec<String> = c.iter().map(Chunk::command).collect();
        assert_eq!(
            commands,
            [
                "BDAT 4\r\n",
                "BDAT 4\r\n",
                "BDAT 1\r\n",
                "BDAT 4\r\n",
                "BDAT 1 LAST\r\n"
            ]
        );
        let c = chunks(b"", b"no end", 100);
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].parts, vec![&b"\r\n"[..]]);
        assert!(c[1].last);
    }

    proptest! {
        /// Against the plain rule: the chunks in order are the prefix, then the body, then a
        /// CRLF when a non-empty body lacks one; none is over the limit; only the last has
        /// LAST; none is empty but an empty message's one.
        #[test]
        fn chunks_are_the_message_in_order(
            prefix_lines in 0usize..4,
            body in proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'\r'), Just(b'\n')], 0..200),
            most in 1usize..50,
        ) {
            let prefix = b"F: v\r\n".repeat(prefix_lines);
            let c = chunks(&prefix, &body, most);
            let mut want = [prefix.as_slice(), body.as_slice()].concat();
            if !body.is_empty() && !body.ends_with(b"\r\n") {
                want.extend_from_slice(b"\r\n");
            }
            let got: Vec<u8> = c.iter().flat_map(|c| c.parts.concat()).collect();
            prop_assert_eq!(got, want.clone());
            prop_assert!(c.iter().all(|c| c.size() <= most.max(2)));
            prop_assert_eq!(c.iter().filter(|c| c.last).count(), 1);
            prop_assert!(c.last().unwrap().last);
            prop_assert!(want.is_empty() || c.iter().all(|c| c.size() > 0));
        }
    }
}
