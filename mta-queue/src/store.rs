//! The sled store behind the queue: three trees written together in one transaction.
//!
//! - `envelopes`: queue id → JSON [`Record`] (the envelope and its next attempt time)
//! - `bodies`: queue id → message bytes exactly as they will be delivered
//! - `schedule`: next-attempt time (big-endian Unix ms) ++ queue id → empty; "what is due"
//!   is a range scan from the start of this tree
//!
//! Durability: sled runs with `flush_every_ms(None)`; every write that the SMTP client or the
//! scheduler relies on is followed by `flush()` in `spawn_blocking` (sled's `flush_async`
//! deadlocks under concurrency). Concurrent flushes share the disk sync (group commit).
//! A record that does not decode is moved to the `corrupt` tree and logged, never dropped.

use std::path::{Path, PathBuf};

use mta_core::envelope::{Envelope, MessageId};
use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

/// What is stored per message besides the body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The envelope with each recipient's state.
    pub envelope: Envelope,
    /// When the next attempt is due, Unix milliseconds. Mirrors the `schedule` key.
    pub next_attempt_ms: u64,
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
    /// The blocking flush task died (runtime shutting down).
    #[error("queue flush task failed: {0}")]
    Join(String),
}

impl StoreError {
    /// Maps the error onto what the queue tells the session.
    pub fn to_enqueue_error(&self) -> mta_core::seams::EnqueueError {
        use mta_core::seams::EnqueueError;
        match self {
            StoreError::DiskFull { .. } => EnqueueError::DiskFull(self.to_string()),
            StoreError::Io { .. }
            | StoreError::Corrupt { .. }
            | StoreError::Busy(_)
            | StoreError::Join(_) => EnqueueError::Io(self.to_string()),
        }
    }
}

/// The open store. Cheap to clone (sled handles are reference counted).
#[derive(Clone)]
pub struct Store {
    path: PathBuf,
    db: sled::Db,
    envelopes: sled::Tree,
    bodies: sled::Tree,
    schedule: sled::Tree,
    corrupt: sled::Tree,
    group: std::sync::Arc<crate::group_sync::GroupSync>,
    blobs: std::sync::Arc<std::sync::Mutex<SyncedBlobs>>,
}

fn schedule_key(due_ms: u64, id: &MessageId) -> Vec<u8> {
    let mut key = due_ms.to_be_bytes().to_vec();
    key.extend_from_slice(id.as_str().as_bytes());
    key
}

