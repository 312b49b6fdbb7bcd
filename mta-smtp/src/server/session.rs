//! One client's SMTP dialogue as a state machine (RFC 5321 §4.1.4 ordering, RFC 3207
//! STARTTLS, RFC 4954 AUTH). It owns no socket: the connection loop passes each line to
//! [`Session::handle`] and carries out the returned [`Action`].
//!
//! A session lives for one plaintext or one TLS phase: after STARTTLS the loop builds a new
//! one, so nothing said before the handshake survives it (RFC 3207 §4.2).

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use mta_core::address::{Address, ReversePath};
use mta_core::auth::Verified;
use mta_core::config::{Config, LocalDelivery};
use mta_core::dsn::{MessageDsn, RcptDsn};
use mta_core::envelope::ListenerKind;
use mta_core::policy::{self, RcptDecision, RelayPermission};
use mta_core::reply::Reply;
use mta_core::seams::UserDirectory;

use super::command::{self, Command, MailFrom, Mechanism};
use super::dnsbl::Standing;
use super::line::MAX_COMMAND_LINE;

/// What a session knows about its connection. Set by the connection loop.
#[derive(Clone)]
pub struct Context {
    /// The validated config.
    pub config: Arc<Config>,
    /// The user database (AUTH and recipient checks).
    pub users: Arc<dyn UserDirectory>,
    /// Which listener accepted the connection.
    pub listener: ListenerKind,
    /// The client's address.
    pub peer: SocketAddr,
    /// Protocol and cipher when the connection is encrypted, e.g. `TLSv1.3 TLS13_AES_128_GCM_SHA256`.
    pub tls: Option<String>,
    /// True when STARTTLS can be offered (plaintext phase with a certificate loaded).
    pub starttls_available: bool,
    /// The sending limits of authenticated users, shared by every session.
    pub sending: Arc<super::sending_limits::SendingLimiter>,
}

/// What the connection loop must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send the reply and read the next line.
    Reply(Reply),
    /// Send the reply and close the connection.
    Close(Reply),
    /// Send the reply (220), then do the TLS handshake and start a new session.
    StartTls(Reply),
    /// Send the reply (354), read the message with [`super::data::read_data`], then call
    /// [`Session::take_transaction`].
    StartData(Reply),
    /// Read a chunk of `size` octets into the message (RFC 3030), then answer it; at `last`,
    /// queue the message as after DATA and call [`Session::take_transaction`].
    Chunk {
        /// The octets announced.
        size: u64,
        /// `BDAT … LAST`.
        last: bool,
    },
    /// Read and throw away a chunk of `size` octets, then send `reply` (an error): the
    /// next command starts after the chunk (RFC 3030 §2).
    SkipChunk {
        /// The octets announced.
        size: u64,
        /// The refusal.
        reply: Reply,
    },
    /// Check a password off the async threads (argon2 is slow on purpose), then call
    /// [`Session::auth_checked`]. Never log `password`.
    CheckPassword {
        /// The login the client gave.
        login: String,
        /// The password the client gave.
        password: String,
    },
    /// Ask the queue whether there is room for a message (free disk space, a usable store),
    /// then call [`Session::room_checked`]. MAIL FROM is answered only then.
    CheckRoom,
    /// Ask the LMTP server whether it takes these local recipients (`[local] delivery =
    /// "lmtp"`), then call [`Session::recipients_checked`]. RCPT is answered only then, so a
    /// mailbox it refuses is refused to the client, not bounced after our `250`.
    CheckRecipients {
        /// MAIL FROM of the transaction.
        from: ReversePath,
        /// What the RCPT expands to, all in local domains.
        rcpts: Vec<Address>,
    },
    /// Ask the DNS blocklists about the client (`[[inbound.dnsbl]]`, `smtp` listener only),
    /// then call [`Session::dnsbl_checked`]. The first RCPT is answered only then.
    CheckDnsbl,
}

