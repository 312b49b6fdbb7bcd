//! The store's sled handles and what happens to them after an error: given up for good,
//! then reopened from disk in place when possible (see [`Store`]).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::{Store, StoreError, classify};
use crate::disk::{self, LogCheck, check_log};

/// What the clones of one [`Store`] share: the handles in use and the reopen bookkeeping.
pub(super) struct Shared {
    slot: Mutex<Slot>,
    /// Held while reopening, so that only one caller reopens; others do not wait for it.
    reopening: Mutex<()>,
    /// Syncs run by handles given up since the store was opened (for measurements).
    pub(super) retired_syncs: AtomicU64,
    /// Reopens after an error (for tests and the log).
    reopens: AtomicU64,
    /// The handles given up last, to tell in the log who still holds them.
    retired: Mutex<std::sync::Weak<Handle>>,
    /// When reopening was last tried: at most once per [`REOPEN_INTERVAL`], since sled
    /// reads its whole log to open.
    last_reopen: Mutex<Option<std::time::Instant>>,
    /// The "stuck inside sled" error was logged for the handles given up last.
    stuck_logged: std::sync::atomic::AtomicBool,
    /// When the handles in use were last given up.
    gave_up: Mutex<Option<std::time::Instant>>,
}

/// How long a caller waits for a reopen (sled reads its whole log to open); the reopen goes
/// on in its thread, and a later call finds its result.
const REOPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a given-up store is tried again.
pub(super) const REOPEN_INTERVAL: Duration = Duration::from_secs(1);
/// When sled still holds its lock this long after the store was given up, sled is stuck:
/// our own operations on the old handles all end within 5 s.
const STUCK_AFTER: Duration = Duration::from_secs(10);

pub(super) enum Slot {
    Open(Arc<Handle>),
    /// Given up after an error, with the error.
    Failed(String),
}

/// One opening of sled: the database, its trees, and the group commit of its flushes.
pub(super) struct Handle {
    pub(super) db: sled::Db,
    pub(super) envelopes: sled::Tree,
    pub(super) bodies: sled::Tree,
    pub(super) schedule: sled::Tree,
    pub(super) corrupt: sled::Tree,
    /// Removals of finished messages begun (`store_finish.rs`).
    pub(super) finishing: sled::Tree,
    pub(super) group: crate::group_sync::GroupSync,
    /// Blob files this handle's flushes made durable, at which length (`disk::sync_files`).
    pub(super) synced: std::sync::Mutex<crate::disk::SyncedBlobs>,
    /// Messages in `envelopes`: counted once when opened, then kept up to date by insert,
    /// update and set-aside, so that the metrics never scan the queue.
    pub(super) count: std::sync::atomic::AtomicUsize,
    /// A flush is arranged for the writes that ride on the next round
    /// (`Store::update_with_next_round`).
    pub(super) ride_flush: std::sync::atomic::AtomicBool,
    /// The rounds started when the latest such write was done: a round numbered above it
    /// covers every one of them.
    pub(super) ride_mark: AtomicU64,
}

impl Handle {
    pub(super) fn open(path: &Path) -> Result<Handle, StoreError> {
        check_log(path).map_err(|check| match check {
            LogCheck::NotSled(why) => StoreError::Damaged {
                path: path.to_path_buf(),
                why,
            },
            LogCheck::Unreadable(e) => classify(path, sled::Error::Io(e)),
        })?;
        // sled writes while it opens (it may rewrite the tail of its log and its snapshot);
        // on a full disk such a write can fail half done and leave a store sled then
        // refuses ("Read corrupted data"), seen once in scripts/diskfull.sh. So no opening
        // without room.
        if let Some(low) = disk::too_full_to_open(path) {
            let why = format!(
                "{low}; opening the store needs {} bytes and {} inodes free (sled writes \
                 while it opens): free some space first",
                disk::HEADROOM,
                disk::HEADROOM_INODES
            );
            return Err(StoreError::DiskFull {
                path: path.to_path_buf(),
                source: sled::Error::Io(std::io::Error::new(std::io::ErrorKind::StorageFull, why)),
            });
        }
        let err = |source| classify(path, source);
        // sled may panic on a log it cannot make sense of: that is a damaged store too.
        let opened = std::panic::catch_unwind(|| {
            sled::Config::new()
                .path(path)
                .flush_every_ms(None)
                .cache_capacity(64 * 1024 * 1024)
                .open()
        });
        let db = opened
            .map_err(|panic| panicked(path, panic))?
            .map_err(err)?;
        let envelopes = db.open_tree("envelopes").map_err(err)?;
        let bodies = db.open_tree("bodies").map_err(err)?;
        let schedule = db.open_tree("schedule").map_err(err)?;
        let finishing = db.open_tree(super::finish::FINISHING).map_err(err)?;
        super::finish::finish_interrupted(&finishing, &envelopes, &bodies, &schedule)
            .map_err(err)?;
        Ok(Handle {
            count: std::sync::atomic::AtomicUsize::new(envelopes.len()),
            envelopes,
            bodies,
            schedule,
            finishing,
            corrupt: db.open_tree("corrupt").map_err(err)?,
            group: Default::default(),
            synced: Default::default(),
            ride_flush: Default::default(),
            ride_mark: Default::default(),
            db,
        })
    }
}

