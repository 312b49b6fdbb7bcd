//! Delivery status notifications (RFC 3464): the message that tells a sender that some
//! recipients failed for good ([`DsnKind::Failed`]) or are still being retried
//! ([`DsnKind::Delayed`]).
//!
//! [`build`] writes the DSN as a `multipart/report` (RFC 6522) with three parts: a human
//! explanation, the `message/delivery-status` fields (RFC 3464 §2.2, §2.3), and the original
//! message's header section (`text/rfc822-headers`, never the body).
//! [`Queue::send_dsn`](crate::Queue::send_dsn) queues it as a new message from the null
//! path `<>`, so it can never itself be bounced (RFC 5321 §4.5.5), and never sends one to a
//! message whose own sender was `<>`.
//!
//! When the scheduler sends a DSN (permanent failure, expiry, the one delay warning) is its
//! business; this module only writes and queues them. Addresses with a UTF-8 local part use
//! the RFC 6533 `message/global-*` types.

use mta_core::address::{Address, Domain, ReversePath};
use mta_core::date;
use mta_core::envelope::{Envelope, ListenerKind, MessageId, Origin, Recipient};
use tracing::info;

use crate::scheduler::now_ms;
use crate::store::{Record, StoreError};

/// Which notification a DSN is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DsnKind {
    /// The recipients failed for good: `Action: failed`.
    Failed,
    /// The recipients are still being retried: `Action: delayed`.
    Delayed,
}

impl DsnKind {
    fn action(self) -> &'static str {
        match self {
            DsnKind::Failed => "failed",
            DsnKind::Delayed => "delayed",
        }
    }

    fn subject(self) -> &'static str {
        match self {
            DsnKind::Failed => "Undelivered Mail Returned to Sender",
            DsnKind::Delayed => "Delayed Mail (still being retried)",
        }
    }

    fn fallback_status(self) -> &'static str {
        match self {
            DsnKind::Failed => "5.0.0",
            DsnKind::Delayed => "4.0.0",
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
/// RFC 5322 §2.1.1: at most 998 octets per line, without the CRLF.
const MAX_LINE: usize = 998;

/// Extracts the enhanced status code (RFC 3463 `class.subject.detail`, class 4 or 5) from a
/// recipient's last result, such as `"550 5.1.1 no such user"`, `"5.1.10 null MX"` or
/// `"4.4.0 connection refused"`. Without one: `"5.0.0"` for [`DsnKind::Failed`], `"4.0.0"`
/// for [`DsnKind::Delayed`].
pub fn status_of(result: &str, kind: DsnKind) -> String {
    result
        .split(|c: char| c.is_whitespace() || ",;:()[]<>\"'-".contains(c))
        .find(|token| is_status_code(token))
        .unwrap_or(kind.fallback_status())
        .to_string()
}

/// RFC 3463 §2: class "." subject "." detail; class 4 or 5 (a DSN never reports success),
/// subject and detail 1 to 3 digits.
fn is_status_code(token: &str) -> bool {
    let digits = |s: &str, max: usize| {
        !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit())
    };
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(class), Some(subject), Some(detail), None) => {
            (class == "4" || class == "5") && digits(subject, 3) && digits(detail, 3)
        }
        _ => false,
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
    let explanation = explanation(kind, hostname, original, rcpts);
    let (status_type, status) = delivery_status(kind, hostname, original, rcpts);
    let headers = header_part(original_body);
    let headers_type = if headers.is_ascii() {
        "text/rfc822-headers"
    } else {
        // RFC 6533 §3.7: a header section that is not ASCII (SMTPUTF8 mail).
        "message/global-headers"
    };
    let parts: [(&str, &str, &[u8]); 3] = [
        (
            "text/plain; charset=utf-8",
            "Notification",
            explanation.as_bytes(),
        ),
        (status_type, "Delivery report", status.as_bytes()),
        (headers_type, "Undelivered message headers", &headers),
    ];
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

