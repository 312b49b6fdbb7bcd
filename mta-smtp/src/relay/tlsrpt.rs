//! TLS reporting (RFC 8460): every connection to a destination's MX hosts is counted as a
//! success or a failure of its TLS policy (MTA-STS `sts`, a host's DANE `tlsa` records, or
//! `no-policy-found`), per policy domain and policy; once per `outbound.tls_report_interval` the counts go, as one aggregate JSON report
//! (gzip, `multipart/report; report-type=tlsrpt`, built by mail-auth), to the `mailto:`
//! addresses of the domain's `_smtp._tls` TXT record, queued like any other message (from
//! `<>`, so a report that cannot be delivered bounces nowhere). Domains without that record get
//! nothing; `https:` report addresses are not supported and are logged.
//!
//! The counts live in memory: a crash or restart loses the current period's, which only makes
//! one report smaller (reports are statistics, not mail anyone waits for).
//!
//! Anyone can publish `_smtp._tls` for their domain and list any addresses, and each report
//! is mail we sign. So a report goes to at most [`MAX_RECIPIENTS`] addresses per domain
//! (RFC 8460 §3 expects one or two), each in the reporting domain's organisational domain
//! (see [`recipients`]) or in a domain of `outbound.tls_report_allow`, never an address
//! literal; and at most [`MAX_REPORTS_PER_DAY`] reports go out per day in all, at most
//! [`MAX_REPORTS_PER_ORGANIZATION`] of them for the domains of one organisational domain
//! (so one party with many domains cannot use up the day's reports).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hickory_resolver::TokioResolver;
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::mta_sts::{ReportUri, TlsRpt};
use mail_auth::report::tlsrpt::{
    DateRange, FailureDetails, Policy, PolicyDetails, PolicyType, ResultType, Summary, TlsReport,
};
use mta_core::address::{Address, Domain};
use mta_core::config::{Config, IpFamily};
use mta_core::envelope::{Envelope, MessageId};
use mta_core::seams::Enqueue;
use mta_core::text::escape;
use tracing::{info, warn};

use super::mta_sts;
use crate::client::dane::Dane;

/// The most report addresses one domain gets.
pub const MAX_RECIPIENTS: usize = 2;
/// The most reports sent in one day (UTC), over all domains.
pub const MAX_REPORTS_PER_DAY: u32 = 1000;

/// The most failure entries, each with its host, address and the server's text, kept for
/// one policy in one day; further failures are counted by their kind only.
pub const MAX_FAILURE_DETAILS: usize = 100;
/// The most reports sent in one day for the domains of one organisational domain: a domain
/// gets one report per `outbound.tls_report_interval` (a day by default), so 5 leaves room
/// for a few subdomains with their own `_smtp._tls` records, while 200 throwaway domains
/// under one registered name use 5 of the day's reports, not all of them.
pub const MAX_REPORTS_PER_ORGANIZATION: u32 = 5;

/// The organisational domain of `name` (lower case, no trailing dot), as DMARC defines it
/// (RFC 7489 §3.2): its public suffix (from the public suffix list compiled in, an unknown
/// top-level domain counting as a suffix) and one label more. `None` when `name` is itself
/// a public suffix (`co.uk`, `github.io`).
pub fn organizational_domain(name: &str) -> Option<&str> {
    psl::domain_str(name)
}

/// Whether `address` may receive `domain`'s reports: not an address literal, and in a domain
/// that `allow` lists (or below one), or in the organisational domain of `domain` (DMARC's
/// relaxed alignment: `r@example.com` and `r@reports.example.com` for `mail.example.com`,
/// but never `r@co.uk` for `victim.co.uk`, nor `r@other.github.io` for `me.github.io`).
/// A `domain` that is a public suffix itself aligns only with itself.
pub fn may_receive(domain: &Domain, address: &Address, allow: &[Domain]) -> bool {
    let to = address.domain();
    if to.is_literal() {
        return false;
    }
    let (to, from) = (
        to.as_str().to_ascii_lowercase(),
        domain.as_str().to_ascii_lowercase(),
    );
    let (to, from) = (to.as_str(), from.as_str());
    let under = |child: &str, parent: &str| {
        child == parent
            || child
                .strip_suffix(parent)
                .is_some_and(|rest| rest.ends_with('.'))
    };
    let aligned = match (organizational_domain(from), organizational_domain(to)) {
        (Some(a), Some(b)) => a == b,
        _ => from == to,
    };
    allow
        .iter()
        .any(|a| under(to, &a.as_str().to_ascii_lowercase()))
        || aligned
}

