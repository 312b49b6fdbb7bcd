//! The addresses mail would leave from, for a family `outbound.ip` uses that the hostname
//! has no address of: the source address the kernel picks for a route to a public address
//! (a UDP socket connected, nothing sent), when that address is public itself (behind NAT
//! the public address is not this machine's to know).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

use mta_core::config::IpFamily;

/// Public addresses to route towards: a.root-servers.net, which will not move.
const PUBLIC_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 41, 0, 4));
const PUBLIC_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0x503, 0xba3e, 0, 0, 0, 2, 0x30));

/// The source address the kernel picks for a route to `to`; `None` without a route.
pub fn source_for(to: IpAddr) -> Option<IpAddr> {
    let any: SocketAddr = match to {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(any).ok()?;
    socket.connect((to, 25)).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

/// The public source addresses of the families `family` allows, IPv4 first.
pub fn sources(family: IpFamily, public: fn(IpAddr) -> bool) -> Vec<IpAddr> {
    [PUBLIC_V4, PUBLIC_V6]
        .into_iter()
        .filter(|to| family.allows(*to))
        .filter_map(source_for)
        .filter(|ip| public(*ip))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_routes_from_loopback() {
        let v4 = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert_eq!(source_for(v4), Some(v4));
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert_eq!(source_for(v6), Some(v6));
    }

    #[test]
    fn only_the_family_asked_for() {
        let all = |_| true;
        assert!(sources(IpFamily::Ipv4, all).iter().all(IpAddr::is_ipv4));
        assert!(sources(IpFamily::Ipv6, all).iter().all(IpAddr::is_ipv6));
        assert!(sources(IpFamily::Any, |_| false).is_empty());
    }
}
