//! Which addresses of an MX host are tried, in which order (`outbound.ip`), and the way out
//! when a receiver refuses mail sent over IPv6 for its reverse DNS or its IPv6 policy.
//!
//! Order: `any` keeps the resolver's order, every AAAA address then every A address;
//! `prefer-ipv4` and `prefer-ipv6` put that family first; `ipv4` and `ipv6` drop the other
//! family, and a host left without an address is named with the family it lacks.
//!
//! The way out: a reply to mail sent over IPv6 that names reverse DNS or IPv6
//! ([`names_ipv6_trouble`]) puts the host into [`Ipv4Fallback`]: for [`FALLBACK_FOR`] its
//! IPv4 addresses only are tried (when it has any), and the refused recipients are tried
//! again over IPv4 in the same attempt instead of bouncing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mta_core::address::Domain;
use mta_core::config::IpFamily;
use mta_core::metrics::METRICS;
use mta_core::seams::{Outcome, Verdict};
use mta_core::text::escape;
use tracing::warn;

/// How long a host that refused mail over IPv6 gets IPv4 only: long enough that a queue run
/// does not try IPv6 again, short enough that a PTR put right is used the next day.
pub const FALLBACK_FOR: Duration = Duration::from_secs(24 * 60 * 60);
/// Hosts remembered at most; the oldest is forgotten first.
pub const FALLBACK_HOSTS: usize = 4096;

/// `ips` (the resolver's order: AAAA then A) in the order `family` wants, of the family it
/// allows; `ipv4_only` (the host is in [`Ipv4Fallback`]) keeps only IPv4 addresses when the
/// host has any.
///
/// # Errors
/// Why no address is left: `no IPv6 address for mx.example.org`.
pub fn order(
    host: &str,
    ips: Vec<IpAddr>,
    family: IpFamily,
    ipv4_only: bool,
) -> Result<Vec<IpAddr>, String> {
    let (v4, v6): (Vec<IpAddr>, Vec<IpAddr>) = ips.iter().partition(|ip| ip.is_ipv4());
    let missing = |name: &str| format!("no {name} address for {host}");
    let ordered = match family {
        IpFamily::Ipv4 if v4.is_empty() => return Err(missing("IPv4")),
        IpFamily::Ipv6 if v6.is_empty() => return Err(missing("IPv6")),
        IpFamily::Ipv4 => v4,
        IpFamily::Ipv6 => v6,
        IpFamily::Any => ips,
        IpFamily::PreferIpv4 => v4.into_iter().chain(v6).collect(),
        IpFamily::PreferIpv6 => v6.into_iter().chain(v4).collect(),
    };
    let has_v4 = ordered.iter().any(IpAddr::is_ipv4);
    Ok(match ipv4_only && has_v4 {
        true => ordered.into_iter().filter(IpAddr::is_ipv4).collect(),
        false => ordered,
    })
}

/// True when a refusal (`enhanced` status and reply text) names reverse DNS or IPv6: the
/// status `5.7.25` (RFC 7372 §3.3, "reverse DNS validation failed"), or one of the words
/// `PTR`, `rDNS`, `IPv6` or the words `reverse DNS` (any case, any punctuation between), as
/// Gmail's `550-5.7.25 … does not have a PTR record setup` and `421-4.7.0 … IPv6 sending
/// guidelines` do.
pub fn names_ipv6_trouble(enhanced: Option<&str>, text: &str) -> bool {
    if enhanced.is_some_and(|e| e.ends_with(".7.25")) {
        return true;
    }
    let words: Vec<String> = text
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    let single = words
        .iter()
        .any(|w| matches!(w.as_str(), "ptr" | "rdns" | "ipv6"));
    let pair = words.windows(2).any(|p| p[0] == "reverse" && p[1] == "dns");
    single || pair
}

/// Hosts that refused mail over IPv6 for its reverse DNS or IPv6 policy, each until its
/// time is up; at most [`FALLBACK_HOSTS`].
#[derive(Default)]
pub struct Ipv4Fallback {
    until: Mutex<HashMap<String, Instant>>,
}