/// A mail transaction: set by MAIL, grown by RCPT, taken by DATA, dropped by RSET/EHLO.
#[derive(Debug)]
pub struct Transaction {
    /// MAIL FROM.
    pub from: ReversePath,
    /// The client announced SMTPUTF8.
    pub smtputf8: bool,
    /// The client asked for REQUIRETLS (RFC 8689), on a TLS session.
    pub require_tls: bool,
    /// Accepted recipients after alias expansion, without duplicates.
    pub recipients: Vec<Address>,
    /// RCPT commands accepted (before expansion), for the recipient limit.
    pub rcpt_count: usize,
    /// RFC 3461 `RET` and `ENVID` of MAIL.
    pub dsn: MessageDsn,
    /// RFC 3461 `NOTIFY` and `ORCPT` of each recipient, by [`Address::key`].
    pub rcpt_dsn: Vec<(String, RcptDsn)>,
    /// What an authenticated user's message holds of its sending limits: set by MAIL,
    /// grown by RCPT, counted when the message is queued, given back when dropped.
    pub sending: Option<super::sending_limits::MessageSlot>,
}

impl Transaction {
    /// The `NOTIFY` and `ORCPT` given for `rcpt` (none for a recipient not in the list).
    pub fn dsn_of(&self, rcpt: &Address) -> RcptDsn {
        let key = rcpt.key();
        self.rcpt_dsn
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, d)| d.clone())
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum SaslStep {
    None,
    PlainResponse,
    LoginUser,
    LoginPassword { login: String },
    Checking,
}

/// The state of one dialogue.
pub struct Session {
    ctx: Context,
    helo: Option<String>,
    esmtp: bool,
    user: Option<Address>,
    tx: Option<Transaction>,
    /// What an RCPT waiting for [`Action::CheckRecipients`] expands to, with its DSN
    /// parameters.
    checking: Option<(Vec<Address>, RcptDsn)>,
    sasl: SaslStep,
    errors: u32,
    /// What the DNS blocklists say of the client, once asked.
    dnsbl: Option<Standing>,
    /// The RCPT waiting for [`Action::CheckDnsbl`].
    dnsbl_rcpt: Option<(mta_core::address::ForwardPath, bool, RcptDsn)>,
    /// Lines handled since the session last moved towards a message: an accepted RCPT, a
    /// 354 to DATA, a successful AUTH set it to 0 (`limits.max_commands_without_progress`).
    idle: u32,
}

impl Session {
    /// A new session in its initial state.
    pub fn new(ctx: Context) -> Session {
        Session {
            ctx,
            helo: None,
            esmtp: false,
            user: None,
            tx: None,
            checking: None,
            dnsbl: None,
            dnsbl_rcpt: None,
            sasl: SaslStep::None,
            errors: 0,
            idle: 0,
        }
    }

    /// The greeting (RFC 5321 §4.3.1); not sent again after STARTTLS.
    pub fn greeting(&self) -> Reply {
        Reply::plain(220, format!("{} ESMTP mta", self.ctx.config.hostname))
    }

    /// The name from EHLO/HELO, if given.
    pub fn helo(&self) -> Option<&str> {
        self.helo.as_deref()
    }

    /// True after EHLO, false after HELO (for the `with` clause of `Received`).
    pub fn esmtp(&self) -> bool {
        self.esmtp
    }

    /// The authenticated user, if any.
    pub fn user(&self) -> Option<&Address> {
        self.user.as_ref()
    }

    /// The session context.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// True while the next line is a SASL response (base64 credentials: never log it).
    pub fn expects_sasl(&self) -> bool {
        matches!(
            self.sasl,
            SaslStep::PlainResponse | SaslStep::LoginUser | SaslStep::LoginPassword { .. }
        )
    }

    /// The longest line the loop should accept next: AUTH lines may be long (RFC 4954 §4).
    pub fn line_limit(&self) -> usize {
        super::line::MAX_AUTH_LINE
    }

    /// Handles one line (without CRLF): a command, or a SASL response during AUTH.
    pub fn handle(&mut self, line: &[u8]) -> Action {
        self.idle = self.idle.saturating_add(1);
        let action = self.handle_line(line);
        let action = self.count_errors(action);
        self.count_idle(action)
    }

    /// Ends the session with 421 once `limits.max_commands_without_progress` lines in a
    /// row have not moved it towards a message, so a client that sends NOOP, RSET or
    /// rejected commands for ever cannot hold one of the limited sessions. Only a reply
    /// that keeps the session open, or a chunk to read (then closed unread), is replaced.
    fn count_idle(&mut self, action: Action) -> Action {
        match action {
            Action::Reply(_) | Action::Chunk { .. } | Action::SkipChunk { .. }
                if self.idle > self.ctx.config.limits.max_commands_without_progress =>
            {
                Action::Close(Reply::NO_PROGRESS)
            }
            other => other,
        }
    }

    /// The session moved towards a message.
    fn progressed(&mut self) {
        self.idle = 0;
    }

