//! Our outbound SMTP client: one connection to one host, any number of transactions on it.
//! The relay (`crate::relay`) picks hosts (MX or smarthost) and maps our results onto queue
//! outcomes; this module owns only the dialogue with one server.
//!
//! Implements the client side of RFC 5321 (§3.1 greeting, §4.1.1.1 EHLO with the §3.2 HELO
//! fallback, §4.1.1.2–§4.1.1.4 MAIL/RCPT/DATA, §4.2 replies, §4.5.2 dot-stuffing, §4.5.3.1.5
//! reply-line limit, §4.5.3.2 timeouts), RFC 3207 STARTTLS (§4.2: nothing from before the
//! handshake survives it; §4.2 again: EHLO anew afterwards), RFC 8314 implicit TLS for a
//! smarthost on port 465, RFC 2920 PIPELINING, RFC 1870 SIZE, RFC 6152 8BITMIME, RFC 6531
//! SMTPUTF8, RFC 3463/2034 enhanced status codes, and RFC 4954 AUTH (PLAIN, LOGIN) toward a
//! smarthost, only ever over TLS.
//!
//! Layout: the sans-I/O parts are [`reply`] (framing and the strict reply parser), [`ehlo`]
//! (the extension list), [`transaction`] (MAIL/RCPT lines, pre-checks, per-recipient results)
//! and [`dot`] (dot-stuffing); `wire` does the buffered reads and timed writes, `tls` builds
//! the rustls client, [`Connection`] drives the dialogue. [`lmtp`] is the same client
//! speaking LMTP (RFC 2033) to a local delivery agent, over TCP or a Unix socket.

mod connection;
pub mod dane;
pub mod dot;
pub mod ehlo;
pub mod lmtp;
pub mod reply;
mod tls;
pub mod transaction;
mod wire;

#[cfg(test)]
mod tests;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mta_core::address::{Address, ReversePath};
use mta_core::envelope::Envelope;
use mta_core::seams::{Outcome, Remote, Verdict};

pub use connection::Connection;
pub use ehlo::Extensions;
pub use reply::ServerReply;
pub use tls::{RootsError, roots_with, webpki_roots};

/// Where to connect: the IP and port, and the name to verify in the certificate and send as
/// SNI (the MX host name or the smarthost name, no trailing dot). Set by the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The address to connect to.
    pub addr: SocketAddr,
    /// The host name the certificate must be valid for. An IP address here means no SNI and
    /// an IP-address check in the certificate.
    pub name: String,
}

/// How TLS is negotiated on one connection.
#[derive(Debug, Clone)]
pub enum TlsPolicy {
    /// STARTTLS when offered, any certificate accepted, but the chain and name are verified
    /// anyway and the result recorded in [`TlsInfo::verified`]; plaintext when STARTTLS is not
    /// offered or is refused with 4xx/5xx (RFC 3207 §4.1 lets the client go on).
    Opportunistic {
        /// Trust anchors for the recorded verification.
        roots: Arc<rustls::RootCertStore>,
    },
    /// STARTTLS mandatory; the chain is verified against `roots` and the name in [`Target`].
    /// Any failure is an error, never plaintext.
    Required {
        /// Trust anchors.
        roots: Arc<rustls::RootCertStore>,
    },
    /// TLS from the first byte (a smarthost on port 465, RFC 8314 §3.3), verified like
    /// [`TlsPolicy::Required`].
    Implicit {
        /// Trust anchors.
        roots: Arc<rustls::RootCertStore>,
    },
    /// STARTTLS mandatory; the server is authenticated by its host's TLSA records (RFC 7672
    /// §3), or, when none of them is usable, TLS without authentication (§2.2). The
    /// certificate is then recorded against `roots` as under opportunistic TLS.
    Dane {
        /// The host's TLSA records and reference names.
        dane: Arc<dane::Dane>,
        /// Trust anchors for the recorded verification when no record is usable.
        roots: Arc<rustls::RootCertStore>,
    },
    /// Never STARTTLS.
    Plaintext,
}

