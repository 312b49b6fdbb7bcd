//! Delivery status notifications as they land in a Maildir: [`parse_dsn`] checks the
//! RFC 3464 / RFC 6522 shape (a `multipart/report; report-type=delivery-status` with a
//! human part, the `message/delivery-status` fields and the returned headers) and splits it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::TestMta;

/// Header or status fields in order, names as written, values unfolded (the CRLF before a
/// continuation line removed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields(pub Vec<(String, String)>);

impl Fields {
    /// The first field called `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every field called `name`.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The field called `name`; panics naming the fields when there is none.
    #[track_caller]
    pub fn expect(&self, name: &str) -> &str {
        self.get(name)
            .unwrap_or_else(|| panic!("no {name} field in {:?}", self.0))
    }
}

/// One body part of the report.
#[derive(Debug, Clone)]
pub struct Part {
    /// Its header fields.
    pub headers: Fields,
    /// Its body, CRLFs included.
    pub body: String,
}

/// A parsed delivery status notification.
#[derive(Debug, Clone)]
pub struct Dsn {
    /// The message's header fields (in a Maildir file: `Return-Path` and `Delivered-To`
    /// first).
    pub headers: Fields,
    /// The multipart boundary.
    pub boundary: String,
    /// The body parts: `text/plain`, `message/delivery-status`, and `text/rfc822-headers`
    /// only for the mail of one of the server's own users (RFC 3464 §2 lets it be left out).
    pub parts: Vec<Part>,
    /// The per-message fields of the delivery-status part (`Reporting-MTA`, …).
    pub per_message: Fields,
    /// One group of fields per recipient (`Final-Recipient`, `Action`, `Status`, …).
    pub recipients: Vec<Fields>,
    /// True for the RFC 6533 types (`message/global-delivery-status`,
    /// `message/global-headers`) used for UTF-8 addresses.
    pub global: bool,
}

impl Dsn {
    /// The explanation for people (the first part).
    pub fn text(&self) -> &str {
        &self.parts[0].body
    }

    /// The returned headers of the original message (the third part).
    pub fn returned_headers(&self) -> &str {
        &self.parts[2].body
    }

    /// The addresses in `Final-Recipient: rfc822; ADDR`, in order.
    pub fn final_recipients(&self) -> Vec<String> {
        self.recipients
            .iter()
            .map(|r| {
                let v = r.expect("Final-Recipient");
                let (_, addr) = v.split_once(';').unwrap_or(("", v));
                addr.trim().to_string()
            })
            .collect()
    }

    /// The fields of recipient `addr`; panics when the report does not name it.
    #[track_caller]
    pub fn recipient(&self, addr: &str) -> &Fields {
        let at = self
            .final_recipients()
            .iter()
            .position(|a| a.eq_ignore_ascii_case(addr))
            .unwrap_or_else(|| panic!("the DSN names {:?}, not {addr}", self.final_recipients()));
        &self.recipients[at]
    }
}

/// Splits header fields from the top of `text` up to the empty line; returns them and the
/// rest after the empty line.
fn split_headers(text: &str) -> Result<(Fields, &str), String> {
    let (head, rest) = match text.find("\r\n\r\n") {
        Some(at) => (&text[..at + 2], &text[at + 4..]),
        None => return Err("no empty line after the header".into()),
    };
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in head.split_terminator("\r\n") {
        if line.starts_with([' ', '\t']) {
            let (_, value) = fields
                .last_mut()
                .ok_or_else(|| format!("a continuation line first: {line:?}"))?;
            value.push_str(line);
            continue;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("not a header field: {line:?}"))?;
        if name.is_empty() || name.bytes().any(|b| !b.is_ascii_graphic()) {
            return Err(format!("bad field name in {line:?}"));
        }
        fields.push((name.to_string(), value.trim().to_string()));
    }
    Ok((Fields(fields), rest))
}

