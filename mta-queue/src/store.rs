//! The sled store behind the queue: three trees written together in one transaction (a
//! finished message is removed with plain writes and an intent, `store_finish.rs`).
//!
//! - `envelopes`: queue id → JSON [`Record`] (the envelope and its next attempt time)
//! - `bodies`: queue id → message bytes exactly as they will be delivered
//! - `schedule`: next-attempt time (big-endian Unix ms) ++ queue id → empty; "what is due"
//!   is a range scan from the start of this tree
//! - `finishing`: queue id → schedule key, while a finished message is being removed
//! - `corrupt`: records set aside
//!
//! Durability: sled runs with `flush_every_ms(None)`; every write that the SMTP client or the
//! scheduler relies on is followed by `flush()` in `spawn_blocking` (sled's `flush_async`
//! deadlocks under concurrency). Concurrent flushes share the disk sync (group commit).
//! A record that does not decode is moved to the `corrupt` tree and logged, never dropped.
//!
//! Failure: after any I/O error (a full disk, a failed sync) the open sled handles are given
//! up and sled is reopened from disk before the next write ([`Store`]), because sled stays
//! failed after an error and a sync after a failed one proves nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use mta_core::envelope::{Envelope, MessageId};
use mta_core::seams::Body;
use serde::{Deserialize, Serialize};
use sled::Transactional;

use crate::clock::QueueAge;
use crate::disk::{self, Room, flush_sled, sync_files};
use sled::transaction::{ConflictableTransactionError, TransactionError};

/// What is stored per message besides the body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The envelope with each recipient's state.
    pub envelope: Envelope,
    /// When the next attempt is due, on the queue clock ([`crate::clock`]), in
    /// milliseconds. Mirrors the `schedule` key. What `mta queue list` and `show` return is
    /// converted to the wall clock (Unix ms).
    pub next_attempt_ms: u64,
    /// How long the message has been in the queue, for its lifetime and delay notice. Set
    /// when it is queued, brought up to date by each delivery attempt.
    #[serde(default)]
    pub age: QueueAge,
}

/// Store failures, with enough context for the log; the SMTP client sees only a 4xx.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The disk is full.
    #[error("queue store at {path}: disk full: {source}")]
    DiskFull {
        /// The store directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: sled::Error,
    },
    /// Any other sled or I/O failure.
    #[error("queue store at {path}: {source}")]
    Io {
        /// The store directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: sled::Error,
    },
    /// The store's files are not a sled store we can read: opening them would let sled
    /// start afresh over them, so they are left alone.
    #[error(
        "queue store at {path} is damaged: {why}; it was not opened and nothing in it was \
         changed (see docs/durability.md, \"Corrupt store\")"
    )]
    Damaged {
        /// The store directory.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// A record that does not decode (it has been moved aside).
    #[error("queue record {id} is corrupt and was moved to the corrupt tree: {reason}")]
    Corrupt {
        /// The record key.
        id: String,
        /// Why it did not decode.
        reason: String,
    },
    /// A delivery attempt kept working on the message longer than an operator action waits.
    #[error("message {0} is busy with a delivery attempt; try again")]
    Busy(String),
    /// The store was given up after an error and is not reopened yet.
    #[error("queue store at {path} is unavailable after an error, until it can be reopened: {why}")]
    Unavailable {
        /// The store directory.
        path: PathBuf,
        /// The error that made us give it up, or why reopening failed.
        why: String,
    },
    /// The blocking flush task died (runtime shutting down).
    #[error("queue flush task failed: {0}")]
    Join(String),
}

/// What stands in the way of opening a store, as the operator must act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenTrouble {
    /// The store was read and found not to be a store: the "Corrupt store" steps apply.
    Damaged,
    /// No room to write.
    DiskFull,
    /// The process (EMFILE) or the system (ENFILE) is out of file descriptors.
    OutOfDescriptors,
    /// Another process holds the store's lock.
    Locked,
    /// Permission denied.
    Permission,
    /// The file system is mounted read-only.
    ReadOnly,
    /// Any other error: the store is not known to be damaged.
    Other,
}

