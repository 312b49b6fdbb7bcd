//! DKIM signing of outbound mail (RFC 6376, Ed25519 by RFC 8463) with mail-auth's signer over
//! ring: the configured keys, loaded once, and [`Signer::sign`], which gives the
//! `DKIM-Signature:` fields to put in front of a message. Also what `mta dkim` needs: reading
//! a key file, and the DNS record that publishes its public key.
//!
//! A message is signed with every key of its `From:` domain, exactly that domain. It is signed
//! where it leaves for another domain (the router), so bounces are signed too and the header
//! we sign is final: nothing is added or changed after it. The router asks for a signature
//! only for mail that an authenticated user submitted or that `mta` wrote itself; a `From:`
//! in our domain alone never earns one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{DkimSigner, Done};
use mta_core::address::Domain;
use mta_core::config::{Config, DkimAlgorithm, DkimKey};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;

use crate::headers;
use crate::server::mailbox::mailboxes;

/// The fields signed, `From` twice: the second instance, absent from the message, makes a
/// `From:` added later break the signature (over-signing). mail-auth also over-signs the
/// listed fields that a message lacks, so none of them can be added either.
const SIGNED_FIELDS: [&str; 10] = [
    "From",
    "From",
    "To",
    "Cc",
    "Reply-To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
];

/// A key that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("DKIM key {path} ({domain}, selector {selector}): {reason}")]
pub struct KeyError {
    /// The key file.
    pub path: PathBuf,
    /// The signing domain.
    pub domain: Domain,
    /// The selector.
    pub selector: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A private key read from its file.
pub enum PrivateKey {
    /// An RSA key (PKCS#1 or PKCS#8).
    Rsa(RsaKey<Sha256>),
    /// An Ed25519 key (PKCS#8).
    Ed25519(Ed25519Key),
}

impl PrivateKey {
    /// Reads a PEM key file and checks it is of the configured kind.
    ///
    /// # Errors
    /// The reason, for the operator: unreadable, not PEM, or another kind of key.
    pub fn load(path: &Path, algorithm: DkimAlgorithm) -> Result<PrivateKey, String> {
        let pem = read_regular(path).map_err(|e| format!("cannot read: {e}"))?;
        let der = PrivateKeyDer::from_pem_slice(&pem)
            .map_err(|e| format!("not a PEM private key: {e}"))?;
        match algorithm {
            DkimAlgorithm::Rsa => RsaKey::<Sha256>::from_key_der(der)
                .map(PrivateKey::Rsa)
                .map_err(|e| format!("not an RSA private key (algorithm = \"rsa\"): {e}")),
            DkimAlgorithm::Ed25519 => match der {
                // Version 1 PKCS#8 (as `openssl genpkey` writes) has no public key inside;
                // ring derives it.
                PrivateKeyDer::Pkcs8(p) => {
                    Ed25519Key::from_pkcs8_maybe_unchecked_der(p.secret_pkcs8_der())
                        .map(PrivateKey::Ed25519)
                        .map_err(|e| {
                            format!("not an Ed25519 private key (algorithm = \"ed25519\"): {e}")
                        })
                }
                _ => Err("not an Ed25519 private key (algorithm = \"ed25519\"): \
                          expected PKCS#8 (BEGIN PRIVATE KEY)"
                    .to_string()),
            },
        }
    }

