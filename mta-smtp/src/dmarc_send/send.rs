//! Sending the reports: once per `[dmarc_reports.send] interval`, for each `From:` domain
//! with counts, its `_dmarc` record is read (through the resolver the relay uses) and its
//! `rua=mailto:` addresses are kept when [`may_receive`] says so: the address's domain is in
//! (or below) a domain of `allow`, and, when it is in another organisational domain than
//! the reported one, that domain agreed to take the reports (RFC 7489 §7.1:
//! `<domain>._report._dmarc.<rua domain>` TXT `v=DMARC1`). The report (XML, gzip, a MIME
//! message with the subject and file name of RFC 7489 §7.2.1.1, built by mail-auth) is
//! queued like the TLS reports: from `<>`, so a report that cannot be delivered bounces
//! nowhere and never causes another message, signed with our DKIM key as our own mail.
//!
//! At most [`MAX_RECIPIENTS`] addresses get a domain's report, at most
//! [`MAX_REPORTS_PER_DESTINATION`] reports a day go to one report domain, and at most
//! [`MAX_REPORTS_PER_DAY`] in all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_resolver::TokioResolver;
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::dmarc::Dmarc;
use mail_auth::report::{PolicyPublished, Report};
use mta_core::address::{Address, Domain};
use mta_core::config::{Config, DmarcSend, IpFamily};
use mta_core::envelope::{Envelope, MessageId};
use mta_core::seams::Enqueue;
use mta_core::text::escape;
use tracing::{info, warn};

use super::{Period, Recorder};

use crate::relay::tlsrpt::organizational_domain;

/// The most addresses one domain's report goes to.
pub const MAX_RECIPIENTS: usize = 2;
/// The most reports sent in one day (UTC), over all domains.
pub const MAX_REPORTS_PER_DAY: u32 = 1_000;
/// The most reports sent in one day to the addresses of one report domain.
pub const MAX_REPORTS_PER_DESTINATION: u32 = 50;

/// Whether `to` is `allowed` or below one of them (labels compared without case).
pub fn allowed(to: &Domain, allow: &[Domain]) -> bool {
    if to.is_literal() {
        return false;
    }
    let to = to.as_str().trim_end_matches('.').to_ascii_lowercase();
    allow.iter().any(|a| {
        let a = a.as_str().trim_end_matches('.').to_ascii_lowercase();
        to == a || to.strip_suffix(&a).is_some_and(|rest| rest.ends_with('.'))
    })
}

/// Whether reports for `domain` at an address in `to` need the report domain's consent
/// (RFC 7489 §7.1): when the two are in different organisational domains.
pub fn needs_verification(domain: &str, to: &str) -> bool {
    let (d, t) = (domain.to_ascii_lowercase(), to.to_ascii_lowercase());
    match (organizational_domain(&d), organizational_domain(&t)) {
        (Some(a), Some(b)) => a != b,
        _ => d != t,
    }
}

/// The TXT strings at `name` (each record's strings joined).
async fn txt(resolver: &TokioResolver, name: &str) -> Result<Vec<Vec<u8>>, String> {
    let lookup = resolver
        .txt_lookup(name)
        .await
        .map_err(|e| format!("{name}: {e}"))?;
    Ok(lookup
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            hickory_resolver::proto::rr::RData::TXT(t) => {
                Some(t.txt_data.iter().flat_map(|b| b.iter().copied()).collect())
            }
            _ => None,
        })
        .collect())
}

/// `domain`'s DMARC record.
async fn record(resolver: &TokioResolver, domain: &str) -> Result<Dmarc, String> {
    let name = format!("_dmarc.{domain}.");
    let records: Vec<Vec<u8>> = txt(resolver, &name)
        .await?
        .into_iter()
        .filter(|t| t.starts_with(b"v=DMARC1"))
        .collect();
    let [r] = records.as_slice() else {
        return Err(format!("{name}: {} DMARC1 records", records.len()));
    };
    Dmarc::parse(r).map_err(|e| format!("{name}: {e}"))
}