/// A panic inside sled while opening: damage, unless it was a resource running out (sled
/// panics when it cannot start a thread or open a file: "… (os error 24)").
fn panicked(path: &Path, panic: Box<dyn std::any::Any + Send>) -> StoreError {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    match os_error_in(&text) {
        Some(code) => classify(
            path,
            sled::Error::Io(std::io::Error::from_raw_os_error(code)),
        ),
        None => StoreError::Damaged {
            path: path.to_path_buf(),
            why: "sled panicked while reading it".into(),
        },
    }
}

/// The `N` of the first `(os error N)` in `text`.
fn os_error_in(text: &str) -> Option<i32> {
    let (_, rest) = text.split_once("os error ")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

impl Store {
    /// Opens (or creates) the store in `path`.
    ///
    /// # Errors
    /// [`StoreError`] when sled cannot open or recover the directory.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let handle = Handle::open(path)?;
        Ok(Store {
            path: path.to_path_buf(),
            shared: Arc::new(Shared {
                slot: Mutex::new(Slot::Open(Arc::new(handle))),
                reopening: Mutex::new(()),
                retired_syncs: AtomicU64::new(0),
                reopens: AtomicU64::new(0),
                retired: Mutex::new(std::sync::Weak::new()),
                last_reopen: Mutex::new(None),
                stuck_logged: Default::default(),
                gave_up: Mutex::new(None),
            }),
        })
    }

    pub(super) fn slot(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.shared
            .slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The handles in use, or [`StoreError::Unavailable`] after an error.
    pub(super) fn current(&self) -> Result<Arc<Handle>, StoreError> {
        match &*self.slot() {
            Slot::Open(h) => Ok(h.clone()),
            Slot::Failed(why) => Err(self.unavailable(why)),
        }
    }

    pub(super) fn unavailable(&self, why: &str) -> StoreError {
        StoreError::Unavailable {
            path: self.path.clone(),
            why: why.to_string(),
        }
    }

    /// Gives up `handle` after an error (if it is still the one in use) and returns the
    /// error. Logged here, once per handle.
    pub(super) fn fail(&self, handle: &Arc<Handle>, error: StoreError) -> StoreError {
        let mut slot = self.slot();
        if let Slot::Open(h) = &*slot
            && Arc::ptr_eq(h, handle)
        {
            tracing::error!(error = %error, "queue store failed; it is reopened before the next write");
            self.shared
                .retired_syncs
                .fetch_add(h.group.syncs(), Ordering::Relaxed);
            *self
                .shared
                .retired
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Arc::downgrade(h);
            self.shared.stuck_logged.store(false, Ordering::Relaxed);
            *self
                .shared
                .gave_up
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(std::time::Instant::now());
            *slot = Slot::Failed(error.to_string());
        }
        error
    }

    /// Makes sure the store is usable, reopening it if an error made us give it up. Called
    /// before each write and by the scheduler, so that the queue recovers on its own once
    /// the cause (a full disk) is gone.
    ///
    /// # Errors
    /// [`StoreError`] when it is still unusable; the next call tries again.
    pub async fn ensure_open(&self) -> Result<(), StoreError> {
        self.writable().await.map(drop)
    }

    /// The handles for a write: the current ones, or freshly reopened ones.
    pub(super) async fn writable(&self) -> Result<Arc<Handle>, StoreError> {
        if let Ok(h) = self.current() {
            return Ok(h);
        }
        // Cheap answers first: a flood of MAIL commands while the store is unusable must not
        // start a thread each.
        let recently = self
            .shared
            .last_reopen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|t| t.elapsed() < REOPEN_INTERVAL);
        if recently {
            return Err(self.unavailable("tried again shortly"));
        }
        // On a thread of its own and bounded, like sled's writes and flushes: an opening
        // that never returns must not keep a session or the scheduler waiting for ever.
        // Meanwhile other callers get `Unavailable` at once (only one reopens at a time).
        let (done, opened) = tokio::sync::oneshot::channel();
        let store = self.clone();
        std::thread::Builder::new()
            .name("queue-reopen".into())
            .spawn(move || {
                let _ = done.send(store.reopen());
            })
            .map_err(|e| self.unavailable(&format!("cannot start a thread to reopen: {e}")))?;
        match tokio::time::timeout(REOPEN_TIMEOUT, opened).await {
            Ok(Ok(reopened)) => reopened,
            Ok(Err(_)) => Err(StoreError::Join("queue reopen thread died".into())),
            Err(_) => {
                if !self.shared.stuck_logged.swap(true, Ordering::Relaxed) {
                    tracing::error!(
                        path = %self.path.display(),
                        "queue store stuck inside sled: reopening it has not returned in 30 s; \
                         new mail gets 451 until mta serve is restarted (a restart loses nothing)"
                    );
                }
                Err(self.unavailable("reopening takes longer than 30 s"))
            }
        }
    }

    /// Reopens sled after an error. Blocking. Only one caller reopens at a time; the others
    /// get `Unavailable` at once rather than wait.
    pub(super) fn reopen(&self) -> Result<Arc<Handle>, StoreError> {
        let Ok(_only_me) = self.shared.reopening.try_lock() else {
            return Err(self.unavailable("being reopened"));
        };
        if let Slot::Open(h) = &*self.slot() {
            return Ok(h.clone());
        }
        {
            let mut last = self
                .shared
                .last_reopen
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let now = std::time::Instant::now();
            if last.is_some_and(|t| now.duration_since(t) < REOPEN_INTERVAL) {
                return Err(self.unavailable("tried again shortly"));
            }
            *last = Some(now);
        }
        // sled would make a new, empty log where its log went missing: the queue would
        // start afresh while the messages sit in the vanished file. Only the first opening
        // of a store may create it.
        if !self.path.join("db").is_file() {
            let why = format!("its log {} is gone", self.path.join("db").display());
            tracing::warn!(path = %self.path.display(), %why, "queue store cannot be reopened yet");
            *self.slot() = Slot::Failed(why.clone());
            return Err(self.unavailable(&why));
        }
        match Handle::open(&self.path) {
            Ok(handle) => {
                let handle = Arc::new(handle);
                *self.slot() = Slot::Open(handle.clone());
                self.shared.reopens.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(path = %self.path.display(), "queue store reopened after an error");
                Ok(handle)
            }
            Err(e) => {
                // Operations still using the given-up handles (each keeps sled's lock).
                let held = self
                    .shared
                    .retired
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .strong_count();
                let locked = e.to_string().contains("could not acquire lock");
                let long_ago = self
                    .shared
                    .gave_up
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .is_some_and(|t| t.elapsed() > STUCK_AFTER);
                if locked && long_ago {
                    // Every operation of ours gives up within 5 s, so whatever still holds
                    // the old handles is stuck inside sled (a flush or write that never
                    // returns, see `flush_sled`). Only a new process can open the store.
                    if !self.shared.stuck_logged.swap(true, Ordering::Relaxed) {
                        tracing::error!(
                            path = %self.path.display(),
                            "queue store stuck inside sled after an I/O error: new mail gets 451 \
                             until mta serve is restarted (a restart loses nothing)"
                        );
                    }
                } else {
                    tracing::warn!(error = %e, held, "queue store cannot be reopened yet");
                }
                *self.slot() = Slot::Failed(e.to_string());
                Err(e)
            }
        }
    }

    /// True while the store is stuck inside sled: given up after an I/O error, and sled has
    /// not let go of it for [`STUCK_AFTER`] (a write or flush that never returns, seen after
    /// sled itself met a full disk). Only a new process can open it again.
    pub fn is_stuck(&self) -> bool {
        self.shared.stuck_logged.load(Ordering::Relaxed)
    }

    /// How many times the store was reopened after an error.
    pub fn reopens(&self) -> u64 {
        self.shared.reopens.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::os_error_in;

    /// Reference: the first place where "os error " is followed by a digit run, scanned
    /// byte by byte.
    fn reference(text: &str) -> Option<i32> {
        let b = text.as_bytes();
        let key = b"os error ";
        let at = (0..b.len()).find(|&i| b[i..].starts_with(key))?;
        let start = at + key.len();
        let end = (start..b.len())
            .find(|&i| !b[i].is_ascii_digit())
            .unwrap_or(b.len());
        text[start..end].parse().ok()
    }

    #[test]
    fn os_error_number_from_a_panic_message() {
        assert_eq!(
            os_error_in("failed to spawn thread: Too many open files (os error 24)"),
            Some(24)
        );
        assert_eq!(os_error_in("assertion failed: lsn >= 0"), None);
        use rand::Rng;
        let mut rng = rand::rng();
        let parts = [
            "os error ",
            "os error",
            "24",
            "9",
            ")",
            " ",
            "(",
            "x",
            "99999999999",
        ];
        for _ in 0..5000 {
            let text: String = (0..rng.random_range(0..6))
                .map(|_| parts[rng.random_range(0..parts.len())])
                .collect();
            assert_eq!(os_error_in(&text), reference(&text), "{text:?}");
        }
    }
}