    /// The `p=` of the DNS record: the SubjectPublicKeyInfo of an RSA key (what
    /// `openssl rsa -pubout` gives and every verifier reads), the raw 32 bytes of an Ed25519
    /// key (RFC 8463 §4.2), base64.
    pub fn public_key_base64(&self) -> String {
        use base64::Engine;
        let bytes = match self {
            PrivateKey::Rsa(k) => rsa_spki(&k.public_key()),
            PrivateKey::Ed25519(k) => k.public_key(),
        };
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }
}

/// The DNS TXT record that publishes `key`: its name and its text.
pub fn dns_record(
    domain: &Domain,
    selector: &str,
    algorithm: DkimAlgorithm,
    key: &PrivateKey,
) -> (String, String) {
    (
        format!("{selector}._domainkey.{domain}"),
        format!(
            "v=DKIM1; k={}; p={}",
            algorithm.name(),
            key.public_key_base64()
        ),
    )
}

/// Wraps a PKCS#1 RSAPublicKey in a SubjectPublicKeyInfo (RFC 5280 §4.1.2.7, rsaEncryption).
fn rsa_spki(pkcs1: &[u8]) -> Vec<u8> {
    // AlgorithmIdentifier { rsaEncryption (1.2.840.113549.1.1.1), NULL }
    const ALGORITHM: [u8; 15] = [
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut bits = vec![0u8]; // no unused bits
    bits.extend_from_slice(pkcs1);
    let mut inner = ALGORITHM.to_vec();
    inner.extend(der(0x03, &bits));
    der(0x30, &inner)
}

/// One DER element: tag, definite length, content.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|&b| b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

enum KeySigner {
    Rsa(DkimSigner<RsaKey<Sha256>, Done>),
    Ed25519(DkimSigner<Ed25519Key, Done>),
}

struct Loaded {
    domain: Domain,
    selector: String,
    signer: KeySigner,
}

/// The configured keys, ready to sign.
pub struct Signer {
    keys: Vec<Loaded>,
}

impl Signer {
    /// Loads every `[dkim."domain"]` key of the config.
    ///
    /// # Errors
    /// The first key that cannot be read or is not of its configured algorithm.
    pub fn load(config: &Config) -> Result<Signer, KeyError> {
        let mut keys = Vec::new();
        for k in &config.dkim {
            let key = PrivateKey::load(&k.key, k.algorithm).map_err(|reason| KeyError {
                path: k.key.clone(),
                domain: k.domain.clone(),
                selector: k.selector.clone(),
                reason,
            })?;
            keys.push(Loaded {
                domain: k.domain.clone(),
                selector: k.selector.clone(),
                signer: build(k, key),
            });
        }
        Ok(Signer { keys })
    }

    /// True when there is no key at all.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The `DKIM-Signature:` fields for `message`, one per key of its `From:` domain, to be
    /// put in front of it; none when there is no such key, or no single `From:` domain.
    ///
    /// # Errors
    /// A signing failure (mail-auth's message), which should not happen with a loaded key.
    pub fn sign(&self, message: &[u8]) -> Result<Signed, String> {
        let mut out = Signed::default();
        let Some(domain) = from_domain(message) else {
            return Ok(out);
        };
        for key in self.keys.iter().filter(|k| k.domain == domain) {
            let signature = match &key.signer {
                KeySigner::Rsa(s) => s.sign(message),
                KeySigner::Ed25519(s) => s.sign(message),
            }
            .map_err(|e| format!("DKIM signing for {domain} (selector {}): {e}", key.selector))?;
            out.fields
                .extend_from_slice(signature.to_header().as_bytes());
            out.by.push(format!("{domain}/{}", key.selector));
        }
        Ok(out)
    }
}

/// What [`Signer::sign`] made.
#[derive(Debug, Default)]
pub struct Signed {
    /// The `DKIM-Signature:` fields, each ending in CRLF; empty when nothing was signed.
    pub fields: Vec<u8>,
    /// `domain/selector` of each signature, for the log.
    pub by: Vec<String>,
}

fn build(k: &DkimKey, key: PrivateKey) -> KeySigner {
    let expire = k.expire.max(Duration::from_secs(1)).as_secs();
    match key {
        PrivateKey::Rsa(key) => KeySigner::Rsa(
            DkimSigner::from_key(key)
                .domain(k.domain.as_str())
                .selector(&k.selector)
                .headers(SIGNED_FIELDS)
                .expiration(expire),
        ),
        PrivateKey::Ed25519(key) => KeySigner::Ed25519(
            DkimSigner::from_key(key)
                .domain(k.domain.as_str())
                .selector(&k.selector)
                .headers(SIGNED_FIELDS)
                .expiration(expire),
        ),
    }
}

/// The domain of the message's `From:` when there is exactly one `From:` field and all its
/// mailboxes are in one domain.
fn from_domain(message: &[u8]) -> Option<Domain> {
    let fields = headers::fields(message);
    let mut from = fields
        .iter()
        .filter(|f| f.name.eq_ignore_ascii_case("From"));
    let field = from.next()?;
    if from.next().is_some() {
        return None;
    }
    let addresses = mailboxes(&headers::unfold(field.value)?)?;
    let domain = addresses.first()?.domain().clone();
    addresses
        .iter()
        .all(|a| *a.domain() == domain)
        .then_some(domain)
}

/// A key file's bytes, from a regular file only: root reads the keys at start-up and they
/// may sit in the data dir, where a FIFO would block the read for ever and a device act on
/// being opened (`O_NONBLOCK` should one be swapped in after the check).
fn read_regular(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let not_regular = || std::io::Error::other("not a regular file");
    if !std::fs::metadata(path)?.is_file() {
        return Err(not_regular());
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(0o4000) // O_NONBLOCK (Linux)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(not_regular());
    }
    let mut pem = Vec::new();
    file.read_to_end(&mut pem)?;
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_domain_needs_one_domain() {
        let d = |m: &str| from_domain(m.as_bytes()).map(|d| d.to_string());
        assert_eq!(
            d("From: A <a@Example.ORG>\r\n\r\n"),
            Some("example.org".into())
        );
        assert_eq!(
            d("Subject: x\r\nfrom: a@x.test,\r\n b@x.test\r\n\r\n"),
            Some("x.test".into())
        );
        assert_eq!(d("From: a@x.test, b@y.test\r\n\r\n"), None);
        assert_eq!(d("From: a@x.test\r\nFrom: a@x.test\r\n\r\n"), None);
        assert_eq!(d("To: a@x.test\r\n\r\nFrom: a@x.test\r\n"), None);
    }

    #[test]
    fn spki_wraps_pkcs1() {
        // A short fake key: the structure is what matters here; real keys are checked by the
        // end-to-end tests against two verifiers.
        let spki = rsa_spki(&[0x30, 0x03, 0x02, 0x01, 0x05]);
        assert_eq!(
            spki,
            [
                0x30, 0x17, 0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01,
                0x01, 0x05, 0x00, 0x03, 0x06, 0x00, 0x30, 0x03, 0x02, 0x01, 0x05
            ]
        );
        let long = der(0x04, &[0u8; 300]);
        assert_eq!(&long[..4], &[0x04, 0x82, 0x01, 0x2c]);
    }
}
