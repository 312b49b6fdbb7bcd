//! DANE for MX delivery (RFC 7672 §2): DNSSEC validation by hickory-resolver itself (no
//! local validating resolver needed), the security of a domain's MX answer, and the TLSA
//! records of each MX host.
//!
//! - Validation starts from the IANA root keys built into hickory-resolver, or from
//!   `outbound.dane_trust_anchor`.
//! - Whether validation works through the configured resolver is probed (the root's DNSKEY
//!   must validate) at most once per [`PROBE_EVERY`]. A resolver that strips DNSSEC records
//!   would otherwise make every answer bogus and stop all mail; while the probe fails, DANE
//!   is not applied and the log says so (once per change, also across reloads). A domain
//!   that had usable TLSA records is remembered (`super::memory`) and meanwhile needs TLS
//!   verified against the CA roots (`policy=dane-memory`); other domains get what they
//!   would without DANE.
//! - TLSA records are looked up only for hosts whose names came from a secure MX RRset (an
//!   attacker who can forge an insecure MX answer could name a host with TLSA records of
//!   their own), or for the domain itself when it has no MX (implicit MX).
//! - A secure TLSA RRset makes the host a DANE host: its certificate must match a usable
//!   record (`crate::client::dane`), and TLS is mandatory even when none is usable. No TLSA
//!   RRset, or an insecure one, means no DANE. A bogus answer or a failed lookup means the
//!   host cannot be used now (RFC 7672 §2.2): the next host is tried, and the message is
//!   deferred when none is left.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::dnssec::TrustAnchors;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, Record, RecordType};
use mta_core::address::Domain;
use mta_core::config::{Config, DnssecSource, IpFamily};
use tracing::{info, warn};

use super::ad::AdResolver;
use super::dns::{Security, is_bogus, security};
use super::mx::{DnsFailure, Route};
use crate::client::dane::{Dane, TlsaRecord};

/// How long a probe result stands.
pub const PROBE_EVERY: Duration = Duration::from_secs(600);

/// The TLSA answer for one MX host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostTlsa {
    /// No secure TLSA RRset: DANE does not apply to this host.
    None,
    /// A secure TLSA RRset: authenticate by it.
    Dane(Arc<Dane>),
    /// Bogus, or the lookup failed: the host cannot be used now.
    Failed(String),
}

/// Who says an answer is validated.
enum Validator {
    /// hickory-resolver, validating from the trust anchors (`outbound.dnssec = "validate"`).
    Own(Box<TokioResolver>),
    /// A validating resolver on loopback, by its AD bit (`"resolver"`).
    Resolver(AdResolver),
}

/// DNSSEC for DANE, and whether it works.
pub struct Dnssec {
    validator: Validator,
    probe: Mutex<Option<(bool, Instant)>>,
    told: Arc<Told>,
}

/// What the log last said about whether validation works. A reload builds a new relay and
/// probes again; sharing this (in `super::Kept`) keeps the log to one line per change
/// instead of one per relay.
#[derive(Debug, Default)]
pub struct Told(Mutex<Option<bool>>);

impl Told {
    /// Records `works`; true when it differs from what was last told (or nothing was).
    fn changed(&self, works: bool) -> bool {
        let before = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(works);
        before != Some(works)
    }
}

impl Dnssec {
    /// The validator `outbound.dnssec` names, asking `[dns] nameservers` (empty:
    /// resolv.conf): a validating resolver starting from `outbound.dane_trust_anchor` or the
    /// built-in root keys, or a stub that trusts the AD bit of loopback resolvers.
    ///
    /// # Errors
    /// When the anchors cannot be read, the resolver cannot be built, or a resolver whose
    /// AD bit would be trusted is not on loopback.
    pub fn new(config: &Config) -> Result<Dnssec, String> {
        let nameservers = &config.dns.nameservers;
        let validator = match config.outbound.dnssec {
            DnssecSource::Validate => Validator::Own(Box::new(validating(
                nameservers,
                config.outbound.ip,
                config.outbound.dane_trust_anchor.as_deref(),
            )?)),
            DnssecSource::Resolver => {
                let servers = match nameservers.is_empty() {
                    false => nameservers.clone(),
                    true => system_nameservers()?,
                };
                Validator::Resolver(
                    AdResolver::new(servers)
                        .map_err(|e| format!("outbound.dnssec = \"resolver\": {e}"))?,
                )
            }
        };
        Ok(Dnssec {
            validator,
            probe: Mutex::new(None),
            told: Arc::default(),
        })
    }

