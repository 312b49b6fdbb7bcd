//! Group commit: one flush-and-sync of the store covers every write made before it started,
//! so concurrent sessions share a disk sync instead of each paying for one.
//!
//! Syncs run one at a time, in numbered rounds. A caller that has finished its write joins
//! the next round that has not started yet (never one already running: that one may have
//! begun before the write and so may not cover it), and gets exactly that round's result.
//! Whoever finds no round running starts the next one for everybody waiting on it.
//!
//! A failed round fails every caller waiting on it, and every round after it fails too
//! without running: after a failed `fsync` the kernel may have dropped the dirty pages and
//! marked them clean, so a later "successful" sync proves nothing about earlier writes
//! (the 2018 "fsyncgate" finding). The store replaces a failed coordinator with a fresh one
//! when it reopens sled.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, PoisonError};

#[derive(Default)]
struct State {
    /// Rounds started so far; round `n` is the `n`-th sync.
    started: u64,
    /// Rounds finished so far.
    finished: u64,
    /// Callers waiting on each round not yet finished, or on a finished round whose result
    /// they have not read yet.
    waiting: HashMap<u64, usize>,
    /// Results of finished rounds that callers still have to read.
    results: HashMap<u64, Result<(), String>>,
    /// The first failure: once set, every later round fails with it without running.
    broken: Option<String>,
}

/// The coordinator; one per open store.
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
    /// The error of the round that covered this call's writes, or of the first failed round
    /// before it.
    pub fn sync<E: std::fmt::Display>(
        &self,
        sync: impl FnOnce() -> Result<(), E>,
    ) -> Result<(), String> {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        // The next round to start is the first that surely began after our write.
        let round = st.started + 1;
        *st.waiting.entry(round).or_insert(0) += 1;
        let mut sync = Some(sync);
        loop {
            if st.finished >= round {
                return take_result(&mut st, round);
            }
            if st.started > st.finished {
                // A round is running: ours, or the one before it. Wait for its end.
                st = self.done.wait(st).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            // No round is running and ours has not finished, so it has not started either
            // (`started == finished == round - 1`): start it.
            st.started = round;
            let result = match st.broken.clone() {
                Some(why) => Err(why),
                None => {
                    let run = sync.take().expect("a caller starts at most its own round");
                    drop(st);
                    let result = run().map_err(|e| e.to_string());
                    st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                    result
                }
            };
            if let Err(why) = &result
                && st.broken.is_none()
            {
                st.broken = Some(why.clone());
            }
            st.finished = round;
            st.results.insert(round, result);
            self.done.notify_all();
        }
    }

    /// How many rounds have started: a round numbered above this count starts after the
    /// call, so it covers every write made before it.
    pub fn started(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .started
    }

    /// How many rounds have run (each is one flush and sync).
    pub fn syncs(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .finished
    }
}

/// Reads a finished round's result for one of its callers; the last reader drops it.
fn take_result(st: &mut State, round: u64) -> Result<(), String> {
    let result = st
        .results
        .get(&round)
        .cloned()
        .unwrap_or_else(|| Err("sync result missing".into()));
    let left = st.waiting.get_mut(&round).map_or(0, |n| {
        *n -= 1;
        *n
    });
    if left == 0 {
        st.waiting.remove(&round);
        st.results.remove(&round);
    }
    result
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
        let st = g.state.lock().unwrap();
        assert!(
            st.waiting.is_empty() && st.results.is_empty(),
            "nothing kept"
        );
    }

    #[test]
    fn a_failed_sync_fails_it_and_every_later_one() {
        let g = GroupSync::default();
        assert_eq!(g.sync(|| Ok::<(), String>(())), Ok(()));
        assert_eq!(
            g.sync(|| Err::<(), _>("disk full")),
            Err("disk full".to_string())
        );
        // A later write is not acknowledged on this coordinator, even if the sync would
        // succeed: the failed one may have lost pages this write relies on.
        let ran = AtomicU64::new(0);
        let later = g.sync(|| {
            ran.fetch_add(1, Ordering::SeqCst);
            Ok::<(), String>(())
        });
        assert_eq!(later, Err("disk full".to_string()));
        assert_eq!(ran.load(Ordering::SeqCst), 0, "not even run");
    }

    /// Writers bump a counter (the "data") and then sync; each sync records the counter when
    /// it starts (what it covers). One round in the middle fails. A writer told `Ok` must be
    /// covered by a successful round that started after its write; the writer whose round
    /// failed, and every writer after it, must be told `Err`; none may be acknowledged by a
    /// round that began before its write.
    #[test]
    fn no_write_is_acknowledged_by_a_round_that_began_before_it_or_failed() {
        let g = Arc::new(GroupSync::default());
        let data = Arc::new(AtomicU64::new(0));
        // (round number, covered up to, succeeded) per round, in order.
        let rounds = Arc::new(Mutex::new(Vec::<(u64, u64, bool)>::new()));
        const FAIL_AT: usize = 20;
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (g, data, rounds) = (g.clone(), data.clone(), rounds.clone());
                std::thread::spawn(move || {
                    let mut told = Vec::new();
                    for _ in 0..30 {
                        let mine = data.fetch_add(1, Ordering::SeqCst) + 1;
                        let result = g.sync(|| {
                            let covers = data.load(Ordering::SeqCst);
                            let mut r = rounds.lock().unwrap();
                            let fail = r.len() == FAIL_AT;
                            let n = r.len() as u64 + 1;
                            r.push((n, covers, !fail));
                            drop(r);
                            std::thread::sleep(std::time::Duration::from_micros(300));
                            if fail { Err("injected") } else { Ok(()) }
                        });
                        told.push((mine, result.is_ok()));
                    }
                    told
                })
            })
            .collect();
        let told: Vec<(u64, bool)> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let rounds = rounds.lock().unwrap().clone();
        assert_eq!(rounds.len(), FAIL_AT + 1, "no round runs after the failure");
        let (_, failed_covers, _) = rounds[FAIL_AT];
        let acked: Vec<u64> = told.iter().filter(|t| t.1).map(|t| t.0).collect();
        assert!(!acked.is_empty());
        for (write, ok) in &told {
            if *ok {
                // Covered by a successful round (all successful rounds precede the failure).
                assert!(
                    rounds
                        .iter()
                        .any(|(_, covers, good)| *good && covers >= write),
                    "write {write} acknowledged without a covering successful round"
                );
            }
        }
        // Every write that a successful round did not cover was refused.
        let last_good = rounds[..FAIL_AT].iter().map(|r| r.1).max().unwrap_or(0);
        for (write, ok) in &told {
            if *write > last_good {
                assert!(
                    !ok,
                    "write {write} after the last good round was acknowledged"
                );
            }
        }
        assert!(
            told.iter().any(|(w, ok)| !ok && *w <= failed_covers),
            "the failed round's writes were refused"
        );
    }
}
