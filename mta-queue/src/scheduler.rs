//! The queue's scheduler: takes due messages with bounded concurrency, calls [`Deliver`],
//! records every recipient's outcome, and reschedules what is left with backoff. The
//! [`Queue`] type itself, and its [`Enqueue`](mta_core::seams::Enqueue) side, are in
//! [`crate::queue`].
//!
//! Two lanes, so that local delivery never waits behind remote delivery: a message with a
//! pending local recipient ([`Deliver::is_local`]) runs in the local lane
//! ([`LOCAL_CONCURRENCY`] attempts), which delivers only its local recipients and then
//! makes the message due again at once for the remote lane (`concurrency` attempts), which
//! delivers the rest. However long remote attempts take, the local lane stays free.
//!
//! `mta queue delete` cancels an attempt in progress (the delivery is dropped, nothing is
//! recorded) instead of waiting for it to end.
//!
//! A crash between "delivered" and "recorded" leaves the old schedule entry in place, so
//! the message is tried again after a restart: it may be delivered twice, never zero times.

use std::sync::Arc;
use std::time::Duration;

use mta_core::address::Address;
use mta_core::envelope::{Envelope, MessageId, RcptState, Recipient};
use mta_core::metrics::METRICS;
use mta_core::seams::{Deliver, Outcome, Verdict};
use tokio::sync::{Notify, Semaphore, watch};

use crate::queue::{Lane, Queue};
use tracing::{Instrument, error, info, info_span, warn};

use crate::bounce::{DsnKind, DsnRecipient};
use crate::clock::{self, QueueAge};
use crate::ramp::{self, Ramp};
use crate::retry;
use crate::store::{Loaded, Record, StoreError};

/// Attempts that run at once in the local lane.
pub const LOCAL_CONCURRENCY: usize = 16;

/// Due entries looked at in one pass while the remote lane is full and the local lane is
/// not, to find the messages for local delivery among those waiting for remote delivery.
const SCAN: usize = 10_000;

/// How often a held user's queued message is looked at again. A release makes them due at
/// once, so this only bounds how long a release that could not reach the scheduler waits.
const HELD_RECHECK: Duration = Duration::from_secs(60);

/// Messages loaded in one pass to find their lane (a message's lane is remembered after).
const CLASSIFY: usize = 256;

/// The slots of both lanes.
struct Slots {
    local: Arc<Semaphore>,
    remote: Arc<Semaphore>,
}

impl Queue {
    /// Runs the scheduler until `shutdown` turns true, then waits for attempts in progress
    /// to record their results. At most `concurrency` attempts run at once in the remote
    /// lane, and [`LOCAL_CONCURRENCY`] in the local lane.
    pub async fn run(
        self: Arc<Self>,
        deliver: Arc<dyn Deliver>,
        concurrency: usize,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let slots = Slots {
            local: Arc::new(Semaphore::new(LOCAL_CONCURRENCY)),
            remote: Arc::new(Semaphore::new(concurrency.max(1))),
        };
        let mut ramp = self.start_up().await;
        loop {
            if *shutdown.borrow() {
                break;
            }
            let now = clock::now_ms();
            // After a store error (a full disk) the scheduler reopens the store too, so the
            // queue recovers even when no new mail arrives.
            let ready = self.store.ensure_open().await;
            let started = ready.and_then(|()| self.start_due(now, &slots, &deliver, &mut ramp));
            let wait = match started {
                Ok(()) if ramp.active() => self.idle_time(now).min(ramp.wait()),
                Ok(()) => self.idle_time(now),
                Err(e) => {
                    error!(error = %e, "scheduler cannot read the queue; retrying in 5 s");
                    Duration::from_secs(5)
                }
            };
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
        }
        // Let attempts in progress finish and record their outcome.
        let _remote = slots.remote.acquire_many(concurrency.max(1) as u32).await;
        let _local = slots.local.acquire_many(LOCAL_CONCURRENCY as u32).await;
    }

