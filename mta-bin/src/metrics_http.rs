//! The metrics endpoint (`metrics.listen`): `GET /metrics` answers with
//! [`mta_core::metrics::METRICS`] in the OpenMetrics text format; anything else gets `404` or
//! `405`. One request per connection, the request head bounded in size and time, so a scraper
//! that misbehaves costs one short-lived task.
//!
//! A scrape reads counters, never the queue: the message count is kept up to date by the
//! store and the oldest message is the first record. At most [`MAX_SCRAPES`] scrapes are
//! answered at once; more get `503` at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use mta_core::accept_backoff::AcceptBackoff;
use mta_core::metrics::METRICS;
use mta_queue::Queue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::warn;

/// The longest request head read.
const MAX_REQUEST: usize = 8 * 1024;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Scrapes answered at once.
pub const MAX_SCRAPES: usize = 4;

/// Binds `addr`; the returned address has the real port when `addr` asked for port 0.
///
/// # Errors
/// The address cannot be bound.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (metrics.listen)"))?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// Serves scrapes until `stop` turns true.
pub async fn serve(listener: TcpListener, queue: Arc<Queue>, mut stop: watch::Receiver<bool>) {
    let mut backoff = AcceptBackoff::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPES));
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((mut stream, _)) => {
                let unlogged = backoff.succeeded();
                if unlogged > 0 {
                    warn!(unlogged, "metrics accepting again after failures");
                }
                let queue = queue.clone();
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    tokio::spawn(async move {
                        let busy = "too many scrapes at once\n";
                        let _ = respond(&mut stream, "503 Service Unavailable", "text/plain", busy)
                            .await;
                    });
                    continue;
                };
                tokio::spawn(async move {
                    if let Err(e) = answer(stream, &queue).await {
                        warn!(error = %e, "metrics request failed");
                    }
                    drop(slot);
                });
            }
            Err(e) => {
                // Out of descriptors the next accept fails at once: pause, log rarely.
                let after = backoff.failed(std::time::Instant::now());
                if let Some(unlogged) = after.log {
                    warn!(error = %e, unlogged, pause = ?after.pause, "metrics accept failed");
                }
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    () = tokio::time::sleep(after.pause) => {}
                }
            }
        }
    }
}

async fn answer(mut stream: TcpStream, queue: &Queue) -> std::io::Result<()> {
    let head = match tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(Some(head))) => head,
        Ok(Ok(None)) | Err(_) => {
            return respond(
                &mut stream,
                "400 Bad Request",
                "text/plain",
                "bad request\n",
            )
            .await;
        }
        Ok(Err(e)) => return Err(e),
    };
    let mut words = head.split_ascii_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    match (method, path) {
        ("GET", "/metrics") => {
            update_queue_gauges(queue);
            let body = METRICS.render();
            respond(
                &mut stream,
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                &body,
            )
            .await
        }
        (_, "/metrics") => {
            respond(
                &mut stream,
                "405 Method Not Allowed",
                "text/plain",
                "GET only\n",
            )
            .await
        }
        _ => respond(&mut stream, "404 Not Found", "text/plain", "see /metrics\n").await,
    }
}

/// The request line and headers, up to the blank line; `None` when it is too long or the
/// client closed first.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            return Ok(Some(String::from_utf8_lossy(&buf).into_owned()));
        }
        if buf.len() > MAX_REQUEST {
            return Ok(None);
        }
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// The queue's size (counted along by the store) and the time its oldest message (the first
/// record, as ids sort by arrival) has spent in the queue, without reading the rest of the
/// queue. A store that cannot be read sets `mta_queue_store_unavailable` and leaves the last
/// values: an empty queue it does not know of would silence the alerts.
fn update_queue_gauges(queue: &Queue) {
    let oldest = match queue.store().oldest_record() {
        Ok(first) => first.map_or(0, |r| mta_queue::scheduler::time_in_queue(&r).as_secs()),
        Err(e) => {
            warn!(error = %e, "metrics: cannot read the queue");
            METRICS.set_queue_unavailable();
            return;
        }
    };
    METRICS.set_queue(queue.store().count(), oldest);
}
