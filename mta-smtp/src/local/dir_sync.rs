//! Grouped directory syncs: concurrent deliveries into one Maildir's `new/` share one `fsync`
//! of that directory instead of each paying for one.
//!
//! A delivery renames its file into `new/`, then asks for a sync of `new/` that *started
//! after its rename*: one sync makes every rename before it durable, so a caller joins the
//! next round that has not started yet (never one already running, which may have begun
//! before its rename), and gets exactly that round's result. Whoever finds no round running
//! starts the next one for everybody waiting on it. Rounds are counted per directory, which
//! is told by its device and inode (the same directory whatever path or descriptor reaches
//! it: an `fsync` on any descriptor of it syncs it).
//!
//! A round does not start while other deliveries into the same directory are still writing
//! their files (between [`DirSyncs::begin`] and their rename), for at most [`SIBLINGS`]: they
//! are about to rename, and waiting for them lets one sync cover them too instead of each
//! starting the next round alone.
//!
//! A failed round fails every caller waiting on it, and the callers that renamed while it
//! ran (its `fsync` may have written their renames and dropped them; the error is reported
//! once per open file, so the next round, on another caller's descriptor, may not see it),
//! and only them: their deliveries are retried with new files, and the next round syncs
//! again, vouching only for the renames before it. A caller waits at most a bounded time
//! for its round ([`WAIT`]); then its delivery fails and is retried, as after a failed sync.

use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long a delivery waits for the sync that covers its rename.
pub(super) const WAIT: Duration = Duration::from_secs(30);

/// How long a round waits for deliveries still writing into the same directory.
pub(super) const SIBLINGS: Duration = Duration::from_millis(10);

/// How a directory is synced (`fsync`; a test counts the calls through it).
pub(super) type SyncFn = Arc<dyn Fn(&OwnedFd) -> io::Result<()> + Send + Sync>;

/// The coordinators of the directories being synced, one per directory with callers.
pub(super) struct DirSyncs {
    dirs: Mutex<HashMap<(u64, u64), Arc<Rounds>>>,
    sync: SyncFn,
    wait: Duration,
    siblings: Duration,
}

/// A delivery writing into a directory, from [`DirSyncs::begin`] until its sync returns.
pub(super) struct Writing<'a> {
    syncs: &'a DirSyncs,
    key: (u64, u64),
    rounds: Option<Arc<Rounds>>,
    /// Still counted among the directory's writers (not renamed yet).
    counted: bool,
}

impl Writing<'_> {
    /// Called once the file is renamed into `dir`: returns once a sync of `dir` that started
    /// after this call has returned without error. Blocking.
    ///
    /// # Errors
    /// The error of the round that would have covered this call, or of the round running
    /// when it was made (which may have dropped the rename), or `TimedOut` when no round
    /// covered it within the bounded wait.
    pub(super) fn sync(mut self, dir: &OwnedFd) -> io::Result<()> {
        let rounds = self.rounds.clone().expect("kept until dropped");
        // No longer a writer from the moment it waits on a round: both at once, so that a
        // round started in between, which covers the rename, is the one it waits on.
        let was_writing = std::mem::take(&mut self.counted);
        let (sync, wait, siblings) = (&self.syncs.sync, self.syncs.wait, self.syncs.siblings);
        rounds.sync(|| sync(dir), wait, siblings, was_writing)
    }

    fn renamed(&mut self, rounds: &Rounds) {
        if std::mem::take(&mut self.counted) {
            let mut st = rounds.state.lock().unwrap_or_else(PoisonError::into_inner);
            st.writing -= 1;
            rounds.done.notify_all();
        }
    }
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        let Some(rounds) = self.rounds.take() else {
            return;
        };
        // A delivery that failed before its rename writes no more.
        self.renamed(&rounds);
        // Clones are taken and dropped under the lock, so two counts (the map's and ours)
        // mean no one else uses this directory's coordinator now: forget it.
        let mut dirs = self
            .syncs
            .dirs
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if Arc::strong_count(&rounds) == 2 {
            dirs.remove(&self.key);
        }
        drop(rounds);
    }
}