    /// Start-up: every message keeps its due time ([`crate::ramp`]), except one due
    /// further ahead than the longest retry delay allows, which a wall clock stepped back
    /// while the server was stopped would leave waiting: it is due after `retry_max`.
    async fn start_up(&self) -> Ramp {
        let now = clock::now_ms();
        let max = self.settings.retry_max.as_millis() as u64;
        // The retry delay adds up to 10 % jitter.
        let latest = now.saturating_add(max).saturating_add(max / 10);
        match self
            .store
            .reschedule_after(latest, now.saturating_add(max))
            .await
        {
            Ok(0) => {}
            Ok(n) => warn!(
                messages = n,
                "start-up: messages due later than queue.retry_max (the clock went back?) are due after it"
            ),
            Err(e) => error!(error = %e, "start-up: cannot read the schedule"),
        }
        let mut ramp = Ramp::new(now);
        ramp.observe(self.store.next_due_ms().ok().flatten());
        if ramp.active() {
            info!(
                burst = ramp::BURST,
                per_second = ramp::PER_SECOND,
                "start-up: overdue messages start gradually"
            );
        }
        ramp
    }

    /// The due entries to look at in this pass, at most `limit` of each kind: those overdue
    /// at start-up as far as the ramp allows, and those due since.
    fn due_entries(
        &self,
        now: u64,
        limit: usize,
        ramp: &mut Ramp,
    ) -> Result<Vec<(u64, MessageId)>, StoreError> {
        if !ramp.active() {
            return self.store.due(now, limit);
        }
        ramp.observe(self.store.next_due_ms()?);
        if !ramp.active() {
            return self.store.due(now, limit);
        }
        // Entries in flight keep their place in the schedule until their attempt ends.
        let allowed = usize::try_from(ramp.allowance(now)).unwrap_or(usize::MAX);
        let overdue = match allowed {
            0 => Vec::new(),
            n => self.store.due(
                ramp.start_ms(),
                n.min(limit).saturating_add(self.inflight_count()),
            )?,
        };
        let mut entries = overdue;
        entries.extend(self.store.due_after(ramp.start_ms(), now, limit)?);
        Ok(entries)
    }

    fn start_due(
        self: &Arc<Self>,
        now: u64,
        slots: &Slots,
        deliver: &Arc<dyn Deliver>,
        ramp: &mut Ramp,
    ) -> Result<(), StoreError> {
        let (local, remote) = (
            slots.local.available_permits(),
            slots.remote.available_permits(),
        );
        if local == 0 && remote == 0 {
            return Ok(());
        }
        // With a full remote lane, the local messages may be far down the schedule.
        let limit = match remote {
            0 => SCAN,
            _ => local + remote + self.inflight_count(),
        };
        let mut classified = 0;
        for (due_ms, id) in self.due_entries(now, limit.max(1), ramp)? {
            if slots.local.available_permits() == 0 && slots.remote.available_permits() == 0 {
                break;
            }
            if self.inflight_contains(&id) {
                continue;
            }
            let lane = match self.remembered_lane(&id) {
                Some(lane) => lane,
                None if classified < CLASSIFY => {
                    classified += 1;
                    self.classify(&id, deliver.as_ref())
                }
                None => continue,
            };
            let lane_slots = match lane {
                Lane::Local => &slots.local,
                Lane::Remote => &slots.remote,
            };
            if due_ms <= ramp.start_ms() && ramp.active() && ramp.allowance(now) == 0 {
                continue;
            }
            let Ok(permit) = lane_slots.clone().try_acquire_owned() else {
                continue;
            };
            ramp.started(due_ms);
            let cancel = self.hold_for_attempt(&id);
            let queue = self.clone();
            let deliver = deliver.clone();
            let span = info_span!("msg", id = %id);
            tokio::spawn(
                async move {
                    let ended = queue
                        .attempt(deliver.as_ref(), due_ms, &id, lane, &cancel)
                        .await;
                    match ended {
                        Ended::Recorded => queue.inflight_set(&id, false),
                        // Straight to the operator who cancelled it, before the scheduler
                        // could start the message again.
                        Ended::Cancelled => queue.hand_over(&id),
                    }
                    drop(permit);
                    queue.wake.notify_one();
                }
                .instrument(span),
            );
        }
        Ok(())
    }

