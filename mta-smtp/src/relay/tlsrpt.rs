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

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

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
use tracing::{info, warn};

use super::mta_sts;
use crate::client::dane::Dane;

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
    period: Mutex<(u64, ByPolicy)>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Default for TlsReports {
    fn default() -> Self {
        TlsReports {
            period: Mutex::new((now(), BTreeMap::new())),
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
                let n = counts.failures.entry((kind, mx, ip, info)).or_default();
                *n = n.saturating_add(1);
            }
        }
    }

    /// Ends the period: its reports, one per domain that had sessions (one policy entry per
    /// policy it was under), and a new empty period.
    fn take(&self, organization: &str) -> Vec<(String, TlsReport)> {
        let (start, counts) = {
            let mut period = self.period.lock().unwrap_or_else(|e| e.into_inner());
            let start = period.0;
            period.0 = now();
            (start, std::mem::take(&mut period.1))
        };
        let end = now().max(start + 1);
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

    /// Ends the period and builds the report messages: for each domain whose `_smtp._tls`
    /// record names `mailto:` addresses, those addresses and the message from
    /// `postmaster@hostname`.
    pub async fn messages(
        &self,
        resolver: &TokioResolver,
        hostname: &Domain,
    ) -> Vec<(Vec<Address>, Vec<u8>)> {
        let mut out = Vec::new();
        for (domain, report) in self.take(hostname.as_str()) {
            let rua = match rua(resolver, &domain).await {
                Ok(rua) => rua,
                Err(e) => {
                    info!(%domain, reason = %e, "no TLS report sent");
                    continue;
                }
            };
            let to: Vec<Address> = rua
                .iter()
                .filter_map(|uri| match uri {
                    // A DNS answer must not choose an IP address to send mail to.
                    ReportUri::Mail(m) => Address::parse(m).ok().filter(|a| {
                        let literal = a.domain().is_literal();
                        if literal {
                            warn!(%domain, rua = %a, "TLS report address is an address literal; skipped");
                        }
                        !literal
                    }),
                    ReportUri::Http(url) => {
                        warn!(%domain, %url, "TLS reports over HTTPS are not supported; skipped");
                        None
                    }
                })
                .collect();
            if to.is_empty() {
                continue;
            }
            let names: Vec<String> = to.iter().map(Address::to_string).collect();
            let from = format!("postmaster@{hostname}");
            match report.to_rfc5322(
                &domain,
                hostname.as_str(),
                from.as_str(),
                names.iter().map(String::as_str),
            ) {
                Ok(text) => {
                    // mail-builder ends lines with CRLF already; make sure no bare LF is left.
                    let text = text.replace("\r\n", "\n").replace('\n', "\r\n");
                    out.push((to, text.into_bytes()));
                }
                Err(e) => warn!(%domain, error = %e, "cannot build the TLS report"),
            }
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
        for (to, body) in reports.messages(&resolver, &config.hostname).await {
            let rcpts: Vec<String> = to.iter().map(Address::to_string).collect();
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let id = MessageId::generate(now.as_millis() as u64);
            let envelope =
                Envelope::generated(id, to, config.hostname.as_str(), now.as_secs(), body.len());
            let id = envelope.id.clone();
            match queue.enqueue(envelope, body).await {
                Ok(()) => info!(msg = %id, rcpts = %rcpts.join(","), "TLS report queued"),
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
}
