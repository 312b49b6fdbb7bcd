//! Where mail for a domain goes (RFC 5321 §5.1): the MX hosts in preference order (equal
//! preferences in random order), the domain itself when it has no MX (implicit MX), nowhere
//! when it publishes a null MX (RFC 7505), and the addresses of each host.
//!
//! Addresses that point inside (loopback, unspecified, link-local, multicast, broadcast,
//! and with `outbound.refuse_private` the private ranges) are not delivered to unless
//! `outbound.allow_internal` lists them ([`refused`]): an MX record or an address literal
//! chosen by a stranger must not make us connect to our own services.
//!
//! Failures are classified once, here: only an answer that says "no such domain" or "no such
//! records" is permanent; SERVFAIL, timeouts, refusals and answers we do not understand are
//! temporary, so DNS trouble never bounces mail.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::dnssec::TrustAnchors;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::{ResolverBuilder, TokioResolver};
use mta_core::address::Domain;
use mta_core::config::IpFamily;
use rand::seq::SliceRandom;

/// One MX host, in the order to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxHost {
    /// Host name without the trailing dot (also the name to verify in its certificate).
    pub name: String,
    /// MX preference (0 for an implicit MX).
    pub preference: u16,
}

/// The routing answer for a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Hosts to try, best first.
    Hosts(Vec<MxHost>),
    /// RFC 7505 null MX: the domain accepts no mail.
    NullMx,
}

/// A DNS failure, already classified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsFailure {
    /// The name does not exist or has no usable records: bounce.
    #[error("{0}")]
    Permanent(String),
    /// Anything else: try again later.
    #[error("{0}")]
    Temporary(String),
}

/// Builds the resolver from `[dns] nameservers` (empty: the system's resolv.conf).
///
/// # Errors
/// When the system configuration cannot be read.
pub fn resolver(nameservers: &[SocketAddr], family: IpFamily) -> Result<TokioResolver, String> {
    builder(nameservers, family)?
        .build()
        .map_err(|e| format!("resolver: {e}"))
}

/// [`resolver`] validating DNSSEC from `anchors` (every answer carries its proof).
///
/// # Errors
/// When the system configuration cannot be read.
pub fn validating_resolver(
    nameservers: &[SocketAddr],
    family: IpFamily,
    anchors: Arc<TrustAnchors>,
) -> Result<TokioResolver, String> {
    builder(nameservers, family)?
        .with_trust_anchor(anchors)
        .build()
        .map_err(|e| format!("validating resolver: {e}"))
}

fn builder(
    nameservers: &[SocketAddr],
    family: IpFamily,
) -> Result<ResolverBuilder<TokioRuntimeProvider>, String> {
    let mut opts = ResolverOpts::default();
    opts.timeout = Duration::from_secs(4);
    opts.attempts = 2;
    opts.ip_strategy = match family {
        IpFamily::Any | IpFamily::PreferIpv4 | IpFamily::PreferIpv6 => {
            LookupIpStrategy::Ipv6AndIpv4
        }
        IpFamily::Ipv4 => LookupIpStrategy::Ipv4Only,
        IpFamily::Ipv6 => LookupIpStrategy::Ipv6Only,
    };
    let builder = if nameservers.is_empty() {
        TokioResolver::builder_tokio().map_err(|e| format!("system resolver: {e}"))?
    } else {
        let servers = nameservers
            .iter()
            .map(|addr| {
                let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                for c in &mut ns.connections {
                    c.port = addr.port();
                }
                ns
            })
            .collect();
        TokioResolver::builder_with_config(
            ResolverConfig::from_parts(None, vec![], servers),
            TokioRuntimeProvider::default(),
        )
    };
    Ok(builder.with_options(opts))
}

fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