    /// The lane of a message not seen yet: local when a local recipient is pending. One
    /// that cannot be loaded goes to the remote lane, whose attempt reports or removes it.
    fn classify(&self, id: &MessageId, deliver: &dyn Deliver) -> Lane {
        let lane = match self.store.load(id) {
            Ok(Some((record, _))) => lane_of(&record.envelope, deliver),
            Ok(None) | Err(_) => return Lane::Remote,
        };
        self.remember_lane(id, Some(lane));
        lane
    }

    /// How long to sleep when nothing else wakes us: until the next due message, at most a
    /// minute; one second when the due ones are all in flight (their end wakes us anyway).
    fn idle_time(&self, now: u64) -> Duration {
        match self.store.next_due_ms() {
            Ok(Some(due)) if due > now => {
                Duration::from_millis(due - now).min(Duration::from_secs(60))
            }
            Ok(Some(_)) => Duration::from_secs(1),
            Ok(None) | Err(_) => Duration::from_secs(60),
        }
    }

    /// One delivery attempt for the pending recipients of one message that `lane` covers;
    /// returns early, recording nothing, when `cancel` is notified during delivery.
    async fn attempt(
        &self,
        deliver: &dyn Deliver,
        due_ms: u64,
        id: &MessageId,
        lane: Lane,
        cancel: &Notify,
    ) -> Ended {
        let Some((mut record, body)) = self.load_due(due_ms, id).await else {
            return Ended::Recorded;
        };
        if self.held(&mut record, due_ms).await {
            return Ended::Recorded;
        }
        let pending: Vec<Address> = record
            .envelope
            .recipients
            .iter()
            .filter(|r| r.state == RcptState::Pending)
            .filter(|r| lane == Lane::Remote || deliver.is_local(&r.address))
            .map(|r| r.address.clone())
            .collect();
        let outcomes = if pending.is_empty() {
            Vec::new()
        } else {
            tokio::select! {
                outcomes = deliver.deliver(&record.envelope, &body, &pending) => outcomes,
                () = cancel.notified() => {
                    info!("attempt cancelled: the message is being deleted");
                    return Ended::Cancelled;
                }
            }
        };
        let clock = clock::reading();
        let now = clock.now_ms;
        if record.age.run == 0 {
            // Queued before ages were kept: its age by the wall clock, once.
            record.age = legacy_age(&record.envelope, clock);
        }
        let age = record.age.update(clock);
        let before: Vec<RcptState> = record
            .envelope
            .recipients
            .iter()
            .map(|r| r.state.clone())
            .collect();
        apply_outcomes(&mut record.envelope, &pending, outcomes);
        expire(&mut record.envelope, age, self.settings.max_lifetime);
        self.notify_sender(&mut record.envelope, &before, &body, age)
            .await;
        let finished = record.envelope.is_finished();
        let (attempts, wait) = self.schedule_next(&mut record, now);
        self.remember_lane(id, next_lane(&mut record, deliver, lane, finished, now));
        let recorded = if rides_on_next_round(&record.envelope, &before) {
            self.store
                .update_with_next_round(&record, due_ms, finished)
                .await
        } else {
            self.store.update(&record, due_ms, finished).await
        };
        match recorded {
            Ok(()) if finished => info!("done, removed from queue"),
            Ok(()) => {
                info!(attempt = attempts, retry_in = ?Duration::from_secs(wait.as_secs()), "deferred")
            }
            Err(e) => {
                error!(error = %e, "cannot record delivery result; the attempt will be repeated")
            }
        }
        Ended::Recorded
    }

    /// Whether the message's user is held (`mta user hold`): then it is not tried, only
    /// looked at again in [`HELD_RECHECK`] (or at once when the user is released), with no
    /// attempt counted.
    async fn held(&self, record: &mut Record, due_ms: u64) -> bool {
        let held = record
            .envelope
            .origin
            .auth_user
            .as_deref()
            .is_some_and(|user| self.store.is_user_held(user));
        if !held {
            return false;
        }
        record.next_attempt_ms = clock::now_ms() + HELD_RECHECK.as_millis() as u64;
        match self.store.update(record, due_ms, false).await {
            Ok(()) => info!("held: its user is held, not delivered"),
            Err(e) => {
                error!(error = %e, "cannot record the hold; the message will be looked at again")
            }
        }
        true
    }

