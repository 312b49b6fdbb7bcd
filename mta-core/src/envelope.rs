//! The envelope of a queued message: who sent it, to whom, and where each recipient stands.
//!
//! The session builds an [`Envelope`] with every recipient [`RcptState::Pending`]; the queue
//! stores it (serde) and the scheduler updates each recipient's state after every attempt.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::address::{Address, ReversePath, parse_reverse_path};
use crate::dsn::{MessageDsn, RcptDsn};
use crate::outcome::{Outcome, Verdict};

/// A queue id: 12 hex digits of Unix milliseconds and 8 random hex digits, so ids sort by
/// arrival and never repeat in practice. It names the message in replies and logs.
///
/// Within one process the millisecond part only grows: when the wall clock steps back, ids
/// go on from the last one (one millisecond further each) until the clock catches up.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MessageId(String);

impl MessageId {
    /// A fresh id for a message received at `unix_millis`, later than every id this
    /// process made before.
    pub fn generate(unix_millis: u64) -> MessageId {
        use std::sync::atomic::{AtomicU64, Ordering};
        static LAST: AtomicU64 = AtomicU64::new(0);
        let mut millis = unix_millis;
        let _ = LAST.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
            millis = id_millis(last, unix_millis);
            Some(millis)
        });
        MessageId(format!(
            "{:012x}{:08x}",
            millis & 0xffff_ffff_ffff,
            rand::random::<u32>()
        ))
    }

    /// The id as text (20 lower-case hex digits).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses an id typed by an operator or read from the store.
    ///
    /// # Errors
    /// When the text is not 20 hex digits.
    pub fn parse(text: &str) -> Result<MessageId, String> {
        if text.len() == 20 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(MessageId(text.to_ascii_lowercase()))
        } else {
            Err(format!("{text:?} is not a queue id (20 hex digits)"))
        }
    }
}

/// The millisecond part of the next id: the clock's, unless that is not later than the
/// last id's (the clock stepped back, or two ids in one millisecond).
fn id_millis(last: u64, now: u64) -> u64 {
    if now > last {
        now
    } else {
        last.saturating_add(1)
    }
}

impl TryFrom<String> for MessageId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        MessageId::parse(&s)
    }
}

impl From<MessageId> for String {
    fn from(id: MessageId) -> String {
        id.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which kind of listener a message came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerKind {
    /// Port 25: inbound for local domains, no AUTH.
    Smtp,
    /// Port 587: STARTTLS then AUTH (RFC 6409).
    Submission,
    /// Port 465: implicit TLS then AUTH (RFC 8314).
    Submissions,
}

impl ListenerKind {
    /// The config key and log name of this listener kind.
    pub fn name(self) -> &'static str {
        match self {
            ListenerKind::Smtp => "smtp",
            ListenerKind::Submission => "submission",
            ListenerKind::Submissions => "submissions",
        }
    }

    /// True for the ports where AUTH is required before MAIL.
    pub fn is_submission(self) -> bool {
        !matches!(self, ListenerKind::Smtp)
    }
}

/// Where a recipient stands. Set by the session (`Pending`) and by the scheduler afterwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RcptState {
    /// Not delivered yet; retried when the message is due.
    Pending,
    /// Delivered; `detail` says where (Maildir file, remote reply).
    Delivered,
    /// Failed for good; the reason is in `last_result`.
    Failed,
}

/// One recipient of a queued message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "StoredRecipient", into = "StoredRecipient")]
pub struct Recipient {
    /// The address as accepted at RCPT (after alias expansion, if any).
    pub address: Address,
    /// Set by the session to `Pending`, by the scheduler after each attempt.
    pub state: RcptState,
    /// Delivery attempts made so far (scheduler).
    pub attempts: u32,
    /// What the last attempt came to (scheduler): a remote reply or a local reason.
    pub last_result: Option<Outcome>,
    /// The RFC 3461 `NOTIFY` and `ORCPT` of its RCPT (set by the session).
    pub dsn: RcptDsn,
}

