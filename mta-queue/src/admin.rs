//! What an operator does to the queue (`mta queue`): list, show one message, make one or
//! all due now, delete, or return to the sender with a DSN. Built on the public
//! [`Store`](crate::Store) API; the CLI reaches these through the control socket of a
//! running server or on a store it opened itself.
//!
//! Race with delivery: retry and bounce first [`claim`](crate::Queue::claim) the message,
//! which waits for a delivery attempt in progress to record its result and keeps the
//! scheduler off the message until the action is done; delete cancels the attempt instead
//! ([`claim_cancelling`](crate::Queue::claim_cancelling)). `flush_all` only moves messages
//! scheduled later than now, which no attempt is working on.

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use mta_core::envelope::{MessageId, RcptState};

use crate::bounce::{DsnKind, DsnRecipient, header_section};
use crate::clock;
use crate::clock::now_ms;
use crate::store::{Record, StoreError};

/// The reason recorded for, and sent about, recipients the operator returned to sender.
pub const OPERATOR_BOUNCE: &str = "5.0.0 returned to sender by the operator";

/// How many lines of the message's header section [`Queue::show`](crate::Queue::show)
/// returns.
pub const HEADER_PREVIEW_LINES: usize = 20;

/// A message due within this many milliseconds counts as due now for
/// [`Queue::retry_now`](crate::Queue::retry_now).
const ALREADY_DUE_MS: u64 = 1000;

/// The longest header line [`Queue::show`](crate::Queue::show) returns, in characters.
const HEADER_PREVIEW_WIDTH: usize = 200;

/// One queued message as `mta queue show` presents it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detail {
    /// The stored record: envelope, recipients' states, next attempt.
    pub record: Record,
    /// The stored message size in octets (what will be delivered, our `Received` included).
    pub body_size: u64,
    /// The first [`HEADER_PREVIEW_LINES`] lines of the header section, decoded lossily,
    /// each cut to 200 characters. Untrusted text: escape it before printing to a terminal.
    pub headers: Vec<String>,
}

/// A record as `mta queue` shows it: its next attempt on the wall clock rather than the
/// queue clock, so that it reads right after the wall clock was stepped.
fn for_people(mut record: Record) -> Record {
    record.next_attempt_ms = clock::to_wall_ms(record.next_attempt_ms);
    record
}

impl crate::Queue {
    /// Every readable record, oldest first (ids sort by arrival), and a description of each
    /// record that does not decode. Due times are on the wall clock, for people.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read (given up after an error, a read
    /// failure): never an empty or partial list in its place.
    pub fn list(&self) -> Result<(Vec<Record>, Vec<String>), StoreError> {
        let mut records = Vec::new();
        let mut errors = Vec::new();
        for item in self.store().records() {
            match item {
                Ok(record) => records.push(for_people(record)),
                Err(e @ StoreError::Corrupt { .. }) => errors.push(e.to_string()),
                Err(e) => return Err(e),
            }
        }
        Ok((records, errors))
    }

    /// [`Queue::list`] one record at a time, as `for_each` takes them: `Ok(record)` with its
    /// due time on the wall clock, or `Err(text)` for a record that does not decode.
    /// `for_each` returns false to stop early (the reader went away).
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read: the records given so far are then not
    /// the whole queue.
    pub fn list_each(
        &self,
        mut for_each: impl FnMut(Result<Record, String>) -> bool,
    ) -> Result<(), StoreError> {
        for item in self.store().records_iter() {
            let more = match item {
                Ok(record) => for_each(Ok(for_people(record))),
                Err(e @ StoreError::Corrupt { .. }) => for_each(Err(e.to_string())),
                Err(e) => return Err(e),
            };
            if !more {
                break;
            }
        }
        Ok(())
    }

    /// One message: its record, body size and first header lines. `Ok(None)` when there is
    /// no such message.
    ///
    /// # Errors
    /// [`StoreError`] on a read failure or a corrupt record (which is then set aside).
    pub fn show(&self, id: &MessageId) -> Result<Option<Detail>, StoreError> {
        let Some((record, body)) = self.store().load(id)? else {
            return Ok(None);
        };
        let headers = header_section(&body)
            .split(|&b| b == b'\n')
            .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
            .filter(|line| !line.is_empty())
            .take(HEADER_PREVIEW_LINES)
            .map(|line| {
                String::from_utf8_lossy(line)
                    .chars()
                    .take(HEADER_PREVIEW_WIDTH)
                    .collect()
            })
            .collect();
        Ok(Some(Detail {
            record: for_people(record),
            body_size: body.len() as u64,
            headers,
        }))
    }

