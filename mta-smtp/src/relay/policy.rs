//! Which TLS an attempt must reach on each host and why ([`PolicySource`]): REQUIRETLS, the
//! operator's `[outbound.tls."domain"]` tables, DANE for a host with TLSA records, MTA-STS,
//! the downgrade memory, or opportunistic, in that order (`docs/tls.md`); and the sender's
//! wish from RFC 8689 ([`TlsWish`]).

use std::collections::HashMap;
use std::sync::Arc;

use hickory_resolver::TokioResolver;
use mail_auth::report::tlsrpt::ResultType;
use mta_core::address::Domain;
use mta_core::config::{Config, TlsMode};
use mta_core::envelope::Envelope;
use mta_core::metrics::METRICS;
use mta_core::seams::Outcome;
use rustls::RootCertStore;
use tracing::{info, warn};

use super::dane::{Dnssec, HostTlsa};
use super::memory::TlsMemory;
use super::mta_sts;
use super::mx::{self, DnsFailure, MxHost, Route};
use super::tlsrpt::{ReportPolicy, Session, TlsReports};
use crate::client::dane::Dane;
use crate::client::reply::{MAX_KEPT_TEXT, cut};
use crate::client::{TlsInfo, TlsPolicy, Verification};
use mta_core::text::escape;

/// MX hosts tried per attempt, in preference order (Postfix's `smtp_mx_address_limit`): an
/// MX answer of hundreds of records must not make one message open hundreds of
/// connections.
pub const MAX_HOSTS: usize = 5;

/// One host of an attempt and the TLS it must reach there.
pub(super) struct HostPlan {
    pub(super) host: MxHost,
    pub(super) policy: TlsPolicy,
    pub(super) source: PolicySource,
    /// The host's TLSA records when DANE applies.
    pub(super) dane: Option<Arc<Dane>>,
}

/// The hosts to try for one domain, in order, and the domain's MTA-STS policy if any.
pub(super) struct Plan {
    pub(super) hosts: Vec<HostPlan>,
    pub(super) sts: Option<Arc<mta_sts::Policy>>,
}

impl HostPlan {
    /// The policy the TLS report counts this host's sessions under.
    pub(super) fn report<'a>(&'a self, sts: Option<&'a mta_sts::Policy>) -> ReportPolicy<'a> {
        match (&self.dane, sts) {
            (Some(dane), _) => ReportPolicy::Tlsa {
                host: &self.host.name,
                dane,
            },
            (None, Some(p)) => ReportPolicy::Sts(p),
            (None, None) => ReportPolicy::None,
        }
    }
}

/// Where the TLS requirement of an attempt came from; logs and queue results name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicySource {
    /// `[outbound.tls."domain"]` (required or none), or the smarthost (always required).
    Configured,
    /// The MX host has DNSSEC-validated TLSA records (RFC 7672).
    Dane,
    /// The domain took mail over verified TLS before (`outbound.tls_memory`).
    Memory,
    /// The domain's MX host had usable DNSSEC-validated TLSA records before, and DNSSEC
    /// validation does not work now: only the hosts that had them, over TLS verified against
    /// the CA roots (the TLSA records cannot be trusted without validation; the roots can).
    DaneMemory,
    /// The sender asked for TLS all the way (RFC 8689 REQUIRETLS).
    RequireTls,
    /// The domain's MTA-STS policy says `enforce` (RFC 8461).
    MtaSts,
    /// Nothing asks for more: STARTTLS when offered, any certificate.
    Opportunistic,
}

impl PolicySource {
    /// `configured`, `dane`, `memory`, `dane-memory`, `requiretls`, `mta-sts` or
    /// `opportunistic`.
    pub fn name(self) -> &'static str {
        match self {
            PolicySource::Configured => "configured",
            PolicySource::Dane => "dane",
            PolicySource::Memory => "memory",
            PolicySource::DaneMemory => "dane-memory",
            PolicySource::RequireTls => "requiretls",
            PolicySource::MtaSts => "mta-sts",
            PolicySource::Opportunistic => "opportunistic",
        }
    }
}