    /// The record and body of a message found due; `None` when it cannot be loaded, or is
    /// gone (deleted or finished since it was found due): then its stale schedule entry is
    /// dropped, or it would be found due again on every pass.
    async fn load_due(&self, due_ms: u64, id: &MessageId) -> Option<Loaded> {
        match self.store.load(id) {
            Ok(Some(loaded)) => Some(loaded),
            Ok(None) => {
                if let Err(e) = self.store.unschedule(due_ms, id).await {
                    error!(error = %e, "cannot remove a stale schedule entry");
                }
                None
            }
            Err(e) => {
                error!(error = %e, "cannot load queued message");
                None
            }
        }
    }

    /// Sets the record's next attempt by the retry schedule of its most-tried pending
    /// recipient; that count of attempts and the wait.
    fn schedule_next(&self, record: &mut Record, now: u64) -> (u32, Duration) {
        let attempts = record
            .envelope
            .recipients
            .iter()
            .filter(|r| r.state == RcptState::Pending)
            .map(|r| r.attempts)
            .max()
            .unwrap_or(0);
        let wait = retry::delay(
            attempts,
            self.settings.retry_first,
            self.settings.retry_max,
            rand::random::<f64>(),
        );
        record.next_attempt_ms = now + wait.as_millis() as u64;
        (attempts, wait)
    }
}

/// Whether an attempt's result may be recorded without a flush of its own
/// ([`crate::store::Store::update_with_next_round`]): when it finished the message and every recipient it
/// changed was delivered. A crash before the next round then only delivers them again. A
/// failure (and so a bounce), or a recipient left pending (a new due time), is flushed
/// before the attempt counts as recorded.
fn rides_on_next_round(envelope: &Envelope, before: &[RcptState]) -> bool {
    envelope.is_finished()
        && envelope.recipients.len() == before.len()
        && envelope
            .recipients
            .iter()
            .zip(before)
            .all(|(r, was)| r.state == *was || r.state == RcptState::Delivered)
}

/// The lane of the record's next attempt (`None` when it is finished). The local lane tried
/// only the local recipients: the others are due now (the record's next attempt is set to
/// `now`), in the remote lane; after that, lanes follow the pending recipients again.
fn next_lane(
    record: &mut Record,
    deliver: &dyn Deliver,
    lane: Lane,
    finished: bool,
    now: u64,
) -> Option<Lane> {
    let untried_remote = lane == Lane::Local && !lane_remote_only(&record.envelope, deliver);
    match (finished, untried_remote) {
        (true, _) => None,
        (false, true) => {
            record.next_attempt_ms = now;
            Some(Lane::Remote)
        }
        (false, false) => Some(lane_of(&record.envelope, deliver)),
    }
}

