//! Unit tests of scheduler.

use super::*;
use std::sync::Mutex;

use crate::clock::now_ms;
use crate::queue::QueueSettings;
use mta_core::address::Domain;
use mta_core::address::ReversePath;
use mta_core::envelope::{ListenerKind, Origin, Recipient, Vouched};
use mta_core::seams::{BoxFuture, Enqueue};

fn envelope(rcpts: &[&str], received_at: u64) -> Envelope {
    Envelope {
        id: MessageId::generate(now_ms()),
        sender: ReversePath::Null,
        recipients: rcpts
            .iter()
            .map(|a| Recipient::pending(Address::parse(a).unwrap()))
            .collect(),
        received_at,
        size: 5,
        origin: Origin {
            listener: ListenerKind::Smtp,
            peer: "127.0.0.1:1".into(),
            helo: "c.test".into(),
            auth_user: None,
            tls: None,
        },
        delay_warned: false,
        require_tls: false,
        vouched: Vouched::SenderVerified,
        dsn: Default::default(),
    }
}

/// Delivers `a@…`, defers `b@…`, fails everything else; counts calls.
struct Scripted(Mutex<u32>);
impl Deliver for Scripted {
    fn deliver<'a>(
        &'a self,
        _e: &'a Envelope,
        _body: &'a mta_core::seams::Body,
        rcpts: &'a [Address],
    ) -> BoxFuture<'a, Vec<Outcome>> {
        *self.0.lock().unwrap() += 1;
        Box::pin(async move {
            rcpts
                .iter()
                .map(|r| match r.local_part() {
                    "a" => Outcome::from_text(Verdict::Delivered, "ok"),
                    "b" => Outcome::from_text(Verdict::Deferred, "4.0.0 later"),
                    _ => Outcome::from_text(Verdict::Failed, "5.0.0 never"),
                })
                .collect()
        })
    }
}

#[test]
fn remote_host_is_split_from_the_reply() {
    let dsn_line = |text: &str| {
        let mut r = envelope(&["a@x.test"], 0).recipients[0].clone();
        r.last_result = Some(Outcome::from_text(Verdict::Failed, text));
        let d = DsnRecipient::of(&r, DsnKind::Failed);
        (d.diagnostic, d.remote_mta, d.status)
    };
    assert_eq!(
        dsn_line("550 5.1.1 No such user (from mx1.remote.test [127.0.0.2] TLSv1.3 x)"),
        (
            "550 5.1.1 No such user".to_string(),
            Some("mx1.remote.test".to_string()),
            "5.1.1".to_string()
        )
    );
    assert_eq!(
        dsn_line("5.4.7 gave up"),
        ("5.4.7 gave up".to_string(), None, "5.4.7".to_string())
    );
}

#[test]
fn outcomes_and_expiry() {
    let mut env = envelope(&["a@x.test", "b@x.test", "c@x.test"], 0);
    let pending: Vec<Address> = env.recipients.iter().map(|r| r.address.clone()).collect();
    apply_outcomes(
        &mut env,
        &pending,
        vec![
            Outcome::from_text(Verdict::Delivered, "d"),
            Outcome::from_text(Verdict::Deferred, "t"),
            Outcome::from_text(Verdict::Failed, "f"),
        ],
    );
    let states: Vec<_> = env.recipients.iter().map(|r| r.state.clone()).collect();
    assert_eq!(
        states,
        [RcptState::Delivered, RcptState::Pending, RcptState::Failed]
    );
    assert!(env.recipients.iter().all(|r| r.attempts == 1));
    assert!(!env.is_finished());

    apply_outcomes(&mut env, &pending[1..2], vec![]);
    assert_eq!(env.recipients[1].state, RcptState::Pending);
    assert_eq!(env.recipients[1].attempts, 2);

    expire(
        &mut env,
        Duration::from_secs(3600),
        Duration::from_secs(7200),
    );
    assert_eq!(env.recipients[1].state, RcptState::Pending);
    expire(
        &mut env,
        Duration::from_secs(7201),
        Duration::from_secs(7200),
    );
    assert_eq!(env.recipients[1].state, RcptState::Failed);
    assert!(env.is_finished());
}

/// Runs the scheduler until `done` holds (bounded), then stops it.
async fn run_until(queue: &Arc<Queue>, deliver: Arc<dyn Deliver>, done: impl Fn(&Queue) -> bool) {
    let (stop, stopped) = watch::channel(false);
    let runner = tokio::spawn(queue.clone().run(deliver, 4, stopped));
    for _ in 0..250 {
        if done(queue) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), runner)
        .await
        .unwrap()
        .unwrap();
}

