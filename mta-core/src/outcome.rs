//! What became of one recipient in one delivery attempt: an [`Outcome`]. Delivery makes
//! it (crossing the [`crate::seams::Deliver`] seam), the queue stores it on the
//! recipient, and only the edges turn it into text: the log, `mta queue`, and the DSN,
//! which takes its `Status:` and `Remote-MTA:` from the fields, never from the text.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Whether the recipient is done with, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Delivered: final.
    Delivered,
    /// Not now: the scheduler retries later.
    Deferred,
    /// Never: final; the recipient is marked failed (and bounced).
    Failed,
}

impl Verdict {
    /// True when no further attempt follows (delivered or failed).
    pub fn is_final(self) -> bool {
        !matches!(self, Verdict::Deferred)
    }

    /// `delivered`, `deferred` or `failed`, for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Delivered => "delivered",
            Verdict::Deferred => "deferred",
            Verdict::Failed => "failed",
        }
    }
}

/// The server that gave the answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remote {
    /// Its DNS name (RFC 3464 `Remote-MTA: dns; …`); `None` for an LMTP server, which is
    /// named by a socket address or path rather than a host name.
    pub host: Option<String>,
    /// How it is shown in the log and `mta queue`: `mx.example.org [192.0.2.1] TLSv1.3 …
    /// policy=mta-sts`, `lmtp 127.0.0.1:24`.
    pub at: String,
}

/// The result of one delivery attempt for one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// Delivered, deferred or failed.
    pub verdict: Verdict,
    /// The basic reply code (RFC 5321 §4.2) of the server's answer, or of the answer we
    /// give ourselves for a local error (`451` when a Maildir write fails).
    #[serde(default)]
    pub code: Option<u16>,
    /// The enhanced status code (RFC 3463), such as `5.1.1`: from the server's reply (only
    /// where RFC 2034 puts it, of the reply's class), or ours for our own reasons
    /// (`5.1.10` null MX, `4.4.1` no host answered).
    #[serde(default)]
    pub enhanced: Option<String>,
    /// The server that answered, when one did.
    #[serde(default)]
    pub remote: Option<Remote>,
    /// The rest: the reply's text, or our own reason, or where it was delivered.
    #[serde(default)]
    pub text: String,
    /// Delivered to a next hop that offers DSN (RFC 3461 §6.2), with this recipient's
    /// `NOTIFY` passed on: a success notice is that hop's to send, not ours.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dsn_passed: bool,
}

impl Outcome {
    /// An outcome with only a text (a Maildir file, an internal error).
    pub fn new(verdict: Verdict, text: impl Into<String>) -> Outcome {
        Outcome {
            verdict,
            code: None,
            enhanced: None,
            remote: None,
            text: text.into(),
            dsn_passed: false,
        }
    }

    /// Our own reason, with its RFC 3463 status (`"5.1.2"`, `"4.4.3"`).
    pub fn status(verdict: Verdict, enhanced: &str, text: impl Into<String>) -> Outcome {
        Outcome {
            enhanced: Some(enhanced.to_string()),
            ..Outcome::new(verdict, text)
        }
    }

    /// The same outcome with a reply code.
    pub fn with_code(self, code: u16) -> Outcome {
        Outcome {
            code: Some(code),
            ..self
        }
    }

    /// The same outcome, given by `remote`.
    pub fn with_remote(self, remote: Remote) -> Outcome {
        Outcome {
            remote: Some(remote),
            ..self
        }
    }

    /// Deferred.
    pub fn deferred(enhanced: &str, text: impl Into<String>) -> Outcome {
        Outcome::status(Verdict::Deferred, enhanced, text)
    }

    /// Failed.
    pub fn failed(enhanced: &str, text: impl Into<String>) -> Outcome {
        Outcome::status(Verdict::Failed, enhanced, text)
    }

