//! `[dkim."domain"]` and `[inbound]` from the file to [`DkimKey`]s and [`Inbound`]: which keys
//! sign outbound mail, and which checks inbound mail gets. Only the values are checked here;
//! the key files are read when the server starts (and by `mta check-config`), where a missing
//! or unreadable key is reported.

use std::collections::BTreeMap;
use std::time::Duration;

use super::checker::Checker;
use super::file::{OneOrMany, RawDkimKey, RawInbound, S};
use super::{DkimAlgorithm, DkimKey, Inbound, SpoofedFrom};
use crate::address::Domain;

/// RFC 6376 §3.5 recommends `x=`; a week covers any retry schedule while limiting replay.
const DEFAULT_EXPIRE: Duration = Duration::from_secs(7 * 24 * 60 * 60);
const ALGORITHMS: [DkimAlgorithm; 2] = [DkimAlgorithm::Rsa, DkimAlgorithm::Ed25519];

impl Checker<'_> {
    /// The `[dkim."domain"]` tables, in file order. No selector may appear twice in a domain.
    pub(super) fn dkim(
        &mut self,
        map: &BTreeMap<S<String>, OneOrMany<RawDkimKey>>,
    ) -> Vec<DkimKey> {
        let mut tables: Vec<_> = map.iter().collect();
        tables.sort_by_key(|(name, _)| name.span().start);
        let mut keys: Vec<DkimKey> = Vec::new();
        for (name, tables) in tables {
            let key = format!("dkim.{:?}", name.get_ref());
            let domain = self.domain(name, &key);
            for table in &tables.0 {
                let Some(k) = self.dkim_key(name, table, &key, domain.clone()) else {
                    continue;
                };
                if keys
                    .iter()
                    .any(|other| other.domain == k.domain && other.selector == k.selector)
                {
                    let msg = format!("selector {:?} is used twice for {}", k.selector, k.domain);
                    self.error(name.span(), &format!("{key}.selector"), msg);
                    continue;
                }
                keys.push(k);
            }
        }
        keys
    }

    fn dkim_key(
        &mut self,
        name: &S<String>,
        raw: &RawDkimKey,
        key: &str,
        domain: Option<Domain>,
    ) -> Option<DkimKey> {
        let selector_key = format!("{key}.selector");
        let selector = match &raw.selector {
            Some(s) if is_dkim_selector(s.get_ref()) => Some(s.get_ref().to_ascii_lowercase()),
            Some(s) => {
                let msg = format!(
                    "{:?} is not a selector: DNS labels of letters, digits and hyphens, \
                     separated by dots",
                    s.get_ref()
                );
                self.error(s.span(), &selector_key, msg);
                None
            }
            None => {
                self.error(name.span(), &selector_key, "must be set".to_string());
                None
            }
        };
        let file_key = format!("{key}.key");
        let file = self.path(&raw.key, &file_key);
        if raw.key.is_none() {
            let msg = "must be set: the PEM private key file (see `mta dkim keygen`)".to_string();
            self.error(name.span(), &file_key, msg);
        }
        let algorithm = match &raw.algorithm {
            Some(a) => self.choice(
                a,
                &format!("{key}.algorithm"),
                &ALGORITHMS,
                DkimAlgorithm::name,
            ),
            None => Some(DkimAlgorithm::Rsa),
        };
        let expire = self.duration(&raw.expire, &format!("{key}.expire"), DEFAULT_EXPIRE);
        Some(DkimKey {
            domain: domain?,
            selector: selector?,
            key: file?,
            algorithm: algorithm?,
            expire,
        })
    }

    /// `[inbound]`: three switches and what to do with mail spoofing our own domains.
    pub(super) fn inbound(&mut self, raw: &RawInbound) -> Inbound {
        const SPOOFED: [SpoofedFrom; 3] =
            [SpoofedFrom::Mark, SpoofedFrom::Reject, SpoofedFrom::Off];
        let spoofed_from = raw
            .spoofed_from
            .as_ref()
            .and_then(|s| self.choice(s, "inbound.spoofed_from", &SPOOFED, SpoofedFrom::name))
            .unwrap_or(SpoofedFrom::Mark);
        Inbound {
            checks: raw.checks.unwrap_or(true),
            dmarc_reject: raw.dmarc_reject.unwrap_or(true),
            spf_reject: raw.spf_reject.unwrap_or(false),
            spoofed_from,
            milters: raw
                .milter
                .as_ref()
                .map(|m| self.milters(&m.0))
                .unwrap_or_default(),
            dnsbl: self.dnsbl(raw),
        }
    }
}

/// True when `text` is a DKIM selector: one or more DNS labels of letters, digits and hyphens
/// (RFC 6376 §3.1).
pub fn is_dkim_selector(text: &str) -> bool {
    crate::address::is_ldh_name(text, 200)
}