/// The report addresses for `domain` among its `rua` URIs: `mailto:` addresses that
/// [`may_receive`], without repeats, at most [`MAX_RECIPIENTS`]; the rest are logged.
pub fn recipients(domain: &Domain, rua: &[ReportUri], allow: &[Domain]) -> Vec<Address> {
    let mut to: Vec<Address> = Vec::new();
    for uri in rua {
        match uri {
            ReportUri::Mail(m) => match Address::parse(m) {
                Ok(a) if to.contains(&a) => {}
                Ok(a) if a.domain().is_literal() => {
                    // A DNS answer must not choose an IP address to send mail to.
                    warn!(%domain, rcpt = %escape(m), "TLS report address is an address literal; skipped");
                }
                Ok(a) if !may_receive(domain, &a, allow) => {
                    warn!(%domain, rcpt = %escape(m), "TLS report address outside the domain and not in outbound.tls_report_allow; skipped");
                }
                Ok(_) if to.len() >= MAX_RECIPIENTS => {
                    warn!(%domain, rcpt = %escape(m), max = MAX_RECIPIENTS, "more TLS report addresses than we send to; skipped");
                }
                Ok(a) => to.push(a),
                Err(_) => {
                    warn!(%domain, rcpt = %escape(m), "TLS report address is not an address; skipped");
                }
            },
            ReportUri::Http(url) => {
                warn!(%domain, url = %escape(url), "TLS reports over HTTPS are not supported; skipped");
            }
        }
    }
    to
}

/// What one connection showed about a domain's TLS policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Session {
    /// The policy was met.
    Success,
    /// It was not, for this reason (RFC 8460 §4.3 result types).
    Failure {
        /// The result type.
        kind: ResultType,
        /// The MX host, when one was reached or chosen.
        mx: Option<String>,
        /// Its address.
        ip: Option<IpAddr>,
        /// More, for the reader of the report.
        info: Option<String>,
    },
}

/// What distinguishes one kind of failure from another in a report: result type, MX host,
/// its address, and the additional information.
type FailureKey = (ResultType, Option<String>, Option<IpAddr>, Option<String>);

#[derive(Debug, Default)]
struct Counts {
    policy_type: PolicyType,
    policy_string: Vec<String>,
    mx_hosts: Vec<String>,
    success: u32,
    failures: HashMap<FailureKey, u32>,
}

/// The policy a session was under, as the report names it.
#[derive(Debug, Clone, Copy)]
pub enum ReportPolicy<'a> {
    /// None applied.
    None,
    /// The domain's MTA-STS policy.
    Sts(&'a mta_sts::Policy),
    /// The TLSA records of one MX host (DANE).
    Tlsa {
        /// The MX host.
        host: &'a str,
        /// Its records.
        dane: &'a Dane,
    },
}

/// Counts per policy domain and policy (the MX host for DANE, empty otherwise).
type ByPolicy = BTreeMap<(String, String), Counts>;

/// The counts of the current period and when it started.
#[derive(Debug)]
pub struct TlsReports {
    period: Mutex<(Start, ByPolicy)>,
    /// The day (Unix days), how many reports were sent on it, and how many for each
    /// organisational domain (at most [`MAX_REPORTS_PER_DAY`] entries, one per report).
    sent: Mutex<Sent>,
}

#[derive(Debug, Default)]
struct Sent {
    day: u64,
    all: u32,
    by_organization: HashMap<String, u32>,
}

/// Why [`TlsReports::may_send`] held a report back.
#[derive(Debug, PartialEq, Eq)]
enum Held {
    /// [`MAX_REPORTS_PER_DAY`].
    Day,
    /// [`MAX_REPORTS_PER_ORGANIZATION`].
    Organization,
}

/// When a period started: its date in the report (Unix seconds), and the monotonic time,
/// from which its length is measured so that a step of the wall clock does not stretch or
/// shrink the range a report claims.
#[derive(Debug, Clone, Copy)]
struct Start {
    unix: u64,
    at: Instant,
}

