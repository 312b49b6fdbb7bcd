//! `[acme]`: `mta serve` obtains its certificate from an ACME CA (RFC 8555) and renews it by
//! itself. The HTTP-01 listener is bound before privileges are dropped ([`bind`]); the task
//! ([`start`]) then loops: wait until the certificate is due (or absent, or not covering every
//! name, or after a failure, with backoff), issue ([`client::issue`]), store the chain and key
//! in `data_dir/acme/` (0600, durable), and serve them from the next handshake on through the
//! live resolver ([`serve_into`], also called by every (re)load of the TLS setup, which then
//! serves the stored certificate). A failure keeps the current certificate and is logged,
//! counted in `status.json` for `mta doctor`, and retried ([`schedule`]).

mod accept;
pub mod alpn;
mod client;
pub mod http01;
pub mod schedule;
pub mod status;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use mta_core::config::{Acme, Challenge, Config};
use mta_smtp::tls::SniCerts;
use rustls::sign::CertifiedKey;
use tokio::sync::watch;
use tracing::{info, warn};

use status::Status;

/// Why an attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// The CA answered with an error, or something we could not use.
    #[error("the CA: {0}")]
    Ca(String),
    /// instant-acme's error: the CA's problem document, HTTP or a timeout.
    #[error("{0}")]
    Acme(#[from] instant_acme::Error),
    /// Something on our side: the root file, the key, the CSR.
    #[error("{0}")]
    Setup(String),
    /// The certificate or account could not be written.
    #[error("cannot store: {0}")]
    Store(String),
}

/// What answers the CA's challenges: HTTP-01 tokens or TLS-ALPN-01 certificates.
#[derive(Debug, Clone, Default)]
pub struct Challenges {
    /// HTTP-01: token → key authorization.
    pub tokens: http01::Tokens,
    /// TLS-ALPN-01: name → challenge certificate.
    pub alpn: alpn::AlpnCerts,
}

impl Challenges {
    /// Stops answering anything.
    pub fn clear(&self) {
        self.tokens.clear();
        self.alpn.clear();
    }
}

/// The longest sleep between two looks at the clock: a wall-clock step moves the next
/// renewal by at most this.
const MAX_SLEEP: Duration = Duration::from_secs(3600);
/// The least time between two issuances, whatever `acme.renew_before` says (one longer than
/// the certificate's lifetime would otherwise order certificates without end).
const MIN_BETWEEN: Duration = Duration::from_secs(30);

/// The resolver of the TLS setup now serving, for certificates obtained later.
static LIVE: Mutex<Option<Arc<SniCerts>>> = Mutex::new(None);

/// `data_dir/acme`.
pub fn dir(config: &Config) -> PathBuf {
    config.data_dir.join("acme")
}

/// The challenge socket (HTTP-01 or TLS-ALPN-01), bound now (it listens once the runtime runs: [`start`]) (port 80 needs root or `CAP_NET_BIND_SERVICE`, so this
/// runs before privileges are dropped). `None` when `[acme]` is off.
///
/// # Errors
/// The address cannot be bound.
pub fn bind(config: &Config) -> anyhow::Result<Option<tokio::net::TcpSocket>> {
    let Some(acme) = &config.acme else {
        return Ok(None);
    };
    let (addr, key) = match acme.challenge {
        Challenge::Http01 => (acme.http_listen, "acme.http_listen"),
        Challenge::TlsAlpn01 => (acme.tls_alpn_listen, "acme.tls_alpn_listen"),
    };
    let socket = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .with_context(|| format!("{key}: cannot make a socket"))?;
    socket.set_reuseaddr(true)?;
    socket
        .bind(addr)
        .with_context(|| format!("{key}: cannot bind {addr}"))?;
    Ok(Some(socket))
}

/// What `mta serve` and `mta check-config` check before the start: `acme.ca_root` is a
/// readable PEM file with a certificate. The CA itself is only asked once serving.
pub fn preflight(config: &Config) -> Option<String> {
    let root = config.acme.as_ref()?.ca_root.as_ref()?;
    client::roots(root).err()
}

