//! Who may try a password now: a hard block per client address, a growing delay per account,
//! and a bound on the argon2 checks that run at once. Shared by all sessions, kept over a
//! reload, listed and cleared by `mta auth blocked|unblock` through the control socket.
//!
//! - **Per client** (an IPv4 address, an IPv6 /64, see [`client_of`]): an attempt is
//!   reserved ([`Logins::admit`]) before its password is checked, and counts against the
//!   client until it is known to have succeeded. When recorded failures reach
//!   `limits.auth_failures` within `limits.auth_failure_window`, the client is blocked until
//!   the oldest of them leaves the window ([`Admit::Blocked`], `421 4.7.0`); when failures and
//!   attempts still being checked reach it, the attempt is refused for now ([`Admit::Busy`],
//!   `454 4.7.0`). So however many connections a client opens at once, at most
//!   `auth_failures` of its passwords are checked per window.
//! - **Per account**: failures from anywhere make a streak (it ends after a quiet window).
//!   An attempt from a client that has not logged in to that account within [`TRUST`] waits
//!   [`delay_for`] the streak before its check, doubling from one second up to
//!   [`MAX_DELAY`]; a client that has logged in successfully is not delayed. An account is
//!   never locked: a stranger who fails a thousand times makes the owner wait, at most
//!   [`MAX_DELAY`], not lose their mail.
//! - **Argon2** ([`PasswordChecks`]): each check holds about 19 MiB for its duration, so at
//!   most one per CPU runs at once; up to [`MAX_WAITING`] more wait their turn, for at most
//!   [`MAX_WAIT`]; beyond that the attempt gets `454 4.7.0` and nothing is counted. The checks
//!   run on threads of their own, as many as may run at once: on the shared blocking pool
//!   each check landed on another thread, and the allocator kept 19 MiB for each of them.
//!
//! Both tables are bounded by [`MAX_TRACKED`] entries; when one is full, entries with nothing
//! left to say go first, then the one quiet longest (never one with an attempt in progress).
//! They live in memory: a restart forgets blocks, delays and which clients are trusted.
//! Time is an argument (`now`), so the tests need no clock.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mta_core::address::Address;
use mta_core::config::Limits;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Entries each table keeps at most.
pub const MAX_TRACKED: usize = 10_000;
/// Longer logins are tracked by their first this many octets: no real account name is
/// longer, and a key must not let one client fill memory with 12 KB logins.
const MAX_LOGIN_KEY: usize = 256;
/// How long a successful login from a client spares that client the account's delay.
pub const TRUST: Duration = Duration::from_secs(30 * 24 * 3600);
/// Clients remembered as trusted per account (the most recent ones).
const MAX_TRUSTED: usize = 8;
/// The longest an attempt is delayed: short enough for a mail client's reply timeout.
pub const MAX_DELAY: Duration = Duration::from_secs(30);
/// Argon2 checks waiting for their turn, beyond those running: a waiting check holds no
/// argon2 memory, and an office behind one address may open twenty sessions at once.
pub const MAX_WAITING: usize = 64;
/// The longest a check waits for its turn.
pub const MAX_WAIT: Duration = Duration::from_secs(10);

/// The client a peer address counts as: IPv4 as it is (also when mapped into IPv6), IPv6
/// by its /64 network, which one host is usually given whole and could otherwise take a new
/// address from for every attempt.
pub fn client_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
    }
}

/// The account a login names: the mailbox key when it is an address (so case and IDNA
/// spellings of one account count together), else the login in lower case.
pub fn account_key(login: &str) -> String {
    let mut key = match Address::parse(login) {
        Ok(address) => address.key(),
        Err(_) => login.to_lowercase(),
    };
    if key.len() > MAX_LOGIN_KEY {
        let mut end = MAX_LOGIN_KEY;
        while !key.is_char_boundary(end) {
            end -= 1;
        }
        key.truncate(end);
    }
    key
}

/// The delay before checking an attempt from an untrusted client on an account with
/// `streak` recent failures: none for none, then 1 s, 2 s, 4 s … up to [`MAX_DELAY`].
pub fn delay_for(streak: u32) -> Duration {
    match streak {
        0 => Duration::ZERO,
        n => Duration::from_secs(1u64 << (n - 1).min(16)).min(MAX_DELAY),
    }
}