/// Looks up where mail for `domain` goes, and whether the host names can be trusted for
/// DANE: a secure MX RRset, or no MX at all (the implicit MX is the domain itself). With a
/// non-validating resolver nothing is secure.
///
/// # Errors
/// [`DnsFailure`], permanent only for NXDOMAIN; an answer that fails DNSSEC validation is
/// temporary.
pub async fn route(resolver: &TokioResolver, domain: &Domain) -> Result<(Route, bool), DnsFailure> {
    match resolver.mx_lookup(fqdn(domain.as_str())).await {
        Ok(lookup) => {
            let security = super::dns::security(lookup.answers(), RecordType::MX);
            if security == super::dns::Security::Bogus {
                return Err(DnsFailure::Temporary(format!(
                    "the MX answer for {domain} fails DNSSEC validation (bogus)"
                )));
            }
            let secure = security == super::dns::Security::Secure;
            let records: Vec<(u16, hickory_resolver::proto::rr::Name)> = lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::MX(mx) => Some((mx.preference, mx.exchange.clone())),
                    _ => None,
                })
                .collect();
            let implicit = records.is_empty();
            Ok((route_from(domain, records), secure || implicit))
        }
        // NODATA: the domain exists but has no MX; RFC 5321 §5.1: use the domain itself.
        Err(NetError::Dns(DnsError::NoRecordsFound(nr)))
            if nr.response_code == ResponseCode::NoError =>
        {
            Ok((implicit(domain), true))
        }
        Err(e) if super::dns::is_bogus(&e) => Err(DnsFailure::Temporary(format!(
            "the MX answer for {domain} fails DNSSEC validation (bogus)"
        ))),
        Err(e) => Err(classify(&e, "MX", domain.as_str())),
    }
}

/// The route an MX answer gives: a null MX (RFC 7505), the domain itself when there is no
/// MX (implicit MX), or the hosts in order.
pub fn route_from(domain: &Domain, records: Vec<(u16, Name)>) -> Route {
    if records.iter().any(|(_, name)| name.is_root()) {
        return Route::NullMx;
    }
    if records.is_empty() {
        return implicit(domain);
    }
    let hosts = records
        .into_iter()
        .map(|(preference, name)| MxHost {
            name: name.to_ascii().trim_end_matches('.').to_ascii_lowercase(),
            preference,
        })
        .collect();
    Route::Hosts(order(hosts))
}

fn implicit(domain: &Domain) -> Route {
    Route::Hosts(vec![MxHost {
        name: domain.as_str().to_string(),
        preference: 0,
    }])
}

/// Sorts by preference and shuffles hosts of equal preference (RFC 5321 §5.1).
fn order(mut hosts: Vec<MxHost>) -> Vec<MxHost> {
    hosts.shuffle(&mut rand::rng());
    hosts.sort_by_key(|h| h.preference);
    hosts
}

/// The addresses of one host, IPv6 and IPv4 as the configured family allows.
///
/// # Errors
/// [`DnsFailure`]: permanent when the host does not exist or has no address.
pub async fn addresses(resolver: &TokioResolver, host: &str) -> Result<Vec<IpAddr>, DnsFailure> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    match resolver.lookup_ip(fqdn(host)).await {
        Ok(ips) => Ok(ips.iter().collect()),
        Err(e) => Err(classify(&e, "address", host)),
    }
}

/// The kind of internal address `ip` is, if it is one: never connected to unless allowed.
/// An IPv6 address that stands for an IPv4 one ([`embedded_v4`]) is judged as that IPv4
/// address.
pub fn internal(ip: IpAddr, refuse_private: bool) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => internal_v4(v4, refuse_private),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => internal_v4(v4, refuse_private),
            None => internal_v6(v6, refuse_private),
        },
    }
}

/// The IPv4 address an IPv6 address reaches: IPv4-mapped (`::ffff:0:0/96`, RFC 4291
/// §2.5.5.2), and the well-known NAT64 prefix (`64:ff9b::/96`, RFC 6052 §2.1), which a
/// translator turns into a connection to the IPv4 address in its last 32 bits.
pub fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    const MAPPED: u128 = 0xffff;
    const NAT64: u128 = 0x0064_ff9b_0000_0000_0000_0000;
    let n = u128::from(v6);
    matches!(n >> 32, MAPPED | NAT64).then(|| Ipv4Addr::from(n as u32))
}