/// Reply timeouts, RFC 5321 §4.5.3.2 defaults. Each read of a reply is bounded by the one for
/// its phase; writes are bounded by the same value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    /// Waiting for the 220 greeting (§4.5.3.2.1: 5 minutes).
    pub greeting: Duration,
    /// EHLO, HELO, STARTTLS, AUTH and RSET replies (RFC 5321 names none; 5 minutes like MAIL).
    pub ehlo: Duration,
    /// The MAIL reply (§4.5.3.2.2: 5 minutes).
    pub mail: Duration,
    /// Each RCPT reply (§4.5.3.2.3: 5 minutes).
    pub rcpt: Duration,
    /// The 354 to DATA (§4.5.3.2.4: 2 minutes).
    pub data_init: Duration,
    /// Each write of message data (§4.5.3.2.5: 3 minutes).
    pub data_block: Duration,
    /// The reply to the final dot (§4.5.3.2.6: 10 minutes).
    pub final_dot: Duration,
    /// The TLS handshake (not in RFC 5321; 5 minutes, as Postfix's `smtp_starttls_timeout`).
    pub tls_handshake: Duration,
    /// QUIT and its reply (not in RFC 5321; 1 minute: a slow QUIT only holds a slot).
    pub quit: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        const MIN: u64 = 60;
        Timeouts {
            greeting: Duration::from_secs(5 * MIN),
            ehlo: Duration::from_secs(5 * MIN),
            mail: Duration::from_secs(5 * MIN),
            rcpt: Duration::from_secs(5 * MIN),
            data_init: Duration::from_secs(2 * MIN),
            data_block: Duration::from_secs(3 * MIN),
            final_dot: Duration::from_secs(10 * MIN),
            tls_handshake: Duration::from_secs(5 * MIN),
            quit: Duration::from_secs(MIN),
        }
    }
}

/// Everything about how we talk, set by the relay per destination.
#[derive(Clone)]
pub struct ClientSettings {
    /// Our host name for EHLO/HELO. Must be a plain host name (the relay passes the
    /// validated `Config::hostname`).
    pub helo: String,
    /// How TLS is negotiated.
    pub policy: TlsPolicy,
    /// Smarthost credentials (user, password): AUTH PLAIN if offered, else LOGIN. Only ever
    /// sent over TLS; without TLS [`Connection::open`] fails with [`ClientError::AuthNeedsTls`].
    pub auth: Option<(String, String)>,
    /// Bound on the TCP connect.
    pub connect_timeout: Duration,
    /// Reply timeouts.
    pub timeouts: Timeouts,
}

impl fmt::Debug for ClientSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the password: logs are read by more people than may know it.
        f.debug_struct("ClientSettings")
            .field("helo", &self.helo)
            .field("policy", &self.policy)
            .field("auth_user", &self.auth.as_ref().map(|(user, _)| user))
            .field("connect_timeout", &self.connect_timeout)
            .field("timeouts", &self.timeouts)
            .finish()
    }
}

/// What TLS a connection ended up with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1.3` or `TLSv1.2`.
    pub version: String,
    /// The IANA name of the cipher suite, for example `TLS13_AES_256_GCM_SHA384`.
    pub cipher: String,
    /// Whether the certificate chain and name checked out.
    pub verified: Verification,
}

/// Where a certificate verifier (`tls`, `dane`) leaves its verdict for the handshake's caller.
type Slot = Arc<std::sync::Mutex<Option<Verification>>>;

/// The outcome of certificate verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// The chain leads to a trusted root and is valid for [`Target::name`], or (DANE) it
    /// matches one of the host's TLSA records.
    Verified,
    /// Why not, in rustls's words (for example `UnknownIssuer`, or a `certificate not valid
    /// for name ...` text). Only seen under [`TlsPolicy::Opportunistic`], and under
    /// [`TlsPolicy::Dane`] when no TLSA record is usable.
    Failed(String),
}