impl Ipv4Fallback {
    /// Remembers `host` from `now` for [`FALLBACK_FOR`].
    pub fn record(&self, host: &str, now: Instant) {
        let mut map = self.until.lock().expect("fallback lock poisoned");
        map.retain(|_, until| *until > now);
        if map.len() >= FALLBACK_HOSTS && !map.contains_key(host) {
            let oldest = map.iter().min_by_key(|(_, u)| **u).map(|(h, _)| h.clone());
            if let Some(h) = oldest {
                map.remove(&h);
            }
        }
        map.insert(host.to_ascii_lowercase(), now + FALLBACK_FOR);
    }

    /// True while `host` gets IPv4 only.
    pub fn active(&self, host: &str, now: Instant) -> bool {
        let map = self.until.lock().expect("fallback lock poisoned");
        map.get(&host.to_ascii_lowercase())
            .is_some_and(|until| *until > now)
    }
}

/// The address in `at` as the relay writes it (`mx.example.org [2001:db8::1] TLSv1.3 …`).
fn remote_ip(at: &str) -> Option<IpAddr> {
    let (_, rest) = at.split_once('[')?;
    let (ip, _) = rest.split_once(']')?;
    ip.parse().ok()
}

/// The host that refused `outcome` over IPv6 for reverse DNS or IPv6, if it did.
pub fn refused_over_ipv6(outcome: &Outcome) -> Option<&str> {
    let remote = outcome.remote.as_ref()?;
    let refused = outcome.verdict != Verdict::Delivered
        && remote_ip(&remote.at).is_some_and(|ip| ip.is_ipv6())
        && names_ipv6_trouble(outcome.enhanced.as_deref(), &outcome.text);
    refused.then_some(remote.host.as_deref()).flatten()
}

