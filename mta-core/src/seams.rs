//! The traits the crates meet at, so `mta-smtp` and `mta-queue` build and test alone:
//! [`Enqueue`] (session → queue), [`Deliver`] (scheduler → delivery), [`UserDirectory`]
//! (session → the user database that `mta user` maintains) and [`MessageFilter`] (one stage
//! of the checks a received message passes after DATA, before it is queued).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use crate::address::{Address, ReversePath};
use crate::auth::UserDb;
use crate::envelope::{Envelope, ListenerKind, Vouched};
pub use crate::outcome::{Outcome, Remote, Verdict};
use crate::reply::Reply;

/// A queued message's bytes as delivery sees them: the queue store's own copy, shared (never
/// copied) by every task that delivers it, whatever type the store keeps it in.
#[derive(Clone)]
pub struct Body(Arc<dyn AsRef<[u8]> + Send + Sync>);

impl Body {
    /// Shares `bytes` (moved here, not copied).
    pub fn new(bytes: impl AsRef<[u8]> + Send + Sync + 'static) -> Self {
        Self(Arc::new(bytes))
    }
}

impl std::ops::Deref for Body {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        (*self.0).as_ref()
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Body({} octets)", self.len())
    }
}

/// A boxed future, so the traits stay object-safe without an async-trait crate.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why the queue could not take a message. The session answers with [`EnqueueError::reply`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnqueueError {
    /// The disk is full or below the free-space floor.
    #[error("insufficient storage: {0}")]
    DiskFull(String),
    /// Writing or flushing the store failed.
    #[error("queue write failed: {0}")]
    Io(String),
}

impl EnqueueError {
    /// What the SMTP client is told: always a 4xx, so the sender retries (RFC 5321 §6.1).
    pub fn reply(&self) -> Reply {
        match self {
            EnqueueError::DiskFull(_) => Reply::INSUFFICIENT_STORAGE,
            EnqueueError::Io(_) => Reply::LOCAL_ERROR,
        }
    }
}

/// The queue as the session sees it.
pub trait Enqueue: Send + Sync {
    /// Stores the envelope and body. Returns only once both are durably on disk: the
    /// session answers `250` after this and never before.
    fn enqueue(&self, envelope: Envelope, body: Vec<u8>)
    -> BoxFuture<'_, Result<(), EnqueueError>>;

    /// Whether there is room for a new message now: free disk space above the configured
    /// floor and a usable store. Asked at MAIL FROM, so that a full disk is answered with a
    /// 4xx before the client sends the message. The default says yes.
    fn room(&self) -> BoxFuture<'_, Result<(), EnqueueError>> {
        Box::pin(async { Ok(()) })
    }
}

/// Delivery as the scheduler sees it.
pub trait Deliver: Send + Sync {
    /// Makes one attempt for `recipients` (all pending recipients of `envelope` that this
    /// attempt covers) and returns one [`Outcome`] per recipient, in the same order. The
    /// body is shared, not copied, with the tasks that deliver it.
    fn deliver<'a>(
        &'a self,
        envelope: &'a Envelope,
        body: &'a Body,
        recipients: &'a [Address],
    ) -> BoxFuture<'a, Vec<Outcome>>;

    /// Whether `recipient` is delivered on this host (Maildir or LMTP), so that the
    /// scheduler gives it a lane of its own that remote delivery never fills. The default
    /// says no: everything is remote.
    fn is_local(&self, recipient: &Address) -> bool {
        let _ = recipient;
        false
    }
}

/// The user database as the session sees it.
pub trait UserDirectory: Send + Sync {
    /// The current database; an implementation backed by a file reloads it when the file
    /// changes, so `mta user add` takes effect without a restart.
    fn current(&self) -> Arc<UserDb>;
}

/// What a [`MessageFilter`] knows of the session a message came in on.
#[derive(Debug, Clone, Copy)]
pub struct SessionFacts<'a> {
    /// The listener it came in on.
    pub listener: ListenerKind,
    /// The client's address.
    pub peer: SocketAddr,
    /// The EHLO/HELO name, or `unknown`.
    pub helo: &'a str,
    /// The authenticated user, if any.
    pub user: Option<&'a Address>,
}

