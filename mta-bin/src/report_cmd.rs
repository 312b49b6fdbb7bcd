//! `mta report dmarc [--days N] [--json]`: the DMARC aggregate reports other receivers sent
//! to `[dmarc_reports] address`, summed up per source IP and `From:` domain, read from
//! `DATA_DIR/dmarc` without the server. Every name in a report is the reporter's own text:
//! escaped for the terminal, and labelled unverified, as nothing proves who wrote it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use mta_core::config::Config;
use mta_core::text::terminal;
use mta_smtp::dmarc_reports::store::{self, StoredRecord, StoredReport};
use serde::Serialize;

/// `mta report ...`
#[derive(Subcommand, Debug)]
pub enum ReportCommand {
    /// Who sends mail as our domains, by the DMARC aggregate reports received.
    Dmarc(DmarcArgs),
}

impl ReportCommand {
    /// True when the output (and so an error) is JSON.
    pub fn json(&self) -> bool {
        match self {
            ReportCommand::Dmarc(a) => a.json,
        }
    }
}

/// `mta report dmarc` options.
#[derive(Args, Debug)]
pub struct DmarcArgs {
    /// Reports that arrived in the last N days.
    #[arg(long, default_value_t = 7)]
    pub days: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Pass and fail counts of one check, in messages.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PassFail {
    /// Messages that passed.
    pub pass: u64,
    /// Messages that did not.
    pub fail: u64,
}

impl PassFail {
    fn add(&mut self, passed: bool, count: u64) {
        if passed {
            self.pass += count;
        } else {
            self.fail += count;
        }
    }
}

/// One line of the summary: a source IP and `From:` domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    /// The sending address ("unknown" when the report gave none).
    pub source_ip: String,
    /// The `From:` domain.
    pub header_from: String,
    /// Messages.
    pub messages: u64,
    /// DMARC: DKIM or SPF passed aligned.
    pub dmarc: PassFail,
    /// SPF: any SPF check passed.
    pub spf: PassFail,
    /// DKIM: any signature verified.
    pub dkim: PassFail,
    /// Reporting organisations, as they name themselves.
    pub orgs: Vec<String>,
}

fn passed(r: &StoredRecord) -> (bool, bool, bool) {
    let dmarc = r.dkim_aligned == "pass" || r.spf_aligned == "pass";
    let spf = r.spf.iter().any(|s| s.result == "pass");
    let dkim = r.dkim.iter().any(|d| d.result == "pass");
    (dmarc, spf, dkim)
}

/// The rows for `reports`, largest volume first (then by address and domain).
pub fn summarize(reports: &[StoredReport]) -> Vec<Row> {
    type Key = (String, String);
    let mut rows: BTreeMap<Key, (Row, BTreeSet<String>)> = BTreeMap::new();
    for report in reports {
        for r in &report.records {
            let ip = r
                .source_ip
                .map_or("unknown".to_string(), |ip: IpAddr| ip.to_string());
            let key = (ip.clone(), r.header_from.to_ascii_lowercase());
            let (row, orgs) = rows.entry(key.clone()).or_insert_with(|| {
                let row = Row {
                    source_ip: ip,
                    header_from: key.1.clone(),
                    messages: 0,
                    dmarc: PassFail::default(),
                    spf: PassFail::default(),
                    dkim: PassFail::default(),
                    orgs: Vec::new(),
                };
                (row, BTreeSet::new())
            });
            let count = u64::from(r.count);
            let (dmarc, spf, dkim) = passed(r);
            row.messages += count;
            row.dmarc.add(dmarc, count);
            row.spf.add(spf, count);
            row.dkim.add(dkim, count);
            orgs.insert(report.org.clone());
        }
    }
    let mut out: Vec<Row> = rows
        .into_values()
        .map(|(mut row, orgs)| {
            row.orgs = orgs.into_iter().collect();
            row
        })
        .collect();
    out.sort_by(|a, b| {
        b.messages
            .cmp(&a.messages)
            .then_with(|| a.source_ip.cmp(&b.source_ip))
            .then_with(|| a.header_from.cmp(&b.header_from))
    });
    out
}

/// Runs `mta report dmarc`.
///
/// # Errors
/// The store cannot be read (missing, unreadable, or a file in it is not a report).
pub fn run(command: ReportCommand, config: &Config) -> anyhow::Result<()> {
    let ReportCommand::Dmarc(args) = command;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let since = now.saturating_sub(args.days.saturating_mul(86_400));
    let hint = match &config.dmarc_reports.address {
        Some(a) => format!("no report to {a} was stored yet, or this is not the server's data_dir"),
        None => "[dmarc_reports] address is not set in this config".to_string(),
    };
    let reports = store::load(&config.data_dir, since)
        .with_context(|| format!("cannot read the DMARC report store ({hint})"))?;
    let rows = summarize(&reports);
    if args.json {
        let orgs: BTreeSet<&str> = reports.iter().map(|r| r.org.as_str()).collect();
        let value = serde_json::json!({
            "days": args.days,
            "reports": reports.len(),
            "organisations": orgs,
            "source": "unverified",
            "rows": rows,
        });
        println!("{value}");
        return Ok(());
    }
    if reports.is_empty() {
        println!("no reports in the last {} days", args.days);
        return Ok(());
    }
    print!("{}", table(&reports, &rows, args.days));
    Ok(())
}

