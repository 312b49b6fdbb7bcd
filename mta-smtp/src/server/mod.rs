//! The SMTP server: listeners for ports 25, 587 and 465, one task per connection, bounds on
//! concurrent sessions overall and per client ([`admit`]), and a graceful stop.
//!
//! Layers, outermost first: [`Server`] (accept loops) → [`conn`] (one connection: reads,
//! writes, timeouts, TLS, password checks) → [`session`] (the state machine, no I/O) →
//! [`command`] (parsing). [`line`], [`data`] and [`idle`] frame the input and bound its
//! reads; after DATA, a message passes its listener's [`pipeline`] of [`filters`] (the
//! header checks of [`inspect`] with [`mailbox`], the inbound checks of [`authcheck`]) before
//! it is queued; [`message`] adds our trace headers; [`guards`] holds what sessions share against one
//! hostile client, with [`logins`] for password guessers; [`log_text`] is how client text reaches the log.

pub mod authcheck;
pub mod authres;
pub mod bdat;
pub mod budget;
pub mod command;
pub mod conn;
pub mod data;
pub mod dnsbl;
pub mod filters;
pub mod guards;
pub mod idle;
pub mod inspect;
pub mod line;
pub mod logins;
pub mod spf_void;
/// Kept under its old name: [`mta_core::text`] is where client text is escaped for logs.
pub use mta_core::text as log_text;
pub mod mailbox;
pub mod message;
pub mod params;
pub mod pipeline;
pub mod sending_limits;
pub mod sending_window;
pub mod session;
pub mod vouch;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use mta_core::accept_backoff::AcceptBackoff;
use mta_core::config::Config;
use mta_core::envelope::ListenerKind;
use mta_core::reply::Reply;
use mta_core::seams::{Enqueue, UserDirectory};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tracing::{Instrument, error, info, info_span, warn};

use guards::{ClientSlot, Guards};

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
    /// Sessions per client and recent AUTH failures, shared by all sessions and kept over a
    /// reload (start with `Default::default()`; the limits come from `config`).
    pub guards: Arc<Guards>,
    /// What each listener checks a message with after DATA (SPF/DKIM/DMARC on the smtp
    /// listener unless `inbound.checks` is off).
    pub pipelines: Arc<pipeline::Pipelines>,
    /// The sending limits of authenticated users (kept over a reload). In memory unless
    /// [`Shared::with_ledger`] gives it a store.
    pub sending: Arc<sending_limits::SendingLimiter>,
    /// The DNS blocklists of `[[inbound.dnsbl]]` and their kept answers.
    pub dnsbl: Arc<dnsbl::Blocklists>,
}

impl Shared {
    /// What a server starts with: no certificate, no inbound checks, no sessions or AUTH
    /// failures counted yet.
    pub fn new(
        config: Arc<Config>,
        users: Arc<dyn UserDirectory>,
        queue: Arc<dyn Enqueue>,
        shutdown: watch::Receiver<bool>,
    ) -> Shared {
        let sending = sending_limits::SendingLimiter::new(
            Arc::new(mta_core::sending::MemoryLedger::default()),
            Some(queue.clone()),
        );
        Shared {
            users,
            queue,
            sending: Arc::new(sending),
            tls: None,
            shutdown,
            pipelines: Arc::new(pipeline::Pipelines::new(&config, None)),
            dnsbl: Arc::new(dnsbl::Blocklists::new(&config)),
            config,
            guards: Arc::default(),
        }
    }

    /// The same with a certificate (`None`: without) and inbound checks (`None`: off).
    pub fn with(self, tls: Option<TlsAcceptor>, checks: Option<Arc<authcheck::Checker>>) -> Shared {
        Shared {
            tls,
            pipelines: Arc::new(pipeline::Pipelines::new(&self.config, checks)),
            ..self
        }
    }

