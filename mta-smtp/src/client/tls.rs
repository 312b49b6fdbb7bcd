//! Client TLS: trust anchors, the rustls client configuration, and the handshake.
//!
//! RFC 3207 (STARTTLS) and RFC 8314 §3.3 (implicit TLS): TLS 1.2 and 1.3 only, ring as the
//! one crypto provider, passed explicitly (`builder_with_provider`) so nothing depends on a
//! process default. The name verified and sent as SNI is the MX or smarthost name (RFC 6125
//! / RFC 7672 §3.2.2 reference identity); an IP address gets no SNI (RFC 6066 §3).
//!
//! Under opportunistic TLS a certificate that fails verification is accepted (an encrypted
//! session beats plaintext, RFC 7435), but the real webpki verification still runs and its
//! result is recorded, and handshake signatures are checked for real, so "verified" in the
//! logs means what it says.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, DigitallySignedStruct, Error as TlsError, RootCertStore, SignatureScheme,
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::dane::{Dane, DaneVerifier};
use super::wire::timed;
use super::{ClientError, Phase, Slot, TlsInfo, Verification};

/// Mozilla's root certificates (the `webpki-roots` crate), for verifying public MX hosts.
pub fn webpki_roots() -> RootCertStore {
    RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// Why a CA file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RootsError {
    /// Unreadable, or not PEM.
    #[error("cannot read CA file {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// PEM, but without a single certificate.
    #[error("CA file {path} holds no CERTIFICATE block")]
    Empty {
        /// The file.
        path: String,
    },
    /// A certificate that cannot be a trust anchor.
    #[error("CA file {path}: certificate {index} cannot be a trust anchor: {reason}")]
    BadCertificate {
        /// The file.
        path: String,
        /// Which certificate, counting from 1.
        index: usize,
        /// rustls's reason.
        reason: String,
    },
}

