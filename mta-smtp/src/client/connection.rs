//! One client connection: greeting, EHLO, STARTTLS, AUTH, transactions, QUIT.
//!
//! RFC 5321 §3.1 (greeting; QUIT after a refused one), §3.2 and §4.1.4 (HELO when EHLO gets
//! 5xx), §3.3 and §4.1.1.2–§4.1.1.5 (MAIL, RCPT, DATA, RSET), §3.8 (421 ends the
//! transaction), §4.5.3.2 (a timeout per reply); RFC 2920 §3.1 (MAIL, every RCPT and DATA
//! in one write, replies in order; after a 354 with nobody accepted, a lone dot); RFC 3207
//! §4.2 (anything read before the handshake is discarded, EHLO again, the old extension list
//! forgotten); RFC 4954 §4 (AUTH with an initial response) and the LOGIN mechanism
//! (draft-murchison-sasl-login).
//!
//! Bytes the server sends after its 220 to STARTTLS and before the handshake are an
//! injection attempt (CVE-2011-0411 class) or a confused server: they are thrown away
//! unread and logged, and the dialogue goes on over TLS, where such bytes cannot reach us
//! (bytes still in flight when the handshake starts are read by rustls as TLS records and
//! fail the handshake).
//! Bytes waiting before any other command of ours answer nothing we asked: that is a
//! [`ClientError::Protocol`] ("reply to nothing").

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use super::ehlo::Extensions;
use super::reply::ServerReply;
use super::tls::{self, Check, Trust};
use super::transaction::{self, Expect};
use super::wire::{Stream, Wire, expect, protocol, timed};
use super::{
    ClientError, ClientSettings, OutgoingMessage, Phase, RcptResult, Target, Timeouts, TlsInfo,
    TlsPolicy,
};

/// An open SMTP connection, ready for [`Connection::send`].
pub struct Connection {
    wire: Wire,
    extensions: Extensions,
    tls: Option<TlsInfo>,
    timeouts: Timeouts,
    /// Cleared when the server said it is closing (`421`, RFC 5321 §3.8), when a
    /// transaction ended with replies to our pipelined commands still unread, or when the
    /// server sent more than we asked for: such a connection must not carry another message,
    /// whose replies would be read out of order.
    reusable: bool,
}

impl Connection {
    /// Connects, reads the greeting, says EHLO (HELO when EHLO gets 5xx), does STARTTLS as
    /// the policy says (then EHLO again) and AUTH when credentials are configured.
    ///
    /// # Errors
    /// [`ClientError`] for anything that makes this host unusable for now: connect failure,
    /// timeout, a refused greeting or EHLO/HELO, TLS failure under a policy that demands TLS,
    /// refused or impossible AUTH, a protocol violation, or a closed connection.
    pub async fn open(
        target: &Target,
        settings: &ClientSettings,
    ) -> Result<Connection, ClientError> {
        if settings.auth.is_some() && matches!(settings.policy, TlsPolicy::Plaintext) {
            return Err(ClientError::AuthNeedsTls);
        }
        let t = &settings.timeouts;
        let tcp = connect(target, settings).await?;
        let (wire, tls) = match &settings.policy {
            TlsPolicy::Implicit { roots } => {
                let (stream, info) = tls::handshake(
                    tcp,
                    Trust::Roots(roots),
                    &target.name,
                    Check::Enforce,
                    t.tls_handshake,
                )
                .await?;
                (Wire::new(Stream::Tls(Box::new(stream))), Some(info))
            }
            TlsPolicy::Opportunistic { .. }
            | TlsPolicy::Required { .. }
            | TlsPolicy::Dane { .. }
            | TlsPolicy::Plaintext => (Wire::new(Stream::Plain(tcp)), None),
        };
        let mut conn = Connection {
            wire,
            extensions: Extensions::default(),
            tls,
            timeouts: t.clone(),
            reusable: true,
        };
        conn.greeting().await?;
        conn.hello(&settings.helo).await?;
        match &settings.policy {
            TlsPolicy::Opportunistic { roots } if conn.extensions.starttls => {
                conn.starttls(Trust::Roots(roots), target, Check::Record, &settings.helo)
                    .await?;
            }
            TlsPolicy::Required { roots } => {
                if !conn.extensions.starttls {
                    return Err(ClientError::StartTlsNotOffered);
                }
                conn.starttls(Trust::Roots(roots), target, Check::Enforce, &settings.helo)
                    .await?;
            }
            TlsPolicy::Dane { dane, roots } => {
                if !conn.extensions.starttls {
                    return Err(ClientError::StartTlsNotOffered);
                }
                let (trust, check) = match dane.usable() {
                    true => (Trust::Dane(dane), Check::Enforce),
                    false => (Trust::Roots(roots), Check::Encrypt),
                };
                conn.starttls(trust, target, check, &settings.helo).await?;
            }
            TlsPolicy::Opportunistic { .. } | TlsPolicy::Implicit { .. } | TlsPolicy::Plaintext => {
            }
        }
        if let Some((user, password)) = &settings.auth {
            conn.authenticate(user, password).await?;
        }
        Ok(conn)
    }