/// Like [`Scripted`] for the original's recipients, and keeps every DSN it is given.
struct Recording(Mutex<Vec<Vec<u8>>>);
impl Deliver for Recording {
    fn deliver<'a>(
        &'a self,
        e: &'a Envelope,
        body: &'a mta_core::seams::Body,
        rcpts: &'a [Address],
    ) -> BoxFuture<'a, Vec<Outcome>> {
        if e.sender == ReversePath::Null {
            self.0.lock().unwrap().push(body.to_vec());
            return Box::pin(async move {
                vec![Outcome::from_text(Verdict::Delivered, "ok"); rcpts.len()]
            });
        }
        Box::pin(async move {
            rcpts
                .iter()
                .map(|r| match r.local_part() {
                    "b" => Outcome::from_text(Verdict::Deferred, "451 4.0.0 later"),
                    _ => Outcome::from_text(Verdict::Failed, "550 5.1.1 no such user"),
                })
                .collect()
        })
    }
}

#[tokio::test]
async fn failures_bounce_once_and_delays_warn_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = QueueSettings::new(Domain::parse("mx.test").unwrap());
    settings.delay_warning = Duration::from_secs(60);
    let queue = Queue::open(dir.path(), settings).unwrap();
    // Two minutes in the queue, old enough for the delay notice; b is deferred, c fails.
    // Received a second ago by the wall clock: age is time in the queue, not since then.
    let mut env = envelope(&["b@x.test", "c@x.test"], clock::wall_ms() / 1000 - 1);
    env.sender = ReversePath::Address(Address::parse("sender@local.test").unwrap());
    let clock = clock::reading();
    let record = Record {
        envelope: env.clone(),
        next_attempt_ms: clock.now_ms,
        age: QueueAge {
            queued_ms: 120_000,
            ..QueueAge::new(clock)
        },
    };
    queue
        .store()
        .insert(&record, b"Subject: s\r\n\r\nbody\r\n".to_vec())
        .await
        .unwrap();
    let deliver = Arc::new(Recording(Mutex::new(Vec::new())));
    let d = deliver.clone();
    run_until(&queue, deliver.clone(), move |q| {
        q.store().len() == 1 && d.0.lock().unwrap().len() == 2
    })
    .await;

    let dsns = deliver.0.lock().unwrap().clone();
    assert_eq!(dsns.len(), 2, "one failure DSN and one delay notice");
    let text: Vec<String> = dsns
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    let failed = text
        .iter()
        .find(|t| t.contains("Action: failed"))
        .expect("a failure DSN");
    assert!(
        failed.contains("Final-Recipient: rfc822; c@x.test")
            && !failed.contains("rfc822; b@x.test")
    );
    let delayed = text
        .iter()
        .find(|t| t.contains("Action: delayed"))
        .expect("a delay notice");
    assert!(
        delayed.contains("Final-Recipient: rfc822; b@x.test")
            && !delayed.contains("rfc822; c@x.test")
    );
    let (original, _) = queue.store().load(&env.id).unwrap().unwrap();
    assert!(original.envelope.delay_warned);
    assert_eq!(original.envelope.recipients[1].state, RcptState::Failed);
}

/// Mail from another server whose sender nothing verified: its failure is recorded, but no
/// DSN goes to the (possibly forged) sender, and none counts as a delay notice either.
#[tokio::test]
async fn unverified_senders_get_no_bounce() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = QueueSettings::new(Domain::parse("mx.test").unwrap());
    settings.delay_warning = Duration::from_secs(60);
    let queue = Queue::open(dir.path(), settings).unwrap();
    let now_s = now_ms() / 1000;
    let mut env = envelope(&["b@x.test", "c@x.test"], now_s - 120);
    env.sender = ReversePath::Address(Address::parse("forged@victim.test").unwrap());
    env.vouched = Vouched::Unverified;
    queue
        .enqueue(env.clone(), b"Subject: s\r\n\r\nbody\r\n".to_vec())
        .await
        .unwrap();
    let deliver = Arc::new(Recording(Mutex::new(Vec::new())));
    let id = env.id.clone();
    run_until(&queue, deliver.clone(), move |q| {
        q.store()
            .load(&id)
            .ok()
            .flatten()
            .is_some_and(|(r, _)| r.envelope.recipients[1].state == RcptState::Failed)
    })
    .await;
    let (original, _) = queue.store().load(&env.id).unwrap().unwrap();
    assert_eq!(original.envelope.recipients[1].state, RcptState::Failed);
    assert_eq!(queue.store().len(), 1, "no DSN was queued");
    assert!(deliver.0.lock().unwrap().is_empty());
}

