//! Group commit: one flush-and-sync of the store covers every write made before it started,
//! so concurrent sessions share a disk sync instead of each paying for one.
//!
//! Each caller takes a ticket after its write. If a sync that started after the ticket has
//! completed, the caller is done; if one is running, it waits for the next; otherwise it runs
//! one itself, covering every ticket handed out so far. A failed sync fails every ticket it
//! covered: no write is ever acknowledged by a sync that did not succeed.

use std::sync::{Condvar, Mutex, PoisonError};

#[derive(Default)]
struct State {
    /// Tickets handed out so far.
    issued: u64,
    /// Every ticket up to this one is on disk.
    synced: u64,
    /// A sync is running.
    running: bool,
    /// The highest ticket covered by a failed sync, and why it failed.
    failed: Option<(u64, String)>,
    /// Syncs run (for measurements).
    syncs: u64,
}

/// The coordinator; one per store.
#[derive(Default)]
pub struct GroupSync {
    state: Mutex<State>,
    done: Condvar,
}

impl GroupSync {
    /// Makes everything written before this call durable, running `sync` (flush the store and
    /// sync its files) at most once for all callers waiting together. Blocking.
    ///
    /// # Errors
    /// The error of the sync that covered this call's writes.
    pub fn sync<E: std::fmt::Display>(
        &self,
        sync: impl FnOnce() -> Result<(), E>,
    ) -> Result<(), String> {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        st.issued += 1;
        let ticket = st.issued;
        let mut sync = Some(sync);
        loop {
            if st.synced >= ticket {
                return Ok(());
            }
            if let Some((upto, why)) = &st.failed
                && *upto >= ticket
            {
                return Err(why.clone());
            }
            if st.running {
                st = self.done.wait(st).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            // Run a sync covering every ticket issued so far (ours included).
            let Some(run) = sync.take() else {
                // Our own sync ran and neither succeeded for us nor failed us: impossible, as
                // it covered our ticket; fail safe rather than loop.
                return Err("sync did not cover this write".into());
            };
            st.running = true;
            let covers = st.issued;
            drop(st);
            let result = run().map_err(|e| e.to_string());
            st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            st.running = false;
            st.syncs += 1;
            match result {
                Ok(()) => st.synced = st.synced.max(covers),
                Err(why) => st.failed = Some((covers, why)),
            }
            self.done.notify_all();
        }
    }

    /// How many syncs have run.
    pub fn syncs(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .syncs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn concurrent_callers_share_syncs_and_all_succeed() {
        let g = Arc::new(GroupSync::default());
        let ran = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (g, ran) = (g.clone(), ran.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        g.sync(|| {
                            ran.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_micros(200));
                            Ok::<(), String>(())
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let syncs = ran.load(Ordering::SeqCst);
        assert_eq!(syncs, g.syncs());
        assert!(syncs <= 800, "never more syncs than callers");
    }

    #[test]
    fn a_failed_sync_fails_the_writes_it_covered() {
        let g = GroupSync::default();
        assert_eq!(
            g.sync(|| Err::<(), _>("disk full")),
            Err("disk full".to_string())
        );
        // A later write is covered by a later sync, which succeeds.
        assert_eq!(g.sync(|| Ok::<(), String>(())), Ok(()));
    }
}
