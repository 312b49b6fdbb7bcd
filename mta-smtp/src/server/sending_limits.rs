//! Sending limits per authenticated user (`[limits.sending]`), so that a stolen password
//! cannot send ten thousand messages: messages per hour and per day, checked at MAIL FROM,
//! and recipients the user has not written to before, per day, checked at RCPT TO. Mail
//! without AUTH (port 25) is not counted.
//!
//! Check and count do not race: MAIL reserves a message and RCPT each new recipient under
//! one lock, so parallel sessions of one user see each other's open transactions and cannot
//! together pass a cap. A reservation becomes a count when the message is queued
//! ([`MessageSlot::commit`], after the queue said yes and before our `250`), and is given
//! back when the transaction ends any other way (the slot is dropped).
//!
//! The counts are kept in the queue's store through [`SendingLedger`], so they survive a
//! restart; windows are on the ledger's clock ([`super::sending_window`]).
//!
//! First-time recipients: the user's recent recipients are remembered as the first 8 octets
//! of SHA-256 of the address (so the store holds no address list, and a sender cannot make a
//! new address collide with a known one), each with when it was last written to. An address
//! not written to for [`KNOWN_FOR_MS`] is new again; past [`KNOWN_CAP`] addresses the one
//! written to longest ago is forgotten, which can only make an address count as new again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use mta_core::address::Address;
use mta_core::config::{Config, SendingCaps};
use mta_core::envelope::{Envelope, MessageId};
use mta_core::metrics::METRICS;
use mta_core::reply::Reply;
use mta_core::seams::Enqueue;
use mta_core::sending::{LedgerError, MemoryLedger, SendingLedger};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::log_text::escape;
use super::sending_window::{DAY, HOUR, Window};

/// How long an address stays known after the user last wrote to it.
pub const KNOWN_FOR_MS: u64 = 30 * 24 * 3_600_000;
/// Addresses remembered per user.
pub const KNOWN_CAP: usize = 10_000;

/// What is kept per user in the ledger.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Record {
    /// Messages accepted, in the last hour by minute.
    hour: Window,
    /// Messages accepted, in the last day by hour.
    day: Window,
    /// First-time recipients, in the last day by hour.
    new: Window,
    /// Hash of each recently written address → when, ms on the ledger's clock.
    known: HashMap<u64, u64>,
    /// The day (ms / 86,400,000) of the last notice to the postmaster.
    noticed_day: Option<u64>,
}

impl Record {
    /// Brings the record to `now`; true when the clock had stepped back past some of it
    /// (those times are now `now`, and the record should be saved).
    fn settle(&mut self, now: u64) -> bool {
        let mut moved = self.hour.settle(HOUR, now);
        moved |= self.day.settle(DAY, now);
        moved |= self.new.settle(DAY, now);
        // A time later than now (the clock stepped back) is taken as now, as in the windows.
        self.known.retain(|_, t| {
            moved |= *t > now;
            *t = (*t).min(now);
            *t + KNOWN_FOR_MS > now
        });
        moved
    }

    fn knows(&self, hash: u64) -> bool {
        self.known.contains_key(&hash)
    }

    fn remember(&mut self, hash: u64, now: u64) {
        self.known.insert(hash, now);
        if self.known.len() > KNOWN_CAP {
            let oldest = self
                .known
                .iter()
                .min_by_key(|&(h, t)| (*t, *h))
                .map(|(h, _)| *h);
            if let Some(h) = oldest {
                self.known.remove(&h);
            }
        }
    }
}

/// One user's counts as the limiter holds them: the saved record and the open reservations.
#[derive(Default)]
struct UserState {
    record: Record,
    /// Messages of open transactions.
    messages: u32,
    /// New recipients of open transactions.
    new: u32,
}

/// Which limit refused a MAIL or RCPT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `messages_per_hour`.
    Hour,
    /// `messages_per_day`.
    Day,
    /// `first_time_recipients_per_day`.
    FirstTime,
    /// The account is held (`mta user hold`).
    Held,
    /// The counters could not be read or written.
    Unavailable,
}

impl Limit {
    /// The name in logs, metrics and the postmaster's notice.
    pub fn name(self) -> &'static str {
        match self {
            Limit::Hour => "messages_per_hour",
            Limit::Day => "messages_per_day",
            Limit::FirstTime => "first_time_recipients_per_day",
            Limit::Held => "held",
            Limit::Unavailable => "unavailable",
        }
    }

    /// What the client is told.
    pub fn reply(self) -> Reply {
        match self {
            Limit::Hour | Limit::Day => Reply::SENDING_LIMIT,
            Limit::FirstTime => Reply::NEW_RECIPIENT_LIMIT,
            Limit::Held => Reply::SENDING_HELD,
            Limit::Unavailable => Reply::LOCAL_ERROR,
        }
    }
}