#[tokio::test]
async fn scheduler_delivers_defers_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(
        dir.path(),
        QueueSettings::new(Domain::parse("mx.test").unwrap()),
    )
    .unwrap();
    let now_s = now_ms() / 1000;
    let done = envelope(&["a@x.test"], now_s);
    let mixed = envelope(&["a@x.test", "b@x.test"], now_s);
    queue
        .enqueue(done.clone(), b"hello".to_vec())
        .await
        .unwrap();
    queue
        .enqueue(mixed.clone(), b"hello".to_vec())
        .await
        .unwrap();

    let deliver = Arc::new(Scripted(Mutex::new(0)));
    let (stop, stopped) = watch::channel(false);
    let runner = tokio::spawn(queue.clone().run(deliver.clone(), 4, stopped));
    for _ in 0..200 {
        if queue.store().len() == 1 && *deliver.0.lock().unwrap() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), runner)
        .await
        .unwrap()
        .unwrap();

    assert_eq!(queue.store().len(), 1, "the finished message is removed");
    let (rec, _) = queue.store().load(&mixed.id).unwrap().unwrap();
    assert_eq!(rec.envelope.recipients[0].state, RcptState::Delivered);
    assert_eq!(rec.envelope.recipients[1].state, RcptState::Pending);
    assert!(
        rec.next_attempt_ms >= now_ms() + 4 * 60 * 1000,
        "retry in about 5 min"
    );
    drop(queue);

    let queue = Queue::open(
        dir.path(),
        QueueSettings::new(Domain::parse("mx.test").unwrap()),
    )
    .unwrap();
    let (rec, body) = queue.store().load(&mixed.id).unwrap().unwrap();
    assert_eq!(rec.envelope.recipients[1].attempts, 1);
    assert_eq!(&body[..], b"hello");
}

/// Delivers `*@local.test` at once (a local domain); every other recipient hangs, like a
/// remote host that accepts the connection and never answers. Counts attempts started.
struct Stalling {
    started: std::sync::atomic::AtomicUsize,
}
impl Deliver for Stalling {
    fn deliver<'a>(
        &'a self,
        _e: &'a Envelope,
        _body: &'a mta_core::seams::Body,
        rcpts: &'a [Address],
    ) -> BoxFuture<'a, Vec<Outcome>> {
        self.started
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move {
            if rcpts.iter().any(|r| !self.is_local(r)) {
                std::future::pending::<()>().await;
            }
            vec![Outcome::from_text(Verdict::Delivered, "maildir"); rcpts.len()]
        })
    }

    fn is_local(&self, rcpt: &Address) -> bool {
        rcpt.domain().as_str() == "local.test"
    }
}

fn stalling() -> Arc<Stalling> {
    Arc::new(Stalling {
        started: Default::default(),
    })
}

