//! The control socket: `DATA_DIR/control.sock`, a Unix socket (mode 0600 in the 0700 data
//! dir) through which `mta queue` asks a running server, because sled lets only one
//! process open the store. One request line, one JSON answer, then close.
//!
//! Requests ([`Request`]): `queue-list`, `queue-list-stream` (JSON lines, one record at a
//! time: `crate::queue_stream`), `queue-show ID`, `queue-flush`, `queue-retry ID`,
//! `queue-delete ID`, `queue-bounce ID`; and `reload` (`mta reload`), `tls-…` (`mta tls`)
//! and `auth-…` (`mta auth`), which only a running server answers. Answers: see [`execute`];
//! every failure is `{"error": "..."}`. The same [`execute`] serves the socket and
//! `mta queue` on a store it opened itself when no server runs, so both paths answer alike.
//!
//! Only root and the user the server runs as may ask: the socket's mode is the first fence,
//! the peer's credentials (`SO_PEERCRED`, checked on every connection) the second, so a
//! socket or directory made readable by mistake still lets no one else in.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use mta_core::accept_backoff::AcceptBackoff;
use mta_core::envelope::MessageId;
use mta_queue::{Queue, Record};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::warn;

use crate::control_client::socket_path;

/// The longest request line read from the socket.
const MAX_REQUEST: u64 = 1024;

/// The queue as `mta queue list` shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Listing {
    /// Readable records, oldest first.
    pub records: Vec<Record>,
    /// Records that could not be decoded.
    pub errors: Vec<String>,
    /// Ids of the messages whose user is held (`mta user hold`): kept, not delivered.
    #[serde(default)]
    pub held: Vec<String>,
}

/// Reads the listing from a queue (inside the server, or a store opened directly).
///
/// # Errors
/// When the store cannot be read: an error, never an empty listing.
pub fn listing(queue: &Queue) -> Result<Listing, mta_queue::StoreError> {
    let (records, errors) = queue.list()?;
    let held = records
        .iter()
        .filter(|r| {
            r.envelope
                .origin
                .auth_user
                .as_deref()
                .is_some_and(|u| queue.store().is_user_held(u))
        })
        .map(|r| r.envelope.id.to_string())
        .collect();
    Ok(Listing {
        records,
        errors,
        held,
    })
}

/// One request to the queue, as sent over the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `queue-list`: every message.
    List,
    /// `queue-show ID`: one message in detail.
    Show(MessageId),
    /// `queue-flush`: every message due now.
    Flush,
    /// `queue-retry ID`: one message due now.
    Retry(MessageId),
    /// `queue-delete ID`: remove one message without delivering or bouncing it.
    Delete(MessageId),
    /// `queue-bounce ID`: fail the pending recipients and tell the sender.
    Bounce(MessageId),
}

impl Request {
    /// Parses one request line (without its line ending).
    ///
    /// # Errors
    /// The text for `{"error": ...}` when the line is not a request or the id is not a
    /// queue id.
    pub fn parse(line: &str) -> Result<Request, String> {
        let mut words = line.split_ascii_whitespace();
        let verb = words.next().unwrap_or("");
        let id = words.next();
        if words.next().is_some() {
            return Err(format!("too many arguments in request {line:?}"));
        }
        let with_id = |make: fn(MessageId) -> Request| match id {
            Some(id) => MessageId::parse(id).map(make),
            None => Err(format!("request {verb:?} needs a queue id")),
        };
        let without_id = |request: Request| match id {
            None => Ok(request),
            Some(_) => Err(format!("request {verb:?} takes no argument")),
        };
        match verb {
            "queue-list" => without_id(Request::List),
            "queue-flush" => without_id(Request::Flush),
            "queue-show" => with_id(Request::Show),
            "queue-retry" => with_id(Request::Retry),
            "queue-delete" => with_id(Request::Delete),
            "queue-bounce" => with_id(Request::Bounce),
            _ => Err(format!("unknown request {line:?}")),
        }
    }

    /// The request line [`Request::parse`] reads back (without its line ending).
    pub fn line(&self) -> String {
        match self {
            Request::List => "queue-list".into(),
            Request::Flush => "queue-flush".into(),
            Request::Show(id) => format!("queue-show {id}"),
            Request::Retry(id) => format!("queue-retry {id}"),
            Request::Delete(id) => format!("queue-delete {id}"),
            Request::Bounce(id) => format!("queue-bounce {id}"),
        }
    }
}

