//! The report store: one JSON file per report in `DATA_DIR/dmarc`, named
//! `<arrival day>-<SHA-256 of org and report id>.json` so that no text of the report's own
//! becomes a path and a report sent twice is stored once. Written durably, mode 0600; read
//! by `mta report dmarc` without the server.

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use mail_auth::report::Report;
use serde::{Deserialize, Serialize};

/// The directory under the data dir.
pub const DIR: &str = "dmarc";

/// One aggregate report as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredReport {
    /// When it arrived (Unix seconds): our clock, not the report's.
    pub received: u64,
    /// Always "unverified": nothing proves who wrote a report.
    pub source: String,
    /// The reporting organisation (`org_name`), as it says.
    pub org: String,
    /// Its contact address, as it says.
    pub email: String,
    /// Its report id.
    pub report_id: String,
    /// The time the report covers (Unix seconds), as it says.
    pub begin: u64,
    /// End of that time.
    pub end: u64,
    /// The policy it says it found: domain, `p`, `sp`, `adkim`, `aspf`.
    pub policy: PolicyPublished,
    /// The records kept (at most `dmarc_reports.max_records`).
    pub records: Vec<StoredRecord>,
    /// Records the report had beyond those.
    pub records_dropped: usize,
}

/// The DMARC record the reporter says it applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyPublished {
    /// The domain of the policy.
    pub domain: String,
    /// `p=`.
    pub p: String,
    /// `sp=`.
    pub sp: String,
    /// `adkim=`.
    pub adkim: String,
    /// `aspf=`.
    pub aspf: String,
}

/// One row: messages from one source IP with one set of results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRecord {
    /// The sending IP address; `None` when the report gave none that parses.
    pub source_ip: Option<IpAddr>,
    /// Messages.
    pub count: u32,
    /// The `From:` domain.
    pub header_from: String,
    /// The `MAIL FROM` domain.
    pub envelope_from: String,
    /// What the receiver did: none, quarantine, reject.
    pub disposition: String,
    /// DMARC's DKIM verdict (aligned pass or fail).
    pub dkim_aligned: String,
    /// DMARC's SPF verdict (aligned pass or fail).
    pub spf_aligned: String,
    /// Each DKIM signature: domain, selector, result.
    pub dkim: Vec<DkimResult>,
    /// Each SPF check: domain, scope, result.
    pub spf: Vec<SpfResult>,
}

/// One DKIM result of a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DkimResult {
    /// `d=`.
    pub domain: String,
    /// `s=`.
    pub selector: String,
    /// pass, fail, ...
    pub result: String,
}

/// One SPF result of a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpfResult {
    /// The domain checked.
    pub domain: String,
    /// helo or mfrom.
    pub scope: String,
    /// pass, fail, softfail, ...
    pub result: String,
}

impl StoredReport {
    /// The stored form of `report`, which arrived at `received`; `dropped` records were
    /// cut before parsing, and any beyond `max_records` are cut here. At most `max_records`
    /// DKIM and as many SPF results are kept in all: a record may list any number, and a
    /// few bytes of compressed XML would otherwise become megabytes of stored JSON.
    pub fn new(report: &Report, received: u64, dropped: usize, max_records: usize) -> Self {
        let m = &report.report_metadata;
        let p = &report.policy_published;
        let all = report.records();
        let mut left = (max_records, max_records);
        let records = all
            .iter()
            .take(max_records)
            .map(|r| stored_record(r, &mut left))
            .collect();
        StoredReport {
            received,
            source: "unverified".to_string(),
            org: short(&m.org_name),
            email: short(&m.email),
            report_id: short(&m.report_id),
            begin: m.date_range.begin,
            end: m.date_range.end,
            policy: PolicyPublished {
                domain: short(&p.domain),
                p: p.p.to_string(),
                sp: p.sp.to_string(),
                adkim: p.adkim.to_string(),
                aspf: p.aspf.to_string(),
            },
            records,
            records_dropped: dropped + all.len().saturating_sub(max_records),
        }
    }

    /// The file name: arrival day and a hash of org and report id, nothing else of the
    /// report's text.
    pub fn file_name(&self) -> String {
        format!("{}-{}.json", day(self.received), self.key())
    }