#[tokio::test]
async fn local_delivery_never_waits_behind_remote_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(
        dir.path(),
        QueueSettings::new(Domain::parse("mx.test").unwrap()),
    )
    .unwrap();
    let now_s = now_ms() / 1000;
    // More stuck remote messages than the remote lane has slots, then a local one and a
    // message for both.
    for _ in 0..10 {
        let e = envelope(&["x@stuck.test"], now_s);
        queue.enqueue(e, b"hello".to_vec()).await.unwrap();
    }
    let local = envelope(&["a@local.test"], now_s);
    let mixed = envelope(&["b@local.test", "y@stuck.test"], now_s);
    queue.enqueue(local.clone(), b"hi".to_vec()).await.unwrap();
    queue.enqueue(mixed.clone(), b"hi".to_vec()).await.unwrap();
    let deliver = stalling();
    let (_stop, stopped) = watch::channel(false);
    let runner = tokio::spawn(queue.clone().run(deliver.clone(), 4, stopped));
    let delivered = |q: &Queue| {
        let local_gone = q.store().load(&local.id).unwrap().is_none();
        let mixed_local = q
            .store()
            .load(&mixed.id)
            .unwrap()
            .is_some_and(|(r, _)| r.envelope.recipients[0].state == RcptState::Delivered);
        local_gone && mixed_local
    };
    let mut done = false;
    for _ in 0..500 {
        if delivered(&queue) {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    runner.abort();
    assert!(
        done,
        "the local recipients were not delivered while remote attempts hang"
    );
}

#[tokio::test]
async fn delete_cancels_an_attempt_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(
        dir.path(),
        QueueSettings::new(Domain::parse("mx.test").unwrap()),
    )
    .unwrap();
    let stuck = envelope(&["x@stuck.test"], now_ms() / 1000);
    queue.enqueue(stuck.clone(), b"hi".to_vec()).await.unwrap();
    let deliver = stalling();
    let (_stop, stopped) = watch::channel(false);
    let runner = tokio::spawn(queue.clone().run(deliver.clone(), 4, stopped));
    for _ in 0..500 {
        if deliver.started.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(deliver.started.load(std::sync::atomic::Ordering::SeqCst), 1);
    // Well under the 30 s that a claim waits for an attempt to end.
    let deleted = tokio::time::timeout(Duration::from_secs(10), queue.delete(&stuck.id)).await;
    runner.abort();
    assert!(
        matches!(deleted, Ok(Ok(true))),
        "delete did not return while the attempt hangs: {deleted:?}"
    );
    assert!(queue.store().load(&stuck.id).unwrap().is_none());
}

/// Delivers `a*` (locally, to a next hop without DSN, or to one with DSN), defers `b*`,
/// fails the rest; keeps every notice it is given.
struct Notices(Mutex<Vec<String>>);
impl Deliver for Notices {
    fn deliver<'a>(
        &'a self,
        e: &'a Envelope,
        body: &'a mta_core::seams::Body,
        rcpts: &'a [Address],
    ) -> BoxFuture<'a, Vec<Outcome>> {
        if e.sender == ReversePath::Null {
            let text = String::from_utf8_lossy(body).into_owned();
            self.0.lock().unwrap().push(text);
            return Box::pin(async move {
                vec![Outcome::from_text(Verdict::Delivered, "ok"); rcpts.len()]
            });
        }
        let remote = |dsn_passed| Outcome {
            dsn_passed,
            ..Outcome::from_text(Verdict::Delivered, "ok")
                .with_code(250)
                .with_remote(mta_core::outcome::Remote {
                    host: Some("mx.x.test".into()),
                    at: "mx.x.test [192.0.2.1]".into(),
                })
        };
        Box::pin(async move {
            rcpts
                .iter()
                .map(|r| match r.local_part() {
                    "a1" => Outcome::from_text(Verdict::Delivered, "maildir /secret/new/1"),
                    "a2" => remote(false),
                    "a3" => remote(true),
                    l if l.starts_with('b') => {
                        Outcome::from_text(Verdict::Deferred, "451 4.0.0 later")
                    }
                    _ => Outcome::from_text(Verdict::Failed, "550 5.1.1 no such user"),
                })
                .collect()
        })
    }
}

