//! The Sender Rewriting Scheme (SRS): the envelope sender that mail forwarded off-site by an
//! alias or catch-all leaves with, and the check of the bounces that come back to it. Pure
//! functions of a secret, the address and the day; when they apply is
//! [`crate::forwarding`]'s to decide, and the secret files are `mta-bin`'s.
//!
//! Why: a forwarded copy that kept its original sender `someone@third.test` would fail the
//! receiver's SPF check (RFC 7208), since our address is not among third.test's senders. The
//! copy leaves as `SRS0=HHHH=TT=third.test=someone@our-domain` instead, which our domain's SPF
//! record covers; a bounce to that address comes back to us, is checked here, and goes on to
//! `someone@third.test`.
//!
//! The address has the shape postsrsd and libsrs2 use:
//!
//! - `TT`: the day the address was made, days since the Unix epoch modulo 1024, as two
//!   base32 characters (RFC 4648 §6 alphabet), read case-insensitively.
//! - `HHHH`: the first four base64 characters of an HMAC-SHA256 (not the SHA-1 of libsrs2:
//!   only we ever check our addresses, so nothing needs the older hash) keyed with our secret,
//!   over `TT`, the domain and the local part, all in lower case, joined by `=` (a character
//!   no domain holds, so no two addresses share an input). Compared case-insensitively and in
//!   constant time: some MTAs lower-case a local part, so about 21 bits of a case-folded
//!   base64 quadruple are what a forger must guess.
//!
//! An address that is already SRS from another forwarder is rewritten like any other: its
//! whole local part becomes the tail of ours (`SRS0=HHHH=TT=fwd.test=SRS0=...`), and a bounce
//! goes back to that forwarder, which reverses its own. When the result would exceed the 64
//! octets RFC 5321 §4.5.3.1.1 allows a local part, or the sender's local part is quoted, the
//! copy keeps its sender ([`ForwardError`]): it may fail SPF, but it is never malformed.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::hmac;

use crate::address::{Address, Domain, MAX_LOCAL_PART};

/// The length of a secret, in bytes.
pub const SECRET_LEN: usize = 32;

/// How many days a timestamp counts before it wraps.
const TIMESTAMP_DAYS: u64 = 1024;

/// Base32 (RFC 4648 §6), upper case as written; read in either case.
const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// The prefix of the addresses we make (and of those another forwarder made).
const SRS0: &str = "SRS0=";

/// One secret key. Its `Debug` shows nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret([u8; SECRET_LEN]);

impl Secret {
    /// A secret from its bytes (the key file).
    pub fn new(bytes: [u8; SECRET_LEN]) -> Secret {
        Secret(bytes)
    }

    /// Reads a secret from the bytes of a key file; `None` unless it has exactly
    /// [`SECRET_LEN`] bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Secret> {
        bytes.try_into().ok().map(Secret)
    }

    /// A new random secret.
    pub fn generate() -> Secret {
        Secret(rand::random())
    }

    /// The bytes, to write the key file.
    pub fn bytes(&self) -> &[u8; SECRET_LEN] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The secrets in force: new addresses are made with `current`; an address made with
/// `previous` (the key before the last rotation) is still accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// Signs new addresses and verifies.
    pub current: Secret,
    /// Only verifies.
    pub previous: Option<Secret>,
}

/// Why a sender is not rewritten.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// The rewritten local part would be longer than RFC 5321 allows.
    #[error("the SRS address would have a local part over {MAX_LOCAL_PART} octets")]
    TooLong,
    /// A quoted local part (`"a b"@x`) would need quoting inside ours.
    #[error("a quoted local part is not rewritten")]
    Quoted,
}

/// What a recipient of our SRS domain is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reverse {
    /// Not an SRS address (its local part does not start with `SRS0=` or `SRS1=`).
    NotSrs,
    /// One of ours, made within the allowed age: the original sender.
    Valid(Address),
    /// Looks like SRS but is not one we made, or is too old.
    Invalid(Invalid),
}

/// Why an SRS address is refused (for the log; the client gets one reply for all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// Not `SRS0=HHHH=TT=domain=local` with a valid domain and local part (SRS1 included:
    /// we never make it).
    Malformed,
    /// The hash does not match under any of our secrets.
    BadHash,
    /// Older than the allowed age.
    Expired,
}

/// Days since the Unix epoch at `now` (0 before it).
pub fn day(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0)
}

/// The two-character timestamp of `day`.
pub fn timestamp(day: u64) -> String {
    let t = day % TIMESTAMP_DAYS;
    let hi = BASE32[(t >> 5) as usize] as char;
    let lo = BASE32[(t & 31) as usize] as char;
    [hi, lo].iter().collect()
}

