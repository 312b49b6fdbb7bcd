//! Delivery status notifications (RFC 3464): the message that tells a sender that some
//! recipients failed for good ([`DsnKind::Failed`]), are still being retried
//! ([`DsnKind::Delayed`]), or, when the sender asked with `NOTIFY=SUCCESS` (RFC 3461), were
//! delivered ([`DsnKind::Delivered`]) or handed to a next hop that does not offer DSN
//! ([`DsnKind::Relayed`]). All are the same message with another `Action`.
//!
//! [`build`] writes the DSN as a `multipart/report` (RFC 6522) with three parts: a human
//! explanation, the `message/delivery-status` fields (RFC 3464 §2.2, §2.3), and the original
//! message's header section (`text/rfc822-headers`), or with `RET=FULL` the whole message
//! (`message/rfc822`) when it is at most [`MAX_RETURNED`] octets and was not sent with
//! REQUIRETLS (RFC 8689). The third part is left
//! out (RFC 3464 §2 allows it) unless an authenticated user submitted the message or `mta`
//! wrote it ([`Envelope::may_sign`]): a DSN goes out DKIM-signed by our domain, and must not
//! carry header text a stranger chose and could replay as our signed mail.
//!
//! The sender's `ENVID` becomes `Original-Envelope-Id` and a recipient's `ORCPT`
//! `Original-Recipient` (RFC 3464 §2.2.1, §2.3.1); both were checked to be printable ASCII
//! when they were received, and are cleaned again here, so they can never start a field.
//! [`Queue::send_dsn`](crate::Queue::send_dsn) queues it as a new message from the null
//! path `<>`, so it can never itself be bounced (RFC 5321 §4.5.5), and never sends one to a
//! message whose own sender was `<>`.
//!
//! When the scheduler sends a DSN (permanent failure, expiry, the one delay warning) is its
//! business; this module only writes and queues them. Addresses with a UTF-8 local part use
//! the RFC 6533 `message/global-*` types.

use mta_core::address::{Address, Domain};
use mta_core::date;
use mta_core::dsn::{MAX_ENVID, MAX_ORCPT, Ret};
use mta_core::envelope::{Envelope, MessageId, Recipient};
use mta_core::outcome::{Outcome, is_status_code};
use tracing::info;

use crate::clock::{self, QueueAge, wall_ms};
use crate::store::{Record, StoreError};

/// Which notification a DSN is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DsnKind {
    /// The recipients failed for good: `Action: failed`.
    Failed,
    /// The recipients are still being retried: `Action: delayed`.
    Delayed,
    /// Delivered to their mailbox, and the sender asked to be told: `Action: delivered`.
    Delivered,
    /// Handed to a next hop that does not offer DSN, and the sender asked to be told of
    /// success: `Action: relayed` (RFC 3461 §6.2.4.2).
    Relayed,
}

impl DsnKind {
    fn action(self) -> &'static str {
        match self {
            DsnKind::Failed => "failed",
            DsnKind::Delayed => "delayed",
            DsnKind::Delivered => "delivered",
            DsnKind::Relayed => "relayed",
        }
    }

    fn subject(self) -> &'static str {
        match self {
            DsnKind::Failed => "Undelivered Mail Returned to Sender",
            DsnKind::Delayed => "Delayed Mail (still being retried)",
            DsnKind::Delivered | DsnKind::Relayed => "Successful Mail Delivery Report",
        }
    }

    fn fallback_status(self) -> &'static str {
        match self {
            DsnKind::Failed => "5.0.0",
            DsnKind::Delayed => "4.0.0",
            DsnKind::Delivered | DsnKind::Relayed => "2.0.0",
        }
    }
}

/// One recipient line of a DSN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DsnRecipient {
    /// The recipient as the original envelope named it (`Final-Recipient`).
    pub address: Address,
    /// The enhanced status code (RFC 3463), such as `5.1.1` or `4.4.1`; see [`status_of`].
    pub status: String,
    /// What the remote server said, or our own reason. Untrusted text: [`build`] strips
    /// control characters and limits its length.
    pub diagnostic: String,
    /// The host that gave the answer, when one did (`Remote-MTA`).
    pub remote_mta: Option<String>,
}