impl DirSyncs {
    /// The process's coordinators, syncing with `fsync`: one for every tree of Maildirs, so
    /// that deliveries through two of them (the old and the new after a reload) into one
    /// directory still see each other's rounds, and their failures.
    pub(super) fn shared() -> Arc<DirSyncs> {
        static SHARED: std::sync::OnceLock<Arc<DirSyncs>> = std::sync::OnceLock::new();
        SHARED
            .get_or_init(|| {
                Arc::new(DirSyncs::new(
                    Arc::new(|dir: &OwnedFd| Ok(nix::unistd::fsync(dir)?)),
                    WAIT,
                    SIBLINGS,
                ))
            })
            .clone()
    }

    /// Coordinators that sync with `sync`, wait at most `wait` for a round, and hold a
    /// round at most `siblings` for deliveries still writing.
    pub(super) fn new(sync: SyncFn, wait: Duration, siblings: Duration) -> DirSyncs {
        DirSyncs {
            dirs: Mutex::new(HashMap::new()),
            sync,
            wait,
            siblings,
        }
    }

    /// A delivery starts writing a file it will rename into the directory `dir`.
    ///
    /// # Errors
    /// `fstat`'s.
    pub(super) fn begin(&self, dir: &OwnedFd) -> io::Result<Writing<'_>> {
        let st = nix::sys::stat::fstat(dir)?;
        #[allow(clippy::unnecessary_cast)] // the field types differ between targets
        let key = (st.st_dev as u64, st.st_ino as u64);
        let rounds = {
            let mut dirs = self.dirs.lock().unwrap_or_else(PoisonError::into_inner);
            dirs.entry(key).or_default().clone()
        };
        rounds
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .writing += 1;
        Ok(Writing {
            syncs: self,
            key,
            rounds: Some(rounds),
            counted: true,
        })
    }

    /// Syncs `dir` at once, on its own (a directory a delivery has just made an entry in).
    ///
    /// # Errors
    /// The sync's.
    pub(super) fn sync_now(&self, dir: &OwnedFd) -> io::Result<()> {
        (self.sync)(dir)
    }

    /// Directories with a coordinator (callers in flight).
    #[cfg(test)]
    pub(super) fn active(&self) -> usize {
        self.dirs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Rounds running now, summed over the directories.
    #[cfg(test)]
    pub(super) fn running(&self) -> u64 {
        let dirs = self.dirs.lock().unwrap_or_else(PoisonError::into_inner);
        dirs.values()
            .map(|r| {
                let st = r.state.lock().unwrap_or_else(PoisonError::into_inner);
                st.started - st.finished
            })
            .sum()
    }

    /// Callers waiting on rounds not yet started, summed over the directories.
    #[cfg(test)]
    pub(super) fn waiting_for_next(&self) -> usize {
        let dirs = self.dirs.lock().unwrap_or_else(PoisonError::into_inner);
        dirs.values()
            .map(|r| {
                let st = r.state.lock().unwrap_or_else(PoisonError::into_inner);
                st.waiting.get(&(st.started + 1)).copied().unwrap_or(0)
            })
            .sum()
    }
}

/// A failed round's error, kept so that each of its callers gets one.
#[derive(Clone)]
struct Failure {
    os: Option<i32>,
    kind: io::ErrorKind,
    text: String,
}

impl Failure {
    fn of(e: &io::Error) -> Failure {
        Failure {
            os: e.raw_os_error(),
            kind: e.kind(),
            text: e.to_string(),
        }
    }

    fn error(&self) -> io::Error {
        match self.os {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::new(self.kind, self.text.clone()),
        }
    }
}

#[derive(Default)]
struct State {
    /// Rounds started so far; round `n` is the `n`-th sync.
    started: u64,
    /// Rounds finished so far.
    finished: u64,
    /// Callers waiting on each round not yet read by all of them.
    waiting: HashMap<u64, usize>,
    /// Results of finished rounds that callers still have to read.
    results: HashMap<u64, Result<(), Failure>>,
    /// Deliveries between [`DirSyncs::begin`] and their rename.
    writing: usize,
}