    /// Makes one message due now and wakes the scheduler. A message already due (within a
    /// second) is left as it is. `Ok(false)` when there is no such message.
    ///
    /// # Errors
    /// [`StoreError`] on a read, write or flush failure.
    pub async fn retry_now(&self, id: &MessageId) -> Result<bool, StoreError> {
        let Some(_claim) = self.claim(id).await else {
            return Err(StoreError::Busy(id.to_string()));
        };
        let Some((mut record, _)) = self.store().load(id)? else {
            return Ok(false);
        };
        let now = now_ms();
        if record.next_attempt_ms > now + ALREADY_DUE_MS {
            let old_due = record.next_attempt_ms;
            record.next_attempt_ms = now;
            self.store().update(&record, old_due, false).await?;
        }
        info!(msg = %id, "made due now by operator");
        self.wake();
        Ok(true)
    }

    /// Makes every message that is waiting due now and wakes the scheduler. Returns how
    /// many were waiting (messages already due are not counted).
    ///
    /// # Errors
    /// [`StoreError`] on a read, write or flush failure.
    pub async fn flush_all(&self) -> Result<usize, StoreError> {
        let moved = self.store().reschedule_all(now_ms()).await?;
        info!(messages = moved, "queue flushed by operator");
        self.wake();
        Ok(moved)
    }

    /// Removes a message without delivering or bouncing it. `Ok(false)` when there is no
    /// such message.
    ///
    /// # Errors
    /// [`StoreError`] on a read, write or flush failure.
    pub async fn delete(&self, id: &MessageId) -> Result<bool, StoreError> {
        // An attempt in progress is cancelled, not waited for: it may be stuck on a host
        // that never answers, and its result no longer matters.
        let Some(_claim) = self.claim_cancelling(id).await else {
            return Err(StoreError::Busy(id.to_string()));
        };
        let Some((record, _)) = self.store().load(id)? else {
            return Ok(false);
        };
        self.store()
            .update(&record, record.next_attempt_ms, true)
            .await?;
        self.forget(id);
        warn!(msg = %id, sender = %record.envelope.sender, "deleted by operator");
        Ok(true)
    }

