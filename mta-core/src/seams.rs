//! The traits the crates meet at, so `mta-smtp` and `mta-queue` build and test alone:
//! [`Enqueue`] (session → queue), [`Deliver`] (scheduler → delivery) and [`UserDirectory`]
//! (session → the user database that `mta user` maintains).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::address::Address;
use crate::auth::UserDb;
use crate::envelope::Envelope;
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