fn error(text: impl std::fmt::Display) -> Value {
    json!({ "error": text.to_string() })
}

fn no_such(id: &MessageId) -> Value {
    error(format!("no message {id} in the queue"))
}

fn to_json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or_else(error)
}

/// Carries out `request` on `queue` and returns the JSON answer:
///
/// | request | answer |
/// |---|---|
/// | list | [`Listing`]: `{"records": [...], "errors": [...]}` |
/// | show | [`mta_queue::admin::Detail`]: `{"record": {...}, "body_size": n, "headers": [...]}` |
/// | flush | `{"flushed": n}` (messages that were waiting) |
/// | retry, delete, bounce | `{"retried": id}`, `{"deleted": id}`, `{"bounced": id}` |
///
/// An unknown id or a store failure: `{"error": "..."}`.
pub async fn execute(queue: &Queue, request: &Request) -> Value {
    let done = |key: &str, found: Result<bool, mta_queue::StoreError>, id: &MessageId| match found {
        Ok(true) => json!({ key: id }),
        Ok(false) => no_such(id),
        Err(e) => error(e),
    };
    match request {
        Request::List => match listing(queue) {
            Ok(listing) => to_json(&listing),
            Err(e) => error(e),
        },
        Request::Show(id) => match queue.show(id) {
            Ok(Some(detail)) => to_json(&detail),
            Ok(None) => no_such(id),
            Err(e) => error(e),
        },
        Request::Flush => match queue.flush_all().await {
            Ok(n) => json!({ "flushed": n }),
            Err(e) => error(e),
        },
        Request::Retry(id) => done("retried", queue.retry_now(id).await, id),
        Request::Delete(id) => done("deleted", queue.delete(id).await, id),
        Request::Bounce(id) => done("bounced", queue.bounce_now(id).await, id),
    }
}

/// The answer when the queue has never been created (no server ever ran in this data
/// dir): what [`execute`] would say on an empty queue, without creating one.
pub fn execute_on_no_queue(request: &Request) -> Value {
    match request {
        Request::List => to_json(&Listing {
            records: vec![],
            errors: vec![],
            held: vec![],
        }),
        Request::Flush => json!({ "flushed": 0 }),
        Request::Show(id) | Request::Retry(id) | Request::Delete(id) | Request::Bounce(id) => {
            no_such(id)
        }
    }
}

/// Answers one request line from the socket.
pub async fn answer(queue: &Queue, line: &str) -> String {
    let value = match Request::parse(line.trim()) {
        Ok(request) => execute(queue, &request).await,
        Err(e) => error(e),
    };
    value.to_string()
}

/// Starts answering on the control socket until `stop` turns true.
///
/// # Errors
/// When the socket cannot be created.
pub fn start(
    data_dir: &Path,
    queue: Arc<Queue>,
    mut stop: watch::Receiver<bool>,
    hooks: Hooks,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let path = socket_path(data_dir);
    // A stale socket from a killed server: we hold the queue lock, so no other server runs.
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)
        .with_context(|| format!("cannot create control socket {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(tokio::spawn(async move {
        let mut backoff = AcceptBackoff::new();
        loop {
            let accepted = tokio::select! {
                _ = stop.changed() => break,
                a = listener.accept() => a,
            };
            let stream = match accepted {
                Ok((stream, _)) => {
                    let unlogged = backoff.succeeded();
                    if unlogged > 0 {
                        warn!(unlogged, "control socket accepting again after failures");
                    }
                    stream
                }
                Err(e) => {
                    // Out of descriptors the next accept fails at once: pause, log rarely.
                    let after = backoff.failed(std::time::Instant::now());
                    if let Some(unlogged) = after.log {
                        warn!(error = %e, unlogged, pause = ?after.pause, "control socket accept failed");
                    }
                    tokio::select! {
                        _ = stop.changed() => break,
                        () = tokio::time::sleep(after.pause) => {}
                    }
                    continue;
                }
            };
            let queue = queue.clone();
            let hooks = hooks.clone();
            tokio::spawn(async move {
                let peer = stream.peer_cred().map(|c| c.uid());
                let (read, mut write) = stream.into_split();
                let mut line = String::new();
                let mut reader = tokio::io::BufReader::new(read).take(MAX_REQUEST);
                match tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line))
                    .await
                {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        warn!(error = %e, "unreadable control request");
                        return;
                    }
                    Err(_) => return,
                }
                // Checked once the request is read, so that the client, which writes before
                // it reads, gets the refusal rather than a broken pipe.
                let own = nix::unistd::geteuid().as_raw();
                let peer_uid = peer.as_ref().ok().copied();
                if let Err(refusal) = admit_peer(peer, own) {
                    warn!(peer_uid = ?peer_uid, "control socket: connection refused, {refusal}");
                    let _ = write.write_all(error(refusal).to_string().as_bytes()).await;
                    return;
                }
                let answer = match line.trim() {
                    crate::queue_stream::LIST => {
                        crate::queue_stream::serve(queue, write).await;
                        return;
                    }
                    "queue-flush" => flush_resuming(&queue, &hooks.dead).await,
                    "reload" => ask_reload(&hooks.reload).await,
                    l if l.starts_with("tls-") => crate::tls_cmd::answer(&hooks.memory, l),
                    l if l.starts_with("auth-") => crate::auth_cmd::answer(&hooks.server, l),
                    l if l.starts_with("user-") => {
                        crate::sending_cmd::answer(&hooks.server, &queue, l).await
                    }
                    _ => answer(&queue, &line).await,
                };
                let _ = write.write_all(answer.as_bytes()).await;
            });
        }
        let _ = std::fs::remove_file(&path);
    }))
}

