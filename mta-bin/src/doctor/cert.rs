//! The certificate check of `mta doctor`: the certificate our listeners present (`[tls]
//! cert`, or the self-signed one `mta serve` makes in `DATA_DIR/tls/`) must name the hostname
//! (RFC 6125: a subjectAltName DNS entry, one leading `*` label allowed), be in its validity
//! period, and not be self-signed. The chain is not checked against public roots: that needs
//! the intermediate certificates and a root store, which a sending server has and we need not.

use std::path::{Path, PathBuf};

use mta_core::address::Domain;
use mta_core::config::Config;
use mta_smtp::client::dane::DANE_EE;
use mta_smtp::relay::dane::{Dnssec, HostTlsa};
use x509_parser::extensions::GeneralName;
use x509_parser::pem::Pem;

use super::report::{Status, Verdict};

/// Fewer days left than this is a warning: renewal should have happened already.
const RENEW_DAYS: i64 = 14;

/// What the check needs to know about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// subjectAltName DNS entries, lower case.
    pub dns_names: Vec<String>,
    /// Issuer equals subject.
    pub self_signed: bool,
    /// The issuer's distinguished name.
    pub issuer: String,
    /// Validity, in Unix seconds.
    pub not_before: i64,
    /// Validity, in Unix seconds.
    pub not_after: i64,
}

