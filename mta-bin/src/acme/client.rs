//! One issuance from the CA with instant-acme: the account (created once, stored in
//! `data_dir/acme/account.json`, 0600), an order for the names, each authorization answered
//! by HTTP-01 through [`Tokens`], a CSR for a fresh key, the chain. The HTTP client is ours:
//! it trusts the system's roots or `acme.ca_root`, bounds each request to
//! [`REQUEST_TIME`] and each answer to [`MAX_RESPONSE`] bytes, and keeps the `Retry-After`
//! of the last refusal for the retry schedule.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::Limited;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType,
    HttpClient, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use mta_core::config::{Acme, Challenge};
use tracing::info;

use super::{AcmeError, Challenges};

/// How long one request to the CA may take.
const REQUEST_TIME: Duration = Duration::from_secs(30);
/// Largest answer read from the CA (a certificate chain is a few KiB).
const MAX_RESPONSE: usize = 1 << 20;
/// How long the CA may take to validate the challenges, and then to issue.
const VALIDATION_TIME: Duration = Duration::from_secs(120);

/// What a successful issuance gives: the chain and its key, both PEM.
pub struct Issued {
    /// The certificate chain, leaf first.
    pub chain_pem: String,
    /// The certificate's private key (PKCS#8).
    pub key_pem: String,
}

/// When the CA last said to come back (`Retry-After` on a 429 or 503).
#[derive(Debug, Clone, Default)]
pub struct RetryAfter(Arc<Mutex<Option<SystemTime>>>);

impl RetryAfter {
    /// Takes what the CA said since the last call.
    pub fn take(&self) -> Option<SystemTime> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

type Hyper = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    BodyWrapper<Bytes>,
>;

/// The HTTP client instant-acme talks through.
struct Client {
    hyper: Hyper,
    retry_after: RetryAfter,
}

impl Client {
    fn new(config: &Acme, retry_after: RetryAfter) -> Result<Client, AcmeError> {
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = match &config.ca_root {
            Some(root) => {
                let roots = roots(root).map_err(AcmeError::Setup)?;
                let tls = rustls::ClientConfig::builder()
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                builder.with_tls_config(tls)
            }
            None => builder
                .try_with_platform_verifier()
                .map_err(|e| AcmeError::Setup(format!("the system's roots: {e}")))?,
        };
        let connector = builder.https_only().enable_http1().build();
        let hyper =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(connector);
        Ok(Client { hyper, retry_after })
    }
}

/// The certificates of `acme.ca_root`, at least one.
///
/// # Errors
/// Why the file cannot be used, naming it.
pub fn roots(path: &Path) -> Result<rustls::RootCertStore, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let why = |e: &dyn std::fmt::Display| format!("acme.ca_root {}: {e}", path.display());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| why(&e))? {
        roots.add(cert.map_err(|e| why(&e))?).map_err(|e| why(&e))?;
    }
    if roots.is_empty() {
        return Err(why(&"no CERTIFICATE block found"));
    }
    Ok(roots)
}

impl HttpClient for Client {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let fut = self.hyper.request(req);
        let retry_after = self.retry_after.clone();
        Box::pin(async move {
            let rsp = tokio::time::timeout(REQUEST_TIME, fut)
                .await
                .map_err(|_| other(format!("no answer within {}s", REQUEST_TIME.as_secs())))?
                .map_err(|e| other(chain(&e)))?;
            let (parts, body) = rsp.into_parts();
            let status = parts.status.as_u16();
            if status == 429 || status == 503 {
                let when = parts
                    .headers
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| super::schedule::parse_retry_after(v, SystemTime::now()));
                *retry_after.0.lock().unwrap_or_else(|e| e.into_inner()) = when;
            }
            let body = Limited::new(body, MAX_RESPONSE);
            Ok(BytesResponse::from(http::Response::from_parts(parts, body)))
        })
    }
}

/// An error with its causes, as hyper's own text ("client error (Connect)") says nothing.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text += &format!(": {cause}");
        source = cause.source();
    }
    text
}

fn other(text: String) -> instant_acme::Error {
    instant_acme::Error::Other(text.into())
}

/// The stored account: its credentials and the directory they belong to.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    directory: String,
    credentials: AccountCredentials,
}