impl OpenTrouble {
    /// One line for the operator: what it is and what to do. Only [`OpenTrouble::Damaged`]
    /// points at the recovery steps that end with moving the store aside.
    pub fn advice(self) -> &'static str {
        match self {
            OpenTrouble::Damaged => {
                "the store is damaged: see docs/durability.md, \"Corrupt store\""
            }
            OpenTrouble::DiskFull => "the disk is full: free some space and start again",
            OpenTrouble::OutOfDescriptors => {
                "out of file descriptors: raise the limit (LimitNOFILE) or stop what holds \
                 them, and start again; the store is not damaged, do not move it"
            }
            OpenTrouble::Locked => "is another mta serve using this data dir?",
            OpenTrouble::Permission => {
                "permission denied: the data dir must belong to the user mta runs as; the \
                 store is not damaged, do not move it"
            }
            OpenTrouble::ReadOnly => {
                "the file system is read-only: remount it read-write (check the disk first: \
                 dmesg); the store is not damaged, do not move it"
            }
            OpenTrouble::Other => {
                "the store is not known to be damaged: fix the cause named above and start \
                 again; do not move it"
            }
        }
    }
}

impl StoreError {
    /// What kind of trouble this is for an operator opening the store.
    pub fn open_trouble(&self) -> OpenTrouble {
        use rustix::io::Errno;
        match self {
            StoreError::Damaged { .. } => OpenTrouble::Damaged,
            StoreError::DiskFull { .. } => OpenTrouble::DiskFull,
            StoreError::Io { source, .. } => {
                let sled::Error::Io(io) = source else {
                    return OpenTrouble::Other;
                };
                // sled reports its file lock held elsewhere as a text error around EAGAIN.
                if io.to_string().contains("could not acquire lock") {
                    return OpenTrouble::Locked;
                }
                match io.raw_os_error().map(Errno::from_raw_os_error) {
                    Some(Errno::MFILE | Errno::NFILE) => OpenTrouble::OutOfDescriptors,
                    Some(Errno::AGAIN) => OpenTrouble::Locked,
                    Some(Errno::ACCESS | Errno::PERM) => OpenTrouble::Permission,
                    Some(Errno::ROFS) => OpenTrouble::ReadOnly,
                    _ => OpenTrouble::Other,
                }
            }
            StoreError::Unavailable { .. }
            | StoreError::Corrupt { .. }
            | StoreError::Busy(_)
            | StoreError::Join(_) => OpenTrouble::Other,
        }
    }

    /// Maps the error onto what the queue tells the session.
    pub fn to_enqueue_error(&self) -> mta_core::seams::EnqueueError {
        use mta_core::seams::EnqueueError;
        match self {
            StoreError::DiskFull { .. } => EnqueueError::DiskFull(self.to_string()),
            StoreError::Io { .. }
            | StoreError::Damaged { .. }
            | StoreError::Unavailable { .. }
            | StoreError::Corrupt { .. }
            | StoreError::Busy(_)
            | StoreError::Join(_) => EnqueueError::Io(self.to_string()),
        }
    }
}

/// The open store. Cheap to clone: clones share the sled handles and the reopen state.
///
/// After any I/O error the sled handles in use are given up for good (sled stays failed
/// after an error, and a later sync could not vouch for writes an earlier failed one may
/// have lost). The next write, [`Store::ensure_open`] or [`Store::room`] reopens sled from
/// what is on disk; until that succeeds every operation fails with
/// [`StoreError::Unavailable`], which the session answers with a 4xx. Operations take the
/// current handles once and use them to the end, so an old handle is dropped as soon as the
/// operations that were using it finish; sled's file lock makes a reopen fail (and be tried
/// again later) while one is still alive.
#[derive(Clone)]
pub struct Store {
    path: PathBuf,
    shared: Arc<Shared>,
}

