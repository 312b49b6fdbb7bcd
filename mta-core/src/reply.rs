//! SMTP replies: the basic code (RFC 5321 §4.2), the enhanced status code (RFC 3463,
//! RFC 2034) and the text. Every reply the server sends is a named constant here, so the
//! wording and codes live in one place.

use std::borrow::Cow;
use std::fmt;

/// One SMTP reply. `text` may hold several lines separated by `\n`; [`Reply::to_wire`]
/// writes them as a multi-line reply, each line with the same codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Basic reply code, 200..=599.
    pub code: u16,
    /// Enhanced status code such as `5.1.1`, or `None` for replies RFC 2034 exempts
    /// (the 220 greeting, 221 is not exempt but EHLO's 250 lines are).
    pub enhanced: Option<&'static str>,
    /// Human-readable text. Never contains CR; never carries client input unescaped.
    pub text: Cow<'static, str>,
}

macro_rules! replies {
    ($($(#[$doc:meta])* $name:ident = $code:literal $enh:literal $text:literal;)*) => {
        impl Reply {
            $($(#[$doc])* pub const $name: Reply = Reply {
                code: $code,
                enhanced: Some($enh),
                text: Cow::Borrowed($text),
            };)*
        }
    };
}

replies! {
    /// 250 after RSET, NOOP, MAIL, RCPT.
    OK = 250 "2.0.0" "OK";
    /// 250 after MAIL FROM.
    SENDER_OK = 250 "2.1.0" "Sender OK";
    /// 250 after RCPT TO.
    RECIPIENT_OK = 250 "2.1.5" "Recipient OK";
    /// 221 after QUIT.
    BYE = 221 "2.0.0" "Bye";
    /// 354 after DATA.
    START_DATA = 354 "2.0.0" "End data with <CR><LF>.<CR><LF>";
    /// 220 after STARTTLS.
    READY_TLS = 220 "2.0.0" "Ready to start TLS";
    /// 235 after a successful AUTH.
    AUTH_OK = 235 "2.7.0" "Authentication successful";
    /// 252 for VRFY: we never confirm or list mailboxes (RFC 5321 §3.5.3).
    CANNOT_VRFY = 252 "2.1.5" "Cannot VRFY user, but will accept message and attempt delivery";
    /// 214 for HELP.
    HELP = 214 "2.0.0" "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT HELP VRFY STARTTLS AUTH";
    /// 421 when the server is shutting down.
    SHUTTING_DOWN = 421 "4.3.2" "Service shutting down, try again later";
    /// 421 when the client was idle too long.
    TIMEOUT = 421 "4.4.2" "Idle timeout, closing connection";
    /// 421 when the client made too many errors.
    TOO_MANY_ERRORS = 421 "4.7.0" "Too many errors, closing connection";
    /// 421 when there are too many sessions.
    TOO_BUSY = 421 "4.7.0" "Too many connections, try again later";
    /// 451 when storing the message failed.
    LOCAL_ERROR = 451 "4.3.0" "Local error in processing, try again later";
    /// 451 when a milter could not be asked about a message and its `on_failure` is
    /// `tempfail`.
    FILTER_UNAVAILABLE = 451 "4.7.1" "Message filter unavailable, try again later";
    /// 451 when a milter asks to try again later (`t`) without a reply of its own.
    FILTER_TEMPFAIL = 451 "4.7.1" "Message deferred by content filter, try again later";
    /// 550 when a milter refuses a message (`r`) without a reply of its own.
    FILTER_REJECT = 550 "5.7.1" "Message rejected by content filter";
    /// 250 for a message a filter discarded on purpose: accepted, and not queued.
    DISCARDED = 250 "2.0.0" "OK";
    /// 450 at MAIL FROM when the authenticated user has sent `limits.sending.messages_per_hour`
    /// or `messages_per_day` messages (RFC 3463 X.7.1: delivery not authorized); temporary,
    /// so the client keeps the message and tries again when the window has moved.
    SENDING_LIMIT = 450 "4.7.1" "Sending limit reached for this account, try again later";
    /// 450 at RCPT TO when the user has written to `limits.sending.first_time_recipients_per_day`
    /// new addresses; an address it has written to before is still accepted.
    NEW_RECIPIENT_LIMIT = 450 "4.7.1" "Too many new recipients for this account today, try again later";
    /// 450 at MAIL FROM while an administrator holds the account (`mta user hold`):
    /// temporary, so the client keeps the mail until the account is released.
    SENDING_HELD = 450 "4.7.1" "Sending is suspended for this account, contact your administrator";
    /// 452 when the disk is (nearly) full.
    INSUFFICIENT_STORAGE = 452 "4.3.1" "Insufficient system storage, try again later";
    /// 452 when the message would pass `limits.message_memory` (RFC 3463: insufficient
    /// system storage), after its data or in answer to DATA.
    NO_MESSAGE_MEMORY = 452 "4.3.1" "Insufficient system storage: too much mail in progress, try again later";
    /// 452 beyond max_recipients (RFC 5321 §4.5.3.1.10).
    TOO_MANY_RECIPIENTS = 452 "4.5.3" "Too many recipients";
    /// 454 when the TLS handshake cannot start.
    TLS_UNAVAILABLE = 454 "4.7.0" "TLS not available";
    /// 500 for an unknown command.
    UNKNOWN_COMMAND = 500 "5.5.1" "Command unrecognized";
    /// 500 for a command line over 512 octets.
    LINE_TOO_LONG = 500 "5.5.6" "Line too long";
    /// 501 for a syntax error in the arguments.
    SYNTAX_ERROR = 501 "5.5.4" "Syntax error in parameters or arguments";
    /// 501 for a malformed sender address.
    BAD_SENDER_SYNTAX = 501 "5.1.7" "Bad sender address syntax";
    /// 501 for a malformed recipient address.
    BAD_RECIPIENT_SYNTAX = 501 "5.1.3" "Bad recipient address syntax";
    /// 501 for a bad AUTH response (not base64, wrong form).
    BAD_AUTH_SYNTAX = 501 "5.5.2" "Cannot decode authentication response";
    /// 503 for EHLO needed first.
    NEED_EHLO_FIRST = 503 "5.5.1" "Send EHLO first";
    /// 503 for RCPT or DATA before MAIL.
    NEED_MAIL_FIRST = 503 "5.5.1" "Need MAIL command first";
    /// 503 for a nested MAIL.
    NESTED_MAIL = 503 "5.5.1" "Sender already given";
    /// 503 for a second AUTH.
    ALREADY_AUTHENTICATED = 503 "5.5.1" "Already authenticated";
    /// 503 for STARTTLS twice.
    ALREADY_TLS = 503 "5.5.1" "TLS already active";
    /// 502 for STARTTLS where it is not offered.
    TLS_NOT_OFFERED = 502 "5.5.1" "STARTTLS not offered here";
    /// 502 for AUTH where it is not offered (port 25).
    AUTH_NOT_OFFERED = 502 "5.5.1" "AUTH not offered here";
    /// 504 for an AUTH mechanism we do not support.
    UNKNOWN_MECHANISM = 504 "5.5.4" "Unrecognized authentication type";
    /// 501 when AUTH was cancelled with `*`.
    AUTH_CANCELLED = 501 "5.0.0" "Authentication cancelled";
    /// 530 when MAIL comes before AUTH on a submission port.
    AUTH_REQUIRED = 530 "5.7.0" "Authentication required";
    /// 535 for a wrong user name or password (RFC 4954 §6).
    AUTH_FAILED = 535 "5.7.8" "Authentication credentials invalid";
    /// 538 for AUTH before TLS (RFC 4954 §6).
    ENCRYPTION_REQUIRED = 538 "5.7.11" "Encryption required for requested authentication mechanism";
    /// 530 for MAIL before STARTTLS on a port that requires TLS.
    TLS_REQUIRED = 530 "5.7.0" "Must issue a STARTTLS command first";
    /// 550 for an unknown local mailbox.
    NO_SUCH_USER = 550 "5.1.1" "No such user here";
    /// 550 for a recipient in a domain we do not own, without AUTH.
    RELAY_DENIED = 550 "5.7.1" "Relaying denied";
    /// 550 for an SRS address of ours that we did not make, or that is too old: one reply
    /// for both, which says nothing about which check failed.
    SRS_INVALID = 550 "5.1.1" "No such user here: unknown or expired forwarding address";
    /// 550 for mail to an SRS address from a sender that is not `<>`: only bounces and
    /// auto-replies (RFC 3464, RFC 3834 §3.3: both from `<>`) are passed back.
    SRS_BOUNCES_ONLY = 550 "5.7.1" "Only bounces (MAIL FROM:<>) are taken for a forwarding address";
    /// 553 when an authenticated user uses an address that is not theirs.
    SENDER_NOT_OWNED = 553 "5.7.1" "Sender address not owned by authenticated user";
    /// 552 for a message over max_message_size.
    MESSAGE_TOO_BIG = 552 "5.3.4" "Message size exceeds fixed maximum message size";
    /// 530 for `MAIL FROM:<…> REQUIRETLS` outside TLS (RFC 8689 §3: offered only over TLS).
    REQUIRETLS_NEEDS_TLS = 530 "5.7.10" "REQUIRETLS needs a TLS session: use STARTTLS first";
    /// 553 for a non-ASCII address without SMTPUTF8.
    NEED_SMTPUTF8 = 553 "5.6.7" "Non-ASCII address requires SMTPUTF8";
    /// 555 for an unknown MAIL/RCPT parameter.
    UNKNOWN_PARAMETER = 555 "5.5.4" "MAIL FROM/RCPT TO parameters not recognized or not implemented";
    /// 500 then close when the client speaks HTTP to us (ALPACA-style cross-protocol).
    HTTP_REFUSED = 500 "5.5.1" "This is an SMTP server, closing connection";
    /// 500 for a bare CR or LF in a command line.
    BARE_LINE_ENDING = 500 "5.5.2" "Bare CR or LF not allowed, use CRLF";
    /// 500 for a NUL octet in a command line (RFC 5321 §4.1.1.4): framing, so the connection
    /// closes as for a bare CR or LF.
    NUL_IN_COMMAND = 500 "5.5.2" "NUL not allowed in commands";
    /// 550 for a bare CR or LF inside DATA: the message is refused (SMTP smuggling).
    BARE_LINE_ENDING_DATA = 550 "5.6.0" "Bare CR or LF, or NUL, in message data not allowed";
    /// 550 for a text line over 1000 octets in DATA (RFC 5321 §4.5.3.1.6).
    DATA_LINE_TOO_LONG = 550 "5.6.0" "Message line longer than 1000 octets";
    /// 501 then close for `BDAT` whose size is not a number of at most 20 digits, or whose
    /// only other word is not `LAST` (RFC 3030 §2): the octets that follow cannot be counted.
    BAD_BDAT_SYNTAX = 501 "5.5.4" "Syntax: BDAT <size> [LAST]";
    /// 503 for DATA after BDAT in one transaction (RFC 3030 §3); the transaction is reset.
    DATA_AFTER_BDAT = 503 "5.5.1" "DATA after BDAT not allowed, transaction reset";
    /// 554 when there were no valid recipients at DATA.
    NO_VALID_RECIPIENTS = 554 "5.5.1" "No valid recipients";
    /// 552 for a header section over the size or field-count bound.
    HEADER_TOO_LARGE = 552 "5.3.4" "Message header too large";
    /// 554 for too many Received fields (RFC 5321 §6.3).
    MAIL_LOOP = 554 "5.4.6" "Too many Received headers: mail loop";
    /// 554 for a message whose first line is a continuation (it starts with a space or tab):
    /// it would join the trace field we put in front of it.
    LEADING_CONTINUATION = 554 "5.6.0" "The header section begins with a continuation line";
    /// 550 for mail from another server whose author is unclear: several `From:` fields, one
    /// with several mailboxes, or one after a line that ends the header for strict readers.
    /// DMARC (RFC 7489 §6.6.1) cannot be judged on such a message, and a mail client may show
    /// a `From:` the checks did not see.
    AMBIGUOUS_AUTHOR = 550 "5.7.1" "The author of the message is ambiguous (several or hidden From: fields)";
    /// 550 when an authenticated user's From: header names an address that is not theirs.
    FROM_NOT_OWNED = 550 "5.7.1" "From header address not owned by authenticated user";
    /// 550 when an authenticated user's Sender:, Resent-From: or Resent-Sender: header names
    /// an address that is not theirs.
    SENDER_HEADER_NOT_OWNED = 550 "5.7.1" "Sender or Resent- header address not owned by authenticated user";
    /// 550 at RCPT for a local recipient the LMTP server refused (asked before our 250).
    MAILBOX_REFUSED = 550 "5.1.1" "Recipient refused by the mailbox server";
    /// 550 for a submitted message without a From: header.
    NO_FROM_HEADER = 550 "5.6.0" "Message has no From header";
    /// 550 for mail from another server whose From: names one of our own domains when
    /// neither aligned SPF nor aligned DKIM passed (`[inbound] spoofed_from = "reject"`).
    SPOOFED_OWN_DOMAIN = 550 "5.7.1" "Originator header names our domain but the message is not authenticated as ours";
    /// 554 then close when message text arrived before our 354 (RFC 2920 §3.1).
    DATA_BEFORE_354 = 554 "5.5.0" "Data sent before 354; improper pipelining";
    /// 503 for AUTH inside a mail transaction (RFC 4954 §4).
    AUTH_IN_TRANSACTION = 503 "5.5.1" "AUTH not allowed during a mail transaction";
    /// 421 after too many failed AUTH attempts from one client address (a block that
    /// `mta auth unblock` clears).
    AUTH_LOCKED = 421 "4.7.0" "Too many authentication failures from your address, try again later";
    /// 454 when a password cannot be checked now (RFC 4954 §6: temporary authentication
    /// failure): too many checks waiting, or this address's attempts in progress reach its
    /// limit. Nothing is counted against the client.
    AUTH_BUSY = 454 "4.7.0" "Temporary authentication failure, try again later";
    /// 421 when one client address has too many sessions open.
    TOO_MANY_FROM_IP = 421 "4.7.0" "Too many connections from your address";
    /// 421 when one network (IPv4 /24, IPv6 /48) has too many sessions open.
    TOO_MANY_FROM_NETWORK = 421 "4.7.0" "Too many connections from your network";
    /// 421 then close after `limits.max_commands_without_progress` commands in a row that
    /// do not move towards a message.
    NO_PROGRESS = 421 "4.7.0" "Too many commands without progress, closing connection";
    /// 421 when a session has lasted longer than `limits.session_timeout`.
    SESSION_TOO_LONG = 421 "4.4.2" "Session time limit reached, closing connection";
    /// 502 for EXPN and the commands we never implement.
    NOT_IMPLEMENTED = 502 "5.5.1" "Command not implemented";
}

impl Reply {
    /// A reply with text made at run time (for example `250 2.0.0 queued as ID`).
    pub fn new(code: u16, enhanced: &'static str, text: impl Into<Cow<'static, str>>) -> Reply {
        Reply {
            code,
            enhanced: Some(enhanced),
            text: text.into(),
        }
    }

    /// A reply without an enhanced code (the greeting, EHLO's capability list).
    pub fn plain(code: u16, text: impl Into<Cow<'static, str>>) -> Reply {
        Reply {
            code,
            enhanced: None,
            text: text.into(),
        }
    }

    /// True for 4xx: the client should try again later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// True for 5xx: the client must not repeat the same request.
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// The reply as it goes on the wire: one `code-` line per line of text but the last,
    /// which is `code ` (RFC 5321 §4.2.1), each ending in CRLF.
    pub fn to_wire(&self) -> String {
        let mut out = String::new();
        let lines: Vec<&str> = self.text.split('\n').collect();
        for (i, line) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            out.push_str(&self.code.to_string());
            out.push(sep);
            if let Some(enh) = self.enhanced {
                out.push_str(enh);
                out.push(' ');
            }
            // Defence in depth: no CR may reach the wire from text.
            out.extend(line.chars().filter(|c| *c != '\r'));
            out.push_str("\r\n");
        }
        out
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.enhanced {
            Some(e) => write!(f, "{} {} {}", self.code, e, self.text.replace('\n', " / ")),
            None => write!(f, "{} {}", self.code, self.text.replace('\n', " / ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format() {
        assert_eq!(Reply::OK.to_wire(), "250 2.0.0 OK\r\n");
        assert_eq!(
            Reply::plain(250, "mx.test\nPIPELINING\nSIZE 10").to_wire(),
            "250-mx.test\r\n250-PIPELINING\r\n250 SIZE 10\r\n"
        );
        assert_eq!(
            Reply::new(451, "4.3.0", "a\rb").to_wire(),
            "451 4.3.0 ab\r\n"
        );
        assert!(Reply::LOCAL_ERROR.is_transient());
        assert!(Reply::NO_SUCH_USER.is_permanent());
    }
}
