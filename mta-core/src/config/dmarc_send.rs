//! `[dmarc_reports.send]` from the file to [`DmarcSend`]: whether we send DMARC aggregate
//! reports (RFC 7489 §7.2) about the mail we receive, and to which report domains. Off by
//! default; on, it needs an allow-list: a `rua=` tag can name any address, and a server that
//! mails reports to every address a DNS record names sends mail nobody asked for.

use std::time::Duration;

use super::checker::Checker;
use super::file::RawDmarcSend;
use super::{DmarcSend, duration};
use crate::address::{Address, Domain};

/// How often reports go out, by default (RFC 7489 §7.2: once a day).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);
/// Rows (distinct source address and results) kept per reported domain and period.
pub const DEFAULT_MAX_RECORDS: usize = 1_000;

impl Checker<'_> {
    /// `[dmarc_reports.send]`: off unless `enabled`; on, `allow` must name a domain.
    pub(super) fn dmarc_send(
        &mut self,
        raw: &RawDmarcSend,
        hostname: &Domain,
        local: &[Domain],
    ) -> DmarcSend {
        let enabled = raw.enabled.as_ref().is_some_and(|e| *e.get_ref());
        let allow: Vec<Domain> = raw
            .allow
            .as_ref()
            .map(|list| {
                list.get_ref()
                    .iter()
                    .filter_map(|d| self.domain(d, "dmarc_reports.send.allow"))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(e) = &raw.enabled
            && *e.get_ref()
            && allow.is_empty()
            && raw.allow.as_ref().is_none_or(|l| l.get_ref().is_empty())
        {
            let msg = "sending DMARC reports needs dmarc_reports.send.allow: the report \
                       domains we may send to"
                .to_string();
            self.error(e.span(), "dmarc_reports.send.enabled", msg);
        }
        let org_name = match &raw.org_name {
            Some(n)
                if n.get_ref().trim().is_empty() || n.get_ref().chars().any(char::is_control) =>
            {
                let msg = "must be a non-empty name without control characters".to_string();
                self.error(n.span(), "dmarc_reports.send.org_name", msg);
                hostname.to_string()
            }
            Some(n) => n.get_ref().clone(),
            None => hostname.to_string(),
        };
        let primary = match local.contains(hostname) {
            true => hostname,
            false => local.first().unwrap_or(hostname),
        };
        let default_contact = || Address::parse(&format!("postmaster@{primary}")).ok();
        let contact = match &raw.contact {
            Some(text) => match Address::parse(text.get_ref()) {
                Ok(a) => Some(a),
                Err(e) => {
                    let msg = format!("{:?} is not a mail address: {e}", text.get_ref());
                    self.error(text.span(), "dmarc_reports.send.contact", msg);
                    default_contact()
                }
            },
            None => default_contact(),
        };
        let interval = self.duration(
            &raw.interval,
            "dmarc_reports.send.interval",
            DEFAULT_INTERVAL,
        );
        if interval.is_zero()
            && let Some(text) = &raw.interval
        {
            let msg = "must be at least a second".to_string();
            self.error(text.span(), "dmarc_reports.send.interval", msg);
        }
        let max_records = raw
            .max_records
            .as_ref()
            .and_then(|n| self.int(n, "dmarc_reports.send.max_records", 1, 100_000, None))
            .map_or(DEFAULT_MAX_RECORDS, |n| n as usize);
        DmarcSend {
            enabled,
            allow,
            org_name,
            contact,
            interval: if interval.is_zero() {
                DEFAULT_INTERVAL
            } else {
                interval
            },
            max_records,
        }
    }
}

/// The `[dmarc_reports.send]` table as `mta config show` writes it.
pub(super) fn write(s: &DmarcSend) -> String {
    let allow: Vec<String> = s
        .allow
        .iter()
        .map(|d| super::file::quote(d.as_str()))
        .collect();
    let contact = match &s.contact {
        Some(a) => format!("contact = {}\n", super::file::quote(&a.to_string())),
        None => String::new(),
    };
    format!(
        "\n[dmarc_reports.send]\nenabled = {}\nallow = [{}]\norg_name = {}\n{contact}interval = {}\nmax_records = {}\n",
        s.enabled,
        allow.join(", "),
        super::file::quote(&s.org_name),
        super::file::quote(&duration::format(s.interval)),
        s.max_records,
    )
}
