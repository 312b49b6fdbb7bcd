//! LMTP (RFC 2033): our client speaking to a local delivery agent such as Dovecot's LMTP
//! server, over TCP or a Unix socket, one message per connection; and [`probe`], which asks
//! it at RCPT time whether it takes a recipient at all.
//!
//! LMTP is SMTP with two differences that matter here: the client says `LHLO` (§4.1; there
//! is no HELO fallback), and after the final dot the server answers once for **each**
//! recipient it accepted at RCPT, in RCPT order (§4.2), so one message can be delivered to
//! one mailbox, refused for another (`5xx`) and deferred for a third (`4xx`). The rest is
//! this module's SMTP client: replies ([`super::reply`]), MAIL/RCPT lines and their pre-checks
//! ([`super::transaction`]), dot-stuffing ([`super::dot`]), timed reads and writes
//! (`wire.rs`), and PIPELINING (RFC 2920) when the server offers it, which RFC 2033 §5 says it
//! must. No TLS and no AUTH: the LMTP server is on this machine or one we trust.

use std::io;
use std::time::Duration;

use mta_core::config::LmtpAddress;
use tokio::net::{TcpStream, UnixStream};
use tracing::debug;

use super::ehlo::Extensions;
use super::reply::ServerReply;
use super::transaction::{self, Expect, verdict};
use super::wire::{Stream, Wire, timed};
use super::wire::{expect, protocol};
use super::{ClientError, OutgoingMessage, Phase, RcptResult, Timeouts};

/// Hands one message to the LMTP server at `at`: connect, greeting, `LHLO lhlo`, one
/// transaction, QUIT. Returns one result per recipient of `msg`, in order.
///
/// A connection lost after the final dot does not undo the replies already read: those
/// recipients keep their result, and only the ones still unanswered get a temporary failure
/// (they may have been delivered; the queue tries them again, RFC 2033 §4.2 accepts that).
///
/// # Errors
/// [`ClientError`] when nothing was decided: the connect failed or timed out, the greeting
/// or LHLO was refused, the server broke the protocol or hung up before the final dot.
pub async fn deliver(
    at: &LmtpAddress,
    lhlo: &str,
    connect_timeout: Duration,
    timeouts: &Timeouts,
    msg: &OutgoingMessage<'_>,
) -> Result<Vec<RcptResult>, ClientError> {
    let stream = connect(at, connect_timeout).await?;
    let mut conn = Lmtp {
        wire: Wire::new(stream),
        extensions: Extensions::default(),
        timeouts: timeouts.clone(),
    };
    let result = conn.start(lhlo).await;
    let result = match result {
        Ok(()) => conn.send(msg).await,
        Err(e) => Err(e),
    };
    conn.quit().await;
    result
}

/// Asks the LMTP server at `at` whether it would take `rcpts` from `from`, without sending a
/// message: connect, greeting, `LHLO lhlo`, MAIL, one RCPT each (in lockstep), QUIT. Returns
/// one result per recipient, in order (a refused MAIL decides them all); a `2xx` is
/// [`RcptResult::Delivered`] here only in the sense of "would be taken". The SMTP server asks
/// this before its own `250` to RCPT, so a mailbox the LMTP server refuses is refused to the
/// client instead of bounced after acceptance.
///
/// # Errors
/// [`ClientError`] as for [`deliver`]: nothing was decided.
pub async fn probe(
    at: &LmtpAddress,
    lhlo: &str,
    connect_timeout: Duration,
    timeouts: &Timeouts,
    from: &mta_core::address::ReversePath,
    rcpts: &[mta_core::address::Address],
) -> Result<Vec<RcptResult>, ClientError> {
    let stream = connect(at, connect_timeout).await?;
    let mut conn = Lmtp {
        wire: Wire::new(stream),
        extensions: Extensions::default(),
        timeouts: timeouts.clone(),
    };
    let result = match conn.start(lhlo).await {
        Ok(()) => conn.ask(from, rcpts).await,
        Err(e) => Err(e),
    };
    conn.quit().await;
    result
}

/// One result per recipient from an LMTP transaction's replies (RFC 2033 §4.2).
///
/// `mail` decides everyone when it is not 2xx. Otherwise a recipient whose RCPT reply
/// (`rcpts[i]`) was not 2xx keeps it; the k-th recipient accepted at RCPT gets `finals[k]`,
/// the k-th reply after the final dot. Recipients that no reply covers (the server ended the
/// transaction with a 421, refused DATA, or hung up) get `ended`, or a temporary local failure
/// without one: never a false delivery.
pub fn results(
    count: usize,
    mail: &ServerReply,
    rcpts: &[ServerReply],
    finals: &[ServerReply],
    ended: Option<&ServerReply>,
) -> Vec<RcptResult> {
    if !mail.is_success() {
        return vec![verdict(mail); count];
    }
    let undecided = || match ended {
        Some(reply) => verdict(reply),
        None => RcptResult::Temporary(ServerReply::local(
            451,
            "4.4.2",
            "the LMTP server gave no reply for this recipient",
        )),
    };
    let mut accepted = 0;
    (0..count)
        .map(|i| match rcpts.get(i) {
            Some(r) if !r.is_success() => verdict(r),
            Some(_) => {
                let k = accepted;
                accepted += 1;
                finals.get(k).map_or_else(undecided, verdict)
            }
            None => undecided(),
        })
        .collect()
}

