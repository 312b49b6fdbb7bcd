//! `[[inbound.dnsbl]]`: DNS blocklists (RFC 5782) the `smtp` listener asks about each
//! client, and `[inbound] dnsbl_threshold` and `dnsbl_action`, what is done when the lists
//! that name a client weigh enough. Only the values are checked here; the lookups are in
//! `mta-smtp`.

use ipnet::Ipv4Net;

use super::checker::Checker;
use super::file::{RawDnsbl, RawInbound};
use crate::address::Domain;

/// The blocklists and what a listing does. No lists: nothing is asked.
#[derive(Debug, Clone, PartialEq)]
pub struct Dnsbl {
    /// The lists, in the file's order.
    pub lists: Vec<DnsblList>,
    /// A client is acted on when the weights of the lists that name it add up to this or
    /// more. Default 1.
    pub threshold: u32,
    /// What is done then. Default [`DnsblAction::Reject`].
    pub action: DnsblAction,
}

impl Default for Dnsbl {
    fn default() -> Dnsbl {
        Dnsbl {
            lists: Vec::new(),
            threshold: 1,
            action: DnsblAction::Reject,
        }
    }
}

/// One `[[inbound.dnsbl]]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsblList {
    /// The list's DNS zone, e.g. `zen.spamhaus.org`.
    pub zone: Domain,
    /// What a listing on this list counts towards the threshold. Default 1.
    pub weight: u32,
    /// The answers that count as a listing; empty: any answer in 127.0.0.0/8 (RFC 5782
    /// §2.1) that is not a list's refusal code.
    pub returns: Vec<Ipv4Net>,
}

/// `dnsbl_action`: what a client listed enough gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsblAction {
    /// RCPT refused with `554 5.7.1` naming the lists (postmaster excepted).
    Reject,
    /// The message is taken with an `X-DNSBL:` field naming the lists.
    Mark,
}

impl DnsblAction {
    /// The name in the config file.
    pub fn name(self) -> &'static str {
        match self {
            DnsblAction::Reject => "reject",
            DnsblAction::Mark => "mark",
        }
    }
}

/// The largest `weight` and `dnsbl_threshold`.
const MAX_WEIGHT: i64 = 1000;

impl Checker<'_> {
    /// `[[inbound.dnsbl]]` and the two `[inbound]` keys that go with it; a table with an
    /// error is left out (the error is reported with the others, so the config does not load).
    pub(super) fn dnsbl(&mut self, raw: &RawInbound) -> Dnsbl {
        let lists = raw
            .dnsbl
            .as_ref()
            .map(|l| l.0.iter().filter_map(|d| self.dnsbl_list(d)).collect())
            .unwrap_or_default();
        let threshold = raw
            .dnsbl_threshold
            .as_ref()
            .and_then(|n| self.int(n, "inbound.dnsbl_threshold", 1, MAX_WEIGHT, None))
            .map_or(1, |n| n as u32);
        const CHOICES: [DnsblAction; 2] = [DnsblAction::Reject, DnsblAction::Mark];
        let action = raw
            .dnsbl_action
            .as_ref()
            .and_then(|s| self.choice(s, "inbound.dnsbl_action", &CHOICES, DnsblAction::name))
            .unwrap_or(DnsblAction::Reject);
        Dnsbl {
            lists,
            threshold,
            action,
        }
    }

    fn dnsbl_list(&mut self, raw: &RawDnsbl) -> Option<DnsblList> {
        const KEY: &str = "inbound.dnsbl";
        let Some(zone) = &raw.zone else {
            self.error(0..0, "inbound.dnsbl.zone", "is required".to_string());
            return None;
        };
        let zone = self.domain(zone, &format!("{KEY}.zone"));
        let weight = match &raw.weight {
            None => Some(1),
            Some(n) => self
                .int(n, &format!("{KEY}.weight"), 1, MAX_WEIGHT, None)
                .map(|n| n as u32),
        };
        let mut returns = Vec::new();
        let mut returns_ok = true;
        for text in raw.returns.iter().flat_map(|l| l.get_ref()) {
            match parse_return(text.get_ref()) {
                Ok(net) => returns.push(net),
                Err(msg) => {
                    self.error(text.span(), &format!("{KEY}.returns"), msg);
                    returns_ok = false;
                }
            }
        }
        Some(DnsblList {
            zone: zone?,
            weight: weight?,
            returns,
        })
        .filter(|_| returns_ok)
    }
}