impl Store {
    /// Opens (or creates) the store in `path`.
    ///
    /// # Errors
    /// [`StoreError`] when sled cannot open or recover the directory.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let err = |source| classify(path, source);
        let db = sled::Config::new()
            .path(path)
            .flush_every_ms(None)
            .cache_capacity(64 * 1024 * 1024)
            .open()
            .map_err(err)?;
        Ok(Store {
            path: path.to_path_buf(),
            envelopes: db.open_tree("envelopes").map_err(err)?,
            bodies: db.open_tree("bodies").map_err(err)?,
            schedule: db.open_tree("schedule").map_err(err)?,
            corrupt: db.open_tree("corrupt").map_err(err)?,
            group: Default::default(),
            blobs: Default::default(),
            db,
        })
    }

    fn err(&self, source: sled::Error) -> StoreError {
        classify(&self.path, source)
    }

    /// Flushes everything written so far to disk; returns when it is durable.
    ///
    /// sled 0.34's own flush ends in `sync_file_range(2)` on Linux, which neither flushes the
    /// drive's write cache nor the file's metadata (its growing size), and it writes large
    /// values as separate blob files without any sync. So after sled's flush we
    /// `fdatasync` the log file, each new blob file, and the blob directory ourselves: only
    /// then is the data on stable storage. Concurrent callers share one round
    /// ([`crate::group_sync`]).
    ///
    /// # Errors
    /// [`StoreError`] when the flush fails.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let db = self.db.clone();
        let path = self.path.clone();
        let group = self.group.clone();
        let blobs = self.blobs.clone();
        let result = tokio::task::spawn_blocking(move || {
            group.sync(|| -> sled::Result<()> {
                db.flush()?;
                // One round at a time (group commit), so the lock is never contended.
                let mut synced = blobs
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                sync_files(&path, &mut synced).map_err(sled::Error::Io)
            })
        })
        .await
        .map_err(|e| StoreError::Join(e.to_string()))?;
        result.map_err(|why| {
            let full = why.contains("No space left") || why.contains("StorageFull");
            let source = sled::Error::Io(std::io::Error::other(why));
            if full {
                StoreError::DiskFull {
                    path: self.path.clone(),
                    source,
                }
            } else {
                StoreError::Io {
                    path: self.path.clone(),
                    source,
                }
            }
        })
    }

    /// How many flush-and-sync rounds have run (several writers share one: group commit).
    pub fn syncs(&self) -> u64 {
        self.group.syncs()
    }

    /// Stores a new message and flushes. Returns only when it is durable.
    ///
    /// # Errors
    /// [`StoreError`] on a write or flush failure; nothing may be assumed stored then.
    pub async fn insert(&self, record: &Record, body: &[u8]) -> Result<(), StoreError> {
        let id = record.envelope.id.clone();
        let json = serde_json::to_vec(record).expect("a Record always serialises");
        let key = schedule_key(record.next_attempt_ms, &id);
        (&self.envelopes, &self.bodies, &self.schedule)
            .transaction(|(e, b, s)| {
                e.insert(id.as_str().as_bytes(), json.as_slice())?;
                b.insert(id.as_str().as_bytes(), body)?;
                s.insert(key.as_slice(), &[][..])?;
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|e| self.tx_err(e))?;
        self.flush().await
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
        let id = record.envelope.id.clone();
        let json = serde_json::to_vec(record).expect("a Record always serialises");
        let old_key = schedule_key(old_due_ms, &id);
        let new_key = schedule_key(record.next_attempt_ms, &id);
        (&self.envelopes, &self.bodies, &self.schedule)
            .transaction(|(e, b, s)| {
                s.remove(old_key.as_slice())?;
                if finished {
                    e.remove(id.as_str().as_bytes())?;
                    b.remove(id.as_str().as_bytes())?;
                } else {
                    e.insert(id.as_str().as_bytes(), json.as_slice())?;
                    s.insert(new_key.as_slice(), &[][..])?;
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|e| self.tx_err(e))?;
        self.flush().await
    }

    fn tx_err(&self, e: TransactionError<()>) -> StoreError {
        match e {
            TransactionError::Storage(source) => self.err(source),
            TransactionError::Abort(()) => unreachable!("our transactions never abort"),
        }
    }

    /// Removes one schedule entry (of a message that no longer exists) and flushes.
    ///
    /// # Errors
    /// [`StoreError`] on a write or flush failure.
    pub async fn unschedule(&self, due_ms: u64, id: &MessageId) -> Result<(), StoreError> {
        self.schedule
            .remove(schedule_key(due_ms, id))
            .map_err(|e| self.err(e))?;
        self.flush().await
    }

    /// Makes every message that is scheduled later than `now_ms` due at `now_ms` (on
    /// start-up: a restart retries the whole queue). Returns how many were moved.
    ///
    /// # Errors
    /// [`StoreError`] on a read, write or flush failure.
    pub async fn reschedule_all(&self, now_ms: u64) -> Result<usize, StoreError> {
        let mut moved = 0;
        let later: Vec<sled::IVec> = self
            .schedule
            .range(schedule_key(now_ms + 1, &zero_id())..)
            .keys()
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))?;
        for key in later {
            let Some((due, id)) = decode_schedule_key(&key) else {
                continue;
            };
            let mut record = match self.load(&id) {
                Ok(Some((record, _))) => record,
                Ok(None) => {
                    self.schedule.remove(&key).map_err(|e| self.err(e))?;
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "skipping unreadable record");
                    continue;
                }
            };
            record.next_attempt_ms = now_ms;
            let json = serde_json::to_vec(&record).expect("a Record always serialises");
            let new_key = schedule_key(now_ms, &id);
            let old_key = schedule_key(due, &id);
            (&self.envelopes, &self.schedule)
                .transaction(|(e, s)| {
                    s.remove(old_key.as_slice())?;
                    s.insert(new_key.as_slice(), &[][..])?;
                    e.insert(id.as_str().as_bytes(), json.as_slice())?;
                    Ok::<(), ConflictableTransactionError<()>>(())
                })
                .map_err(|e| self.tx_err(e))?;
            moved += 1;
        }
        self.flush().await?;
        Ok(moved)
    }

    /// Up to `limit` messages due at or before `now_ms`, oldest first, as (due, id).
    ///
    /// # Errors
    /// [`StoreError`] when reading the schedule fails.
    pub fn due(&self, now_ms: u64, limit: usize) -> Result<Vec<(u64, MessageId)>, StoreError> {
        let mut out = Vec::new();
        for item in self.schedule.range(..schedule_key(now_ms + 1, &zero_id())) {
            let (key, _) = item.map_err(|e| self.err(e))?;
            match decode_schedule_key(&key) {
                Some(entry) => out.push(entry),
                None => {
                    tracing::error!(key = ?key, "unreadable schedule key removed");
                    self.schedule.remove(&key).map_err(|e| self.err(e))?;
                }
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
        Ok(self
            .schedule
            .first()
            .map_err(|e| self.err(e))?
            .and_then(|(k, _)| decode_schedule_key(&k))
            .map(|(due, _)| due))
    }

    /// Loads a message's record and body. `Ok(None)` when it is gone (finished or deleted).
    /// A record that does not decode is moved aside and reported as [`StoreError::Corrupt`].
    ///
    /// # Errors
    /// [`StoreError`] on a read failure or a corrupt record.
    pub fn load(&self, id: &MessageId) -> Result<Option<(Record, Vec<u8>)>, StoreError> {
        let key = id.as_str().as_bytes();
        let Some(raw) = self.envelopes.get(key).map_err(|e| self.err(e))? else {
            return Ok(None);
        };
        let record = match serde_json::from_slice::<Record>(&raw) {
            Ok(r) => r,
            Err(e) => return Err(self.set_aside(id, &raw, &e.to_string())),
        };
        let Some(body) = self.bodies.get(key).map_err(|e| self.err(e))? else {
            return Err(self.set_aside(id, &raw, "body missing"));
        };
        Ok(Some((record, body.to_vec())))
    }

    /// Moves an undecodable record to the `corrupt` tree and drops its schedule entry, so it
    /// stops being retried but stays on disk for an operator.
    fn set_aside(&self, id: &MessageId, raw: &[u8], reason: &str) -> StoreError {
        let key = id.as_str().as_bytes();
        if let Err(e) = self.corrupt.insert(key, raw) {
            tracing::error!(msg = %id, error = %e, "could not move corrupt record aside");
        } else {
            let _ = self.envelopes.remove(key);
            let stale: Vec<_> = self
                .schedule
                .iter()
                .keys()
                .filter_map(Result::ok)
                .filter(|k| k.ends_with(key))
                .collect();
            for k in stale {
                let _ = self.schedule.remove(k);
            }
        }
        StoreError::Corrupt {
            id: id.to_string(),
            reason: reason.to_string(),
        }
    }

    /// Every queued record, in id (arrival) order, for `mta queue list`. Corrupt records
    /// are returned as errors in place.
    pub fn records(&self) -> Vec<Result<Record, StoreError>> {
        self.envelopes
            .iter()
            .map(|item| {
                let (k, v) = item.map_err(|e| self.err(e))?;
                serde_json::from_slice::<Record>(&v).map_err(|e| StoreError::Corrupt {
                    id: String::from_utf8_lossy(&k).into_owned(),
                    reason: e.to_string(),
                })
            })
            .collect()
    }

    /// Number of queued messages.
    pub fn len(&self) -> usize {
        self.envelopes.len()
    }

    /// True when the queue is empty.
    pub fn is_empty(&self) -> bool {
        self.envelopes.is_empty()
    }
}

/// What the flush rounds have made durable in `blobs/`: each blob file's length when it was
/// last synced. sled writes a blob once, by appending to a new file, and never changes it
/// after, so a blob whose length is unchanged needs no second sync, and the directory needs
/// one only when a blob appeared. Syncing every blob on every round instead cost one
/// `fdatasync` per queued large message per round (8.9 syncs per message in the benchmark,
/// and 100 KiB acceptance fell to a fifth): see docs/performance.md.
type SyncedBlobs = std::collections::HashMap<std::ffi::OsString, u64>;

/// `fdatasync` of sled's log (`db`), of each blob file not yet synced at its present length,
/// and of `blobs/` when it holds a new blob. `synced` is updated only when all of it worked.
fn sync_files(path: &Path, synced: &mut SyncedBlobs) -> std::io::Result<()> {
    std::fs::File::open(path.join("db"))?.sync_data()?;
    let blobs = path.join("blobs");
    let entries = match std::fs::read_dir(&blobs) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut present = SyncedBlobs::new();
    let mut appeared = false;
    for entry in entries {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            continue;
        }
        let file = match std::fs::File::open(entry.path()) {
            Ok(f) => f,
            // sled removes blobs of deleted values concurrently.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        // The length before the sync: everything up to it is durable after.
        let len = file.metadata()?.len();
        let name = entry.file_name();
        match synced.get(&name) {
            Some(&done) if done == len => {}
            known => {
                file.sync_data()?;
                appeared |= known.is_none();
            }
        }
        present.insert(name, len);
    }
    if appeared {
        std::fs::File::open(&blobs)?.sync_all()?;
    }
    *synced = present;
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use mta_core::address::{Address, ReversePath};
    use mta_core::envelope::{ListenerKind, Origin, Recipient};

    pub(crate) fn record(id: &str, due: u64) -> Record {
        Record {
            envelope: Envelope {
                id: MessageId::parse(id).unwrap(),
                sender: ReversePath::Address(Address::parse("a@example.test").unwrap()),
                recipients: vec![Recipient::pending(Address::parse("b@local.test").unwrap())],
                received_at: 1,
                size: 3,
                origin: Origin {
                    listener: ListenerKind::Smtp,
                    peer: "127.0.0.1:1".into(),
                    helo: "client.test".into(),
                    auth_user: None,
                    tls: None,
                },
                delay_warned: false,
            },
            next_attempt_ms: due,
        }
    }

    #[tokio::test]
    async fn insert_due_update_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = record("00000000000100000001", 100);
        let b = record("00000000000200000002", 50);
        store.insert(&a, b"abc").await.unwrap();
        store.insert(&b, b"xyz").await.unwrap();
        let due = store.due(100, 10).unwrap();
        assert_eq!(
            due.iter().map(|(d, _)| *d).collect::<Vec<_>>(),
            vec![50, 100]
        );
        assert_eq!(store.due(60, 10).unwrap().len(), 1);
        assert_eq!(store.next_due_ms().unwrap(), Some(50));

        let mut b2 = b.clone();
        b2.next_attempt_ms = 500;
        store.update(&b2, 50, false).await.unwrap();
        assert_eq!(store.due(100, 10).unwrap().len(), 1);
        assert_eq!(store.reschedule_all(200).await.unwrap(), 1);
        assert_eq!(store.due(200, 10).unwrap().len(), 2);
        b2.next_attempt_ms = 200;
        store.update(&b2, 200, false).await.unwrap();
        b2.next_attempt_ms = 500;
        store.update(&b2, 200, false).await.unwrap();
        store.update(&a, 100, true).await.unwrap();
        assert!(store.load(&a.envelope.id).unwrap().is_none());
        drop(store);

        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.len(), 1);
        let (rec, body) = store.load(&b.envelope.id).unwrap().unwrap();
        assert_eq!(rec, b2);
        assert_eq!(body, b"xyz");
        assert_eq!(store.next_due_ms().unwrap(), Some(500));
    }

    #[tokio::test]
    async fn corrupt_record_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = record("00000000000100000001", 10);
        store.insert(&a, b"abc").await.unwrap();
        store
            .envelopes
            .insert(a.envelope.id.as_str(), &b"{not json"[..])
            .unwrap();
        let err = store.load(&a.envelope.id).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(store.due(u64::MAX - 1, 10).unwrap().is_empty());
        assert_eq!(store.corrupt.len(), 1);
        assert!(store.load(&a.envelope.id).unwrap().is_none());
    }

    #[test]
    fn a_blob_is_synced_again_only_when_it_grew() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("db"), b"log").unwrap();
        let mut synced = SyncedBlobs::new();
        // No blobs directory yet: only the log.
        sync_files(dir.path(), &mut synced).unwrap();
        assert!(synced.is_empty());
        let blobs = dir.path().join("blobs");
        std::fs::create_dir(&blobs).unwrap();
        std::fs::write(blobs.join("1"), b"abc").unwrap();
        sync_files(dir.path(), &mut synced).unwrap();
        assert_eq!(synced.get(std::ffi::OsStr::new("1")), Some(&3));
        // Written further after a round (sled was still appending): its new length counts.
        std::fs::write(blobs.join("1"), b"abcde").unwrap();
        std::fs::write(blobs.join("2"), b"x").unwrap();
        sync_files(dir.path(), &mut synced).unwrap();
        assert_eq!(synced.get(std::ffi::OsStr::new("1")), Some(&5));
        assert_eq!(synced.get(std::ffi::OsStr::new("2")), Some(&1));
        // A removed blob is forgotten.
        std::fs::remove_file(blobs.join("1")).unwrap();
        sync_files(dir.path(), &mut synced).unwrap();
        assert_eq!(synced.len(), 1);
        // A failed round changes nothing: the log is gone.
        std::fs::write(blobs.join("3"), b"y").unwrap();
        std::fs::remove_file(dir.path().join("db")).unwrap();
        assert!(sync_files(dir.path(), &mut synced).is_err());
        assert_eq!(synced.len(), 1);
    }
}