    fn handle_line(&mut self, line: &[u8]) -> Action {
        if self.sasl != SaslStep::None {
            self.sasl_response(line)
        } else if line.len() + 2 > MAX_COMMAND_LINE && !starts_with_ignore_case(line, b"AUTH ") {
            Action::Reply(Reply::LINE_TOO_LONG)
        } else {
            match command::parse(line) {
                Ok(cmd) => self.command(cmd),
                Err(r) if r.close => Action::Close(r.reply),
                Err(r) => Action::Reply(r.reply),
            }
        }
    }

    /// Counts client errors (5xx replies); past the budget the session ends with 421.
    pub fn count_errors(&mut self, action: Action) -> Action {
        match &action {
            Action::Reply(r) if r.is_permanent() => {
                self.errors += 1;
                if self.errors >= self.ctx.config.limits.max_errors {
                    return Action::Close(Reply::TOO_MANY_ERRORS);
                }
                action
            }
            _ => action,
        }
    }

    fn command(&mut self, cmd: Command) -> Action {
        match cmd {
            Command::Ehlo(name) => {
                self.tx = None;
                self.helo = Some(name);
                self.esmtp = true;
                Action::Reply(self.ehlo_reply())
            }
            Command::Helo(name) => {
                self.tx = None;
                self.helo = Some(name);
                self.esmtp = false;
                Action::Reply(Reply::plain(250, self.ctx.config.hostname.to_string()))
            }
            Command::Mail(mail) => self.mail(mail),
            Command::Rcpt { to, utf8, dsn } => self.rcpt(&to, utf8, dsn),
            Command::Data => match &self.tx {
                None => Action::Reply(Reply::NEED_MAIL_FIRST),
                Some(tx) if tx.recipients.is_empty() => Action::Reply(Reply::NO_VALID_RECIPIENTS),
                Some(_) => {
                    self.progressed();
                    Action::StartData(Reply::START_DATA)
                }
            },
            Command::Bdat { size, last } => self.bdat(size, last),
            Command::Rset => {
                self.tx = None;
                Action::Reply(Reply::OK)
            }
            Command::Noop => Action::Reply(Reply::OK),
            Command::Quit => Action::Close(Reply::BYE),
            Command::Help => Action::Reply(Reply::HELP),
            Command::Vrfy => Action::Reply(Reply::CANNOT_VRFY),
            Command::Expn => Action::Reply(Reply::NOT_IMPLEMENTED),
            Command::StartTls => {
                if self.ctx.tls.is_some() {
                    Action::Reply(Reply::ALREADY_TLS)
                } else if !self.ctx.starttls_available {
                    Action::Reply(Reply::TLS_NOT_OFFERED)
                } else {
                    Action::StartTls(Reply::READY_TLS)
                }
            }
            Command::Auth { mechanism, initial } => self.auth(mechanism, initial),
        }
    }

    fn ehlo_reply(&self) -> Reply {
        let cfg = &self.ctx.config;
        let mut lines = vec![
            cfg.hostname.to_string(),
            "PIPELINING".to_string(),
            format!("SIZE {}", cfg.limits.max_message_size),
            "8BITMIME".to_string(),
            "SMTPUTF8".to_string(),
            "ENHANCEDSTATUSCODES".to_string(),
            "CHUNKING".to_string(),
            "DSN".to_string(),
        ];
        if self.ctx.tls.is_none() && self.ctx.starttls_available {
            lines.push("STARTTLS".to_string());
        }
        // RFC 8689 §3: only over TLS.
        if self.ctx.tls.is_some() {
            lines.push("REQUIRETLS".to_string());
        }
        // RFC 4954 §4 and RFC 8314 §3: AUTH only where submission is, and only over TLS.
        if self.ctx.listener.is_submission() && self.ctx.tls.is_some() && self.user.is_none() {
            lines.push("AUTH PLAIN LOGIN".to_string());
        }
        Reply::plain(250, lines.join("\n"))
    }

