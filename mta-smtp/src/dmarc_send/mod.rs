//! Our own DMARC aggregate reports (RFC 7489 §7.2) about the mail we receive on port 25,
//! when `[dmarc_reports.send] enabled`: the inbound checks count each message's DMARC
//! result here ([`Recorder::record`]), and once per `interval` [`send::run`] turns the
//! counts into one report per `From:` domain for the `rua=` addresses that may have it.
//!
//! The counts are bounded: at most [`MAX_DOMAINS`] domains a period and
//! `max_records` rows (distinct source address and results) per domain; a message past
//! either bound is counted as dropped (logged when the period ends), never kept. They are
//! written to `DATA_DIR/dmarc-send.json` (durably, by [`mta_core::durable_file::write`]) at
//! most once a minute and when the server stops, and read back at start: a crash loses at
//! most the last minute's counts, which only makes one report smaller (reports are
//! statistics, not mail anyone waits for).

pub mod send;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use mail_auth::report::Record;
use mta_core::text::escape;
use serde::{Deserialize, Serialize};

/// The most `From:` domains counted in one period; messages from further domains are
/// counted as dropped. A report costs a DNS query or two and a queued message, so this
/// also bounds what one period's sending costs.
pub const MAX_DOMAINS: usize = 1_000;

/// The file the counts are kept in, under the data directory.
pub const FILE: &str = "dmarc-send.json";

/// One domain's rows and how many messages found no room.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rows {
    /// Each distinct record (source address, disposition, results; `count` zero) and its
    /// count.
    pub rows: HashMap<Record, u32>,
    /// Messages not counted because the domain had `max_records` rows already.
    pub dropped: u64,
}

/// One period's counts.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Period {
    /// When it began (Unix seconds).
    pub begin: u64,
    /// Per `From:` domain (lower case).
    pub domains: BTreeMap<String, Rows>,
    /// Messages not counted because [`MAX_DOMAINS`] domains had rows already.
    pub dropped_domains: u64,
}

/// One domain in the file: its name, rows with their counts, and its dropped count.
type SavedDomain = (String, Vec<(Record, u32)>, u64);

/// The counts as the file holds them (JSON has no maps with records for keys).
#[derive(Serialize, Deserialize, Default)]
struct Saved {
    begin: u64,
    domains: Vec<SavedDomain>,
    dropped_domains: u64,
}

