//! Server TLS: loading the certificate chain and key from PEM files into a rustls acceptor,
//! and serving renewed files without a restart ([`ReloadingCert`]).
//! TLS 1.2 and 1.3 only (rustls has nothing older), ring as the only crypto provider.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// Why the certificate or key could not be used. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file is unreadable or not PEM.
    #[error("cannot read certificate chain {path}: {reason}")]
    Cert {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The key file is unreadable or holds no private key.
    #[error("cannot read private key {path}: {reason}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the pair (for example a key that does not match the certificate).
    #[error("certificate {cert} and key {key} do not work together: {reason}")]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason.
        reason: String,
    },
}

/// Loads `cert` (a PEM chain, leaf first) and `key` (PEM, PKCS#8, PKCS#1 or SEC1) into an
/// acceptor that picks up new files by itself: see [`ReloadingCert`].
///
/// # Errors
/// [`TlsError`] naming the file that could not be used.
pub fn load_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let resolver = ReloadingCert::load(cert, key)?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Reads the chain and key and checks that they belong together.
fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| TlsError::Cert {
            path: cert.into(),
            reason: e.to_string(),
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Cert {
            path: cert.into(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Cert {
            path: cert.into(),
            reason: "no CERTIFICATE block found".into(),
        });
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.into(),
        reason: e.to_string(),
    })?;
    let pair = |reason: String| TlsError::Pair {
        cert: cert.into(),
        key: key.into(),
        reason,
    };
    let provider = rustls::crypto::ring::default_provider();
    let certified =
        CertifiedKey::from_der(chain, private, &provider).map_err(|e| pair(e.to_string()))?;
    certified.keys_match().map_err(|e| pair(e.to_string()))?;
    Ok(certified)
}

/// How often the certificate files are looked at, at most: a handshake costs two `stat`s
/// once a second, and a renewed certificate (certbot, any ACME client) is served within a
/// second of being written, with no restart or reload.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The certificate for every handshake, re-read when its files change (size, mtime or inode
/// of either). A new pair that cannot be used (half-written, key and chain apart) is logged
/// and the old one kept, and tried again at the next change.
#[derive(Debug)]
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    state: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    current: Arc<CertifiedKey>,
    stamp: Option<Stamp>,
    checked: Instant,
}

/// What identifies a version of the two files.
type Stamp = [(u64, u64, i64, i64); 2];

fn stamp(cert: &Path, key: &Path) -> Option<Stamp> {
    let one = |p: &Path| {
        let m = std::fs::metadata(p).ok()?;
        Some((m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
    };
    Some([one(cert)?, one(key)?])
}

impl ReloadingCert {
    /// Loads the pair now.
    ///
    /// # Errors
    /// [`TlsError`] naming the file that could not be used.
    pub fn load(cert: &Path, key: &Path) -> Result<ReloadingCert, TlsError> {
        let stamp = stamp(cert, key);
        let current = Arc::new(certified_key(cert, key)?);
        Ok(ReloadingCert {
            cert: cert.into(),
            key: key.into(),
            state: Mutex::new(Loaded {
                current,
                stamp,
                checked: Instant::now(),
            }),
        })
    }

    /// The pair to serve, re-read first when the files changed since the last look.
    fn current(&self) -> Arc<CertifiedKey> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.checked.elapsed() < CHECK_EVERY {
            return state.current.clone();
        }
        state.checked = Instant::now();
        let now = stamp(&self.cert, &self.key);
        if now.is_none() || now == state.stamp {
            return state.current.clone();
        }
        state.stamp = now;
        match certified_key(&self.cert, &self.key) {
            Ok(fresh) => {
                tracing::info!(cert = %self.cert.display(), "certificate files changed; serving the new certificate");
                state.current = Arc::new(fresh);
            }
            Err(e) => {
                tracing::warn!(error = %e, "certificate files changed but cannot be used; keeping the old certificate");
            }
        }
        state.current.clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// `TLSv1.3 TLS13_AES_256_GCM_SHA384`: what the session negotiated, for logs and headers.
pub fn describe(conn: &rustls::ServerConnection) -> String {
    let (version, cipher) = negotiated(conn);
    format!("{version} {cipher}")
}

/// The protocol version and cipher suite of a TLS session (server or client side), named as
/// logs, `Received` headers and queue results show them.
pub fn negotiated(conn: &rustls::CommonState) -> (String, String) {
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
        Some(other) => format!("{other:?}"),
        None => "unknown".to_string(),
    };
    let cipher = conn
        .negotiated_cipher_suite()
        .map(|s| {
            let suite = s.suite();
            suite
                .as_str()
                .map_or_else(|| format!("{suite:?}"), str::to_string)
        })
        .unwrap_or_else(|| "unknown".to_string());
    (version, cipher)
}