/// The parameters of a `Content-Type` value, names lower-cased, quotes removed:
/// `multipart/report; boundary="a;b"` → `("multipart/report", [("boundary", "a;b")])`.
pub fn content_type(value: &str) -> (String, Vec<(String, String)>) {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => quoted = !quoted,
            '\\' if quoted => current.extend(chars.next()),
            ';' if !quoted => parts.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    parts.push(current);
    let mime = parts[0].trim().to_ascii_lowercase();
    let params = parts[1..]
        .iter()
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (mime, params)
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// True for an RFC 3463 status `class.subject.detail` (class 2, 4 or 5).
fn is_status(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3
        && matches!(parts[0], "2" | "4" | "5")
        && parts[1..]
            .iter()
            .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Parses a delivered DSN (the whole Maildir file, or the message alone).
///
/// # Errors
/// A description of the first thing that is not RFC 3464 / RFC 6522: a bare LF, no
/// `multipart/report; report-type=delivery-status`, no boundary, a missing closing
/// delimiter, parts of the wrong types or count, a per-message group without
/// `Reporting-MTA`, a recipient group without `Final-Recipient`, `Action` or a valid
/// `Status`.
pub fn parse_dsn(bytes: &[u8]) -> Result<Dsn, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    if let Some(at) = text
        .bytes()
        .enumerate()
        .position(|(i, b)| b == b'\n' && (i == 0 || bytes[i - 1] != b'\r'))
    {
        return Err(format!("a bare LF at byte {at}"));
    }
    let (headers, body) = split_headers(text)?;
    let ct = headers
        .get("Content-Type")
        .ok_or("no Content-Type header")?;
    let (mime, params) = content_type(ct);
    if mime != "multipart/report" {
        return Err(format!("Content-Type is {mime}, not multipart/report"));
    }
    if !param(&params, "report-type").is_some_and(|r| r.eq_ignore_ascii_case("delivery-status")) {
        return Err(format!("report-type is not delivery-status: {ct}"));
    }
    let boundary = param(&params, "boundary")
        .ok_or_else(|| format!("no boundary in {ct}"))?
        .to_string();
    if boundary.is_empty() || boundary.len() > 70 {
        return Err(format!("boundary {boundary:?} is not 1-70 characters"));
    }
    if headers.get("MIME-Version").map(str::trim) != Some("1.0") {
        return Err("no MIME-Version: 1.0".into());
    }
    let parts = split_parts(body, &boundary)?;
    let global = part_types(&parts)?;
    let mut groups = parts[1]
        .body
        .split("\r\n\r\n")
        .filter(|g| !g.trim().is_empty())
        .map(|g| split_headers(&format!("{}\r\n\r\n", g.trim_end_matches("\r\n"))).map(|f| f.0));
    let per_message = groups.next().ok_or("an empty delivery-status part")??;
    if per_message.get("Reporting-MTA").is_none() {
        return Err(format!("no Reporting-MTA in {:?}", per_message.0));
    }
    let recipients = groups.collect::<Result<Vec<Fields>, String>>()?;
    if recipients.is_empty() {
        return Err("no per-recipient fields".into());
    }
    for r in &recipients {
        check_recipient(r)?;
    }
    Ok(Dsn {
        headers,
        boundary,
        parts,
        per_message,
        recipients,
        global,
    })
}

/// The parts of a multipart body between its delimiter lines: CRLF "--" boundary (RFC 2046
/// §5.1.1), the last one closed by "--".
fn split_parts(body: &str, boundary: &str) -> Result<Vec<Part>, String> {
    let delimiter = format!("\r\n--{boundary}");
    let body = format!("\r\n{body}");
    let mut pieces: Vec<&str> = body.split(delimiter.as_str()).collect();
    if pieces.len() < 3 {
        return Err(format!("fewer than two delimiters --{boundary}"));
    }
    let last = pieces.pop().expect("at least three pieces");
    if !last.starts_with("--") {
        return Err(format!("no closing delimiter --{boundary}--"));
    }
    let mut parts = Vec::new();
    for piece in &pieces[1..] {
        let piece = piece
            .strip_prefix("\r\n")
            .ok_or_else(|| format!("text after a delimiter on its line: {piece:?}"))?;
        let (headers, body) = split_headers(piece)?;
        parts.push(Part {
            headers,
            body: body.to_string(),
        });
    }
    Ok(parts)
}

/// Whether the parts are those of an RFC 6533 (global) DSN; an error when they are neither
/// that nor RFC 3464's.
fn part_types(parts: &[Part]) -> Result<bool, String> {
    let types: Vec<String> = parts
        .iter()
        .map(|p| content_type(p.headers.get("Content-Type").unwrap_or("text/plain")).0)
        .collect();
    let want = [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ];
    let want_global = [
        "text/plain",
        "message/global-delivery-status",
        "message/global-headers",
    ];
    let global = types == want_global || types == want_global[..2];
    if types != want && types != want[..2] && !global {
        return Err(format!(
            "the parts are {types:?}, not {want:?} (or RFC 6533's {want_global:?}; \
             the last part may be left out)"
        ));
    }
    Ok(global)
}

/// One per-recipient group: `Final-Recipient` is TYPE; ADDRESS, `Action` an RFC 3464 action
/// and `Status` an RFC 3463 code.
fn check_recipient(r: &Fields) -> Result<(), String> {
    let fr = r.get("Final-Recipient").unwrap_or("");
    if !fr.contains(';') {
        return Err(format!("Final-Recipient {fr:?} is not TYPE; ADDRESS"));
    }
    let action = r.get("Action").unwrap_or("");
    if !["failed", "delayed", "delivered", "relayed", "expanded"]
        .contains(&action.to_ascii_lowercase().as_str())
    {
        return Err(format!("Action {action:?} is not an RFC 3464 action"));
    }
    let status = r.get("Status").unwrap_or("");
    if !is_status(status) {
        return Err(format!("Status {status:?} is not an RFC 3463 code"));
    }
    Ok(())
}

/// Reads and parses the DSN at `path`; panics with the file when it is not one.
pub fn read_dsn(path: &Path) -> Dsn {
    let bytes = crate::read_crlf(path);
    parse_dsn(&bytes).unwrap_or_else(|e| {
        panic!(
            "{} is not an RFC 3464 DSN: {e}\n--- file ---\n{}",
            path.display(),
            String::from_utf8_lossy(&bytes)
        )
    })
}

/// Waits up to `timeout` for a message in `addr`'s Maildir at `mta` and parses the only
/// one as a DSN; panics when there is none, more than one, or it does not parse.
pub fn wait_for_dsn(mta: &TestMta, addr: &str, timeout: Duration) -> (PathBuf, Dsn) {
    let files = mta.wait_for_mail(addr, 1, timeout.as_secs().max(1));
    assert_eq!(
        files.len(),
        1,
        "exactly one message (the DSN) for {addr}: {files:?}"
    );
    let dsn = read_dsn(&files[0]);
    (files[0].clone(), dsn)
}