/// The longest diagnostic text we copy into a DSN line, in octets; keeps every line far
/// below RFC 5322 §2.1.1's 998.
const MAX_DIAGNOSTIC: usize = 700;
/// The longest remote host name we copy (a DNS name is at most 253 octets).
const MAX_HOST: usize = 255;
/// The most of the original header section that goes into part 3.
const MAX_HEADERS: usize = 64 * 1024;
/// The largest message returned whole (`RET=FULL`); a larger one is returned as its
/// header section, like without `RET`.
pub const MAX_RETURNED: usize = MAX_HEADERS;
/// RFC 5322 §2.1.1: at most 998 octets per line, without the CRLF.
const MAX_LINE: usize = 998;

/// The enhanced status code (RFC 3463 `class.subject.detail`) of a recipient's last
/// outcome: its enhanced status code when that is of the class of its reply code (RFC 2034
/// §4), else `x.0.0` of the reply code's class, read from the typed fields alone.
///
/// The class must also agree with the notification (RFC 3464 §2.3.4: `failed` is 5, and
/// `delayed` is 4); otherwise, and without any code: `"5.0.0"` for [`DsnKind::Failed`],
/// `"4.0.0"` for [`DsnKind::Delayed`].
pub fn status_of(outcome: Option<&Outcome>, kind: DsnKind) -> String {
    let fallback = kind.fallback_status();
    let Some(outcome) = outcome else {
        return fallback.to_string();
    };
    let class = |code: u16| char::from_digit(u32::from(code / 100), 10);
    let status = match (outcome.code, outcome.enhanced.as_deref()) {
        (Some(code), Some(e)) if is_status_code(e) && e.starts_with(class(code).unwrap_or('?')) => {
            e.to_string()
        }
        (Some(code), _) if (200..600).contains(&code) => format!("{}.0.0", code / 100),
        (None, Some(e)) if is_status_code(e) => e.to_string(),
        _ => return fallback.to_string(),
    };
    match status.as_bytes()[0] == fallback.as_bytes()[0] {
        true => status,
        false => fallback.to_string(),
    }
}

impl DsnRecipient {
    /// The DSN line for `r`, from its last outcome: status, the answer quoted as the
    /// diagnostic, and the host that gave it.
    ///
    /// A success has no diagnostic unless a server answered with a reply: our own record of
    /// a local delivery names a Maildir file, which is not the sender's to read.
    pub fn of(r: &Recipient, kind: DsnKind) -> DsnRecipient {
        let last = r.last_result.as_ref();
        let success = matches!(kind, DsnKind::Delivered | DsnKind::Relayed);
        DsnRecipient {
            address: r.address.clone(),
            status: status_of(last, kind),
            remote_mta: last.and_then(|o| o.remote.as_ref()?.host.clone()),
            diagnostic: last
                .filter(|o| !success || o.code.is_some())
                .map(Outcome::answer)
                .unwrap_or_default(),
        }
    }
}