/// A [`Recipient`] as the queue stores it (and `mta queue --json` shows it): the outcome
/// typed in `outcome`, and as text in `last_result`, which is all that records written
/// before outcomes were typed hold (it is read back with [`Outcome::from_text`]).
#[derive(Serialize, Deserialize)]
struct StoredRecipient {
    #[serde(with = "address_text")]
    address: Address,
    state: RcptState,
    #[serde(default)]
    attempts: u32,
    #[serde(default)]
    last_result: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    outcome: Option<Outcome>,
    #[serde(default, skip_serializing_if = "RcptDsn::is_empty")]
    dsn: RcptDsn,
}

impl From<StoredRecipient> for Recipient {
    fn from(s: StoredRecipient) -> Recipient {
        let verdict = match s.state {
            RcptState::Pending => Verdict::Deferred,
            RcptState::Delivered => Verdict::Delivered,
            RcptState::Failed => Verdict::Failed,
        };
        let last_result = s
            .outcome
            .or_else(|| s.last_result.map(|t| Outcome::from_text(verdict, &t)));
        Recipient {
            address: s.address,
            state: s.state,
            attempts: s.attempts,
            last_result,
            dsn: s.dsn,
        }
    }
}

impl From<Recipient> for StoredRecipient {
    fn from(r: Recipient) -> StoredRecipient {
        StoredRecipient {
            address: r.address,
            state: r.state,
            attempts: r.attempts,
            last_result: r.last_result.as_ref().map(Outcome::to_string),
            outcome: r.last_result,
            dsn: r.dsn,
        }
    }
}

impl Recipient {
    /// A recipient not yet tried.
    pub fn pending(address: Address) -> Recipient {
        Recipient {
            address,
            state: RcptState::Pending,
            attempts: 0,
            last_result: None,
            dsn: RcptDsn::default(),
        }
    }
}

/// How the message reached us; written once by the session, read by logs and the CLI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The listener kind it came in on.
    pub listener: ListenerKind,
    /// The client's IP address and port.
    pub peer: String,
    /// The name the client gave in EHLO/HELO.
    pub helo: String,
    /// The authenticated user (submission only).
    pub auth_user: Option<String>,
    /// TLS protocol and cipher suite, if the session was encrypted.
    pub tls: Option<String>,
}

/// Who vouches for a queued message. It decides two things: whether our DKIM key signs it
/// (only what an authenticated user submitted, whose originator fields were checked, and what
/// `mta` wrote itself), and whether a failure is reported to its envelope sender (not when
/// nothing showed that sender to be real: a DSN to a forged sender is backscatter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Vouched {
    /// Set by the session: an authenticated user submitted it.
    User,
    /// Set where `mta` writes a message itself (a bounce, a TLS report).
    Generated,
    /// Set by the session for mail from another server whose envelope sender's domain passed
    /// SPF, or signed it with a DKIM signature that verified.
    SenderVerified,
    /// Set by the session for mail from another server that nothing vouches for (or that was
    /// not checked: `[inbound] checks = false`).
    Unverified,
    /// A record queued before this field existed; [`Envelope::vouched`] decides from
    /// [`Origin`] what it was.
    Unrecorded,
}

/// A queued message's envelope. The body is stored beside it, not in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Queue id, made by the session at the end of DATA.
    pub id: MessageId,
    /// MAIL FROM; `<>` for bounces.
    #[serde(with = "reverse_path_text")]
    pub sender: ReversePath,
    /// Every recipient with its own state.
    pub recipients: Vec<Recipient>,
    /// When we answered 250, in Unix seconds.
    pub received_at: u64,
    /// Size of the stored body in octets.
    pub size: u64,
    /// How it reached us.
    pub origin: Origin,
    /// Set by the scheduler once the "delayed" DSN has been sent, so it is sent only once.
    #[serde(default)]
    pub delay_warned: bool,
    /// RFC 8689 REQUIRETLS: relay only over TLS with a verified certificate to servers that
    /// offer REQUIRETLS too, else fail with `5.7.30`. Records queued before this field
    /// existed read as `false`.
    #[serde(default)]
    pub require_tls: bool,
    /// Who vouches for the message (set once, by whoever makes the envelope). Records queued
    /// before this field existed read as [`Vouched::Unrecorded`].
    #[serde(default = "unrecorded")]
    pub vouched: Vouched,
    /// The RFC 3461 `RET` and `ENVID` of MAIL (set by the session). Records queued before
    /// this field existed read as none given.
    #[serde(default, skip_serializing_if = "MessageDsn::is_empty")]
    pub dsn: MessageDsn,
}