/// The day modulo 1024 that a timestamp stands for; `None` unless it is two base32
/// characters.
fn timestamp_value(tt: &str) -> Option<u64> {
    let digit = |c: u8| {
        BASE32
            .iter()
            .position(|&b| b == c.to_ascii_uppercase())
            .map(|p| p as u64)
    };
    match tt.as_bytes() {
        [hi, lo] => Some(digit(*hi)? << 5 | digit(*lo)?),
        _ => None,
    }
}

/// The four hash characters for a timestamp, domain and local part under `secret`.
fn hash(secret: &Secret, tt: &str, domain: &str, local: &str) -> [u8; 4] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, &secret.0);
    let input = format!("{tt}={domain}={local}").to_lowercase();
    let tag = hmac::sign(&key, input.as_bytes());
    let text = B64.encode(&tag.as_ref()[..3]);
    let mut out = [0u8; 4];
    out.copy_from_slice(&text.as_bytes()[..4]);
    out
}

/// Compares `given` with `want` case-insensitively without stopping at the first
/// difference, so the time taken says nothing about how much of a forged hash was right.
fn same_hash(given: &[u8], want: &[u8; 4]) -> bool {
    if given.len() != want.len() {
        return false;
    }
    let diff = given.iter().zip(want).fold(0u8, |acc, (g, w)| {
        acc | (g.to_ascii_lowercase() ^ w.to_ascii_lowercase())
    });
    diff == 0
}

/// The SRS address `sender` is rewritten to on `day`, in `domain`.
///
/// # Errors
/// [`ForwardError`] when no valid address can be made; the sender is then kept.
pub fn forward(
    keys: &Keys,
    domain: &Domain,
    sender: &Address,
    day: u64,
) -> Result<Address, ForwardError> {
    let local = sender.local_part();
    if local.starts_with('"') {
        return Err(ForwardError::Quoted);
    }
    let tt = timestamp(day);
    let orig_domain = sender.domain().as_str();
    let h = hash(&keys.current, &tt, orig_domain, local);
    let h = std::str::from_utf8(&h).expect("base64 is ASCII");
    let srs_local = format!("{SRS0}{h}={tt}={orig_domain}={local}");
    if srs_local.len() > MAX_LOCAL_PART {
        return Err(ForwardError::TooLong);
    }
    Address::from_parts(&srs_local, domain).map_err(|_| ForwardError::TooLong)
}

/// Whether `local` (a local part of our SRS domain) is an SRS address, and if so whether it
/// is one of ours no older than `max_age_days` on `today`, and whose.
pub fn reverse(keys: &Keys, local: &str, today: u64, max_age_days: u64) -> Reverse {
    if !looks_srs(local) {
        return Reverse::NotSrs;
    }
    if !local[..SRS0.len()].eq_ignore_ascii_case(SRS0) {
        return Reverse::Invalid(Invalid::Malformed);
    }
    let mut parts = local[SRS0.len()..].splitn(4, '=');
    let (Some(h), Some(tt), Some(domain), Some(orig_local)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Reverse::Invalid(Invalid::Malformed);
    };
    let Some(stamp) = timestamp_value(tt) else {
        return Reverse::Invalid(Invalid::Malformed);
    };
    let original = match Domain::parse(domain).and_then(|d| Address::from_parts(orig_local, &d)) {
        // We only ever put a name in the domain field, never an address literal.
        Ok(a) if !a.domain().is_literal() => a,
        _ => return Reverse::Invalid(Invalid::Malformed),
    };
    // Every secret is tried, whatever the first gave, so the time taken does not say which
    // one matched.
    let mut matched = false;
    for secret in std::iter::once(&keys.current).chain(keys.previous.as_ref()) {
        matched |= same_hash(h.as_bytes(), &hash(secret, tt, domain, orig_local));
    }
    if !matched {
        return Reverse::Invalid(Invalid::BadHash);
    }
    let age = (today % TIMESTAMP_DAYS + TIMESTAMP_DAYS - stamp) % TIMESTAMP_DAYS;
    if age > max_age_days {
        return Reverse::Invalid(Invalid::Expired);
    }
    Reverse::Valid(original)
}

/// Whether `local` starts like an SRS address, `SRS0=` or `SRS1=`, in any case.
pub(crate) fn looks_srs(local: &str) -> bool {
    let prefix = local.get(..SRS0.len()).unwrap_or("");
    prefix.eq_ignore_ascii_case(SRS0) || prefix.eq_ignore_ascii_case("SRS1=")
}

#[cfg(test)]
#[path = "srs_tests.rs"]
mod tests;