    fn mail(&mut self, mail: MailFrom) -> Action {
        if self.helo.is_none() {
            return Action::Reply(Reply::NEED_EHLO_FIRST);
        }
        if self.tx.is_some() {
            return Action::Reply(Reply::NESTED_MAIL);
        }
        if mail.auth && !self.ctx.listener.is_submission() {
            // RFC 4954 §5: AUTH= is a parameter of the AUTH extension, which port 25 does
            // not offer. Where AUTH is offered the value is checked and ignored.
            return Action::Reply(Reply::UNKNOWN_PARAMETER);
        }
        if self.ctx.listener.is_submission() {
            if self.ctx.tls.is_none() {
                return Action::Reply(Reply::TLS_REQUIRED);
            }
            let Some(user) = &self.user else {
                return Action::Reply(Reply::AUTH_REQUIRED);
            };
            if !policy::may_send_as(&self.ctx.config, user, &mail.from) {
                return Action::Reply(Reply::SENDER_NOT_OWNED);
            }
        }
        if mail
            .size
            .is_some_and(|s| s > self.ctx.config.limits.max_message_size)
        {
            return Action::Reply(Reply::MESSAGE_TOO_BIG);
        }
        if mail.require_tls && self.ctx.tls.is_none() {
            return Action::Reply(Reply::REQUIRETLS_NEEDS_TLS);
        }
        let sending = match &self.user {
            Some(user) => match self.ctx.sending.reserve_message(&self.ctx.config, user) {
                Ok(slot) => Some(slot),
                Err(limit) => return Action::Reply(limit.reply()),
            },
            None => None,
        };
        self.tx = Some(Transaction {
            from: mail.from,
            smtputf8: mail.smtputf8,
            require_tls: mail.require_tls,
            recipients: Vec::new(),
            rcpt_count: 0,
            dsn: mail.dsn,
            rcpt_dsn: Vec::new(),
            sending,
        });
        Action::CheckRoom
    }

    /// Records the result of an [`Action::CheckRoom`]: the transaction MAIL started stands,
    /// or is dropped with the queue's 4xx (RFC 5321 §6.1: say so before taking the message).
    pub fn room_checked(&mut self, result: Result<(), Reply>) -> Action {
        match result {
            Ok(()) => Action::Reply(Reply::SENDER_OK),
            Err(reply) => {
                self.tx = None;
                Action::Reply(reply)
            }
        }
    }

    fn rcpt(&mut self, to: &mta_core::address::ForwardPath, utf8: bool, dsn: RcptDsn) -> Action {
        if self.tx.is_some()
            && let Some(action) = self.blocklisted(to, utf8, &dsn)
        {
            return action;
        }
        let relay = if self.user.is_some() {
            RelayPermission::Allowed
        } else {
            RelayPermission::Denied
        };
        let max = self.ctx.config.limits.max_recipients;
        let Some(tx) = self.tx.as_mut() else {
            return Action::Reply(Reply::NEED_MAIL_FIRST);
        };
        if tx.rcpt_count >= max {
            return Action::Reply(Reply::TOO_MANY_RECIPIENTS);
        }
        if utf8 && !tx.smtputf8 {
            return Action::Reply(Reply::NEED_SMTPUTF8);
        }
        let users = self.ctx.users.current();
        // A bounce to one of our SRS addresses goes back to the original sender.
        let today = mta_core::srs::day(std::time::SystemTime::now());
        let decision = mta_core::forwarding::rcpt_decision(&self.ctx.config, &tx.from, to, today)
            .unwrap_or_else(|| policy::rcpt(&self.ctx.config, &users, relay, to));
        match decision {
            RcptDecision::Accept(targets) => {
                let dsn = super::params::for_targets(dsn, to, &targets);
                let config = &self.ctx.config;
                if let Some(Err(limit)) = tx.sending.as_mut().map(|s| s.admit(config, &targets)) {
                    return Action::Reply(limit.reply());
                }
                let all_local = targets.iter().all(|t| config.is_local_domain(t.domain()));
                if matches!(config.local.delivery, LocalDelivery::Lmtp(_)) && all_local {
                    let from = tx.from.clone();
                    self.checking = Some((targets.clone(), dsn));
                    return Action::CheckRecipients {
                        from,
                        rcpts: targets,
                    };
                }
                // An accepted RCPT neither counts nor starts the count again: a message may
                // have many recipients, but MAIL, RCPT, RSET for ever must not hold a session.
                self.idle = self.idle.saturating_sub(1);
                add_recipients(tx, targets, &dsn);
                Action::Reply(Reply::RECIPIENT_OK)
            }
            RcptDecision::Reject(reply) => Action::Reply(reply),
        }
    }