/// How long a write that rides on the next flush round ([`Store::update_with_next_round`])
/// waits for another write to start one before it starts one itself: the most a crash can
/// find unflushed of it besides the round running then.
pub const RIDE_AT_MOST: std::time::Duration = std::time::Duration::from_millis(50);

/// A message as loaded for delivery: its record and its body, shared rather than copied.
pub type Loaded = (Record, Body);

fn schedule_key(due_ms: u64, id: &MessageId) -> Vec<u8> {
    let mut key = due_ms.to_be_bytes().to_vec();
    key.extend_from_slice(id.as_str().as_bytes());
    key
}

impl Store {
    /// Whether the store's file system has room for new mail ([`disk::room`]).
    ///
    /// # Errors
    /// The `statvfs` error (the session answers 451).
    pub fn room(&self, min_space: u64, min_inodes: u64) -> std::io::Result<Room> {
        disk::room(&self.path, min_space, min_inodes)
    }

    /// Whether a message of `size` bytes fits with room to spare ([`disk::headroom`]).
    ///
    /// # Errors
    /// The `statvfs` error.
    pub fn headroom(&self, size: u64) -> std::io::Result<Room> {
        disk::headroom(&self.path, size)
    }

    /// Flushes everything written so far to disk; returns when it is durable.
    ///
    /// # Errors
    /// [`StoreError`] when the flush fails, or the store is unavailable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let h = self.writable().await?;
        self.flush_handle(&h).await
    }

    /// Flushes `h`; on failure gives it up.
    ///
    /// sled 0.34's own flush ends in `sync_file_range(2)` on Linux, which neither flushes the
    /// drive's write cache nor the file's metadata (its growing size), and it writes large
    /// values as separate blob files without any sync. So after sled's flush we
    /// `fdatasync` the log file, every blob file not yet synced at its length, and the blob
    /// directory when a blob appeared: only then is the data on stable storage. Concurrent
    /// callers share one round ([`crate::group_sync`]).
    async fn flush_handle(&self, h: &Arc<Handle>) -> Result<(), StoreError> {
        let handle = h.clone();
        let path = self.path.clone();
        let result = tokio::task::spawn_blocking(move || {
            handle.group.sync(|| -> sled::Result<()> {
                flush_sled(&handle.db)?;
                let mut synced = handle.synced.lock().unwrap_or_else(|e| e.into_inner());
                sync_files(&path, &mut synced).map_err(sled::Error::Io)
            })
        })
        .await
        .map_err(|e| StoreError::Join(e.to_string()))?;
        result.map_err(|why| {
            let full = ["No space left", "StorageFull", "quota exceeded"]
                .iter()
                .any(|s| why.contains(s));
            let source = sled::Error::Io(std::io::Error::other(why));
            let path = self.path.clone();
            let e = if full {
                StoreError::DiskFull { path, source }
            } else {
                StoreError::Io { path, source }
            };
            self.fail(h, e)
        })
    }

    /// How many flush-and-sync rounds have run (several writers share one: group commit).
    pub fn syncs(&self) -> u64 {
        let current = match &*self.slot() {
            Slot::Open(h) => h.group.syncs(),
            Slot::Failed(_) => 0,
        };
        self.shared.retired_syncs.load(Ordering::Relaxed) + current
    }

    /// Runs a write on `h`; a storage error gives `h` up.
    fn write<T>(
        &self,
        h: &Arc<Handle>,
        tx: impl FnOnce(&Handle) -> Result<T, TransactionError<()>>,
    ) -> Result<T, StoreError> {
        tx(h).map_err(|e| match e {
            TransactionError::Storage(source) => self.fail(h, classify(&self.path, source)),
            TransactionError::Abort(()) => unreachable!("our transactions never abort"),
        })
    }

    /// Runs a write on `h` on a blocking-pool thread, bounded by [`disk::FLUSH_TIMEOUT`]:
    /// after sled met a full disk, a write can block for ever too (it waits for log space
    /// that never comes), and it must not take an async worker with it. A write that does not
    /// return in time fails and gives `h` up; its thread is left behind.
    async fn write_bounded<T: Send + 'static>(
        &self,
        h: &Arc<Handle>,
        tx: impl FnOnce(&Handle) -> Result<T, TransactionError<()>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let handle = h.clone();
        // A thread of the blocking pool, reused from write to write (a new thread for each
        // write cost a thread start per message).
        let result = tokio::task::spawn_blocking(move || tx(&handle));
        match tokio::time::timeout(disk::FLUSH_TIMEOUT, result).await {
            Ok(Ok(written)) => self.write(h, |_| written),
            Ok(Err(_)) => Err(StoreError::Join("queue write thread died".into())),
            Err(_) => {
                let stuck = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "sled write did not return within 5 s",
                );
                Err(self.fail(h, classify(&self.path, sled::Error::Io(stuck))))
            }
        }
    }

    /// Stores a new message and flushes. Returns only when it is durable.
    ///
    /// # Errors
    /// [`StoreError`] on a write or flush failure; nothing may be assumed stored then (nor
    /// missing: a message refused this way may still be delivered).
    pub async fn insert<B>(&self, record: &Record, body: B) -> Result<(), StoreError>
    where
        B: Into<sled::IVec> + Send + 'static,
    {
        let h = self.writable().await?;
        let id = record.envelope.id.clone();
        let json = serde_json::to_vec(record).expect("a Record always serialises");
        let key = schedule_key(record.next_attempt_ms, &id);
        // The body moves to the writing thread and becomes the store's value there, once:
        // the caller's buffer is freed as soon as it is copied, and the transaction, the
        // tree and delivery share that one copy.
        self.write_bounded(&h, move |h| {
            let body: sled::IVec = body.into();
            (&h.envelopes, &h.bodies, &h.schedule).transaction(|(e, b, s)| {
                e.insert(id.as_str().as_bytes(), json.as_slice())?;
                b.insert(id.as_str().as_bytes(), body.clone())?;
                s.insert(key.as_slice(), &[][..])?;
                Ok::<(), ConflictableTransactionError<()>>(())
            })
        })
        .await?;
        h.count.fetch_add(1, Ordering::Relaxed);
        self.flush_handle(&h).await
    }

    /// Writes the new state of a message after an attempt: moves its schedule entry from
    /// `old_due_ms` to the record's `next_attempt_ms`, or removes the message entirely when
    /// `finished`. Flushes before returning.
    ///
    /// # Errors
    /// [`StoreError`] on a write or flush failure.
    pub async fn update(
        &self,
        record: &Record,
        old_due_ms: u64,
        finished: bool,
    ) -> Result<(), StoreError> {
        let h = self.write_update(record, old_due_ms, finished).await?;
        self.flush_handle(&h).await
    }

    /// [`Store::update`] for an attempt that delivered every recipient it changed, without
    /// a flush of its own: the new state rides on the next flush round, which another write
    /// starts (a message accepted, a deferral) or, when none has started within
    /// [`RIDE_AT_MOST`], one this call arranges. A crash before that round leaves the old
    /// state on disk, so the recipients are delivered again (a duplicate), never lost
    /// (`docs/durability.md`, "What a crash may duplicate").
    ///
    /// # Errors
    /// [`StoreError`] on a write failure; a failure of the later flush gives the handles up
    /// as any flush failure does.
    pub async fn update_with_next_round(
        &self,
        record: &Record,
        old_due_ms: u64,
        finished: bool,
    ) -> Result<(), StoreError> {
        let h = self.write_update(record, old_due_ms, finished).await?;
        // Rounds numbered above this one start after the write.
        h.ride_mark.fetch_max(h.group.started(), Ordering::SeqCst);
        if !h.ride_flush.swap(true, Ordering::SeqCst) {
            // Held weakly: a store closed meanwhile (its last owner flushes it, as `mta
            // serve` does when it stops) or a handle given up is not kept open for this.
            let (path, shared, handle) = (
                self.path.clone(),
                Arc::downgrade(&self.shared),
                Arc::downgrade(&h),
            );
            tokio::spawn(async move {
                tokio::time::sleep(RIDE_AT_MOST).await;
                let (Some(shared), Some(h)) = (shared.upgrade(), handle.upgrade()) else {
                    return;
                };
                let store = Store { path, shared };
                // Writes that found the flag set have set their mark before it is cleared;
                // a write after the clear arranges a flush of its own.
                h.ride_flush.store(false, Ordering::SeqCst);
                if h.group.started() > h.ride_mark.load(Ordering::SeqCst) {
                    return; // a round that started after every such write covers them
                }
                if let Err(e) = store.flush_handle(&h).await {
                    tracing::error!(
                        error = %e,
                        "cannot flush delivery results; after a crash they are delivered again"
                    );
                }
            });
        }
        Ok(())
    }

    /// Writes the new state of a message after an attempt (see [`Store::update`]); the
    /// handle written to.
    async fn write_update(
        &self,
        record: &Record,
        old_due_ms: u64,
        finished: bool,
    ) -> Result<Arc<Handle>, StoreError> {
        let h = self.writable().await?;
        let id = record.envelope.id.clone();
        let old_key = schedule_key(old_due_ms, &id);
        if finished {
            // Without a transaction: `store_finish.rs` says why, and how a crash halfway
            // through is completed.
            let removed = self
                .write_bounded(&h, move |h| {
                    finish::remove_finished(
                        &h.finishing,
                        &h.envelopes,
                        &h.bodies,
                        &h.schedule,
                        &id,
                        &old_key,
                    )
                    .map_err(TransactionError::Storage)
                })
                .await?;
            if removed {
                uncount(&h);
            }
            return Ok(h);
        }
        let json = serde_json::to_vec(record).expect("a Record always serialises");
        let new_key = schedule_key(record.next_attempt_ms, &id);
        self.write_bounded(&h, move |h| {
            (&h.envelopes, &h.schedule).transaction(|(e, s)| {
                s.remove(old_key.as_slice())?;
                // The entry of the due time stored now, when it is not the caller's (the
                // queue was flushed while the attempt ran): one message, one entry.
                if let Some(stored) = e.get(id.as_str().as_bytes())?
                    && let Ok(stored) = serde_json::from_slice::<Record>(&stored)
                {
                    s.remove(schedule_key(stored.next_attempt_ms, &id))?;
                }
                e.insert(id.as_str().as_bytes(), json.as_slice())?;
                s.insert(new_key.as_slice(), &[][..])?;
                Ok::<(), ConflictableTransactionError<()>>(())
            })
        })
        .await?;
        Ok(h)
    }

    /// Removes one schedule entry (of a message that no longer exists) and flushes.
    ///
    /// # Errors
    /// [`StoreError`] on a write or flush failure.
    pub async fn unschedule(&self, due_ms: u64, id: &MessageId) -> Result<(), StoreError> {
        let h = self.writable().await?;
        let key = schedule_key(due_ms, id);
        self.write(&h, |h| {
            h.schedule.remove(key).map_err(TransactionError::Storage)
        })?;
        self.flush_handle(&h).await
    }

    /// Up to `limit` messages due at or before `now_ms`, oldest first, as (due, id).
    ///
    /// # Errors
    /// [`StoreError`] when reading the schedule fails.
    pub fn due(&self, now_ms: u64, limit: usize) -> Result<Vec<(u64, MessageId)>, StoreError> {
        let h = self.current()?;
        let mut out = Vec::new();
        for item in h.schedule.range(..schedule_key(now_ms + 1, &zero_id())) {
            let (key, _) = item.map_err(|e| self.fail(&h, classify(&self.path, e)))?;
            match decode_schedule_key(&key) {
                Some(entry) => out.push(entry),
                None => {
                    tracing::error!(key = ?key, "unreadable schedule key removed");
                    self.write(&h, |h| {
                        h.schedule.remove(&key).map_err(TransactionError::Storage)
                    })?;
                }
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Up to `limit` messages due after `after_ms` and at or before `now_ms`, oldest first,
    /// as (due, id).
    ///
    /// # Errors
    /// [`StoreError`] when reading the schedule fails.
    pub fn due_after(
        &self,
        after_ms: u64,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<(u64, MessageId)>, StoreError> {
        let h = self.current()?;
        let range = schedule_key(after_ms.saturating_add(1), &zero_id())
            ..schedule_key(now_ms.saturating_add(1), &zero_id());
        let mut out = Vec::new();
        if range.start >= range.end {
            return Ok(out);
        }
        for item in h.schedule.range(range).keys() {
            let key = item.map_err(|e| self.fail(&h, classify(&self.path, e)))?;
            if let Some(entry) = decode_schedule_key(&key) {
                out.push(entry);
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// The earliest due time in the schedule, if any.
    ///
    /// # Errors
    /// [`StoreError`] when reading the schedule fails.
    pub fn next_due_ms(&self) -> Result<Option<u64>, StoreError> {
        let h = self.current()?;
        let first = self.write(&h, |h| {
            h.schedule.first().map_err(TransactionError::Storage)
        })?;
        Ok(first
            .and_then(|(k, _)| decode_schedule_key(&k))
            .map(|(due, _)| due))
    }

    /// Loads a message's record and body. `Ok(None)` when it is gone (finished or deleted).
    /// A record that does not decode is moved aside and reported as [`StoreError::Corrupt`].
    ///
    /// # Errors
    /// [`StoreError`] on a read failure or a corrupt record.
    pub fn load(&self, id: &MessageId) -> Result<Option<Loaded>, StoreError> {
        let h = self.current()?;
        self.load_from(&h, id)
    }

    fn load_from(&self, h: &Arc<Handle>, id: &MessageId) -> Result<Option<Loaded>, StoreError> {
        let key = id.as_str().as_bytes();
        let read = |tree: &sled::Tree| {
            tree.get(key)
                .map_err(|e| self.fail(h, classify(&self.path, e)))
        };
        let Some(raw) = read(&h.envelopes)? else {
            return Ok(None);
        };
        let record = match serde_json::from_slice::<Record>(&raw) {
            Ok(r) if r.envelope.id == *id => r,
            Ok(r) => {
                let why = format!("the record is for another id, {}", r.envelope.id);
                return Err(self.set_aside(h, id, &raw, &why));
            }
            Err(e) => return Err(self.set_aside(h, id, &raw, &e.to_string())),
        };
        let Some(body) = read(&h.bodies)? else {
            return Err(self.set_aside(h, id, &raw, "body missing"));
        };
        // The store's own copy (its cache's, or the one just read), shared by delivery
        // from here on: a large message being delivered is not held twice.
        Ok(Some((record, Body::new(body))))
    }

    /// Moves an undecodable record to the `corrupt` tree and drops its schedule entries, in
    /// one transaction, so it stops being retried but stays on disk (with its body) for an
    /// operator. Logged here with the record's id.
    fn set_aside(&self, h: &Arc<Handle>, id: &MessageId, raw: &[u8], reason: &str) -> StoreError {
        let key = id.as_str().as_bytes();
        let stale: Vec<sled::IVec> = h
            .schedule
            .iter()
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.ends_with(key))
            .collect();
        let moved = (&h.envelopes, &h.schedule, &h.corrupt).transaction(|(e, s, c)| {
            c.insert(key, raw)?;
            e.remove(key)?;
            for k in &stale {
                s.remove(k)?;
            }
            Ok::<(), ConflictableTransactionError<()>>(())
        });
        if moved.is_ok() {
            uncount(h);
        }
        match moved {
            Ok(()) => tracing::error!(
                msg = %id,
                reason,
                "corrupt queue record moved aside to the corrupt tree; the other messages go on"
            ),
            Err(e) => {
                tracing::error!(msg = %id, reason, error = ?e, "corrupt queue record could not be moved aside")
            }
        }
        StoreError::Corrupt {
            id: id.to_string(),
            reason: reason.to_string(),
        }
    }

    /// Every queued record, in id (arrival) order, for `mta queue list`, then the records
    /// set aside as corrupt. Records that do not decode are returned as errors in place.
    pub fn records(&self) -> Vec<Result<Record, StoreError>> {
        self.records_iter().collect()
    }

    /// [`Store::records`] one at a time, read from the store as they are taken: listing a
    /// big queue holds one record in memory, not all of them.
    pub fn records_iter(&self) -> Box<dyn Iterator<Item = Result<Record, StoreError>> + Send + '_> {
        let h = match self.current() {
            Ok(h) => h,
            Err(e) => return Box::new(std::iter::once(Err(e))),
        };
        let undecodable = |k: &[u8], reason: String| StoreError::Corrupt {
            id: String::from_utf8_lossy(k).into_owned(),
            reason,
        };
        let queued = h.envelopes.iter().map(move |item| {
            let (k, v) = item.map_err(|e| classify(&self.path, e))?;
            serde_json::from_slice::<Record>(&v).map_err(|e| undecodable(&k, e.to_string()))
        });
        let aside = h.corrupt.iter().map(move |item| {
            let (k, _) = item.map_err(|e| classify(&self.path, e))?;
            Err(undecodable(&k, "set aside earlier".into()))
        });
        Box::new(queued.chain(aside))
    }

    /// Number of queued messages (0 while the store is unavailable).
    pub fn len(&self) -> usize {
        self.current().map_or(0, |h| h.envelopes.len())
    }

    /// Number of queued messages as counted along (0 while the store is unavailable): no
    /// scan, for the metrics.
    pub fn count(&self) -> usize {
        self.current()
            .map_or(0, |h| h.count.load(Ordering::Relaxed))
    }

    /// The oldest queued message's record: the first, since ids sort by arrival. `Ok(None)`
    /// when the queue is empty or that record does not decode (it is set aside when read).
    ///
    /// # Errors
    /// The store cannot be read: never taken for an empty queue.
    pub fn oldest_record(&self) -> Result<Option<Record>, StoreError> {
        let h = self.current()?;
        let first = h.envelopes.first().map_err(|e| classify(&self.path, e))?;
        Ok(first.and_then(|(_, v)| serde_json::from_slice::<Record>(&v).ok()))
    }

    /// True when no message is queued (or the store is unavailable).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of records set aside as corrupt.
    pub fn corrupt_len(&self) -> usize {
        self.current().map_or(0, |h| h.corrupt.len())
    }
}

/// One message fewer in `h` (never below zero).
fn uncount(h: &Handle) {
    let _ = h
        .count
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
}

fn zero_id() -> MessageId {
    MessageId::parse("00000000000000000000").expect("20 hex digits")
}

fn decode_schedule_key(key: &[u8]) -> Option<(u64, MessageId)> {
    let (due, id) = key.split_at_checked(8)?;
    let due = u64::from_be_bytes(due.try_into().ok()?);
    let id = MessageId::parse(std::str::from_utf8(id).ok()?).ok()?;
    Some((due, id))
}

fn classify(path: &Path, source: sled::Error) -> StoreError {
    let full = matches!(&source, sled::Error::Io(io)
        if io.kind() == std::io::ErrorKind::StorageFull || io.raw_os_error() == Some(28));
    if full {
        StoreError::DiskFull {
            path: path.to_path_buf(),
            source,
        }
    } else {
        StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

#[path = "store_finish.rs"]
mod finish;
#[path = "store_reopen.rs"]
mod reopen;
#[path = "store_reschedule.rs"]
mod reschedule;
#[path = "store_sending.rs"]
mod sending;
#[cfg(test)]
use reopen::REOPEN_INTERVAL;
use reopen::{Handle, Shared, Slot};

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
