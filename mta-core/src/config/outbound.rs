//! `[outbound]` and `[queue]` from the file to [`Outbound`] and [`Queue`]: the connection
//! limits, the smarthost and its credentials, the per-domain TLS policy, and the retry
//! schedule, with the defaults and every check (each error with its key and position).
//! Leaves the file shape to `file.rs` and acting on the values to the client and the queue.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use super::checker::{Checker, Given, bytes};
use super::file::{RawDomainTls, RawOutbound, RawQueue, S};
use super::{
    DnssecSource, DomainTls, IpFamily, Outbound, PasswordSource, Queue, Smarthost, SmarthostTls,
    TlsMode,
};
use crate::address::Domain;

const DEFAULT_PORT: u16 = 25;
const DEFAULT_MAX_CONNECTIONS: usize = 32;
const DEFAULT_MAX_PER_DOMAIN: usize = 4;
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
// RFC 5321 §4.5.3.2 gives 5 minutes to the greeting alone; one connection that takes twice
// that for one message is not worth waiting for.
const DEFAULT_CONNECTION_TIMEOUT: Duration = Duration::from_secs(10 * 60);
const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Long enough to outlast an attacker's patience, short enough that a domain that really
/// dropped TLS gets mail again within a month without an operator.
const DEFAULT_TLS_MEMORY: Duration = Duration::from_secs(30 * 24 * 60 * 60);
// The queue's schedule: RFC 5321 §4.5.4.1 suggests at least 30 minutes between attempts and
// giving up after 4–5 days; we start sooner (greylisting usually clears in minutes) and
// back off to an hour.
const DEFAULT_RETRY_FIRST: Duration = Duration::from_secs(5 * 60);
const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(60 * 60);
const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(5 * 24 * 60 * 60);
const DEFAULT_DELAY_WARNING: Duration = Duration::from_secs(4 * 60 * 60);
// The free-space floor at MAIL FROM: room for a few messages of the default 25 MiB limit,
// which sled stores at about twice their size until its log is compacted.
const DEFAULT_MIN_FREE_SPACE: u64 = 100 * 1024 * 1024;
const DEFAULT_MIN_FREE_INODES: u64 = 1000;

const IP_FAMILIES: [IpFamily; 5] = [
    IpFamily::Any,
    IpFamily::Ipv4,
    IpFamily::Ipv6,
    IpFamily::PreferIpv4,
    IpFamily::PreferIpv6,
];
const DNSSEC_SOURCES: [DnssecSource; 2] = [DnssecSource::Validate, DnssecSource::Resolver];
const SMARTHOST_TLS: [SmarthostTls; 2] = [SmarthostTls::Starttls, SmarthostTls::Implicit];
const TLS_MODES: [TlsMode; 3] = [TlsMode::Opportunistic, TlsMode::Required, TlsMode::None];

