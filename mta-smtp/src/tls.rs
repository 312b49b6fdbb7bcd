//! Server TLS: loading the certificate chain and key from PEM files into a rustls acceptor,
//! serving renewed files without a restart ([`ReloadingCert`]), and a certificate per name
//! the client asks for (SNI, RFC 6066 §3: [`SniCerts`]).
//! TLS 1.2 and 1.3 only (rustls has nothing older), ring as the only crypto provider.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
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
    /// The certificate configured for a name does not cover it.
    #[error("certificate {cert} for tls.{name:?} is not valid for {name}: {reason}")]
    Name {
        /// The certificate file.
        cert: PathBuf,
        /// The name.
        name: String,
        /// Why (webpki's reason).
        reason: String,
    },
}

/// True when the leaf of `key` is valid for the DNS name `name` (its subject alternative
/// names, wildcards as RFC 6125 §6.4.3 allows them), as a client that verifies would judge.
///
/// # Errors
/// Why not, in webpki's words.
pub fn covers(key: &CertifiedKey, name: &str) -> Result<(), String> {
    let server = rustls::pki_types::ServerName::try_from(name.to_string())
        .map_err(|e| format!("{name:?} is not a DNS name: {e}"))?;
    let leaf = key.end_entity_cert().map_err(|e| e.to_string())?;
    let cert = webpki::EndEntityCert::try_from(leaf).map_err(|e| format!("{e:?}"))?;
    cert.verify_is_valid_for_subject_name(&server)
        .map_err(|e| format!("{e:?}"))
}

/// Loads `cert` (a PEM chain, leaf first) and `key` (PEM, PKCS#8, PKCS#1 or SEC1) into an
/// acceptor that picks up new files by itself: see [`ReloadingCert`].
///
/// # Errors
/// [`TlsError`] naming the file that could not be used.
pub fn load_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    Ok(load_sni_acceptor(cert, key, &BTreeMap::new())?.0)
}

/// [`load_acceptor`] with a certificate for each of `names` (name → chain and key files),
/// each of which must cover its name; also returns the resolver, for certificates set later.
///
/// # Errors
/// [`TlsError`] naming the file that could not be used, or the name it does not cover.
pub fn load_sni_acceptor(
    cert: &Path,
    key: &Path,
    names: &BTreeMap<String, (PathBuf, PathBuf)>,
) -> Result<(TlsAcceptor, Arc<SniCerts>), TlsError> {
    let resolver = Arc::new(SniCerts::new(ReloadingCert::load(cert, key)?));
    for (name, (cert, key)) in names {
        resolver.load(name, cert, key)?;
    }
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    Ok((TlsAcceptor::from(Arc::new(config)), resolver))
}

/// One name's certificate: files re-read when they change, or a key set by the program.
#[derive(Debug)]
enum Named {
    Files(ReloadingCert),
    Set(Arc<CertifiedKey>),
}

/// The certificate for each handshake: the one for the name the client sent (SNI), else the
/// default one (no SNI, or a name without its own certificate). Names are matched whole,
/// without case and a trailing dot.
#[derive(Debug)]
pub struct SniCerts {
    default: ReloadingCert,
    /// Served in place of `default` once set (the hostname's certificate obtained by ACME).
    fallback: RwLock<Option<Arc<CertifiedKey>>>,
    names: RwLock<HashMap<String, Named>>,
}

impl SniCerts {
    /// Serves `default` to every client until names are added.
    pub fn new(default: ReloadingCert) -> SniCerts {
        SniCerts {
            default,
            fallback: RwLock::new(None),
            names: RwLock::new(HashMap::new()),
        }
    }

    /// Serves the pair `cert` and `key` (re-read when the files change) for `name`.
    ///
    /// # Errors
    /// [`TlsError`] naming the file that could not be used, or [`TlsError::Name`] when the
    /// certificate does not cover `name`.
    pub fn load(&self, name: &str, cert: &Path, key: &Path) -> Result<(), TlsError> {
        let mut files = ReloadingCert::load(cert, key)?;
        let current = files
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .current
            .clone();
        covers(&current, name).map_err(|reason| TlsError::Name {
            cert: cert.into(),
            name: name.to_string(),
            reason,
        })?;
        files.name = Some(name.to_string());
        self.insert(name, Named::Files(files));
        Ok(())
    }

    /// Serves `key` for `name` from the next handshake on (a certificate obtained by the
    /// program itself, such as by ACME), in place of what was served for it.
    ///
    /// # Errors
    /// Why the certificate does not cover `name` (nothing changes then).
    pub fn set(&self, name: &str, key: CertifiedKey) -> Result<(), String> {
        covers(&key, name)?;
        self.insert(name, Named::Set(Arc::new(key)));
        Ok(())
    }

    /// [`SniCerts::set`] for `name`, and `key` also served to clients that send no name or
    /// one without its own certificate, in place of the default files.
    ///
    /// # Errors
    /// Why the certificate does not cover `name` (nothing changes then).
    pub fn set_default(&self, name: &str, key: CertifiedKey) -> Result<(), String> {
        covers(&key, name)?;
        let key = Arc::new(key);
        self.insert(name, Named::Set(key.clone()));
        *self.fallback.write().unwrap_or_else(|e| e.into_inner()) = Some(key);
        Ok(())
    }