fn internal_v4(v4: Ipv4Addr, refuse_private: bool) -> Option<&'static str> {
    let [a, b, c, _] = v4.octets();
    if v4.is_loopback() {
        Some("loopback")
    } else if a == 0 {
        // RFC 791 / RFC 1122 §3.2.1.3: "this network"; 0.0.0.0 reaches the host itself.
        Some("unspecified")
    } else if v4.is_link_local() {
        Some("link-local")
    } else if v4.is_multicast() {
        Some("multicast")
    } else if a >= 240 {
        // RFC 1112 §4: reserved, and 255.255.255.255 the limited broadcast.
        Some("broadcast or reserved")
    } else if (a, b, c) == (192, 0, 0) || (a, b, c) == (192, 88, 99) {
        // RFC 6890: IETF protocol assignments; RFC 7526: the deprecated 6to4 relay anycast.
        Some("broadcast or reserved")
    } else if matches!((a, b, c), (192, 0, 2) | (198, 51, 100) | (203, 0, 113)) {
        // RFC 5737: TEST-NET-1, -2 and -3.
        Some("documentation")
    } else if a == 198 && (b & 0xfe) == 18 {
        // RFC 2544: 198.18.0.0/15.
        Some("benchmarking")
    } else if refuse_private && (v4.is_private() || (a == 100 && (b & 0xc0) == 64)) {
        // RFC 1918 and the RFC 6598 shared address space.
        Some("private")
    } else {
        None
    }
}

/// IPv6 blocks of the IANA special-purpose registry (RFC 6890) that no mail server on the
/// Internet has, besides loopback, link-local and multicast. Addresses that tunnel to an
/// IPv4 address we cannot judge are refused whole: 6to4 (`2002::/16`, its relays
/// deprecated by RFC 7526) and Teredo (`2001::/32`) reach the embedded address through a
/// relay we do not choose, and the local-use NAT64 prefix (`64:ff9b:1::/48`, RFC 8215)
/// places the IPv4 address where its operator decided.
fn internal_v6(v6: Ipv6Addr, refuse_private: bool) -> Option<&'static str> {
    let s = v6.segments();
    if v6.is_loopback() {
        Some("loopback")
    } else if v6.is_unspecified() {
        Some("unspecified")
    } else if s[..6] == [0; 6] {
        // RFC 4291 §2.5.5.1: IPv4-compatible, deprecated.
        Some("IPv4-compatible (deprecated)")
    } else if s[..3] == [0x64, 0xff9b, 1] {
        Some("local-use NAT64")
    } else if s[..4] == [0x100, 0, 0, 0] {
        // RFC 6666: discard-only.
        Some("discard-only")
    } else if s[..2] == [0x2001, 0] {
        // RFC 4380.
        Some("Teredo")
    } else if s[..3] == [0x2001, 2, 0] {
        // RFC 5180: 2001:2::/48.
        Some("benchmarking")
    } else if s[0] == 0x2001 && matches!(s[1] & 0xfff0, 0x10 | 0x20) {
        // RFC 4843 and RFC 7343: ORCHID, 2001:10::/28 and 2001:20::/28 (identifiers, not
        // locators).
        Some("ORCHID")
    } else if s[..2] == [0x2001, 0xdb8] || (s[0] == 0x3fff && s[1] & 0xf000 == 0) {
        // RFC 3849 and RFC 9637: 2001:db8::/32 and 3fff::/20.
        Some("documentation")
    } else if s[0] == 0x2002 {
        Some("6to4")
    } else if s[0] == 0x5f00 {
        // RFC 9602: segment routing (SRv6) identifiers.
        Some("SRv6")
    } else if (s[0] & 0xffc0) == 0xfe80 {
        Some("link-local")
    } else if (s[0] & 0xffc0) == 0xfec0 {
        // RFC 3879: site-local, deprecated; still routed inside some networks.
        Some("site-local (deprecated)")
    } else if v6.is_multicast() {
        Some("multicast")
    } else if refuse_private && (s[0] & 0xfe00) == 0xfc00 {
        // RFC 4193 unique local addresses.
        Some("private")
    } else {
        None
    }
}

/// Why mail must not go to `ip`: an [`internal`] address that `allow` does not list.
pub fn refused(ip: IpAddr, allow: &[ipnet::IpNet], refuse_private: bool) -> Option<&'static str> {
    let kind = internal(ip, refuse_private)?;
    let mapped = match ip {
        IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4),
        IpAddr::V4(_) => None,
    };
    let allowed = allow
        .iter()
        .any(|net| net.contains(&ip) || mapped.is_some_and(|m| net.contains(&m)));
    (!allowed).then_some(kind)
}