impl Checker<'_> {
    /// `[outbound]` and its `[outbound.tls."domain"]` tables.
    pub(super) fn outbound(&mut self, raw: &RawOutbound) -> Outbound {
        let usize_max = i64::try_from(usize::MAX).unwrap_or(i64::MAX);
        let mut int =
            |n: &Option<S<i64>>, key: &str, max: i64| self.int(n.as_ref()?, key, 1, max, None);
        let port = int(&raw.port, "outbound.port", i64::from(u16::MAX));
        let max_connections = int(&raw.max_connections, "outbound.max_connections", usize_max);
        let max_per_domain = int(&raw.max_per_domain, "outbound.max_per_domain", usize_max);
        let ip = raw
            .ip
            .as_ref()
            .and_then(|ip| self.choice(ip, "outbound.ip", &IP_FAMILIES, IpFamily::name));
        let dnssec = raw
            .dnssec
            .as_ref()
            .and_then(|d| self.choice(d, "outbound.dnssec", &DNSSEC_SOURCES, DnssecSource::name));
        let tls = match &raw.tls {
            Some(map) => self.domain_tls(map),
            None => BTreeMap::new(),
        };
        // Each conversion below is of a value already checked to be in range.
        Outbound {
            port: port.map_or(DEFAULT_PORT, |p| p as u16),
            ip: ip.unwrap_or(IpFamily::Any),
            max_connections: max_connections.map_or(DEFAULT_MAX_CONNECTIONS, |n| n as usize),
            max_per_domain: max_per_domain.map_or(DEFAULT_MAX_PER_DOMAIN, |n| n as usize),
            connect_timeout: self.duration(
                &raw.connect_timeout,
                "outbound.connect_timeout",
                DEFAULT_CONNECT_TIMEOUT,
            ),
            connection_timeout: self.duration(
                &raw.connection_timeout,
                "outbound.connection_timeout",
                DEFAULT_CONNECTION_TIMEOUT,
            ),
            attempt_timeout: self.duration(
                &raw.attempt_timeout,
                "outbound.attempt_timeout",
                DEFAULT_ATTEMPT_TIMEOUT,
            ),
            allow_internal: self.cidrs(&raw.allow_internal),
            refuse_private: raw.refuse_private.unwrap_or(false),
            tls_memory: self.duration(&raw.tls_memory, "outbound.tls_memory", DEFAULT_TLS_MEMORY),
            mta_sts: raw.mta_sts.unwrap_or(true),
            mta_sts_port: self.mta_sts_port(&raw.mta_sts_port),
            mta_sts_ca_file: self.path(&raw.mta_sts_ca_file, "outbound.mta_sts_ca_file"),
            dane: raw.dane.unwrap_or(true),
            dnssec: dnssec.unwrap_or(DnssecSource::Validate),
            dane_trust_anchor: self.path(&raw.dane_trust_anchor, "outbound.dane_trust_anchor"),
            tls_reports: raw.tls_reports.unwrap_or(true),
            tls_report_interval: self.duration(
                &raw.tls_report_interval,
                "outbound.tls_report_interval",
                Duration::from_secs(24 * 60 * 60),
            ),
            tls_report_allow: raw
                .tls_report_allow
                .as_ref()
                .map(|list| {
                    list.get_ref()
                        .iter()
                        .filter_map(|d| self.domain(d, "outbound.tls_report_allow"))
                        .collect()
                })
                .unwrap_or_default(),
            relay: self.relay(raw),
            tls,
        }
    }

    /// `outbound.allow_internal`: CIDR blocks (`127.0.0.0/8`, `::1/128`), or single addresses
    /// (a whole-address block).
    fn cidrs(&mut self, list: &Option<super::file::List>) -> Vec<ipnet::IpNet> {
        let Some(list) = list else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in list.get_ref() {
            let text = item.get_ref();
            let parsed = text
                .parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(ipnet::IpNet::from));
            match parsed {
                // A block written with host bits set (`127.0.0.1/8`) means the block.
                Ok(net) => out.push(net.trunc()),
                Err(_) => {
                    let msg = format!(
                        "{text:?} is not an address block such as \"127.0.0.0/8\" or \"::1/128\""
                    );
                    self.error(item.span(), "outbound.allow_internal", msg);
                }
            }
        }
        out
    }

    /// `outbound.mta_sts_port`, 443 when not set or out of range (reported).
    fn mta_sts_port(&mut self, n: &Option<S<i64>>) -> u16 {
        n.as_ref()
            .and_then(|n| self.int(n, "outbound.mta_sts_port", 1, i64::from(u16::MAX), None))
            .map_or(443, |p| p as u16)
    }

    /// One of a fixed set of names, such as `"required"`; `None` (reported) for any other.
    pub(super) fn choice<T: Copy>(
        &mut self,
        text: &S<String>,
        key: &str,
        choices: &[T],
        name: fn(T) -> &'static str,
    ) -> Option<T> {
        let found = choices.iter().copied().find(|c| name(*c) == text.get_ref());
        if found.is_none() {
            let names: Vec<&str> = choices.iter().map(|c| name(*c)).collect();
            let msg = format!("{:?} is not one of {}", text.get_ref(), names.join(", "));
            self.error(text.span(), key, msg);
        }
        found
    }

    /// The `outbound.relay*` keys. The others are only allowed with `outbound.relay`, and a
    /// user name only with exactly one place to read its password from.
    fn relay(&mut self, raw: &RawOutbound) -> Option<Smarthost> {
        let Some(relay) = &raw.relay else {
            let others = [
                ("outbound.relay_tls", &raw.relay_tls),
                ("outbound.relay_user", &raw.relay_user),
                ("outbound.relay_password_file", &raw.relay_password_file),
                ("outbound.relay_password_env", &raw.relay_password_env),
                ("outbound.relay_ca_file", &raw.relay_ca_file),
            ];
            for (key, value) in others {
                if let Some(v) = value {
                    self.error(v.span(), key, "set without outbound.relay".to_string());
                }
            }
            return None;
        };
        let address = parse_relay(relay.get_ref())
            .map_err(|msg| self.error(relay.span(), "outbound.relay", msg))
            .ok();
        let tls = raw
            .relay_tls
            .as_ref()
            .and_then(|t| self.choice(t, "outbound.relay_tls", &SMARTHOST_TLS, SmarthostTls::name));
        let user = raw.relay_user.as_ref().and_then(|u| self.relay_user(u));
        let file = self
            .path(&raw.relay_password_file, "outbound.relay_password_file")
            .map(PasswordSource::File);
        let env = raw
            .relay_password_env
            .as_ref()
            .and_then(|e| self.env_name(e))
            .map(PasswordSource::Env);
        let (file_key, env_key) = (&raw.relay_password_file, &raw.relay_password_env);
        match (&raw.relay_user, file_key, env_key) {
            (Some(u), None, None) => {
                let msg = "needs relay_password_file or relay_password_env".to_string();
                self.error(u.span(), "outbound.relay_user", msg);
            }
            (None, _, _) => {
                let keys = [
                    ("outbound.relay_password_file", file_key),
                    ("outbound.relay_password_env", env_key),
                ];
                for (key, value) in keys {
                    if let Some(v) = value {
                        self.error(v.span(), key, "set without outbound.relay_user".to_string());
                    }
                }
            }
            (Some(_), _, _) => {}
        }
        if let (Some(_), Some(e)) = (file_key, env_key) {
            let msg = "set together with outbound.relay_password_file: give only one".to_string();
            self.error(e.span(), "outbound.relay_password_env", msg);
        }
        let ca_file = self.path(&raw.relay_ca_file, "outbound.relay_ca_file");
        let (host, port) = address?;
        Some(Smarthost {
            host,
            port,
            tls: tls.unwrap_or(SmarthostTls::Starttls),
            user,
            password: file.or(env),
            ca_file,
        })
    }

    /// The AUTH user name: not empty, and no control characters, which SASL PLAIN uses
    /// (NUL) or the SMTP line would break on.
    fn relay_user(&mut self, user: &S<String>) -> Option<String> {
        let text = user.get_ref();
        let msg = if text.is_empty() {
            "must not be empty"
        } else if text.chars().any(char::is_control) {
            "must not contain control characters"
        } else {
            return Some(text.clone());
        };
        self.error(user.span(), "outbound.relay_user", msg.to_string());
        None
    }

    /// An environment variable name as shells write them: `[A-Za-z_][A-Za-z0-9_]*`.
    fn env_name(&mut self, name: &S<String>) -> Option<String> {
        let text = name.get_ref();
        let valid = text.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if valid {
            return Some(text.clone());
        }
        let msg = format!(
            "{text:?} is not an environment variable name (letters, digits and _, not \
             starting with a digit)"
        );
        self.error(name.span(), "outbound.relay_password_env", msg);
        None
    }

    /// `[outbound.tls."domain"]` tables: each key a domain (or address literal), each table
    /// with a `mode`.
    fn domain_tls(
        &mut self,
        map: &BTreeMap<S<String>, RawDomainTls>,
    ) -> BTreeMap<Domain, DomainTls> {
        let mut policies = BTreeMap::new();
        let mut spelled: BTreeMap<Domain, &str> = BTreeMap::new();
        // In file order, so that of two spellings of one domain the second is reported.
        let mut tables: Vec<_> = map.iter().collect();
        tables.sort_by_key(|(name, _)| name.span().start);
        for (name, table) in tables {
            let key = format!("outbound.tls.{:?}", name.get_ref());
            // An address literal is allowed: mail to `user@[192.0.2.1]` goes to that host.
            let domain = Domain::parse(name.get_ref())
                .map_err(|_| {
                    let msg = format!("{:?} is not a domain name", name.get_ref());
                    self.error(name.span(), &key, msg);
                })
                .ok();
            let mode_key = format!("{key}.mode");
            let mode = match &table.mode {
                Some(m) => self.choice(m, &mode_key, &TLS_MODES, TlsMode::name),
                None => {
                    let msg = "must be set: one of opportunistic, required, none".to_string();
                    self.error(name.span(), &mode_key, msg);
                    None
                }
            };
            let ca_key = format!("{key}.ca_file");
            let ca_file = self.path(&table.ca_file, &ca_key);
            if let (Some(TlsMode::None), Some(ca)) = (mode, &table.ca_file) {
                let msg = "has no use with mode \"none\"".to_string();
                self.error(ca.span(), &ca_key, msg);
            }
            let (Some(domain), Some(mode)) = (domain, mode) else {
                continue;
            };
            // "Example.com" and "example.com" are different TOML keys but one domain.
            if let Some(first) = spelled.get(&domain) {
                let msg = format!("the same domain as {first:?} (case does not matter)");
                self.error(name.span(), &key, msg);
                continue;
            }
            spelled.insert(domain.clone(), name.get_ref());
            policies.insert(domain, DomainTls { mode, ca_file });
        }
        policies
    }

    /// `[queue]`: the durations, with `retry_first ≤ retry_max` and
    /// `delay_warning < max_lifetime` (a violation is reported at whichever of the two keys
    /// the file sets, the second one when it sets both), and the free-space floors (≥ 0).
    pub(super) fn queue(&mut self, raw: &RawQueue) -> Queue {
        let first = self.given(&raw.retry_first, "queue.retry_first");
        let max = self.given(&raw.retry_max, "queue.retry_max");
        let lifetime = self.given(&raw.max_lifetime, "queue.max_lifetime");
        let warning = self.given(&raw.delay_warning, "queue.delay_warning");
        let queue = Queue {
            retry_first: first.or(DEFAULT_RETRY_FIRST),
            retry_max: max.or(DEFAULT_RETRY_MAX),
            max_lifetime: lifetime.or(DEFAULT_MAX_LIFETIME),
            delay_warning: warning.or(DEFAULT_DELAY_WARNING),
            min_free_space: self.floor(
                &bytes(&raw.min_free_space),
                "queue.min_free_space",
                DEFAULT_MIN_FREE_SPACE,
            ),
            min_free_inodes: self.floor(
                &raw.min_free_inodes,
                "queue.min_free_inodes",
                DEFAULT_MIN_FREE_INODES,
            ),
        };
        let comparable =
            |a: &Given, b: &Given| !matches!(a, Given::Invalid) && !matches!(b, Given::Invalid);
        if comparable(&first, &max) && queue.retry_max < queue.retry_first {
            match (max.span(), first.span()) {
                (Some(span), _) => {
                    let msg = "must not be shorter than queue.retry_first".to_string();
                    self.error(span, "queue.retry_max", msg);
                }
                (None, Some(span)) => {
                    let msg = "must not be longer than queue.retry_max".to_string();
                    self.error(span, "queue.retry_first", msg);
                }
                (None, None) => {}
            }
        }
        if comparable(&warning, &lifetime) && queue.delay_warning >= queue.max_lifetime {
            match (warning.span(), lifetime.span()) {
                (Some(span), _) => {
                    let msg = "must be shorter than queue.max_lifetime".to_string();
                    self.error(span, "queue.delay_warning", msg);
                }
                (None, Some(span)) => {
                    let msg = "must be longer than queue.delay_warning".to_string();
                    self.error(span, "queue.max_lifetime", msg);
                }
                (None, None) => {}
            }
        }
        queue
    }

    /// A free-space floor: a count ≥ 0, or `default` when absent.
    fn floor(&mut self, n: &Option<S<i64>>, key: &str, default: u64) -> u64 {
        n.as_ref()
            .and_then(|n| self.int(n, key, 0, i64::MAX, None))
            .map_or(default, |n| n as u64)
    }
}

