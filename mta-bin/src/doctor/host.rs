//! The checks of this host rather than of a mail domain: the hostname (our EHLO name)
//! resolves, reverse DNS of each outbound address names a host that resolves back to it
//! (forward-confirmed reverse DNS, which large receivers require), ideally the hostname, and
//! DNSSEC validation works through the resolver (else outbound mail gets no DANE).

use std::net::IpAddr;

use mta_core::config::{Config, IpFamily};
use mta_smtp::relay::dane::Dnssec;

use super::checks::unchecked;
use super::dns::{Answer, reverse_name};
use super::report::{Status, Verdict};
use super::{Ctx, Outbound};

/// The `address` verdict: the hostname's A/AAAA records, from `answer`, and whether they
/// include the outbound addresses given with `--ip`.
pub fn address(hostname: &str, answer: &Answer<IpAddr>, given: &[IpAddr]) -> Verdict {
    let v = |status, detail| Verdict::new("address", hostname, status, detail);
    if hostname == "localhost" || !hostname.contains('.') {
        return v(
            Status::Fail,
            format!("{hostname} is not a public name: set hostname in the config"),
        );
    }
    let ips = match answer {
        Ok(ips) => ips,
        Err(e) => return unchecked("address", hostname, e),
    };
    if ips.is_empty() {
        let example = given.first().map_or_else(
            || "<your public IPv4 address>".to_string(),
            IpAddr::to_string,
        );
        let kind = if given.first().is_some_and(IpAddr::is_ipv6) {
            "AAAA"
        } else {
            "A"
        };
        return v(Status::Fail, format!("{hostname} has no A or AAAA record"))
            .publish(format!("{hostname}. IN {kind} {example}"));
    }
    let list: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
    let private: Vec<String> = ips
        .iter()
        .chain(given)
        .filter(|ip| !is_public(**ip))
        .map(IpAddr::to_string)
        .collect();
    if !private.is_empty() {
        return v(
            Status::Warn,
            format!(
                "{hostname} has {}; {} cannot be reached from the internet (behind NAT, \
                 publish the public address and give it with --ip)",
                list.join(", "),
                private.join(", ")
            ),
        );
    }
    let elsewhere: Vec<String> = given
        .iter()
        .filter(|ip| !ips.contains(ip))
        .map(IpAddr::to_string)
        .collect();
    if elsewhere.is_empty() {
        v(Status::Ok, format!("{hostname} has {}", list.join(", ")))
    } else {
        v(
            Status::Warn,
            format!(
                "{hostname} has {}, not the outbound {}: receivers that check the EHLO name \
                 see a mismatch",
                list.join(", "),
                elsewhere.join(", ")
            ),
        )
    }
}

/// False for loopback, private (RFC 1918, RFC 6598 shared, RFC 4193 unique local) and
/// link-local addresses, which no other mail server can see mail come from.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            let shared = a.octets()[0] == 100 && (a.octets()[1] & 0xc0) == 64;
            !(a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_broadcast()
                || shared)
        }
        IpAddr::V6(a) => {
            !(a.is_loopback()
                || a.is_unspecified()
                || a.is_unique_local()
                || a.is_unicast_link_local())
        }
    }
}

/// The `ptr` verdicts, one per outbound address.
pub async fn ptr(ctx: &Ctx<'_>) -> Vec<Verdict> {
    let host = ctx.hostname.as_str();
    match &ctx.outbound {
        Outbound::Known(ips) => {
            let mut out = Vec::new();
            for ip in ips {
                out.push(ptr_of(ctx, *ip).await);
            }
            out
        }
        Outbound::Smarthost(relay) => vec![Verdict::new(
            "ptr",
            host,
            Status::Info,
            format!(
                "not checked: mail leaves through the smarthost {relay} (give its addresses \
                 with --ip)"
            ),
        )],
        Outbound::Unknown(why) => vec![Verdict::new(
            "ptr",
            host,
            Status::Warn,
            format!("not checked: {why}"),
        )],
    }
}