/// Builds the DSN for `rcpts` of `original` as message bytes with CRLF line endings.
/// `dsn_id` is the queue id the DSN will have (it names the `Message-ID` and the MIME
/// boundary); `original_body` is the stored message, of which only the header section is
/// copied.
///
/// `None` when no DSN is due: the original sender is the null path `<>` (never bounce a
/// bounce, RFC 5321 §4.5.5, RFC 3464 §6.2), or `rcpts` is empty.
pub fn build(
    kind: DsnKind,
    hostname: &Domain,
    dsn_id: &MessageId,
    original: &Envelope,
    rcpts: &[DsnRecipient],
    original_body: &[u8],
    now_secs: u64,
) -> Option<Vec<u8>> {
    let sender = original.sender.address()?;
    if rcpts.is_empty() {
        return None;
    }
    let with_headers = original.may_sign();
    let explanation = explanation(kind, hostname, original, rcpts, with_headers);
    let (status_type, status) = delivery_status(kind, hostname, original, rcpts);
    // A REQUIRETLS message never comes back whole: the notice is not sent with REQUIRETLS.
    let whole = original.dsn.ret == Some(Ret::Full)
        && original_body.len() <= MAX_RETURNED
        && !original.require_tls;
    let headers = match (with_headers, whole) {
        (true, true) => whole_message(original_body),
        (true, false) => header_part(original_body),
        (false, _) => Vec::new(),
    };
    let headers_type = match (whole, headers.is_ascii()) {
        (true, _) => "message/rfc822",
        (false, true) => "text/rfc822-headers",
        // RFC 6533 §3.7: a header section that is not ASCII (SMTPUTF8 mail).
        (false, false) => "message/global-headers",
    };
    let headers_description = match (whole, kind) {
        (true, _) => "Returned message",
        (false, DsnKind::Failed | DsnKind::Delayed) => "Undelivered message headers",
        (false, DsnKind::Delivered | DsnKind::Relayed) => "Message headers",
    };
    let mut parts: Vec<(&str, &str, &[u8])> = vec![
        (
            "text/plain; charset=utf-8",
            "Notification",
            explanation.as_bytes(),
        ),
        (status_type, "Delivery report", status.as_bytes()),
    ];
    if with_headers {
        parts.push((headers_type, headers_description, &headers));
    }
    let boundary = boundary(dsn_id, &parts);
    let eight_bit = parts.iter().any(|(_, _, content)| !content.is_ascii());

    let mut out = Vec::with_capacity(2048 + headers.len());
    let line = |out: &mut Vec<u8>, text: &str| {
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(b"\r\n");
    };
    line(
        &mut out,
        &format!("From: Mail Delivery System <MAILER-DAEMON@{hostname}>"),
    );
    line(&mut out, &format!("To: <{sender}>"));
    line(&mut out, &format!("Subject: {}", kind.subject()));
    line(&mut out, &format!("Date: {}", date::rfc5322(now_secs)));
    line(&mut out, &format!("Message-ID: <{dsn_id}@{hostname}>"));
    // RFC 3834 §5: automatic responders must not answer this.
    line(&mut out, "Auto-Submitted: auto-replied");
    line(&mut out, "MIME-Version: 1.0");
    line(
        &mut out,
        "Content-Type: multipart/report; report-type=delivery-status;",
    );
    line(&mut out, &format!("\tboundary=\"{boundary}\""));
    if eight_bit {
        line(&mut out, "Content-Transfer-Encoding: 8bit");
    }
    line(&mut out, "");
    line(&mut out, "This is a MIME-encapsulated message.");
    for (content_type, description, content) in parts {
        line(&mut out, "");
        line(&mut out, &format!("--{boundary}"));
        line(&mut out, &format!("Content-Type: {content_type}"));
        line(&mut out, &format!("Content-Description: {description}"));
        if !content.is_ascii() {
            line(&mut out, "Content-Transfer-Encoding: 8bit");
        }
        line(&mut out, "");
        out.extend_from_slice(content);
    }
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Some(out)
}

/// Part 1: what a person reads; it quotes nothing of the original message's headers. Every
/// line ends in CRLF.
fn explanation(
    kind: DsnKind,
    hostname: &Domain,
    original: &Envelope,
    rcpts: &[DsnRecipient],
    with_headers: bool,
) -> String {
    let mut text = format!("This is the mail system at {hostname}.\r\n\r\n");
    text.push_str(match (kind, with_headers) {
        (DsnKind::Failed, true) => {
            "Your message could not be delivered to the recipients below. This is\r\n\
             permanent: the mail system will not try again. The reason for each\r\n\
             recipient follows; the headers of your message are attached.\r\n"
        }
        (DsnKind::Failed, false) => {
            "Your message could not be delivered to the recipients below. This is\r\n\
             permanent: the mail system will not try again. The reason for each\r\n\
             recipient follows.\r\n"
        }
        (DsnKind::Delivered, _) => {
            "Your message was delivered to the recipients below, as you asked to be\r\n\
             told.\r\n"
        }
        (DsnKind::Relayed, _) => {
            "Your message was passed on to the recipients' next mail server below.\r\n\
             That server does not send delivery notifications, so this is the last\r\n\
             news of it you will get from the mail system.\r\n"
        }
        (DsnKind::Delayed, _) => {
            "Your message has not been delivered yet to the recipients below. The\r\n\
             mail system will keep trying; you do not need to send it again. You\r\n\
             will be told if delivery fails for good. This is the only notice of\r\n\
             the delay.\r\n"
        }
    });
    text.push_str(&format!(
        "\r\nQueue id: {}\r\nReceived: {}\r\n\r\n",
        original.id,
        date::rfc5322(original.received_at)
    ));
    for rcpt in rcpts {
        text.push_str(&format!(
            "<{}>: {}",
            rcpt.address,
            clean(&rcpt.diagnostic, MAX_DIAGNOSTIC)
        ));
        if let Some(host) = &rcpt.remote_mta {
            text.push_str(&format!(" (from {})", clean(host, MAX_HOST)));
        }
        text.push_str("\r\n");
    }
    text
}