/// The account for `config.directory`: the stored one, or a new one created and stored.
async fn account(
    config: &Acme,
    dir: &Path,
    retry_after: &RetryAfter,
) -> Result<Account, AcmeError> {
    let path = dir.join("account.json");
    let http = || -> Result<Box<dyn HttpClient>, AcmeError> {
        Ok(Box::new(Client::new(config, retry_after.clone())?))
    };
    if let Ok(text) = std::fs::read(&path) {
        let stored: Stored = serde_json::from_slice(&text)
            .map_err(|e| AcmeError::Setup(format!("{}: {e}", path.display())))?;
        if stored.directory == config.directory {
            return Ok(Account::builder_with_http(http()?)
                .from_credentials(stored.credentials)
                .await?);
        }
        info!(old = %stored.directory, new = %config.directory, "acme: a new directory; creating an account there");
    }
    let contact: Vec<&str> = config.contact.iter().map(String::as_str).collect();
    let new = NewAccount {
        contact: &contact,
        terms_of_service_agreed: true,
        only_return_existing: false,
    };
    let (account, credentials) = Account::builder_with_http(http()?)
        .create(&new, config.directory.clone(), None)
        .await?;
    let stored = Stored {
        directory: config.directory.clone(),
        credentials,
    };
    let bytes = serde_json::to_vec_pretty(&stored).map_err(|e| AcmeError::Setup(e.to_string()))?;
    mta_core::durable_file::write(&path, &bytes, 0o600)
        .map_err(|e| AcmeError::Store(format!("{}: {e}", path.display())))?;
    info!(account = account.id(), "acme: account created");
    Ok(account)
}

/// Orders a certificate for `config.names`, answering each challenge through `answer`, for
/// the key `reuse` (PEM) when given and usable, else a new P-256 key. Keeping the key keeps a
/// published TLSA `3 1 1` record (RFC 7671) true across renewals.
///
/// # Errors
/// [`AcmeError`] saying which step failed and the CA's reason.
pub async fn issue(
    config: &Acme,
    dir: &Path,
    answer: &Challenges,
    retry_after: &RetryAfter,
    reuse: Option<&str>,
) -> Result<Issued, AcmeError> {
    let account = account(config, dir, retry_after).await?;
    let identifiers: Vec<Identifier> = config
        .names
        .iter()
        .map(|n| Identifier::Dns(n.clone()))
        .collect();
    let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz?;
        match authz.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => return Err(AcmeError::Ca(format!("authorization is {other:?}"))),
        }
        let kind = match config.challenge {
            Challenge::Http01 => ChallengeType::Http01,
            Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
        };
        let mut challenge = authz.challenge(kind).ok_or_else(|| {
            let name = config.challenge.name();
            AcmeError::Ca(format!("the CA offers no {name} challenge"))
        })?;
        let key_authorization = challenge.key_authorization();
        match config.challenge {
            Challenge::Http01 => answer
                .tokens
                .insert(&challenge.token, key_authorization.as_str()),
            Challenge::TlsAlpn01 => {
                let name = challenge.identifier().to_string();
                answer
                    .alpn
                    .insert(&name, key_authorization.digest().as_ref())
                    .map_err(AcmeError::Setup)?;
            }
        }
        challenge.set_ready().await?;
    }
    let retries = RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .backoff(1.5)
        .timeout(VALIDATION_TIME);
    let status = order.poll_ready(&retries).await;
    answer.clear();
    match status? {
        OrderStatus::Ready => {}
        other => return Err(AcmeError::Ca(why_invalid(&mut order, other).await)),
    }
    let key = match reuse.map(rcgen::KeyPair::from_pem) {
        Some(Ok(key)) => key,
        _ => rcgen::KeyPair::generate().map_err(|e| AcmeError::Setup(e.to_string()))?,
    };
    let mut params = rcgen::CertificateParams::new(config.names.clone())
        .map_err(|e| AcmeError::Setup(e.to_string()))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .map_err(|e| AcmeError::Setup(e.to_string()))?;
    order.finalize_csr(csr.der()).await?;
    let chain_pem = order.poll_certificate(&retries).await?;
    Ok(Issued {
        chain_pem,
        key_pem: key.serialize_pem(),
    })
}

/// The CA's reasons for an order that did not become ready: each failed challenge's error.
async fn why_invalid(order: &mut instant_acme::Order, status: OrderStatus) -> String {
    let mut reasons = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(authz)) = authorizations.next().await {
        for challenge in &authz.challenges {
            if let Some(error) = &challenge.error {
                reasons.push(format!("{}: {error}", authz.identifier()));
            }
        }
    }
    match reasons.is_empty() {
        true => format!("order is {status:?}"),
        false => format!("order is {status:?}: {}", reasons.join("; ")),
    }
}
