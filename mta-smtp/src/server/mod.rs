//! The SMTP server: listeners for ports 25, 587 and 465, one task per connection, a bound
//! on concurrent sessions, and a graceful stop.
//!
//! Layers, outermost first: [`Server`] (accept loops) → [`conn`] (one connection: reads,
//! writes, timeouts, TLS) → [`session`] (the state machine, no I/O) → [`command`] (parsing).
//! [`line`] and [`data`] frame the input; [`message`] adds our trace headers.

pub mod command;
pub mod conn;
pub mod data;
pub mod inspect;
pub mod limits;
pub mod line;
pub mod message;
pub mod session;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mta_core::config::Config;
use mta_core::envelope::ListenerKind;
use mta_core::reply::Reply;
use mta_core::seams::{Enqueue, UserDirectory};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tracing::{Instrument, error, info, info_span, warn};

/// What every connection task shares.
pub struct Shared {
    /// The validated config.
    pub config: Arc<Config>,
    /// Users for AUTH and recipient checks.
    pub users: Arc<dyn UserDirectory>,
    /// Where accepted messages go.
    pub queue: Arc<dyn Enqueue>,
    /// The certificate, if any (STARTTLS and port 465 need it).
    pub tls: Option<TlsAcceptor>,
    /// Turns true when the server is stopping.
    pub shutdown: watch::Receiver<bool>,
    /// Per-address session counts and AUTH failures (start with `Default::default()`).
    pub guards: limits::Guards,
}

/// Bound listening sockets, before they accept anything.
pub struct Server {
    listeners: Vec<(ListenerKind, TcpListener)>,
    shared: Arc<Shared>,
    sessions: Arc<Semaphore>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// A listen address could not be bound (in use, no permission, no such address).
    #[error("cannot listen on {addr} (listen.{kind})")]
    Bind {
        /// The config key.
        kind: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Port 465 is configured but there is no certificate.
    #[error("listen.submissions needs a TLS certificate")]
    NoCertificate,
}

impl Server {
    /// Binds every configured listener.
    ///
    /// # Errors
    /// [`BindError`] naming the first address that could not be bound.
    pub async fn bind(shared: Shared) -> Result<Server, BindError> {
        let cfg = shared.config.clone();
        if !cfg.listen.submissions.is_empty() && shared.tls.is_none() {
            return Err(BindError::NoCertificate);
        }
        let mut listeners = Vec::new();
        for (kind, addrs) in [
            (ListenerKind::Smtp, &cfg.listen.smtp),
            (ListenerKind::Submission, &cfg.listen.submission),
            (ListenerKind::Submissions, &cfg.listen.submissions),
        ] {
            for addr in addrs {
                let l = TcpListener::bind(addr)
                    .await
                    .map_err(|source| BindError::Bind {
                        kind: kind.name(),
                        addr: *addr,
                        source,
                    })?;
                listeners.push((kind, l));
            }
        }
        Ok(Server {
            listeners,
            sessions: Arc::new(Semaphore::new(cfg.limits.max_sessions)),
            shared: Arc::new(shared),
        })
    }

    /// The bound addresses (with the real ports when port 0 was configured).
    pub fn local_addrs(&self) -> Vec<(ListenerKind, SocketAddr)> {
        self.listeners
            .iter()
            .filter_map(|(k, l)| l.local_addr().ok().map(|a| (*k, a)))
            .collect()
    }

    /// Accepts connections until shutdown, then waits up to `shutdown_grace` for sessions
    /// to end. Sessions waiting for a command are told `421` at once; a session in the
    /// middle of DATA gets to finish it (and its `250`) within the grace period.
    pub async fn run(self) {
        let mut tasks = Vec::new();
        for (kind, listener) in self.listeners {
            let shared = self.shared.clone();
            let sessions = self.sessions.clone();
            tasks.push(tokio::spawn(accept_loop(shared, sessions, kind, listener)));
        }
        for t in tasks {
            let _ = t.await;
        }
        let cfg = &self.shared.config;
        let all = cfg.limits.max_sessions as u32;
        match tokio::time::timeout(cfg.shutdown_grace, self.sessions.acquire_many(all)).await {
            Ok(_) => info!("all sessions ended"),
            Err(_) => {
                warn!(grace = ?cfg.shutdown_grace, "sessions still open after the grace period; closing them")
            }
        }
    }
}

static NEXT_SESSION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

async fn accept_loop(
    shared: Arc<Shared>,
    sessions: Arc<Semaphore>,
    kind: ListenerKind,
    listener: TcpListener,
) {
    let mut shutdown = shared.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => return,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                error!(error = %e, listener = kind.name(), "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = sessions.clone().try_acquire_owned() else {
            tokio::spawn(refuse(tcp, Reply::TOO_BUSY));
            warn!(%peer, "too many sessions; refused");
            continue;
        };
        let Some(ip_slot) = shared.guards.per_ip.enter(peer.ip()) else {
            tokio::spawn(refuse(tcp, Reply::TOO_MANY_FROM_IP));
            warn!(%peer, "too many sessions from this address; refused");
            continue;
        };
        let id = NEXT_SESSION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let span = info_span!("session", id, %peer, listener = kind.name());
        let shared = shared.clone();
        tokio::spawn(
            async move {
                info!("connected");
                conn::serve(shared, tcp, peer, kind).await;
                info!("disconnected");
                drop(ip_slot);
                drop(permit);
            }
            .instrument(span),
        );
    }
}

async fn refuse(mut tcp: TcpStream, reply: Reply) {
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        tcp.write_all(reply.to_wire().as_bytes()),
    )
    .await;
}