/// Reads the first certificate (the server's own) of a PEM chain.
///
/// # Errors
/// The reason, when there is no certificate or it does not parse.
pub fn facts(pem: &[u8]) -> Result<Facts, String> {
    let pem = Pem::iter_from_buffer(pem)
        .filter_map(Result::ok)
        .find(|p| p.label == "CERTIFICATE")
        .ok_or("no PEM CERTIFICATE in it")?;
    let cert = pem
        .parse_x509()
        .map_err(|e| format!("the certificate does not parse: {e}"))?;
    let dns_names = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(name) => Some(name.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(format!("its subjectAltName does not parse: {e}")),
    };
    Ok(Facts {
        dns_names,
        self_signed: cert.subject().as_raw() == cert.issuer().as_raw(),
        issuer: cert.issuer().to_string(),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// True when the certificate name `pattern` covers `host` (RFC 6125 §6.4.3: a `*` only as
/// the whole left-most label, matching exactly one label).
pub(crate) fn name_matches(pattern: &str, host: &str) -> bool {
    let (pattern, host) = (pattern.trim_end_matches('.'), host.trim_end_matches('.'));
    match pattern.strip_prefix("*.") {
        Some(rest) => host
            .split_once('.')
            .is_some_and(|(label, parent)| !label.is_empty() && parent.eq_ignore_ascii_case(rest)),
        None => pattern.eq_ignore_ascii_case(host),
    }
}

/// The verdict on a certificate for `hostname` at time `now` (Unix seconds).
pub fn judge(facts: &Facts, hostname: &str, now: i64) -> (Status, String) {
    let mut problems = Vec::new();
    let mut status = Status::Ok;
    if !facts.dns_names.iter().any(|n| name_matches(n, hostname)) {
        status = Status::Fail;
        problems.push(if facts.dns_names.is_empty() {
            format!("not valid for {hostname} (no DNS names in subjectAltName)")
        } else {
            format!(
                "not valid for {hostname} (it names {})",
                facts.dns_names.join(", ")
            )
        });
    }
    if facts.self_signed {
        status = Status::Fail;
        problems.push(
            "self-signed: senders that verify TLS (MTA-STS, DANE-less policies) refuse it; \
             get one from a public CA (e.g. Let's Encrypt) and set [tls] cert and key"
                .to_string(),
        );
    }
    let days_left = (facts.not_after - now).div_euclid(86_400);
    if now < facts.not_before {
        status = Status::Fail;
        problems.push("not valid yet".to_string());
    } else if now > facts.not_after {
        status = Status::Fail;
        problems.push(format!("expired {} days ago", -days_left));
    } else if days_left < RENEW_DAYS {
        status = status.max(Status::Warn);
        problems.push(format!("expires in {days_left} days: renew it"));
    }
    let detail = if problems.is_empty() {
        format!(
            "valid for {hostname}, expires in {days_left} days, issued by {} \
             (chain not checked against public roots)",
            facts.issuer
        )
    } else {
        problems.join("; ")
    };
    (status, detail)
}

/// The file the listeners present, and whether it is the generated self-signed one.
fn cert_file(config: &Config) -> (PathBuf, bool) {
    match &config.tls.cert {
        Some(path) => (path.clone(), false),
        None => (
            config.data_dir.join("tls").join("selfsigned-cert.pem"),
            true,
        ),
    }
}

/// The `cert` verdict for our hostname.
pub fn check(config: &Config, now: i64) -> Verdict {
    let hostname = config.hostname.as_str();
    let (path, generated) = cert_file(config);
    let verdict = |status, detail| Verdict::new("cert", hostname, status, detail);
    let pem = match std::fs::read(&path) {
        Ok(pem) => pem,
        Err(e) if generated && e.kind() == std::io::ErrorKind::NotFound => {
            return verdict(
                Status::Fail,
                format!(
                    "no [tls] cert configured, so `mta serve` makes and presents a \
                     self-signed one ({}); set [tls] cert and key to a certificate for \
                     {hostname} from a public CA",
                    path.display()
                ),
            );
        }
        Err(e) => return verdict(Status::Fail, format!("cannot read {}: {e}", path.display())),
    };
    match facts(&pem) {
        Ok(f) => {
            let (status, detail) = judge(&f, hostname, now);
            verdict(status, format!("{}: {detail}", short(&path)))
        }
        Err(e) => verdict(Status::Fail, format!("{}: {e}", path.display())),
    }
}

/// The `cert` verdicts of the `[tls."name"]` certificates, each for its name.
pub fn check_named(config: &Config, now: i64) -> Vec<Verdict> {
    let mut out = Vec::new();
    for (name, named) in &config.tls.names {
        let verdict = |status, detail| Verdict::new("cert", name, status, detail);
        let path = &named.cert;
        out.push(match std::fs::read(path).map_err(|e| e.to_string()) {
            Ok(pem) => match facts(&pem) {
                Ok(f) => {
                    let (status, detail) = judge(&f, name, now);
                    verdict(status, format!("{}: {detail}", short(path)))
                }
                Err(e) => verdict(Status::Fail, format!("{}: {e}", path.display())),
            },
            Err(e) => verdict(Status::Fail, format!("cannot read {}: {e}", path.display())),
        });
    }
    out
}

/// The DER of the first certificate in `pem` and of its SubjectPublicKeyInfo: what TLSA
/// selectors 0 and 1 hash (RFC 6698 §2.1.2).
///
/// # Errors
/// The reason, when there is no certificate or it does not parse.
pub fn der_and_spki(pem: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
    let pem = Pem::iter_from_buffer(pem)
        .filter_map(Result::ok)
        .find(|p| p.label == "CERTIFICATE")
        .ok_or("no PEM CERTIFICATE in it")?;
    let cert = pem
        .parse_x509()
        .map_err(|e| format!("the certificate does not parse: {e}"))?;
    let spki = cert.public_key().raw.to_vec();
    Ok((pem.contents.clone(), spki))
}

/// The `tlsa` verdict: DANE (RFC 7672) senders check `_25._tcp.<hostname>` against the
/// certificate we present. None published is fine (DANE needs DNSSEC; `docs/tls.md`);
/// DANE-EE (usage 3) records of which none matches our certificate make DANE senders refuse
/// mail. DANE-TA (usage 2) records name a CA in the chain, which is not checked here. A match
/// in a zone that is not signed warns, and one whose signatures fail validation fails.
pub async fn tlsa(dns: &super::dns::Dns, config: &Config) -> Verdict {
    let hostname = config.hostname.as_str();
    let name = format!("_25._tcp.{hostname}");
    let verdict = |status, detail: String| Verdict::new("tlsa", hostname, status, detail);
    let (path, _) = cert_file(config);
    let Ok((cert, spki)) = std::fs::read(&path)
        .map_err(|e| e.to_string())
        .and_then(|pem| der_and_spki(&pem))
    else {
        return verdict(
            Status::Info,
            "no certificate to compare TLSA records with (see cert)".into(),
        );
    };
    let hash: String = ring::digest::digest(&ring::digest::SHA256, &spki)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let suggestion = format!("{name}. IN TLSA 3 1 1 {hash}");
    let records = match dns.tlsa(&name).await {
        Ok(r) => r,
        Err(e) => return verdict(Status::Fail, format!("could not check (DNS: {e})")),
    };
    if records.is_empty() {
        return verdict(
            Status::Info,
            format!("no TLSA record at {name} (optional: DANE needs DNSSEC, see docs/tls.md)"),
        )
        .publish(suggestion);
    }
    let ee: Vec<_> = records.iter().filter(|r| r.usage == DANE_EE).collect();
    if ee.iter().any(|r| r.matches(&cert)) {
        let matched = format!("a DANE-EE record at {name} matches our certificate");
        return match unsigned(config).await {
            None => verdict(Status::Ok, matched),
            Some((status, problem)) => verdict(status, format!("{matched}, but {problem}")),
        };
    }
    if ee.is_empty() {
        return verdict(
            Status::Info,
            format!(
                "{} TLSA record(s) at {name}, none DANE-EE (3): not checked",
                records.len()
            ),
        );
    }
    verdict(
        Status::Fail,
        format!(
            "{} DANE-EE record(s) at {name}, none matching our certificate: senders that use \
             DANE will refuse mail",
            ee.len()
        ),
    )
    .publish(suggestion)
}

/// Why DANE senders would not use our TLSA records although they are published: the zone is
/// not signed (warn), or its signatures do not validate (FAIL). `None` when they are secure,
/// or when validation does not work here (the `dnssec` verdict says so).
async fn unsigned(config: &Config) -> Option<(Status, String)> {
    let dnssec = Dnssec::new(config).ok()?;
    dnssec.probe().await.ok()?;
    let host = Domain::parse(config.hostname.as_str()).ok()?;
    match dnssec.tlsa(host.as_str(), &host).await {
        HostTlsa::Dane(_) => None,
        HostTlsa::None => Some((
            Status::Warn,
            "the zone is not DNSSEC-signed, so DANE senders ignore the record".into(),
        )),
        HostTlsa::Failed(why) => Some((
            Status::Fail,
            format!("{why}: DANE senders will not deliver to this host"),
        )),
    }
}

/// The file name, for a short line.
fn short(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, date_time_ymd,
    };

    const DAY: i64 = 86_400;

    fn ca() -> (CertificateParams, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Test CA");
        (params, key)
    }

    fn leaf(names: &[&str], year: i32) -> String {
        let (ca_params, ca_key) = ca();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("x"));
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = date_time_ymd(year, 1, 1);
        params.signed_by(&key, &issuer).unwrap().pem()
    }

    #[test]
    fn ca_signed_for_the_hostname_is_ok_until_two_weeks_before_expiry() {
        let f = facts(leaf(&["mx.example.org"], 2030).as_bytes()).unwrap();
        assert!(!f.self_signed);
        assert_eq!(f.dns_names, ["mx.example.org"]);
        let (status, detail) = judge(&f, "mx.example.org", f.not_after - 30 * DAY);
        assert_eq!(status, Status::Ok, "{detail}");
        assert!(detail.contains("expires in 30 days"), "{detail}");
        assert!(detail.contains("Test CA"), "{detail}");
        let (status, detail) = judge(&f, "mx.example.org", f.not_after - 5 * DAY);
        assert_eq!(status, Status::Warn, "{detail}");
        assert!(detail.contains("expires in 5 days"), "{detail}");
        let (status, detail) = judge(&f, "mx.example.org", f.not_after + 3 * DAY);
        assert_eq!(status, Status::Fail, "{detail}");
        assert!(detail.contains("expired 3 days ago"), "{detail}");
        let (status, _) = judge(&f, "mx.example.org", f.not_before - DAY);
        assert_eq!(status, Status::Fail);
    }

    #[test]
    fn wrong_name_and_self_signed_fail() {
        let f = facts(leaf(&["other.example.org"], 2030).as_bytes()).unwrap();
        let (status, detail) = judge(&f, "mx.example.org", f.not_before + DAY);
        assert_eq!(status, Status::Fail);
        assert!(detail.contains("it names other.example.org"), "{detail}");

        let made = rcgen::generate_simple_self_signed(vec!["mx.example.org".into()]).unwrap();
        let f = facts(made.cert.pem().as_bytes()).unwrap();
        assert!(f.self_signed);
        let (status, detail) = judge(&f, "mx.example.org", f.not_before + DAY);
        assert_eq!(status, Status::Fail);
        assert!(detail.starts_with("self-signed"), "{detail}");

        assert!(facts(b"not pem").is_err());
    }

    #[test]
    fn wildcards_cover_one_label() {
        assert!(name_matches("*.example.org", "mx.example.org"));
        assert!(name_matches("MX.example.org", "mx.example.org."));
        assert!(!name_matches("*.example.org", "a.mx.example.org"));
        assert!(!name_matches("*.example.org", "example.org"));
        assert!(!name_matches("mx.example.org", "mx2.example.org"));
    }
}
