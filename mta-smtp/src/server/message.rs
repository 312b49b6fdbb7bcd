//! What we add to a message before it is queued: our `Received` trace header (RFC 5321
//! §4.4, with the protocol names of RFC 3848 / RFC 6531), and on submission the `Message-ID`
//! and `Date` a client left out (RFC 6409 §8). The client's bytes follow unchanged.

use mta_core::address::Address;
use mta_core::date;
use mta_core::envelope::MessageId;

use super::budget::Reservation;
use super::session::{Context, Transaction};

/// Everything the trace header says about how the message reached us.
pub struct Trace<'a> {
    /// Connection facts.
    pub ctx: &'a Context,
    /// EHLO/HELO name, or `unknown` (validated: printable ASCII, no spaces).
    pub helo: &'a str,
    /// True after EHLO (ESMTP), false after HELO.
    pub esmtp: bool,
    /// Set when the client authenticated.
    pub user: Option<&'a Address>,
    /// The queue id.
    pub id: &'a MessageId,
    /// Reception time, Unix seconds.
    pub now: u64,
}

/// RFC 3848 / RFC 6531 §3.7.3 `with` protocol name.
fn protocol(t: &Trace<'_>, tx: &Transaction) -> String {
    let mut p = String::from(match (tx.smtputf8, t.esmtp) {
        (true, _) => "UTF8SMTP",
        (false, true) => "ESMTP",
        (false, false) => "SMTP",
    });
    if t.ctx.tls.is_some() {
        p.push('S');
    }
    if t.user.is_some() {
        p.push('A');
    }
    p
}

/// The `Received` header, folded, ending in CRLF.
pub fn received(t: &Trace<'_>, tx: &Transaction) -> String {
    let mut h = format!(
        "Received: from {} ([{}])\r\n\tby {} (mta) with {} id {}",
        t.helo,
        t.ctx.peer.ip(),
        t.ctx.config.hostname,
        protocol(t, tx),
        t.id
    );
    if let Some(tls) = &t.ctx.tls {
        let (version, cipher) = tls.split_once(' ').unwrap_or((tls, "unknown"));
        h.push_str(&format!("\r\n\t(using {version} with cipher {cipher})"));
    }
    // Name the recipient only when there is one: more would disclose Bcc recipients.
    if let [only] = tx.recipients.as_slice() {
        h.push_str(&format!("\r\n\tfor <{only}>"));
    }
    h.push_str(&format!(";\r\n\t{}\r\n", date::rfc5322(t.now)));
    h
}

/// True when the header section of `data` has a field called `name` (case-insensitive).
pub fn has_header(data: &[u8], name: &str) -> bool {
    for line in data.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return false;
        }
        if line.len() > name.len()
            && line[..name.len()].eq_ignore_ascii_case(name.as_bytes())
            && line[name.len()] == b':'
        {
            return true;
        }
    }
    false
}

/// The bytes to queue: our `Received`, on submission a `Message-ID` and `Date` the client
/// left out, then `fields` (the inbound checks' own), then the client's data unchanged.
/// Built in `data` itself: room for our headers is counted in `held` (past its limit if need
/// be: a message that fitted is not refused for our few octets) before the buffer grows by
/// exactly that much (it often has room to spare), then the data moves up behind them, so
/// the message is never held twice.
pub fn assemble(
    t: &Trace<'_>,
    tx: &Transaction,
    fields: &str,
    mut data: Vec<u8>,
    held: &mut Reservation<'_>,
) -> Vec<u8> {
    let mut head = received(t, tx);
    if t.ctx.listener.is_submission() {
        if !has_header(&data, "Message-ID") {
            head.push_str(&format!(
                "Message-ID: <{}@{}>\r\n",
                t.id, t.ctx.config.hostname
            ));
        }
        if !has_header(&data, "Date") {
            head.push_str(&format!("Date: {}\r\n", date::rfc5322(t.now)));
        }
    }
    head.push_str(fields);
    let (len, n) = (data.len(), head.len());
    let short = (len + n).saturating_sub(data.capacity());
    if short > 0 {
        held.take(short as u64);
        data.reserve_exact(n);
    }
    data.resize(len + n, 0);
    data.copy_within(..len, n);
    data[..n].copy_from_slice(head.as_bytes());
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_detection() {
        let msg = b"From: a@b\r\nmessage-id: <x@y>\r\n\r\nDate: in body\r\n";
        assert!(has_header(msg, "Message-ID"));
        assert!(!has_header(msg, "Date"));
        assert!(!has_header(b"Message-IDs: x\r\n\r\n", "Message-ID"));
        assert!(!has_header(b"\r\nDate: x\r\n", "Date"));
    }
}