impl super::Relay {
    /// The recipients (indexes into `outcomes`) a host refused over IPv6 for reverse DNS or
    /// IPv6 and that can go again at once over IPv4: the host is remembered in
    /// [`Ipv4Fallback`], and the recipients are tried again when it has an IPv4 address
    /// (else their outcomes stand).
    pub(super) async fn refused_over_ipv6(
        &self,
        domain: &Domain,
        outcomes: &[Outcome],
    ) -> Vec<usize> {
        let mut hosts: Vec<&str> = Vec::new();
        for outcome in outcomes {
            if let Some(host) = refused_over_ipv6(outcome)
                && !hosts.contains(&host)
            {
                hosts.push(host);
            }
        }
        let mut retry = Vec::new();
        for host in hosts {
            self.fallback.record(host, Instant::now());
            let has_v4 = self
                .ips(host)
                .await
                .is_ok_and(|ips| ips.iter().any(IpAddr::is_ipv4));
            let refused: Vec<usize> = (0..outcomes.len())
                .filter(|&i| refused_over_ipv6(&outcomes[i]) == Some(host))
                .collect();
            let reply = refused
                .first()
                .map(|&i| outcomes[i].to_string())
                .unwrap_or_default();
            match has_v4 {
                true => {
                    warn!(%domain, mx = %escape(host), reply = %escape(&reply), recipients = refused.len(), "refused over IPv6 for reverse DNS or IPv6: trying again over IPv4 now, and for this host's next messages");
                    for _ in &refused {
                        METRICS.ipv4_fallback();
                    }
                    retry.extend(refused);
                }
                false => {
                    warn!(%domain, mx = %escape(host), reply = %escape(&reply), "refused over IPv6 for reverse DNS or IPv6, and the host has no IPv4 address");
                }
            }
        }
        retry.sort_unstable();
        retry
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// The reference: the text with every run of other characters made one space,
    /// searched for each pattern between spaces.
    fn reference(enhanced: Option<&str>, text: &str) -> bool {
        let spaced: String = text
            .chars()
            .map(|c| match c.is_ascii_alphanumeric() {
                true => c.to_ascii_lowercase(),
                false => ' ',
            })
            .collect();
        let squeezed = format!(
            " {} ",
            spaced.split_whitespace().collect::<Vec<_>>().join(" ")
        );
        let status = enhanced.is_some_and(|e| e.ends_with(".7.25"));
        status
            || [" ptr ", " rdns ", " ipv6 ", " reverse dns "]
                .iter()
                .any(|p| squeezed.contains(p))
    }

    #[test]
    fn gmail_refusals_name_the_trouble() {
        let ptr = "The IP address sending this message does not have a PTR record setup, \
                   or the corresponding forward DNS entry does not point to the sending IP.";
        assert!(names_ipv6_trouble(Some("5.7.25"), ptr));
        assert!(names_ipv6_trouble(None, ptr));
        let v6 = "Our system has detected that this message does not meet IPv6 sending \
                  guidelines regarding PTR records and authentication.";
        assert!(names_ipv6_trouble(Some("4.7.0"), v6));
        assert!(names_ipv6_trouble(None, "client has no reverse-DNS"));
        assert!(names_ipv6_trouble(None, "rDNS check failed"));
        assert!(!names_ipv6_trouble(
            Some("5.1.1"),
            "No such user (interrupted)"
        ));
        assert!(!names_ipv6_trouble(Some("5.7.1"), "reverse the DNS, ipv66"));
    }

    proptest! {
        #[test]
        fn matcher_agrees_with_reference(
            words in proptest::collection::vec(
                prop_oneof![
                    Just("PTR".to_string()), Just("ptrs".to_string()), Just("rDNS".to_string()),
                    Just("IPv6".to_string()), Just("ipv4".to_string()),
                    Just("reverse".to_string()), Just("DNS".to_string()),
                    Just("7.25".to_string()), Just("5.7.2".to_string()),
                    "[a-zA-Z0-9]{0,6}",
                ],
                0..8,
            ),
            seps in proptest::collection::vec("[ .,;:()\\-_/]{0,3}", 8),
            enhanced in proptest::option::of("[245]\\.[0-9]\\.[0-9]{1,2}"),
        ) {
            let text: String = words.iter().zip(&seps).map(|(w, s)| format!("{w}{s}")).collect();
            prop_assert_eq!(
                names_ipv6_trouble(enhanced.as_deref(), &text),
                reference(enhanced.as_deref(), &text),
                "{:?} {:?}", enhanced, text
            );
        }

        #[test]
        fn order_keeps_what_the_family_allows(
            kinds in proptest::collection::vec(any::<bool>(), 0..6),
            which in 0usize..5,
            ipv4_only in any::<bool>(),
        ) {
            // The resolver's order: AAAA first.
            let mut ips: Vec<IpAddr> = kinds.iter().enumerate().map(|(i, v4)| match v4 {
                true => IpAddr::V4(Ipv4Addr::new(192, 0, 2, i as u8)),
                false => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i as u16)),
            }).collect();
            ips.sort_by_key(IpAddr::is_ipv4);
            let family = [IpFamily::Any, IpFamily::Ipv4, IpFamily::Ipv6,
                          IpFamily::PreferIpv4, IpFamily::PreferIpv6][which];
            let got = order("mx.test", ips.clone(), family, ipv4_only);
            let v4: Vec<IpAddr> = ips.iter().copied().filter(IpAddr::is_ipv4).collect();
            let v6: Vec<IpAddr> = ips.iter().copied().filter(IpAddr::is_ipv6).collect();
            let mut want = match family {
                IpFamily::Ipv4 => v4.clone(),
                IpFamily::Ipv6 => v6.clone(),
                IpFamily::PreferIpv4 => [v4.clone(), v6.clone()].concat(),
                _ => [v6.clone(), v4.clone()].concat(),
            };
            if ipv4_only && want.iter().any(IpAddr::is_ipv4) {
                want.retain(IpAddr::is_ipv4);
            }
            match got {
                Ok(got) => prop_assert_eq!(got, want),
                Err(e) => {
                    prop_assert!(want.is_empty());
                    let name = if family == IpFamily::Ipv4 { "IPv4" } else { "IPv6" };
                    prop_assert_eq!(e, format!("no {name} address for mx.test"));
                }
            }
        }
    }

    #[test]
    fn fallback_is_bounded_and_expires() {
        let f = Ipv4Fallback::default();
        let now = Instant::now();
        for i in 0..FALLBACK_HOSTS + 10 {
            f.record(
                &format!("mx{i}.test"),
                now + Duration::from_millis(i as u64),
            );
        }
        assert_eq!(f.until.lock().unwrap().len(), FALLBACK_HOSTS);
        assert!(!f.active("mx0.test", now), "the oldest is forgotten");
        assert!(f.active("MX4000.test", now));
        assert!(!f.active("mx4000.test", now + FALLBACK_FOR + Duration::from_secs(5)));
    }
}
