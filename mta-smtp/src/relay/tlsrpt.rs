//! TLS reporting (RFC 8460): every connection to a destination's MX hosts is counted as a
//! success or a failure of its TLS policy (MTA-STS `sts`, or `no-policy-found`), per policy
//! domain; once per `outbound.tls_report_interval` the counts go, as one aggregate JSON report
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

/// The counts of the current period.
#[derive(Debug)]
pub struct TlsReports {
    period: Mutex<(u64, BTreeMap<String, Counts>)>,
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
    /// Counts one session with `domain`'s MX hosts under `policy` (`None`: no policy found).
    pub fn record(&self, domain: &Domain, policy: Option<&mta_sts::Policy>, session: Session) {
        let mut period = self.period.lock().unwrap_or_else(|e| e.into_inner());
        let counts = period.1.entry(domain.to_string()).or_default();
        match policy {
            Some(p) => {
                counts.policy_type = PolicyType::Sts;
                counts.policy_string = p.lines();
                counts.mx_hosts = p.mx.clone();
            }
            None => counts.policy_type = PolicyType::NoPolicyFound,
        }
        match session {
            Session::Success => counts.success = counts.success.saturating_add(1),
            Session::Failure { kind, mx, ip, info } => {
                let n = counts.failures.entry((kind, mx, ip, info)).or_default();
                *n = n.saturating_add(1);
            }
        }
    }

    /// Ends the period: its reports, one per domain that had sessions, and a new empty period.
    fn take(&self, organization: &str) -> Vec<(String, TlsReport)> {
        let (start, counts) = {
            let mut period = self.period.lock().unwrap_or_else(|e| e.into_inner());
            let start = period.0;
            period.0 = now();
            (start, std::mem::take(&mut period.1))
        };
        let end = now().max(start + 1);
        counts
            .into_iter()
            .map(|(domain, c)| {
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
                let report = TlsReport {
                    organization_name: Some(organization.to_string()),
                    date_range: DateRange::from_timestamps(start as i64, end as i64),
                    contact_info: Some(format!("postmaster@{organization}")),
                    report_id: format!("{start}.{domain}@{organization}"),
                    policies: vec![Policy {
                        policy: PolicyDetails {
                            policy_type: c.policy_type,
                            policy_string: c.policy_string,
                            policy_domain: domain.clone(),
                            mx_host: c.mx_hosts,
                        },
                        summary: Summary {
                            total_success: c.success,
                            total_failure,
                        },
                        failure_details,
                    }],
                };
                (domain, report)
            })
            .collect()
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
                    ReportUri::Mail(m) => Address::parse(m).ok(),
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
/// report is queued as a message from `<>` to its `mailto:` addresses.
pub async fn run(
    reports: std::sync::Arc<TlsReports>,
    queue: std::sync::Arc<dyn Enqueue>,
    config: std::sync::Arc<Config>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let resolver = match super::mx::resolver(&config.dns.nameservers, IpFamily::Any) {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e, "TLS reports are off: no resolver");
            return;
        }
    };
    let every = config.outbound.tls_report_interval;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(every) => {}
        }
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
        r.record(&d, Some(&policy), Session::Success);
        r.record(&d, Some(&policy), Session::Success);
        let fail = || Session::Failure {
            kind: ResultType::StartTlsNotSupported,
            mx: Some("mx.example.net".into()),
            ip: None,
            info: None,
        };
        r.record(&d, Some(&policy), fail());
        r.record(&d, Some(&policy), fail());
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
}
