//! Unit tests of scheduler.

use super::*;
use mta_core::address::ReversePath;
use mta_core::envelope::{ListenerKind, Origin, Recipient};

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
    }
}

/// Delivers `a@…`, defers `b@…`, fails everything else; counts calls.
struct Scripted(Mutex<u32>);
impl Deliver for Scripted {
    fn deliver<'a>(
        &'a self,
        _e: &'a Envelope,
        _body: &'a std::sync::Arc<[u8]>,
        rcpts: &'a [Address],
    ) -> BoxFuture<'a, Vec<Outcome>> {
        *self.0.lock().unwrap() += 1;
        Box::pin(async move {
            rcpts
                .iter()
                .map(|r| match r.local_part() {
                    "a" => Outcome::Delivered("ok".into()),
                    "b" => Outcome::Deferred("4.0.0 later".into()),
                    _ => Outcome::Failed("5.0.0 never".into()),
                })
                .collect()
        })
    }
}

#[test]
fn remote_host_is_split_from_the_reply() {
    assert_eq!(
        split_remote("550 5.1.1 No such user (from mx1.remote.test [127.0.0.2] TLSv1.3 x)"),
        (
            "550 5.1.1 No such user",
            Some("mx1.remote.test".to_string())
        )
    );
    assert_eq!(split_remote("5.4.7 gave up"), ("5.4.7 gave up", None));
}

#[test]
fn outcomes_and_expiry() {
    let mut env = envelope(&["a@x.test", "b@x.test", "c@x.test"], 0);
    let pending: Vec<Address> = env.recipients.iter().map(|r| r.address.clone()).collect();
    apply_outcomes(
        &mut env,
        &pending,
        vec![
            Outcome::Delivered("d".into()),
            Outcome::Deferred("t".into()),
            Outcome::Failed("f".into()),
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

    expire(&mut env, 1000 * 3600, Duration::from_secs(7200));
    assert_eq!(env.recipients[1].state, RcptState::Pending);
    expire(&mut env, 1000 * 7201, Duration::from_secs(7200));
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
        body: &'a std::sync::Arc<[u8]>,
        rcpts: &'a [Address],
    ) -> BoxFuture<'a, Vec<Outcome>> {
        if e.sender == ReversePath::Null {
            self.0.lock().unwrap().push(body.to_vec());
            return Box::pin(async move { vec![Outcome::Delivered("ok".into()); rcpts.len()] });
        }
        Box::pin(async move {
            rcpts
                .iter()
                .map(|r| match r.local_part() {
                    "b" => Outcome::Deferred("451 4.0.0 later".into()),
                    _ => Outcome::Failed("550 5.1.1 no such user".into()),
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
    let now_s = now_ms() / 1000;
    // Old enough for the delay notice; b is deferred, c fails.
    let mut env = envelope(&["b@x.test", "c@x.test"], now_s - 120);
    env.sender = ReversePath::Address(Address::parse("sender@local.test").unwrap());
    queue
        .enqueue(env.clone(), b"Subject: s\r\n\r\nbody\r\n".to_vec())
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