/// The rounds of one directory.
#[derive(Default)]
struct Rounds {
    state: Mutex<State>,
    done: Condvar,
}

impl Rounds {
    fn sync(
        &self,
        run: impl FnOnce() -> io::Result<()>,
        wait: Duration,
        siblings: Duration,
        was_writing: bool,
    ) -> io::Result<()> {
        let now = Instant::now();
        let (deadline, siblings_deadline) = (now + wait, now + siblings);
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if was_writing {
            st.writing -= 1;
            self.done.notify_all();
        }
        // The next round to start is the first that surely began after our rename.
        let round = st.started + 1;
        *st.waiting.entry(round).or_insert(0) += 1;
        // A round running now began before the rename, but its `fsync` may write the rename
        // and fail: what failed to be written is then dropped, and the error is reported
        // once per open file, so the next round, on another caller's descriptor, may
        // succeed without it. That round's failure is ours too: we read its result as well.
        let running = (st.started > st.finished).then_some(st.started);
        if let Some(before) = running {
            *st.waiting.entry(before).or_insert(0) += 1;
        }
        let mut run = Some(run);
        loop {
            if st.finished >= round {
                let before = running.map(|before| take_result(&mut st, before));
                let ours = take_result(&mut st, round);
                return match before {
                    Some(Err(e)) => Err(e),
                    _ => ours,
                };
            }
            if st.started > st.finished {
                // A round is running: ours, or the one before it. Wait for its end.
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    if let Some(before) = running {
                        leave(&mut st, before);
                    }
                    leave(&mut st, round);
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("directory sync did not finish within {} s", wait.as_secs()),
                    ));
                }
                st = self
                    .done
                    .wait_timeout(st, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
                continue;
            }
            // No round is running and ours has not finished, so it has not started either
            // (`started == finished == round - 1`). Deliveries still writing are about to
            // rename: for a short while, let them, so that this round covers them too.
            let hold = siblings_deadline.saturating_duration_since(Instant::now());
            if st.writing > 0 && !hold.is_zero() {
                st = self
                    .done
                    .wait_timeout(st, hold)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
                continue;
            }
            // Start it.
            st.started = round;
            let run = run.take().expect("a caller starts at most its own round");
            drop(st);
            let result = run().map_err(|e| Failure::of(&e));
            st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            st.finished = round;
            st.results.insert(round, result);
            self.done.notify_all();
        }
    }
}

/// Reads a finished round's result for one of its callers; the last reader drops it.
fn take_result(st: &mut State, round: u64) -> io::Result<()> {
    let result = st
        .results
        .get(&round)
        .cloned()
        .unwrap_or_else(|| Err(Failure::of(&io::Error::other("sync result missing"))));
    leave(st, round);
    result.map_err(|f| f.error())
}