/// `limits.auth_failures` and `limits.auth_failure_window`.
#[derive(Debug, Clone, Copy)]
pub struct LoginPolicy {
    /// Failures from one client that block it.
    pub failures: u32,
    /// The window they are counted in, and the quiet time that ends an account's streak.
    pub window: Duration,
}

impl LoginPolicy {
    /// The policy `[limits]` sets.
    pub fn from_limits(limits: &Limits) -> LoginPolicy {
        LoginPolicy {
            failures: limits.auth_failures,
            window: limits.auth_failure_window,
        }
    }
}

/// The answer to "may this attempt be checked?".
#[derive(Debug)]
pub enum Admit {
    /// Yes: wait `delay`, check, then [`Ticket::finish`].
    Check {
        /// The reservation; dropping it unfinished counts nothing.
        ticket: Ticket,
        /// How long to wait before the check (the account's delay; zero for a trusted
        /// client).
        delay: Duration,
    },
    /// No: the client has failed too often; blocked until `until`.
    Blocked {
        /// When the block ends.
        until: Instant,
    },
    /// Not now: the client's failures and attempts in progress reach the limit.
    Busy,
}

/// How a checked attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The right password.
    Success,
    /// Unknown user or wrong password.
    Failure,
}

/// One client's recent failures and attempts in progress.
#[derive(Debug, Default)]
struct ClientState {
    /// Times of the last (at most `policy.failures`) failures.
    failures: VecDeque<Instant>,
    /// Attempts admitted and not yet finished.
    in_flight: usize,
    /// The last time anything happened (for eviction).
    seen: Option<Instant>,
}

/// One account's failure streak and trusted clients.
#[derive(Debug, Default)]
struct AccountState {
    /// Failures since the streak began.
    streak: u32,
    /// The last failure.
    last_failure: Option<Instant>,
    /// Clients that logged in successfully, with when (most recent last).
    trusted: Vec<(IpAddr, Instant)>,
}

#[derive(Debug, Default)]
struct Tables {
    clients: HashMap<IpAddr, ClientState>,
    accounts: HashMap<String, AccountState>,
}

/// The login tables (`Default` for a new, empty one).
#[derive(Default)]
pub struct Logins {
    tables: Arc<Mutex<Tables>>,
}

/// An admitted attempt. [`Ticket::finish`] records its outcome; dropped unfinished (the
/// session ended, the check could not run) it frees its place and counts nothing.
#[derive(Debug)]
pub struct Ticket {
    tables: Option<Arc<Mutex<Tables>>>,
    client: IpAddr,
    account: String,
    policy: LoginPolicy,
}

/// One line of `mta auth blocked`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    /// A client address under a block.
    Client {
        /// The client (an IPv4 address, or the /64 network of an IPv6 one).
        client: IpAddr,
        /// Failures within the window.
        failures: u32,
        /// When the block ends.
        until: Instant,
    },
    /// An account whose untrusted attempts are delayed.
    Account {
        /// The account key.
        account: String,
        /// Failures in its streak.
        failures: u32,
        /// The delay an untrusted attempt gets now.
        delay: Duration,
        /// When the streak ends if no failure comes.
        until: Instant,
    },
}

impl Logins {
    /// Reserves an attempt by `ip` for `login`, or says why not. The decision and the
    /// reservation are one step under one lock, so concurrent attempts cannot all pass a
    /// check made before any of them is counted.
    pub fn admit(&self, ip: IpAddr, login: &str, policy: LoginPolicy, now: Instant) -> Admit {
        let client = client_of(ip);
        let account = account_key(login);
        let mut tables = lock(&self.tables);
        let limit = policy.failures as usize;
        if let Some(state) = tables.clients.get_mut(&client) {
            prune(&mut state.failures, policy.window, now);
            if state.failures.len() >= limit
                && let Some(oldest) = state.failures.front()
            {
                return Admit::Blocked {
                    until: *oldest + policy.window,
                };
            }
            if state.failures.len() + state.in_flight >= limit {
                return Admit::Busy;
            }
        }
        make_room(
            &mut tables.clients,
            &client,
            now,
            |c| c.in_flight > 0,
            |c| c.seen,
        );
        let state = tables.clients.entry(client).or_default();
        state.in_flight += 1;
        state.seen = Some(now);
        let delay = match tables.accounts.get(&account) {
            Some(acc) if is_trusted(acc, client, now) => Duration::ZERO,
            Some(acc) => delay_for(streak(acc, policy.window, now)),
            None => Duration::ZERO,
        };
        Admit::Check {
            ticket: Ticket {
                tables: Some(self.tables.clone()),
                client,
                account,
                policy,
            },
            delay,
        }
    }