/// A received message as a [`MessageFilter`] sees it: the envelope and the client's bytes
/// (header section, blank line, body), borrowed from the one buffer that holds them.
#[derive(Debug, Clone, Copy)]
pub struct MessageView<'a> {
    /// `MAIL FROM`.
    pub from: &'a ReversePath,
    /// The accepted `RCPT TO`s, in order.
    pub recipients: &'a [Address],
    /// The message as the client sent it, dot-unstuffed, without our trace fields.
    pub data: &'a [u8],
}

/// A test on a header field's value (everything after the colon, folding included).
pub type FieldPredicate = Arc<dyn Fn(&[u8]) -> bool + Send + Sync>;

/// Which header fields of the client's data a filter wants removed: every field called
/// `name` (without case) whose value (everything after the colon, folding included) `when`
/// holds for, or every one when `when` is `None`.
#[derive(Clone)]
pub struct FieldRemoval {
    /// The field name, without the colon.
    pub name: String,
    /// Which of the fields so named; `None`: all of them.
    pub when: Option<FieldPredicate>,
}

impl std::fmt::Debug for FieldRemoval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let which = if self.when.is_some() { "some" } else { "all" };
        write!(f, "FieldRemoval({which} {})", self.name)
    }
}

/// What a filter that accepts a message changes in it and records about it. The edits are
/// applied once, when the message is assembled for the queue: every filter sees the data as
/// the client sent it.
#[derive(Debug, Clone, Default)]
pub struct HeaderEdits {
    /// Complete fields, each ending in CRLF, put at the top of the message (after our
    /// `Received:`), in the order the filters run.
    pub add: String,
    /// Fields to remove from the client's data.
    pub remove: Vec<FieldRemoval>,
    /// Who vouches for the message, when this filter decides it (the last filter that does
    /// wins); otherwise the listener decides: an authenticated user, or unverified.
    pub vouched: Option<Vouched>,
    /// A short summary for the `received` log line (`spf=… dkim=… dmarc=…`).
    pub summary: Option<String>,
    /// The client's data as this filter rewrote it (a milter changing, inserting or
    /// deleting fields, or replacing the body), no larger than the message size limit: later
    /// filters see it, and it is what is queued. `None`: unchanged.
    pub rewritten: Option<Vec<u8>>,
}

/// What one filter decided about a message.
#[derive(Debug, Clone)]
pub enum FilterVerdict {
    /// Go on to the next filter; these edits are made if every filter accepts.
    Accept(HeaderEdits),
    /// Refuse for good: a `5xx` reply. No later filter runs.
    Reject(Reply),
    /// Refuse for now: a `4xx` reply, and the client tries again. No later filter runs.
    TempFail(Reply),
    /// Answer `250` and drop the message on purpose (a milter's `discard`, or its
    /// quarantine, which we have no hold state for): nothing is queued, the reason is logged.
    /// No later filter runs.
    Discard(String),
}

impl FilterVerdict {
    /// A refusal with `reply`: [`FilterVerdict::TempFail`] for a `4xx`, otherwise
    /// [`FilterVerdict::Reject`].
    pub fn refuse(reply: Reply) -> FilterVerdict {
        if reply.code < 500 {
            FilterVerdict::TempFail(reply)
        } else {
            FilterVerdict::Reject(reply)
        }
    }
}

/// One stage of the checks a message passes after the final dot and before it is queued.
/// It sees the session's facts and the message, never the connection: it may look things up
/// (DNS for SPF, DKIM and DMARC), but the connection loop alone reads and answers.
pub trait MessageFilter: Send + Sync {
    /// A short name for logs.
    fn name(&self) -> &'static str;

    /// Decides about one message.
    fn check<'a>(
        &'a self,
        session: &'a SessionFacts<'a>,
        message: &'a MessageView<'a>,
    ) -> BoxFuture<'a, FilterVerdict>;
}