    /// The same with the sending counters kept in `ledger` (the queue's store), the
    /// postmaster's notices queued where messages are.
    pub fn with_ledger(self, ledger: Arc<dyn mta_core::sending::SendingLedger>) -> Shared {
        let sending = sending_limits::SendingLimiter::new(ledger, Some(self.queue.clone()));
        Shared {
            sending: Arc::new(sending),
            ..self
        }
    }

    /// What a reload puts in force: a new config, certificate and inbound checks, with the
    /// users, the queue, the shutdown signal and the session and AUTH counts carried over.
    pub fn reloaded(
        &self,
        config: Arc<Config>,
        tls: TlsAcceptor,
        checks: Option<Arc<authcheck::Checker>>,
    ) -> Shared {
        Shared {
            pipelines: Arc::new(pipeline::Pipelines::new(&config, checks)),
            dnsbl: Arc::new(dnsbl::Blocklists::new(&config)),
            config,
            users: self.users.clone(),
            queue: self.queue.clone(),
            tls: Some(tls),
            shutdown: self.shutdown.clone(),
            guards: self.guards.clone(),
            sending: self.sending.clone(),
        }
    }
}

/// Bound listening sockets, before they accept anything.
pub struct Server {
    listeners: Vec<(ListenerKind, TcpListener)>,
    shared: Current,
    sessions: Arc<Semaphore>,
}

/// The [`Shared`] that new connections get. A reload puts a new one in place; sessions that
/// are open keep the one they started with, so a reload never cuts a session.
pub type Current = mta_core::swap::Swap<Shared>;

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
        let sockets = bind_sockets(&shared.config)?;
        Server::listen(shared, sockets)
    }

    /// A server listening on sockets bound earlier by [`bind_sockets`] (so that `mta serve`
    /// can bind ports below 1024 as root, then drop privileges before any runtime thread
    /// exists). Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`BindError`] when port 465 has no certificate or a socket cannot listen.
    pub fn listen(
        shared: Shared,
        sockets: Vec<(ListenerKind, TcpSocket)>,
    ) -> Result<Server, BindError> {
        if !shared.config.listen.submissions.is_empty() && shared.tls.is_none() {
            return Err(BindError::NoCertificate);
        }
        let mut bound = Vec::new();
        for (kind, socket) in sockets {
            let addr = socket.local_addr().ok();
            let l = socket
                .listen(LISTEN_BACKLOG)
                .map_err(|source| bind_error(kind, addr, source))?;
            bound.push((kind, l));
        }
        Ok(Server {
            listeners: bound,
            sessions: Arc::new(Semaphore::new(shared.config.limits.max_sessions)),
            shared: Current::new(shared),
        })
    }

    /// The handle a reload uses to put a new [`Shared`] in force.
    pub fn current(&self) -> Current {
        self.shared.clone()
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
    /// middle of DATA gets to finish it (and its `250`) within the grace period; one whose
    /// message is still incomplete at nine tenths of it gets `421 4.3.2` ([`conn`]).
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
        let shared = self.shared.get();
        let cfg = &shared.config;
        let all = cfg.limits.max_sessions as u32;
        match tokio::time::timeout(cfg.shutdown_grace, self.sessions.acquire_many(all)).await {
            Ok(_) => info!("all sessions ended"),
            Err(_) => {
                warn!(grace = ?cfg.shutdown_grace, "sessions still open after the grace period; closing them")
            }
        }
    }
}

/// The accept queue of each listener, as tokio's `TcpListener::bind` sets it.
const LISTEN_BACKLOG: u32 = 1024;