impl Start {
    fn now() -> Start {
        Start {
            unix: now(),
            at: Instant::now(),
        }
    }
}

/// The end of a period that started at `start` (Unix s) and lasted `elapsed` (monotonic),
/// at least a second after its start; and the start of the next one: the wall clock now,
/// but never before that end, so that ranges do not overlap after the clock stepped back.
fn period_end(start: u64, elapsed: Duration, wall_now: u64) -> (u64, u64) {
    let end = start.saturating_add(elapsed.as_secs().max(1));
    (end, wall_now.max(end))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Default for TlsReports {
    fn default() -> Self {
        TlsReports {
            period: Mutex::new((Start::now(), BTreeMap::new())),
            sent: Mutex::new(Sent::default()),
        }
    }
}

impl TlsReports {
    /// Counts one session with `domain`'s MX hosts under `policy`.
    pub fn record(&self, domain: &Domain, policy: ReportPolicy<'_>, session: Session) {
        let mut period = self.period.lock().unwrap_or_else(|e| e.into_inner());
        let which = match policy {
            ReportPolicy::Tlsa { host, .. } => host.to_string(),
            ReportPolicy::None | ReportPolicy::Sts(_) => String::new(),
        };
        let counts = period.1.entry((domain.to_string(), which)).or_default();
        match policy {
            ReportPolicy::Sts(p) => {
                counts.policy_type = PolicyType::Sts;
                counts.policy_string = p.lines();
                counts.mx_hosts = p.mx.clone();
            }
            ReportPolicy::Tlsa { host, dane } => {
                counts.policy_type = PolicyType::Tlsa;
                counts.policy_string = dane.records.iter().map(ToString::to_string).collect();
                counts.mx_hosts = vec![host.to_string()];
            }
            ReportPolicy::None => counts.policy_type = PolicyType::NoPolicyFound,
        }
        match session {
            Session::Success => counts.success = counts.success.saturating_add(1),
            Session::Failure { kind, mx, ip, info } => {
                // Each distinct failure (host, address, the server's text) is its own entry
                // up to a bound; past it, failures are counted by kind alone, so a host that
                // answers every connection with new text cannot grow the day's counts.
                let mut key = (kind, mx, ip, info);
                if counts.failures.len() >= MAX_FAILURE_DETAILS
                    && !counts.failures.contains_key(&key)
                {
                    key = (key.0, None, None, None);
                }
                let n = counts.failures.entry(key).or_default();
                *n = n.saturating_add(1);
            }
        }
    }

    /// Ends the period: its reports, one per domain that had sessions (one policy entry per
    /// policy it was under), and a new empty period.
    fn take(&self, organization: &str) -> Vec<(String, TlsReport)> {
        let (start, end, counts) = {
            let mut period = self.period.lock().unwrap_or_else(|e| e.into_inner());
            let begun = period.0;
            let at = Instant::now();
            let (end, next) = period_end(begun.unix, at - begun.at, now());
            period.0 = Start { unix: next, at };
            (begun.unix, end, std::mem::take(&mut period.1))
        };
        let mut reports: Vec<(String, TlsReport)> = Vec::new();
        for ((domain, _), c) in counts {
            let policy = policy_entry(&domain, c);
            match reports.last_mut() {
                Some((d, report)) if *d == domain => report.policies.push(policy),
                _ => reports.push((
                    domain.clone(),
                    TlsReport {
                        organization_name: Some(organization.to_string()),
                        date_range: DateRange::from_timestamps(start as i64, end as i64),
                        contact_info: Some(format!("postmaster@{organization}")),
                        report_id: format!("{start}.{domain}@{organization}"),
                        policies: vec![policy],
                    },
                )),
            }
        }
        reports
    }

    /// Counts one report for `domain` against today's [`MAX_REPORTS_PER_DAY`] and
    /// [`MAX_REPORTS_PER_ORGANIZATION`]; [`Held`] when it may not go.
    fn may_send(&self, now: u64, domain: &str) -> Result<(), Held> {
        let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        let day = now / 86_400;
        if sent.day != day {
            *sent = Sent {
                day,
                ..Sent::default()
            };
        }
        let domain = domain.to_ascii_lowercase();
        let organization = organizational_domain(&domain).unwrap_or(&domain);
        let of = sent.by_organization.get(organization).copied().unwrap_or(0);
        if of >= MAX_REPORTS_PER_ORGANIZATION {
            return Err(Held::Organization);
        }
        if sent.all >= MAX_REPORTS_PER_DAY {
            return Err(Held::Day);
        }
        sent.all += 1;
        sent.by_organization
            .insert(organization.to_string(), of + 1);
        Ok(())
    }

    /// Ends the period and builds the report messages: for each domain whose `_smtp._tls`
    /// record names `mailto:` addresses we may send to ([`recipients`]), those addresses and
    /// the message from `postmaster@hostname`, within today's [`MAX_REPORTS_PER_DAY`].
    pub async fn messages(
        &self,
        resolver: &TokioResolver,
        hostname: &Domain,
        allow: &[Domain],
    ) -> Vec<(Vec<Address>, Vec<u8>)> {
        let mut out = Vec::new();
        let (mut over, mut organization_over) = (0usize, 0usize);
        for (domain, report) in self.take(hostname.as_str()) {
            let Ok(domain_name) = Domain::parse(&domain) else {
                continue;
            };
            let rua = match rua(resolver, &domain).await {
                Ok(rua) => rua,
                Err(e) => {
                    info!(%domain, reason = %escape(&e), "no TLS report sent");
                    continue;
                }
            };
            let to = recipients(&domain_name, &rua, allow);
            if to.is_empty() {
                continue;
            }
            match self.may_send(now(), &domain) {
                Ok(()) => {}
                Err(Held::Day) => {
                    over += 1;
                    continue;
                }
                Err(Held::Organization) => {
                    organization_over += 1;
                    continue;
                }
            }
            let names: Vec<String> = to.iter().map(Address::to_string).collect();
            let from = format!("postmaster@{hostname}");
            match report.to_rfc5322(
                &domain,
                hostname.as_str(),
                from.as_str(),
                names.iter().map(String::as_str),
            ) {
                Ok(text) => out.push((to, mta_core::text::crlf(&text))),
                Err(e) => {
                    warn!(%domain, error = %escape(&e.to_string()), "cannot build the TLS report")
                }
            }
        }
        if over > 0 {
            warn!(
                skipped = over,
                max = MAX_REPORTS_PER_DAY,
                "daily TLS report limit reached; the other reports are not sent"
            );
        }
        if organization_over > 0 {
            warn!(
                skipped = organization_over,
                max = MAX_REPORTS_PER_ORGANIZATION,
                "daily TLS report limit of an organisational domain reached; its other reports are not sent"
            );
        }
        out
    }
}

/// Sends the reports every `outbound.tls_report_interval` until `stop` turns true: each
/// report is queued as a message from `<>` to its `mailto:` addresses. Each round reads the
/// config in force then (`config`, which a reload updates): its name servers and hostname.
pub async fn run(
    reports: std::sync::Arc<TlsReports>,
    queue: std::sync::Arc<dyn Enqueue>,
    config: tokio::sync::watch::Receiver<std::sync::Arc<Config>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    // Changing the interval needs a restart.
    let every = config.borrow().outbound.tls_report_interval;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(every) => {}
        }
        let config = config.borrow().clone();
        let resolver = match super::mx::resolver(&config.dns.nameservers, IpFamily::Any) {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "no resolver: this round's TLS reports are not sent");
                continue;
            }
        };
        let allow = &config.outbound.tls_report_allow;
        for (to, body) in reports.messages(&resolver, &config.hostname, allow).await {
            let rcpts: Vec<String> = to.iter().map(Address::to_string).collect();
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let id = MessageId::generate(now.as_millis() as u64);
            let envelope =
                Envelope::generated(id, to, config.hostname.as_str(), now.as_secs(), body.len());
            let id = envelope.id.clone();
            match queue.enqueue(envelope, body).await {
                Ok(()) => info!(msg = %id, rcpts = %escape(&rcpts.join(",")), "TLS report queued"),
                Err(e) => warn!(error = %e, "cannot queue a TLS report; its counts are lost"),
            }
        }
    }
}

