//! `[srs]` from the file to [`Srs`]: whether forwarded mail gets a rewritten sender, in which
//! domain, and for how long bounces to it are taken (see [`crate::srs`]).

use std::time::Duration;

use super::checker::Checker;
use super::file::RawSrs;
use super::{Domain, Srs};

/// How long a rewritten address takes bounces unless the file says otherwise: three weeks
/// covers the queue lifetimes of common MTAs (Postfix and Exim retry for five days) with room.
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(21 * 86_400);

/// The timestamp counts 1024 days before it wraps: a longer age would accept an address again
/// years after it was made. A year is more than any bounce needs.
const MAX_MAX_AGE: Duration = Duration::from_secs(365 * 86_400);

impl Checker<'_> {
    pub(super) fn srs(&mut self, raw: &RawSrs, hostname: &Domain, local: &[Domain]) -> Srs {
        let default_domain = if local.contains(hostname) {
            hostname.clone()
        } else {
            local.first().unwrap_or(hostname).clone()
        };
        let domain = match &raw.domain {
            None => default_domain,
            Some(text) => match self.domain(text, "srs.domain") {
                // With no local domain at all nothing is forwarded and no bounce comes back.
                Some(d) if local.contains(&d) || local.is_empty() => d,
                Some(d) => {
                    let msg = format!(
                        "{d} is not one of local_domains: bounces to the rewritten addresses \
                         must come to us"
                    );
                    self.error(text.span(), "srs.domain", msg);
                    default_domain
                }
                None => default_domain,
            },
        };
        let max_age = self.duration(&raw.max_age, "srs.max_age", DEFAULT_MAX_AGE);
        let max_age = match &raw.max_age {
            Some(text) if max_age < Duration::from_secs(86_400) || max_age > MAX_MAX_AGE => {
                let msg = format!(
                    "{:?} is not between \"1d\" and \"365d\" (the age is counted in days)",
                    text.get_ref()
                );
                self.error(text.span(), "srs.max_age", msg);
                DEFAULT_MAX_AGE
            }
            _ => max_age,
        };
        Srs {
            enabled: raw.enabled.unwrap_or(true),
            domain,
            max_age,
            keys: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{domain, errors, parse};
    use super::*;

    #[test]
    fn defaults_and_values() {
        let c =
            parse("hostname = \"mx.example.org\"\nlocal_domains = [\"example.org\"]\n").unwrap();
        assert!(c.srs.enabled);
        assert_eq!(c.srs.domain, domain("example.org"));
        assert_eq!(c.srs.max_age, DEFAULT_MAX_AGE);
        assert_eq!(c.srs.keys, None);
        let c = parse(
            "hostname = \"mx.example.org\"\nlocal_domains = [\"example.org\", \"mx.example.org\"]\n",
        )
        .unwrap();
        assert_eq!(c.srs.domain, domain("mx.example.org"));
        let text = "local_domains = [\"a.test\", \"b.test\"]\n[srs]\nenabled = false\n\
                    domain = \"b.test\"\nmax_age = \"30d\"\n";
        let c = parse(text).unwrap();
        assert!(!c.srs.enabled);
        assert_eq!(c.srs.domain, domain("b.test"));
        assert_eq!(c.srs.max_age, Duration::from_secs(30 * 86_400));
        // What check-config prints reads back to the same config.
        assert_eq!(parse(&c.to_toml()).unwrap(), c);
    }

    /// The example in docs/config.md says what it does.
    #[test]
    fn docs_example() {
        let block = super::super::docs_tests::doc_block("### Forwarding: `[srs]`");
        let c = parse(&format!("local_domains = [\"example.org\"]\n{block}")).unwrap();
        assert!(c.srs.enabled);
        assert_eq!(c.srs.domain, domain("example.org"));
        assert_eq!(c.srs.max_age, DEFAULT_MAX_AGE);
    }

    #[test]
    fn srs_errors() {
        let table = [
            (
                "local_domains = [\"a.test\"]\n[srs]\ndomain = \"b.test\"\n",
                "mta.toml:3:10: srs.domain: b.test is not one of local_domains: bounces to the \
                 rewritten addresses must come to us",
            ),
            (
                "[srs]\nmax_age = \"400d\"\n",
                "mta.toml:2:11: srs.max_age: \"400d\" is not between \"1d\" and \"365d\" (the \
                 age is counted in days)",
            ),
            (
                "[srs]\nmax_age = \"1h\"\n",
                "mta.toml:2:11: srs.max_age: \"1h\" is not between \"1d\" and \"365d\" (the age \
                 is counted in days)",
            ),
        ];
        for (text, want) in table {
            assert_eq!(errors(text), want, "{text}");
        }
    }
}
