//! The accept loop both challenge responders share: at most a bounded number of connections
//! handled at once, a failed `accept` (out of descriptors, say) waited out rather than spun
//! on, and an end when the server stops.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tracing::warn;

/// Accepts on `listener` until `stopped`, handing each connection to `handle` on a task of
/// its own, at most `max` at once. `what` names the responder in the log.
pub async fn serve<F, Fut>(
    listener: TcpListener,
    mut stopped: watch::Receiver<bool>,
    max: usize,
    what: &'static str,
    handle: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "{what}: cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stopped.changed() => return,
        };
        let task = handle(stream, peer);
        tokio::spawn(async move {
            task.await;
            drop(permit);
        });
    }
}