    /// The answer without the server: `550 5.1.1 no such user`, `5.1.2 no such domain`.
    /// What a DSN's `Diagnostic-Code` quotes.
    pub fn answer(&self) -> String {
        let mut out = String::new();
        let mut put = |part: &str| {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(part);
        };
        if let Some(code) = self.code {
            put(&code.to_string());
        }
        if let Some(e) = &self.enhanced {
            put(e);
        }
        if !self.text.is_empty() {
            put(&self.text);
        }
        out
    }

    /// Reads an outcome back from its text ([`fmt::Display`]), as records written before
    /// outcomes were typed keep it: the remote host after a final ` (from …)`, then a reply
    /// code and an enhanced status code of the same class at the start (RFC 2034 §4), or
    /// an enhanced status code alone at the very start (our own reasons). A code anywhere
    /// else is prose. A delivered outcome keeps its whole text (it goes into no DSN).
    pub fn from_text(verdict: Verdict, text: &str) -> Outcome {
        if verdict == Verdict::Delivered {
            return Outcome::new(verdict, text);
        }
        let (head, remote) = split_remote(text);
        let (code, enhanced, rest) = split_status(head);
        Outcome {
            verdict,
            code,
            enhanced: enhanced.map(str::to_string),
            remote,
            text: rest.to_string(),
            dsn_passed: false,
        }
    }
}

/// `550 5.1.1 text (from mx.example [192.0.2.1] …)`, `mx.example [192.0.2.1] …: 250 2.0.0
/// ok`, `5.1.2 text`: the text kept in the queue record and shown by `mta queue`.
impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let answer = self.answer();
        match (&self.remote, self.verdict) {
            (None, _) => f.write_str(&answer),
            (Some(r), Verdict::Delivered) => write!(f, "{}: {answer}", r.at),
            (Some(r), _) => write!(f, "{answer} (from {})", r.at),
        }
    }
}

/// Splits `… (from AT)` into the text before it and the remote `AT`, when the text ends
/// with it and `AT` holds no parenthesis.
fn split_remote(text: &str) -> (&str, Option<Remote>) {
    let Some(start) = text.rfind(" (from ") else {
        return (text, None);
    };
    let Some(at) = text[start + 7..].strip_suffix(')') else {
        return (text, None);
    };
    if at.is_empty() || at.contains(['(', ')']) {
        return (text, None);
    }
    let first = at.split(' ').next().unwrap_or("");
    let host = (!first.is_empty() && first != "lmtp").then(|| first.to_string());
    let remote = Remote {
        host,
        at: at.to_string(),
    };
    (&text[..start], Some(remote))
}

/// Splits `550 5.1.1 text`, `550 text`, `5.1.2 text` into code, status and text.
fn split_status(text: &str) -> (Option<u16>, Option<&str>, &str) {
    let b = text.as_bytes();
    let code_here = b.len() >= 3
        && matches!(b[0], b'2'..=b'5')
        && b[1].is_ascii_digit()
        && b[2].is_ascii_digit()
        && matches!(b.get(3), None | Some(b' ' | b'-'));
    if code_here {
        let code = text[..3].parse::<u16>().ok();
        let rest = text.get(4..).unwrap_or("");
        let (token, after) = first_token(rest);
        if is_status_code(token) && token.as_bytes()[0] == b[0] {
            return (code, Some(token), after);
        }
        return (code, None, rest);
    }
    let (token, after) = first_token(text);
    if is_status_code(token) {
        return (None, Some(token), after);
    }
    (None, None, text)
}

/// The text up to the first space, and what follows that space.
fn first_token(text: &str) -> (&str, &str) {
    match text.split_once(' ') {
        Some((token, after)) => (token, after),
        None => (text, ""),
    }
}

/// RFC 3463 §2: class "." subject "." detail; class 2, 4 or 5, subject and detail 1 to 3
/// digits.
pub fn is_status_code(token: &str) -> bool {
    let digits = |s: &str, max: usize| {
        !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit())
    };
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(class), Some(subject), Some(detail), None) => {
            matches!(class, "2" | "4" | "5") && digits(subject, 3) && digits(detail, 3)
        }
        _ => false,
    }
}

#[cfg(test)]
#[path = "outcome_tests.rs"]
mod tests;