/// Binds (without listening) a socket for every configured listener. Needs no runtime, so
/// `mta serve` calls it before any thread exists; [`Server::listen`] takes the sockets.
///
/// # Errors
/// [`BindError`] naming the first address that could not be bound.
pub fn bind_sockets(config: &Config) -> Result<Vec<(ListenerKind, TcpSocket)>, BindError> {
    let mut listeners = Vec::new();
    for (kind, addrs) in [
        (ListenerKind::Smtp, &config.listen.smtp),
        (ListenerKind::Submission, &config.listen.submission),
        (ListenerKind::Submissions, &config.listen.submissions),
    ] {
        for addr in addrs {
            let socket = match addr {
                SocketAddr::V4(_) => TcpSocket::new_v4(),
                SocketAddr::V6(_) => TcpSocket::new_v6(),
            };
            // SO_REUSEADDR, as tokio's TcpListener::bind sets it: a restart can bind at once.
            let socket = socket
                .and_then(|s| s.set_reuseaddr(true).map(|()| s))
                .and_then(|s| s.bind(*addr).map(|()| s))
                .map_err(|source| bind_error(kind, Some(*addr), source))?;
            listeners.push((kind, socket));
        }
    }
    Ok(listeners)
}

fn bind_error(kind: ListenerKind, addr: Option<SocketAddr>, source: std::io::Error) -> BindError {
    BindError::Bind {
        kind: kind.name(),
        addr: addr.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
        source,
    }
}

static NEXT_SESSION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

async fn accept_loop(
    current: Current,
    sessions: Arc<Semaphore>,
    kind: ListenerKind,
    listener: TcpListener,
) {
    let mut shutdown = current.get().shutdown.clone();
    let mut backoff = AcceptBackoff::new();
    loop {
        let accepted = tokio::select! {
            () = stopping(&mut shutdown) => return,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => {
                let unlogged = backoff.succeeded();
                if unlogged > 0 {
                    warn!(
                        listener = kind.name(),
                        unlogged, "accepting again after failures"
                    );
                }
                pair
            }
            Err(e) => {
                // EMFILE and friends fail again at once: pause, and log only now and then.
                let after = backoff.failed(std::time::Instant::now());
                if let Some(unlogged) = after.log {
                    error!(error = %e, listener = kind.name(), unlogged, pause = ?after.pause, "accept failed");
                }
                tokio::select! {
                    () = stopping(&mut shutdown) => return,
                    () = tokio::time::sleep(after.pause) => {}
                }
                continue;
            }
        };
        let shared = current.get();
        let admission = match admit(&shared, &sessions, peer.ip()) {
            Ok(admission) => admission,
            Err(reply) => {
                warn!(%peer, listener = kind.name(), reply = %reply, "connection refused");
                // On the implicit-TLS port the client's first bytes are a TLS handshake and
                // it cannot read a plaintext reply: the refusal there is the close alone.
                if kind != ListenerKind::Submissions {
                    refuse(tcp, &reply);
                }
                continue;
            }
        };
        let id = NEXT_SESSION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let span = info_span!("session", id, %peer, listener = kind.name());
        let open = mta_core::metrics::METRICS.session(kind.name());
        tokio::spawn(
            async move {
                info!("connected");
                conn::serve(shared, tcp, peer, kind).await;
                info!("disconnected");
                drop(open);
                drop(admission);
            }
            .instrument(span),
        );
    }
}

/// A session's places in the overall count and in its client's; dropping it frees both.
pub struct Admission {
    _client: ClientSlot,
    _permit: OwnedSemaphorePermit,
}

/// Room for one more session from `ip`, or the `421` that refuses it: more than
/// `limits.max_sessions_per_ip` from that client, `limits.max_sessions_per_network` from its
/// network, a fifth of `limits.max_sessions` from its block (IPv4 /16, IPv6 /32), or
/// `limits.max_sessions` in all.
///
/// # Errors
/// [`Reply::TOO_MANY_FROM_IP`], [`Reply::TOO_MANY_FROM_NETWORK`] or [`Reply::TOO_BUSY`].
pub fn admit(shared: &Shared, sessions: &Arc<Semaphore>, ip: IpAddr) -> Result<Admission, Reply> {
    let limits = &shared.config.limits;
    let caps = guards::SessionCaps::from_limits(
        limits.max_sessions,
        limits.max_sessions_per_ip,
        limits.max_sessions_per_network,
    );
    let client = shared
        .guards
        .sessions
        .enter(ip, caps)
        .map_err(|crowded| match crowded {
            guards::Crowded::Client => Reply::TOO_MANY_FROM_IP,
            guards::Crowded::Network | guards::Crowded::Block => Reply::TOO_MANY_FROM_NETWORK,
        })?;
    let permit = sessions
        .clone()
        .try_acquire_owned()
        .map_err(|_| Reply::TOO_BUSY)?;
    Ok(Admission {
        _client: client,
        _permit: permit,
    })
}

