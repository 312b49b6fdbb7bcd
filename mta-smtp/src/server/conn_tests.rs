//! Whole connections over in-memory streams: what a hostile client gets from the time
//! limits, the header checks and the password-failure table. Limits are shrunk to
//! milliseconds so the waits are short; every assertion is on replies, never on timing.

use std::time::Duration;

use mta_core::address::Address;
use mta_core::auth::UserDb;
use mta_core::config::Config;
use mta_core::envelope::{Envelope, ListenerKind};
use mta_core::seams::{BoxFuture, Enqueue, EnqueueError, UserDirectory};
use tokio::io::{
    AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream, ReadHalf, WriteHalf, duplex,
};
use tokio::sync::watch;

use super::*;

struct Users(Arc<UserDb>);
impl UserDirectory for Users {
    fn current(&self) -> Arc<UserDb> {
        self.0.clone()
    }
}

/// Keeps what it is given, and the message bytes the server's budget held as it was given
/// (the server's guards are in the third field).
#[derive(Default)]
struct Queue(
    std::sync::Mutex<Vec<Vec<u8>>>,
    std::sync::Mutex<Vec<u64>>,
    Arc<super::super::guards::Guards>,
);
impl Enqueue for Queue {
    fn enqueue(&self, _: Envelope, body: Vec<u8>) -> BoxFuture<'_, Result<(), EnqueueError>> {
        self.1.lock().unwrap().push(self.2.memory.held());
        self.0.lock().unwrap().push(body);
        Box::pin(async { Ok(()) })
    }
}

struct Setup {
    shared: Arc<Shared>,
    queue: Arc<Queue>,
    _stop: watch::Sender<bool>,
}

fn setup(limits: impl FnOnce(&mut mta_core::config::Limits)) -> Setup {
    let mut config = Config::from_toml(
        "t.toml",
        "hostname = \"mx.example.org\"\nlocal_domains = [\"example.org\"]\n",
        "x",
    )
    .unwrap();
    limits(&mut config.limits);
    let mut db = UserDb::default();
    db.add(
        Address::parse("alice@example.org").unwrap(),
        "correct horse",
    )
    .unwrap();
    let queue = Arc::new(Queue::default());
    let (stop, shutdown) = watch::channel(false);
    let shared = Shared::new(
        Arc::new(config),
        Arc::new(Users(Arc::new(db))),
        queue.clone(),
        shutdown,
    );
    let shared = Shared {
        guards: queue.2.clone(),
        ..shared
    };
    Setup {
        shared: Arc::new(shared),
        queue,
        _stop: stop,
    }
}

/// The client's end of a connection served on port 25.
struct Client {
    reader: BufReader<ReadHalf<DuplexStream>>,
    writer: WriteHalf<DuplexStream>,
}

impl Client {
    fn connect(s: &Setup) -> Client {
        let (client, server) = duplex(1 << 16);
        let shared = s.shared.clone();
        let peer = "192.0.2.7:40000".parse().unwrap();
        tokio::spawn(async move {
            serve_stream(&shared, server, peer, ListenerKind::Smtp).await;
        });
        let (reader, writer) = tokio::io::split(client);
        Client {
            reader: BufReader::new(reader),
            writer,
        }
    }

    async fn reply(&mut self) -> Option<String> {
        next_reply(&mut self.reader).await
    }

    async fn send(&mut self, bytes: &[u8]) {
        // The server may have closed already; the replies tell.
        let _ = self.writer.write_all(bytes).await;
    }

    async fn command(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply()
            .await
            .unwrap_or_else(|| format!("closed after {line}"))
    }

    async fn closed(&mut self) -> bool {
        self.reply().await.is_none()
    }

    /// Greeting, EHLO, MAIL, RCPT, DATA: ready for message text.
    async fn start_data(&mut self) {
        assert!(self.reply().await.unwrap().starts_with("220"));
        for (cmd, code) in [
            ("EHLO client.test", "250"),
            ("MAIL FROM:<x@remote.test>", "250"),
            ("RCPT TO:<alice@example.org>", "250"),
            ("DATA", "354"),
        ] {
            let r = self.command(cmd).await;
            assert!(r.starts_with(code), "{cmd}: {r}");
        }
    }
}

/// The next reply's last line, or `None` when the server closed the connection.
async fn next_reply(reader: &mut BufReader<ReadHalf<DuplexStream>>) -> Option<String> {
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            return Some(line.trim_end().to_string());
        }
    }
}

const MS: fn(u64) -> Duration = Duration::from_millis;

/// Sends one byte every 20 ms until the connection closes: every read is quick, the
/// message never ends.
fn trickle(mut writer: WriteHalf<DuplexStream>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while writer.write_all(b"x").await.is_ok() {
            tokio::time::sleep(MS(20)).await;
        }
    })
}