/// One `returns` entry: an IPv4 address or a CIDR block inside 127.0.0.0/8, where list
/// answers are (RFC 5782 §2.1).
fn parse_return(text: &str) -> Result<Ipv4Net, String> {
    let net = if text.contains('/') {
        text.parse::<Ipv4Net>().ok()
    } else {
        text.parse::<std::net::Ipv4Addr>().ok().map(Ipv4Net::from)
    };
    let Some(net) = net else {
        return Err(format!("{text:?} is not an IPv4 address or block"));
    };
    if net.trunc() != net {
        return Err(format!("{text:?} has bits set past its prefix length"));
    }
    if net.prefix_len() < 8 || net.addr().octets()[0] != 127 {
        return Err(format!("{text:?} is not inside 127.0.0.0/8"));
    }
    Ok(net)
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::super::tests::{errors, parse};
    use super::*;

    #[test]
    fn lists_in_order_with_defaults() {
        let c = parse(
            "[inbound]\ndnsbl_threshold = 2\ndnsbl_action = \"mark\"\n\
             [[inbound.dnsbl]]\nzone = \"zen.test\"\n\
             [[inbound.dnsbl]]\nzone = \"b.test\"\nweight = 2\n\
             returns = [\"127.0.0.2\", \"127.0.0.4/30\"]\n",
        )
        .unwrap();
        let d = &c.inbound.dnsbl;
        assert_eq!((d.threshold, d.action), (2, DnsblAction::Mark));
        assert_eq!(d.lists.len(), 2);
        assert_eq!(d.lists[0].zone.to_string(), "zen.test");
        assert_eq!((d.lists[0].weight, d.lists[0].returns.len()), (1, 0));
        assert_eq!(d.lists[1].weight, 2);
        assert_eq!(
            d.lists[1].returns,
            vec![
                "127.0.0.2/32".parse::<Ipv4Net>().unwrap(),
                "127.0.0.4/30".parse().unwrap()
            ]
        );
        // Written out and read back, the same.
        let again = Config::from_toml("mta.toml", &c.to_toml(), "buildhost").unwrap();
        assert_eq!(again.inbound.dnsbl, c.inbound.dnsbl);
        // None configured: none asked, and the defaults.
        assert_eq!(parse("").unwrap().inbound.dnsbl, Dnsbl::default());
    }

    #[test]
    fn dnsbl_errors() {
        for (text, want) in [
            ("weight = 1", "inbound.dnsbl.zone: is required"),
            ("zone = \"not a zone\"", "is not a domain name"),
            ("zone = \"a.test\"\nweight = 0", "below the minimum of 1"),
            (
                "zone = \"a.test\"\nreturns = [\"10.0.0.1\"]",
                "not inside 127.0.0.0/8",
            ),
            (
                "zone = \"a.test\"\nreturns = [\"127.0.0.5/30\"]",
                "past its prefix",
            ),
            (
                "zone = \"a.test\"\nreturns = [\"::1\"]",
                "not an IPv4 address",
            ),
            ("zone = \"a.test\"\naction = \"reject\"", "unknown field"),
        ] {
            let e = errors(&format!("[[inbound.dnsbl]]\n{text}\n"));
            assert!(e.contains(want), "{text}: {e}");
        }
        let e = errors("[inbound]\ndnsbl_action = \"drop\"\n");
        assert!(e.contains("\"drop\" is not one of reject, mark"), "{e}");
        let e = errors("[inbound]\ndnsbl_threshold = 0\n");
        assert!(e.contains("below the minimum of 1"), "{e}");
    }
}
