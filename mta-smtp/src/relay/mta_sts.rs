//! MTA-STS (RFC 8461): a domain that publishes `_mta-sts.<domain>` TXT (`v=STSv1; id=…`)
//! and a policy at `https://mta-sts.<domain>/.well-known/mta-sts.txt` tells senders which MX
//! hosts are genuine and that they must be reached over TLS with a valid certificate.
//!
//! [`Sts::policy`] looks the TXT record up on every attempt (the resolver caches it by its
//! TTL), and fetches the policy when its `id` is new or the cached one is past `max_age`. The
//! fetch is HTTPS with a verified certificate for `mta-sts.<domain>`, no redirects, at most
//! 64 KiB within 20 s. Policies are cached in memory and in `DATA_DIR/mta-sts/<domain>`, so a
//! restart keeps them; when the TXT lookup or the fetch fails, a cached policy still in its
//! `max_age` goes on applying (§5.1: an attacker who blocks the fetch must not win).
//!
//! What DNS and the policy host say is checked before it is kept: the `id` must be
//! `1*32(ALPHA / DIGIT)` (§3.1) or the TXT record is ignored, so it cannot add lines to the
//! cache file; the cache file is read back strictly (`id:` then `fetched_at:` then the
//! policy) and written with `mta_core::durable_file::write`; a body is taken only when the
//! TLS connection ended with `close_notify` or the body is exactly `Content-Length` octets
//! (a connection cut short cannot shorten the `mx:` list). At most [`MAX_CACHED`] policies are
//! held in memory; the least recently used go first (their files stay on disk).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_resolver::TokioResolver;
use mta_core::address::Domain;
use mta_core::text::escape;
use rustls::RootCertStore;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tracing::{info, warn};

/// The largest policy body read (RFC 8461 §3.3 suggests a limit; 64 KiB is generous).
const MAX_POLICY: usize = 64 * 1024;
/// How long the whole fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(20);
/// RFC 8461 §3.2: max_age at most 31557600 (one year).
const MAX_AGE_LIMIT: u64 = 31_557_600;
/// How many policies are held in memory; a domain dropped from it is read from its file
/// again when next needed.
pub const MAX_CACHED: usize = 10_000;

/// The most `mx:` patterns a policy may have. Real policies name a handful of hosts; a
/// policy of 64 KiB could name some 13,000, which, kept for each of [`MAX_CACHED`] domains,
/// would be gigabytes. A policy with more is refused, as any policy that does not parse.
pub const MAX_MX_PATTERNS: usize = 100;

/// What a policy asks of senders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Deliver only to matching MX hosts over verified TLS, else defer.
    Enforce,
    /// Deliver as usual, but report (log) what enforce would have refused.
    Testing,
    /// The domain withdrew its policy.
    None,
}

impl Mode {
    /// The word the policy file uses.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Testing => "testing",
            Mode::None => "none",
        }
    }
}

/// A parsed policy file (RFC 8461 §3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The `id` of the TXT record it was fetched for.
    pub id: String,
    /// `mode:`.
    pub mode: Mode,
    /// `mx:` patterns, lower case: `mail.example.com` or `*.example.net`.
    pub mx: Vec<String>,
    /// `max_age:` in seconds.
    pub max_age: u64,
    /// When it was fetched (Unix seconds).
    pub fetched_at: u64,
}