impl Queue {
    /// Tells the sender what became of their message: one "failed" DSN for the recipients
    /// that failed in this attempt, and once, after `delay_warning`, a "delayed" DSN for
    /// those still pending; nothing when the envelope says its sender is unverified
    /// ([`Envelope::may_bounce`]), only a log line and a count. The DSN is queued before the attempt's result is recorded, so a
    /// crash in between may send it twice, never zero times.
    async fn notify_sender(
        &self,
        envelope: &mut Envelope,
        before: &[RcptState],
        body: &[u8],
        age: Duration,
    ) {
        if !envelope.may_bounce() {
            // Mail from another server whose sender nothing showed to be real: a DSN would
            // go to whoever it pretended to be (backscatter).
            let failed = envelope
                .recipients
                .iter()
                .zip(before)
                .filter(|(r, was)| **was == RcptState::Pending && r.state == RcptState::Failed)
                .count();
            if failed > 0 && envelope.sender.address().is_some() {
                info!(
                    failed,
                    "bounce not sent: nothing shows the sender is real (no SPF or DKIM pass)"
                );
                METRICS.dsn_dropped();
            }
            let delivered = success_wanted(envelope, before).count();
            if delivered > 0 && envelope.sender.address().is_some() {
                info!(
                    delivered,
                    "success notice not sent: nothing shows the sender is real (no SPF or DKIM pass)"
                );
                METRICS.dsn_dropped();
            }
            return;
        }
        let failed: Vec<DsnRecipient> = envelope
            .recipients
            .iter()
            .zip(before)
            .filter(|(r, was)| **was == RcptState::Pending && r.state == RcptState::Failed)
            .filter(|(r, _)| r.dsn.wants_failure())
            .map(|(r, _)| DsnRecipient::of(r, DsnKind::Failed))
            .collect();
        if !failed.is_empty()
            && let Err(e) = self
                .send_dsn(DsnKind::Failed, envelope, &failed, body)
                .await
        {
            error!(error = %e, "could not queue the bounce");
        }
        self.notify_success(envelope, before, body).await;
        if envelope.delay_warned || age < self.settings.delay_warning {
            return;
        }
        let delayed: Vec<DsnRecipient> = envelope
            .recipients
            .iter()
            .filter(|r| r.state == RcptState::Pending && r.dsn.wants_delay())
            .map(|r| DsnRecipient::of(r, DsnKind::Delayed))
            .collect();
        if delayed.is_empty() {
            return;
        }
        match self
            .send_dsn(DsnKind::Delayed, envelope, &delayed, body)
            .await
        {
            Ok(_) => envelope.delay_warned = true,
            Err(e) => error!(error = %e, "could not queue the delay notice; will try again"),
        }
    }
}

impl Queue {
    /// RFC 3461 `NOTIFY=SUCCESS`: one notice for the recipients delivered in this attempt
    /// that asked for it (`Action: delivered` for local delivery), and one for those handed
    /// to a next hop that does not offer DSN (`Action: relayed`). A next hop that offers
    /// DSN got the request with the message ([`Outcome::dsn_passed`]) and answers it itself.
    async fn notify_success(&self, envelope: &Envelope, before: &[RcptState], body: &[u8]) {
        let mut delivered = Vec::new();
        let mut relayed = Vec::new();
        for (r, outcome) in success_wanted(envelope, before) {
            match outcome.remote.as_ref().is_some_and(|at| at.host.is_some()) {
                true => relayed.push(DsnRecipient::of(r, DsnKind::Relayed)),
                false => delivered.push(DsnRecipient::of(r, DsnKind::Delivered)),
            }
        }
        for (kind, rcpts) in [(DsnKind::Delivered, delivered), (DsnKind::Relayed, relayed)] {
            if !rcpts.is_empty()
                && let Err(e) = self.send_dsn(kind, envelope, &rcpts, body).await
            {
                error!(error = %e, "could not queue the success notice");
            }
        }
    }
}

/// The recipients delivered in this attempt (pending `before` it) that asked for a success
/// notice we must send: not those whose next hop took the request on (`dsn_passed`).
fn success_wanted<'a>(
    envelope: &'a Envelope,
    before: &'a [RcptState],
) -> impl Iterator<Item = (&'a Recipient, &'a Outcome)> + 'a {
    envelope
        .recipients
        .iter()
        .zip(before)
        .filter(|(r, was)| **was == RcptState::Pending && r.state == RcptState::Delivered)
        .filter_map(|(r, _)| Some(r).zip(r.last_result.as_ref()))
        .filter(|(r, outcome)| r.dsn.wants_success() && !outcome.dsn_passed)
}

/// How an attempt ended.
enum Ended {
    /// Its result is recorded (or there was nothing to record).
    Recorded,
    /// Cancelled during delivery; nothing recorded.
    Cancelled,
}

/// Local when a local recipient is pending.
fn lane_of(envelope: &Envelope, deliver: &dyn Deliver) -> Lane {
    let local = envelope
        .recipients
        .iter()
        .any(|r| r.state == RcptState::Pending && deliver.is_local(&r.address));
    match local {
        true => Lane::Local,
        false => Lane::Remote,
    }
}