/// One caller fewer on `round`; the last one drops what is kept for it.
fn leave(st: &mut State, round: u64) {
    let left = st.waiting.get_mut(&round).map_or(0, |n| {
        *n -= 1;
        *n
    });
    if left == 0 {
        st.waiting.remove(&round);
        st.results.remove(&round);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Against a model of what a sync vouches for: writers bump a counter (a rename), then
    /// ask for a sync; each sync records, when it starts, the counter (the renames it covers)
    /// and fails at random. A caller told `Ok` must have a successful round that started
    /// after its rename and ended before the answer; a caller told `Err` must have had a
    /// round fail that ended (as the coordinator saw it) after it began writing (its own, or one running while it
    /// wrote, which may have written its rename) and before the answer (or time out, which
    /// this test never lets happen).
    #[test]
    fn answers_match_the_rounds_that_ran() {
        for seed in 1..=6u64 {
            let renames = Arc::new(AtomicU64::new(0));
            let clock = Arc::new(AtomicU64::new(0));
            // (covers up to, succeeded, ended at) per round.
            let rounds = Arc::new(Mutex::new(Vec::<(u64, bool, u64)>::new()));
            let rng = Arc::new(Mutex::new(seed));
            let sync: SyncFn = {
                let (renames, clock, rounds, rng) =
                    (renames.clone(), clock.clone(), rounds.clone(), rng.clone());
                Arc::new(move |_dir: &OwnedFd| {
                    let covers = renames.load(Ordering::SeqCst);
                    let fail = {
                        let mut x = rng.lock().unwrap();
                        // xorshift: a fifth of the rounds fail.
                        *x ^= *x << 13;
                        *x ^= *x >> 7;
                        *x ^= *x << 17;
                        *x % 5 == 0
                    };
                    std::thread::sleep(Duration::from_micros(200));
                    let ended = clock.fetch_add(1, Ordering::SeqCst);
                    rounds.lock().unwrap().push((covers, !fail, ended));
                    if fail {
                        Err(io::Error::from_raw_os_error(nix::libc::EIO))
                    } else {
                        Ok(())
                    }
                })
            };
            let syncs = Arc::new(DirSyncs::new(sync, Duration::from_secs(60), SIBLINGS));
            let dir = tempfile::tempdir().unwrap();
            let threads: Vec<_> = (0..6)
                .map(|_| {
                    let (syncs, renames, clock) = (syncs.clone(), renames.clone(), clock.clone());
                    let path = dir.path().to_path_buf();
                    std::thread::spawn(move || {
                        let fd: OwnedFd = std::fs::File::open(&path).unwrap().into();
                        let mut told = Vec::new();
                        for _ in 0..25 {
                            // Read before `begin`: the coordinator counts the write from
                            // inside it, so any round it ties the write to ends after this.
                            let began = clock.fetch_add(1, Ordering::SeqCst);
                            let writing = syncs.begin(&fd).unwrap();
                            let mine = renames.fetch_add(1, Ordering::SeqCst) + 1;
                            let result = writing.sync(&fd);
                            let at = clock.fetch_add(1, Ordering::SeqCst);
                            told.push((mine, result.map_err(|e| e.raw_os_error()), began, at));
                        }
                        told
                    })
                })
                .collect();
            let told: Vec<_> = threads
                .into_iter()
                .flat_map(|t| t.join().unwrap())
                .collect();
            let rounds = rounds.lock().unwrap().clone();
            assert!(
                rounds.len() < told.len(),
                "seed {seed}: no round was shared"
            );
            for (write, result, began, at) in &told {
                match result {
                    Ok(()) => assert!(
                        rounds
                            .iter()
                            .any(|(covers, ok, ended)| *ok && covers >= write && ended < at),
                        "seed {seed}: write {write} told Ok"
                    ),
                    Err(code) => {
                        assert_eq!(*code, Some(nix::libc::EIO));
                        // The round that ended last before the caller began may still be
                        // running for the coordinator (its thread has not yet taken the
                        // lock to record the end), so it counts as one the caller saw.
                        let last_before = rounds
                            .iter()
                            .filter(|(_, _, ended)| ended < began)
                            .max_by_key(|(_, _, ended)| *ended);
                        assert!(
                            rounds
                                .iter()
                                .any(|(_, ok, ended)| !*ok && ended > began && ended < at)
                                || last_before.is_some_and(|(_, ok, _)| !*ok),
                            "seed {seed}: write {write} told Err"
                        );
                    }
                }
            }
            assert_eq!(syncs.active(), 0, "nothing kept once every caller is done");
        }
    }

    /// Deliveries that began writing before a round would start are waited for: with all
    /// of them between `begin` and their rename when the first asks for a sync, one round
    /// covers them all.
    #[test]
    fn a_round_waits_for_deliveries_still_writing() {
        const N: usize = 6;
        let ran = Arc::new(AtomicU64::new(0));
        let renamed = Arc::new(AtomicU64::new(0));
        let sync: SyncFn = {
            let (ran, renamed) = (ran.clone(), renamed.clone());
            Arc::new(move |_dir: &OwnedFd| {
                assert_eq!(
                    renamed.load(Ordering::SeqCst),
                    N as u64,
                    "a rename not waited for"
                );
                ran.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
        };
        let syncs = Arc::new(DirSyncs::new(
            sync,
            Duration::from_secs(60),
            Duration::from_secs(60),
        ));
        let dir = tempfile::tempdir().unwrap();
        let barrier = Arc::new(std::sync::Barrier::new(N));
        let threads: Vec<_> = (0..N)
            .map(|i| {
                let (syncs, renamed, barrier) = (syncs.clone(), renamed.clone(), barrier.clone());
                let path = dir.path().to_path_buf();
                std::thread::spawn(move || {
                    let fd: OwnedFd = std::fs::File::open(&path).unwrap().into();
                    let writing = syncs.begin(&fd).unwrap();
                    barrier.wait();
                    // The last one renames late: the others' round must wait for it.
                    if i == N - 1 {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    renamed.fetch_add(1, Ordering::SeqCst);
                    writing.sync(&fd)
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
        assert_eq!(ran.load(Ordering::SeqCst), 1, "one round for all {N}");
        assert_eq!(syncs.active(), 0);
    }

    /// A round that does not end within the wait fails its waiters with `TimedOut`; they
    /// leave nothing behind, and the round's own caller still gets its result.
    #[test]
    fn the_wait_is_bounded() {
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = Mutex::new(release_rx);
        let sync: SyncFn = Arc::new(move |_dir: &OwnedFd| {
            let _ = release_rx
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(30));
            Ok(())
        });
        let syncs = Arc::new(DirSyncs::new(sync, Duration::from_millis(50), SIBLINGS));
        let dir = tempfile::tempdir().unwrap();
        let fd = || -> OwnedFd { std::fs::File::open(dir.path()).unwrap().into() };
        let first = {
            let (syncs, fd) = (syncs.clone(), fd());
            std::thread::spawn(move || syncs.begin(&fd)?.sync(&fd))
        };
        // Bounded: until the first caller's round is running.
        for _ in 0..3000 {
            if syncs.running() == 1 {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let fd2 = fd();
        let e = syncs.begin(&fd2).unwrap().sync(&fd2).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        release_tx.send(()).unwrap();
        first.join().unwrap().unwrap();
        assert_eq!(syncs.active(), 0);
    }

    /// A rename made while a round runs may be written, and dropped, by that round's
    /// `fsync`: Linux marks what it failed to write clean, and reports the error once per
    /// open file (a descriptor opened after the error was reported never sees it). Here a
    /// model of that: round 1, running when `w` renames, fails; `x` opens the directory
    /// after that failure, renames, and starts round 2 on its descriptor, which reports
    /// nothing. `w`'s rename was never made durable, so `w` must not be told `Ok` (an
    /// `fsync` on its own descriptor, as before the grouping, would have failed).
    #[test]
    fn a_failed_round_fails_the_renames_made_while_it_ran() {
        use std::collections::HashMap as Map;
        use std::os::fd::AsRawFd;
        use std::sync::mpsc::channel;
        const T: Duration = Duration::from_secs(30);
        // Per descriptor, the error generation it has seen (its errseq sample); the
        // generation now, and whether its error was reported to anyone.
        #[derive(Default)]
        struct ErrSeq {
            seen_by: Map<i32, u64>,
            generation: u64,
            reported: bool,
        }
        let errseq = Arc::new(Mutex::new(ErrSeq::default()));
        let (round1_tx, round1_rx) = channel::<()>();
        let (go_tx, go_rx) = channel::<()>();
        let (failed_tx, failed_rx) = channel::<()>();
        let (x_began_tx, x_began_rx) = channel::<()>();
        let (go_rx, x_began_rx) = (Mutex::new(go_rx), Mutex::new(x_began_rx));
        let calls = Arc::new(AtomicU64::new(0));
        let sync: SyncFn = {
            let (errseq, calls) = (errseq.clone(), calls.clone());
            Arc::new(move |fd: &OwnedFd| {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    round1_tx.send(()).unwrap();
                    go_rx.lock().unwrap().recv_timeout(T).unwrap();
                    // The writeback fails, dropping every rename made so far.
                    errseq.lock().unwrap().generation += 1;
                }
                let mut e = errseq.lock().unwrap();
                let generation = e.generation;
                let seen = e.seen_by.insert(fd.as_raw_fd(), generation).unwrap_or(0);
                if seen == generation {
                    return Ok(());
                }
                e.reported = true;
                drop(e);
                if calls.load(Ordering::SeqCst) == 1 {
                    // Reported: `x` opens the directory now, and begins writing.
                    failed_tx.send(()).unwrap();
                    x_began_rx.lock().unwrap().recv_timeout(T).unwrap();
                }
                Err(io::Error::from_raw_os_error(nix::libc::EIO))
            })
        };
        // Deliveries still writing hold a round (as in the server, for longer here).
        let syncs = Arc::new(DirSyncs::new(sync, T, T));
        let dir = tempfile::tempdir().unwrap();
        let open = |errseq: &Mutex<ErrSeq>| -> OwnedFd {
            let fd: OwnedFd = std::fs::File::open(dir.path()).unwrap().into();
            let mut e = errseq.lock().unwrap();
            let sample = if e.reported { e.generation } else { 0 };
            e.seen_by.insert(fd.as_raw_fd(), sample);
            fd
        };
        let fd_v = open(&errseq);
        let v = {
            let syncs = syncs.clone();
            std::thread::spawn(move || syncs.begin(&fd_v)?.sync(&fd_v))
        };
        round1_rx.recv_timeout(T).unwrap();
        let fd_w = open(&errseq);
        let w = {
            let syncs = syncs.clone();
            std::thread::spawn(move || {
                let writing = syncs.begin(&fd_w)?;
                // (renamed here, while round 1 runs)
                writing.sync(&fd_w)
            })
        };
        // Bounded: until `w` waits for round 2.
        for _ in 0..3000 {
            if syncs.waiting_for_next() == 1 {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(syncs.waiting_for_next(), 1);
        go_tx.send(()).unwrap();
        failed_rx.recv_timeout(T).unwrap();
        let fd_x = open(&errseq);
        let writing_x = syncs.begin(&fd_x).unwrap();
        x_began_tx.send(()).unwrap();
        assert_eq!(
            v.join().unwrap().unwrap_err().raw_os_error(),
            Some(nix::libc::EIO)
        );
        // (`x` renames, then asks for its sync: it starts round 2, on its descriptor.)
        writing_x.sync(&fd_x).unwrap();
        let told_w = w.join().unwrap();
        assert!(
            told_w.is_err(),
            "a rename that a failed round may have dropped was told Ok"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(syncs.active(), 0);
    }

    /// A steady stream of deliveries that begin writing (and some fail before their rename)
    /// never postpones a round for ever: a caller's round starts within [`SIBLINGS`] of its
    /// call, however many others are writing then.
    #[test]
    fn a_stream_of_writers_does_not_starve_a_round() {
        use std::sync::atomic::AtomicBool;
        let sync: SyncFn = Arc::new(|_dir: &OwnedFd| Ok(()));
        let syncs = Arc::new(DirSyncs::new(sync, Duration::from_secs(60), SIBLINGS));
        let dir = tempfile::tempdir().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..4)
            .map(|i| {
                let (syncs, stop) = (syncs.clone(), stop.clone());
                let path = dir.path().to_path_buf();
                std::thread::spawn(move || {
                    let fd: OwnedFd = std::fs::File::open(&path).unwrap().into();
                    // Bounded: at most 2000 writes, or until told to stop.
                    for n in 0..2000 {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let writing = syncs.begin(&fd).unwrap();
                        std::thread::sleep(Duration::from_millis(3));
                        if (n + i) % 2 == 0 {
                            drop(writing); // failed before its rename
                        } else {
                            writing.sync(&fd).unwrap();
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20));
        let fd: OwnedFd = std::fs::File::open(dir.path()).unwrap().into();
        let mut slowest = Duration::ZERO;
        for _ in 0..20 {
            let t = Instant::now();
            syncs.begin(&fd).unwrap().sync(&fd).unwrap();
            slowest = slowest.max(t.elapsed());
        }
        stop.store(true, Ordering::SeqCst);
        for w in writers {
            w.join().unwrap();
        }
        // 10 ms, and room for a loaded machine.
        assert!(
            slowest < Duration::from_millis(500),
            "a round waited {slowest:?}"
        );
        assert_eq!(syncs.active(), 0);
    }
}