/// RFC 3461 NOTIFY decides which notices go out: success notices for local delivery
/// (`delivered`) and for a next hop without DSN (`relayed`), none when the next hop took
/// the request, no bounce for NEVER or a NOTIFY without FAILURE, no delay notice without
/// DELAY.
#[tokio::test]
async fn notify_decides_which_notices_go_out() {
    use mta_core::dsn::{Notify, RcptDsn};
    let dir = tempfile::tempdir().unwrap();
    let mut settings = QueueSettings::new(Domain::parse("mx.test").unwrap());
    settings.delay_warning = Duration::from_secs(60);
    let queue = Queue::open(dir.path(), settings).unwrap();
    let table = [
        ("a1@x.test", Some("SUCCESS")),
        ("a2@x.test", Some("SUCCESS,FAILURE")),
        ("a3@x.test", Some("SUCCESS")),
        ("c1@x.test", Some("NEVER")),
        ("c2@x.test", Some("SUCCESS,DELAY")),
        ("b1@x.test", Some("FAILURE")),
        ("c3@x.test", None),
    ];
    let rcpts: Vec<&str> = table.iter().map(|(a, _)| *a).collect();
    let mut env = envelope(&rcpts, clock::wall_ms() / 1000 - 1);
    env.sender = ReversePath::Address(Address::parse("sender@local.test").unwrap());
    for (r, (_, notify)) in env.recipients.iter_mut().zip(table) {
        r.dsn = RcptDsn {
            notify: notify.map(|n| Notify::parse(n).unwrap()),
            orcpt: None,
        };
    }
    let clock = clock::reading();
    let record = Record {
        envelope: env.clone(),
        next_attempt_ms: clock.now_ms,
        age: QueueAge {
            queued_ms: 120_000,
            ..QueueAge::new(clock)
        },
    };
    queue
        .store()
        .insert(&record, b"Subject: s\r\n\r\nbody\r\n".to_vec())
        .await
        .unwrap();
    let deliver = Arc::new(Notices(Mutex::new(Vec::new())));
    let id = env.id.clone();
    run_until(&queue, deliver.clone(), move |q| {
        let tried = q
            .store()
            .load(&id)
            .ok()
            .flatten()
            .is_some_and(|(r, _)| r.envelope.recipients[0].state == RcptState::Delivered);
        tried && q.store().len() == 1
    })
    .await;
    let notices = deliver.0.lock().unwrap().clone();
    let with = |action: &str| -> Vec<&String> {
        notices
            .iter()
            .filter(|t| t.contains(&format!("Action: {action}\r\n")))
            .collect()
    };
    let finals = |t: &str| -> Vec<String> {
        t.lines()
            .filter_map(|l| l.strip_prefix("Final-Recipient: rfc822; "))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(notices.len(), 3, "{notices:#?}");
    assert_eq!(finals(with("delivered")[0]), ["a1@x.test"]);
    assert!(
        !with("delivered")[0].contains("/secret/"),
        "no Maildir path"
    );
    assert_eq!(finals(with("relayed")[0]), ["a2@x.test"]);
    assert!(with("relayed")[0].contains("Remote-MTA: dns; mx.x.test\r\n"));
    assert_eq!(finals(with("failed")[0]), ["c3@x.test"]);
    assert!(with("delayed").is_empty());
}

#[tokio::test]
async fn overdue_messages_start_gradually_and_new_mail_does_not_wait() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(
        dir.path(),
        QueueSettings::new(Domain::parse("mx.test").unwrap()),
    )
    .unwrap();
    let overdue = 250;
    for _ in 0..overdue {
        let e = envelope(&["b@x.test"], now_ms() / 1000);
        queue.enqueue(e, b"hello".to_vec()).await.unwrap();
    }
    let deliver = stalling();
    let begin = std::time::Instant::now();
    let (_stop, stopped) = watch::channel(false);
    // Room for every attempt at once: only the ramp holds them back.
    let runner = tokio::spawn(queue.clone().run(deliver.clone(), 1000, stopped));
    let started = || deliver.started.load(std::sync::atomic::Ordering::SeqCst);
    let bound = |elapsed: Duration| {
        (crate::ramp::BURST + elapsed.as_millis() as u64 * crate::ramp::PER_SECOND / 1000) as usize
    };
    for _ in 0..500 {
        if started() >= crate::ramp::BURST as usize {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seen = started();
    assert!(
        seen <= bound(begin.elapsed()),
        "{seen} overdue messages started after {:?}",
        begin.elapsed()
    );
    // New mail is not held back by the ramp.
    let local = envelope(&["a@local.test"], now_ms() / 1000);
    queue.enqueue(local.clone(), b"hi".to_vec()).await.unwrap();
    for _ in 0..500 {
        if queue.store().load(&local.id).unwrap().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        queue.store().load(&local.id).unwrap().is_none(),
        "new mail delivered"
    );
    for _ in 0..1000 {
        if started() > overdue {
            break;
        }
        assert!(started() <= bound(begin.elapsed()) + 1, "{}", started());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        started(),
        overdue + 1,
        "every overdue message started in the end"
    );
    runner.abort();
}

proptest::proptest! {
    /// The decision to record an attempt without a flush of its own, against its plain
    /// statement: nothing is left pending, and no recipient failed in this attempt.
    #[test]
    fn only_a_delivery_that_finishes_the_message_rides_on_the_next_round(
        states in proptest::collection::vec((0u8..3, 0u8..3), 1..6)
    ) {
        let state = |n: u8| match n {
            0 => RcptState::Pending,
            1 => RcptState::Delivered,
            _ => RcptState::Failed,
        };
        let mut e = envelope(&["a@x.test"], 0);
        let template = e.recipients[0].clone();
        e.recipients = states
            .iter()
            .map(|&(_, after)| Recipient { state: state(after), ..template.clone() })
            .collect();
        let before: Vec<RcptState> = states.iter().map(|&(was, _)| state(was)).collect();
        let pending_after = states.iter().filter(|s| s.1 == 0).count();
        let newly_failed = states.iter().filter(|s| s.1 == 2 && s.0 != 2).count();
        let want = pending_after == 0 && newly_failed == 0;
        proptest::prop_assert_eq!(rides_on_next_round(&e, &before), want);
    }
}
