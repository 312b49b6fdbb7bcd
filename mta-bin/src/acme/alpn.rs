//! The TLS-ALPN-01 challenge responder (RFC 8737): the CA connects to port 443 of the name,
//! sends the name by SNI and offers only the `acme-tls/1` protocol; we answer with a
//! self-signed certificate for the name carrying the acmeIdentifier extension (the SHA-256
//! of the key authorization). A handshake that does not offer `acme-tls/1`, or names
//! nothing we are validating, gets no certificate and fails; nothing is read after it. Each
//! handshake is bounded to [`HANDSHAKE_TIME`] and at most [`MAX_CONNECTIONS`] run at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, info};

/// The protocol the CA asks for (RFC 8737 §6.2).
pub const ACME_TLS_1: &[u8] = b"acme-tls/1";
/// How long a handshake may take.
pub const HANDSHAKE_TIME: Duration = Duration::from_secs(10);
/// Handshakes served at once.
pub const MAX_CONNECTIONS: usize = 64;

/// Names being validated → their challenge certificates.
#[derive(Debug, Clone, Default)]
pub struct AlpnCerts(Arc<Mutex<HashMap<String, Arc<CertifiedKey>>>>);

impl AlpnCerts {
    /// Answers `name` with a certificate for `digest` (the SHA-256 of the key
    /// authorization) until cleared.
    ///
    /// # Errors
    /// rcgen's or rustls's reason.
    pub fn insert(&self, name: &str, digest: &[u8]) -> Result<(), String> {
        let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
        let mut params =
            rcgen::CertificateParams::new(vec![name.to_string()]).map_err(|e| e.to_string())?;
        params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
        let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
        let der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        // Not `CertifiedKey::from_der`: it parses the certificate with webpki, which refuses
        // the critical acmeIdentifier extension it does not know.
        let signing = rustls::crypto::ring::default_provider()
            .key_provider
            .load_private_key(der)
            .map_err(|e| e.to_string())?;
        let certified = CertifiedKey::new(vec![cert.der().clone()], signing);
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(name.to_ascii_lowercase(), Arc::new(certified));
        Ok(())
    }

    /// Stops answering every name.
    pub fn clear(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

impl ResolvesServerCert for AlpnCerts {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let asks = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_1));
        if !asks {
            return None;
        }
        let name = hello
            .server_name()?
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&name).cloned()
    }
}

/// Serves challenge certificates on `listener` until `stopped`.
pub async fn serve(listener: TcpListener, certs: AlpnCerts, stopped: watch::Receiver<bool>) {
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(certs));
    config.alpn_protocols = vec![ACME_TLS_1.to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    super::accept::serve(
        listener,
        stopped,
        MAX_CONNECTIONS,
        "acme tls-alpn-01",
        move |stream, peer| {
            let acceptor = acceptor.clone();
            async move {
                match tokio::time::timeout(HANDSHAKE_TIME, acceptor.accept(stream)).await {
                    Ok(Ok(mut tls)) => {
                        let name = tls.get_ref().1.server_name().unwrap_or("").to_string();
                        info!(%peer, name = %mta_core::text::escape(&name), "acme tls-alpn-01: challenge answered");
                        let _ = tls.shutdown().await;
                    }
                    Ok(Err(e)) => debug!(%peer, error = %e, "acme tls-alpn-01: handshake refused"),
                    Err(_) => {
                        info!(%peer, "acme tls-alpn-01: no handshake within {}s", HANDSHAKE_TIME.as_secs())
                    }
                }
            }
        },
    )
    .await;
}