/// Part 2: the machine-readable fields (RFC 3464 §2.2 per message, §2.3 per recipient),
/// with its content type. Every line ends in CRLF.
fn delivery_status(
    kind: DsnKind,
    hostname: &Domain,
    original: &Envelope,
    rcpts: &[DsnRecipient],
) -> (&'static str, String) {
    let mut global = false;
    let mut text = String::new();
    let envid = original.dsn.envid.as_deref().map(|e| clean(e, MAX_ENVID));
    if let Some(envid) = envid.filter(|e| !e.is_empty()) {
        text.push_str(&format!("Original-Envelope-Id: {envid}\r\n"));
    }
    text.push_str(&format!(
        "Reporting-MTA: dns; {hostname}\r\nX-Mta-Queue-ID: {}\r\nArrival-Date: {}\r\n",
        original.id,
        date::rfc5322(original.received_at)
    ));
    for rcpt in rcpts {
        let address = rcpt.address.to_string();
        // RFC 6533 §3: a UTF-8 address needs the utf-8 address type, which only
        // message/global-delivery-status may carry.
        let address_type = if address.is_ascii() {
            "rfc822"
        } else {
            global = true;
            "utf-8"
        };
        let status = if is_status_code(&rcpt.status) {
            rcpt.status.as_str()
        } else {
            kind.fallback_status()
        };
        text.push_str("\r\n");
        if let Some(orcpt) = original_recipient(original, &rcpt.address) {
            text.push_str(&format!("Original-Recipient: {orcpt}\r\n"));
        }
        text.push_str(&format!(
            "Final-Recipient: {address_type}; {address}\r\nAction: {}\r\nStatus: {status}\r\n",
            kind.action()
        ));
        if let Some(host) = &rcpt.remote_mta {
            text.push_str(&format!("Remote-MTA: dns; {}\r\n", clean(host, MAX_HOST)));
        }
        let diagnostic = clean(&rcpt.diagnostic, MAX_DIAGNOSTIC);
        if !diagnostic.is_empty() {
            // "smtp" only for what is an SMTP reply (RFC 3464 §2.3.6); our own reasons
            // (DNS, TLS, expiry) get an extension type.
            let diagnostic_type = if is_smtp_reply(&diagnostic) {
                "smtp"
            } else {
                "X-mta"
            };
            text.push_str(&format!(
                "Diagnostic-Code: {diagnostic_type}; {diagnostic}\r\n"
            ));
        }
    }
    let content_type = if global {
        "message/global-delivery-status"
    } else {
        "message/delivery-status"
    };
    (content_type, text)
}

/// `rfc822; a@b`: the `ORCPT` the sender gave for `address` (RFC 3464 §2.3.1), made safe
/// for one line.
fn original_recipient(original: &Envelope, address: &Address) -> Option<String> {
    let r = original.recipients.iter().find(|r| &r.address == address)?;
    let orcpt = r.dsn.orcpt.as_ref()?;
    let addr_type = clean(&orcpt.addr_type, 32);
    let value = clean(&orcpt.address, MAX_ORCPT);
    let plain = |s: &str| !s.is_empty() && !s.contains(';');
    (plain(&addr_type) && !value.is_empty()).then(|| format!("{addr_type}; {value}"))
}

/// True when `text` starts like an SMTP reply: a 4xx or 5xx code, then a space or a dash.
fn is_smtp_reply(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() >= 4
        && matches!(b[0], b'4' | b'5')
        && b[1].is_ascii_digit()
        && b[2].is_ascii_digit()
        && matches!(b[3], b' ' | b'-')
}