impl Policy {
    /// Parses the policy text; `id` and `fetched_at` come from outside.
    ///
    /// # Errors
    /// What is missing or wrong, for the log.
    pub fn parse(text: &str, id: &str, fetched_at: u64) -> Result<Policy, String> {
        if !is_policy_id(id) {
            return Err(format!("id {id:?} is not 1 to 32 letters and digits"));
        }
        let (mut version, mut mode, mut max_age, mut mx) = (None, None, None, Vec::new());
        for line in text.lines() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            let Some((key, value)) = line.split_once(':') else {
                return Err(format!("line {line:?} is not `key: value`"));
            };
            let value = value.trim();
            match key.trim() {
                "version" => version = Some(value.to_string()),
                "mode" => {
                    mode = Some(match value {
                        "enforce" => Mode::Enforce,
                        "testing" => Mode::Testing,
                        "none" => Mode::None,
                        other => return Err(format!("unknown mode {other:?}")),
                    })
                }
                "max_age" => {
                    let n: u64 = value
                        .parse()
                        .map_err(|_| format!("max_age {value:?} is not a number"))?;
                    max_age = Some(n.min(MAX_AGE_LIMIT));
                }
                "mx" => {
                    let pattern = value.to_ascii_lowercase();
                    let pattern = pattern.trim_end_matches('.');
                    if !is_mx_pattern(pattern) {
                        return Err(format!("mx {value:?} is not a host name or *.domain"));
                    }
                    if mx.len() == MAX_MX_PATTERNS {
                        return Err(format!("more than {MAX_MX_PATTERNS} `mx:` patterns"));
                    }
                    mx.push(pattern.to_string());
                }
                // §3.2: unknown fields are ignored.
                _ => {}
            }
        }
        if version.as_deref() != Some("STSv1") {
            return Err("no `version: STSv1`".into());
        }
        let mode = mode.ok_or("no `mode:`")?;
        let max_age = max_age.ok_or("no `max_age:`")?;
        if mode != Mode::None && mx.is_empty() {
            return Err("no `mx:` pattern".into());
        }
        Ok(Policy {
            id: id.to_string(),
            mode,
            mx,
            max_age,
            fetched_at,
        })
    }

    /// True when `host` (an MX name) matches one of the `mx:` patterns (§4.1: a `*.` pattern
    /// matches exactly one more label on the left).
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.mx
            .iter()
            .any(|pattern| match pattern.strip_prefix("*.") {
                Some(base) => host
                    .split_once('.')
                    .is_some_and(|(label, rest)| !label.is_empty() && rest == base),
                None => *pattern == host,
            })
    }

    /// The policy as lines, as TLS reports quote it (RFC 8460 §4.4 `policy-string`).
    pub fn lines(&self) -> Vec<String> {
        let mut lines = vec![
            "version: STSv1".to_string(),
            format!("mode: {}", self.mode.name()),
        ];
        lines.extend(self.mx.iter().map(|mx| format!("mx: {mx}")));
        lines.push(format!("max_age: {}", self.max_age));
        lines
    }

    fn expired(&self, now: u64) -> bool {
        now.saturating_sub(self.fetched_at) >= self.max_age
    }

    fn to_file(&self) -> String {
        let mut text = format!(
            "id: {}\nfetched_at: {}\nversion: STSv1\nmode: {}\nmax_age: {}\n",
            self.id,
            self.fetched_at,
            self.mode.name(),
            self.max_age
        );
        for mx in &self.mx {
            text.push_str(&format!("mx: {mx}\n"));
        }
        text
    }

    /// The cache file: `id:` on the first line, `fetched_at:` on the second, then the
    /// policy. Anything else is not ours and is not believed.
    fn from_file(text: &str) -> Option<Policy> {
        let mut lines = text.splitn(3, '\n');
        let id = lines.next()?.strip_prefix("id: ")?;
        let fetched_at = lines.next()?.strip_prefix("fetched_at: ")?;
        if !is_policy_id(id)
            || fetched_at.is_empty()
            || !fetched_at.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let policy = Policy::parse(lines.next()?, id, fetched_at.parse().ok()?).ok()?;
        let unknown = lines_of(&policy.to_file()) != lines_of(text);
        (!unknown).then_some(policy)
    }
}

/// The non-empty lines of a cache file, for comparing what was read with what it means.
fn lines_of(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.is_empty()).collect()
}