    /// Fails every pending recipient with [`OPERATOR_BOUNCE`] (and the last result, if
    /// any), sends the sender one [`DsnKind::Failed`] DSN about them (none when the sender
    /// is `<>`, nothing was pending, or nothing showed the sender to be real:
    /// [`mta_core::envelope::Envelope::may_bounce`]), and removes the message, since no recipient is
    /// pending any more. `Ok(false)` when there is no such message.
    ///
    /// The DSN is stored before the message is removed: if removing fails, the message
    /// stays and a second bounce would send a second DSN, but a bounce is never lost.
    ///
    /// # Errors
    /// [`StoreError`] on a read, write or flush failure.
    pub async fn bounce_now(&self, id: &MessageId) -> Result<bool, StoreError> {
        let Some(_claim) = self.claim(id).await else {
            return Err(StoreError::Busy(id.to_string()));
        };
        let Some((record, body)) = self.store().load(id)? else {
            return Ok(false);
        };
        // The message is removed below, so the recipients' failed state lives on only in
        // the DSN and the log.
        let rcpts: Vec<DsnRecipient> = record
            .envelope
            .recipients
            .iter()
            .filter(|r| r.state == RcptState::Pending)
            .map(|r| DsnRecipient {
                address: r.address.clone(),
                status: "5.0.0".into(),
                diagnostic: match &r.last_result {
                    Some(last) => format!("{OPERATOR_BOUNCE}; last result: {last}"),
                    None => OPERATOR_BOUNCE.to_string(),
                },
                remote_mta: None,
            })
            .collect();
        // As after a delivery failure: no DSN to a sender nothing showed to be real
        // (backscatter), and only for the recipients whose NOTIFY asks for failures.
        let notified: Vec<DsnRecipient> = rcpts
            .iter()
            .filter(|d| {
                record
                    .envelope
                    .recipients
                    .iter()
                    .find(|r| r.address == d.address)
                    .is_none_or(|r| r.dsn.wants_failure())
            })
            .cloned()
            .collect();
        let dsn = if record.envelope.may_bounce() {
            self.send_dsn(DsnKind::Failed, &record.envelope, &notified, &body)
                .await?
        } else {
            None
        };
        if let Some((current, _)) = self.store().load(id)? {
            self.store()
                .update(&current, current.next_attempt_ms, true)
                .await?;
        }
        // Each recipient failed, as one that failed on delivery would have.
        for _ in &rcpts {
            mta_core::metrics::METRICS.recipient("failed");
        }
        info!(
            msg = %id,
            rcpts = rcpts.len(),
            dsn = %dsn.as_ref().map_or("none", MessageId::as_str),
            reason = "returned to sender by the operator",
            "bounced"
        );
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use mta_core::address::{Address, Domain, ReversePath};
    use mta_core::envelope::{Envelope, ListenerKind, Origin, Recipient, Vouched};
    use mta_core::outcome::{Outcome, Verdict};

    use super::*;
    use crate::{Queue, QueueSettings};

    const FAR: u64 = u64::MAX / 4;
    const BODY: &[u8] = b"From: <a@local.test>\r\nSubject: hi\r\n\tthere\r\n\r\nbody\r\n";

    fn queue(dir: &tempfile::TempDir) -> Arc<Queue> {
        Queue::open(
            dir.path(),
            QueueSettings::new(Domain::parse("mx.test").expect("domain")),
        )
        .expect("open queue")
    }

    fn addr(a: &str) -> Address {
        Address::parse(a).expect("test address")
    }

    /// Stores a message from `sender` to `rcpts` (`!` prefix: already delivered), due
    /// `due`.
    async fn put(queue: &Queue, id: &str, sender: ReversePath, rcpts: &[&str], due: u64) {
        let recipients = rcpts
            .iter()
            .map(|a| match a.strip_prefix('!') {
                Some(a) => Recipient {
                    state: RcptState::Delivered,
                    ..Recipient::pending(addr(a))
                },
                None => Recipient {
                    attempts: 2,
                    last_result: Some(Outcome::from_text(Verdict::Deferred, "451 4.3.0 try later")),
                    ..Recipient::pending(addr(a))
                },
            })
            .collect();
        let record = Record {
            envelope: Envelope {
                id: MessageId::parse(id).expect("id"),
                sender,
                recipients,
                received_at: 1,
                size: BODY.len() as u64,
                origin: Origin {
                    listener: ListenerKind::Submission,
                    peer: "127.0.0.1:1".into(),
                    helo: "client.test".into(),
                    auth_user: Some("a@local.test".into()),
                    tls: Some("TLSv1.3".into()),
                },
                delay_warned: false,
                require_tls: false,
                vouched: Vouched::User,
                dsn: Default::default(),
            },
            next_attempt_ms: due,
            age: Default::default(),
        };
        queue.store().insert(&record, BODY).await.expect("insert");
    }

    fn from_a() -> ReversePath {
        ReversePath::Address(addr("a@local.test"))
    }

    const A: &str = "00000000000100000001";
    const B: &str = "00000000000200000002";
    const MISSING: &str = "00000000000300000003";

    fn id(text: &str) -> MessageId {
        MessageId::parse(text).expect("id")
    }

    #[tokio::test]
    async fn list_and_show() {
        let dir = tempfile::tempdir().expect("temp dir");
        let q = queue(&dir);
        put(&q, B, from_a(), &["b@remote.test"], FAR).await;
        put(&q, A, from_a(), &["c@remote.test"], FAR).await;
        let (records, errors) = q.list().expect("list");
        let ids: Vec<&str> = records.iter().map(|r| r.envelope.id.as_str()).collect();
        assert_eq!(ids, [A, B], "oldest first");
        assert!(errors.is_empty());

        let detail = q.show(&id(A)).expect("read").expect("present");
        assert_eq!(detail.body_size, BODY.len() as u64);
        assert_eq!(
            detail.headers,
            ["From: <a@local.test>", "Subject: hi", "\tthere"]
        );
        assert_eq!(detail.record.envelope.recipients.len(), 1);
        assert_eq!(q.show(&id(MISSING)).expect("read"), None);
    }

    #[tokio::test]
    async fn retry_and_flush_make_messages_due() {
        let dir = tempfile::tempdir().expect("temp dir");
        let q = queue(&dir);
        put(&q, A, from_a(), &["b@remote.test"], FAR).await;
        put(&q, B, from_a(), &["b@remote.test"], FAR).await;
        let now = now_ms() + 1000;
        assert!(q.store().due(now, 10).expect("due").is_empty());

        assert!(q.retry_now(&id(A)).await.expect("retry"));
        let due = q.store().due(now, 10).expect("due");
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].1, id(A));
        let (record, _) = q.store().load(&id(A)).expect("load").expect("present");
        assert!(record.next_attempt_ms < now);
        assert!(!q.retry_now(&id(MISSING)).await.expect("retry"));

        assert_eq!(q.flush_all().await.expect("flush"), 1, "only B was waiting");
        assert_eq!(q.store().due(now_ms() + 1000, 10).expect("due").len(), 2);