    fn insert(&self, name: &str, named: Named) {
        let mut names = self.names.write().unwrap_or_else(|e| e.into_inner());
        names.insert(normal(name), named);
    }

    /// The pair to serve to a client that sent `sni`.
    pub fn pick(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        if let Some(sni) = sni {
            let names = self.names.read().unwrap_or_else(|e| e.into_inner());
            match names.get(&normal(sni)) {
                Some(Named::Files(files)) => return files.current(),
                Some(Named::Set(key)) => return key.clone(),
                None => {}
            }
        }
        let fallback = self.fallback.read().unwrap_or_else(|e| e.into_inner());
        match &*fallback {
            Some(key) => key.clone(),
            None => self.default.current(),
        }
    }
}

/// A name as looked up: lower case, without a trailing dot.
fn normal(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl ResolvesServerCert for SniCerts {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pick(hello.server_name()))
    }
}

/// Reads the chain and key and checks that they belong together.
///
/// # Errors
/// [`TlsError`] naming the file that could not be used.
pub fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
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
/// of either). A new pair that cannot be used (half-written, key and chain apart, or not
/// covering the name it is served for) is logged and the old one kept, and tried again at
/// the next change.
#[derive(Debug)]
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    /// The SNI name it is served for, which every new pair must cover too.
    name: Option<String>,
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
            name: None,
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
        let fresh = certified_key(&self.cert, &self.key).and_then(|fresh| {
            match self.name.as_deref().map(|name| covers(&fresh, name)) {
                Some(Err(reason)) => Err(TlsError::Name {
                    cert: self.cert.clone(),
                    name: self.name.clone().unwrap_or_default(),
                    reason,
                }),
                _ => Ok(fresh),
            }
        });
        match fresh {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for `name` as a [`CertifiedKey`], and its PEM files in `dir`.
    fn made(dir: &Path, name: &str) -> (CertifiedKey, PathBuf, PathBuf) {
        let made = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        let (cert, key) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        (certified_key(&cert, &key).unwrap(), cert, key)
    }

    fn leaf(key: &CertifiedKey) -> Vec<u8> {
        key.end_entity_cert().unwrap().to_vec()
    }

    #[test]
    fn picks_by_name_and_falls_back_to_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let (default, cert, key) = made(dir.path(), "mx.example.test");
        let certs = SniCerts::new(ReloadingCert::load(&cert, &key).unwrap());
        let (named, ..) = made(dir.path(), "mail.example.net");
        let want = leaf(&named);
        certs.set("mail.example.net", named).unwrap();
        assert_eq!(leaf(&certs.pick(Some("MAIL.example.NET."))), want);
        assert_eq!(leaf(&certs.pick(None)), leaf(&default));
        assert_eq!(leaf(&certs.pick(Some("other.example"))), leaf(&default));
        // A certificate for another name is refused, and nothing changes.
        let (other, ..) = made(dir.path(), "other.example");
        let why = certs.set("mail.example.net", other).unwrap_err();
        assert!(why.contains("CertNotValidForName"), "{why}");
        assert_eq!(leaf(&certs.pick(Some("mail.example.net"))), want);
        // Files for a name that they do not cover are refused too.
        let err = certs.load("mail.example.org", &cert, &key).unwrap_err();
        assert!(matches!(err, TlsError::Name { .. }), "{err}");
        // A default set by the program replaces the default files, for its name too.
        let (host, ..) = made(dir.path(), "mx.example.test");
        let want_host = leaf(&host);
        certs.set_default("mx.example.test", host).unwrap();
        assert_eq!(leaf(&certs.pick(None)), want_host);
        assert_eq!(leaf(&certs.pick(Some("other.example"))), want_host);
        assert_eq!(leaf(&certs.pick(Some("mx.example.test"))), want_host);
        assert_eq!(leaf(&certs.pick(Some("mail.example.net"))), want);
    }

    /// A name's files renewed with a certificate for another name are not served for it:
    /// the old certificate is kept, as for a pair that cannot be read.
    #[test]
    fn a_renewal_not_covering_its_name_keeps_the_old_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (_, cert, key) = made(dir.path(), "mx.example.test");
        let certs = SniCerts::new(ReloadingCert::load(&cert, &key).unwrap());
        let (named, named_cert, named_key) = made(dir.path(), "mail.example.net");
        certs
            .load("mail.example.net", &named_cert, &named_key)
            .unwrap();
        let want = leaf(&named);
        let (other, other_cert, other_key) = made(dir.path(), "other.example");
        std::fs::rename(&other_cert, &named_cert).unwrap();
        std::fs::rename(&other_key, &named_key).unwrap();
        if let Some(Named::Files(files)) = certs.names.read().unwrap().get("mail.example.net") {
            let mut state = files.state.lock().unwrap();
            state.checked = Instant::now().checked_sub(CHECK_EVERY * 2).unwrap();
        }
        let served = leaf(&certs.pick(Some("mail.example.net")));
        assert_ne!(
            served,
            leaf(&other),
            "a certificate for other.example served"
        );
        assert_eq!(served, want);
    }
}