async fn connect(at: &LmtpAddress, limit: Duration) -> Result<Stream, ClientError> {
    match at {
        LmtpAddress::Tcp(addr) => {
            let addr = *addr;
            let tcp = timed(Phase::Connect, limit, async move {
                TcpStream::connect(addr)
                    .await
                    .map_err(|source| ClientError::Connect { addr, source })
            })
            .await?;
            // Whole commands per write: Nagle would only delay the last one.
            let _ = tcp.set_nodelay(true);
            Ok(Stream::Plain(tcp))
        }
        LmtpAddress::Unix(path) => {
            let unix = timed(Phase::Connect, limit, async move {
                UnixStream::connect(path)
                    .await
                    .map_err(|e| ClientError::Io {
                        phase: Phase::Connect,
                        source: io::Error::new(e.kind(), format!("{}: {e}", path.display())),
                    })
            })
            .await?;
            Ok(Stream::Unix(unix))
        }
    }
}

/// An open LMTP connection.
struct Lmtp {
    wire: Wire,
    extensions: Extensions,
    timeouts: Timeouts,
}

impl Lmtp {
    /// The 220 greeting, then LHLO.
    async fn start(&mut self, lhlo: &str) -> Result<(), ClientError> {
        let t = self.timeouts.clone();
        let greeting = self.wire.read_reply(Phase::Greeting, t.greeting).await?;
        match greeting.code {
            220 => {}
            _ if greeting.is_transient() || greeting.is_permanent() => {
                return Err(ClientError::Greeting(greeting));
            }
            _ => {
                let reason = format!("unexpected greeting {greeting}");
                return Err(protocol(Phase::Greeting, reason));
            }
        }
        let reply = self
            .command(Phase::Lhlo, t.ehlo, &format!("LHLO {lhlo}\r\n"))
            .await?;
        expect(Phase::Lhlo, Expect::Completion, &reply)?;
        if !reply.is_success() {
            return Err(ClientError::Rejected {
                phase: Phase::Lhlo,
                reply,
            });
        }
        self.extensions = Extensions::parse(&reply);
        Ok(())
    }

    /// MAIL, the RCPTs and DATA (in one write with PIPELINING), the body, and one reply per
    /// accepted recipient.
    async fn send(&mut self, msg: &OutgoingMessage<'_>) -> Result<Vec<RcptResult>, ClientError> {
        let count = msg.rcpts.len();
        if count == 0 {
            return Ok(Vec::new());
        }
        let params = match transaction::plan(msg, &self.extensions) {
            Ok(params) => params,
            Err(refusal) => return Ok(vec![RcptResult::Permanent(refusal); count]),
        };
        let mail = transaction::mail_from(msg.from, &params);
        let t = self.timeouts.clone();
        let pipelining = self.extensions.pipelining;
        if pipelining {
            self.send_group(&mail, msg).await?;
        }
        let mail_reply = self
            .step(pipelining, Phase::Mail, t.mail, &mail, Expect::Completion)
            .await?;
        // Lockstep: no RCPT after a refused MAIL. Pipelined: a 421 closes the connection,
        // any other refusal is followed by the RCPT and DATA replies, read below.
        if (!pipelining && !mail_reply.is_success()) || mail_reply.code == 421 {
            return Ok(results(count, &mail_reply, &[], &[], None));
        }
        let mut rcpts = Vec::with_capacity(count);
        for rcpt in msg.rcpts {
            let line = transaction::rcpt_to(rcpt);
            let reply = self
                .step(pipelining, Phase::Rcpt, t.rcpt, &line, Expect::Completion)
                .await?;
            if reply.code == 421 {
                return Ok(results(count, &mail_reply, &rcpts, &[], Some(&reply)));
            }
            rcpts.push(reply);
        }
        let any = transaction::any_accepted(&mail_reply, &rcpts);
        if !pipelining && !any {
            return Ok(results(count, &mail_reply, &rcpts, &[], None));
        }
        let data = self
            .step(
                pipelining,
                Phase::Data,
                t.data_init,
                "DATA\r\n",
                Expect::StartData,
            )
            .await?;
        if data.code != 354 {
            // RFC 2033 §4.2: DATA fails with 503 when no RCPT succeeded.
            return Ok(results(count, &mail_reply, &rcpts, &[], Some(&data)));
        }
        if !any {
            // A 354 with nobody accepted: end the empty message. Whatever the server answers
            // (one reply, or none as §4.2 would have it) is not read: we QUIT next.
            debug!("C: . (nobody accepted, but DATA got 354)");
            self.wire.write(Phase::Body, t.data_block, b".\r\n").await?;
            return Ok(results(count, &mail_reply, &rcpts, &[], None));
        }
        self.body(msg).await?;
        let accepted = rcpts.iter().filter(|r| r.is_success()).count();
        let (finals, lost) = self.final_replies(accepted).await;
        Ok(results(count, &mail_reply, &rcpts, &finals, lost.as_ref()))
    }