/// Part 1: what a person reads. Every line ends in CRLF.
fn explanation(
    kind: DsnKind,
    hostname: &Domain,
    original: &Envelope,
    rcpts: &[DsnRecipient],
) -> String {
    let mut text = format!("This is the mail system at {hostname}.\r\n\r\n");
    text.push_str(match kind {
        DsnKind::Failed => {
            "Your message could not be delivered to the recipients below. This is\r\n\
             permanent: the mail system will not try again. The reason for each\r\n\
             recipient follows; the headers of your message are attached.\r\n"
        }
        DsnKind::Delayed => {
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
    let mut text = format!(
        "Reporting-MTA: dns; {hostname}\r\nX-Mta-Queue-ID: {}\r\nArrival-Date: {}\r\n",
        original.id,
        date::rfc5322(original.received_at)
    );
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
        text.push_str(&format!(
            "\r\nFinal-Recipient: {address_type}; {address}\r\nAction: {}\r\nStatus: {status}\r\n",
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

/// The envelope of a DSN to `to`: from `<>`, made locally, one pending recipient.
fn dsn_envelope(
    id: MessageId,
    to: Address,
    hostname: &Domain,
    now_secs: u64,
    size: usize,
) -> Envelope {
    Envelope {
        id,
        sender: ReversePath::Null,
        recipients: vec![Recipient::pending(to)],
        received_at: now_secs,
        size: size as u64,
        origin: Origin {
            listener: ListenerKind::Smtp,
            peer: "local".into(),
            helo: hostname.to_string(),
            auth_user: None,
            tls: None,
        },
        delay_warned: false,
    }
}

impl crate::Queue {
    /// Builds the DSN for `rcpts` of `original` and queues it durably as a new message
    /// from `<>` to the original sender; the scheduler is woken to deliver it. Returns the
    /// DSN's queue id, or `None` when no DSN is due (the original sender is `<>`, or
    /// `rcpts` is empty).
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
        let now = now_ms();
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
            envelope: dsn_envelope(id.clone(), to.clone(), hostname, now / 1000, body.len()),
            next_attempt_ms: now,
        };
        // The store directly rather than `Enqueue`, so the caller gets the StoreError with
        // its context; this is what `Enqueue::enqueue` does too.
        self.store().insert(&record, &body).await?;
        info!(msg = %id, "queued");
        self.wake();
        match kind {
            DsnKind::Failed => info!(msg = %original.id, dsn = %id, "bounce sent"),
            DsnKind::Delayed => info!(msg = %original.id, dsn = %id, "delay notice sent"),
        }
        Ok(Some(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::QueueSettings;
    use mta_core::envelope::RcptState;

    fn addr(a: &str) -> Address {
        Address::parse(a).expect("test address")
    }

    fn original(sender: ReversePath) -> Envelope {
        let mut e = dsn_envelope(
            MessageId::parse("0190000000000000abcd").expect("id"),
            addr("b@remote.test"),
            &Domain::parse("mx.test").expect("domain"),
            1_795_886_158,
            100,
        );
        e.sender = sender;
        e.recipients.push(Recipient::pending(addr("c@remote.test")));
        e.recipients.push(Recipient::pending(addr("d@remote.test")));
        e
    }

    fn rcpt(a: &str, status: &str, diagnostic: &str, mx: Option<&str>) -> DsnRecipient {
        DsnRecipient {
            address: addr(a),
            status: status.into(),
            diagnostic: diagnostic.into(),
            remote_mta: mx.map(str::to_string),
        }
    }

    const BODY: &[u8] = b"Received: from client.test\r\n\tby mx.test\r\nFrom: <a@local.test>\r\n\
Subject: hello\r\nMessage-ID: <1@local.test>\r\n\r\nSECRET BODY LINE\r\n";

    fn dsn(kind: DsnKind, rcpts: &[DsnRecipient], body: &[u8]) -> String {
        let sender = ReversePath::Address(addr("a@local.test"));
        let bytes = build(
            kind,
            &Domain::parse("mx.test").expect("domain"),
            &MessageId::parse("01900000000000001234").expect("id"),
            &original(sender),
            rcpts,
            body,
            1_795_886_158,
        )
        .expect("a DSN is due");
        String::from_utf8(bytes).expect("utf-8")
    }

    /// The boundary from the top-level Content-Type, and the body split on it.
    fn parts(message: &str) -> (String, Vec<String>) {
        let (head, body) = message.split_once("\r\n\r\n").expect("header/body");
        let boundary = head
            .split("boundary=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("boundary parameter")
            .to_string();
        let delimiter = format!("\r\n--{boundary}");
        let mut pieces: Vec<String> = body.split(&delimiter).map(str::to_string).collect();
        assert_eq!(pieces.pop().as_deref(), Some("--\r\n"), "close delimiter");
        pieces.remove(0); // preamble
        (boundary, pieces)
    }

    #[test]
    fn failed_dsn_is_a_multipart_report() {
        let rcpts = [
            rcpt(
                "b@remote.test",
                "5.1.1",
                "550 5.1.1 no such user",
                Some("mx1.remote.test"),
            ),
            rcpt("c@remote.test", "5.4.4", "5.4.4 no MX and no address", None),
        ];
        let text = dsn(DsnKind::Failed, &rcpts, BODY);
        assert!(text.lines().all(|l| l.len() <= 998));
        assert!(!text.replace("\r\n", "").contains('\n'), "CRLF only");
        let (head, _) = text.split_once("\r\n\r\n").expect("header/body");
        for want in [
            "From: Mail Delivery System <MAILER-DAEMON@mx.test>\r\n",
            "To: <a@local.test>\r\n",
            "Subject: Undelivered Mail Returned to Sender\r\n",
            "Date: Sat, 28 Nov 2026 17:15:58 +0000\r\n",
            "Message-ID: <01900000000000001234@mx.test>\r\n",
            "Auto-Submitted: auto-replied\r\n",
            "MIME-Version: 1.0\r\n",
            "Content-Type: multipart/report; report-type=delivery-status;\r\n",
        ] {
            assert!(head.contains(want), "missing {want:?} in\n{head}");
        }
        let (boundary, parts) = parts(&text);
        assert!(boundary.contains("01900000000000001234"));
        assert_eq!(parts.len(), 3);
        let types: Vec<&str> = parts
            .iter()
            .map(|p| {
                p.lines()
                    .find_map(|l| l.strip_prefix("Content-Type: "))
                    .expect("part content type")
            })
            .collect();
        assert_eq!(
            types,
            [
                "text/plain; charset=utf-8",
                "message/delivery-status",
                "text/rfc822-headers"
            ]
        );
        assert!(
            parts[0].contains("<b@remote.test>: 550 5.1.1 no such user (from mx1.remote.test)")
        );

        let status = &parts[1];
        assert!(status.contains("Reporting-MTA: dns; mx.test\r\n"));
        assert!(status.contains("Arrival-Date: Sat, 28 Nov 2026 17:15:58 +0000\r\n"));
        let finals: Vec<&str> = status
            .lines()
            .filter_map(|l| l.strip_prefix("Final-Recipient: "))
            .collect();
        assert_eq!(finals, ["rfc822; b@remote.test", "rfc822; c@remote.test"]);
        let statuses: Vec<&str> = status
            .lines()
            .filter_map(|l| l.strip_prefix("Status: "))
            .collect();
        assert_eq!(statuses, ["5.1.1", "5.4.4"]);
        assert_eq!(status.matches("Action: failed\r\n").count(), 2);
        assert!(status.contains("Remote-MTA: dns; mx1.remote.test\r\n"));
        assert!(status.contains("Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n"));
        assert!(status.contains("Diagnostic-Code: X-mta; 5.4.4 no MX and no address\r\n"));
        // Per-recipient groups are separated from the per-message fields by a blank line.
        assert!(status.contains("\r\n\r\nFinal-Recipient: rfc822; b@remote.test"));

        let headers = &parts[2];
        assert!(headers.contains("Subject: hello\r\n"));
        assert!(headers.contains("Received: from client.test\r\n\tby mx.test\r\n"));
        assert!(!text.contains("SECRET BODY LINE"), "never the body");
    }

    #[test]
    fn delayed_dsn() {
        let rcpts = [rcpt(
            "d@remote.test",
            "4.4.1",
            "4.4.1 connection refused",
            None,
        )];
        let text = dsn(DsnKind::Delayed, &rcpts, BODY);
        assert!(text.contains("Subject: Delayed Mail (still being retried)\r\n"));
        assert!(text.contains("Action: delayed\r\nStatus: 4.4.1\r\n"));
        assert!(!text.contains("Action: failed"));
        // A status that is not a code is replaced by the kind's default.
        let text = dsn(
            DsnKind::Delayed,
            &[rcpt("d@remote.test", "junk", "", None)],
            BODY,
        );
        assert!(text.contains("Status: 4.0.0\r\n"));
        assert!(!text.contains("Diagnostic-Code"));
    }

    #[test]
    fn null_sender_or_no_recipients_gets_no_dsn() {
        let host = Domain::parse("mx.test").expect("domain");
        let id = MessageId::generate(1);
        let rcpts = [rcpt("b@remote.test", "5.1.1", "550 5.1.1 no", None)];
        let bounce = original(ReversePath::Null);
        assert_eq!(
            build(DsnKind::Failed, &host, &id, &bounce, &rcpts, BODY, 0),
            None
        );
        let normal = original(ReversePath::Address(addr("a@local.test")));
        assert_eq!(
            build(DsnKind::Failed, &host, &id, &normal, &[], BODY, 0),
            None
        );
    }

    #[test]
    fn status_codes() {
        let f = DsnKind::Failed;
        let d = DsnKind::Delayed;
        let table = [
            ("550 5.1.1 no such user", f, "5.1.1"),
            ("550-5.7.1 blocked", f, "5.7.1"),
            ("5.1.10 null MX", f, "5.1.10"),
            ("4.4.0 connection refused", d, "4.4.0"),
            ("451 4.3.0 (4.3.0) try later", d, "4.3.0"),
            (
                "4.4.7 gave up after 5 days in the queue; last result: 550 5.1.1 x",
                f,
                "4.4.7",
            ),
            ("connection refused", f, "5.0.0"),
            ("connection refused", d, "4.0.0"),
            ("", f, "5.0.0"),
            ("421 from 5.6.7.8 too busy", d, "4.0.0"),
            ("250 2.0.0 ok", f, "5.0.0"),
            ("550 5.1.1234 odd", f, "5.0.0"),
            ("550 5..1 odd", f, "5.0.0"),
        ];
        for (result, kind, want) in table {
            assert_eq!(status_of(result, kind), want, "{result:?}");
        }
    }

    #[test]
    fn diagnostics_are_cleaned() {
        let evil = "550 5.1.1 no\r\nFinal-Recipient: rfc822; x@y\r\n\x1b[31mred\x00\t é";
        let rcpts = [rcpt("b@remote.test", "5.1.1", evil, Some("mx\r\nX: y"))];
        let text = dsn(DsnKind::Failed, &rcpts, BODY);
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("Final-Recipient:"))
                .count(),
            1
        );
        assert!(!text.contains('\x1b') && !text.contains('\0'));
        assert!(text.contains(
            "Diagnostic-Code: smtp; 550 5.1.1 no Final-Recipient: rfc822; x@y [31mred ?\r\n"
        ));
        assert!(text.contains("Remote-MTA: dns; mx X: y\r\n"));

        let long = "550 5.1.1 ".to_string() + &"x".repeat(5000);
        let text = dsn(
            DsnKind::Failed,
            &[rcpt("b@remote.test", "5.1.1", &long, None)],
            BODY,
        );
        assert!(text.lines().all(|l| l.len() <= 998));
        assert!(text.contains("xxx...\r\n"));
        assert_eq!(clean("  a \r\n b  ", 100), "a b");
    }

    #[test]
    fn header_section_and_boundary() {
        assert_eq!(
            header_section(b"A: 1\r\nB: 2\r\n\r\nbody"),
            b"A: 1\r\nB: 2\r\n"
        );
        assert_eq!(header_section(b"A: 1\nB: 2\n\nbody"), b"A: 1\nB: 2\n");
        assert_eq!(header_section(b"A: 1\r\n"), b"A: 1\r\n");
        assert_eq!(header_section(b"\r\nbody"), b"");
        // Headers capped at 64 KiB, whole lines only.
        let mut big = Vec::new();
        for i in 0..5000 {
            big.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "y".repeat(40)).as_bytes());
        }
        big.extend_from_slice(b"\r\nbody");
        let part = header_part(&big);
        assert!(part.len() <= MAX_HEADERS && part.len() > MAX_HEADERS - 100);
        assert!(part.ends_with(b"\r\n"));

        // An original that contains our boundary gets another one.
        let id = MessageId::parse("01900000000000001234").expect("id");
        let trap = b"X-Trap: =_mta-dsn-01900000000000001234\r\n\r\nbody".to_vec();
        let text = dsn(
            DsnKind::Failed,
            &[rcpt("b@remote.test", "5.1.1", "550 5.1.1 no", None)],
            &trap,
        );
        let (boundary, parts) = parts(&text);
        assert_eq!(boundary, format!("=_mta-dsn-{id}-1"));
        assert_eq!(parts.len(), 3);
    }

    #[test]
    fn utf8_recipient_uses_global_types() {
        let rcpts = [rcpt("jörg@remote.test", "5.1.1", "550 5.1.1 no", None)];
        let text = dsn(
            DsnKind::Failed,
            &rcpts,
            "Subject: grüße\r\n\r\nx".as_bytes(),
        );
        assert!(text.contains("Content-Type: message/global-delivery-status\r\n"));
        assert!(text.contains("Final-Recipient: utf-8; jörg@remote.test\r\n"));
        assert!(text.contains("Content-Type: message/global-headers\r\n"));
        assert!(text.contains("Content-Transfer-Encoding: 8bit\r\n"));
    }

    #[tokio::test]
    async fn send_dsn_queues_a_bounce_to_the_sender() {
        let dir = tempfile::tempdir().expect("temp dir");
        let queue = crate::Queue::open(
            dir.path(),
            QueueSettings::new(Domain::parse("mx.test").expect("domain")),
        )
        .expect("open queue");
        let orig = original(ReversePath::Address(addr("a@local.test")));
        let rcpts = [rcpt(
            "b@remote.test",
            "5.1.1",
            "550 5.1.1 no such user",
            None,
        )];
        let id = queue
            .send_dsn(DsnKind::Failed, &orig, &rcpts, BODY)
            .await
            .expect("stored")
            .expect("a DSN is due");
        let (record, body) = queue.store().load(&id).expect("load").expect("present");
        let env = &record.envelope;
        assert_eq!(env.sender, ReversePath::Null);
        assert_eq!(env.recipients.len(), 1);
        assert_eq!(env.recipients[0].address, addr("a@local.test"));
        assert_eq!(env.recipients[0].state, RcptState::Pending);
        assert_eq!(env.size, body.len() as u64);
        assert_eq!(env.origin.peer, "local");
        assert_eq!(env.origin.helo, "mx.test");
        let text = String::from_utf8(body).expect("utf-8");
        assert!(text.contains(&format!("Message-ID: <{id}@mx.test>\r\n")));
        assert!(text.contains("Final-Recipient: rfc822; b@remote.test\r\n"));

        // A bounce of a bounce is never sent.
        let bounce = env.clone();
        assert_eq!(
            queue
                .send_dsn(DsnKind::Failed, &bounce, &rcpts, BODY)
                .await
                .expect("no error"),
            None
        );
        assert_eq!(queue.store().len(), 1);
    }
}