/// The current period's counts, shared by the inbound checks and the sender.
#[derive(Debug)]
pub struct Recorder {
    max_domains: usize,
    max_records: usize,
    path: Option<PathBuf>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    period: Period,
    /// Changed since last written.
    dirty: bool,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Recorder {
    /// An empty recorder kept in memory only, with these bounds.
    pub fn new(max_domains: usize, max_records: usize) -> Recorder {
        Recorder {
            max_domains,
            max_records,
            path: None,
            state: Mutex::new(State {
                period: Period {
                    begin: now(),
                    ..Period::default()
                },
                dirty: false,
            }),
        }
    }

    /// The recorder kept in `data_dir`, with the counts a previous run left there (a file
    /// that cannot be read is logged and ignored: the period starts anew).
    pub fn open(data_dir: &Path, max_records: usize) -> Recorder {
        let mut r = Recorder::new(MAX_DOMAINS, max_records);
        let path = data_dir.join(FILE);
        match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<Saved>(&bytes) {
                Ok(saved) => {
                    let period = r.bounded(saved);
                    r.state.get_mut().unwrap_or_else(|e| e.into_inner()).period = period;
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %escape(&e.to_string()), "DMARC report counts not read; starting anew");
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "DMARC report counts not read; starting anew");
            }
        }
        r.path = Some(path);
        r
    }

    /// The saved counts, within this recorder's bounds (the file may come from a run with
    /// larger ones, or from anyone who could write to the data directory).
    fn bounded(&self, saved: Saved) -> Period {
        let mut period = Period {
            begin: saved.begin,
            dropped_domains: saved.dropped_domains,
            ..Period::default()
        };
        for (domain, rows, dropped) in saved.domains {
            let domain = domain.to_ascii_lowercase();
            if !period.domains.contains_key(&domain) && period.domains.len() >= self.max_domains {
                let lost: u64 = rows.iter().map(|(_, n)| u64::from(*n)).sum();
                period.dropped_domains = period
                    .dropped_domains
                    .saturating_add(lost.saturating_add(dropped));
                continue;
            }
            let r = period.domains.entry(domain).or_default();
            r.dropped = r.dropped.saturating_add(dropped);
            for (record, n) in rows {
                count(r, record, n, self.max_records);
            }
        }
        period
    }

    /// Counts one message from `domain` (its `From:` domain) with these results.
    pub fn record(&self, domain: &str, mut record: Record) {
        record.row.count = 0;
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.dirty = true;
        let period = &mut state.period;
        if !period.domains.contains_key(&domain) && period.domains.len() >= self.max_domains {
            period.dropped_domains = period.dropped_domains.saturating_add(1);
            return;
        }
        let rows = period.domains.entry(domain).or_default();
        count(rows, record, 1, self.max_records);
    }

    /// Ends the period: its counts, and a new empty period from now (written at once, so
    /// a restart does not send the same counts again).
    pub fn take(&self) -> (Period, u64) {
        let end = now();
        let taken = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let begin = state.period.begin;
            state.dirty = true;
            std::mem::replace(
                &mut state.period,
                Period {
                    begin: end.max(begin + 1),
                    ..Period::default()
                },
            )
        };
        self.save();
        let end = end.max(taken.begin + 1);
        (taken, end)
    }

    /// Writes the counts when they changed since last written. Blocking.
    pub fn save(&self) {
        let Some(path) = &self.path else { return };
        let saved = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if !state.dirty {
                return;
            }
            state.dirty = false;
            let p = &state.period;
            Saved {
                begin: p.begin,
                domains: p
                    .domains
                    .iter()
                    .map(|(d, r)| {
                        let rows = r.rows.iter().map(|(k, n)| (k.clone(), *n)).collect();
                        (d.clone(), rows, r.dropped)
                    })
                    .collect(),
                dropped_domains: p.dropped_domains,
            }
        };
        let bytes = match serde_json::to_vec(&saved) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "DMARC report counts not written");
                return;
            }
        };
        if let Err(e) = mta_core::durable_file::write(path, &bytes, 0o600) {
            tracing::warn!(path = %path.display(), error = %e, "DMARC report counts not written");
        }
    }
}

/// Counts one message with `disposition` (what the checks did with it: refused with `550`
/// is `reject`, marked as spam `quarantine`, else `none`), when its `From:` domain publishes
/// a DMARC record.
pub fn record_verdict(
    recorder: &Recorder,
    disposition: mail_auth::report::ActionDisposition,
    ip: std::net::IpAddr,
    envelope_from: &str,
    spf: &mail_auth::SpfOutput,
    dkim: &[mail_auth::DkimOutput<'_>],
    dmarc: &mail_auth::DmarcOutput,
) {
    use mail_auth::report::SPFDomainScope;
    if dmarc.dmarc_record().is_none() || dmarc.domain().is_empty() {
        return;
    }
    let mut record = Record::new()
        .with_source_ip(ip)
        .with_header_from(dmarc.domain())
        .with_envelope_from(envelope_from)
        .with_dkim_output(dkim)
        .with_spf_output(spf, SPFDomainScope::MailFrom)
        .with_dmarc_output(dmarc)
        .with_action_disposition(disposition);
    // The verifier's texts vary from message to message; rows are counted by result.
    for d in &mut record.auth_results.dkim {
        d.human_result = None;
    }
    recorder.record(dmarc.domain(), record);
}

/// Adds `n` messages with `record` to `rows`, or to its dropped count when it is a new row
/// and `rows` has `max` already.
fn count(rows: &mut Rows, mut record: Record, n: u32, max: usize) {
    record.row.count = 0;
    if let Some(c) = rows.rows.get_mut(&record) {
        *c = c.saturating_add(n);
    } else if rows.rows.len() >= max {
        rows.dropped = rows.dropped.saturating_add(u64::from(n));
    } else {
        rows.rows.insert(record, n);
    }
}