    /// MAIL, every RCPT and DATA in one write (RFC 2920); their replies are read by
    /// [`Lmtp::step`].
    async fn send_group(
        &mut self,
        mail: &str,
        msg: &OutgoingMessage<'_>,
    ) -> Result<(), ClientError> {
        let mut group = mail.to_string();
        for rcpt in msg.rcpts {
            group.push_str(&transaction::rcpt_to(rcpt));
        }
        group.push_str("DATA\r\n");
        self.wire.ensure_idle(Phase::Mail)?;
        let count = msg.rcpts.len();
        debug!(
            "C: {} (pipelined with {count} RCPT and DATA)",
            mail.trim_end()
        );
        let limit = self.timeouts.mail;
        self.wire.write(Phase::Mail, limit, group.as_bytes()).await
    }

    /// The reply to `line`, which must be `want`: read, when the line went out pipelined
    /// already, else sent now in lockstep.
    async fn step(
        &mut self,
        pipelined: bool,
        phase: Phase,
        limit: Duration,
        line: &str,
        want: Expect,
    ) -> Result<ServerReply, ClientError> {
        if pipelined {
            return self.wire.reply(phase, limit, want).await;
        }
        let reply = self.command(phase, limit, line).await?;
        expect(phase, want, &reply)?;
        Ok(reply)
    }

    /// One reply per accepted recipient after the final dot (RFC 2033 §4.2). When one does
    /// not come, the replies so far and a made-up 451 for that recipient and those after.
    async fn final_replies(&mut self, accepted: usize) -> (Vec<ServerReply>, Option<ServerReply>) {
        let limit = self.timeouts.final_dot;
        let mut finals = Vec::with_capacity(accepted);
        for _ in 0..accepted {
            match self
                .wire
                .reply(Phase::FinalDot, limit, Expect::Completion)
                .await
            {
                Ok(reply) => finals.push(reply),
                Err(e) => {
                    let lost = ServerReply::local(
                        451,
                        "4.4.2",
                        &format!("no reply from the LMTP server for this recipient: {e}"),
                    );
                    return (finals, Some(lost));
                }
            }
        }
        (finals, None)
    }

    /// MAIL and the RCPTs of [`probe`], one at a time; no DATA.
    async fn ask(
        &mut self,
        from: &mta_core::address::ReversePath,
        rcpts: &[mta_core::address::Address],
    ) -> Result<Vec<RcptResult>, ClientError> {
        let msg = OutgoingMessage {
            from,
            rcpts,
            prefix: b"",
            body: b"",
            eight_bit: false,
            smtputf8: rcpts.iter().any(mta_core::address::Address::needs_smtputf8)
                || from
                    .address()
                    .is_some_and(mta_core::address::Address::needs_smtputf8),
            require_tls: false,
            dsn: None,
        };
        let params = match transaction::plan(&msg, &self.extensions) {
            Ok(params) => params,
            Err(refusal) => return Ok(vec![RcptResult::Permanent(refusal); rcpts.len()]),
        };
        let t = self.timeouts.clone();
        let mail = transaction::mail_from(from, &params);
        let reply = self.command(Phase::Mail, t.mail, &mail).await?;
        expect(Phase::Mail, Expect::Completion, &reply)?;
        if !reply.is_success() {
            return Ok(vec![verdict(&reply); rcpts.len()]);
        }
        let mut out = Vec::with_capacity(rcpts.len());
        for rcpt in rcpts {
            let line = transaction::rcpt_to(rcpt);
            let reply = self.command(Phase::Rcpt, t.rcpt, &line).await?;
            expect(Phase::Rcpt, Expect::Completion, &reply)?;
            out.push(verdict(&reply));
        }
        Ok(out)
    }

    /// The stuffed body in chunks and the final dot.
    async fn body(&mut self, msg: &OutgoingMessage<'_>) -> Result<(), ClientError> {
        self.wire
            .body(self.timeouts.data_block, msg.prefix, msg.body)
            .await
    }

    /// One command line (from validated addresses and our hostname) and its reply.
    async fn command(
        &mut self,
        phase: Phase,
        limit: Duration,
        line: &str,
    ) -> Result<ServerReply, ClientError> {
        debug!("C: {}", line.trim_end());
        self.wire.command(phase, limit, line).await
    }

    /// QUIT and close; failures only get logged.
    async fn quit(&mut self) {
        self.wire.quit(self.timeouts.quit).await;
    }
}
