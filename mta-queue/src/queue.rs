//! The durable queue ([`Queue`]): the store, the settings, who holds which message (an
//! attempt or an operator, [`Claim`]), and the lane each message runs in; and the
//! [`Enqueue`] side the SMTP session hands messages to. The scheduler, DSNs (`bounce`) and
//! operator actions (`admin`) add their own methods on top; this module depends on none of
//! them.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mta_core::address::Domain;
use mta_core::envelope::{Envelope, MessageId};
use mta_core::seams::{BoxFuture, Enqueue, EnqueueError};
use tokio::sync::Notify;
use tracing::{error, info, warn};

use crate::clock::{self, QueueAge};
use crate::disk::Room;
use crate::retry;
use crate::store::{Record, Store, StoreError};

/// Lanes remembered at once; past this the memory starts afresh.
const MAX_LANES: usize = 200_000;

/// How the queue retries and when it gives up; from the `[queue]` config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSettings {
    /// Our hostname: `Reporting-MTA` and `MAILER-DAEMON@` of the DSNs we send.
    pub hostname: Domain,
    /// Delay after the first failed attempt; it doubles after each further one.
    pub retry_first: Duration,
    /// The delay stops doubling here.
    pub retry_max: Duration,
    /// Pending recipients older than this fail (and are bounced).
    pub max_lifetime: Duration,
    /// One "delayed" DSN is sent after a message waited this long.
    pub delay_warning: Duration,
    /// New mail is refused (452) while the store's file system has fewer free bytes; 0: off.
    pub min_free_space: u64,
    /// Likewise for free inodes; 0: off.
    pub min_free_inodes: u64,
}

impl QueueSettings {
    /// The `[queue]` settings of a config.
    pub fn from_config(config: &mta_core::config::Config) -> QueueSettings {
        QueueSettings {
            hostname: config.hostname.clone(),
            retry_first: config.queue.retry_first,
            retry_max: config.queue.retry_max,
            max_lifetime: config.queue.max_lifetime,
            delay_warning: config.queue.delay_warning,
            min_free_space: config.queue.min_free_space,
            min_free_inodes: config.queue.min_free_inodes,
        }
    }

    /// The built-in schedule (5 min doubling to 1 h, 4 h warning, 5 days lifetime), with
    /// no free-space floors.
    pub fn new(hostname: Domain) -> QueueSettings {
        QueueSettings {
            hostname,
            retry_first: retry::FIRST_RETRY,
            retry_max: retry::MAX_RETRY,
            max_lifetime: retry::MAX_LIFETIME,
            delay_warning: retry::DELAY_WARNING,
            min_free_space: 0,
            min_free_inodes: 0,
        }
    }
}

/// Which lane a message's next attempt runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    /// Only its local recipients.
    Local,
    /// All its pending recipients.
    Remote,
}

/// Who holds a message: an attempt (which the notify cancels), an attempt that was
/// cancelled and hands the message to the operator waiting for it, or an operator's action.
enum Holder {
    Attempt(Arc<Notify>),
    Handover,
    Operator,
}

/// The durable queue: the store, plus what the scheduler needs to run it.
pub struct Queue {
    pub(crate) store: Store,
    pub(crate) wake: Notify,
    inflight: Mutex<HashMap<MessageId, Holder>>,
    lanes: Mutex<HashMap<MessageId, Lane>>,
    pub(crate) settings: QueueSettings,
}

impl Queue {
    /// Opens the queue stored in `path`.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be opened.
    pub fn open(path: &Path, settings: QueueSettings) -> Result<Arc<Queue>, StoreError> {
        Ok(Arc::new(Queue {
            store: Store::open(path)?,
            wake: Notify::new(),
            inflight: Mutex::new(HashMap::new()),
            lanes: Mutex::new(HashMap::new()),
            settings,
        }))
    }

    /// The retry settings.
    pub fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    /// Wakes the scheduler (after an operator made messages due).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The underlying store (for inspection by the CLI and tests).
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn remembered_lane(&self, id: &MessageId) -> Option<Lane> {
        self.lanes
            .lock()
            .expect("lanes lock poisoned")
            .get(id)
            .copied()
    }

    pub(crate) fn remember_lane(&self, id: &MessageId, lane: Option<Lane>) {
        let mut lanes = self.lanes.lock().expect("lanes lock poisoned");
        match lane {
            Some(lane) => {
                if lanes.len() >= MAX_LANES {
                    lanes.clear();
                }
                lanes.insert(id.clone(), lane);
            }
            None => {
                lanes.remove(id);
            }
        }
    }