/// One message to hand over.
#[derive(Clone, Copy)]
pub struct OutgoingMessage<'a> {
    /// MAIL FROM.
    pub from: &'a ReversePath,
    /// RCPT TO, in order; [`Connection::send`] answers in the same order.
    pub rcpts: &'a [Address],
    /// Header fields of ours sent in front of `body` (the `DKIM-Signature:` fields), empty
    /// or whole CRLF-ended lines; kept apart so that the body is never copied to add them.
    pub prefix: &'a [u8],
    /// The message, CRLF line endings only, not yet dot-stuffed; sent as is after `prefix`.
    pub body: &'a [u8],
    /// The body has octets above 127: `BODY=8BITMIME` when the server offers it (RFC 6152).
    /// When it does not, the body is sent anyway, as most MTAs do.
    pub eight_bit: bool,
    /// An address (or header) needs SMTPUTF8 (RFC 6531); the server must offer it.
    pub smtputf8: bool,
    /// RFC 8689 REQUIRETLS: the server must offer it, and MAIL FROM carries it.
    pub require_tls: bool,
    /// The queued envelope whose RFC 3461 parameters (`RET`, `ENVID`, and each recipient's
    /// `NOTIFY` and `ORCPT`) go on to a server that offers DSN; `None` sends none.
    pub dsn: Option<&'a Envelope>,
}

impl<'a> OutgoingMessage<'a> {
    /// The message `envelope` names, `prefix` then `body`, to `rcpts`: `BODY=8BITMIME` and
    /// SMTPUTF8 as its data and addresses need, REQUIRETLS as the envelope asks.
    pub fn of(
        envelope: &'a Envelope,
        rcpts: &'a [Address],
        prefix: &'a [u8],
        body: &'a [u8],
    ) -> Self {
        OutgoingMessage {
            from: &envelope.sender,
            rcpts,
            prefix,
            body,
            eight_bit: !prefix.is_ascii() || !body.is_ascii(),
            smtputf8: rcpts.iter().any(Address::needs_smtputf8)
                || envelope
                    .sender
                    .address()
                    .is_some_and(Address::needs_smtputf8),
            require_tls: envelope.require_tls,
            dsn: Some(envelope),
        }
    }

    /// The RFC 3461 `NOTIFY` and `ORCPT` of `rcpt` to pass on, if any were given.
    pub fn rcpt_dsn(&self, rcpt: &Address) -> Option<&'a mta_core::dsn::RcptDsn> {
        let envelope = self.dsn?;
        let found = envelope.recipients.iter().find(|r| &r.address == rcpt)?;
        (!found.dsn.is_empty()).then_some(&found.dsn)
    }
}

impl fmt::Debug for OutgoingMessage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the body itself (it is the sender's private text): only its size.
        f.debug_struct("OutgoingMessage")
            .field("from", self.from)
            .field("rcpts", &self.rcpts)
            .field("prefix_len", &self.prefix.len())
            .field("body_len", &self.body.len())
            .field("eight_bit", &self.eight_bit)
            .field("smtputf8", &self.smtputf8)
            .finish()
    }
}

/// What became of one recipient in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptResult {
    /// Accepted: the reply to the final dot (RFC 5321 §4.1.1.4: one reply for all accepted
    /// recipients).
    Delivered(ServerReply),
    /// A 4xx at RCPT, or at MAIL, DATA or the final dot.
    Temporary(ServerReply),
    /// A 5xx, from the server or from our pre-checks (SIZE, SMTPUTF8).
    Permanent(ServerReply),
}

impl RcptResult {
    /// The reply behind the result.
    pub fn reply(&self) -> &ServerReply {
        match self {
            RcptResult::Delivered(r) | RcptResult::Temporary(r) | RcptResult::Permanent(r) => r,
        }
    }