/// What planning reads from the relay: its config, DNS, CA roots, memories and reports.
/// The relay lends it for one plan; planning never holds the relay itself.
pub(super) struct Planner<'a> {
    pub(super) config: &'a Config,
    pub(super) resolver: &'a TokioResolver,
    pub(super) webpki: &'a Arc<RootCertStore>,
    pub(super) domain_roots: &'a HashMap<Domain, Arc<RootCertStore>>,
    pub(super) memory: &'a TlsMemory,
    pub(super) reports: &'a TlsReports,
    pub(super) sts: Option<&'a mta_sts::Sts>,
    pub(super) dnssec: Option<&'a Dnssec>,
}

/// A domain's hosts as DNS gave them, and what DNSSEC can say of them.
struct Resolved<'a> {
    hosts: Vec<MxHost>,
    /// The validator to look TLSA records up with, when the host names came from a secure
    /// answer and DANE may decide.
    dnssec: Option<&'a Dnssec>,
    /// DNSSEC validation is configured but does not work now.
    unvalidated: bool,
}

/// The domain's own policy, before each host's TLSA records are looked at.
struct DomainPolicy {
    policy: TlsPolicy,
    source: PolicySource,
    sts: Option<Arc<mta_sts::Policy>>,
    /// While validation does not work: the hosts that had TLSA records, the only ones used.
    dane_hosts: Option<Vec<String>>,
}

/// Why hosts were left out of a plan, to say why when none is left.
#[derive(Default)]
struct LeftOut {
    /// Hosts whose TLSA lookup failed, with the reason.
    failed: Vec<String>,
    /// Hosts an MTA-STS `enforce` policy does not list.
    unlisted: usize,
    /// Hosts that never had TLSA records, while validation does not work.
    not_dane: usize,
}