/// How the server is asked to reload: it answers on the oneshot with the outcome.
pub type ReloadRequests = mpsc::Sender<oneshot::Sender<Result<(), String>>>;

/// What the socket reaches in a running server besides the queue.
#[derive(Clone)]
pub struct Hooks {
    /// Reload requests (`reload`).
    pub reload: ReloadRequests,
    /// The downgrade memory (`tls-list`, `tls-forget DOMAIN`).
    pub memory: Arc<mta_smtp::relay::memory::TlsMemory>,
    /// The server's shared state, for its login blocks (`auth-blocked`, `auth-unblock X`).
    pub server: mta_smtp::server::Current,
    /// The suspended destinations, which `queue-flush` ends.
    pub dead: Arc<mta_smtp::relay::limits::Suspensions>,
}

/// `queue-flush` in a running server: ends every suspended destination's suspension first,
/// so that the messages made due connect instead of being deferred again without trying
/// until the next probe, then makes every waiting message due. The answer adds
/// `"resumed": N`, the destinations that were suspended.
async fn flush_resuming(queue: &Queue, dead: &mta_smtp::relay::limits::Suspensions) -> String {
    let resumed = dead.resume_all();
    if resumed > 0 {
        tracing::info!(
            destinations = resumed,
            "suspended destinations resumed by operator"
        );
    }
    let mut value = execute(queue, &Request::Flush).await;
    if let Some(map) = value.as_object_mut()
        && !map.contains_key("error")
    {
        map.insert("resumed".into(), json!(resumed));
    }
    value.to_string()
}

/// Whether a peer with uid `peer` may use the socket of a server running as uid `own`: root
/// and `own` may, anyone else (or a peer whose credentials cannot be read) may not.
///
/// # Errors
/// The reason, for the client and the log.
pub fn admit_peer(peer: std::io::Result<u32>, own: u32) -> Result<(), String> {
    match peer {
        Ok(uid) if uid == 0 || uid == own => Ok(()),
        Ok(uid) => Err(format!(
            "permission denied: uid {uid} may not use the control socket (only root and uid {own}, \
             which mta runs as)"
        )),
        Err(e) => Err(format!(
            "permission denied: the peer's credentials cannot be read ({e})"
        )),
    }
}