/// Whether `rua_domain` takes reports about `domain` (RFC 7489 §7.1).
async fn verified(resolver: &TokioResolver, domain: &str, rua_domain: &str) -> bool {
    let name = format!("{domain}._report._dmarc.{rua_domain}.");
    match txt(resolver, &name).await {
        Ok(records) => records.iter().any(|t| t.starts_with(b"v=DMARC1")),
        Err(e) => {
            info!(name = %escape(&e), "no DMARC report verification record");
            false
        }
    }
}

/// The addresses among `dmarc`'s `rua=` that may have `domain`'s report.
async fn recipients(
    resolver: &TokioResolver,
    domain: &str,
    dmarc: &Dmarc,
    allow: &[Domain],
) -> Vec<Address> {
    let mut to: Vec<Address> = Vec::new();
    for uri in &dmarc.rua {
        let Ok(a) = Address::parse(uri.uri()) else {
            warn!(%domain, rcpt = %escape(uri.uri()), "DMARC report address is not an address; skipped");
            continue;
        };
        if to.contains(&a) {
            continue;
        }
        if !allowed(a.domain(), allow) {
            info!(%domain, rcpt = %escape(uri.uri()), "DMARC report address not in dmarc_reports.send.allow; skipped");
            continue;
        }
        let rua_domain = a.domain().as_str().to_ascii_lowercase();
        if needs_verification(domain, &rua_domain) && !verified(resolver, domain, &rua_domain).await
        {
            warn!(%domain, rcpt = %escape(uri.uri()), "DMARC report address outside the domain without a _report._dmarc record; skipped");
            continue;
        }
        if to.len() >= MAX_RECIPIENTS {
            warn!(%domain, rcpt = %escape(uri.uri()), max = MAX_RECIPIENTS, "more DMARC report addresses than we send to; skipped");
            continue;
        }
        to.push(a);
    }
    to
}

/// Reports sent today, in all and per report domain.
#[derive(Debug, Default)]
pub struct Sent {
    day: u64,
    all: u32,
    by_destination: HashMap<String, u32>,
}

impl Sent {
    /// Counts one report to the domains of `to` against today's limits; false (and nothing
    /// counted) when it may not go.
    pub fn may_send(&mut self, now: u64, to: &[Address]) -> bool {
        let day = now / 86_400;
        if self.day != day {
            *self = Sent {
                day,
                ..Sent::default()
            };
        }
        let mut domains: Vec<String> = to
            .iter()
            .map(|a| a.domain().as_str().to_ascii_lowercase())
            .collect();
        domains.dedup();
        let full = |d: &String| {
            self.by_destination.get(d).copied().unwrap_or(0) >= MAX_REPORTS_PER_DESTINATION
        };
        if self.all >= MAX_REPORTS_PER_DAY || domains.iter().any(full) {
            return false;
        }
        self.all += 1;
        for d in domains {
            *self.by_destination.entry(d).or_default() += 1;
        }
        true
    }
}

/// `domain`'s report for the period `begin..end`.
pub fn report(
    settings: &DmarcSend,
    hostname: &str,
    domain: &str,
    dmarc: &Dmarc,
    rows: &super::Rows,
    begin: u64,
    end: u64,
) -> Report {
    let mut report = Report::new()
        .with_version(1.0)
        .with_org_name(settings.org_name.clone())
        .with_email(
            settings
                .contact
                .as_ref()
                .map_or_else(|| format!("postmaster@{hostname}"), Address::to_string),
        )
        .with_report_id(format!("{begin}.{domain}@{hostname}"))
        .with_date_range_begin(begin)
        .with_date_range_end(end)
        .with_policy_published(PolicyPublished::from_record(domain, dmarc));
    let mut records: Vec<_> = rows.rows.iter().collect();
    records.sort_by(|a, b| b.1.cmp(a.1));
    for (r, n) in records {
        let mut r = r.clone();
        r.row.count = *n;
        report.add_record(r);
    }
    if rows.dropped > 0 {
        report = report.with_error(format!(
            "{} messages not counted: more than {} distinct rows",
            rows.dropped, settings.max_records
        ));
    }
    report
}