fn unrecorded() -> Vouched {
    Vouched::Unrecorded
}

impl Envelope {
    /// The envelope of a message `mta` writes itself (a bounce, a TLS report): from `<>`,
    /// so that its own failure bounces nowhere, "received" from this host now.
    pub fn generated(
        id: MessageId,
        to: Vec<Address>,
        hostname: &str,
        now_secs: u64,
        size: usize,
    ) -> Envelope {
        Envelope {
            id,
            sender: ReversePath::Null,
            recipients: to.into_iter().map(Recipient::pending).collect(),
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
            require_tls: false,
            vouched: Vouched::Generated,
            dsn: MessageDsn::default(),
        }
    }

    /// Who vouches for the message. A record from before [`Envelope::vouched`] existed is
    /// read from its origin: a user's submission, one of our own messages (from `<>`,
    /// "received" from `local`), or mail from another server, which keeps the treatment it
    /// was accepted under (its failures are reported), but is never signed.
    pub fn vouched(&self) -> Vouched {
        match self.vouched {
            Vouched::Unrecorded if self.origin.auth_user.is_some() => Vouched::User,
            Vouched::Unrecorded
                if self.sender == ReversePath::Null && self.origin.peer == "local" =>
            {
                Vouched::Generated
            }
            Vouched::Unrecorded => Vouched::SenderVerified,
            known => known,
        }
    }

    /// True when our DKIM keys may sign the message: an authenticated user's submission (its
    /// `From:` was checked to be theirs) or a message `mta` wrote itself. Never mail from
    /// another server, whatever its `From:` says.
    pub fn may_sign(&self) -> bool {
        matches!(self.vouched(), Vouched::User | Vouched::Generated)
    }

    /// True when a failure may be reported to the envelope sender: anything but mail from
    /// another server whose sender nothing showed to be real.
    pub fn may_bounce(&self) -> bool {
        self.vouched() != Vouched::Unverified
    }

    /// True when no recipient is pending any more.
    pub fn is_finished(&self) -> bool {
        self.recipients
            .iter()
            .all(|r| r.state != RcptState::Pending)
    }
}

mod address_text {
    use super::Address;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(a: &Address, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(a)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Address, D::Error> {
        let text = String::deserialize(d)?;
        Address::parse(&text).map_err(D::Error::custom)
    }
}

mod reverse_path_text {
    use super::{ReversePath, parse_reverse_path};
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(p: &ReversePath, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(p)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ReversePath, D::Error> {
        let text = String::deserialize(d)?;
        parse_reverse_path(&text).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        let id = MessageId::generate(0xfff0_0123_4567);
        assert_eq!(id.as_str().len(), 20);
        assert!(id.as_str().starts_with("fff001234567"));
        assert_eq!(MessageId::parse(id.as_str()).unwrap(), id);
        assert!(MessageId::parse("../../etc/passwd").is_err());
    }

    /// Ids made one after another sort in that order, whatever the wall clock does.
    #[test]
    fn ids_stay_ordered_when_the_clock_steps_back() {
        let clock = [5_000u64, 5_000, 4_000, 3_999, 7_000, 6_000, 6_000, 9_000];
        let mut last = 0;
        let mut made = Vec::new();
        for now in clock {
            last = id_millis(last, now);
            made.push(last);
        }
        assert_eq!(
            made,
            [5_000, 5_001, 5_002, 5_003, 7_000, 7_001, 7_002, 9_000]
        );
        let a = MessageId::generate(2_000_000_000_000);
        let b = MessageId::generate(1_000_000_000_000);
        assert!(b > a, "{b} after {a}");
    }
}