    /// The outcome this result comes to, given by `remote`: the reply's code, enhanced
    /// status code and text, the whole cut to [`reply::MAX_KEPT_TEXT`] octets (what a
    /// server says is kept for every attempt, so its size is bounded).
    pub fn outcome(&self, remote: Remote) -> Outcome {
        let verdict = match self {
            RcptResult::Delivered(_) => Verdict::Delivered,
            RcptResult::Temporary(_) => Verdict::Deferred,
            RcptResult::Permanent(_) => Verdict::Failed,
        };
        let reply = self.reply();
        let head = match &reply.enhanced {
            Some(e) => format!("{} {e}", reply.code),
            None => reply.code.to_string(),
        };
        let whole = reply.to_string();
        let kept = reply::cut(&whole, reply::MAX_KEPT_TEXT);
        let text = kept
            .strip_prefix(head.as_str())
            .map_or("", |t| t.strip_prefix(' ').unwrap_or(t));
        Outcome {
            verdict,
            code: Some(reply.code),
            enhanced: reply.enhanced.clone(),
            remote: Some(remote),
            text: text.to_string(),
            dsn_passed: false,
        }
    }
}

/// Where in the dialogue something happened (for errors and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The TCP connect.
    Connect,
    /// The TLS handshake (after STARTTLS or at once for implicit TLS).
    TlsHandshake,
    /// Waiting for the 220 greeting.
    Greeting,
    /// EHLO.
    Ehlo,
    /// HELO (the fallback).
    Helo,
    /// LHLO (LMTP's EHLO, RFC 2033 §4.1).
    Lhlo,
    /// STARTTLS and its reply.
    StartTls,
    /// AUTH.
    Auth,
    /// MAIL FROM.
    Mail,
    /// RCPT TO.
    Rcpt,
    /// DATA and its 354.
    Data,
    /// Writing the message.
    Body,
    /// The reply to the final dot.
    FinalDot,
    /// RSET.
    Rset,
    /// QUIT.
    Quit,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Connect => "connect",
            Phase::TlsHandshake => "TLS handshake",
            Phase::Greeting => "greeting",
            Phase::Ehlo => "EHLO",
            Phase::Helo => "HELO",
            Phase::Lhlo => "LHLO",
            Phase::StartTls => "STARTTLS",
            Phase::Auth => "AUTH",
            Phase::Mail => "MAIL FROM",
            Phase::Rcpt => "RCPT TO",
            Phase::Data => "DATA",
            Phase::Body => "message data",
            Phase::FinalDot => "end of data",
            Phase::Rset => "RSET",
            Phase::Quit => "QUIT",
        })
    }
}

