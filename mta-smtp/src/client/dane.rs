//! DANE for SMTP (RFC 7672 §3, RFC 7671): a server is authenticated by the DNSSEC-validated
//! TLSA records of its host instead of by a public CA.
//!
//! Only two certificate usages are usable for SMTP (RFC 7672 §3.1.3): DANE-EE (3), which
//! names the server's own certificate or key, and DANE-TA (2), which names a trust anchor
//! that must appear in the chain the server sends. PKIX-TA (0) and PKIX-EE (1) records are
//! unusable, as are unknown selectors and matching types.
//!
//! - DANE-EE: the end-entity certificate (selector 0) or its SubjectPublicKeyInfo (1) must
//!   match; nothing else is checked, neither names nor dates (RFC 7672 §3.1.1).
//! - DANE-TA: a certificate the server sent must match; the chain from the end entity up to
//!   that certificate is then verified as usual (dates, signatures) with it as the only trust
//!   anchor, and the end entity must be valid for one of the reference identifiers: the TLSA
//!   base domain (the MX host name, also sent as SNI) or the destination domain (§3.2.2).
//!
//! No usable record matching means the handshake fails; the relay then tries the next host
//! and finally defers (`4.7.5`), never sends in plaintext.

use std::fmt;
use std::sync::{Arc, PoisonError};

use super::{Slot, Verification};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, DigitallySignedStruct, Error as TlsError, OtherError, RootCertStore,
    SignatureScheme,
};

/// DANE-TA: a trust anchor named by the record (RFC 7671 §5.2).
pub const DANE_TA: u8 = 2;
/// DANE-EE: the server's own certificate or key (RFC 7671 §5.1).
pub const DANE_EE: u8 = 3;

/// One TLSA record (RFC 6698 §2.1).
#[derive(Clone, PartialEq, Eq)]
pub struct TlsaRecord {
    /// Certificate usage: 0 PKIX-TA, 1 PKIX-EE, 2 DANE-TA, 3 DANE-EE.
    pub usage: u8,
    /// 0: the whole certificate, 1: its SubjectPublicKeyInfo.
    pub selector: u8,
    /// 0: the data itself, 1: its SHA-256, 2: its SHA-512.
    pub matching: u8,
    /// The association data.
    pub data: Vec<u8>,
}

impl fmt::Debug for TlsaRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for TlsaRecord {
    /// Zone-file form, `3 1 1 0123…`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {} ", self.usage, self.selector, self.matching)?;
        for b in &self.data {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl TlsaRecord {
    /// Whether an SMTP client may use it (RFC 7672 §3.1.3): usage DANE-TA or DANE-EE, a
    /// known selector, a known matching type whose data has the digest's length.
    pub fn usable(&self) -> bool {
        let length_ok = match self.matching {
            0 => !self.data.is_empty(),
            1 => self.data.len() == 32,
            2 => self.data.len() == 64,
            _ => false,
        };
        matches!(self.usage, DANE_TA | DANE_EE) && self.selector <= 1 && length_ok
    }

    /// Whether it names the certificate `der` (DER), by the whole certificate or its key.
    pub fn matches(&self, der: &[u8]) -> bool {
        let selected = match self.selector {
            0 => der.to_vec(),
            1 => match spki(der) {
                Some(spki) => spki,
                None => return false,
            },
            _ => return false,
        };
        match self.matching {
            0 => selected == self.data,
            1 => ring::digest::digest(&ring::digest::SHA256, &selected).as_ref() == self.data,
            2 => ring::digest::digest(&ring::digest::SHA512, &selected).as_ref() == self.data,
            _ => false,
        }
    }
}

/// The DER of a certificate's SubjectPublicKeyInfo, what selector 1 names.
pub fn spki(der: &[u8]) -> Option<Vec<u8>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.public_key().raw.to_vec())
}

/// What DANE authenticates one MX host by: the usable records of `_25._tcp.<host>` and the
/// names a DANE-TA chain may be issued for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dane {
    /// The usable records (possibly none: then TLS is still mandatory, but unauthenticated,
    /// RFC 7672 §2.2).
    pub records: Vec<TlsaRecord>,
    /// Reference identifiers for DANE-TA: the TLSA base domain first, then the destination
    /// domain (RFC 7672 §3.2.2). No trailing dots.
    pub names: Vec<String>,
}

