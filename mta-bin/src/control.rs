//! The control socket: `DATA_DIR/control.sock`, a Unix socket (mode 0600 in the 0700 data
//! dir) through which `mta queue` asks a running server, because sled lets only one
//! process open the store. One request line, one JSON answer, then close.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use mta_queue::{Queue, Record};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::watch;
use tracing::warn;

/// The queue as `mta queue list` shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Listing {
    /// Readable records, oldest first.
    pub records: Vec<Record>,
    /// Records that could not be decoded.
    pub errors: Vec<String>,
}

/// Reads the listing straight from a store (server not running, or inside the server).
pub fn listing(queue: &Queue) -> Listing {
    let mut records = Vec::new();
    let mut errors = Vec::new();
    for r in queue.store().records() {
        match r {
            Ok(rec) => records.push(rec),
            Err(e) => errors.push(e.to_string()),
        }
    }
    Listing { records, errors }
}

/// The socket path in a data dir.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("control.sock")
}

/// Starts answering on the control socket until `stop` turns true.
///
/// # Errors
/// When the socket cannot be created.
pub fn start(
    data_dir: &Path,
    queue: Arc<Queue>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let path = socket_path(data_dir);
    // A stale socket from a killed server: we hold the queue lock, so no other server runs.
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)
        .with_context(|| format!("cannot create control socket {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                _ = stop.changed() => break,
                a = listener.accept() => match a {
                    Ok(pair) => pair,
                    Err(e) => { warn!(error = %e, "control socket accept failed"); continue; }
                },
            };
            let queue = queue.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut line = String::new();
                let mut reader = tokio::io::BufReader::new(read).take(1024);
                if tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line))
                    .await
                    .is_err()
                {
                    return;
                }
                let answer = match line.trim() {
                    "queue-list" => serde_json::to_string(&listing(&queue)).unwrap_or_default(),
                    other => serde_json::json!({ "error": format!("unknown request {other:?}") })
                        .to_string(),
                };
                let _ = write.write_all(answer.as_bytes()).await;
            });
        }
        let _ = std::fs::remove_file(&path);
    }))
}

/// Asks a running server. `Ok(None)` when no server listens on the socket.
///
/// # Errors
/// When a server answers but the answer is unreadable.
pub fn request(data_dir: &Path, what: &str) -> anyhow::Result<Option<String>> {
    let path = socket_path(data_dir);
    let Ok(mut stream) = StdUnixStream::connect(&path) else {
        return Ok(None);
    };
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(format!("{what}\n").as_bytes())?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .with_context(|| format!("reading the answer from {}", path.display()))?;
    Ok(Some(answer))
}