/// `host:port` of a smarthost: a domain name, an IPv4 address, or an IP address in brackets
/// (`[2001:db8::1]:587`). Returns the host in canonical form (lower-case A-labels, or the IP
/// without brackets) and the port.
///
/// # Errors
/// The operator-facing message.
fn parse_relay(text: &str) -> Result<(String, u16), String> {
    let needs_port = || format!("{text:?} needs a port (host:port)");
    let (host, port) = match text.strip_prefix('[') {
        Some(rest) => {
            let (inside, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("{text:?} has no closing bracket"))?;
            let ip: IpAddr = inside
                .parse()
                .map_err(|_| format!("{inside:?} in brackets is not an IP address"))?;
            match after.strip_prefix(':') {
                Some(port) => (ip.to_string(), port),
                None if after.is_empty() => return Err(needs_port()),
                None => return Err(format!("{text:?} is not host:port")),
            }
        }
        None => {
            let (host, port) = text.rsplit_once(':').ok_or_else(needs_port)?;
            if host.contains(':') {
                return Err(format!(
                    "{text:?}: write an IPv6 address in brackets, such as \"[2001:db8::1]:587\""
                ));
            }
            // An IPv4 address would also pass as a domain name of digit labels.
            let host = match (host.parse::<Ipv4Addr>(), Domain::parse(host)) {
                (Ok(ip), _) => ip.to_string(),
                (Err(_), Ok(d)) if !d.is_literal() => d.as_str().to_string(),
                _ => return Err(format!("{host:?} is not a host name or IP address")),
            };
            (host, port)
        }
    };
    if port.is_empty() {
        return Err(needs_port());
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 && port.bytes().all(|b| b.is_ascii_digit()) => Ok((host, p)),
        _ => Err(format!("{port:?} is not a port number (1 to 65535)")),
    }
}