    /// On the `smtp` listener with DNS blocklists configured: ask them first, or refuse
    /// the RCPT of a client they list (`dnsbl_action = "reject"`), except to postmaster
    /// (RFC 5321 §4.5.1).
    fn blocklisted(
        &mut self,
        to: &mta_core::address::ForwardPath,
        utf8: bool,
        dsn: &RcptDsn,
    ) -> Option<Action> {
        let config = &self.ctx.config;
        if self.ctx.listener != ListenerKind::Smtp || config.inbound.dnsbl.lists.is_empty() {
            return None;
        }
        match &self.dnsbl {
            None => {
                self.dnsbl_rcpt = Some((to.clone(), utf8, dsn.clone()));
                Some(Action::CheckDnsbl)
            }
            Some(Standing::Reject(reply)) if !is_postmaster(config, to) => {
                Some(Action::Reply(reply.clone()))
            }
            Some(_) => None,
        }
    }

    /// Records the result of an [`Action::CheckDnsbl`] and answers the RCPT that waited.
    pub fn dnsbl_checked(&mut self, standing: Standing) -> Action {
        self.dnsbl = Some(standing);
        let action = match self.dnsbl_rcpt.take() {
            Some((to, utf8, dsn)) => self.rcpt(&to, utf8, dsn),
            None => Action::Reply(Reply::NEED_MAIL_FIRST),
        };
        // A refusal counts as the client's error, as when it is answered at once.
        self.count_errors(action)
    }

    /// The `X-DNSBL:` field (with its CRLF) for this session's messages, when the lists
    /// named the client and `dnsbl_action = "mark"`.
    pub fn dnsbl_mark(&self) -> Option<&str> {
        match &self.dnsbl {
            Some(Standing::Mark(field)) => Some(field),
            _ => None,
        }
    }

    /// Records the result of an [`Action::CheckRecipients`]: the recipients join the
    /// transaction, or the RCPT is refused with `reply`.
    pub fn recipients_checked(&mut self, result: Result<(), Reply>) -> Action {
        let (targets, dsn) = self.checking.take().unwrap_or_default();
        match (result, self.tx.as_mut()) {
            (Ok(()), Some(tx)) => {
                // As in `rcpt`: the RCPT line was counted when it came; accepted, it is not.
                self.idle = self.idle.saturating_sub(1);
                add_recipients(tx, targets, &dsn);
                Action::Reply(Reply::RECIPIENT_OK)
            }
            (Ok(()), None) => Action::Reply(Reply::NEED_MAIL_FIRST),
            (Err(reply), _) => Action::Reply(reply),
        }
    }

    /// True while a mail transaction is open (after MAIL, until it is taken or reset).
    pub fn in_transaction(&self) -> bool {
        self.tx.is_some()
    }

    /// BDAT (RFC 3030 §2): outside a transaction, or without a recipient, the chunk is read
    /// and refused. Only a chunk with octets in it, or the last, moves towards a message:
    /// `BDAT 0` for ever must not hold a session.
    fn bdat(&mut self, size: u64, last: bool) -> Action {
        match &self.tx {
            None => Action::SkipChunk {
                size,
                reply: Reply::NEED_MAIL_FIRST,
            },
            Some(tx) if tx.recipients.is_empty() => Action::SkipChunk {
                size,
                reply: Reply::NO_VALID_RECIPIENTS,
            },
            Some(_) => {
                if size > 0 || last {
                    self.progressed();
                }
                Action::Chunk { size, last }
            }
        }
    }

    /// Takes the transaction after the data was read (whatever its fate), so the next
    /// MAIL starts afresh (RFC 5321 §4.1.1.4).
    pub fn take_transaction(&mut self) -> Option<Transaction> {
        self.tx.take()
    }

    fn auth(&mut self, mechanism: Mechanism, initial: Option<String>) -> Action {
        if !self.ctx.listener.is_submission() {
            return Action::Reply(Reply::AUTH_NOT_OFFERED);
        }
        if self.ctx.tls.is_none() {
            return Action::Reply(Reply::ENCRYPTION_REQUIRED);
        }
        if self.user.is_some() {
            return Action::Reply(Reply::ALREADY_AUTHENTICATED);
        }
        if self.tx.is_some() {
            // RFC 4954 §4: AUTH is not permitted during a mail transaction.
            return Action::Reply(Reply::AUTH_IN_TRANSACTION);
        }
        match (mechanism, initial.filter(|i| i != "=")) {
            // RFC 4954 §4: `=` is an empty initial response; PLAIN then asks for one.
            (Mechanism::Plain, None) => {
                self.sasl = SaslStep::PlainResponse;
                Action::Reply(Reply::plain(334, ""))
            }
            (Mechanism::Plain, Some(resp)) => self.plain(resp.as_bytes()),
            (Mechanism::Login, None) => {
                self.sasl = SaslStep::LoginUser;
                Action::Reply(Reply::plain(334, "VXNlcm5hbWU6"))
            }
            (Mechanism::Login, Some(resp)) => self.login_user(resp.as_bytes()),
        }
    }