async fn ptr_of(ctx: &Ctx<'_>, ip: IpAddr) -> Verdict {
    let host = ctx.hostname.as_str();
    let v = |status, detail| Verdict::new("ptr", host, status, detail);
    let publish = format!(
        "{} IN PTR {host}.   ; set by whoever owns {ip} (your hosting provider)",
        reverse_name(ip)
    );
    // Reverse DNS of a loopback or private address is whatever the local resolver says
    // (often the hostname from /etc/hosts); no receiver ever sees mail come from it.
    if !is_public(ip) {
        return v(
            Status::Warn,
            format!(
                "not checked: {ip} is a loopback or private address, which other mail servers \
                 never see; give the public address mail leaves from with --ip"
            ),
        );
    }
    let names = match ctx.dns.ptr(ip).await {
        Ok(names) => names,
        Err(e) => return unchecked("ptr", host, &e),
    };
    let family = family_hint(ctx, ip);
    if names.is_empty() {
        return v(
            Status::Fail,
            format!(
                "{}{ip} has no PTR record (reverse DNS): many receivers refuse its mail{family}",
                family_name(ip)
            ),
        )
        .publish(publish);
    }
    let mut confirmed = Vec::new();
    for name in &names {
        match ctx.dns.ips(name).await {
            Ok(ips) if ips.contains(&ip) => confirmed.push(name.as_str()),
            Ok(_) => {}
            Err(e) => return unchecked("ptr", host, &e),
        }
    }
    if confirmed.iter().any(|n| n.eq_ignore_ascii_case(host)) {
        v(
            Status::Ok,
            format!("{ip} → {host}, which resolves back to {ip}"),
        )
    } else if let Some(name) = confirmed.first() {
        v(
            Status::Warn,
            format!("{ip} → {name} (resolves back), not the hostname {host} mta gives in EHLO"),
        )
        .publish(publish)
    } else {
        v(
            Status::Fail,
            format!(
                "{}{ip} → {}, which does not resolve back to {ip} (no forward \
                 confirmation){family}",
                family_name(ip),
                names.join(", ")
            ),
        )
        .publish(publish)
    }
}

/// `IPv4 address ` or `IPv6 address `, to start a verdict about `ip`.
fn family_name(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => "IPv4 address ",
        IpAddr::V6(_) => "IPv6 address ",
    }
}

/// The way out when `ip` has no forward-confirmed PTR and mail also leaves from an address
/// of the other family: turn this family off.
fn family_hint(ctx: &Ctx<'_>, ip: IpAddr) -> String {
    let other = match ip {
        IpAddr::V4(_) => IpFamily::Ipv6,
        IpAddr::V6(_) => IpFamily::Ipv4,
    };
    let both = !matches!(ctx.config.outbound.ip, IpFamily::Ipv4 | IpFamily::Ipv6)
        && matches!(&ctx.outbound, Outbound::Known(ips) if ips.iter().any(|i| other.allows(*i)));
    match both {
        true => format!(": set outbound.ip = \"{}\" or add a PTR", other.name()),
        false => String::new(),
    }
}

/// The `dnssec` verdict: whether outbound DANE can work, which needs DNSSEC validation
/// through the configured resolver (`docs/tls.md`, "DANE in detail").
pub async fn dnssec(config: &Config, hostname: &str) -> Verdict {
    let v = |status, detail: String| Verdict::new("dnssec", hostname, status, detail);
    if !config.outbound.dane {
        return v(
            Status::Info,
            "outbound DANE is off (outbound.dane = false)".into(),
        );
    }
    if config.outbound.relay.is_some() {
        return v(
            Status::Info,
            "outbound mail goes to the smarthost (outbound.relay): DANE does not apply".into(),
        );
    }
    let dnssec = match Dnssec::new(config) {
        Ok(d) => d,
        Err(e) => return v(Status::Fail, e),
    };
    match dnssec.probe().await {
        Ok(()) => v(
            Status::Ok,
            "DNSSEC validation works through the resolver: outbound mail uses DANE where \
             the receiving domain publishes TLSA records"
                .into(),
        ),
        Err(why) => v(
            Status::Warn,
            format!(
                "DNSSEC validation does not work through the resolver ({why}): outbound mail \
                 gets no DANE; use a resolver that passes DNSSEC records along (docs/tls.md)"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_verdicts() {
        let ip: IpAddr = "192.0.2.10".parse().unwrap();
        let other: IpAddr = "2001:db8::99".parse().unwrap();
        let ok = address("mx.example.org", &Ok(vec![ip]), &[]);
        assert_eq!(ok.status, Status::Ok);
        assert_eq!(ok.detail, "mx.example.org has 192.0.2.10");
        assert_eq!(
            address("mx.example.org", &Ok(vec![ip]), &[other]).status,
            Status::Warn
        );
        let none = address("mx.example.org", &Ok(vec![]), &[other]);
        assert_eq!(none.status, Status::Fail);
        assert_eq!(none.record.unwrap(), "mx.example.org. IN AAAA 2001:db8::99");
        assert_eq!(
            address("localhost", &Ok(vec![ip]), &[]).status,
            Status::Fail
        );
        let dns = address("mx.example.org", &Err("timed out".into()), &[]);
        assert_eq!(dns.detail, "could not check (DNS: timed out)");
    }
}