    /// Client addresses under a block and accounts under a delay, at `now`.
    pub fn held(&self, policy: LoginPolicy, now: Instant) -> Vec<Held> {
        let mut tables = lock(&self.tables);
        let limit = policy.failures as usize;
        let mut held = Vec::new();
        for (client, state) in &mut tables.clients {
            prune(&mut state.failures, policy.window, now);
            if state.failures.len() >= limit
                && let Some(oldest) = state.failures.front()
            {
                held.push(Held::Client {
                    client: *client,
                    failures: state.failures.len() as u32,
                    until: *oldest + policy.window,
                });
            }
        }
        for (account, state) in &tables.accounts {
            let n = streak(state, policy.window, now);
            if let (true, Some(last)) = (n > 0, state.last_failure) {
                held.push(Held::Account {
                    account: account.clone(),
                    failures: n,
                    delay: delay_for(n),
                    until: last + policy.window,
                });
            }
        }
        held.sort_by_key(held_key);
        held
    }

    /// Clears the block of a client (`target` an IP address, IPv6 by its /64) or the streak
    /// of an account (anything else, as a login). True when there was something to clear.
    pub fn unblock(&self, target: &str) -> bool {
        let mut tables = lock(&self.tables);
        match target.parse::<IpAddr>() {
            Ok(ip) => tables
                .clients
                .get_mut(&client_of(ip))
                .is_some_and(|state| !std::mem::take(&mut state.failures).is_empty()),
            Err(_) => tables
                .accounts
                .get_mut(&account_key(target))
                .is_some_and(|state| {
                    let had = state.streak > 0;
                    state.streak = 0;
                    state.last_failure = None;
                    had
                }),
        }
    }

    /// Entries tracked (clients, accounts), for tests and the bound on memory.
    pub fn tracked(&self) -> (usize, usize) {
        let tables = lock(&self.tables);
        (tables.clients.len(), tables.accounts.len())
    }
}