async fn ask_reload(reload: &ReloadRequests) -> String {
    let (tx, rx) = oneshot::channel();
    let answer = match reload.send(tx).await {
        Ok(()) => rx
            .await
            .unwrap_or_else(|_| Err("the server is stopping".into())),
        Err(_) => Err("the server is stopping".into()),
    };
    match answer {
        Ok(()) => json!({ "reloaded": true }).to_string(),
        Err(e) => error(e).to_string(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::control_client::{ask, request};
    use mta_core::address::{Address, Domain, ReversePath};
    use mta_core::envelope::{Envelope, ListenerKind, Origin, Recipient, Vouched};
    use mta_queue::QueueSettings;

    use super::*;

    const A: &str = "00000000000100000001";
    const MISSING: &str = "00000000000300000003";

    fn id(text: &str) -> MessageId {
        MessageId::parse(text).expect("id")
    }

    #[test]
    fn request_lines() {
        let ok = [
            ("queue-list", Request::List),
            ("  queue-list \r\n", Request::List),
            ("queue-flush", Request::Flush),
            (&format!("queue-show {A}"), Request::Show(id(A))),
            (&format!("queue-retry {A}"), Request::Retry(id(A))),
            (&format!("queue-delete {A}"), Request::Delete(id(A))),
            (&format!("queue-bounce {A}"), Request::Bounce(id(A))),
            (
                "queue-show 0000000000010000000A",
                Request::Show(id("0000000000010000000a")),
            ),
        ];
        for (line, want) in ok {
            let got = Request::parse(line).expect(line);
            assert_eq!(got, want, "{line:?}");
            assert_eq!(Request::parse(&got.line()).expect("round trip"), got);
        }
        let bad = [
            ("", "unknown request \"\""),
            ("queue-drop", "unknown request \"queue-drop\""),
            ("queue-show", "request \"queue-show\" needs a queue id"),
            (
                "queue-show ../../x",
                "\"../../x\" is not a queue id (20 hex digits)",
            ),
            ("queue-list x", "request \"queue-list\" takes no argument"),
            (
                &format!("queue-show {A} {A}"),
                &format!("too many arguments in request \"queue-show {A} {A}\""),
            ),
        ];
        for (line, want) in bad {
            assert_eq!(Request::parse(line).unwrap_err(), want, "{line:?}");
        }
    }

    pub(crate) async fn queue_with_one(dir: &tempfile::TempDir) -> Arc<Queue> {
        let queue = Queue::open(
            dir.path(),
            QueueSettings::new(Domain::parse("mx.test").expect("domain")),
        )
        .expect("open");
        let envelope = Envelope {
            id: id(A),
            sender: ReversePath::Address(Address::parse("a@local.test").expect("address")),
            recipients: vec![Recipient::pending(
                Address::parse("b@remote.test").expect("address"),
            )],
            received_at: 1,
            size: 14,
            origin: Origin {
                listener: ListenerKind::Smtp,
                peer: "192.0.2.1:1".into(),
                helo: "c.test".into(),
                auth_user: None,
                tls: None,
            },
            delay_warned: false,
            require_tls: false,
            vouched: Vouched::SenderVerified,
            dsn: Default::default(),
        };
        let record = Record {
            envelope,
            // 2100-01-01: far off, and a time a real record can hold (JSON readers keep
            // integers exact only below 2^53).
            next_attempt_ms: 4_102_444_800_000,
            age: Default::default(),
        };
        queue
            .store()
            .insert(&record, b"Subject: x\r\n\r\nbody")
            .await
            .expect("insert");
        queue
    }

    #[tokio::test]
    async fn executor_answers_in_json() {
        let dir = tempfile::tempdir().expect("temp dir");
        let queue = queue_with_one(&dir).await;
        let ask = |line: &str| {
            let queue = queue.clone();
            let line = line.to_string();
            async move {
                serde_json::from_str::<Value>(&answer(&queue, &line).await).expect("JSON answer")
            }
        };

        let list = ask("queue-list").await;
        assert_eq!(list["records"][0]["envelope"]["id"], A);
        assert_eq!(list["errors"], json!([]));

        let show = ask(&format!("queue-show {A}")).await;
        assert_eq!(show["body_size"], 18);
        assert_eq!(show["headers"], json!(["Subject: x"]));
        assert_eq!(show["record"]["envelope"]["sender"], "<a@local.test>");
        assert_eq!(
            show["record"]["envelope"]["recipients"][0]["state"],
            "pending"
        );

        assert_eq!(
            ask(&format!("queue-show {MISSING}")).await,
            json!({ "error": format!("no message {MISSING} in the queue") })
        );
        assert_eq!(
            ask("queue-nonsense").await,
            json!({ "error": "unknown request \"queue-nonsense\"" })
        );
        assert_eq!(ask("queue-flush").await, json!({ "flushed": 1 }));
        assert_eq!(
            ask(&format!("queue-retry {A}")).await,
            json!({ "retried": A })
        );
        assert_eq!(
            ask(&format!("queue-bounce {MISSING}")).await,
            json!({ "error": format!("no message {MISSING} in the queue") })
        );
        assert_eq!(
            ask(&format!("queue-bounce {A}")).await,
            json!({ "bounced": A })
        );
        // The message is gone; its DSN to a@local.test is queued from <>.
        let list = ask("queue-list").await;
        assert_eq!(list["records"].as_array().map(Vec::len), Some(1));
        let dsn = &list["records"][0]["envelope"];
        assert_eq!(dsn["sender"], "<>");
        assert_eq!(dsn["recipients"][0]["address"], "a@local.test");
        let dsn_id = dsn["id"].as_str().expect("id").to_string();
        assert_eq!(
            ask(&format!("queue-delete {dsn_id}")).await,
            json!({ "deleted": dsn_id })
        );
        assert_eq!(ask("queue-list").await["records"], json!([]));
        assert_eq!(
            ask(&format!("queue-delete {dsn_id}")).await,
            json!({ "error": format!("no message {dsn_id} in the queue") })
        );
    }

    #[test]
    fn no_queue_answers() {
        assert_eq!(
            execute_on_no_queue(&Request::List),
            json!({ "records": [], "errors": [], "held": [] })
        );
        assert_eq!(
            execute_on_no_queue(&Request::Flush),
            json!({ "flushed": 0 })
        );
        assert_eq!(
            execute_on_no_queue(&Request::Delete(id(A))),
            json!({ "error": format!("no message {A} in the queue") })
        );
    }

    fn test_server(data_dir: &Path, queue: Arc<Queue>) -> mta_smtp::server::Current {
        let config = mta_core::config::Config::defaults("mx.test").expect("defaults");
        mta_smtp::server::Current::new(mta_smtp::server::Shared::new(
            Arc::new(config),
            Arc::new(crate::users::UsersFile::open(data_dir).expect("users")),
            queue,
            watch::channel(false).1,
        ))
    }

    #[test]
    fn only_root_and_our_own_uid_may_ask() {
        let own = 998;
        let denied = |uid: u32| admit_peer(Ok(uid), own).unwrap_err();
        assert_eq!(admit_peer(Ok(0), own), Ok(()));
        assert_eq!(admit_peer(Ok(own), own), Ok(()));
        assert_eq!(
            denied(65534),
            "permission denied: uid 65534 may not use the control socket (only root and uid \
             998, which mta runs as)"
        );
        assert!(denied(1).starts_with("permission denied: uid 1 "));
        let unreadable = admit_peer(Err(std::io::ErrorKind::Unsupported.into()), own);
        assert!(
            unreadable
                .unwrap_err()
                .starts_with("permission denied: the peer's credentials cannot be read")
        );
    }

    #[tokio::test]
    async fn socket_round_trip() {
        let dir = tempfile::tempdir().expect("temp dir");
        let queue = queue_with_one(&dir).await;
        let data_dir = dir.path().join("data");
        std::fs::create_dir(&data_dir).expect("data dir");
        let (stop, stopped) = watch::channel(false);
        let hooks = Hooks {
            reload: mpsc::channel(1).0,
            memory: Arc::new(mta_smtp::relay::memory::TlsMemory::open(
                dir.path(),
                Duration::from_secs(60),
            )),
            server: test_server(&data_dir, queue.clone()),
            dead: Arc::new(mta_smtp::relay::limits::Suspensions::default()),
        };
        let server = start(&data_dir, queue, stopped, hooks).expect("socket");
        let dir_for_client = data_dir.clone();
        let answer = tokio::task::spawn_blocking(move || {
            request(&dir_for_client, &Request::Show(id(MISSING)).line())
        })
        .await
        .expect("client task")
        .expect("readable answer")
        .expect("a server answered");
        assert_eq!(
            serde_json::from_str::<Value>(&answer).expect("JSON"),
            json!({ "error": format!("no message {MISSING} in the queue") })
        );
        let dir_for_client = data_dir.clone();
        let blocked = tokio::task::spawn_blocking(move || ask(&dir_for_client, "auth-blocked"))
            .await
            .expect("client task")
            .expect("an answer");
        assert_eq!(
            serde_json::from_str::<Value>(&blocked).expect("JSON"),
            json!({ "addresses": [], "accounts": [] })
        );
        stop.send(true).expect("stop");
        server.await.expect("server task");
        assert!(!socket_path(&data_dir).exists(), "socket removed on stop");
        assert_eq!(request(&data_dir, "queue-list").expect("no error"), None);
        let no_server = ask(&data_dir, "auth-blocked").unwrap_err().to_string();
        assert!(
            no_server.starts_with("no running server found"),
            "{no_server}"
        );
    }
}