impl Dane {
    /// Keeps the usable ones of `records`.
    pub fn new(records: Vec<TlsaRecord>, names: Vec<String>) -> Dane {
        Dane {
            records: records.into_iter().filter(TlsaRecord::usable).collect(),
            names,
        }
    }

    /// Whether any record can authenticate the server.
    pub fn usable(&self) -> bool {
        !self.records.is_empty()
    }

    /// Checks a chain the server sent (end entity first) against the records at `now`.
    ///
    /// # Errors
    /// Why no record matched, for the log and the TLS report.
    pub fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        provider: &Arc<CryptoProvider>,
    ) -> Result<(), String> {
        if self
            .records
            .iter()
            .any(|r| r.usage == DANE_EE && r.matches(end_entity))
        {
            return Ok(());
        }
        let mut last = None;
        for anchor in intermediates {
            if !self
                .records
                .iter()
                .any(|r| r.usage == DANE_TA && r.matches(anchor))
            {
                continue;
            }
            match self.chain_to(anchor, end_entity, intermediates, now, provider) {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(match last {
            Some(e) => format!("DANE-TA: the chain to the matching trust anchor fails: {e}"),
            None => format!(
                "no TLSA record ({}) matches the certificate chain",
                self.records
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
    }

    /// DANE-TA: verifies the chain with `anchor` as the only root, for any reference name.
    fn chain_to(
        &self,
        anchor: &CertificateDer<'_>,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        provider: &Arc<CryptoProvider>,
    ) -> Result<(), String> {
        let mut roots = RootCertStore::empty();
        roots
            .add(anchor.clone().into_owned())
            .map_err(|e| format!("the trust anchor cannot be used: {e}"))?;
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| e.to_string())?;
        let mut last = String::from("no reference name");
        for name in &self.names {
            let Ok(server_name) = ServerName::try_from(name.clone()) else {
                continue;
            };
            match verifier.verify_server_cert(end_entity, intermediates, &server_name, &[], now) {
                Ok(_) => return Ok(()),
                Err(TlsError::InvalidCertificate(why)) => last = format!("{why:?}"),
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    }
}

/// Why a DANE check failed, carried inside rustls's error.
#[derive(Debug)]
struct Mismatch(String);

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DANE: {}", self.0)
    }
}

impl std::error::Error for Mismatch {}

/// The rustls verifier for a host with usable TLSA records; the handshake fails unless one
/// matches. Handshake signatures are checked as always.
/// Why it failed is also left in `slot`, for an error message without rustls's wrapping.
#[derive(Debug)]
pub(super) struct DaneVerifier {
    pub(super) dane: Arc<Dane>,
    pub(super) provider: Arc<CryptoProvider>,
    pub(super) slot: Slot,
}

impl ServerCertVerifier for DaneVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        self.dane
            .check(end_entity, intermediates, now, &self.provider)
            .map(|()| ServerCertVerified::assertion())
            .map_err(|why| {
                let mismatch = Mismatch(why);
                *self.slot.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some(Verification::Failed(mismatch.to_string()));
                TlsError::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
                    mismatch,
                ))))
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn sha256(data: &[u8]) -> Vec<u8> {
        ring::digest::digest(&ring::digest::SHA256, data)
            .as_ref()
            .to_vec()
    }

    fn record(usage: u8, selector: u8, matching: u8, data: Vec<u8>) -> TlsaRecord {
        TlsaRecord {
            usage,
            selector,
            matching,
            data,
        }
    }

    /// A CA and a leaf for `name` issued by it, as DER.
    fn chain(name: &str) -> (CertificateDer<'static>, CertificateDer<'static>) {
        chain_with(name, false)
    }

    /// [`chain`], the leaf expired in 2000 when `expired`.
    fn chain_with(name: &str, expired: bool) -> (CertificateDer<'static>, CertificateDer<'static>) {
        let ca_key = KeyPair::generate().expect("key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).expect("CA");
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let leaf_key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(vec![name.to_string()]).expect("params");
        if expired {
            params.not_before = rcgen::date_time_ymd(1999, 1, 1);
            params.not_after = rcgen::date_time_ymd(2000, 1, 1);
        }
        let leaf = params.signed_by(&leaf_key, &issuer).expect("leaf");
        (leaf.der().clone(), ca_cert.der().clone())
    }

    fn dane(records: Vec<TlsaRecord>) -> Dane {
        Dane::new(
            records,
            vec!["mx.example.test".into(), "example.test".into()],
        )
    }

    #[test]
    fn usable_records_only() {
        let d = dane(vec![
            record(0, 0, 1, vec![0; 32]),
            record(1, 1, 1, vec![0; 32]),
            record(3, 2, 1, vec![0; 32]),
            record(3, 1, 3, vec![0; 32]),
            record(3, 1, 1, vec![0; 31]),
            record(2, 0, 2, vec![0; 64]),
            record(3, 1, 0, vec![1, 2]),
        ]);
        assert_eq!(d.records.len(), 2);
        assert!(d.usable());
        assert!(!dane(vec![record(1, 1, 1, vec![0; 32])]).usable());
    }

    #[test]
    fn dane_ee_matches_key_or_certificate_and_ignores_names() {
        let (leaf, _) = chain("other.name.test");
        let spki = spki(&leaf).expect("spki");
        let now = UnixTime::now();
        for r in [
            record(3, 1, 1, sha256(&spki)),
            record(3, 0, 1, sha256(&leaf)),
            record(3, 0, 0, leaf.to_vec()),
            record(
                3,
                1,
                2,
                ring::digest::digest(&ring::digest::SHA512, &spki)
                    .as_ref()
                    .to_vec(),
            ),
        ] {
            assert_eq!(
                dane(vec![r.clone()]).check(&leaf, &[], now, &provider()),
                Ok(()),
                "{r}"
            );
        }
        let wrong = dane(vec![record(3, 1, 1, vec![7; 32])]);
        let err = wrong.check(&leaf, &[], now, &provider()).unwrap_err();
        assert!(err.contains("no TLSA record (3 1 1 0707"), "{err}");
    }

    #[test]
    fn dane_ta_needs_the_anchor_in_the_chain_and_a_reference_name() {
        let now = UnixTime::now();
        let (leaf, ca) = chain("mx.example.test");
        let ta = dane(vec![record(2, 0, 1, sha256(&ca))]);
        assert_eq!(
            ta.check(&leaf, std::slice::from_ref(&ca), now, &provider()),
            Ok(())
        );
        // The anchor must be sent by the server.
        assert!(ta.check(&leaf, &[], now, &provider()).is_err());
        // The destination domain is a reference name too.
        let (leaf2, ca2) = chain("example.test");
        let ta2 = dane(vec![record(2, 1, 1, sha256(&spki(&ca2).unwrap()))]);
        assert_eq!(
            ta2.check(&leaf2, std::slice::from_ref(&ca2), now, &provider()),
            Ok(())
        );
        // Any other name fails.
        let (leaf3, ca3) = chain("evil.test");
        let ta3 = dane(vec![record(2, 0, 1, sha256(&ca3))]);
        let err = ta3.check(&leaf3, &[ca3], now, &provider()).unwrap_err();
        assert!(err.contains("DANE-TA"), "{err}");
        // A DANE-TA record does not accept the leaf itself.
        let leaf_as_ta = dane(vec![record(2, 0, 1, sha256(&leaf))]);
        assert!(leaf_as_ta.check(&leaf, &[ca], now, &provider()).is_err());
    }

    #[test]
    fn dane_ee_ignores_expiry_and_dane_ta_does_not() {
        let now = UnixTime::now();
        let (leaf, ca) = chain_with("mx.example.test", true);
        let ee = dane(vec![record(3, 1, 1, sha256(&spki(&leaf).unwrap()))]);
        assert_eq!(ee.check(&leaf, &[], now, &provider()), Ok(()));
        let ta = dane(vec![record(2, 0, 1, sha256(&ca))]);
        let err = ta.check(&leaf, &[ca], now, &provider()).unwrap_err();
        assert!(err.contains("Expired"), "{err}");
    }

    #[test]
    fn display_is_zone_file_form() {
        assert_eq!(record(3, 1, 1, vec![0xab, 0x01]).to_string(), "3 1 1 ab01");
    }
}