/// What `mta user show` prints of one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    /// Messages in the last hour, the last 24 hours, first-time recipients in 24 hours.
    pub counts: [u32; 3],
    /// The caps in force (0: none).
    pub caps: SendingCaps,
    /// Addresses remembered as written to.
    pub known: usize,
    /// Held by an administrator.
    pub held: bool,
}

/// The limiter every session of a server shares (kept over a reload).
pub struct SendingLimiter {
    ledger: Arc<dyn SendingLedger>,
    /// Where the postmaster's notice is queued; `None`: no notices.
    notices: Option<Arc<dyn Enqueue>>,
    users: Mutex<HashMap<String, UserState>>,
}

impl Default for SendingLimiter {
    fn default() -> Self {
        SendingLimiter::new(Arc::new(MemoryLedger::default()), None)
    }
}

fn hash(address: &Address) -> u64 {
    let digest = ring::digest::digest(&ring::digest::SHA256, address.key().as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_be_bytes(first)
}

impl SendingLimiter {
    /// A limiter counting in `ledger`, sending its notices to the postmaster through
    /// `notices`.
    pub fn new(ledger: Arc<dyn SendingLedger>, notices: Option<Arc<dyn Enqueue>>) -> Self {
        SendingLimiter {
            ledger,
            notices,
            users: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, UserState>> {
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The user's state, loaded from the ledger the first time and settled at `now`.
    fn state<'a>(
        &self,
        users: &'a mut HashMap<String, UserState>,
        key: &str,
        now: u64,
    ) -> Result<&'a mut UserState, LedgerError> {
        if !users.contains_key(key) {
            let record = match self.ledger.load(key)? {
                // A record we cannot read starts afresh rather than blocking the user for good.
                Some(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                    warn!(user = %escape(key), error = %e, "unreadable sending counters; starting afresh");
                    Record::default()
                }),
                None => Record::default(),
            };
            users.insert(
                key.to_string(),
                UserState {
                    record,
                    messages: 0,
                    new: 0,
                },
            );
        }
        let state = users.get_mut(key).expect("inserted above");
        if state.record.settle(now) {
            // Saved at once: a restart before the next message must not find these counts
            // in the future again and hold them for another window.
            self.save_soon(key, &state.record);
        }
        Ok(state)
    }

    /// MAIL FROM of an authenticated user: reserves one message, or says which limit
    /// refuses it (logged, counted, and noticed to the postmaster once a day).
    ///
    /// # Errors
    /// The [`Limit`] that refuses the message.
    pub fn reserve_message(
        self: &Arc<Self>,
        config: &Config,
        user: &Address,
    ) -> Result<MessageSlot, Limit> {
        let caps = config.limits.sending.caps(user);
        let key = user.key();
        let now = self.ledger.now_ms();
        let refused = {
            let mut users = self.lock();
            match self.check_message(&mut users, &key, caps, now) {
                Ok(()) => None,
                Err((limit, count, cap)) => Some((
                    limit,
                    count,
                    cap,
                    self.notice_due(&mut users, &key, limit, now),
                )),
            }
        };
        match refused {
            None => Ok(MessageSlot {
                limiter: self.clone(),
                user: user.clone(),
                caps,
                new: Vec::new(),
                done: false,
            }),
            Some((limit, count, cap, notice)) => {
                self.refused(config, user, limit, count, cap, notice);
                Err(limit)
            }
        }
    }

    fn check_message(
        &self,
        users: &mut HashMap<String, UserState>,
        key: &str,
        caps: SendingCaps,
        now: u64,
    ) -> Result<(), (Limit, u32, u32)> {
        match self.ledger.is_held(key) {
            Ok(false) => {}
            Ok(true) => return Err((Limit::Held, 0, 0)),
            Err(e) => {
                warn!(error = %e, "MAIL refused: the sending counters cannot be read");
                return Err((Limit::Unavailable, 0, 0));
            }
        }
        let state = self.state(users, key, now).map_err(|e| {
            warn!(error = %e, "MAIL refused: the sending counters cannot be read");
            (Limit::Unavailable, 0, 0)
        })?;
        for (limit, window, cap) in [
            (Limit::Hour, &state.record.hour, caps.messages_per_hour),
            (Limit::Day, &state.record.day, caps.messages_per_day),
        ] {
            let count = window.total().saturating_add(state.messages);
            if cap > 0 && count >= cap {
                return Err((limit, count, cap));
            }
        }
        state.messages += 1;
        Ok(())
    }

    /// Whether this refusal is the first of its day for the user (then the postmaster is
    /// told); records that it was.
    fn notice_due(
        &self,
        users: &mut HashMap<String, UserState>,
        key: &str,
        limit: Limit,
        now: u64,
    ) -> bool {
        if matches!(limit, Limit::Held | Limit::Unavailable) {
            return false;
        }
        let Ok(state) = self.state(users, key, now) else {
            return false;
        };
        let today = now / 86_400_000;
        // Only today's notice counts: one dated later (the clock stepped back) does not
        // silence the notices until the clock catches up.
        if state.record.noticed_day == Some(today) {
            return false;
        }
        state.record.noticed_day = Some(today);
        self.save_soon(key, &state.record)
    }

    /// Saves `record` and makes it durable in the background (from code that cannot wait);
    /// false when it could not be saved.
    fn save_soon(&self, key: &str, record: &Record) -> bool {
        if let Err(e) = self.save(key, record) {
            warn!(user = %escape(key), error = %e, "sending counters not saved");
            return false;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let ledger = self.ledger.clone();
            runtime.spawn(async move {
                if let Err(e) = ledger.sync().await {
                    warn!(error = %e, "sending counters not made durable");
                }
            });
        }
        true
    }

    fn save(&self, key: &str, record: &Record) -> Result<(), LedgerError> {
        let bytes = serde_json::to_vec(record).map_err(|e| LedgerError(e.to_string()))?;
        self.ledger.save(key, &bytes)
    }

    /// Logs a refusal, counts it, and queues the postmaster's notice when `notice`.
    fn refused(
        &self,
        config: &Config,
        user: &Address,
        limit: Limit,
        count: u32,
        cap: u32,
        notice: bool,
    ) {
        METRICS.sending_refused(limit.name());
        warn!(
            user = %escape(&user.to_string()),
            limit = limit.name(),
            count,
            cap,
            "sending refused"
        );
        if notice {
            self.notify(config, user, limit, count, cap);
        }
    }

    /// Queues a note to `postmaster@` the first local domain (the hostname when there is
    /// none) saying which account hit which limit.
    fn notify(&self, config: &Config, user: &Address, limit: Limit, count: u32, cap: u32) {
        let (Some(queue), Ok(runtime)) =
            (self.notices.clone(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let domain = config.local_domains.first().unwrap_or(&config.hostname);
        let Ok(to) = Address::parse(&format!("postmaster@{domain}")) else {
            return;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let id = MessageId::generate(now.as_millis() as u64);
        let body = notice_text(config, &id, &to, user, limit, count, cap, now.as_secs());
        let envelope = Envelope::generated(
            id.clone(),
            vec![to],
            config.hostname.as_str(),
            now.as_secs(),
            body.len(),
        );
        let who = escape(&user.to_string()).to_string();
        runtime.spawn(async move {
            match queue.enqueue(envelope, body).await {
                Ok(()) => info!(msg = %id, user = %who, limit = limit.name(), "sending limit notice queued"),
                Err(e) => warn!(user = %who, error = %e, "sending limit notice not queued"),
            }
        });
    }

    /// Holds or releases `user` at once: a held user's MAIL FROM gets `450 4.7.1`.
    ///
    /// # Errors
    /// [`LedgerError`] when the hold cannot be stored.
    pub async fn set_held(&self, user: &Address, held: bool) -> Result<(), LedgerError> {
        self.ledger.set_held(&user.key(), held)?;
        self.ledger.sync().await
    }

    /// The user's counts and caps now.
    ///
    /// # Errors
    /// [`LedgerError`] when the counters cannot be read.
    pub fn usage(&self, config: &Config, user: &Address) -> Result<Usage, LedgerError> {
        let key = user.key();
        let now = self.ledger.now_ms();
        let held = self.ledger.is_held(&key)?;
        let mut users = self.lock();
        let s = self.state(&mut users, &key, now)?;
        Ok(Usage {
            counts: [
                s.record.hour.total(),
                s.record.day.total(),
                s.record.new.total(),
            ],
            caps: config.limits.sending.caps(user),
            known: s.record.known.len(),
            held,
        })
    }
}

/// The postmaster's notice: a short plain-text message.
#[allow(clippy::too_many_arguments)]
fn notice_text(
    config: &Config,
    id: &MessageId,
    to: &Address,
    user: &Address,
    limit: Limit,
    count: u32,
    cap: u32,
    now_secs: u64,
) -> Vec<u8> {
    // The user's address is ours to print: it passed AUTH and `Address::parse`.
    format!(
        "From: Mail Delivery System <MAILER-DAEMON@{host}>\r\n\
         To: <{to}>\r\n\
         Subject: Sending limit reached by {user}\r\n\
         Date: {date}\r\n\
         Message-ID: <{id}@{host}>\r\n\
         Auto-Submitted: auto-generated\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n\
         The account {user} reached its sending limit {name} ({count} of {cap}).\r\n\
         Its mail is refused with 450 4.7.1 until the window moves on.\r\n\
         \r\n\
         If its owner did not send this much mail, its password may be stolen:\r\n\
         stop it at once with `mta user hold {user}`, change the password, and see\r\n\
         `mta user show {user}`. This notice is sent at most once a day per account.\r\n",
        host = config.hostname,
        date = mta_core::date::rfc5322(now_secs),
        name = limit.name(),
    )
    .into_bytes()
}

/// A message reserved at MAIL FROM, with the new recipients reserved at RCPT. Dropped
/// without [`MessageSlot::commit`], it gives them back.
pub struct MessageSlot {
    limiter: Arc<SendingLimiter>,
    user: Address,
    caps: SendingCaps,
    /// Hashes of the new recipients reserved.
    new: Vec<u64>,
    done: bool,
}

impl std::fmt::Debug for MessageSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MessageSlot({}, {} new)", self.user, self.new.len())
    }
}

impl MessageSlot {
    /// RCPT TO: reserves the addresses of `targets` the user has not written to lately, or
    /// refuses them all with [`Limit::FirstTime`] (logged, counted, noticed).
    ///
    /// # Errors
    /// The [`Limit`] that refuses the recipient.
    pub fn admit(&mut self, config: &Config, targets: &[Address]) -> Result<(), Limit> {
        let limiter = self.limiter.clone();
        let key = self.user.key();
        let now = limiter.ledger.now_ms();
        let refused = {
            let mut users = limiter.lock();
            let Ok(state) = limiter.state(&mut users, &key, now) else {
                return Err(Limit::Unavailable);
            };
            let mut fresh: Vec<u64> = Vec::new();
            for h in targets.iter().map(hash) {
                if !state.record.knows(h) && !self.new.contains(&h) && !fresh.contains(&h) {
                    fresh.push(h);
                }
            }
            let cap = self.caps.first_time_recipients_per_day;
            let count = state.record.new.total().saturating_add(state.new);
            if cap > 0 && !fresh.is_empty() && count as usize + fresh.len() > cap as usize {
                let notice = limiter.notice_due(&mut users, &key, Limit::FirstTime, now);
                Some((count, cap, notice))
            } else {
                state.new += fresh.len() as u32;
                self.new.extend(fresh);
                None
            }
        };
        match refused {
            None => Ok(()),
            Some((count, cap, notice)) => {
                limiter.refused(config, &self.user, Limit::FirstTime, count, cap, notice);
                Err(Limit::FirstTime)
            }
        }
    }

    /// The message was queued to `recipients`: the reservation becomes a count, and the
    /// recipients are remembered. Saved in the ledger and made durable.
    pub async fn commit(mut self, recipients: &[Address]) {
        self.done = true;
        let limiter = self.limiter.clone();
        let key = self.user.key();
        let now = limiter.ledger.now_ms();
        let saved = {
            let mut users = limiter.lock();
            match limiter.state(&mut users, &key, now) {
                Ok(state) => {
                    state.messages = state.messages.saturating_sub(1);
                    state.new = state.new.saturating_sub(self.new.len() as u32);
                    let r = &mut state.record;
                    r.hour.add(HOUR, now, 1);
                    r.day.add(DAY, now, 1);
                    let mut fresh = 0;
                    for h in recipients.iter().map(hash) {
                        if !r.knows(h) {
                            fresh += 1;
                        }
                        r.remember(h, now);
                    }
                    r.new.add(DAY, now, fresh);
                    limiter.save(&key, r)
                }
                Err(e) => Err(e),
            }
        };
        let saved = match saved {
            Ok(()) => limiter.ledger.sync().await,
            Err(e) => Err(e),
        };
        if let Err(e) = saved {
            warn!(user = %escape(&self.user.to_string()), error = %e, "sending counters not saved");
        }
    }
}

impl Drop for MessageSlot {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut users = self.limiter.lock();
        if let Some(state) = users.get_mut(&self.user.key()) {
            state.messages = state.messages.saturating_sub(1);
            state.new = state.new.saturating_sub(self.new.len() as u32);
        }
    }
}

#[cfg(test)]
#[path = "sending_limits_tests.rs"]
mod tests;
