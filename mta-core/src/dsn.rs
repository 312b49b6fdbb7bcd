//! Delivery status notification requests (RFC 3461): the `RET` and `ENVID` parameters of
//! MAIL, the `NOTIFY` and `ORCPT` parameters of RCPT, the xtext encoding they use
//! (RFC 3461 §4), and the `AUTH=` parameter of MAIL (RFC 4954 §5), which is xtext too.
//!
//! Parsing is strict: a value that is not exactly what the RFC's grammar allows is an
//! error (the session answers `501 5.5.4`). The decoded `ENVID` and `ORCPT` values must be
//! printable ASCII: they are copied into notices as header field values, where a CR, LF or
//! other control character decoded from `+0D` or `+0A` could start a field of its own.

use serde::{Deserialize, Serialize};

/// RFC 3461 §4.4: the longest `ENVID` value, in characters (of its xtext).
pub const MAX_ENVID: usize = 100;
/// RFC 3461 §4.2: the longest `ORCPT` value, in characters (type, `;` and xtext).
pub const MAX_ORCPT: usize = 500;

/// Why a DSN or `AUTH=` parameter is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DsnError {
    /// Not valid xtext (RFC 3461 §4): a raw `=`, `+`, space, control or non-ASCII octet, or
    /// a `+` not followed by two upper-case hex digits.
    #[error("bad xtext")]
    BadXtext,
    /// The decoded value has a character that may not appear in a header field value.
    #[error("value not printable")]
    NotPrintable,
    /// Longer than the RFC allows.
    #[error("value too long")]
    TooLong,
    /// `RET=` other than `FULL` or `HDRS`.
    #[error("RET must be FULL or HDRS")]
    BadRet,
    /// `NOTIFY=` not `NEVER` nor a list of `SUCCESS`, `FAILURE`, `DELAY`.
    #[error("NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY")]
    BadNotify,
    /// `ORCPT=` without `;`, or with an address type other than `rfc822` or `utf-8`.
    #[error("ORCPT address type must be rfc822 or utf-8")]
    BadOrcpt,
    /// The same parameter twice in one command.
    #[error("parameter given twice")]
    Repeated,
}

/// Decodes xtext (RFC 3461 §4): `xchar` is any of `!` to `~` except `+` and `=`;
/// `hexchar` is `+` and two upper-case hex digits.
///
/// # Errors
/// [`DsnError::BadXtext`] for anything else.
pub fn xtext_decode(text: &str) -> Result<Vec<u8>, DsnError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'+' {
            let hi = bytes.get(i + 1).and_then(|&h| upper_hex(h));
            let lo = bytes.get(i + 2).and_then(|&l| upper_hex(l));
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(DsnError::BadXtext);
            };
            out.push(hi << 4 | lo);
            i += 3;
        } else if (33..=126).contains(&b) && b != b'=' {
            out.push(b);
            i += 1;
        } else {
            return Err(DsnError::BadXtext);
        }
    }
    Ok(out)
}

fn upper_hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Encodes octets as xtext: `!` to `~` stay, except `+` and `=`, which become `+2B` and
/// `+3D` like every other octet.
pub fn xtext_encode(value: &[u8]) -> String {
    let mut out = String::with_capacity(value.len());
    for &b in value {
        if (33..=126).contains(&b) && b != b'+' && b != b'=' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

/// Decodes xtext whose value must be printable ASCII (space to `~`).
fn printable(text: &str) -> Result<String, DsnError> {
    let bytes = xtext_decode(text)?;
    if bytes.iter().all(|b| (0x20..=0x7e).contains(b)) {
        Ok(bytes.into_iter().map(char::from).collect())
    } else {
        Err(DsnError::NotPrintable)
    }
}

/// What a notice returns of the message (RFC 3461 §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ret {
    /// `RET=FULL`: the whole message.
    Full,
    /// `RET=HDRS`: its header section only.
    Hdrs,
}

impl Ret {
    /// Parses the value of `RET=` (any case).
    ///
    /// # Errors
    /// [`DsnError::BadRet`].
    pub fn parse(value: &str) -> Result<Ret, DsnError> {
        if value.eq_ignore_ascii_case("FULL") {
            Ok(Ret::Full)
        } else if value.eq_ignore_ascii_case("HDRS") {
            Ok(Ret::Hdrs)
        } else {
            Err(DsnError::BadRet)
        }
    }

    /// The keyword as sent on.
    pub fn keyword(self) -> &'static str {
        match self {
            Ret::Full => "FULL",
            Ret::Hdrs => "HDRS",
        }
    }
}

/// Parses the value of `ENVID=`: xtext of at most [`MAX_ENVID`] characters decoding to
/// printable ASCII. Returns the decoded value.
///
/// # Errors
/// [`DsnError::TooLong`], [`DsnError::BadXtext`], [`DsnError::NotPrintable`].
pub fn parse_envid(value: &str) -> Result<String, DsnError> {
    if value.len() > MAX_ENVID {
        return Err(DsnError::TooLong);
    }
    if value.is_empty() {
        return Err(DsnError::BadXtext);
    }
    printable(value)
}