/// The message handed to the queue is the one buffer the budget reserved, all of its
/// capacity counted: a forged `Authentication-Results:` is cut out of it and our
/// `Received:` put in front of it in place, never in a second buffer beside it.
#[tokio::test]
async fn the_budget_holds_the_whole_buffer_that_is_queued() {
    for lines in [1, 300, 3000] {
        let s = setup(|_| {});
        let mut c = Client::connect(&s);
        c.start_data().await;
        let head = "Authentication-Results: mx.example.org; spf=pass\r\nSubject: big\r\n\r\n";
        let text = format!("{}\r\n", "y".repeat(998)).repeat(lines);
        c.send(format!("{head}{text}.\r\n").as_bytes()).await;
        let r = c.reply().await.unwrap();
        assert!(r.starts_with("250"), "{r}");
        let queued = s.queue.0.lock().unwrap().pop().unwrap();
        let held = s.queue.1.lock().unwrap().pop().unwrap();
        let clean = format!("Subject: big\r\n\r\n{text}");
        assert!(queued.starts_with(b"Received: from client.test"));
        assert!(
            queued.ends_with(clean.as_bytes()),
            "only the forged field is gone"
        );
        assert!(
            queued.capacity() as u64 <= held,
            "{lines} lines: a buffer of {} octets, {held} reserved",
            queued.capacity()
        );
        drop(c);
    }
}