/// Part 3: the original header section, at most [`MAX_HEADERS`], with CRLF line endings
/// and no line over [`MAX_LINE`]; ends in CRLF unless empty.
fn header_part(original_body: &[u8]) -> Vec<u8> {
    let section = header_section(original_body);
    let mut out = Vec::with_capacity(section.len().min(MAX_HEADERS) + 2);
    for line in section.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let line = &line[..line.len().min(MAX_LINE)];
        if out.len() + line.len() + 2 > MAX_HEADERS {
            break;
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Part 3 with `RET=FULL`: the whole message, with CRLF line endings and no line over
/// [`MAX_LINE`]; ends in CRLF unless empty.
fn whole_message(original_body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(original_body.len() + 2);
    let body = original_body.strip_suffix(b"\n").unwrap_or(original_body);
    for line in body.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        out.extend_from_slice(&line[..line.len().min(MAX_LINE)]);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The header section of a message: everything before the first empty line (RFC 5322
/// §2.1), or the whole message when it has no body.
pub(crate) fn header_section(message: &[u8]) -> &[u8] {
    if message.starts_with(b"\r\n") || message.starts_with(b"\n") {
        return &[];
    }
    let crlf = find(message, b"\r\n\r\n").map(|i| i + 2);
    let lf = find(message, b"\n\n").map(|i| i + 1);
    let end = match (crlf, lf) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => message.len(),
    };
    &message[..end]
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A MIME boundary (RFC 2046 §5.1.1) that occurs in none of the parts: it starts with the
/// new queue id, and gets a counter in the unlikely case the original headers contain it.
fn boundary(dsn_id: &MessageId, parts: &[(&str, &str, &[u8])]) -> String {
    let base = format!("=_mta-dsn-{dsn_id}");
    let mut candidate = base.clone();
    let mut n = 0u32;
    while parts
        .iter()
        .any(|(_, _, content)| find(content, candidate.as_bytes()).is_some())
    {
        n += 1;
        candidate = format!("{base}-{n}");
    }
    candidate
}

/// Text from elsewhere (a remote server's reply, a host name), made safe for one line of a
/// DSN: control characters (CR and LF included) and runs of white space become one space,
/// anything outside ASCII becomes `?`, and it is cut to `max` octets.
fn clean(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars() {
        let c = if c.is_control() || c.is_whitespace() {
            ' '
        } else if c.is_ascii() {
            c
        } else {
            '?'
        };
        if c == ' ' && (out.is_empty() || out.ends_with(' ')) {
            continue;
        }
        if out.len() >= max {
            out.truncate(max.saturating_sub(3));
            out.push_str("...");
            break;
        }
        out.push(c);
    }
    out.trim_end().to_string()
}

impl crate::Queue {
    /// Builds the DSN for `rcpts` of `original` and queues it durably as a new message
    /// from `<>` to the original sender; the scheduler is woken to deliver it. Returns the
    /// DSN's queue id, or `None` when no DSN is due (the original sender is `<>` or an
    /// address literal, or `rcpts` is empty).
    ///
    /// # Errors
    /// [`StoreError`] when the DSN cannot be stored; nothing was queued then.
    pub async fn send_dsn(
        &self,
        kind: DsnKind,
        original: &Envelope,
        rcpts: &[DsnRecipient],
        original_body: &[u8],
    ) -> Result<Option<MessageId>, StoreError> {
        let Some(to) = original.sender.address() else {
            return Ok(None);
        };
        if to.domain().is_literal() {
            // Anyone can write `MAIL FROM:<x@[10.0.0.1]>`: a bounce would then be mail we
            // send to an address of their choosing, inside our network or not.
            tracing::warn!(msg = %original.id, sender = %to, "no DSN: the sender is an address literal");
            return Ok(None);
        }
        // The id and date are for people (wall clock); the schedule is on the queue clock.
        let now = wall_ms();
        let clock = clock::reading();
        let hostname = &self.settings().hostname;
        let id = MessageId::generate(now);
        let Some(body) = build(
            kind,
            hostname,
            &id,
            original,
            rcpts,
            original_body,
            now / 1000,
        ) else {
            return Ok(None);
        };
        let record = Record {
            envelope: Envelope::generated(
                id.clone(),
                vec![to.clone()],
                hostname.as_str(),
                now / 1000,
                body.len(),
            ),
            next_attempt_ms: clock.now_ms,
            age: QueueAge::new(clock),
        };
        // The store directly rather than `Enqueue`, so the caller gets the StoreError with
        // its context; this is what `Enqueue::enqueue` does too.
        self.store().insert(&record, body).await?;
        info!(msg = %id, "queued");
        self.wake();
        match kind {
            DsnKind::Failed => info!(msg = %original.id, dsn = %id, "bounce sent"),
            DsnKind::Delayed => info!(msg = %original.id, dsn = %id, "delay notice sent"),
            DsnKind::Delivered | DsnKind::Relayed => {
                info!(msg = %original.id, dsn = %id, action = kind.action(), "success notice sent")
            }
        }
        Ok(Some(id))
    }
}

#[cfg(test)]
#[path = "bounce_tests.rs"]
mod tests;