/// The Mozilla roots plus every certificate in the PEM file `ca_file` (a private CA or a
/// smarthost's self-signed certificate).
///
/// # Errors
/// [`RootsError`] when the file cannot be read, holds no certificate, or holds one that
/// cannot be a trust anchor. Nothing in the file is skipped silently.
pub fn roots_with(ca_file: Option<&Path>) -> Result<RootCertStore, RootsError> {
    let mut roots = webpki_roots();
    let Some(path) = ca_file else {
        return Ok(roots);
    };
    let shown = path.display().to_string();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<_, _>>())
        .map_err(|e| RootsError::Read {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(RootsError::Empty { path: shown });
    }
    for (i, cert) in certs.into_iter().enumerate() {
        roots.add(cert).map_err(|e| RootsError::BadCertificate {
            path: shown.clone(),
            index: i + 1,
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// What a failed verification means for the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Check {
    /// Fail the handshake (required and implicit TLS, DANE).
    Enforce,
    /// TLS is mandatory, but the certificate is only recorded (a host whose TLSA records
    /// are all unusable, RFC 7672 §2.2).
    Encrypt,
    /// Record the result and go on (opportunistic TLS).
    Record,
}

impl Check {
    /// Whether a failure to reach TLS ends the attempt on this host.
    pub(super) fn mandatory(self) -> bool {
        matches!(self, Check::Enforce | Check::Encrypt)
    }
}

/// What the server's certificate is checked against.
#[derive(Clone, Copy)]
pub(super) enum Trust<'a> {
    /// A chain to one of these roots, valid for the target name.
    Roots(&'a Arc<RootCertStore>),
    /// The host's TLSA records (RFC 7672).
    Dane(&'a Arc<Dane>),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The name to verify and send as SNI: the target name without a trailing dot.
fn server_name(name: &str) -> Result<ServerName<'static>, ClientError> {
    let name = name.strip_suffix('.').unwrap_or(name);
    ServerName::try_from(name.to_string())
        .map_err(|e| ClientError::Tls(format!("{name:?} cannot be verified as a host name: {e}")))
}

fn client_config(trust: Trust<'_>, check: Check) -> Result<(ClientConfig, Slot), ClientError> {
    let provider = provider();
    let slot: Slot = Arc::new(Mutex::new(None));
    let verifier: Arc<dyn ServerCertVerifier> = match trust {
        Trust::Dane(dane) => Arc::new(DaneVerifier {
            dane: dane.clone(),
            provider: provider.clone(),
            slot: slot.clone(),
        }),
        Trust::Roots(roots) => {
            let verifier =
                WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
                    .build();
            match (check, verifier) {
                (Check::Enforce, Ok(v)) => v,
                (Check::Enforce, Err(e)) => {
                    return Err(ClientError::Tls(format!(
                        "cannot build a certificate verifier: {e}"
                    )));
                }
                (Check::Record | Check::Encrypt, inner) => Arc::new(RecordingVerifier {
                    inner: inner.map_err(|e| e.to_string()),
                    algorithms: provider.signature_verification_algorithms,
                    slot: slot.clone(),
                }),
            }
        }
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ClientError::Tls(format!("cannot configure TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok((config, slot))
}

/// Runs the client handshake on `tcp` within `limit`. The name is verified (for
/// [`Trust::Roots`]) and sent as SNI; for DANE it is the TLSA base domain (RFC 7672 §3.2.2).
///
/// Failures are [`ClientError::TlsRequiredButFailed`] when TLS is mandatory and
/// [`ClientError::Tls`] under [`Check::Record`].
pub(super) async fn handshake(
    tcp: TcpStream,
    trust: Trust<'_>,
    name: &str,
    check: Check,
    limit: Duration,
) -> Result<(TlsStream<TcpStream>, TlsInfo), ClientError> {
    let name = server_name(name)?;
    let (config, slot) = client_config(trust, check)?;
    let connector = TlsConnector::from(Arc::new(config));
    let stream = timed(Phase::TlsHandshake, limit, async {
        connector.connect(name, tcp).await.map_err(|e| {
            // A DANE mismatch in its own words rather than inside rustls's wrapping.
            let text = match (
                trust,
                slot.lock().unwrap_or_else(PoisonError::into_inner).take(),
            ) {
                (Trust::Dane(_), Some(Verification::Failed(why))) => why,
                _ => e.to_string(),
            };
            match check.mandatory() {
                true => ClientError::TlsRequiredButFailed(text),
                false => ClientError::Tls(text),
            }
        })
    })
    .await?;
    let verified = match (trust, check) {
        // The handshake would have failed otherwise.
        (Trust::Dane(_), _) | (Trust::Roots(_), Check::Enforce) => Verification::Verified,
        (Trust::Roots(_), Check::Record | Check::Encrypt) => slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .unwrap_or_else(|| Verification::Failed("certificate was never checked".into())),
    };
    let (_, conn) = stream.get_ref();
    let (version, cipher) = crate::tls::negotiated(conn);
    Ok((
        stream,
        TlsInfo {
            version,
            cipher,
            verified,
        },
    ))
}

/// Accepts any certificate but records what the real verifier thought of it.
#[derive(Debug)]
struct RecordingVerifier {
    /// The webpki verifier, or why it could not be built (no trust anchors).
    inner: Result<Arc<WebPkiServerVerifier>, String>,
    algorithms: WebPkiSupportedAlgorithms,
    slot: Slot,
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        let verdict = match &self.inner {
            Ok(v) => match v.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ) {
                Ok(_) => Verification::Verified,
                Err(TlsError::InvalidCertificate(why)) => Verification::Failed(why.to_string()),
                Err(e) => Verification::Failed(e.to_string()),
            },
            Err(why) => Verification::Failed(why.clone()),
        };
        *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(verdict);
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mozilla_roots_are_there() {
        assert!(webpki_roots().len() > 100);
        assert_eq!(
            roots_with(None).map(|r| r.len()).ok(),
            Some(webpki_roots().len())
        );
    }

    #[test]
    fn ca_file_errors() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("missing.pem");
        assert!(matches!(
            roots_with(Some(&missing)),
            Err(RootsError::Read { .. })
        ));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no pem here\n").expect("write");
        assert!(matches!(
            roots_with(Some(&empty)),
            Err(RootsError::Empty { .. })
        ));
        let junk = dir.path().join("junk.pem");
        std::fs::write(
            &junk,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        assert!(matches!(
            roots_with(Some(&junk)),
            Err(RootsError::BadCertificate { index: 1, .. })
        ));
    }

    #[test]
    fn ca_file_adds_its_certificates() {
        let ck = rcgen::generate_simple_self_signed(vec!["ca.example.test".into()]).expect("rcgen");
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("ca.pem");
        std::fs::write(&file, ck.cert.pem()).expect("write");
        let roots = roots_with(Some(&file)).expect("a valid CA file");
        assert_eq!(roots.len(), webpki_roots().len() + 1);
    }

    #[test]
    fn names() {
        assert!(matches!(
            server_name("mx.example.test."),
            Ok(ServerName::DnsName(_))
        ));
        assert!(matches!(
            server_name("192.0.2.1"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            server_name("2001:db8::1"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(server_name("bad name"), Err(ClientError::Tls(_))));
    }
}
