//! The HTTP-01 challenge responder (RFC 8555 §8.3): the CA fetches
//! `http://NAME/.well-known/acme-challenge/TOKEN` and must get the key authorization of a
//! token we are waiting for. Nothing else is served: any other request, method or token gets
//! `404`. Each request head is at most [`MAX_REQUEST`] bytes and [`REQUEST_TIME`] long, and
//! at most [`MAX_CONNECTIONS`] are served at once; a client past a bound is logged and
//! dropped. No request body is read; the connection is closed after one answer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, info};

/// Largest request head read (request line and headers).
pub const MAX_REQUEST: usize = 4096;
/// How long a client may take to send its request head.
pub const REQUEST_TIME: Duration = Duration::from_secs(10);
/// Connections served at once; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 64;
/// The path before the token.
const PREFIX: &str = "/.well-known/acme-challenge/";

/// Tokens being validated → their key authorizations.
#[derive(Debug, Clone, Default)]
pub struct Tokens(Arc<Mutex<HashMap<String, String>>>);

impl Tokens {
    /// Answers `token` with `key_authorization` until removed.
    pub fn insert(&self, token: &str, key_authorization: &str) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(token.to_string(), key_authorization.to_string());
    }

    /// Stops answering every token.
    pub fn clear(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    fn get(&self, token: &str) -> Option<String> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(token).cloned()
    }
}

/// What a request head asks for: the token of a `GET` for a challenge path, else nothing.
/// The token is base64url (RFC 8555 §8.3: at least 128 bits of entropy, no padding).
pub fn requested_token(head: &[u8]) -> Option<&str> {
    let end = head.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&head[..end]).ok()?;
    let rest = line.strip_prefix("GET ")?;
    let (target, version) = rest.split_once(' ')?;
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return None;
    }
    let token = target.strip_prefix(PREFIX)?;
    let base64url = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    (!token.is_empty() && token.bytes().all(base64url)).then_some(token)
}

/// Serves challenges on `listener` until `stopped`.
pub async fn serve(listener: TcpListener, tokens: Tokens, stopped: watch::Receiver<bool>) {
    super::accept::serve(
        listener,
        stopped,
        MAX_CONNECTIONS,
        "acme http-01",
        move |stream, peer| {
            let tokens = tokens.clone();
            async move { answer(stream, peer, &tokens).await }
        },
    )
    .await;
}

/// Reads one request head within the bounds and answers it.
async fn answer(mut stream: TcpStream, peer: SocketAddr, tokens: &Tokens) {
    let head = match tokio::time::timeout(REQUEST_TIME, read_head(&mut stream)).await {
        Ok(Ok(head)) => head,
        Ok(Err(why)) => {
            info!(%peer, "acme http-01: request dropped: {why}");
            let _ = stream.write_all(&reply(400, "")).await;
            return;
        }
        Err(_) => {
            info!(%peer, "acme http-01: request dropped: no complete request within {}s", REQUEST_TIME.as_secs());
            return;
        }
    };
    let found = requested_token(&head).and_then(|t| Some((t, tokens.get(t)?)));
    let response = match found {
        Some((token, key_authorization)) => {
            info!(%peer, token, "acme http-01: challenge answered");
            reply(200, &key_authorization)
        }
        None => {
            debug!(%peer, "acme http-01: not a challenge we wait for: 404");
            reply(404, "")
        }
    };
    let _ = tokio::time::timeout(REQUEST_TIME, stream.write_all(&response)).await;
    let _ = stream.shutdown().await;
}

/// The request head, up to and with the blank line.
async fn read_head(stream: &mut TcpStream) -> Result<Vec<u8>, String> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before the end of the request".into());
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(head);
        }
        if head.len() >= MAX_REQUEST {
            return Err(format!("request head longer than {MAX_REQUEST} bytes"));
        }
    }
}

fn reply(status: u16, body: &str) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        _ => "Not Found",
    };
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The obvious reading: the first line split at spaces into exactly three parts.
    fn model(head: &[u8]) -> Option<String> {
        // Only the request line counts; the headers may be any bytes.
        let text = String::from_utf8_lossy(head);
        let (line, _) = text.split_once("\r\n")?;
        if line.contains('\u{fffd}') {
            return None;
        }
        let parts: Vec<&str> = line.split(' ').collect();
        if parts.len() != 3 || parts[0] != "GET" {
            return None;
        }
        if !["HTTP/1.0", "HTTP/1.1"].contains(&parts[2]) {
            return None;
        }
        let token = parts[1].strip_prefix("/.well-known/acme-challenge/")?;
        let ok = !token.is_empty()
            && token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        ok.then(|| token.to_string())
    }

    #[test]
    fn known_requests() {
        let t = |s: &str| requested_token(s.as_bytes()).map(str::to_string);
        assert_eq!(
            t("GET /.well-known/acme-challenge/Ab-_9 HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some("Ab-_9".into())
        );
        for bad in [
            "POST /.well-known/acme-challenge/abc HTTP/1.1\r\n\r\n",
            "GET /.well-known/acme-challenge/ HTTP/1.1\r\n\r\n",
            "GET /.well-known/acme-challenge/a/../b HTTP/1.1\r\n\r\n",
            "GET /.well-known/acme-challenge/abc HTTP/2\r\n\r\n",
            "GET /.well-known/acme-challenge/abc HTTP/1.1 x\r\n\r\n",
            "GET /index.html HTTP/1.1\r\n\r\n",
            "GET /.well-known/acme-challenge/abc HTTP/1.1",
        ] {
            assert_eq!(t(bad), None, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn matches_the_model(
            method in prop::sample::select(vec!["GET", "HEAD", "get", "GET "]),
            path in prop::sample::select(vec!["/.well-known/acme-challenge/", "/.well-known/acme-challenge", "/x/"]),
            token in "[A-Za-z0-9_./ %-]{0,12}",
            version in prop::sample::select(vec!["HTTP/1.1", "HTTP/1.0", "HTTP/2", "HTTP/1.1 "]),
            end in prop::sample::select(vec!["\r\n\r\n", "\n\n", "\r\n", ""]),
            noise in proptest::collection::vec(any::<u8>(), 0..8),
        ) {
            let mut head = format!("{method} {path}{token} {version}{end}").into_bytes();
            head.extend_from_slice(&noise);
            prop_assert_eq!(requested_token(&head).map(str::to_string), model(&head));
        }
    }
}
