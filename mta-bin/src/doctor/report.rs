//! What `mta doctor` found, one [`Verdict`] per item, and how it is shown: aligned text for a
//! person, or a JSON array for a script (`--json`).

use std::fmt::Write as _;

/// How an item stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// As it should be.
    Ok,
    /// Optional and absent, or not checked for a reason that is not a fault.
    Info,
    /// Works, but could be better (mail is not refused for it).
    Warn,
    /// Hurts deliverability, or could not be checked: `mta doctor` exits 1.
    Fail,
}

impl Status {
    /// The word in the text report.
    fn text(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Info => "info",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        }
    }

    /// The word in the JSON report.
    fn json(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Info => "info",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// One checked item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// What was checked: `address`, `mx`, `spf`, `dkim`, `dmarc`, `ptr`, `mta-sts`, `tls-rpt`,
    /// `cert`.
    pub check: &'static str,
    /// The domain it was checked for (the hostname for host checks).
    pub domain: String,
    /// The verdict.
    pub status: Status,
    /// Why, in one line.
    pub detail: String,
    /// The record to publish, in zone-file form, when one is wrong or missing.
    pub record: Option<String>,
}

impl Verdict {
    /// A verdict without a record.
    pub fn new(check: &'static str, domain: &str, status: Status, detail: String) -> Verdict {
        Verdict {
            check,
            domain: domain.to_string(),
            status,
            detail,
            record: None,
        }
    }

    /// The same verdict, with the record to publish.
    pub fn publish(mut self, record: String) -> Verdict {
        self.record = Some(record.trim_end().to_string());
        self
    }
}

/// Text that came from DNS (TXT records, names) made safe for a terminal: control
/// characters are shown escaped, never sent.
fn shown(text: &str) -> String {
    mta_core::text::terminal(text, false)
}

/// One verdict as one line, for when nothing else could be checked.
pub fn one(v: &Verdict) -> String {
    format!(
        "{}  {}  {}  {}\n",
        v.status.text(),
        v.check,
        shown(&v.domain),
        shown(&v.detail)
    )
}

/// The text report: a header line, one aligned line per verdict (with the record to publish
/// indented below it), and a summary. Text from DNS is escaped ([`shown`]).
pub fn text(header: &str, verdicts: &[Verdict]) -> String {
    let check_width = verdicts.iter().map(|v| v.check.len()).max().unwrap_or(0);
    let domain_width = verdicts.iter().map(|v| v.domain.len()).max().unwrap_or(0);
    let mut out = format!("{header}\n\n");
    for v in verdicts {
        let _ = writeln!(
            out,
            "{:<4}  {:<check_width$}  {:<domain_width$}  {}",
            v.status.text(),
            v.check,
            shown(&v.domain),
            shown(&v.detail)
        );
        if let Some(record) = &v.record {
            let _ = writeln!(out, "      publish:");
            for line in record.lines() {
                let _ = writeln!(out, "        {}", shown(line));
            }
        }
    }
    let count = |s: Status| verdicts.iter().filter(|v| v.status == s).count();
    let _ = writeln!(
        out,
        "\n{} ok, {} info, {} warn, {} FAIL. What each record is for: docs/dns.md",
        count(Status::Ok),
        count(Status::Info),
        count(Status::Warn),
        count(Status::Fail)
    );
    out
}

/// The JSON report: an array of `{check, domain, status, detail, record?}`.
pub fn json(verdicts: &[Verdict]) -> String {
    let items: Vec<serde_json::Value> = verdicts
        .iter()
        .map(|v| {
            let mut item = serde_json::json!({
                "check": v.check,
                "domain": v.domain,
                "status": v.status.json(),
                "detail": v.detail,
            });
            if let Some(record) = &v.record {
                item["record"] = serde_json::Value::String(record.clone());
            }
            item
        })
        .collect();
    let mut out = serde_json::to_string_pretty(&items).expect("JSON values always serialize");
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Verdict> {
        vec![
            Verdict::new(
                "mx",
                "example.org",
                Status::Ok,
                "MX 10 mx.example.org".into(),
            ),
            Verdict::new("dmarc", "example.org", Status::Fail, "no record".into())
                .publish("_dmarc.example.org. IN TXT \"v=DMARC1; p=none\"\n".into()),
        ]
    }

    #[test]
    fn text_aligns_and_shows_records() {
        assert_eq!(
            text("header", &sample()),
            "header\n\n\
             ok    mx     example.org  MX 10 mx.example.org\n\
             FAIL  dmarc  example.org  no record\n      publish:\n        \
             _dmarc.example.org. IN TXT \"v=DMARC1; p=none\"\n\n\
             1 ok, 0 info, 0 warn, 1 FAIL. What each record is for: docs/dns.md\n"
        );
    }

    #[test]
    fn dns_text_cannot_drive_the_terminal() {
        let v = Verdict::new(
            "dmarc",
            "example.org",
            Status::Warn,
            "rua=mailto:a@example.org\u{1b}]0;owned\u{7}".into(),
        )
        .publish("_dmarc.example.org. IN TXT \"k=\u{1b}[2J\"".into());
        let out = text("header", std::slice::from_ref(&v));
        assert!(!out.contains('\u{1b}') && !out.contains('\u{7}'), "{out}");
        assert!(out.contains("a@example.org\\u{1b}]0;owned\\u{7}"), "{out}");
        assert!(out.contains("k=\\u{1b}[2J"), "{out}");
        assert!(!one(&v).contains('\u{1b}'));
    }

    #[test]
    fn json_has_record_only_when_there_is_one() {
        let v: serde_json::Value = serde_json::from_str(&json(&sample())).unwrap();
        assert_eq!(v[0]["status"], "ok");
        assert!(v[0].get("record").is_none());
        assert_eq!(v[1]["status"], "fail");
        assert_eq!(
            v[1]["record"],
            "_dmarc.example.org. IN TXT \"v=DMARC1; p=none\""
        );
    }
}