/// The messages of the `period` that ended at `end`: per domain with counts and addresses
/// that may have its report, within today's limits.
pub async fn messages(
    (period, end): (Period, u64),
    sent: &Mutex<Sent>,
    resolver: &TokioResolver,
    settings: &DmarcSend,
    hostname: &Domain,
) -> Vec<(Vec<Address>, Vec<u8>)> {
    if period.dropped_domains > 0 {
        warn!(
            dropped = period.dropped_domains,
            max = super::MAX_DOMAINS,
            "DMARC report counts: messages from too many domains not counted"
        );
    }
    let mut out = Vec::new();
    let mut held = 0usize;
    for (domain, rows) in &period.domains {
        let dmarc = match record(resolver, domain).await {
            Ok(d) => d,
            Err(e) => {
                info!(%domain, reason = %escape(&e), "no DMARC report sent");
                continue;
            }
        };
        let to = recipients(resolver, domain, &dmarc, &settings.allow).await;
        if to.is_empty() {
            continue;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if !sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .may_send(now, &to)
        {
            held += 1;
            continue;
        }
        let report = report(
            settings,
            hostname.as_str(),
            domain,
            &dmarc,
            rows,
            period.begin,
            end,
        );
        let names: Vec<String> = to.iter().map(Address::to_string).collect();
        let from = settings
            .contact
            .as_ref()
            .map_or_else(|| format!("postmaster@{hostname}"), Address::to_string);
        match report.to_rfc5322(
            hostname.as_str(),
            from.as_str(),
            names.iter().map(String::as_str),
        ) {
            Ok(text) => out.push((to, mta_core::text::crlf(&text))),
            Err(e) => {
                warn!(%domain, error = %escape(&e.to_string()), "cannot build the DMARC report")
            }
        }
    }
    if held > 0 {
        warn!(
            skipped = held,
            "daily DMARC report limits reached; the other reports are not sent"
        );
    }
    out
}

/// Counts are written at most this often.
const SAVE_EVERY: Duration = Duration::from_secs(60);

/// Writes the counts every minute and sends the reports every `interval` until `stop`
/// turns true. Each round reads the config in force
/// then; changing the interval needs a restart.
pub async fn run(
    recorder: Arc<Recorder>,
    queue: Arc<dyn Enqueue>,
    config: tokio::sync::watch::Receiver<Arc<Config>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let every = config.borrow().dmarc_reports.send.interval;
    let sent = Mutex::new(Sent::default());
    let mut next_send = tokio::time::Instant::now() + every;
    loop {
        let next_save = tokio::time::Instant::now() + SAVE_EVERY;
        let stopped = tokio::select! {
            _ = stop.wait_for(|s| *s) => true,
            () = tokio::time::sleep_until(next_save.min(next_send)) => false,
        };
        if stopped {
            // `mta serve` writes the counts once the sessions are over.
            return;
        }
        if tokio::time::Instant::now() < next_send {
            let r = recorder.clone();
            let _ = tokio::task::spawn_blocking(move || r.save()).await;
            continue;
        }
        next_send = tokio::time::Instant::now() + every;
        let config = config.borrow().clone();
        let resolver = match crate::relay::mx::resolver(&config.dns.nameservers, IpFamily::Any) {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "no resolver: this round's DMARC reports are not sent");
                continue;
            }
        };
        // The period ends (and the empty one is written) whatever happens to its reports.
        let r = recorder.clone();
        let Ok(taken) = tokio::task::spawn_blocking(move || r.take()).await else {
            continue;
        };
        let settings = &config.dmarc_reports.send;
        if !settings.enabled {
            // Turned off by a reload: what was counted before is not sent.
            continue;
        }
        let messages = messages(taken, &sent, &resolver, settings, &config.hostname).await;
        for (to, body) in messages {
            let rcpts: Vec<String> = to.iter().map(Address::to_string).collect();
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let id = MessageId::generate(now.as_millis() as u64);
            let envelope =
                Envelope::generated(id, to, config.hostname.as_str(), now.as_secs(), body.len());
            let id = envelope.id.clone();
            match queue.enqueue(envelope, body).await {
                Ok(()) => {
                    info!(msg = %id, rcpts = %escape(&rcpts.join(",")), "DMARC report queued")
                }
                Err(e) => warn!(error = %e, "cannot queue a DMARC report; its counts are lost"),
            }
        }
    }
}
