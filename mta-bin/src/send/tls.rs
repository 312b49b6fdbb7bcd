//! TLS for `mta send`: the rustls client (the public roots plus `--cafile`, or with
//! `--insecure` no check of chain or name at all), and handshake failures in words, with the
//! option that fixes each.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::Context as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The client config: certificates verified against the public roots and `cafile`, or not at
/// all with `insecure`.
///
/// # Errors
/// An unreadable `cafile`, or one without a certificate.
pub fn client_config(cafile: Option<&Path>, insecure: bool) -> anyhow::Result<Arc<ClientConfig>> {
    let roots = mta_smtp::client::roots_with(cafile).map_err(|e| {
        anyhow::anyhow!("--cafile: {e} (it must hold PEM certificates: BEGIN CERTIFICATE)")
    })?;
    let builder = ClientConfig::builder();
    let config = if insecure {
        let algorithms = rustls::crypto::CryptoProvider::get_default()
            .map(|p| p.signature_verification_algorithms)
            .unwrap_or(rustls::crypto::ring::default_provider().signature_verification_algorithms);
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(algorithms)))
            .with_no_client_auth()
    } else {
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// The name to send as SNI and to verify: a host name, or an IP address (then checked
/// against the certificate's IP addresses, and no SNI).
///
/// # Errors
/// Neither a DNS name nor an IP address.
pub fn server_name(name: &str) -> anyhow::Result<ServerName<'static>> {
    ServerName::try_from(name.trim_end_matches('.').to_string()).with_context(|| {
        format!("--tls-name {name:?} is not a host name or IP address (e.g. mail.example.org)")
    })
}

/// `--insecure`: any certificate for any name. The handshake signature is still checked, so
/// the peer holds the key of the certificate it showed, whoever that is.
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// A failed handshake in words, with the fix. `seen` is what the server sent during it (the
/// start of a plaintext greeting tells a port that does not take TLS at once).
pub fn explain(error: &io::Error, seen: &[u8], name: &str, implicit: bool) -> String {
    if implicit && looks_like_smtp(seen) {
        let line = String::from_utf8_lossy(seen);
        let line = line.lines().next().unwrap_or_default();
        return format!(
            "the server answered in plaintext ({:?}), not TLS: this port expects STARTTLS \
             (587, 25); use --tls starttls",
            mta_core::text::terminal(line, false)
        );
    }
    let Some(tls) = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    else {
        return match error.kind() {
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset if implicit => format!(
                "the server closed the connection during the TLS handshake ({error}): if this \
                 port expects STARTTLS (587, 25), use --tls starttls"
            ),
            _ => format!("TLS handshake failed: {error}"),
        };
    };
    match tls {
        rustls::Error::InvalidCertificate(e) => certificate(e, name),
        rustls::Error::InvalidMessage(_) if implicit => format!(
            "the server does not speak TLS on this port ({tls}): if it expects STARTTLS \
             (587, 25), use --tls starttls"
        ),
        rustls::Error::AlertReceived(alert) => format!(
            "the server refused the TLS handshake (alert {alert:?}): it may not accept our \
             name {name:?} (set --tls-name) or our TLS versions"
        ),
        other => format!("TLS handshake failed: {other}"),
    }
}

fn certificate(e: &CertificateError, name: &str) -> String {
    const INSECURE: &str = "or --insecure to skip the check (testing only)";
    match e {
        CertificateError::UnknownIssuer => format!(
            "the server's certificate is signed by an unknown issuer: use --cafile FILE with \
             the CA that signed it (for a self-signed certificate, the certificate itself), \
             {INSECURE}"
        ),
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            let presented = match e {
                CertificateError::NotValidForNameContext { presented, .. } => {
                    format!(" (it names {})", presented.join(", "))
                }
                _ => String::new(),
            };
            format!(
                "the server's certificate is not valid for {name:?}{}: use --tls-name NAME \
                 with a name in the certificate, {INSECURE}",
                mta_core::text::terminal(&presented, false)
            )
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            format!("the server's certificate has expired ({e}): renew it, {INSECURE}")
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            format!("the server's certificate is not valid yet ({e}): check the clocks, {INSECURE}")
        }
        CertificateError::Other(other)
            if matches!(
                other.0.downcast_ref::<webpki::Error>(),
                Some(webpki::Error::CaUsedAsEndEntity)
            ) =>
        {
            format!(
                "the server presents a CA certificate (basicConstraints CA:TRUE) as its own: \
                 give the server a certificate issued by that CA (--cafile then names the CA), \
                 {INSECURE}"
            )
        }
        other => format!("the server's certificate was refused: {other}; {INSECURE}"),
    }
}

/// Whether the bytes start like an SMTP reply (`220 ` or `220-`, any code): a plaintext
/// greeting where a TLS record was expected.
fn looks_like_smtp(seen: &[u8]) -> bool {
    seen.len() >= 4 && seen[..3].iter().all(u8::is_ascii_digit) && matches!(seen[3], b' ' | b'-')
}

/// The TCP stream, keeping a copy of the first bytes read since [`Recording::record`], so
/// that a failed handshake can say what the server sent instead of TLS.
pub struct Recording {
    inner: TcpStream,
    seen: Vec<u8>,
}

/// How much of what the server sent is kept for the error message.
const KEEP: usize = 128;

impl Recording {
    /// Wraps `inner`.
    pub fn new(inner: TcpStream) -> Recording {
        Recording {
            inner,
            seen: Vec::new(),
        }
    }

    /// Forgets what was read so far and records from now on.
    pub fn record(&mut self) {
        self.seen.clear();
    }

    /// What was read since [`Recording::record`] (its first [`KEEP`] bytes).
    pub fn seen(&self) -> &[u8] {
        &self.seen
    }
}

impl AsyncRead for Recording {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            let new = &buf.filled()[before..];
            let room = KEEP.saturating_sub(this.seen.len());
            this.seen.extend_from_slice(&new[..new.len().min(room)]);
        }
        poll
    }
}

impl AsyncWrite for Recording {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::looks_like_smtp;

    #[test]
    fn a_plaintext_greeting_is_told_from_tls() {
        assert!(looks_like_smtp(b"220 mx.example.test ESMTP\r\n"));
        assert!(looks_like_smtp(b"554-go away"));
        // A TLS record starts 0x15/0x16 0x03.
        assert!(!looks_like_smtp(b"\x16\x03\x03\x00\x7a"));
        assert!(!looks_like_smtp(b"22"));
        assert!(!looks_like_smtp(b"HTTP/1.1 400"));
    }
}