#[tokio::test]
async fn a_client_that_stalls_mid_message_is_dropped() {
    let s = setup(|l| {
        l.command_timeout = MS(200);
        l.data_timeout = Duration::from_secs(60);
    });
    let mut c = Client::connect(&s);
    c.start_data().await;
    c.send(b"Subject: half a message\r\n").await;
    // Nothing more: the read waits command_timeout, not the minute of data_timeout.
    let r = c.reply().await.unwrap();
    assert!(r.starts_with("421 4.4.2"), "{r}");
    assert!(c.closed().await);
    assert!(s.queue.0.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_client_that_trickles_a_message_meets_the_data_limit() {
    let s = setup(|l| {
        l.command_timeout = Duration::from_secs(10);
        l.data_timeout = MS(300);
        l.session_timeout = Duration::from_secs(60);
    });
    let mut c = Client::connect(&s);
    c.start_data().await;
    let Client { mut reader, writer } = c;
    let trickle = trickle(writer);
    let r = next_reply(&mut reader).await.unwrap();
    assert!(r.starts_with("421 4.4.2 Idle"), "{r}");
    assert_eq!(next_reply(&mut reader).await, None, "closed");
    trickle.abort();
}

#[tokio::test]
async fn the_session_limit_ends_a_message_in_progress() {
    let s = setup(|l| {
        l.command_timeout = Duration::from_secs(10);
        l.data_timeout = Duration::from_secs(10);
        l.session_timeout = MS(400);
    });
    let mut c = Client::connect(&s);
    c.start_data().await;
    let Client { mut reader, writer } = c;
    let trickle = trickle(writer);
    let r = next_reply(&mut reader).await.unwrap();
    assert!(r.starts_with("421 4.4.2 Session time limit"), "{r}");
    assert_eq!(next_reply(&mut reader).await, None, "closed");
    trickle.abort();
}

#[tokio::test]
async fn the_session_limit_holds_against_a_busy_client() {
    let s = setup(|l| {
        l.session_timeout = MS(300);
        // NOOP for ever is also cut off by the no-progress limit; this test is about time.
        l.max_commands_without_progress = u32::MAX;
    });
    let mut c = Client::connect(&s);
    assert!(c.reply().await.unwrap().starts_with("220"));
    // Always a command ready, each answered at once: only the session limit ends this.
    let mut last = String::new();
    for _ in 0..1000 {
        last = c.command("NOOP").await;
        if !last.starts_with("250") {
            break;
        }
        tokio::time::sleep(MS(5)).await;
    }
    assert!(last.starts_with("421 4.4.2 Session time limit"), "{last}");
    assert!(c.closed().await);
}

#[tokio::test]
async fn a_silent_client_is_dropped() {
    let s = setup(|l| l.command_timeout = MS(200));
    let mut c = Client::connect(&s);
    assert!(c.reply().await.unwrap().starts_with("220"));
    assert!(c.reply().await.unwrap().starts_with("421 4.4.2 Idle"));
    assert!(c.closed().await);
}

#[tokio::test]
async fn header_checks_answer_after_the_dot_and_keep_the_dialogue() {
    let s = setup(|_| {});
    let mut c = Client::connect(&s);
    c.start_data().await;
    let mut loop_msg = "Received: from a by b; now\r\n".repeat(51);
    loop_msg.push_str("From: x@remote.test\r\n\r\nround and round\r\n.\r\n");
    c.send(loop_msg.as_bytes()).await;
    let r = c.reply().await.unwrap();
    assert!(r.starts_with("554 5.4.6"), "{r}");
    // In step: the next transaction works and is queued.
    for (cmd, code) in [
        ("MAIL FROM:<x@remote.test>", "250"),
        ("RCPT TO:<alice@example.org>", "250"),
        ("DATA", "354"),
    ] {
        let r = c.command(cmd).await;
        assert!(r.starts_with(code), "{cmd}: {r}");
    }
    let fields = "X-Filler: 1\r\n".repeat(1001);
    c.send(format!("{fields}\r\nbody\r\n.\r\n").as_bytes())
        .await;
    let r = c.reply().await.unwrap();
    assert!(r.starts_with("552 5.3.4 Message header too large"), "{r}");
    assert!(s.queue.0.lock().unwrap().is_empty());
    assert!(c.command("QUIT").await.starts_with("221"));
}

#[tokio::test]
async fn a_client_that_does_not_read_its_replies_is_dropped() {
    let s = setup(|l| l.command_timeout = MS(300));
    let (client, server) = duplex(256);
    let shared = s.shared.clone();
    let served = tokio::spawn(async move {
        let peer = "192.0.2.7:40000".parse().unwrap();
        serve_stream(&shared, server, peer, ListenerKind::Smtp).await;
    });
    let (_read_half, mut write_half) = tokio::io::split(client);
    // Thousands of pipelined commands, never a reply read: the server's writes block.
    let writer = tokio::spawn(async move {
        for _ in 0..2000 {
            if write_half.write_all(b"NOOP\r\n").await.is_err() {
                break;
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), served)
        .await
        .expect("the server gave up on the connection")
        .unwrap();
    writer.abort();
}

#[tokio::test]
async fn password_failures_block_the_client_but_not_the_account() {
    let s = setup(|l| l.auth_failures = 2);
    let ip: IpAddr = "192.0.2.7".parse().unwrap();
    let other: IpAddr = "198.51.100.1".parse().unwrap();
    let check = |ip, login: &str, password: &str| {
        check_password(
            &s.shared,
            ip,
            ListenerKind::Submission,
            login.to_string(),
            password.to_string(),
        )
    };
    let verified = |c: Checked| match c {
        Checked::Verified(Verified::User(u)) => format!("user {u}"),
        Checked::Verified(Verified::Rejected) => "rejected".to_string(),
        Checked::Locked => "locked".to_string(),
        Checked::Busy => "busy".to_string(),
    };
    assert_eq!(
        verified(check(ip, "nobody@example.org", "x").await),
        "rejected"
    );
    assert_eq!(
        verified(check(ip, "alice@example.org", "x").await),
        "rejected"
    );
    // The client is blocked, even with the right password.
    assert_eq!(
        verified(check(ip, "alice@example.org", "correct horse").await),
        "locked"
    );
    // From elsewhere alice is delayed (one failure), then checked: never locked out.
    assert_eq!(
        verified(check(other, "alice@example.org", "correct horse").await),
        "user alice@example.org"
    );
    assert_eq!(
        verified(check(other, "ALICE@example.org", "y").await),
        "rejected"
    );
    let third: IpAddr = "203.0.113.9".parse().unwrap();
    assert_eq!(
        verified(check(third, "bob@example.org", "z").await),
        "rejected",
        "other accounts from that address are still checked"
    );
}

/// Every open connection costs its task's future, held for as long as the client is idle; the
/// DATA, password and TLS steps are boxed so they cost only while they run (8 KiB per
/// connection when they were inline). See docs/performance.md, "Memory per idle session".
#[test]
fn a_connection_future_stays_small() {
    fn size_of_future<F: std::future::Future>(_: &F) -> usize {
        std::mem::size_of::<F>()
    }
    let s = setup(|_| {});
    let (_client, server) = duplex(64);
    let peer: SocketAddr = "192.0.2.1:2525".parse().unwrap();
    let fut = serve_stream(&s.shared, server, peer, ListenerKind::Smtp);
    let size = size_of_future(&fut);
    println!("serve_stream future: {size} bytes");
    assert!(size <= 4096, "serve_stream future is {size} bytes");
}

/// A NUL in a command line is a framing violation like a bare CR or LF (RFC 5321 §2.3.8,
/// §4.1.1.4): one reply, then the connection closes; no syntax-error reply and carry on.
#[tokio::test]
async fn a_nul_in_a_command_line_closes_the_connection() {
    let s = setup(|_| {});
    for line in [
        &b"NOOP\0\r\n"[..],
        b"EHLO client.test\0\r\n",
        b"\0\r\n",
        &[b"NOOP ".repeat(200).as_slice(), b"\0\r\n"].concat(),
    ] {
        let mut c = Client::connect(&s);
        assert!(c.reply().await.unwrap().starts_with("220"));
        c.send(line).await;
        let r = c.reply().await.unwrap();
        assert!(r.starts_with("500 5.5.2 NUL"), "{line:?}: {r}");
        assert!(c.closed().await, "{line:?}: still open");
    }
}