impl Planner<'_> {
    /// Counts a session for the TLS reports; nothing when they are off
    /// (`outbound.tls_reports`, which needs a restart to change): nothing would ever take the
    /// counts, and they would grow for as long as the server runs.
    pub(super) fn report(&self, domain: &Domain, policy: ReportPolicy<'_>, session: Session) {
        if self.config.outbound.tls_reports {
            self.reports.record(domain, policy, session);
        }
    }

    /// The MTA-STS policy of `domain` when one can apply: MTA-STS on, the sender did not
    /// waive it (`TLS-Required: No`) or ask for more (REQUIRETLS), and no `[outbound.tls]`
    /// table of the operator's decides instead.
    pub(super) async fn sts_policy(
        &self,
        domain: &Domain,
        wish: TlsWish,
    ) -> Option<Arc<mta_sts::Policy>> {
        let sts = self.sts.as_ref()?;
        let configured = matches!(
            self.config.outbound.tls.get(domain).map(|t| t.mode),
            Some(TlsMode::Required | TlsMode::None)
        );
        if wish != TlsWish::Default || configured || domain.is_literal() {
            return None;
        }
        sts.policy(domain).await
    }

    /// The TLS policy for MX delivery to `domain` for a message that asks for `wish`, and
    /// where it came from: REQUIRETLS first (verified TLS, whatever else is configured), then
    /// the domain's table when it names one, then an MTA-STS `enforce` policy, then the
    /// downgrade memory (which a sender's `TLS-Required: No` waives, RFC 8689 §5), else
    /// opportunistic.
    pub(super) fn policy_for(
        &self,
        domain: &Domain,
        wish: TlsWish,
        sts: Option<&mta_sts::Policy>,
    ) -> (TlsPolicy, PolicySource) {
        let roots = self
            .domain_roots
            .get(domain)
            .cloned()
            .unwrap_or_else(|| self.webpki.clone());
        if wish == TlsWish::Require {
            return (TlsPolicy::Required { roots }, PolicySource::RequireTls);
        }
        match self.config.outbound.tls.get(domain).map(|t| t.mode) {
            Some(TlsMode::Required) => (TlsPolicy::Required { roots }, PolicySource::Configured),
            Some(TlsMode::None) => (TlsPolicy::Plaintext, PolicySource::Configured),
            _ if sts.is_some_and(|p| p.mode == mta_sts::Mode::Enforce) => {
                (TlsPolicy::Required { roots }, PolicySource::MtaSts)
            }
            _ if wish != TlsWish::Waive && self.memory.remembers(domain) => {
                (TlsPolicy::Required { roots }, PolicySource::Memory)
            }
            _ => (
                TlsPolicy::Opportunistic { roots },
                PolicySource::Opportunistic,
            ),
        }
    }
    /// The plan for MX delivery to `domain`: its hosts in order, each with its policy. DANE
    /// decides for a host with a secure TLSA RRset; the others get the domain's policy, and
    /// under MTA-STS `enforce` only the hosts the policy lists. A host whose TLSA lookup
    /// failed is left out.
    ///
    /// # Errors
    /// The outcome for every recipient when no host is left to try.
    pub(super) async fn plan(&self, domain: &Domain, wish: TlsWish) -> Result<Plan, Outcome> {
        let resolved = self.resolve(domain).await?;
        let domain_policy = self.domain_policy(domain, wish, resolved.unvalidated).await;
        // RFC 8689 §5: `TLS-Required: No` waives recipient-side policies, DANE too; the
        // operator's own table decides over DANE as over MTA-STS.
        let dnssec = resolved.dnssec.filter(|_| {
            wish != TlsWish::Waive
                && domain_policy.source != PolicySource::Configured
                && !domain.is_literal()
        });
        let mut plans = Vec::new();
        let mut left_out = LeftOut::default();
        for host in resolved.hosts {
            let tlsa = match dnssec {
                Some(d) => d.tlsa(&host.name, domain).await,
                None => HostTlsa::None,
            };
            if let Some(plan) = self.host_plan(domain, &domain_policy, host, tlsa, &mut left_out) {
                plans.push(plan);
            }
        }
        if plans.is_empty() {
            return Err(self.nothing_left(domain, &domain_policy, &left_out));
        }
        Ok(Plan {
            hosts: plans,
            sts: domain_policy.sts,
        })
    }

    /// The domain's hosts. Where mail goes is decided without DNSSEC first, so that a
    /// resolver that cannot validate costs nothing when DNS is down anyway; while
    /// validation works, the answer is looked up again through the validating resolver
    /// for its proofs.
    async fn resolve(&self, domain: &Domain) -> Result<Resolved<'_>, Outcome> {
        let (hosts, _) = self.hosts(domain, None).await?;
        let (dnssec, unvalidated) = match self.dnssec {
            Some(_) if domain.is_literal() => (None, false),
            Some(d) if d.works().await => (Some(d), false),
            Some(_) => (None, true),
            None => (None, false),
        };
        let (hosts, names_secure) = match dnssec {
            Some(d) => self.hosts(domain, Some(d)).await?,
            None => (hosts, false),
        };
        Ok(Resolved {
            hosts,
            dnssec: dnssec.filter(|_| names_secure),
            unvalidated,
        })
    }

    /// The policy for the domain's hosts that DANE does not decide for.
    async fn domain_policy(
        &self,
        domain: &Domain,
        wish: TlsWish,
        unvalidated: bool,
    ) -> DomainPolicy {
        let sts = self.sts_policy(domain, wish).await;
        let (mut policy, mut source) = self.policy_for(domain, wish, sts.as_deref());
        // DANE cannot be applied while validation does not work; a domain known to use it
        // must not get less meanwhile (whoever breaks validation would otherwise switch DANE
        // off): verified TLS, and only to the hosts that had TLSA records, since the same
        // attacker can forge the MX answer too. `TLS-Required: No` and the operator's table
        // decide over it as they do over DANE.
        let dane_hosts =
            match unvalidated && wish != TlsWish::Waive && source != PolicySource::Configured {
                true => self.memory.dane_hosts(domain),
                false => None,
            };
        if dane_hosts.is_some() {
            if let TlsPolicy::Opportunistic { roots } = &policy {
                policy = TlsPolicy::Required {
                    roots: roots.clone(),
                };
            }
            // MTA-STS `enforce` and REQUIRETLS ask for verified TLS already, and keep their
            // own rules (the policy's `mx:` list, RFC 8689); the host list applies on top.
            if matches!(source, PolicySource::Opportunistic | PolicySource::Memory) {
                source = PolicySource::DaneMemory;
            }
            warn!(%domain, policy = source.name(), "DNSSEC validation is unavailable and this domain had DANE: verified TLS to the hosts that had TLSA records is required until validation works again");
        }
        DomainPolicy {
            policy,
            source,
            sts,
            dane_hosts,
        }
    }

    /// How `host` is tried, given its TLSA records; `None` when it is left out (and why, in
    /// `left_out`).
    fn host_plan(
        &self,
        domain: &Domain,
        domain_policy: &DomainPolicy,
        host: MxHost,
        tlsa: HostTlsa,
        left_out: &mut LeftOut,
    ) -> Option<HostPlan> {
        let DomainPolicy {
            policy,
            source,
            sts,
            dane_hosts,
        } = domain_policy;
        let source = *source;
        let enforced = sts
            .as_ref()
            .filter(|p| source == PolicySource::MtaSts && p.mode == mta_sts::Mode::Enforce);
        match tlsa {
            // All records unusable: TLS without authentication (RFC 7672 §2.2), unless
            // the domain's own policy asks for more.
            HostTlsa::Dane(dane)
                if !dane.usable() && matches!(policy, TlsPolicy::Required { .. }) =>
            {
                return Some(HostPlan {
                    host,
                    policy: policy.clone(),
                    source,
                    dane: None,
                });
            }
            HostTlsa::Dane(dane) => {
                if dane.usable() {
                    self.memory.dane(domain, &host.name);
                }
                info!(%domain, mx = %escape(&host.name), records = dane.records.len(), "DANE: the MX host has TLSA records");
                return Some(HostPlan {
                    host,
                    policy: TlsPolicy::Dane {
                        dane: dane.clone(),
                        roots: self.webpki.clone(),
                    },
                    source: PolicySource::Dane,
                    dane: Some(dane),
                });
            }
            HostTlsa::Failed(why) => {
                let why = cut(&why, MAX_KEPT_TEXT).into_owned();
                warn!(%domain, mx = %escape(&host.name), reason = %escape(&why), "DANE: the MX host cannot be used now");
                let session = Session::Failure {
                    kind: ResultType::DnssecInvalid,
                    mx: Some(host.name.clone()),
                    ip: None,
                    info: Some(why.clone()),
                };
                self.report(domain, ReportPolicy::None, session);
                left_out.failed.push(format!("{}: {why}", host.name));
            }
            HostTlsa::None if enforced.is_some_and(|p| !p.allows(&host.name)) => {
                left_out.unlisted += 1
            }
            HostTlsa::None
                if dane_hosts.as_ref().is_some_and(|known| {
                    !known.contains(&host.name.trim_end_matches('.').to_ascii_lowercase())
                }) =>
            {
                warn!(%domain, mx = %escape(&host.name), "DANE memory: this MX host never had TLSA records; not used while DNSSEC validation is unavailable");
                left_out.not_dane += 1;
            }
            HostTlsa::None => {
                return Some(HostPlan {
                    host,
                    policy: policy.clone(),
                    source,
                    dane: None,
                });
            }
        }
        None
    }

    /// The hosts for a domain and whether their names can be trusted for DANE (looked up
    /// through `dnssec` when given), or the outcome for every recipient when there are none.
    async fn hosts(
        &self,
        domain: &Domain,
        dnssec: Option<&Dnssec>,
    ) -> Result<(Vec<mx::MxHost>, bool), Outcome> {
        if domain.is_literal() {
            let host = mx::MxHost {
                name: domain
                    .as_str()
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .trim_start_matches("IPv6:")
                    .to_string(),
                preference: 0,
            };
            return Ok((vec![host], false));
        }
        let route = match dnssec {
            Some(d) => d.route(domain).await,
            None => mx::route(self.resolver, domain).await,
        };
        match route {
            Ok((Route::Hosts(mut h), secure)) => {
                if h.len() > MAX_HOSTS {
                    info!(%domain, hosts = h.len(), tried = MAX_HOSTS, "many MX hosts: only the first are tried");
                    h.truncate(MAX_HOSTS);
                }
                Ok((h, secure))
            }
            Ok((Route::NullMx, _)) => {
                info!(%domain, "null MX: the domain accepts no mail");
                Err(Outcome::failed(
                    "5.1.10",
                    format!("{domain} does not accept mail (null MX, RFC 7505)"),
                ))
            }
            Err(DnsFailure::Permanent(why)) => Err(Outcome::failed("5.1.2", why)),
            Err(DnsFailure::Temporary(why)) => {
                METRICS.dns_error("mx");
                Err(Outcome::deferred("4.4.3", why))
            }
        }
    }

    /// The outcome for every recipient when every host was left out.
    fn nothing_left(
        &self,
        domain: &Domain,
        domain_policy: &DomainPolicy,
        left_out: &LeftOut,
    ) -> Outcome {
        if !left_out.failed.is_empty() {
            return Outcome::deferred(
                "4.7.5",
                format!(
                    "DANE: no MX host of {domain} can be used now: {} (policy=dane)",
                    left_out.failed.join("; ")
                ),
            );
        }
        if left_out.not_dane > 0 && left_out.unlisted == 0 {
            return Outcome::deferred(
                "4.7.5",
                format!(
                    "DANE memory: DNSSEC validation is unavailable and no MX host of {domain} \
                     is one that had TLSA records (policy=dane-memory)"
                ),
            );
        }
        let sts = &domain_policy.sts;
        let enforced = sts.as_ref().filter(|p| {
            domain_policy.source == PolicySource::MtaSts && p.mode == mta_sts::Mode::Enforce
        });
        let p = enforced.map_or_else(Vec::new, |p| p.mx.clone());
        warn!(%domain, patterns = %escape(&p.join(",")), hosts = left_out.unlisted, "MTA-STS: no MX host matches the policy");
        self.report(
            domain,
            sts.as_deref().map_or(ReportPolicy::None, ReportPolicy::Sts),
            Session::Failure {
                kind: ResultType::ValidationFailure,
                mx: None,
                ip: None,
                info: Some("no MX host matches the policy".into()),
            },
        );
        Outcome::deferred(
            "4.7.5",
            format!(
                "MTA-STS: no MX host of {domain} matches its policy (mx: {}) (policy=mta-sts)",
                p.join(", ")
            ),
        )
    }
}