impl Ticket {
    /// Records how the checked attempt ended, at `now`: a failure counts against the client
    /// and the account; a success makes the client trusted for the account.
    pub fn finish(mut self, outcome: Outcome, now: Instant) {
        let Some(tables) = self.tables.take() else {
            return;
        };
        let mut tables = lock(&tables);
        let policy = self.policy;
        if let Some(state) = tables.clients.get_mut(&self.client) {
            state.in_flight = state.in_flight.saturating_sub(1);
            state.seen = Some(now);
            if outcome == Outcome::Failure {
                prune(&mut state.failures, policy.window, now);
                state.failures.push_back(now);
                // Only the last `failures` times matter: older ones cannot block for longer.
                while state.failures.len() > policy.failures as usize {
                    state.failures.pop_front();
                }
            }
        }
        let account = std::mem::take(&mut self.account);
        let accounts = &mut tables.accounts;
        match outcome {
            Outcome::Failure => {
                make_room(accounts, &account, now, |_| false, last_event);
                let state = accounts.entry(account).or_default();
                state.streak = streak(state, policy.window, now).saturating_add(1);
                state.last_failure = Some(now);
            }
            Outcome::Success => {
                make_room(accounts, &account, now, |_| false, last_event);
                let state = accounts.entry(account).or_default();
                state.trusted.retain(|(c, _)| *c != self.client);
                state.trusted.push((self.client, now));
                if state.trusted.len() > MAX_TRUSTED {
                    state.trusted.remove(0);
                }
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(tables) = self.tables.take() {
            let mut tables = lock(&tables);
            if let Some(state) = tables.clients.get_mut(&self.client) {
                state.in_flight = state.in_flight.saturating_sub(1);
            }
        }
    }
}

/// The account's streak at `now`: zero once a whole window has passed since its last
/// failure.
fn streak(state: &AccountState, window: Duration, now: Instant) -> u32 {
    match state.last_failure {
        Some(last) if now.saturating_duration_since(last) < window => state.streak,
        _ => 0,
    }
}

fn is_trusted(state: &AccountState, client: IpAddr, now: Instant) -> bool {
    state
        .trusted
        .iter()
        .any(|(c, at)| *c == client && now.saturating_duration_since(*at) < TRUST)
}

fn last_event(state: &AccountState) -> Option<Instant> {
    let trusted = state.trusted.iter().map(|(_, at)| *at).max();
    trusted.max(state.last_failure)
}

fn held_key(held: &Held) -> (u8, String) {
    match held {
        Held::Client { client, .. } => (0, client.to_string()),
        Held::Account { account, .. } => (1, account.clone()),
    }
}

/// Makes room for `key` in a full `table`: first the entries with nothing left to say (no
/// failure in the window, no trust, nothing in progress), then the one whose last event is
/// oldest; never one that `busy` says is in use.
fn make_room<K: std::hash::Hash + Eq + Clone, V: Empty>(
    table: &mut HashMap<K, V>,
    key: &K,
    now: Instant,
    busy: impl Fn(&V) -> bool,
    last: impl Fn(&V) -> Option<Instant>,
) {
    if table.contains_key(key) || table.len() < MAX_TRACKED {
        return;
    }
    table.retain(|_, v| busy(v) || !v.is_empty(now));
    if table.len() < MAX_TRACKED {
        return;
    }
    let quietest = table
        .iter()
        .filter(|(_, v)| !busy(v))
        .min_by_key(|(_, v)| last(v))
        .map(|(k, _)| k.clone());
    if let Some(k) = quietest {
        table.remove(&k);
    }
}

/// An entry that no longer changes any decision.
trait Empty {
    fn is_empty(&self, now: Instant) -> bool;
}

impl Empty for ClientState {
    /// Failures are pruned whenever a client is looked at; one whose last event is older
    /// than any window (a day, the longest `auth_failure_window`) says nothing either.
    fn is_empty(&self, now: Instant) -> bool {
        self.in_flight == 0
            && (self.failures.is_empty()
                || self.seen.is_some_and(|s| {
                    now.saturating_duration_since(s) >= Duration::from_secs(86_400)
                }))
    }
}

impl Empty for AccountState {
    fn is_empty(&self, now: Instant) -> bool {
        let day = Duration::from_secs(86_400);
        let failing = self
            .last_failure
            .is_some_and(|t| now.saturating_duration_since(t) < day);
        let trusting = self
            .trusted
            .iter()
            .any(|(_, at)| now.saturating_duration_since(*at) < TRUST);
        !failing && !trusting
    }
}

fn prune(times: &mut VecDeque<Instant>, window: Duration, now: Instant) {
    while times
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) >= window)
    {
        times.pop_front();
    }
}

/// The tables hold plain counters and times; a panic elsewhere cannot leave them
/// inconsistent, so a poisoned lock is used as it is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The bound on argon2 checks: at most `running` at once, at most [`MAX_WAITING`] waiting.
pub struct PasswordChecks {
    permits: Arc<Semaphore>,
    running: usize,
    /// Work for the check threads; `None` when none could be started (then the blocking
    /// pool runs the checks).
    jobs: Option<std::sync::mpsc::Sender<Job>>,
    waiting: AtomicUsize,
    max_waiting: usize,
}

/// Why a check was not started: too many are running and waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooBusy;

std::thread_local! {
    /// The argon2 working memory of this thread, kept between checks.
    static SCRATCH: std::cell::RefCell<mta_core::auth::Scratch> = Default::default();
}

/// Runs `f` with this thread's argon2 working memory. Meant for the check threads, which
/// keep it for good; on any other thread it lives as long as the thread.
pub fn with_scratch<T>(f: impl FnOnce(&mut mta_core::auth::Scratch) -> T) -> T {
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut scratch) => f(&mut scratch),
        // Only re-entry could find it borrowed: a check inside a check never happens.
        Err(_) => f(&mut mta_core::auth::Scratch::default()),
    })
}

/// One password check, sent to a check thread.
type Job = Box<dyn FnOnce() + Send>;