    /// The TLS in use, if any.
    pub fn tls(&self) -> Option<&TlsInfo> {
        self.tls.as_ref()
    }

    /// True when the connection may carry another message (after [`Connection::reset`]): no
    /// transaction on it ended with a `421`, with replies unread, or with replies nobody
    /// asked for.
    pub fn reusable(&self) -> bool {
        self.reusable
    }

    /// What the server offered in its last EHLO.
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// Sends the next messages with DATA even though the server offers CHUNKING: it answered
    /// BDAT as an unknown command before.
    pub fn without_chunking(&mut self) {
        self.extensions.chunking = false;
    }

    /// The `NOTIFY` and `ORCPT` to send with `rcpt`: only to a server that offers DSN.
    pub(super) fn dsn_of<'a>(
        &self,
        msg: &OutgoingMessage<'a>,
        rcpt: &mta_core::address::Address,
    ) -> Option<&'a mta_core::dsn::RcptDsn> {
        msg.rcpt_dsn(rcpt).filter(|_| self.extensions.dsn)
    }

    /// One transaction: MAIL FROM (with `SIZE=` when offered, `BODY=8BITMIME` when the
    /// message is 8-bit and the server offers it, `SMTPUTF8` when needed), one RCPT per
    /// recipient, DATA and the dot-stuffed body. Pipelined when the server offers
    /// PIPELINING. Nobody accepted: no DATA (when not pipelining) and the refusals come back.
    /// A message over the server's SIZE, or needing SMTPUTF8 the server lacks, fails every
    /// recipient permanently without sending anything.
    ///
    /// Returns one result per recipient, in order. Call [`Connection::reset`] before the
    /// next message.
    ///
    /// # Errors
    /// [`ClientError`] when the transaction broke down as a whole: timeout, closed
    /// connection, I/O error, or a protocol violation. The message may or may not have been
    /// taken; the caller retries later.
    pub async fn send(
        &mut self,
        msg: &OutgoingMessage<'_>,
    ) -> Result<Vec<RcptResult>, ClientError> {
        let count = msg.rcpts.len();
        if count == 0 {
            return Ok(Vec::new());
        }
        let params = match transaction::plan(msg, &self.extensions) {
            Ok(params) => params,
            Err(refusal) => {
                info!(reply = %refusal, "message refused before MAIL FROM");
                return Ok(vec![RcptResult::Permanent(refusal); count]);
            }
        };
        let mail = transaction::mail_from(msg.from, &params);
        let result = if self.extensions.chunking {
            self.send_chunked(msg, &mail).await
        } else if self.extensions.pipelining {
            self.send_pipelined(msg, &mail).await
        } else {
            self.send_lockstep(msg, &mail).await
        };
        // A 421 ends the session, and a pipelined one leaves the replies to the commands
        // after it unread (RFC 2920 §3.1); bytes waiting now answer nothing we sent.
        let clean = match &result {
            Ok(results) => {
                !results.iter().any(|r| r.reply().code == 421) && self.wire.unread() == 0
            }
            Err(_) => false,
        };
        if !clean {
            self.reusable = false;
        }
        result
    }

    /// RSET, so that the connection can carry another message.
    ///
    /// # Errors
    /// [`ClientError::Rejected`] when RSET is refused, or a transport or protocol error.
    pub async fn reset(&mut self) -> Result<(), ClientError> {
        let reply = self
            .command(Phase::Rset, self.timeouts.mail, "RSET\r\n")
            .await?;
        expect(Phase::Rset, Expect::Completion, &reply)?;
        if reply.is_success() {
            Ok(())
        } else {
            Err(ClientError::Rejected {
                phase: Phase::Rset,
                reply,
            })
        }
    }

    /// QUIT, wait for the reply, close. Failures only get logged: the work is done.
    pub async fn quit(mut self) {
        self.quit_quietly().await;
    }

    async fn quit_quietly(&mut self) {
        self.wire.quit(self.timeouts.quit).await;
    }

    async fn greeting(&mut self) -> Result<(), ClientError> {
        let reply = self
            .wire
            .read_reply(Phase::Greeting, self.timeouts.greeting)
            .await?;
        match reply.code {
            220 => Ok(()),
            // RFC 5321 §3.1: after a 554 (or a 421) greeting the client should QUIT.
            _ if reply.is_transient() || reply.is_permanent() => {
                self.quit_quietly().await;
                Err(ClientError::Greeting(reply))
            }
            _ => Err(protocol(
                Phase::Greeting,
                format!("unexpected greeting {reply}"),
            )),
        }
    }

    /// EHLO, or HELO when EHLO gets 5xx (RFC 5321 §4.1.4: a server that does not know EHLO).
    async fn hello(&mut self, helo: &str) -> Result<(), ClientError> {
        let t = self.timeouts.ehlo;
        let reply = self
            .command(Phase::Ehlo, t, &format!("EHLO {helo}\r\n"))
            .await?;
        expect(Phase::Ehlo, Expect::Completion, &reply)?;
        if reply.is_success() {
            self.extensions = Extensions::parse(&reply);
            return Ok(());
        }
        if reply.is_transient() {
            return Err(ClientError::Rejected {
                phase: Phase::Ehlo,
                reply,
            });
        }
        let reply = self
            .command(Phase::Helo, t, &format!("HELO {helo}\r\n"))
            .await?;
        expect(Phase::Helo, Expect::Completion, &reply)?;
        if !reply.is_success() {
            return Err(ClientError::Rejected {
                phase: Phase::Helo,
                reply,
            });
        }
        self.extensions = Extensions::default();
        Ok(())
    }

    async fn starttls(
        &mut self,
        trust: Trust<'_>,
        target: &Target,
        check: Check,
        helo: &str,
    ) -> Result<(), ClientError> {
        let reply = self
            .command(Phase::StartTls, self.timeouts.ehlo, "STARTTLS\r\n")
            .await?;
        expect(Phase::StartTls, Expect::Completion, &reply)?;
        if reply.code != 220 {
            return match check {
                // RFC 3207 §4.1: the client may go on without TLS.
                Check::Record if !reply.is_success() => {
                    info!(mx = %target.name, reply = %mta_core::text::escape(&reply.to_string()), "STARTTLS refused; going on without TLS");
                    Ok(())
                }
                Check::Record => Err(protocol(
                    Phase::StartTls,
                    format!("unexpected reply {reply}"),
                )),
                Check::Enforce | Check::Encrypt => Err(ClientError::TlsRequiredButFailed(format!(
                    "STARTTLS refused: {reply}"
                ))),
            };
        }
        // RFC 3207 §4.2: nothing the server sent before the handshake may be believed.
        let injected = self.wire.discard_unread();
        if injected > 0 {
            warn!(mx = %target.name, octets = injected, "server sent data after its 220 to STARTTLS; discarded");
        }
        let tcp = self.wire.take_plain().ok_or_else(|| {
            protocol(
                Phase::StartTls,
                "STARTTLS on a connection already in TLS".into(),
            )
        })?;
        let (stream, info) =
            tls::handshake(tcp, trust, &target.name, check, self.timeouts.tls_handshake).await?;
        debug!(mx = %target.name, version = %info.version, cipher = %info.cipher, verified = ?info.verified, "TLS established");
        self.wire.set_tls(stream);
        self.tls = Some(info);
        // The old list may have been forged: only the one given over TLS counts.
        self.extensions = Extensions::default();
        self.hello(helo).await
    }

    async fn authenticate(&mut self, user: &str, password: &str) -> Result<(), ClientError> {
        if self.tls.is_none() {
            return Err(ClientError::AuthNeedsTls);
        }
        let t = self.timeouts.ehlo;
        let reply = if self.extensions.offers_auth("PLAIN") {
            // RFC 4616: authzid NUL authcid NUL passwd; RFC 4954 §4: initial response.
            let response = B64.encode(format!("\0{user}\0{password}"));
            self.secret(
                t,
                &format!("AUTH PLAIN {response}\r\n"),
                "AUTH PLAIN <redacted>",
            )
            .await?
        } else if self.extensions.offers_auth("LOGIN") {
            let challenge = self.command(Phase::Auth, t, "AUTH LOGIN\r\n").await?;
            self.expect_challenge(challenge)?;
            let challenge = self
                .secret(t, &format!("{}\r\n", B64.encode(user)), "<redacted user>")
                .await?;
            self.expect_challenge(challenge)?;
            self.secret(
                t,
                &format!("{}\r\n", B64.encode(password)),
                "<redacted password>",
            )
            .await?
        } else {
            return Err(ClientError::AuthNotOffered {
                offered: self.extensions.auth.join(" "),
            });
        };
        match reply.code / 100 {
            2 => Ok(()),
            4 | 5 => Err(ClientError::AuthFailed(reply)),
            _ => Err(protocol(Phase::Auth, format!("unexpected reply {reply}"))),
        }
    }

    fn expect_challenge(&self, reply: ServerReply) -> Result<(), ClientError> {
        match reply.code / 100 {
            3 if reply.code == 334 => Ok(()),
            4 | 5 => Err(ClientError::AuthFailed(reply)),
            _ => Err(protocol(Phase::Auth, format!("unexpected reply {reply}"))),
        }
    }

    /// RFC 2920 §3.1: MAIL, the RCPTs and DATA in one write, then the replies in order.
    async fn send_pipelined(
        &mut self,
        msg: &OutgoingMessage<'_>,
        mail: &str,
    ) -> Result<Vec<RcptResult>, ClientError> {
        let count = msg.rcpts.len();
        let t = self.timeouts.clone();
        let mut group = mail.to_string();
        for rcpt in msg.rcpts {
            group.push_str(&transaction::rcpt_to_with(rcpt, self.dsn_of(msg, rcpt)));
        }
        group.push_str("DATA\r\n");
        self.wire.ensure_idle(Phase::Mail)?;
        debug!(
            "C: {} (pipelined with {count} RCPT and DATA)",
            mail.trim_end()
        );
        self.wire
            .write(Phase::Mail, t.mail, group.as_bytes())
            .await?;

        let mail_reply = self
            .wire
            .reply(Phase::Mail, t.mail, Expect::Completion)
            .await?;
        if mail_reply.code == 421 {
            return Ok(transaction::results(count, &mail_reply, &[], None));
        }
        let mut rcpts = Vec::with_capacity(count);
        for _ in 0..count {
            let reply = self
                .wire
                .reply(Phase::Rcpt, t.rcpt, Expect::Completion)
                .await?;
            if reply.code == 421 {
                return Ok(transaction::results(
                    count,
                    &mail_reply,
                    &rcpts,
                    Some(&reply),
                ));
            }
            rcpts.push(reply);
        }
        let data = self
            .wire
            .reply(Phase::Data, t.data_init, Expect::StartData)
            .await?;
        if data.code != 354 {
            return Ok(transaction::results(
                count,
                &mail_reply,
                &rcpts,
                Some(&data),
            ));
        }
        if transaction::any_accepted(&mail_reply, &rcpts) {
            let end = self.body(msg).await?;
            return Ok(transaction::results(count, &mail_reply, &rcpts, Some(&end)));
        }
        // RFC 2920 §3.1: DATA accepted with nobody to deliver to: send an empty message.
        debug!("C: . (nobody accepted, but DATA got 354)");
        self.wire.write(Phase::Body, t.data_block, b".\r\n").await?;
        self.wire
            .reply(Phase::FinalDot, t.final_dot, Expect::Completion)
            .await?;
        Ok(transaction::results(count, &mail_reply, &rcpts, None))
    }

    /// One command at a time.
    async fn send_lockstep(
        &mut self,
        msg: &OutgoingMessage<'_>,
        mail: &str,
    ) -> Result<Vec<RcptResult>, ClientError> {
        let count = msg.rcpts.len();
        let t = self.timeouts.clone();
        let mail_reply = self.command(Phase::Mail, t.mail, mail).await?;
        expect(Phase::Mail, Expect::Completion, &mail_reply)?;
        if !mail_reply.is_success() {
            return Ok(transaction::results(count, &mail_reply, &[], None));
        }
        let mut rcpts = Vec::with_capacity(count);
        for rcpt in msg.rcpts {
            let reply = self
                .command(
                    Phase::Rcpt,
                    t.rcpt,
                    &transaction::rcpt_to_with(rcpt, self.dsn_of(msg, rcpt)),
                )
                .await?;
            expect(Phase::Rcpt, Expect::Completion, &reply)?;
            if reply.code == 421 {
                return Ok(transaction::results(
                    count,
                    &mail_reply,
                    &rcpts,
                    Some(&reply),
                ));
            }
            rcpts.push(reply);
        }
        if !transaction::any_accepted(&mail_reply, &rcpts) {
            return Ok(transaction::results(count, &mail_reply, &rcpts, None));
        }
        let data = self.command(Phase::Data, t.data_init, "DATA\r\n").await?;
        expect(Phase::Data, Expect::StartData, &data)?;
        if data.code != 354 {
            return Ok(transaction::results(
                count,
                &mail_reply,
                &rcpts,
                Some(&data),
            ));
        }
        let end = self.body(msg).await?;
        Ok(transaction::results(count, &mail_reply, &rcpts, Some(&end)))
    }

    /// The stuffed body in chunks, the final dot, and its reply.
    async fn body(&mut self, msg: &OutgoingMessage<'_>) -> Result<ServerReply, ClientError> {
        let t = self.timeouts.clone();
        self.wire.body(t.data_block, msg.prefix, msg.body).await?;
        self.wire
            .reply(Phase::FinalDot, t.final_dot, Expect::Completion)
            .await
    }

    /// Sends one command line and reads its reply.
    async fn command(
        &mut self,
        phase: Phase,
        limit: std::time::Duration,
        line: &str,
    ) -> Result<ServerReply, ClientError> {
        debug!("C: {}", line.trim_end());
        self.exchange(phase, limit, line).await
    }

    /// [`Connection::command`] for a line that carries credentials: logged as `shown`.
    async fn secret(
        &mut self,
        limit: std::time::Duration,
        line: &str,
        shown: &str,
    ) -> Result<ServerReply, ClientError> {
        debug!("C: {shown}");
        self.exchange(Phase::Auth, limit, line).await
    }

    async fn exchange(
        &mut self,
        phase: Phase,
        limit: std::time::Duration,
        line: &str,
    ) -> Result<ServerReply, ClientError> {
        self.wire.command(phase, limit, line).await
    }
}

async fn connect(target: &Target, settings: &ClientSettings) -> Result<TcpStream, ClientError> {
    let addr = target.addr;
    let stream = timed(Phase::Connect, settings.connect_timeout, async move {
        TcpStream::connect(addr)
            .await
            .map_err(|source| ClientError::Connect { addr, source })
    })
    .await?;
    // Our writes are whole commands or batches; Nagle's algorithm would hold the last one
    // back until the server's delayed ACK (~40 ms a message).
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

#[path = "chunking.rs"]
pub mod chunking;