fn classify(e: &NetError, what: &str, name: &str) -> DnsFailure {
    match e {
        NetError::Dns(DnsError::NoRecordsFound(nr))
            if nr.response_code == ResponseCode::NXDomain =>
        {
            DnsFailure::Permanent(format!("{name} does not exist (NXDOMAIN)"))
        }
        NetError::Dns(DnsError::NoRecordsFound(_)) => {
            DnsFailure::Permanent(format!("{name} has no {what} record"))
        }
        NetError::Timeout => {
            DnsFailure::Temporary(format!("DNS {what} lookup for {name} timed out"))
        }
        other => DnsFailure::Temporary(format!("DNS {what} lookup for {name} failed: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// The reference: every internal block as (network, prefix length, kind, private only).
    fn model(ip: IpAddr, refuse_private: bool) -> Option<&'static str> {
        const V4: &[(u32, u32, &str, bool)] = &[
            (0x7f00_0000, 8, "loopback", false),
            (0x0000_0000, 8, "unspecified", false),
            (0xa9fe_0000, 16, "link-local", false),
            (0xe000_0000, 4, "multicast", false),
            (0xf000_0000, 4, "broadcast or reserved", false),
            (0xc000_0000, 24, "broadcast or reserved", false),
            (0xc058_6300, 24, "broadcast or reserved", false),
            (0xc000_0200, 24, "documentation", false),
            (0xc633_6400, 24, "documentation", false),
            (0xcb00_7100, 24, "documentation", false),
            (0xc612_0000, 15, "benchmarking", false),
            (0x0a00_0000, 8, "private", true),
            (0xac10_0000, 12, "private", true),
            (0xc0a8_0000, 16, "private", true),
            (0x6440_0000, 10, "private", true),
        ];
        const V6: &[(u128, u32, &str, bool)] = &[
            (1, 128, "loopback", false),
            (0, 128, "unspecified", false),
            (0, 96, "IPv4-compatible (deprecated)", false),
            (0x0064_ff9b_0001 << 80, 48, "local-use NAT64", false),
            (0x0100 << 112, 64, "discard-only", false),
            (0x2001 << 112, 32, "Teredo", false),
            (0x2001_0002 << 96, 48, "benchmarking", false),
            (0x2001_0010 << 96, 28, "ORCHID", false),
            (0x2001_0020 << 96, 28, "ORCHID", false),
            (0x2001_0db8 << 96, 32, "documentation", false),
            (0x3fff << 112, 20, "documentation", false),
            (0x2002 << 112, 16, "6to4", false),
            (0x5f00 << 112, 16, "SRv6", false),
            (0xfe80 << 112, 10, "link-local", false),
            (0xfec0 << 112, 10, "site-local (deprecated)", false),
            (0xff00 << 112, 8, "multicast", false),
            (0xfc00 << 112, 7, "private", true),
        ];
        // IPv4-mapped and NAT64 (64:ff9b::/96) carry an IPv4 address in the last 32 bits.
        let v4 = match ip {
            IpAddr::V4(v4) => Some(u32::from(v4)),
            IpAddr::V6(v6) => {
                let n = u128::from(v6);
                (n >> 32 == 0xffff || n >> 32 == 0x64_ff9b << 64).then_some(n as u32)
            }
        };
        match v4 {
            Some(n) => V4
                .iter()
                .find(|(net, len, _, private)| {
                    n >> (32 - len) == net >> (32 - len) && (!private || refuse_private)
                })
                .map(|b| b.2),
            None => {
                let IpAddr::V6(v6) = ip else { unreachable!() };
                let n = u128::from(v6);
                V6.iter()
                    .find(|(net, len, _, private)| {
                        (*len == 128 && n == *net)
                            || (*len < 128 && n >> (128 - len) == net >> (128 - len))
                                && (!private || refuse_private)
                    })
                    .map(|b| b.2)
            }
        }
    }

    /// Starts of the IPv6 blocks and their neighbours, to flip low bits of.
    const V6_EDGES: &[u128] = &[
        0,
        1,
        0xffff << 32,
        0x0064_ff9b << 96,
        0x0064_ff9b_0001 << 80,
        0x0100 << 112,
        0x2001 << 112,
        0x2001_0002 << 96,
        0x2001_0003 << 96,
        0x2001_0010 << 96,
        0x2001_0020 << 96,
        0x2001_0030 << 96,
        0x2001_0db8 << 96,
        0x3fff << 112,
        0x2002 << 112,
        0x5f00 << 112,
        0xfe80 << 112,
        0xfec0 << 112,
        0xff00 << 112,
        0xfc00 << 112,
    ];

    fn interesting_v4() -> impl Strategy<Value = u32> {
        prop_oneof![
            any::<u32>(),
            // Near the edges of the blocks.
            prop::sample::select(vec![
                0x7f00_0000u32,
                0x0000_0000,
                0xa9fe_0000,
                0xe000_0000,
                0xf000_0000,
                0x0a00_0000,
                0xac10_0000,
                0xc0a8_0000,
                0x6440_0000,
                0xc000_0000,
                0xc058_6300,
                0xc000_0200,
                0xc633_6400,
                0xcb00_7100,
                0xc612_0000,
            ])
            .prop_flat_map(|base| (Just(base), -70_000i64..70_000))
            .prop_map(|(base, d)| (i64::from(base) + d).clamp(0, i64::from(u32::MAX)) as u32),
        ]
    }

    proptest! {
        #[test]
        fn internal_matches_the_block_table(n in interesting_v4(), private: bool) {
            let ip = IpAddr::V4(Ipv4Addr::from(n));
            prop_assert_eq!(internal(ip, private), model(ip, private));
            let mapped = IpAddr::V6(Ipv4Addr::from(n).to_ipv6_mapped());
            prop_assert_eq!(internal(mapped, private), model(mapped, private));
            let nat64 = IpAddr::V6(Ipv6Addr::from((0x64_ff9b_u128 << 96) | u128::from(n)));
            prop_assert_eq!(internal(nat64, private), model(nat64, private));
        }

        #[test]
        fn internal_v6_matches_the_block_table(
            n in prop_oneof![
                any::<u128>(),
                (prop::sample::select(V6_EDGES.to_vec()), any::<u128>(), 0u32..128)
                    .prop_map(|(b, d, shift)| b ^ (d >> shift)),
            ],
            private: bool,
        ) {
            let ip = IpAddr::V6(Ipv6Addr::from(n));
            prop_assert_eq!(internal(ip, private), model(ip, private));
        }

        #[test]
        fn allowed_blocks_are_delivered_to(n: u32, len in 0u8..=32, private: bool) {
            let ip = IpAddr::V4(Ipv4Addr::from(n));
            let net = ipnet::IpNet::new(ip, len).unwrap().trunc();
            prop_assert_eq!(refused(ip, &[net], private), None);
            prop_assert_eq!(refused(ip, &[], private), model(ip, private));
        }
    }

    #[test]
    fn addresses_that_tunnel_or_translate_are_judged() {
        let kind = |ip: &str| internal(ip.parse().unwrap(), false);
        // NAT64: the IPv4 address in the last 32 bits decides.
        assert_eq!(kind("64:ff9b::7f00:1"), Some("loopback"));
        assert_eq!(kind("64:ff9b::5db8:d822"), None);
        // Refused whole, whatever they embed.
        for (ip, why) in [
            ("::5db8:d822", "IPv4-compatible (deprecated)"),
            ("64:ff9b:1::5db8:d822", "local-use NAT64"),
            ("2002:5db8:d822::1", "6to4"),
            ("2001:0:5db8:d822::1", "Teredo"),
            ("2001:db8::25", "documentation"),
            ("100::1", "discard-only"),
            ("fec0::1", "site-local (deprecated)"),
        ] {
            assert_eq!(kind(ip), Some(why), "{ip}");
        }
        // Allowing the IPv4 block allows its NAT64 form.
        let allow = ["127.0.0.0/8".parse().unwrap()];
        assert_eq!(
            refused("64:ff9b::7f00:1".parse().unwrap(), &allow, false),
            None
        );
    }

    fn host(name: &str, preference: u16) -> MxHost {
        MxHost {
            name: name.into(),
            preference,
        }
    }

    #[test]
    fn preference_order_with_equal_preferences_shuffled() {
        let input = vec![host("c", 20), host("a", 10), host("b", 10), host("d", 5)];
        let mut seen_first_of_equal = std::collections::HashSet::new();
        for _ in 0..200 {
            let out = order(input.clone());
            let prefs: Vec<u16> = out.iter().map(|h| h.preference).collect();
            assert_eq!(prefs, [5, 10, 10, 20]);
            assert_eq!(out[0].name, "d");
            seen_first_of_equal.insert(out[1].name.clone());
        }
        assert_eq!(
            seen_first_of_equal.len(),
            2,
            "equal preferences are shuffled"
        );
    }
}