/// A check's turn; dropping it lets the next one run.
pub struct Turn {
    _permit: OwnedSemaphorePermit,
}

impl Default for PasswordChecks {
    /// One check per CPU (at most 8) runs at once.
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        PasswordChecks::new(cpus.clamp(1, 8), MAX_WAITING)
    }
}

impl PasswordChecks {
    /// At most `running` checks at once and `waiting` more in line.
    pub fn new(running: usize, waiting: usize) -> PasswordChecks {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut started = 0;
        for n in 0..running {
            let rx = rx.clone();
            let thread = std::thread::Builder::new()
                .name(format!("mta-password-{n}"))
                .spawn(move || {
                    lower_priority();
                    // Ends when the sender is dropped with the last `PasswordChecks`.
                    loop {
                        // The lock is released before the job runs (end of statement).
                        let next = lock(&rx).recv();
                        match next {
                            Ok(job) => job(),
                            Err(_) => break,
                        }
                    }
                });
            if thread.is_ok() {
                started += 1;
            }
        }
        PasswordChecks {
            permits: Arc::new(Semaphore::new(running)),
            running,
            jobs: (started > 0).then_some(tx),
            waiting: AtomicUsize::new(0),
            max_waiting: waiting,
        }
    }

    /// Waits for a turn, at most `max_wait`; [`TooBusy`] at once when the line is full.
    ///
    /// # Errors
    /// [`TooBusy`] when the line is full or the wait was too long.
    pub async fn turn(&self, max_wait: Duration) -> Result<Turn, TooBusy> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok(Turn { _permit: permit });
        }
        let place = self.waiting.fetch_add(1, Ordering::SeqCst);
        let _leave = Leave(&self.waiting);
        if place >= self.max_waiting {
            return Err(TooBusy);
        }
        match tokio::time::timeout(max_wait, self.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Turn { _permit: permit }),
            Ok(Err(_)) | Err(_) => Err(TooBusy),
        }
    }

    /// Runs `check` in its `turn` on a check thread, and its result; `None` if the check
    /// panicked. The turn ends when the check does, also if the caller stops waiting.
    pub async fn run<T: Send + 'static>(
        &self,
        turn: Turn,
        check: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            // A check that panics must neither take its thread down nor keep its turn.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(check));
            drop(turn);
            let _ = tx.send(result.ok());
        });
        match &self.jobs {
            Some(jobs) => match jobs.send(job) {
                Ok(()) => {}
                Err(std::sync::mpsc::SendError(job)) => {
                    let _ = tokio::task::spawn_blocking(job).await;
                }
            },
            None => {
                let _ = tokio::task::spawn_blocking(job).await;
            }
        }
        rx.await.ok().flatten()
    }

    /// Checks running now.
    pub fn running(&self) -> usize {
        self.running - self.permits.available_permits()
    }
}

/// How much nicer than the server a password-check thread runs: a burst of logins takes the
/// CPU that mail leaves, not the CPU mail needs. With one check per CPU at the default priority, 20
/// sessions logging in at once held both cores of a 2-core machine, and the reply to a
/// message's final dot waited 19 ms (median) instead of 5.
pub const CHECK_NICE: i32 = 10;

/// Gives the calling thread a nice value [`CHECK_NICE`] above the one it started with (the
/// server's own), at most 19 (Linux applies a nice value per thread). A failure is no reason
/// not to check passwords: the thread keeps its priority.
fn lower_priority() {
    let tid = rustix::thread::gettid();
    let own = rustix::process::getpriority_process(Some(tid)).unwrap_or(0);
    let lower = own.saturating_add(CHECK_NICE).min(MAX_NICE);
    if let Err(e) = rustix::process::setpriority_process(Some(tid), lower) {
        tracing::debug!(error = %e, "password-check thread keeps its priority");
    }
}

/// The highest nice value (the lowest priority) Linux gives.
pub const MAX_NICE: i32 = 19;

/// The nice value of the calling thread, for the tests.
#[cfg(test)]
pub(crate) fn own_nice() -> i32 {
    rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap_or(i32::MIN)
}

/// Leaves the waiting line when dropped.
struct Leave<'a>(&'a AtomicUsize);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
#[path = "logins_tests.rs"]
mod tests;