    /// Logs changes of whether validation works only when they differ from what `told`
    /// last said (shared by the relays successive configs build).
    pub fn told_in(mut self, told: Arc<Told>) -> Dnssec {
        self.told = told;
        self
    }

    /// Whether validation works: the root's DNSKEY RRset validates. Probed at most once per
    /// [`PROBE_EVERY`]; a change is logged.
    pub async fn works(&self) -> bool {
        let last = *self.probe.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((works, at)) = last
            && at.elapsed() < PROBE_EVERY
        {
            return works;
        }
        let (works, why) = match self.probe().await {
            Ok(()) => (true, String::new()),
            Err(why) => (false, why),
        };
        *self.probe.lock().unwrap_or_else(PoisonError::into_inner) = Some((works, Instant::now()));
        let changed = self.told.changed(works);
        if changed && works {
            info!("DNSSEC validation works through the resolver; DANE is applied");
        } else if changed {
            warn!(reason = %mta_core::text::escape(&why), "DNSSEC validation does not work through the resolver; DANE is not applied until it does (domains remembered for DANE need verified TLS)");
        }
        works
    }

    /// Asks for the root's DNSKEY RRset, which validates only when the resolver passes
    /// DNSSEC records along and the trust anchors are right (or, trusting the resolver, when
    /// it validates).
    ///
    /// # Errors
    /// Why validation does not work.
    pub async fn probe(&self) -> Result<(), String> {
        match &self.validator {
            Validator::Own(resolver) => match resolver.lookup(".", RecordType::DNSKEY).await {
                Ok(lookup) => match security(lookup.answers(), RecordType::DNSKEY) {
                    Security::Secure => Ok(()),
                    Security::Insecure => Err("the root DNSKEY answer is not signed".into()),
                    Security::Bogus => Err("the root DNSKEY answer does not validate".into()),
                },
                Err(e) => Err(format!("the root DNSKEY lookup failed: {e}")),
            },
            Validator::Resolver(ad) => match ad.ask(".", RecordType::DNSKEY).await {
                Ok(a) if a.rcode == ResponseCode::NoError && a.authentic => Ok(()),
                Ok(a) => Err(format!(
                    "the resolver answered {} without the AD bit for the root DNSKEY: it \
                     does not validate",
                    rcode(a.rcode)
                )),
                Err(e) => Err(format!("the root DNSKEY lookup failed: {e}")),
            },
        }
    }

    /// Where mail for `domain` goes, and whether the host names can be trusted for DANE
    /// ([`super::mx::route`]).
    ///
    /// # Errors
    /// [`DnsFailure`]; an answer that fails validation is temporary.
    pub async fn route(&self, domain: &Domain) -> Result<(Route, bool), DnsFailure> {
        let ad = match &self.validator {
            Validator::Own(resolver) => return super::mx::route(resolver, domain).await,
            Validator::Resolver(ad) => ad,
        };
        let name = format!("{domain}.");
        let answer = ad.ask(&name, RecordType::MX).await.map_err(|e| {
            DnsFailure::Temporary(format!("DNS MX lookup for {domain} failed: {e}"))
        })?;
        match answer.rcode {
            ResponseCode::NoError => {
                let records = answer
                    .records
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::MX(mx) => Some((mx.preference, mx.exchange.clone())),
                        _ => None,
                    })
                    .collect::<Vec<_>>();
                // No MX: the domain is its own host (implicit MX), trusted as such.
                let secure = answer.authentic || records.is_empty();
                Ok((super::mx::route_from(domain, records), secure))
            }
            ResponseCode::NXDomain => Err(DnsFailure::Permanent(format!(
                "{domain} does not exist (NXDOMAIN)"
            ))),
            ResponseCode::ServFail => Err(DnsFailure::Temporary(format!(
                "the resolver answered SERVFAIL for the MX of {domain} (a DNSSEC validation \
                 failure, or DNS trouble)"
            ))),
            other => Err(DnsFailure::Temporary(format!(
                "DNS MX lookup for {domain} failed: {}",
                rcode(other)
            ))),
        }
    }

    /// The TLSA records at `_25._tcp.<host>` (RFC 7672 §2.2); `domain` is the destination,
    /// the second reference name for DANE-TA.
    pub async fn tlsa(&self, host: &str, domain: &Domain) -> HostTlsa {
        let name = format!("_25._tcp.{}.", host.trim_end_matches('.'));
        let ad = match &self.validator {
            Validator::Own(resolver) => return own_tlsa(resolver, &name, host, domain).await,
            Validator::Resolver(ad) => ad,
        };
        match ad.ask(&name, RecordType::TLSA).await {
            Ok(a) if a.rcode == ResponseCode::NoError && a.authentic => {
                dane_of(&a.records, host, domain)
            }
            Ok(a) if matches!(a.rcode, ResponseCode::NoError | ResponseCode::NXDomain) => {
                HostTlsa::None
            }
            Ok(a) => HostTlsa::Failed(format!(
                "the resolver answered {} for the TLSA records at {name} (a DNSSEC \
                 validation failure, or DNS trouble)",
                rcode(a.rcode)
            )),
            Err(e) => HostTlsa::Failed(format!("TLSA lookup for {name} failed: {e}")),
        }
    }
}