/// One policy's counts as a report entry.
fn policy_entry(domain: &str, c: Counts) -> Policy {
    let total_failure: u32 = c.failures.values().sum();
    let failure_details = c
        .failures
        .into_iter()
        .map(|((kind, mx, ip, info), n)| FailureDetails {
            result_type: kind,
            sending_mta_ip: None,
            receiving_mx_hostname: mx,
            receiving_mx_helo: None,
            receiving_ip: ip,
            failed_session_count: n,
            additional_information: info,
            failure_reason_code: None,
        })
        .collect();
    Policy {
        policy: PolicyDetails {
            policy_type: c.policy_type,
            policy_string: c.policy_string,
            policy_domain: domain.to_string(),
            mx_host: c.mx_hosts,
        },
        summary: Summary {
            total_success: c.success,
            total_failure,
        },
        failure_details,
    }
}

/// The report addresses of `_smtp._tls.<domain>`.
async fn rua(resolver: &TokioResolver, domain: &str) -> Result<Vec<ReportUri>, String> {
    let name = format!("_smtp._tls.{domain}.");
    let lookup = resolver
        .txt_lookup(name.as_str())
        .await
        .map_err(|e| format!("{name}: {e}"))?;
    let records: Vec<Vec<u8>> = lookup
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            hickory_resolver::proto::rr::RData::TXT(txt) => Some(
                txt.txt_data
                    .iter()
                    .flat_map(|b| b.iter().copied())
                    .collect(),
            ),
            _ => None,
        })
        .filter(|t: &Vec<u8>| t.starts_with(b"v=TLSRPTv1"))
        .collect();
    let [record] = records.as_slice() else {
        return Err(format!("{name}: {} TLSRPTv1 records", records.len()));
    };
    TlsRpt::parse(record)
        .map(|r| r.rua)
        .map_err(|e| format!("{name}: {e}"))
}