/// Checks the value of `AUTH=` on MAIL (RFC 4954 §5): `<>` or a non-empty xtext. The
/// value itself is not used (§5 lets a server ignore it from a client it does not trust).
///
/// # Errors
/// [`DsnError::BadXtext`].
pub fn check_auth_param(value: &str) -> Result<(), DsnError> {
    if value == "<>" {
        return Ok(());
    }
    match xtext_decode(value)? {
        v if v.is_empty() => Err(DsnError::BadXtext),
        _ => Ok(()),
    }
}

/// The per-message DSN parameters of MAIL.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageDsn {
    /// `RET=`, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ret: Option<Ret>,
    /// `ENVID=`, decoded, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envid: Option<String>,
}

impl MessageDsn {
    /// True when neither parameter was given.
    pub fn is_empty(&self) -> bool {
        self.ret.is_none() && self.envid.is_none()
    }
}

/// `NOTIFY=` (RFC 3461 §4.1): which notices the sender wants. `NEVER` is all three false.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notify {
    /// `SUCCESS`.
    #[serde(default)]
    pub success: bool,
    /// `FAILURE`.
    #[serde(default)]
    pub failure: bool,
    /// `DELAY`.
    #[serde(default)]
    pub delay: bool,
}

impl Notify {
    /// Parses the value of `NOTIFY=`: `NEVER` alone, or a comma-separated list of
    /// `SUCCESS`, `FAILURE` and `DELAY` (any case), each at most once.
    ///
    /// # Errors
    /// [`DsnError::BadNotify`].
    pub fn parse(value: &str) -> Result<Notify, DsnError> {
        if value.eq_ignore_ascii_case("NEVER") {
            return Ok(Notify::default());
        }
        let mut n = Notify::default();
        for word in value.split(',') {
            let flag = if word.eq_ignore_ascii_case("SUCCESS") {
                &mut n.success
            } else if word.eq_ignore_ascii_case("FAILURE") {
                &mut n.failure
            } else if word.eq_ignore_ascii_case("DELAY") {
                &mut n.delay
            } else {
                return Err(DsnError::BadNotify);
            };
            if *flag {
                return Err(DsnError::BadNotify);
            }
            *flag = true;
        }
        Ok(n)
    }

    /// The value as sent on: `NEVER` or the list.
    pub fn keyword(self) -> String {
        let words: Vec<&str> = [
            (self.success, "SUCCESS"),
            (self.failure, "FAILURE"),
            (self.delay, "DELAY"),
        ]
        .into_iter()
        .filter_map(|(on, w)| on.then_some(w))
        .collect();
        match words.is_empty() {
            true => "NEVER".to_string(),
            false => words.join(","),
        }
    }
}

/// `ORCPT=` (RFC 3461 §4.2): the recipient as the original sender named it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Orcpt {
    /// The address type, lower case: `rfc822`, or `utf-8` (RFC 6533 §3).
    pub addr_type: String,
    /// The address, xtext-decoded (printable ASCII).
    pub address: String,
}

impl Orcpt {
    /// Parses the value of `ORCPT=`: `addr-type ";" xtext`, at most [`MAX_ORCPT`]
    /// characters, of type `rfc822` or `utf-8` (any case).
    ///
    /// # Errors
    /// [`DsnError::TooLong`], [`DsnError::BadOrcpt`], [`DsnError::BadXtext`],
    /// [`DsnError::NotPrintable`].
    pub fn parse(value: &str) -> Result<Orcpt, DsnError> {
        if value.len() > MAX_ORCPT {
            return Err(DsnError::TooLong);
        }
        let Some((addr_type, xtext)) = value.split_once(';') else {
            return Err(DsnError::BadOrcpt);
        };
        let addr_type = addr_type.to_ascii_lowercase();
        if addr_type != "rfc822" && addr_type != "utf-8" {
            return Err(DsnError::BadOrcpt);
        }
        if xtext.is_empty() {
            return Err(DsnError::BadXtext);
        }
        Ok(Orcpt {
            addr_type,
            address: printable(xtext)?,
        })
    }

    /// The value as sent on: `rfc822;` and the address as xtext.
    pub fn param(&self) -> String {
        format!(
            "{};{}",
            self.addr_type,
            xtext_encode(self.address.as_bytes())
        )
    }
}

/// The per-recipient DSN parameters of RCPT.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RcptDsn {
    /// `NOTIFY=`, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Notify>,
    /// `ORCPT=`, if given (or added for an alias, RFC 3461 §4.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orcpt: Option<Orcpt>,
}

impl RcptDsn {
    /// True when neither parameter was given.
    pub fn is_empty(&self) -> bool {
        self.notify.is_none() && self.orcpt.is_none()
    }

    /// A failure notice is due: `NOTIFY` absent or with `FAILURE` (RFC 3461 §4.1).
    pub fn wants_failure(&self) -> bool {
        self.notify.is_none_or(|n| n.failure)
    }

    /// A delay notice may be sent: `NOTIFY` absent or with `DELAY`.
    pub fn wants_delay(&self) -> bool {
        self.notify.is_none_or(|n| n.delay)
    }

    /// A success notice is due: `NOTIFY` with `SUCCESS`.
    pub fn wants_success(&self) -> bool {
        self.notify.is_some_and(|n| n.success)
    }
}

#[cfg(test)]
#[path = "dsn_tests.rs"]
mod tests;
