//! `[dmarc_reports]` from the file to [`DmarcReports`]: the address DMARC aggregate reports
//! (RFC 7489 §7.2) are sent to, and the bounds on what is kept of them. The address must be
//! in one of our domains and must not be an alias, whose mail would never reach it.

use std::collections::BTreeMap;

use super::DmarcReports;
use super::checker::{Checker, bytes};
use super::file::RawDmarcReports;
use crate::address::{Address, Domain};

/// Decompressed XML read from one message, at most: a small organisation's reports are a
/// few kilobytes; the largest senders' run to a few megabytes.
pub const DEFAULT_MAX_SIZE: u64 = 4 * 1024 * 1024;
/// Records kept of one report; the rest are counted in the log line and dropped.
pub const DEFAULT_MAX_RECORDS: usize = 10_000;
/// Reports stored per day (by arrival); the rest are logged and dropped.
pub const DEFAULT_MAX_PER_DAY: usize = 1_000;

impl DmarcReports {
    /// True when `a` is the report address (local part compared without case).
    pub fn is_address(&self, a: &Address) -> bool {
        self.address.as_ref().is_some_and(|r| r.key() == a.key())
    }
}

impl Checker<'_> {
    /// `[dmarc_reports]`: off (no address) unless `address` is set.
    pub(super) fn dmarc_reports(
        &mut self,
        raw: &RawDmarcReports,
        local: &[Domain],
        aliases: &BTreeMap<Address, Vec<Address>>,
        hostname: &Domain,
    ) -> DmarcReports {
        let address = raw.address.as_ref().and_then(|text| {
            let key = "dmarc_reports.address";
            let a = match Address::parse(text.get_ref()) {
                Ok(a) => a,
                Err(e) => {
                    let msg = format!("{:?} is not a mail address: {e}", text.get_ref());
                    self.error(text.span(), key, msg);
                    return None;
                }
            };
            if !local.contains(a.domain()) {
                let msg = format!("{a} is not in one of local_domains");
                self.error(text.span(), key, msg);
                return None;
            }
            if aliases.keys().any(|alias| alias.key() == a.key()) {
                let msg = format!("{a} is an alias: the reports must reach the address itself");
                self.error(text.span(), key, msg);
                return None;
            }
            Some(a)
        });
        let max_size = self
            .int_or(
                &bytes(&raw.max_size),
                "dmarc_reports.max_size",
                1024,
                1 << 30,
            )
            .map_or(DEFAULT_MAX_SIZE, |n| n as u64);
        let max_records = raw
            .max_records
            .as_ref()
            .and_then(|n| self.int(n, "dmarc_reports.max_records", 1, 10_000_000, None))
            .map_or(DEFAULT_MAX_RECORDS, |n| n as usize);
        let max_per_day = raw
            .max_per_day
            .as_ref()
            .and_then(|n| self.int(n, "dmarc_reports.max_per_day", 1, 1_000_000, None))
            .map_or(DEFAULT_MAX_PER_DAY, |n| n as usize);
        let send = self.dmarc_send(&raw.send, hostname, local);
        DmarcReports {
            address,
            max_size,
            max_records,
            max_per_day,
            send,
        }
    }

    fn int_or(
        &mut self,
        n: &Option<super::file::S<i64>>,
        key: &str,
        min: i64,
        max: i64,
    ) -> Option<i64> {
        n.as_ref().and_then(|n| self.int(n, key, min, max, None))
    }
}