/// Why a connection attempt or a transaction failed as a whole for this host. Per-recipient
/// refusals are not errors: they come back as [`RcptResult`]s.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The TCP connect failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// Where we tried.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A reply (or the connect, handshake or a write) took longer than its timeout.
    #[error("timed out in {phase}")]
    Timeout {
        /// What we were waiting for.
        phase: Phase,
    },
    /// A read or write failed.
    #[error("I/O error in {phase}: {source}")]
    Io {
        /// What we were doing.
        phase: Phase,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The greeting was not 220 (RFC 5321 §3.1: 554, or 421 for "busy").
    #[error("greeting refused: {0}")]
    Greeting(ServerReply),
    /// EHLO (4xx), HELO after EHLO, or RSET was refused.
    #[error("{phase} refused: {reply}")]
    Rejected {
        /// The command.
        phase: Phase,
        /// The server's answer.
        reply: ServerReply,
    },
    /// The TLS handshake failed under [`TlsPolicy::Opportunistic`], or TLS could not be set up
    /// (an invalid host name, trust anchors that cannot build a verifier).
    #[error("TLS: {0}")]
    Tls(String),
    /// [`TlsPolicy::Required`] and the server does not offer STARTTLS.
    #[error("TLS is required but the server does not offer STARTTLS")]
    StartTlsNotOffered,
    /// [`TlsPolicy::Required`] or [`TlsPolicy::Implicit`], and STARTTLS was refused or the
    /// handshake or certificate verification failed.
    #[error("TLS is required but failed: {0}")]
    TlsRequiredButFailed(String),
    /// AUTH was refused.
    #[error("authentication failed: {0}")]
    AuthFailed(ServerReply),
    /// Credentials are configured but the connection is not encrypted: we never send them.
    #[error("refusing to send credentials over a connection without TLS")]
    AuthNeedsTls,
    /// Credentials are configured but the server offers neither PLAIN nor LOGIN.
    #[error("the server offers no AUTH mechanism we use (offered: {offered})")]
    AuthNotOffered {
        /// The mechanisms the server listed, space-separated.
        offered: String,
    },
    /// The server broke the protocol: garbage, an over-long or never-ending reply, a reply
    /// to nothing, a code outside 200–599 or one that makes no sense for the command, or
    /// bytes sent right after its 354. The connection cannot be trusted any more.
    #[error("protocol error in {phase}: {reason}")]
    Protocol {
        /// What we were doing.
        phase: Phase,
        /// What was wrong.
        reason: String,
    },
    /// The server offered CHUNKING but answered a `BDAT` with 500, 502 or 504 (command not
    /// recognized or not implemented), as a middlebox that passes the keyword and blocks the
    /// command does: not a verdict on the message. The caller sends DATA next time.
    #[error("the server offers CHUNKING but does not take BDAT: {0}")]
    BdatUnknown(ServerReply),
    /// The server closed the connection.
    #[error("connection closed by the server in {phase}")]
    Closed {
        /// What we were doing.
        phase: Phase,
    },
    /// The connection as a whole took longer than `outbound.connection_timeout`, however
    /// each step kept within its own timeout.
    #[error("the connection took longer than outbound.connection_timeout")]
    Deadline,
    /// The connection was cut when the attempt as a whole reached
    /// `outbound.attempt_timeout`, which came before its own `outbound.connection_timeout`.
    #[error("the attempt took longer than outbound.attempt_timeout")]
    AttemptDeadline,
}

impl ClientError {
    /// True when trying again (this host or the next MX) cannot help without a configuration
    /// change: wrong smarthost credentials (5xx to AUTH) and credentials without TLS.
    /// Everything else, including a 5xx greeting or EHLO, is "try the next host / later"
    /// (RFC 5321 §5.1: another MX may well take the message).
    pub fn is_permanent(&self) -> bool {
        match self {
            ClientError::AuthFailed(reply) => reply.is_permanent(),
            ClientError::AuthNeedsTls => true,
            ClientError::Connect { .. }
            | ClientError::Timeout { .. }
            | ClientError::Io { .. }
            | ClientError::Greeting(_)
            | ClientError::Rejected { .. }
            | ClientError::Tls(_)
            | ClientError::StartTlsNotOffered
            | ClientError::TlsRequiredButFailed(_)
            | ClientError::AuthNotOffered { .. }
            | ClientError::Protocol { .. }
            | ClientError::Closed { .. }
            | ClientError::BdatUnknown(_)
            | ClientError::Deadline
            | ClientError::AttemptDeadline => false,
        }
    }

    /// Where in the dialogue the error happened, for logs.
    pub fn phase(&self) -> Phase {
        match self {
            // Which step was running when the deadline struck is not known here.
            ClientError::Connect { .. } | ClientError::Deadline | ClientError::AttemptDeadline => {
                Phase::Connect
            }
            ClientError::Timeout { phase }
            | ClientError::Io { phase, .. }
            | ClientError::Rejected { phase, .. }
            | ClientError::Protocol { phase, .. }
            | ClientError::Closed { phase } => *phase,
            ClientError::BdatUnknown(_) => Phase::Body,
            ClientError::Greeting(_) => Phase::Greeting,
            ClientError::Tls(_) | ClientError::TlsRequiredButFailed(_) => Phase::TlsHandshake,
            ClientError::StartTlsNotOffered => Phase::StartTls,
            ClientError::AuthFailed(_)
            | ClientError::AuthNeedsTls
            | ClientError::AuthNotOffered { .. } => Phase::Auth,
        }
    }
}