/// Makes `resolver` the one that obtained certificates go into, and serves the stored
/// certificate through it when there is one. Called each time the TLS setup is loaded.
pub fn serve_into(config: &Config, resolver: &Arc<SniCerts>) {
    *LIVE.lock().unwrap_or_else(|e| e.into_inner()) = Some(resolver.clone());
    let Some(acme) = &config.acme else {
        return;
    };
    let (cert, key) = files(config);
    if !cert.exists() {
        return;
    }
    match mta_smtp::tls::certified_key(&cert, &key) {
        Ok(certified) => install(config, acme, certified),
        Err(e) => {
            warn!(error = %e, "acme: the stored certificate cannot be used; a new one will be ordered")
        }
    }
}

/// `data_dir/acme/cert.pem` and `key.pem`.
fn files(config: &Config) -> (PathBuf, PathBuf) {
    let dir = dir(config);
    (dir.join("cert.pem"), dir.join("key.pem"))
}

/// Serves `key` for each name (and for clients without a name when the hostname is one).
fn install(config: &Config, acme: &Acme, key: CertifiedKey) {
    let Some(resolver) = LIVE.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
        return;
    };
    let host = config.hostname.as_str().to_ascii_lowercase();
    for name in &acme.names {
        let set = if *name == host && config.tls.cert.is_none() {
            resolver.set_default(name, key.clone())
        } else {
            resolver.set(name, key.clone())
        };
        if let Err(why) = set {
            warn!(%name, "acme: the certificate does not cover the name: {why}");
        }
    }
    if let Some((_, not_after)) = validity(&key) {
        for name in &acme.names {
            mta_core::metrics::METRICS.set_certificate_expiry(name, unix(not_after));
        }
    }
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The leaf's validity period.
pub fn validity(key: &CertifiedKey) -> Option<(SystemTime, SystemTime)> {
    let leaf = key.end_entity_cert().ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
    let at = |t: x509_parser::time::ASN1Time| {
        let secs = u64::try_from(t.timestamp()).ok()?;
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
    };
    Some((
        at(cert.validity().not_before)?,
        at(cert.validity().not_after)?,
    ))
}

/// Starts the challenge responder on `socket` and the renewal task, until `stopped`.
pub fn start(config: Arc<Config>, socket: tokio::net::TcpSocket, stopped: watch::Receiver<bool>) {
    let Some(acme) = config.acme.clone() else {
        return;
    };
    let answer = Challenges::default();
    match (socket.listen(1024), acme.challenge) {
        (Ok(listener), Challenge::Http01) => {
            let tokens = answer.tokens.clone();
            tokio::spawn(http01::serve(listener, tokens, stopped.clone()));
        }
        (Ok(listener), Challenge::TlsAlpn01) => {
            let certs = answer.alpn.clone();
            tokio::spawn(alpn::serve(listener, certs, stopped.clone()));
        }
        (Err(e), kind) => warn!(error = %e, "acme: the {} listener cannot be used", kind.name()),
    }
    tokio::spawn(renew_loop(config, acme, answer, stopped));
}

/// What the loop knows between attempts.
struct Loop {
    failures: u32,
    retry_at: Option<SystemTime>,
    random: ring::rand::SystemRandom,
}

impl Loop {
    fn random(&self) -> u64 {
        let bytes: [u8; 8] = ring::rand::generate(&self.random).map_or([0; 8], |r| r.expose());
        u64::from_le_bytes(bytes)
    }
}