    fn sasl_response(&mut self, line: &[u8]) -> Action {
        if line == b"*" {
            self.sasl = SaslStep::None;
            return Action::Reply(Reply::AUTH_CANCELLED);
        }
        match std::mem::replace(&mut self.sasl, SaslStep::None) {
            SaslStep::PlainResponse => self.plain(line),
            SaslStep::LoginUser => self.login_user(line),
            SaslStep::LoginPassword { login } => match decode(line) {
                Some(password) => self.check(login, password),
                None => Action::Reply(Reply::BAD_AUTH_SYNTAX),
            },
            SaslStep::None | SaslStep::Checking => Action::Reply(Reply::BAD_AUTH_SYNTAX),
        }
    }

    /// RFC 4616: `authzid NUL authcid NUL passwd`; authzid empty or equal to authcid.
    fn plain(&mut self, response: &[u8]) -> Action {
        let Some(text) = decode(response) else {
            return Action::Reply(Reply::BAD_AUTH_SYNTAX);
        };
        let mut parts = text.split('\0');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(authz), Some(login), Some(password), None)
                if authz.is_empty() || authz == login =>
            {
                self.check(login.to_string(), password.to_string())
            }
            (Some(_), Some(_), Some(_), None) => Action::Reply(Reply::AUTH_FAILED),
            _ => Action::Reply(Reply::BAD_AUTH_SYNTAX),
        }
    }

    fn login_user(&mut self, response: &[u8]) -> Action {
        match decode(response) {
            Some(login) => {
                self.sasl = SaslStep::LoginPassword { login };
                Action::Reply(Reply::plain(334, "UGFzc3dvcmQ6"))
            }
            None => Action::Reply(Reply::BAD_AUTH_SYNTAX),
        }
    }

    fn check(&mut self, login: String, password: String) -> Action {
        self.sasl = SaslStep::Checking;
        Action::CheckPassword { login, password }
    }

    /// Ends a [`Action::CheckPassword`] whose password could not be checked now: `reply` is
    /// temporary, not an error of the client's.
    pub fn auth_unavailable(&mut self, reply: Reply) -> Action {
        self.sasl = SaslStep::None;
        Action::Reply(reply)
    }

    /// Records the result of a [`Action::CheckPassword`].
    pub fn auth_checked(&mut self, result: Verified) -> Action {
        self.sasl = SaslStep::None;
        let action = match result {
            Verified::User(address) => {
                self.progressed();
                self.user = Some(address);
                Action::Reply(Reply::AUTH_OK)
            }
            Verified::Rejected => Action::Reply(Reply::AUTH_FAILED),
        };
        self.count_errors(action)
    }
}

/// Base64 to UTF-8 text; `=` is the empty response (RFC 4954 §4).
fn decode(response: &[u8]) -> Option<String> {
    if response == b"=" {
        return Some(String::new());
    }
    B64.decode(response)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
}

fn starts_with_ignore_case(line: &[u8], prefix: &[u8]) -> bool {
    line.len() >= prefix.len() && line[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// `<Postmaster>`, or `postmaster@` one of our domains (any case).
fn is_postmaster(config: &Config, to: &mta_core::address::ForwardPath) -> bool {
    match to {
        mta_core::address::ForwardPath::Postmaster => true,
        mta_core::address::ForwardPath::Address(a) => {
            a.local_part().eq_ignore_ascii_case("postmaster") && config.is_local_domain(a.domain())
        }
    }
}

/// Counts one accepted RCPT and adds what it expands to, without duplicates; each new
/// target keeps the RCPT's DSN parameters.
fn add_recipients(tx: &mut Transaction, targets: Vec<Address>, dsn: &RcptDsn) {
    tx.rcpt_count += 1;
    for t in targets {
        if !tx.recipients.iter().any(|r| r.key() == t.key()) {
            if !dsn.is_empty() {
                tx.rcpt_dsn.push((t.key(), dsn.clone()));
            }
            tx.recipients.push(t);
        }
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