    /// Claims a message for an operator action: waits (up to 30 s) until no delivery
    /// attempt is working on it, then keeps the scheduler off it until the [`Claim`] is
    /// dropped. `None` when an attempt did not finish in time.
    pub async fn claim(&self, id: &MessageId) -> Option<Claim<'_>> {
        self.claim_with(id, false).await
    }

    /// [`Queue::claim`] for an action that makes the attempt pointless (deleting the
    /// message): an attempt in progress is cancelled rather than waited for. It stops
    /// before recording anything; once it is recording, that is waited for.
    pub async fn claim_cancelling(&self, id: &MessageId) -> Option<Claim<'_>> {
        self.claim_with(id, true).await
    }

    async fn claim_with(&self, id: &MessageId, cancel: bool) -> Option<Claim<'_>> {
        for _ in 0..600 {
            {
                let mut map = self.inflight.lock().expect("inflight lock poisoned");
                match map.get(id) {
                    None | Some(Holder::Handover) => {
                        map.insert(id.clone(), Holder::Operator);
                        return Some(Claim {
                            queue: self,
                            id: id.clone(),
                        });
                    }
                    Some(Holder::Attempt(stop)) if cancel => stop.notify_one(),
                    Some(_) => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    pub(crate) fn inflight_contains(&self, id: &MessageId) -> bool {
        self.inflight
            .lock()
            .expect("inflight lock poisoned")
            .contains_key(id)
    }

    pub(crate) fn inflight_count(&self) -> usize {
        self.inflight.lock().expect("inflight lock poisoned").len()
    }

    /// Marks `id` as held by a delivery attempt; the notify returned cancels it.
    pub(crate) fn hold_for_attempt(&self, id: &MessageId) -> Arc<Notify> {
        let cancel = Arc::new(Notify::new());
        self.inflight
            .lock()
            .expect("inflight lock poisoned")
            .insert(id.clone(), Holder::Attempt(cancel.clone()));
        cancel
    }

    /// A cancelled attempt hands `id` straight to the operator who cancelled it, before
    /// the scheduler could start the message again.
    pub(crate) fn hand_over(&self, id: &MessageId) {
        let mut map = self.inflight.lock().expect("inflight lock poisoned");
        map.insert(id.clone(), Holder::Handover);
    }

    pub(crate) fn inflight_set(&self, id: &MessageId, on: bool) {
        let mut map = self.inflight.lock().expect("inflight lock poisoned");
        if on {
            map.insert(id.clone(), Holder::Operator);
        } else {
            map.remove(id);
        }
    }

    /// Forgets what the scheduler remembers of a message that is gone.
    pub(crate) fn forget(&self, id: &MessageId) {
        self.remember_lane(id, None);
    }
}

/// An operator's hold on one message (see [`Queue::claim`]).
pub struct Claim<'a> {
    queue: &'a Queue,
    id: MessageId,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.queue.inflight_set(&self.id, false);
        self.queue.wake.notify_one();
    }
}

impl Queue {
    /// [`Enqueue::room`]: the free-space floors, then a usable store (reopened after an
    /// error). Below a floor the store is not even reopened: that waits for space.
    async fn check_room(&self) -> Result<(), EnqueueError> {
        let s = &self.settings;
        match self.store.room(s.min_free_space, s.min_free_inodes) {
            Ok(Room::Enough) => {}
            Ok(Room::LowSpace(free)) => {
                return Err(EnqueueError::DiskFull(format!(
                    "{free} bytes free in the queue's file system, below queue.min_free_space"
                )));
            }
            Ok(Room::LowInodes(free)) => {
                return Err(EnqueueError::DiskFull(format!(
                    "{free} inodes free in the queue's file system, below queue.min_free_inodes"
                )));
            }
            Err(e) => return Err(EnqueueError::Io(format!("cannot check free space: {e}"))),
        }
        self.store
            .ensure_open()
            .await
            .map_err(|e| e.to_enqueue_error())
    }
}

impl Enqueue for Queue {
    fn room(&self) -> BoxFuture<'_, Result<(), EnqueueError>> {
        Box::pin(self.check_room())
    }

    fn enqueue(
        &self,
        envelope: Envelope,
        body: Vec<u8>,
    ) -> BoxFuture<'_, Result<(), EnqueueError>> {
        Box::pin(async move {
            let clock = clock::reading();
            let record = Record {
                envelope,
                next_attempt_ms: clock.now_ms,
                age: QueueAge::new(clock),
            };
            match self.store.headroom(body.len() as u64) {
                Ok(Room::Enough) => {}
                Ok(Room::LowSpace(free)) => {
                    warn!(
                        size = body.len(),
                        free, "message refused: too little free space for it"
                    );
                    return Err(EnqueueError::DiskFull(format!("{free} bytes free")));
                }
                Ok(Room::LowInodes(free)) => {
                    warn!(free, "message refused: too few free inodes");
                    return Err(EnqueueError::DiskFull(format!("{free} inodes free")));
                }
                Err(e) => return Err(EnqueueError::Io(format!("cannot check free space: {e}"))),
            }
            match self.store.insert(&record, body).await {
                Ok(()) => {
                    info!(msg = %record.envelope.id, "queued");
                    self.wake.notify_one();
                    Ok(())
                }
                Err(e) => {
                    error!(error = %e, "enqueue failed");
                    Err(e.to_enqueue_error())
                }
            }
        })
    }
}