    /// What makes a report the same report: its org and id, hashed.
    pub fn key(&self) -> String {
        let mut input = self.org.as_bytes().to_vec();
        input.push(0);
        input.extend_from_slice(self.report_id.as_bytes());
        let digest = ring::digest::digest(&ring::digest::SHA256, &input);
        digest.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// The most characters of a text field kept (a domain name has at most 253).
const MAX_TEXT: usize = 255;

/// `text` cut to [`MAX_TEXT`] characters: the report's text is the sender's, and a few bytes
/// of compressed XML can say megabytes of it.
fn short(text: &str) -> String {
    text.chars().take(MAX_TEXT).collect()
}

/// `r` as stored, with at most `left.0` DKIM and `left.1` SPF results, which it spends.
fn stored_record(r: &mail_auth::report::Record, left: &mut (usize, usize)) -> StoredRecord {
    let dkim: Vec<DkimResult> = r
        .dkim_auth_result()
        .iter()
        .take(left.0)
        .map(|d| DkimResult {
            domain: short(d.domain()),
            selector: short(d.selector()),
            result: d.result().to_string(),
        })
        .collect();
    let spf: Vec<SpfResult> = r
        .spf_auth_result()
        .iter()
        .take(left.1)
        .map(|s| SpfResult {
            domain: short(s.domain()),
            scope: s.scope().to_string(),
            result: s.result().to_string(),
        })
        .collect();
    left.0 -= dkim.len();
    left.1 -= spf.len();
    StoredRecord {
        source_ip: r.source_ip(),
        count: r.count(),
        header_from: short(r.header_from()),
        envelope_from: short(r.envelope_from()),
        disposition: r.action_disposition().to_string(),
        dkim_aligned: r.dmarc_dkim_result().to_string(),
        spf_aligned: r.dmarc_spf_result().to_string(),
        dkim,
        spf,
    }
}

/// The UTC day of `unix` as `YYYYMMDD` (civil from days, H. Hinnant's algorithm).
pub fn day(unix: u64) -> String {
    let z = (unix / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}")
}

/// What [`save`] did with a report.
#[derive(Debug, PartialEq, Eq)]
pub enum Saved {
    /// Written to this file.
    Stored(PathBuf),
    /// The same org and report id was stored before.
    Duplicate,
    /// `max_per_day` reports arrived today already.
    DayFull,
}

/// Stores `report` under `data_dir/dmarc` unless it is there already or today's quota is
/// spent; one call at a time in this process. Blocking.
///
/// # Errors
/// Creating the directory, listing it or writing the file.
pub fn save(data_dir: &Path, report: &StoredReport, max_per_day: usize) -> io::Result<Saved> {
    // Deliveries run in parallel: without this, two copies of one report (or the last
    // reports of a day) could both see the directory before either is written.
    static SAVING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = SAVING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = data_dir.join(DIR);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    let today = format!("{}-", day(report.received));
    let suffix = format!("-{}.json", report.key());
    let mut today_count = 0;
    for entry in std::fs::read_dir(&dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(&suffix) {
            return Ok(Saved::Duplicate);
        }
        if name.starts_with(&today) && name.ends_with(".json") {
            today_count += 1;
        }
    }
    if today_count >= max_per_day {
        return Ok(Saved::DayFull);
    }
    let path = dir.join(report.file_name());
    let json = serde_json::to_vec_pretty(report).map_err(io::Error::other)?;
    mta_core::durable_file::write(&path, &json, 0o600)?;
    Ok(Saved::Stored(path))
}

/// Every stored report that arrived at or after `since` (Unix seconds).
///
/// # Errors
/// The directory cannot be read, or a file in it cannot be read or is not a report (named
/// with its path): `mta report dmarc` must not show a partial picture as the whole.
pub fn load(data_dir: &Path, since: u64) -> Result<Vec<StoredReport>, LoadError> {
    let dir = data_dir.join(DIR);
    let entries = std::fs::read_dir(&dir).map_err(|e| LoadError::Io(dir.clone(), e))?;
    let mut out = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| LoadError::Io(dir.clone(), e))?.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(|e| LoadError::Io(path.clone(), e))?;
        let report: StoredReport =
            serde_json::from_slice(&bytes).map_err(|e| LoadError::Format(path.clone(), e))?;
        if report.received >= since {
            out.push(report);
        }
    }
    Ok(out)
}

/// Why the store cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Reading the directory or a file failed.
    #[error("cannot read {path}: {source}", path = .0.display(), source = .1)]
    Io(PathBuf, #[source] io::Error),
    /// A file is not a stored report.
    #[error("{path} is not a stored DMARC report: {source}", path = .0.display(), source = .1)]
    Format(PathBuf, #[source] serde_json::Error),
}

use std::os::unix::fs::DirBuilderExt;