/// Answers a connection we will not serve and closes it, without waiting: a fresh socket's
/// send buffer has room for one line, and a flood of refused connections must not cost a
/// task (and a file descriptor for seconds) each.
fn refuse(tcp: TcpStream, reply: &Reply) {
    if let Ok(mut stream) = tcp.into_std() {
        let _ = std::io::Write::write(&mut stream, reply.to_wire().as_bytes());
    }
}

/// Resolves once the server is told to stop (the value turns `true`). If the sending side
/// is gone, never: that is not a request to stop.
pub(crate) async fn stopping(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mta_core::auth::UserDb;
    use mta_core::envelope::Envelope;
    use mta_core::seams::{BoxFuture, EnqueueError};

    struct NoUsers;
    impl UserDirectory for NoUsers {
        fn current(&self) -> Arc<UserDb> {
            Arc::new(UserDb::default())
        }
    }
    struct NoQueue;
    impl Enqueue for NoQueue {
        fn enqueue(&self, _: Envelope, _: Vec<u8>) -> BoxFuture<'_, Result<(), EnqueueError>> {
            Box::pin(async { Err(EnqueueError::Io("not in this test".into())) })
        }
    }

    #[test]
    fn admission_per_client_and_overall() {
        let mut config = Config::defaults("mx.test").unwrap();
        config.limits.max_sessions_per_ip = 2;
        let shared = Shared::new(
            Arc::new(config),
            Arc::new(NoUsers),
            Arc::new(NoQueue),
            watch::channel(false).1,
        );
        let sessions = Arc::new(Semaphore::new(3));
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let a1 = admit(&shared, &sessions, ip("192.0.2.1")).unwrap();
        let a2 = admit(&shared, &sessions, ip("::ffff:192.0.2.1")).unwrap();
        let refused = admit(&shared, &sessions, ip("192.0.2.1")).err();
        assert_eq!(refused, Some(Reply::TOO_MANY_FROM_IP));
        let b1 = admit(&shared, &sessions, ip("2001:db8::1")).unwrap();
        let busy = admit(&shared, &sessions, ip("198.51.100.1")).err();
        assert_eq!(busy, Some(Reply::TOO_BUSY), "three sessions in all");
        assert_eq!(
            admit(&shared, &sessions, ip("2001:db8::2")).err(),
            Some(Reply::TOO_BUSY),
            "a refusal overall frees the client's place again"
        );
        drop(a1);
        let a3 = admit(&shared, &sessions, ip("192.0.2.1")).unwrap();
        drop((a2, a3, b1));
        assert_eq!(shared.guards.sessions.clients(), 0);
        assert_eq!(sessions.available_permits(), 3);
    }

    #[tokio::test]
    async fn only_true_means_stop() {
        let (tx, mut rx) = watch::channel(false);
        tx.send(false).unwrap();
        let early =
            tokio::time::timeout(std::time::Duration::from_millis(50), stopping(&mut rx)).await;
        assert!(early.is_err(), "a change to false is not a stop");
        drop(tx);
        let gone =
            tokio::time::timeout(std::time::Duration::from_millis(50), stopping(&mut rx)).await;
        assert!(gone.is_err(), "a dropped sender is not a stop");
        let (tx, mut rx) = watch::channel(false);
        tx.send(true).unwrap();
        stopping(&mut rx).await;
    }
}