/// A response code as DNS people write it (`SERVFAIL`, not "Server Failure").
fn rcode(code: ResponseCode) -> String {
    match code {
        ResponseCode::NoError => "NOERROR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::Refused => "REFUSED".into(),
        other => other.to_string(),
    }
}

/// hickory's validating resolver on `nameservers`, from the anchors in `trust_anchor` or the
/// built-in root keys.
fn validating(
    nameservers: &[SocketAddr],
    family: IpFamily,
    trust_anchor: Option<&Path>,
) -> Result<TokioResolver, String> {
    let anchors = match trust_anchor {
        Some(path) => TrustAnchors::from_file(path).map_err(|e| {
            format!(
                "outbound.dane_trust_anchor: cannot read {}: {e}",
                path.display()
            )
        })?,
        None => TrustAnchors::default(),
    };
    if anchors.is_empty() {
        return Err(format!(
            "outbound.dane_trust_anchor: {} holds no root DNSKEY",
            trust_anchor.map_or(String::new(), |p| p.display().to_string())
        ));
    }
    super::mx::validating_resolver(nameservers, family, Arc::new(anchors))
}

/// The name servers of `/etc/resolv.conf`.
fn system_nameservers() -> Result<Vec<SocketAddr>, String> {
    let (config, _) = hickory_resolver::system_conf::read_system_conf()
        .map_err(|e| format!("cannot read the system resolver configuration: {e}"))?;
    Ok(config
        .name_servers()
        .iter()
        .map(|ns| {
            let port = ns.connections.first().map_or(53, |c| c.port);
            SocketAddr::new(ns.ip, port)
        })
        .collect())
}

/// The TLSA answer through hickory's own validation.
async fn own_tlsa(resolver: &TokioResolver, name: &str, host: &str, domain: &Domain) -> HostTlsa {
    match resolver.lookup(name, RecordType::TLSA).await {
        Ok(lookup) => match security(lookup.answers(), RecordType::TLSA) {
            Security::Bogus => HostTlsa::Failed(format!(
                "the TLSA records at {name} fail DNSSEC validation (bogus)"
            )),
            Security::Insecure => HostTlsa::None,
            Security::Secure => dane_of(lookup.answers(), host, domain),
        },
        Err(NetError::Dns(DnsError::NoRecordsFound(_))) => HostTlsa::None,
        Err(e) if is_bogus(&e) => HostTlsa::Failed(format!(
            "the TLSA answer for {name} fails DNSSEC validation (bogus)"
        )),
        Err(NetError::Dns(DnsError::Nsec { .. })) => HostTlsa::None,
        Err(e) => HostTlsa::Failed(format!("TLSA lookup for {name} failed: {e}")),
    }
}

/// The TLSA records among `answers`.
pub fn tlsa_records(answers: &[Record]) -> Vec<TlsaRecord> {
    answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::TLSA(t) => Some(TlsaRecord {
                usage: u8::from(t.cert_usage),
                selector: u8::from(t.selector),
                matching: u8::from(t.matching),
                data: t.cert_data.clone(),
            }),
            _ => None,
        })
        .collect()
}

/// The DANE policy of `host` from the TLSA records of a secure answer.
fn dane_of(answers: &[Record], host: &str, domain: &Domain) -> HostTlsa {
    let records = tlsa_records(answers);
    if records.is_empty() {
        return HostTlsa::None;
    }
    let names = vec![
        host.trim_end_matches('.').to_ascii_lowercase(),
        domain.as_str().to_string(),
    ];
    HostTlsa::Dane(Arc::new(Dane::new(records, names)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trust_anchor_file_without_keys_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("anchor");
        std::fs::write(&file, "; nothing\n").unwrap();
        let err = validating(&[], IpFamily::Any, Some(&file)).expect_err("refused");
        assert!(err.contains("dane_trust_anchor"), "{err}");
    }
}