async fn renew_loop(
    config: Arc<Config>,
    acme: Acme,
    answer: Challenges,
    mut stopped: watch::Receiver<bool>,
) {
    let dir = dir(&config);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        warn!(dir = %dir.display(), error = %e, "acme: cannot make the directory; no certificates");
        return;
    }
    let retry_after = client::RetryAfter::default();
    let mut state = Loop {
        failures: 0,
        retry_at: None,
        random: ring::rand::SystemRandom::new(),
    };
    let mut status = Status::read(&dir).unwrap_or_default();
    status.names.clone_from(&acme.names);
    let jitter = state.random();
    loop {
        let due = due(&config, &acme, jitter);
        let wake = match state.retry_at {
            Some(retry) => due.max(retry),
            None => due,
        };
        status.next_attempt = Some(unix(wake));
        status.write(&dir);
        let wait = wake
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .min(MAX_SLEEP);
        if !wait.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(wait) => continue,
                _ = stopped.changed() => return,
            }
        }
        status.last_attempt = Some(unix(SystemTime::now()));
        let attempt = tokio::select! {
            r = attempt(&config, &acme, &dir, &answer, &retry_after) => r,
            _ = stopped.changed() => return,
        };
        answer.clear();
        match attempt {
            Ok(not_after) => {
                state.failures = 0;
                state.retry_at = Some(SystemTime::now() + MIN_BETWEEN);
                status.last_error = None;
                status.not_after = Some(unix(not_after));
            }
            Err(e) => {
                state.failures += 1;
                let now = SystemTime::now();
                let delay = schedule::retry_delay(state.failures, retry_after.take(), now);
                state.retry_at = Some(now + delay);
                let text = mta_core::text::escape(&e.to_string()).to_string();
                warn!(names = ?acme.names, failures = state.failures, retry_in_s = delay.as_millis().div_ceil(1000), error = %text, "acme: no certificate this time; keeping the current one");
                status.last_error = Some(text);
            }
        }
    }
}

/// When the stored certificate must be replaced: now when there is none, it cannot be read
/// or does not cover every name; else its renewal time.
fn due(config: &Config, acme: &Acme, random: u64) -> SystemTime {
    let (cert, key) = files(config);
    let Ok(current) = mta_smtp::tls::certified_key(&cert, &key) else {
        return SystemTime::now();
    };
    if acme
        .names
        .iter()
        .any(|n| mta_smtp::tls::covers(&current, n).is_err())
    {
        return SystemTime::now();
    }
    match validity(&current) {
        Some((not_before, not_after)) => {
            schedule::renew_at(not_before, not_after, acme.renew_before, random)
        }
        None => SystemTime::now(),
    }
}

/// One issuance, stored and served; the new certificate's expiry.
async fn attempt(
    config: &Config,
    acme: &Acme,
    dir: &Path,
    answer: &Challenges,
    retry_after: &client::RetryAfter,
) -> Result<SystemTime, AcmeError> {
    info!(names = ?acme.names, directory = %acme.directory, "acme: ordering a certificate");
    let (cert, key) = files(config);
    let reuse = std::fs::read_to_string(&key).ok();
    let issued = client::issue(acme, dir, answer, retry_after, reuse.as_deref()).await?;
    // Checked before anything is replaced: what the CA sent must work with our key.
    let (new_cert, new_key) = (dir.join("cert.pem.new"), dir.join("key.pem.new"));
    let store = |path: &Path, bytes: &[u8]| {
        mta_core::durable_file::write(path, bytes, 0o600)
            .map_err(|e| AcmeError::Store(format!("{}: {e}", path.display())))
    };
    store(&new_cert, issued.chain_pem.as_bytes())?;
    store(&new_key, issued.key_pem.as_bytes())?;
    let certified = mta_smtp::tls::certified_key(&new_cert, &new_key)
        .map_err(|e| AcmeError::Ca(format!("the certificate cannot be used: {e}")))?;
    if let Some(name) = acme
        .names
        .iter()
        .find(|n| mta_smtp::tls::covers(&certified, n).is_err())
    {
        return Err(AcmeError::Ca(format!(
            "the certificate does not cover {name}"
        )));
    }
    let rename = |from: &Path, to: &Path| {
        std::fs::rename(from, to).map_err(|e| AcmeError::Store(format!("{}: {e}", to.display())))
    };
    rename(&new_key, &key)?;
    rename(&new_cert, &cert)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    let not_after = validity(&certified).map_or(SystemTime::now(), |(_, a)| a);
    install(config, acme, certified);
    info!(names = ?acme.names, not_after = unix(not_after), "acme: certificate obtained and served");
    Ok(not_after)
}
