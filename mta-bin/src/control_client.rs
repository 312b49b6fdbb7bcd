//! The asking side of the control socket (`DATA_DIR/control.sock`, answered by
//! `control.rs` in a running server): `mta reload`, `mta queue`, `mta tls` and `mta auth`
//! send one request line and read one JSON answer. Every way of not getting an answer (no
//! data dir, no socket, a stale socket, no permission) is said as such.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;

/// The socket path in a data dir.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("control.sock")
}

/// `mta reload`: asks the running server to reload and prints the outcome.
///
/// # Errors
/// No server runs (with the reason: no socket, or a socket nobody answers on), the data dir
/// or socket cannot be reached, or the server refused the new config (its reason).
pub fn reload(config: &mta_core::config::Config) -> anyhow::Result<()> {
    let Some(answer) = request(&config.data_dir, "reload")? else {
        let path = socket_path(&config.data_dir);
        if path.exists() {
            anyhow::bail!(
                "no server answers on the control socket {}: it refuses connections (left by \
                 a server that did not stop cleanly?); start mta serve",
                path.display()
            );
        }
        anyhow::bail!(
            "no server is running with data dir {} (no control socket {}); start mta serve, \
             or give the config it runs with",
            config.data_dir.display(),
            path.display()
        );
    };
    let value: Value = serde_json::from_str(&answer)
        .with_context(|| format!("unreadable answer from the server: {answer:?}"))?;
    match value.get("error").and_then(Value::as_str) {
        Some(e) => anyhow::bail!("reload refused: {e}"),
        None => {
            println!("reloaded");
            Ok(())
        }
    }
}

/// Asks a running server for something only it knows (`mta auth`).
///
/// # Errors
/// No server listens (no socket, or a stale one), the socket cannot be reached (its
/// permissions), or the answer cannot be read: each said as such, never as an empty answer.
pub fn ask(data_dir: &Path, what: &str) -> anyhow::Result<String> {
    request(data_dir, what)?.ok_or_else(|| {
        anyhow::anyhow!(
            "no running server found (no control socket at {}): is mta serve running with \
             this config?",
            socket_path(data_dir).display()
        )
    })
}

/// Checks that this process may use `data_dir`, the directory the control socket and the
/// store are in, so that a missing or closed data dir is reported as such and never read as
/// "no server" or "empty queue".
///
/// # Errors
/// The data dir is missing, not a directory, or closed to this user.
pub fn check_data_dir(data_dir: &Path) -> anyhow::Result<()> {
    let uid = nix::unistd::geteuid();
    match std::fs::read_dir(data_dir) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => anyhow::bail!(
            "data dir {} does not exist: no server has run with this config (is --config \
             or MTA_CONFIG missing?)",
            data_dir.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => anyhow::bail!(
            "permission denied on data dir {} (running as uid {uid}): run this as the user \
             mta serves as, or as root",
            data_dir.display()
        ),
        Err(e) => Err(e).with_context(|| format!("cannot use data dir {}", data_dir.display())),
    }
}

/// Asks a running server. `Ok(None)` when no server runs: there is no control socket, or
/// nobody accepts on it (a socket left behind by a server that was killed).
///
/// # Errors
/// The data dir cannot be used ([`check_data_dir`]), the socket cannot be reached (such as
/// permission denied), or a server answers but the answer is unreadable.
pub fn request(data_dir: &Path, what: &str) -> anyhow::Result<Option<String>> {
    let path = socket_path(data_dir);
    let Some(mut stream) = send(data_dir, what)? else {
        return Ok(None);
    };
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .with_context(|| format!("reading the answer from {}", path.display()))?;
    if answer.is_empty() {
        anyhow::bail!(
            "the server closed the control socket {} without an answer",
            path.display()
        );
    }
    Ok(Some(answer))
}

/// Sends the request line `what` to a running server and returns the connection, to read
/// the answer from; `Ok(None)` when no server runs, as for [`request`].
///
/// # Errors
/// As [`request`].
pub fn send(data_dir: &Path, what: &str) -> anyhow::Result<Option<StdUnixStream>> {
    check_data_dir(data_dir)?;
    let path = socket_path(data_dir);
    let mut stream = match StdUnixStream::connect(&path) {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => anyhow::bail!(
            "permission denied on the control socket {} (running as uid {}): run this as \
             the user mta serves as, or as root",
            path.display(),
            nix::unistd::geteuid()
        ),
        Err(e) => {
            return Err(e).with_context(|| {
                format!("cannot connect to the control socket {}", path.display())
            });
        }
    };
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream
        .write_all(format!("{what}\n").as_bytes())
        .with_context(|| format!("writing to the control socket {}", path.display()))?;
    Ok(Some(stream))
}