/// RFC 8461 §3.1: `sts-id = 1*32(ALPHA / DIGIT)`.
pub fn is_policy_id(id: &str) -> bool {
    (1..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The `id` of an `_mta-sts` TXT record (RFC 8461 §3.1: `v=STSv1` first, fields separated
/// by `;`, one `id=`). `None`, and the record is ignored, when the id is missing, repeated
/// or not `1*32(ALPHA / DIGIT)`.
pub fn record_id(record: &str) -> Option<String> {
    let mut fields = record.split(';').map(|f| f.trim_matches([' ', '\t']));
    if fields.next()? != "v=STSv1" {
        return None;
    }
    let mut ids = fields.filter_map(|f| f.strip_prefix("id="));
    let id = ids.next()?;
    (ids.next().is_none() && is_policy_id(id)).then(|| id.to_string())
}

/// RFC 8461 §3.2: an `mx` is a host name, or `*.` and a domain; LDH labels, A-labels.
fn is_mx_pattern(pattern: &str) -> bool {
    let name = pattern.strip_prefix("*.").unwrap_or(pattern);
    mta_core::address::is_ldh_name(name, 253)
}

/// Where to fetch policies, and the cache.
pub struct Sts {
    resolver: TokioResolver,
    connector: TlsConnector,
    port: u16,
    dir: PathBuf,
    /// `outbound.allow_internal` and `outbound.refuse_private`: a policy host at an internal
    /// address is refused like an MX host there.
    internal: (Vec<ipnet::IpNet>, bool),
    cache: Mutex<HashMap<String, (Arc<Policy>, u64)>>,
    /// Counts uses, so the cache knows which entry was used least recently.
    clock: std::sync::atomic::AtomicU64,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Sts {
    /// The internal addresses policy hosts may have (`outbound.allow_internal`), and
    /// whether private ones are refused too.
    pub fn with_internal(mut self, allow: Vec<ipnet::IpNet>, refuse_private: bool) -> Sts {
        self.internal = (allow, refuse_private);
        self
    }

    /// Fetches over port `port` (443 but in tests), trusting `roots`; caches under
    /// `data_dir/mta-sts`.
    pub fn new(
        resolver: TokioResolver,
        roots: Arc<RootCertStore>,
        port: u16,
        data_dir: &Path,
    ) -> Sts {
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Sts {
            resolver,
            connector: TlsConnector::from(Arc::new(config)),
            port,
            dir: data_dir.join("mta-sts"),
            internal: (Vec::new(), false),
            cache: Mutex::new(HashMap::new()),
            clock: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The policy in force for `domain`, if any.
    pub async fn policy(&self, domain: &Domain) -> Option<Arc<Policy>> {
        let now = now();
        let cached = self.cached(domain).filter(|p| !p.expired(now));
        let id = match self.txt_id(domain).await {
            Ok(Some(id)) => id,
            // No record: no policy, unless a cached one is still valid (§5.1: the TXT record
            // may be removed only after a `mode: none` policy has been published).
            Ok(None) => return cached.filter(|p| p.mode != Mode::None),
            Err(e) => {
                warn!(%domain, error = %escape(&e), "MTA-STS TXT lookup failed; using the cached policy if any");
                return cached;
            }
        };
        if let Some(p) = &cached
            && p.id == id
        {
            return cached;
        }
        match self.fetch(domain, &id, now).await {
            Ok(policy) => {
                info!(%domain, id = %policy.id, mode = policy.mode.name(), max_age = policy.max_age, "MTA-STS policy fetched");
                let policy = Arc::new(policy);
                self.store(domain, &policy);
                Some(policy)
            }
            Err(e) => {
                warn!(%domain, error = %escape(&e), "MTA-STS policy fetch failed; using the cached policy if any");
                cached
            }
        }
    }

    fn cached(&self, domain: &Domain) -> Option<Arc<Policy>> {
        let tick = self.tick();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((p, used)) = cache.get_mut(domain.as_str()) {
            *used = tick;
            return Some(p.clone());
        }
        let text = std::fs::read_to_string(self.dir.join(domain.as_str())).ok()?;
        let policy = Arc::new(Policy::from_file(&text)?);
        insert_bounded(
            &mut cache,
            domain.to_string(),
            policy.clone(),
            tick,
            MAX_CACHED,
        );
        Some(policy)
    }

    fn tick(&self) -> u64 {
        self.clock
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    fn store(&self, domain: &Domain, policy: &Arc<Policy>) {
        let tick = self.tick();
        insert_bounded(
            &mut self.cache.lock().unwrap_or_else(|e| e.into_inner()),
            domain.to_string(),
            policy.clone(),
            tick,
            MAX_CACHED,
        );
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&self.dir)?;
            let path = self.dir.join(domain.as_str());
            mta_core::durable_file::write(&path, policy.to_file().as_bytes(), 0o600)
        };
        if let Err(e) = write() {
            warn!(%domain, error = %e, "cannot save the MTA-STS policy; it is kept in memory");
        }
    }

    /// The `id` of `_mta-sts.<domain>`, `None` when there is no such record.
    async fn txt_id(&self, domain: &Domain) -> Result<Option<String>, String> {
        let name = format!("_mta-sts.{domain}.");
        let lookup = match self.resolver.txt_lookup(name.as_str()).await {
            Ok(l) => l,
            Err(e) if e.is_no_records_found() => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let records: Vec<String> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                hickory_resolver::proto::rr::RData::TXT(txt) => Some(
                    txt.txt_data
                        .iter()
                        .map(|b| String::from_utf8_lossy(b).into_owned())
                        .collect::<String>(),
                ),
                _ => None,
            })
            .filter(|t| t.starts_with("v=STSv1"))
            .collect();
        // §3.1: more than one STSv1 record means no policy.
        let [record] = records.as_slice() else {
            return Ok(None);
        };
        let id = record_id(record);
        if id.is_none() {
            warn!(%domain, record = %escape(record), "MTA-STS: the TXT record has no valid id (1 to 32 letters and digits); ignored");
        }
        Ok(id)
    }

    async fn fetch(&self, domain: &Domain, id: &str, now: u64) -> Result<Policy, String> {
        let host = format!("mta-sts.{domain}");
        let body = tokio::time::timeout(FETCH_TIMEOUT, self.get(&host))
            .await
            .map_err(|_| format!("https://{host}/ took longer than {FETCH_TIMEOUT:?}"))??;
        Policy::parse(&body, id, now).map_err(|e| format!("policy of {domain}: {e}"))
    }

    /// `GET /.well-known/mta-sts.txt` over HTTPS/1.0 (no chunked encoding to undo); the body
    /// of a `200` with `Content-Type: text/plain`, anything else an error (no redirects).
    async fn get(&self, host: &str) -> Result<String, String> {
        let ips = super::mx::addresses(&self.resolver, host)
            .await
            .map_err(|e| e.to_string())?;
        let mut last = format!("{host} has no address");
        for ip in ips {
            let addr = SocketAddr::new(ip, self.port);
            if let Some(why) = super::mx::refused(ip, &self.internal.0, self.internal.1) {
                last = format!("{host} [{ip}]: {why} (an internal address)");
                continue;
            }
            let tcp = match TcpStream::connect(addr).await {
                Ok(t) => t,
                Err(e) => {
                    last = format!("cannot connect to {addr}: {e}");
                    continue;
                }
            };
            let name = ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
            let mut tls = self
                .connector
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS with {host}: {e}"))?;
            let request = format!(
                "GET /.well-known/mta-sts.txt HTTP/1.0\r\nHost: {host}\r\nUser-Agent: mta\r\n\r\n"
            );
            tls.write_all(request.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            let mut response = Vec::new();
            let mut chunk = [0u8; 4096];
            let end = loop {
                let n = match tls.read(&mut chunk).await {
                    Ok(n) => n,
                    // Servers often close without close_notify: the body then counts only
                    // when it is as long as its Content-Length says.
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                        break End::Cut;
                    }
                    Err(e) => return Err(e.to_string()),
                };
                if n == 0 {
                    break End::CloseNotify;
                }
                response.extend_from_slice(&chunk[..n]);
                if response.len() > MAX_POLICY + 8192 {
                    return Err(format!(
                        "the response from {host} is over {MAX_POLICY} octets"
                    ));
                }
            };
            return parse_response(&response, host, end);
        }
        Err(last)
    }
}

/// How a policy response ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// With the TLS `close_notify` alert: the server says that was all.
    CloseNotify,
    /// The connection was closed without it: the body may have been cut short by anyone on
    /// the path.
    Cut,
}

/// Keeps `cache` at `max` entries or fewer: the least recently used go first.
fn insert_bounded<V>(
    cache: &mut HashMap<String, (V, u64)>,
    key: String,
    value: V,
    tick: u64,
    max: usize,
) {
    cache.insert(key, (value, tick));
    while cache.len() > max {
        let oldest = cache
            .iter()
            .min_by_key(|(_, (_, used))| *used)
            .map(|(k, _)| k.clone());
        match oldest {
            Some(k) => cache.remove(&k),
            None => break,
        };
    }
}

fn parse_response(response: &[u8], host: &str, end: End) -> Result<String, String> {
    let text = String::from_utf8_lossy(response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP response from {host}"))?;
    let mut lines = head.lines();
    let status = lines.next().unwrap_or("");
    let code = status.split_whitespace().nth(1).unwrap_or("");
    if code != "200" {
        return Err(format!(
            "https://{host}/.well-known/mta-sts.txt answered {status:?} (redirects are not followed)"
        ));
    }
    let content_type = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if !content_type.starts_with("text/plain") {
        return Err(format!(
            "the policy of {host} is {content_type:?}, not text/plain"
        ));
    }
    if body.len() > MAX_POLICY {
        return Err(format!("the policy of {host} is over {MAX_POLICY} octets"));
    }
    let length = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.trim().parse::<usize>());
    match (length, end) {
        (Some(Ok(n)), _) if n == body.len() => Ok(body.to_string()),
        (Some(_), _) => Err(format!(
            "the policy of {host} is not as long as its Content-Length: cut short"
        )),
        (None, End::CloseNotify) => Ok(body.to_string()),
        (None, End::Cut) => Err(format!(
            "{host} closed the connection without TLS close_notify and sent no \
             Content-Length: the policy may have been cut short"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 604800\r\n";

    #[test]
    fn a_policy_names_at_most_a_hundred_mx_patterns() {
        let policy = |n: usize| {
            let mx: String = (0..n).map(|i| format!("mx: mx{i}.example.com\n")).collect();
            format!("version: STSv1\nmode: enforce\n{mx}max_age: 600\n")
        };
        assert_eq!(
            Policy::parse(&policy(MAX_MX_PATTERNS), "1", 0)
                .unwrap()
                .mx
                .len(),
            MAX_MX_PATTERNS
        );
        let e = Policy::parse(&policy(MAX_MX_PATTERNS + 1), "1", 0).unwrap_err();
        assert!(e.contains("more than 100"), "{e}");
    }

    #[test]
    fn parses_and_matches() {
        let p = Policy::parse(GOOD, "20260101", 5).unwrap();
        assert_eq!((p.mode, p.max_age, p.mx.len()), (Mode::Enforce, 604_800, 2));
        assert!(p.allows("mail.example.com") && p.allows("MAIL.example.com."));
        assert!(p.allows("mx1.example.net"));
        assert!(!p.allows("a.b.example.net"), "one label only");
        assert!(!p.allows("example.net") && !p.allows("evil.example.com"));
        let back = Policy::from_file(&p.to_file()).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn refuses_what_is_not_a_policy() {
        for (text, why) in [
            ("mode: enforce\nmx: a\nmax_age: 1\n", "version"),
            (
                "version: STSv1\nmode: strict\nmx: a\nmax_age: 1\n",
                "unknown mode",
            ),
            ("version: STSv1\nmode: enforce\nmax_age: 1\n", "mx"),
            ("version: STSv1\nmode: enforce\nmx: a\n", "max_age"),
            ("<html>", "key: value"),
            (
                "version: STSv1\nmode: enforce\nmx: a\r.b\nmax_age: 1\n",
                "not a host name",
            ),
            (
                "version: STSv1\nmode: enforce\nmx: *.*.b\nmax_age: 1\n",
                "not a host name",
            ),
        ] {
            let e = Policy::parse(text, "1", 0).unwrap_err();
            assert!(e.contains(why), "{text:?}: {e}");
        }
        let huge = "version: STSv1\nmode: none\nmax_age: 99999999999\n";
        assert_eq!(Policy::parse(huge, "1", 0).unwrap().max_age, MAX_AGE_LIMIT);
    }

    #[test]
    fn responses() {
        let ok =
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nversion: STSv1\r\n";
        assert_eq!(
            parse_response(ok, "h", End::CloseNotify).unwrap(),
            "version: STSv1\r\n"
        );
        let moved = b"HTTP/1.1 301 Moved\r\nLocation: https://x/\r\n\r\n";
        assert!(
            parse_response(moved, "h", End::CloseNotify)
                .unwrap_err()
                .contains("redirects")
        );
        let html = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<p>";
        assert!(
            parse_response(html, "h", End::CloseNotify)
                .unwrap_err()
                .contains("text/plain")
        );
    }

    #[test]
    fn a_body_cut_short_is_refused() {
        let head = "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n";
        let body = "version: STSv1\r\nmode: enforce\r\nmx: a.example\r\n";
        let with_length = |n: usize| format!("{head}Content-Length: {n}\r\n\r\n{body}");
        // No close_notify: only a body exactly as long as announced counts.
        let whole = with_length(body.len());
        assert_eq!(
            parse_response(whole.as_bytes(), "h", End::Cut).unwrap(),
            body
        );
        for n in [body.len() + 20, body.len() - 1] {
            let cut = with_length(n);
            for end in [End::Cut, End::CloseNotify] {
                let e = parse_response(cut.as_bytes(), "h", end).unwrap_err();
                assert!(e.contains("Content-Length"), "{e}");
            }
        }
        let bare = format!("{head}\r\n{body}");
        let e = parse_response(bare.as_bytes(), "h", End::Cut).unwrap_err();
        assert!(e.contains("close_notify"), "{e}");
        assert_eq!(
            parse_response(bare.as_bytes(), "h", End::CloseNotify).unwrap(),
            body
        );
    }

    #[test]
    fn txt_ids() {
        let table: &[(&str, Option<&str>)] = &[
            ("v=STSv1; id=20260101", Some("20260101")),
            ("v=STSv1;id=abcXYZ019;", Some("abcXYZ019")),
            ("v=STSv1; id=20160831085700Z;", Some("20160831085700Z")),
            ("v=STSv1; id=1\nfetched_at: 99999999999", None),
            ("v=STSv1; id=1\r\nmx: evil.example", None),
            ("v=STSv1; id=", None),
            ("v=STSv1; id=2016-08-31", None),
            ("v=STSv1; id=a b", None),
            ("v=STSv1; id=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", None),
            ("v=STSv1; id=1; id=2", None),
            ("v=STSv1", None),
            ("v=STSv2; id=1", None),
        ];
        for (record, want) in table {
            assert_eq!(record_id(record).as_deref(), *want, "{record:?}");
        }
        assert_eq!(
            record_id(&format!("v=STSv1; id={}", "a".repeat(32))).map(|i| i.len()),
            Some(32)
        );
    }

    /// The reference: 1 to 32 characters, each an ASCII letter or digit.
    fn reference_id(id: &str) -> bool {
        let n = id.chars().count();
        (1..=32).contains(&n)
            && id
                .chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase() || c.is_ascii_uppercase())
    }

    proptest::proptest! {
        #[test]
        fn ids_agree_with_the_reference(id in "[ -:<-~\r\n\t\u{e9}]{0,40}") {
            proptest::prop_assert_eq!(is_policy_id(&id), reference_id(&id));
            // RFC 8461 §3.1: blanks may follow the id (`*WSP ";"`), never come between
            // `id=` and it.
            let field = id.trim_end_matches([' ', '\t']);
            let want = reference_id(field).then(|| field.to_string());
            proptest::prop_assert_eq!(record_id(&format!("v=STSv1; id={id}")), want);
        }
    }

    #[test]
    fn the_cache_file_cannot_be_injected() {
        // An id with line breaks never becomes a policy, so it never reaches the file.
        assert!(Policy::parse(GOOD, "1\nmx: evil.example", 5).is_err());
        // A file with more than the policy says (a hand-edited or forged one) is not read.
        let p = Policy::parse(GOOD, "20260101", 5).unwrap();
        let file = p.to_file();
        assert_eq!(Policy::from_file(&file), Some(p.clone()));
        let forged = [
            file.replacen("id: 20260101\n", "id: 20260101\nmx: evil.example\n", 1),
            file.replacen("id: 20260101", "id: 2026\rmx", 1),
            format!("fetched_at: 5\n{file}"),
            file.replacen("fetched_at: 5", "fetched_at: 5 ", 1),
        ];
        for f in forged {
            assert_eq!(Policy::from_file(&f), None, "{f:?}");
        }
    }

    #[tokio::test]
    async fn each_domain_has_its_own_file_and_the_memory_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let resolver = super::super::mx::resolver(
            &["127.0.0.1:1".parse().unwrap()],
            mta_core::config::IpFamily::Any,
        )
        .unwrap();
        let sts = Sts::new(resolver, Arc::new(RootCertStore::empty()), 443, dir.path());
        let com = Domain::parse("example.com").unwrap();
        let net = Domain::parse("example.net").unwrap();
        let p = |id: &str| Arc::new(Policy::parse(GOOD, id, 5).unwrap());
        sts.store(&com, &p("1"));
        sts.store(&net, &p("2"));
        let mut names: Vec<String> = std::fs::read_dir(dir.path().join("mta-sts"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["example.com", "example.net"]);
        let text = std::fs::read_to_string(dir.path().join("mta-sts/example.net")).unwrap();
        assert!(text.starts_with("id: 2\nfetched_at: 5\n"), "{text}");

        let mut cache = HashMap::new();
        for i in 0..5u64 {
            insert_bounded(&mut cache, format!("d{i}"), i, i, 3);
        }
        cache.get_mut("d2").unwrap().1 = 9; // d2 used again
        insert_bounded(&mut cache, "d5".into(), 5, 10, 3);
        let mut kept: Vec<&String> = cache.keys().collect();
        kept.sort();
        assert_eq!(kept, ["d2", "d4", "d5"]);
    }

    #[tokio::test]
    async fn a_policy_host_at_an_internal_address_is_not_connected_to() {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let resolver = super::super::mx::resolver(
            &["127.0.0.1:1".parse().unwrap()],
            mta_core::config::IpFamily::Any,
        )
        .unwrap();
        let sts = Sts::new(resolver, Arc::new(RootCertStore::empty()), port, dir.path());
        // mx::addresses takes an address as it is: no DNS needed to point at loopback.
        let got = tokio::time::timeout(std::time::Duration::from_secs(2), sts.get("127.0.0.1"));
        let accepted =
            tokio::time::timeout(std::time::Duration::from_millis(300), listener.accept());
        let (got, accepted) = tokio::join!(got, accepted);
        assert!(accepted.is_err(), "connected to a loopback policy host");
        let err = got.expect("no answer").unwrap_err();
        assert!(err.contains("internal"), "{err}");
    }
}