/// MTA-STS `testing` (RFC 8461 §5): deliver as usual, but say when `enforce` would have
/// refused this host.
pub(super) fn sts_testing_report(
    domain: &Domain,
    host: &str,
    policy: &mta_sts::Policy,
    tls: Option<&TlsInfo>,
) {
    let problem = if !policy.allows(host) {
        Some("the MX host does not match the policy".to_string())
    } else {
        match tls {
            None => Some("no TLS".to_string()),
            Some(t) => match &t.verified {
                Verification::Verified => None,
                Verification::Failed(why) => Some(format!("certificate not verified ({why})")),
            },
        }
    };
    if let Some(problem) = problem {
        warn!(%domain, mx = %escape(host), problem = %escape(&problem), "MTA-STS testing: enforce mode would have refused this delivery");
    }
}

/// What the sender asked of TLS for this message (RFC 8689).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TlsWish {
    /// `MAIL FROM:<…> REQUIRETLS`: verified TLS to servers that offer REQUIRETLS.
    Require,
    /// A `TLS-Required: No` header (and no REQUIRETLS): recipient-side policies such as the
    /// downgrade memory are waived; the operator's own `[outbound.tls]` tables still apply.
    Waive,
    /// Nothing.
    Default,
}

impl TlsWish {
    pub(super) fn of(envelope: &Envelope, body: &[u8]) -> TlsWish {
        if envelope.require_tls {
            return TlsWish::Require;
        }
        let waived = crate::headers::fields(body).iter().any(|f| {
            f.name.eq_ignore_ascii_case("TLS-Required")
                && crate::headers::unfold(f.value).is_some_and(|v| v.eq_ignore_ascii_case("no"))
        });
        if waived {
            TlsWish::Waive
        } else {
            TlsWish::Default
        }
    }
}

/// The TLS level for the metrics, from [`describe_tls`]'s text.
pub(super) fn tls_level(described: &str) -> &'static str {
    if described.starts_with("plaintext") {
        "none"
    } else if described.contains(" unverified") {
        "unverified"
    } else {
        "verified"
    }
}