/// The result type for a failed connection attempt, from the client's error text.
pub fn failure_kind(error: &str) -> ResultType {
    if error.contains("does not offer STARTTLS") || error.contains("STARTTLS refused") {
        ResultType::StartTlsNotSupported
    } else if error.contains("DNSSEC validation") {
        ResultType::DnssecInvalid
    } else if error.contains("DANE") || error.contains("TLSA") {
        ResultType::TlsaInvalid
    } else if error.contains("NotValidForName") {
        ResultType::CertificateHostMismatch
    } else if error.contains("Expired") {
        ResultType::CertificateExpired
    } else if error.contains("UnknownIssuer") || error.contains("BadSignature") {
        ResultType::CertificateNotTrusted
    } else {
        ResultType::ValidationFailure
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Domain {
        Domain::parse(s).unwrap()
    }

    #[test]
    fn a_thousand_addresses_get_two_reports() {
        let domain = d("example.net");
        let mut rua: Vec<ReportUri> = (0..1000)
            .map(|i| ReportUri::Mail(format!("victim{i}@example.net")))
            .collect();
        rua.insert(0, ReportUri::Mail("ceo@bank.example".into()));
        let to = recipients(&domain, &rua, &[]);
        let names: Vec<String> = to.iter().map(Address::to_string).collect();
        assert_eq!(names, ["victim0@example.net", "victim1@example.net"]);
    }

    #[test]
    fn who_may_receive_a_report() {
        let table: &[(&str, &str, &[&str], bool)] = &[
            ("example.net", "tlsrpt@example.net", &[], true),
            ("example.net", "r@reports.example.net", &[], true),
            ("mail.example.net", "r@example.net", &[], true),
            ("example.net", "r@net", &[], false),
            ("example.net", "ceo@bank.example", &[], false),
            ("example.net", "r@notexample.net", &[], false),
            ("example.net", "r@[192.0.2.1]", &[], false),
            ("example.net", "r@[192.0.2.1]", &["example.net"], false),
            (
                "example.net",
                "r@tlsrpt.processor.example",
                &["processor.example"],
                true,
            ),
            (
                "example.net",
                "r@processor.example",
                &["processor.example"],
                true,
            ),
            (
                "example.net",
                "r@xprocessor.example",
                &["processor.example"],
                false,
            ),
            ("Example.NET", "r@EXAMPLE.net", &[], true),
            // The organisational domain, from the public suffix list.
            ("a.b.example.net", "r@c.example.net", &[], true),
            ("victim.co.uk", "r@co.uk", &[], false),
            ("victim.co.uk", "r@attacker.co.uk", &[], false),
            ("mail.victim.co.uk", "r@victim.co.uk", &[], true),
            ("victim.co.uk", "r@reports.victim.co.uk", &[], true),
            ("me.github.io", "r@github.io", &[], false),
            ("me.github.io", "r@other.github.io", &[], false),
            ("me.github.io", "r@me.github.io", &[], true),
            ("co.uk", "r@co.uk", &[], true),
            ("co.uk", "r@victim.co.uk", &[], false),
        ];
        for (domain, rcpt, allow, want) in table {
            let allow: Vec<Domain> = allow.iter().map(|a| d(a)).collect();
            let a = Address::parse(rcpt).unwrap();
            assert_eq!(
                may_receive(&d(domain), &a, &allow),
                *want,
                "{domain} {rcpt} {allow:?}"
            );
        }
        // Repeats count once; an HTTPS address is not an address.
        let rua = [
            ReportUri::Mail("a@example.net".into()),
            ReportUri::Mail("a@example.net".into()),
            ReportUri::Http("https://example.net/\r\nINFO forged".into()),
            ReportUri::Mail("b@example.net".into()),
        ];
        assert_eq!(recipients(&d("example.net"), &rua, &[]).len(), 2);
    }

    /// The public suffixes of the reference among names made of the labels `a`, `b`, `co`,
    /// `uk`, `github` and `io`, from the public suffix list (`co.io` is one too); besides
    /// these, every top-level label is a suffix (`uk`, `io`, and the unknown `a` and `b` by
    /// the list's default rule).
    const SUFFIXES: &[&str] = &["co.uk", "co.io", "github.io"];
    /// The reference's organisational domain: the longest suffix of `name` in [`SUFFIXES`]
    /// (else its last label) and the label before it.
    fn org(name: &str) -> Option<String> {
        let labels: Vec<&str> = name.split('.').collect();
        let n = labels.len();
        let suffix = match n >= 2 && SUFFIXES.contains(&labels[n - 2..].join(".").as_str()) {
            true => 2,
            false => 1,
        };
        (n > suffix).then(|| labels[n - suffix - 1..].join("."))
    }

    /// The reference, on labels: the address's labels end with an allowed domain's, or both
    /// names have the same organisational domain, or (a public suffix) are the same name.
    fn reference(domain: &str, to: &str, allow: &[&str]) -> bool {
        let labels = |s: &str| s.split('.').rev().map(str::to_string).collect::<Vec<_>>();
        let ends_with = |long: &[String], short: &[String]| long.starts_with(short);
        let aligned = match (org(domain), org(to)) {
            (Some(a), Some(b)) => a == b,
            _ => domain == to,
        };
        aligned || allow.iter().any(|a| ends_with(&labels(to), &labels(a)))
    }

    proptest::proptest! {
        #[test]
        fn alignment_agrees_with_the_reference(
            domain in "(a|b|co|uk|github|io)(\\.(a|b|co|uk|github|io)){0,3}",
            to in "(a|b|co|uk|github|io)(\\.(a|b|co|uk|github|io)){0,3}",
            allow in proptest::collection::vec("(a|b|co|uk|github|io)(\\.(a|b|co|uk|github|io)){0,2}", 0..2),
        ) {
            let allowed: Vec<Domain> = allow.iter().map(|a| d(a)).collect();
            let address = Address::parse(&format!("r@{to}")).unwrap();
            let refs: Vec<&str> = allow.iter().map(String::as_str).collect();
            proptest::prop_assert_eq!(
                may_receive(&d(&domain), &address, &allowed),
                reference(&domain, &to, &refs)
            );
        }
    }

    #[test]
    fn at_most_so_many_reports_a_day() {
        let r = TlsReports::default();
        let day = 20_000 * 86_400;
        for i in 0..MAX_REPORTS_PER_DAY {
            assert_eq!(r.may_send(day, &format!("d{i}.example")), Ok(()));
        }
        assert_eq!(r.may_send(day + 3600, "new.example"), Err(Held::Day));
        assert_eq!(
            r.may_send(day + 86_400, "new.example"),
            Ok(()),
            "a new day starts a new count"
        );
    }

    #[test]
    fn one_organisational_domain_gets_a_few_reports_a_day() {
        let r = TlsReports::default();
        let day = 20_000 * 86_400;
        for i in 0..MAX_REPORTS_PER_ORGANIZATION {
            assert_eq!(r.may_send(day, &format!("d{i}.attacker.example")), Ok(()));
        }
        for other in ["more.attacker.example", "ATTACKER.example"] {
            assert_eq!(r.may_send(day, other), Err(Held::Organization), "{other}");
        }
        // Other organisational domains, under the same public suffix too, still get theirs.
        for i in 0..MAX_REPORTS_PER_ORGANIZATION {
            assert_eq!(r.may_send(day, &format!("d{i}.victim.co.uk")), Ok(()));
            assert_eq!(r.may_send(day, &format!("x{i}.co.uk")), Ok(()));
        }
        assert_eq!(r.may_send(day, "victim.co.uk"), Err(Held::Organization));
        assert_eq!(r.may_send(day + 86_400, "attacker.example"), Ok(()));
    }

    /// A host that answers each connection with new text adds at most
    /// [`MAX_FAILURE_DETAILS`] detailed entries in a day; the rest are counted by kind.
    #[test]
    fn failure_details_are_bounded() {
        let r = TlsReports::default();
        let d = Domain::parse("example.net").unwrap();
        for i in 0..1000 {
            let session = Session::Failure {
                kind: ResultType::CertificateHostMismatch,
                mx: Some("mx.example.net".into()),
                ip: None,
                info: Some(format!("{i} {}", "x".repeat(1000))),
            };
            r.record(&d, ReportPolicy::None, session);
        }
        let reports = r.take("mx.example.org");
        let p = &reports[0].1.policies[0];
        assert_eq!(p.failure_details.len(), MAX_FAILURE_DETAILS + 1);
        assert_eq!(p.summary.total_failure, 1000);
        let counted: u32 = p
            .failure_details
            .iter()
            .map(|f| f.failed_session_count)
            .sum();
        assert_eq!(counted, 1000);
    }

    #[test]
    fn counts_become_one_report_per_domain() {
        let r = TlsReports::default();
        let d = Domain::parse("example.net").unwrap();
        let policy = mta_sts::Policy::parse(
            "version: STSv1\nmode: enforce\nmx: mx.example.net\nmax_age: 100\n",
            "1",
            0,
        )
        .unwrap();
        r.record(&d, ReportPolicy::Sts(&policy), Session::Success);
        r.record(&d, ReportPolicy::Sts(&policy), Session::Success);
        let fail = || Session::Failure {
            kind: ResultType::StartTlsNotSupported,
            mx: Some("mx.example.net".into()),
            ip: None,
            info: None,
        };
        r.record(&d, ReportPolicy::Sts(&policy), fail());
        r.record(&d, ReportPolicy::Sts(&policy), fail());
        let reports = r.take("mx.example.org");
        assert_eq!(reports.len(), 1);
        let p = &reports[0].1.policies[0];
        assert_eq!((p.summary.total_success, p.summary.total_failure), (2, 2));
        assert_eq!(p.policy.policy_type, PolicyType::Sts);
        assert_eq!(p.policy.mx_host, ["mx.example.net"]);
        assert_eq!(p.failure_details[0].failed_session_count, 2);
        assert!(
            r.take("mx.example.org").is_empty(),
            "a new period starts empty"
        );
        // The range is the time that passed, whatever the wall clock did meanwhile: a
        // 2-minute period with the clock stepped back 2 hours, then one stepped forward.
        let start = 1_800_000_000;
        let (end, next) = period_end(start, Duration::from_secs(120), start + 120 - 7200);
        assert_eq!(
            (end - start, next),
            (120, end),
            "no overlap with the next period"
        );
        let (end2, next2) = period_end(next, Duration::from_secs(120), next + 7320);
        assert_eq!((end2 - next, next2), (120, next + 7320));
        assert_eq!(period_end(start, Duration::ZERO, start).0, start + 1);
        assert_eq!(
            failure_kind("TLS is required but the server does not offer STARTTLS"),
            ResultType::StartTlsNotSupported
        );
        assert_eq!(
            failure_kind("invalid peer certificate: NotValidForName"),
            ResultType::CertificateHostMismatch
        );
    }

    #[test]
    fn a_dane_host_is_a_tlsa_policy_of_its_own_in_the_domains_report() {
        let r = TlsReports::default();
        let d = Domain::parse("example.net").unwrap();
        let dane = Dane::new(
            vec![crate::client::dane::TlsaRecord {
                usage: 3,
                selector: 1,
                matching: 1,
                data: vec![0xab; 32],
            }],
            vec!["mx1.example.net".into(), "example.net".into()],
        );
        let tlsa = ReportPolicy::Tlsa {
            host: "mx1.example.net",
            dane: &dane,
        };
        r.record(&d, tlsa, Session::Success);
        r.record(&d, ReportPolicy::None, Session::Success);
        r.record(
            &d,
            tlsa,
            Session::Failure {
                kind: failure_kind("invalid peer certificate: Other(DANE: no TLSA record)"),
                mx: Some("mx1.example.net".into()),
                ip: None,
                info: None,
            },
        );
        let reports = r.take("mx.example.org");
        assert_eq!(reports.len(), 1, "one report for the domain");
        let policies = &reports[0].1.policies;
        assert_eq!(policies.len(), 2);
        let tlsa = policies
            .iter()
            .find(|p| p.policy.policy_type == PolicyType::Tlsa)
            .expect("the tlsa policy");
        assert_eq!(tlsa.policy.mx_host, ["mx1.example.net"]);
        assert_eq!(
            tlsa.policy.policy_string,
            [format!("3 1 1 {}", "ab".repeat(32))]
        );
        assert_eq!(
            (tlsa.summary.total_success, tlsa.summary.total_failure),
            (1, 1)
        );
        assert_eq!(tlsa.failure_details[0].result_type, ResultType::TlsaInvalid);
        assert_eq!(
            failure_kind("the TLSA records at x fail DNSSEC validation (bogus)"),
            ResultType::DnssecInvalid
        );
    }

    /// A host on loopback that answers EHLO without STARTTLS, then `421` to anything.
    async fn plain_host() -> u16 {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (r, mut w) = conn.into_split();
                    let mut lines = BufReader::new(r).lines();
                    w.write_all(b"220 t\r\n").await.ok();
                    while let Ok(Some(line)) = lines.next_line().await {
                        let ehlo = line.to_ascii_uppercase().starts_with("EHLO");
                        let reply: &[u8] = if ehlo { b"250 t\r\n" } else { b"421 bye\r\n" };
                        if w.write_all(reply).await.is_err() || !ehlo {
                            break;
                        }
                    }
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn nothing_is_counted_when_tls_reports_are_off() {
        let port = plain_host().await;
        let dir = tempfile::tempdir().unwrap();
        let toml = format!(
            "hostname = \"mx.example.org\"\nlocal_domains = [\"example.org\"]\n\
             data_dir = {:?}\n[dns]\nnameservers = [\"127.0.0.1:9\"]\n\
             [outbound]\nport = {port}\nallow_internal = [\"127.0.0.0/8\"]\n\
             tls_reports = false\nmta_sts = false\ndane = false\n",
            dir.path()
        );
        let config = std::sync::Arc::new(Config::from_toml("t.toml", &toml, "x").unwrap());
        let memory = std::sync::Arc::new(super::super::memory::TlsMemory::open(
            dir.path(),
            Duration::from_secs(60),
        ));
        let kept = super::super::Kept::new(&config, memory);
        let reports = kept.reports.clone();
        let relay = super::super::Relay::new(config, kept).unwrap();
        let to = Address::parse("r@[127.0.0.1]").unwrap();
        let envelope = Envelope::generated(
            MessageId::generate(1),
            vec![to.clone()],
            "mx.example.org",
            1,
            4,
        );
        let domain = to.domain().clone();
        relay
            .deliver(&envelope, b"", b"x\r\n", &domain, &[to])
            .await;
        assert!(
            reports.take("mx.example.org").is_empty(),
            "with outbound.tls_reports = false, nothing takes the counts: they must not be kept"
        );
    }
}