/// The text output: a header line, then one line per row.
fn table(reports: &[StoredReport], rows: &[Row], days: u64) -> String {
    let orgs: BTreeSet<&str> = reports.iter().map(|r| r.org.as_str()).collect();
    let mut out = format!(
        "{} reports from {} organisations in the last {days} days (source: unverified, \
         anyone can send a report)\n",
        reports.len(),
        orgs.len()
    );
    out += &format!(
        "{:>8}  {:>15}  {:>11}  {:>11}  {:<39}  {:<30}  reported by\n",
        "messages", "dmarc pass/fail", "spf p/f", "dkim p/f", "source ip", "header from"
    );
    let pf = |p: PassFail| format!("{}/{}", p.pass, p.fail);
    for r in rows {
        let orgs: Vec<String> = r.orgs.iter().map(|o| terminal(o, false)).collect();
        out += &format!(
            "{:>8}  {:>15}  {:>11}  {:>11}  {:<39}  {:<30}  {}\n",
            r.messages,
            pf(r.dmarc),
            pf(r.spf),
            pf(r.dkim),
            r.source_ip,
            terminal(&r.header_from, false),
            orgs.join(", ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mta_smtp::dmarc_reports::store::{DkimResult, PolicyPublished, SpfResult};
    use proptest::prelude::*;

    fn record(ip: u8, from: &str, count: u32, pass: [bool; 3]) -> StoredRecord {
        let word = |p: bool| if p { "pass" } else { "fail" }.to_string();
        StoredRecord {
            source_ip: Some(IpAddr::from([192, 0, 2, ip])),
            count,
            header_from: from.to_string(),
            envelope_from: from.to_string(),
            disposition: "none".to_string(),
            dkim_aligned: word(pass[0]),
            spf_aligned: "fail".to_string(),
            dkim: vec![DkimResult {
                domain: from.to_string(),
                selector: "s".to_string(),
                result: word(pass[2]),
            }],
            spf: vec![SpfResult {
                domain: from.to_string(),
                scope: "mfrom".to_string(),
                result: word(pass[1]),
            }],
        }
    }

    fn report(org: &str, records: Vec<StoredRecord>) -> StoredReport {
        StoredReport {
            received: 0,
            source: "unverified".to_string(),
            org: org.to_string(),
            email: String::new(),
            report_id: "1".to_string(),
            begin: 0,
            end: 0,
            policy: PolicyPublished {
                domain: "example.org".to_string(),
                p: "none".to_string(),
                sp: "none".to_string(),
                adkim: "r".to_string(),
                aspf: "r".to_string(),
            },
            records,
            records_dropped: 0,
        }
    }

    #[test]
    fn rows_by_volume_with_escaped_names() {
        let reports = vec![
            report("google.com", vec![record(1, "example.org", 3, [true; 3])]),
            report(
                "evil\x1b]0;owned\x07",
                vec![
                    record(2, "example.org", 10, [false; 3]),
                    record(1, "example.org", 2, [false, true, false]),
                ],
            ),
        ];
        let rows = summarize(&reports);
        assert_eq!(rows[0].messages, 10);
        assert_eq!(rows[1].messages, 5);
        assert_eq!(rows[1].dmarc, PassFail { pass: 3, fail: 2 });
        assert_eq!(rows[1].spf, PassFail { pass: 5, fail: 0 });
        let text = table(&reports, &rows, 7);
        assert!(!text.contains('\x1b'), "{text}");
        assert!(text.contains("evil\\u{1b}]0;owned\\u{7}"), "{text}");
        assert!(text.contains("source: unverified"), "{text}");
    }

    proptest! {
        /// The summary against a model: per (ip, domain), sum every record's count by
        /// brute force over all records.
        #[test]
        fn summary_matches_model(
            reports in proptest::collection::vec(
                (0u8..3, proptest::collection::vec(
                    (0u8..4, 0usize..2, 0u32..1000, any::<[bool; 3]>()), 0..6)),
                0..6)
        ) {
            let domains = ["example.org", "Example.ORG.sub"];
            let stored: Vec<StoredReport> = reports.iter().map(|(org, recs)| {
                report(&format!("org{org}"), recs.iter()
                    .map(|&(ip, d, c, p)| record(ip, domains[d], c, p)).collect())
            }).collect();
            let rows = summarize(&stored);
            let all: Vec<(&StoredReport, &StoredRecord)> = stored.iter()
                .flat_map(|r| r.records.iter().map(move |x| (r, x))).collect();
            prop_assert_eq!(rows.iter().map(|r| r.messages).sum::<u64>(),
                all.iter().map(|(_, x)| u64::from(x.count)).sum::<u64>());
            for row in &rows {
                let mine: Vec<_> = all.iter().filter(|(_, x)| {
                    x.source_ip.unwrap().to_string() == row.source_ip
                        && x.header_from.to_ascii_lowercase() == row.header_from
                }).collect();
                let sum = |f: &dyn Fn(&StoredRecord) -> bool| -> u64 {
                    mine.iter().filter(|(_, x)| f(x)).map(|(_, x)| u64::from(x.count)).sum()
                };
                prop_assert_eq!(row.messages, sum(&|_| true));
                prop_assert_eq!(row.dkim.pass, sum(&|x| x.dkim[0].result == "pass"));
                prop_assert_eq!(row.spf.fail, sum(&|x| x.spf[0].result != "pass"));
                prop_assert_eq!(row.dmarc.pass, sum(&|x| x.dkim_aligned == "pass"));
                let orgs: BTreeSet<String> = mine.iter().map(|(r, _)| r.org.clone()).collect();
                prop_assert_eq!(&row.orgs, &orgs.into_iter().collect::<Vec<_>>());
            }
            prop_assert!(rows.windows(2).all(|w| w[0].messages >= w[1].messages));
        }
    }
}