        // A message that is already due is left alone (it may be in flight).
        let before = q.store().load(&id(B)).expect("load").expect("present").0;
        assert!(q.retry_now(&id(B)).await.expect("retry"));
        let after = q.store().load(&id(B)).expect("load").expect("present").0;
        assert_eq!(before, after);
    }

    #[tokio::test]
    async fn delete_removes_without_a_bounce() {
        let dir = tempfile::tempdir().expect("temp dir");
        let q = queue(&dir);
        put(&q, A, from_a(), &["b@remote.test"], FAR).await;
        assert!(q.delete(&id(A)).await.expect("delete"));
        assert!(q.store().is_empty(), "gone, and no DSN queued");
        assert!(q.store().next_due_ms().expect("schedule").is_none());
        assert!(!q.delete(&id(A)).await.expect("delete"));
    }

    /// Mail from another server that nothing showed to come from its sender: the operator's
    /// bounce fails it like a delivery failure would, and sends no DSN (backscatter).
    #[tokio::test]
    async fn bounce_of_unverified_mail_sends_no_dsn() {
        let dir = tempfile::tempdir().expect("temp dir");
        let q = queue(&dir);
        put(&q, A, from_a(), &["b@remote.test"], FAR).await;
        let (mut record, _) = q.store().load(&id(A)).expect("load").expect("present");
        record.envelope.vouched = Vouched::Unverified;
        q.store()
            .update(&record, record.next_attempt_ms, false)
            .await
            .expect("update");
        assert!(q.bounce_now(&id(A)).await.expect("bounce"));
        assert!(q.store().is_empty(), "removed, and no DSN queued");
    }

    #[tokio::test]
    async fn bounce_fails_pending_recipients_and_tells_the_sender() {
        let dir = tempfile::tempdir().expect("temp dir");
        let q = queue(&dir);
        put(
            &q,
            A,
            from_a(),
            &["b@remote.test", "!c@remote.test", "d@remote.test"],
            FAR,
        )
        .await;
        assert!(q.bounce_now(&id(A)).await.expect("bounce"));
        assert!(q.store().load(&id(A)).expect("load").is_none());

        let (records, _) = q.list().expect("list");
        assert_eq!(records.len(), 1, "the DSN");
        let dsn = &records[0].envelope;
        assert_eq!(dsn.sender, ReversePath::Null);
        assert_eq!(dsn.recipients[0].address, addr("a@local.test"));
        let (_, body) = q.store().load(&dsn.id).expect("load").expect("present");
        let text = String::from_utf8(body.to_vec()).expect("utf-8");
        let finals: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("Final-Recipient: "))
            .collect();
        assert_eq!(finals, ["rfc822; b@remote.test", "rfc822; d@remote.test"]);
        assert!(text.contains(
            "Diagnostic-Code: X-mta; 5.0.0 returned to sender by the operator; \
             last result: 451 4.3.0 try later\r\n"
        ));
        assert_eq!(text.matches("Status: 5.0.0\r\n").count(), 2);
        assert!(!q.bounce_now(&id(MISSING)).await.expect("bounce"));

        // A bounce stuck in the queue is removed without a DSN of its own.
        let dsn_id = dsn.id.clone();
        assert!(q.bounce_now(&dsn_id).await.expect("bounce"));
        assert!(q.store().is_empty());
    }

    /// RFC 3461: a recipient whose NOTIFY leaves out FAILURE is not named in the operator's
    /// bounce; when no recipient wants one, no bounce is sent.
    #[tokio::test]
    async fn bounce_follows_notify() {
        use mta_core::dsn::Notify;
        let dir = tempfile::tempdir().expect("temp dir");
        let q = queue(&dir);
        put(&q, A, from_a(), &["b@remote.test", "d@remote.test"], FAR).await;
        put(&q, B, from_a(), &["e@remote.test"], FAR).await;
        for (which, index) in [(A, 1), (B, 0)] {
            let (mut record, _) = q.store().load(&id(which)).expect("load").expect("present");
            record.envelope.recipients[index].dsn.notify = Some(Notify::parse("NEVER").unwrap());
            q.store()
                .update(&record, record.next_attempt_ms, false)
                .await
                .expect("update");
        }
        assert!(q.bounce_now(&id(A)).await.expect("bounce"));
        assert!(q.bounce_now(&id(B)).await.expect("bounce"));
        let (records, _) = q.list().expect("list");
        assert_eq!(records.len(), 1, "one DSN, for A's b only");
        let (_, body) = q
            .store()
            .load(&records[0].envelope.id)
            .expect("load")
            .expect("present");
        let text = String::from_utf8(body.to_vec()).expect("utf-8");
        let finals: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("Final-Recipient: "))
            .collect();
        assert_eq!(finals, ["rfc822; b@remote.test"]);
    }
}