/// True when no remote recipient is pending.
fn lane_remote_only(envelope: &Envelope, deliver: &dyn Deliver) -> bool {
    !envelope
        .recipients
        .iter()
        .any(|r| r.state == RcptState::Pending && !deliver.is_local(&r.address))
}

/// Records one attempt's outcomes on the envelope (one outcome per pending recipient, in
/// order). A `Deliver` that returns the wrong number of outcomes defers them all.
fn apply_outcomes(envelope: &mut Envelope, pending: &[Address], mut outcomes: Vec<Outcome>) {
    if outcomes.len() != pending.len() {
        error!(
            expected = pending.len(),
            got = outcomes.len(),
            "delivery returned the wrong number of results; deferring all"
        );
        let mismatch = Outcome::new(Verdict::Deferred, "internal error: result count mismatch");
        outcomes = vec![mismatch; pending.len()];
    }
    for (address, outcome) in pending.iter().zip(outcomes) {
        let Some(rcpt) = envelope
            .recipients
            .iter_mut()
            .find(|r| r.state == RcptState::Pending && &r.address == address)
        else {
            continue;
        };
        rcpt.attempts += 1;
        match outcome.verdict {
            Verdict::Delivered => {
                info!(rcpt = %address, result = %outcome, "delivered");
                rcpt.state = RcptState::Delivered;
            }
            Verdict::Deferred => {
                warn!(rcpt = %address, attempt = rcpt.attempts, reason = %outcome, "recipient deferred");
            }
            Verdict::Failed => {
                warn!(rcpt = %address, reason = %outcome, "recipient failed permanently");
                rcpt.state = RcptState::Failed;
            }
        }
        METRICS.recipient(outcome.verdict.name());
        rcpt.last_result = Some(outcome);
    }
}

/// The age of a record written before ages were kept: by the wall clock since it was
/// received, from which its stored age starts.
fn legacy_age(envelope: &Envelope, clock: clock::Reading) -> QueueAge {
    let received_ms = envelope.received_at.saturating_mul(1000);
    QueueAge {
        queued_ms: clock::wall_ms().saturating_sub(received_ms),
        at_ms: clock.now_ms,
        run: clock.run,
    }
}

/// How long `record`'s message has been in the queue, now.
pub fn time_in_queue(record: &Record) -> Duration {
    let clock = clock::reading();
    if record.age.run == 0 {
        legacy_age(&record.envelope, clock).at(clock)
    } else {
        record.age.at(clock)
    }
}

/// Fails every pending recipient of a message that has been in the queue (`age`) longer
/// than `lifetime`.
fn expire(envelope: &mut Envelope, age: Duration, lifetime: Duration) {
    if age <= lifetime {
        return;
    }
    for rcpt in envelope
        .recipients
        .iter_mut()
        .filter(|r| r.state == RcptState::Pending)
    {
        warn!(rcpt = %rcpt.address, "recipient expired in the queue");
        METRICS.recipient("expired");
        rcpt.state = RcptState::Failed;
        let last = rcpt.last_result.take();
        let last_answer = last.as_ref().map(Outcome::answer).unwrap_or_default();
        let gave_up = Outcome::failed(
            "5.4.7",
            format!(
                "gave up after {} in the queue; last result: {last_answer}",
                human(lifetime)
            ),
        );
        // The host that gave the last answer stays named (`Remote-MTA` of the DSN).
        rcpt.last_result = Some(match last.and_then(|o| o.remote) {
            Some(remote) => gave_up.with_remote(remote),
            None => gave_up,
        });
    }
}

/// `5 days`, `4 hours`, `90 seconds`: a lifetime as people say it.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s >= 86400 && s % 86400 == 0 => format!("{} days", s / 86400),
        s if s >= 3600 && s % 3600 == 0 => format!("{} hours", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{} minutes", s / 60),
        s => format!("{s} seconds"),
    }
}

#[cfg(test)]
#[path = "scheduler_tests.rs"]
mod tests;
