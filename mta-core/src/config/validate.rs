//! [`RawConfig`] → [`Config`]: applies the built-in defaults and checks every value, collecting
//! all problems (each with its key and position) before giving up, so one run of
//! `mta check-config` shows everything that needs fixing.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::checker::{Checker, Given, bytes};
use super::file::{List, RawConfig, RawLimits, S, Source};
use super::{Config, ConfigError, Dns, Limits, Listen, Tls};
use crate::address::{Address, Domain};

const DEFAULT_DATA_DIR: &str = "./mta-data";
/// Unprivileged loopback ports, so `mta serve` runs as an ordinary user out of the box.
const DEFAULT_SMTP: &str = "127.0.0.1:2525";
const DEFAULT_SUBMISSION: &str = "127.0.0.1:2587";
const DEFAULT_SUBMISSIONS: &str = "127.0.0.1:2465";
const DEFAULT_MAX_MESSAGE_SIZE: u64 = 25 * 1024 * 1024;
/// Below this, even a short message with ordinary headers would not fit.
const MIN_MESSAGE_SIZE: i64 = 1024;
/// Message bytes held in memory by all sessions together, unless `max_message_size` is larger.
const DEFAULT_MESSAGE_MEMORY: u64 = 64 * 1024 * 1024;
/// RFC 5321 §4.5.3.1.8: a server MUST accept at least 100 recipients.
const MIN_RECIPIENTS: i64 = 100;
/// Postfix's `smtpd_recipient_limit`, so a list that passes Postfix passes here.
const DEFAULT_MAX_RECIPIENTS: usize = 1000;
const DEFAULT_MAX_SESSIONS: usize = 1000;
const DEFAULT_MAX_ERRORS: u32 = 10;
/// RFC 5321 §4.5.3.2.7: server timeout of at least 5 minutes while awaiting the next command.
const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// RFC 5321 §4.5.3.2.6 (DATA block, and the final dot): at least 10 minutes.
const DEFAULT_DATA_TIMEOUT: Duration = Duration::from_secs(10 * 60);
const DEFAULT_MAX_SESSIONS_PER_IP: usize = 20;
/// Fifty: a large sender (or a small office's few NAT addresses) has room, one hostile
/// network cannot take the 1000 sessions.
const DEFAULT_MAX_SESSIONS_PER_NETWORK: usize = 50;
/// A submission client needs about six lines before its first RCPT (EHLO, STARTTLS, EHLO,
/// AUTH LOGIN and its two answers, MAIL); twenty leaves room for NOOP and RSET between
/// messages.
const DEFAULT_MAX_COMMANDS_WITHOUT_PROGRESS: u32 = 20;
const MIN_COMMANDS_WITHOUT_PROGRESS: i64 = 5;
const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(30 * 60);
const DEFAULT_AUTH_FAILURES: u32 = 5;
/// Each tracked client or account keeps this many failure times at most: a bound on memory.
const MAX_AUTH_FAILURES: i64 = 100;
const DEFAULT_AUTH_FAILURE_WINDOW: Duration = Duration::from_secs(10 * 60);
const DEFAULT_MAX_HEADERS: usize = 1000;
/// Fewer would refuse ordinary mail (list mail with its trace fields has over 50).
const MIN_HEADERS: i64 = 100;
const DEFAULT_MAX_HEADER_SIZE: usize = 1024 * 1024;
/// Fewer would refuse ordinary mail with DKIM, ARC and trace fields.
const MIN_HEADER_SIZE: i64 = 16 * 1024;
/// RFC 5321 §6.3 suggests rejecting at 100 or more; 50 is Postfix's `hopcount_limit`, still
/// far above what real mail carries.
const DEFAULT_MAX_RECEIVED: usize = 50;
const MIN_RECEIVED: i64 = 10;
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
const DNS_PORT: u16 = 53;

/// Applies defaults and validates.
///
/// # Errors
/// Every problem found, each with its key and (when it came from the file) its position.
pub(super) fn from_raw(
    source: &Source<'_>,
    raw: RawConfig,
    shape_errors: Vec<ConfigError>,
    system_hostname: &str,
) -> (Config, Vec<ConfigError>) {
    let mut c = Checker::new(source, shape_errors);
    let hostname = match &raw.hostname {
        Some(h) => c.domain(h, "hostname"),
        None => None,
    }
    .unwrap_or_else(|| system_domain(system_hostname));
    let data_dir = c.data_dir(&raw);
    let local_domains = match &raw.local_domains {
        Some(list) => c.local_domains(list),
        None => default_local_domains(&hostname),
    };
    let shutdown_grace = c.duration(
        &raw.shutdown_grace,
        "shutdown_grace",
        DEFAULT_SHUTDOWN_GRACE,
    );
    let listen = c.listen(&raw);
    let tls = c.tls(&raw);
    let limits = c.limits(&raw);
    let nameservers = match &raw.dns.nameservers {
        Some(list) => c.nameservers(list),
        None => Vec::new(),
    };
    let outbound = c.outbound(&raw.outbound);
    let queue = c.queue(&raw.queue);
    let (aliases, catch_all) = match &raw.aliases {
        Some(map) => c.aliases(map, &local_domains),
        None => (BTreeMap::new(), BTreeMap::new()),
    };
    let local = c.local(&raw.local);
    let dkim = match &raw.dkim {
        Some(map) => c.dkim(map),
        None => Vec::new(),
    };
    let inbound = c.inbound(&raw.inbound);
    let senders = c.senders(raw.senders.as_ref(), &local_domains);
    let metrics_listen = c.metrics_listen(&raw, &listen);
    let process = c.process(&raw);
    let srs = c.srs(&raw.srs, &hostname, &local_domains);
    let dmarc_reports = c.dmarc_reports(&raw.dmarc_reports, &local_domains, &aliases, &hostname);
    let auth = c.auth(&raw.auth);
    let acme = c.acme(raw.acme.as_ref(), &hostname, &local_domains, &tls);
    let errors = c.into_errors();
    let config = Config {
        hostname,
        data_dir,
        local_domains,
        listen,
        tls,
        limits,
        dns: Dns { nameservers },
        outbound,
        queue,
        aliases,
        catch_all,
        local,
        shutdown_grace,
        dkim,
        inbound,
        metrics_listen,
        process,
        srs,
        senders,
        dmarc_reports,
        auth,
        acme,
    };
    (config, errors)
}

/// `local_domains` when the file has none: `localhost` and the hostname.
fn default_local_domains(hostname: &Domain) -> Vec<Domain> {
    let mut v = vec![system_domain("localhost")];
    if !v.contains(hostname) {
        v.push(hostname.clone());
    }
    v
}

/// The machine's name as our default hostname, or `localhost` when it is not a usable domain
/// (a container's random name with underscores, say): defaults must never fail.
fn system_domain(name: &str) -> Domain {
    let name = name.trim();
    let name = name.strip_suffix('.').unwrap_or(name);
    match Domain::parse(name) {
        Ok(d) if !d.is_literal() => d,
        _ => Domain::parse("localhost").expect("localhost is a valid domain"),
    }
}

impl Checker<'_> {
    /// `data_dir`, never empty.
    fn data_dir(&mut self, raw: &RawConfig) -> PathBuf {
        match &raw.data_dir {
            Some(d) if d.get_ref().is_empty() => {
                self.error(d.span(), "data_dir", "must not be empty".to_string());
                PathBuf::from(DEFAULT_DATA_DIR)
            }
            Some(d) => PathBuf::from(d.get_ref()),
            None => PathBuf::from(DEFAULT_DATA_DIR),
        }
    }

    fn local_domains(&mut self, list: &List) -> Vec<Domain> {
        let mut domains: Vec<Domain> = Vec::new();
        for item in list.get_ref() {
            let Some(d) = self.domain(item, "local_domains") else {
                continue;
            };
            if domains.contains(&d) {
                self.error(item.span(), "local_domains", format!("{d} is listed twice"));
            } else {
                domains.push(d);
            }
        }
        domains
    }

    fn listen(&mut self, raw: &RawConfig) -> Listen {
        let r = &raw.listen;
        let kinds = [
            ("smtp", &r.smtp, DEFAULT_SMTP),
            ("submission", &r.submission, DEFAULT_SUBMISSION),
            ("submissions", &r.submissions, DEFAULT_SUBMISSIONS),
        ];
        let mut seen: Vec<(SocketAddr, &str)> = Vec::new();
        let mut lists: Vec<Vec<SocketAddr>> = Vec::new();
        for (name, list, default) in kinds {
            let key = format!("listen.{name}");
            let Some(list) = list else {
                let addr: SocketAddr = default.parse().expect("the default listener parses");
                seen.push((addr, name));
                lists.push(vec![addr]);
                continue;
            };
            let mut addrs = Vec::new();
            for item in list.get_ref() {
                let Ok(addr) = item.get_ref().parse::<SocketAddr>() else {
                    let msg = format!(
                        "{:?} is not an IP address and port, such as \"0.0.0.0:25\" or \"[::]:25\"",
                        item.get_ref()
                    );
                    self.error(item.span(), &key, msg);
                    continue;
                };
                // Port 0 asks the kernel for a free port (tests do): never a clash.
                let clash = seen
                    .iter()
                    .find(|(other, _)| addr.port() != 0 && overlaps(addr, *other));
                if let Some((other, by)) = clash {
                    let msg = if *other == addr {
                        format!("{addr} is already used by listen.{by}")
                    } else {
                        format!("{addr} is already used by listen.{by} (as {other})")
                    };
                    self.error(item.span(), &key, msg);
                }
                seen.push((addr, name));
                addrs.push(addr);
            }
            lists.push(addrs);
        }
        let any = [&r.smtp, &r.submission, &r.submissions]
            .into_iter()
            .any(|l| l.as_ref().is_none_or(|l| !l.get_ref().is_empty()));
        if let (false, Some(last)) = (any, &r.submissions) {
            let msg =
                "no listener: listen.smtp, listen.submission and listen.submissions are all empty";
            self.error(last.span(), "listen", msg.to_string());
        }
        let mut lists = lists.into_iter();
        Listen {
            smtp: lists.next().unwrap_or_default(),
            submission: lists.next().unwrap_or_default(),
            submissions: lists.next().unwrap_or_default(),
        }
    }

    fn tls(&mut self, raw: &RawConfig) -> Tls {
        let cert = self.path(&raw.tls.cert, "tls.cert");
        let key = self.path(&raw.tls.key, "tls.key");
        // A certificate without its key (or the reverse) cannot be served: say so rather than
        // silently falling back to a self-signed certificate.
        match (&raw.tls.cert, &raw.tls.key) {
            (Some(c), None) => {
                let msg =
                    "set without tls.key: give both, or neither for a self-signed certificate";
                self.error(c.span(), "tls.cert", msg.to_string());
            }
            (None, Some(k)) => {
                let msg =
                    "set without tls.cert: give both, or neither for a self-signed certificate";
                self.error(k.span(), "tls.key", msg.to_string());
            }
            _ => {}
        }
        let names = self.tls_names(&raw.tls.names);
        Tls { cert, key, names }
    }

    fn limits(&mut self, raw: &RawConfig) -> Limits {
        let r = &raw.limits;
        let mut int = |n: &Option<S<i64>>, key: &str, min: i64, max: i64, why: Option<&str>| {
            self.int(n.as_ref()?, key, min, max, why)
        };
        let usize_max = i64::try_from(usize::MAX).unwrap_or(i64::MAX);
        let rfc = Some("RFC 5321 §4.5.3.1.8");
        let rcpts = int(
            &r.max_recipients,
            "limits.max_recipients",
            MIN_RECIPIENTS,
            usize_max,
            rfc,
        );
        let sessions = int(&r.max_sessions, "limits.max_sessions", 1, usize_max, None);
        let errors = int(
            &r.max_errors,
            "limits.max_errors",
            1,
            i64::from(u32::MAX),
            None,
        );
        let per_ip = int(
            &r.max_sessions_per_ip,
            "limits.max_sessions_per_ip",
            1,
            usize_max,
            None,
        );
        let per_network = int(
            &r.max_sessions_per_network,
            "limits.max_sessions_per_network",
            1,
            usize_max,
            None,
        );
        let without_progress = int(
            &r.max_commands_without_progress,
            "limits.max_commands_without_progress",
            MIN_COMMANDS_WITHOUT_PROGRESS,
            i64::from(u32::MAX),
            None,
        );
        let auth_failures = int(
            &r.auth_failures,
            "limits.auth_failures",
            1,
            MAX_AUTH_FAILURES,
            None,
        );
        let (command_timeout, data_timeout, session_timeout) = self.timeouts(r);
        // Each conversion below is of a value already checked to be in range.
        let sizes = self.message_sizes(r);
        Limits {
            max_message_size: sizes.max_message_size,
            max_recipients: rcpts.map_or(DEFAULT_MAX_RECIPIENTS, |n| n as usize),
            max_sessions: sessions.map_or(DEFAULT_MAX_SESSIONS, |n| n as usize),
            max_errors: errors.map_or(DEFAULT_MAX_ERRORS, |n| n as u32),
            command_timeout,
            data_timeout,
            max_sessions_per_ip: per_ip.map_or(DEFAULT_MAX_SESSIONS_PER_IP, |n| n as usize),
            max_sessions_per_network: per_network
                .map_or(DEFAULT_MAX_SESSIONS_PER_NETWORK, |n| n as usize),
            max_commands_without_progress: without_progress
                .map_or(DEFAULT_MAX_COMMANDS_WITHOUT_PROGRESS, |n| n as u32),
            session_timeout,
            auth_failures: auth_failures.map_or(DEFAULT_AUTH_FAILURES, |n| n as u32),
            auth_failure_window: self.duration(
                &r.auth_failure_window,
                "limits.auth_failure_window",
                DEFAULT_AUTH_FAILURE_WINDOW,
            ),
            max_headers: sizes.max_headers,
            max_header_size: sizes.max_header_size,
            max_received: sizes.max_received,
            message_memory: sizes.message_memory,
            sending: self.sending(r.sending.as_ref()),
        }
    }

    /// The size limits of `[limits]`: of a message, its header and its memory.
    fn message_sizes(&mut self, r: &RawLimits) -> Sizes {
        let mut int = |n: &Option<S<i64>>, key: &str, min: i64, max: i64, why: Option<&str>| {
            self.int(n.as_ref()?, key, min, max, why)
        };
        let usize_max = i64::try_from(usize::MAX).unwrap_or(i64::MAX);
        let size = int(
            &bytes(&r.max_message_size),
            "limits.max_message_size",
            MIN_MESSAGE_SIZE,
            i64::MAX,
            None,
        );
        let headers = int(
            &r.max_headers,
            "limits.max_headers",
            MIN_HEADERS,
            usize_max,
            None,
        );
        let header_size = int(
            &bytes(&r.max_header_size),
            "limits.max_header_size",
            MIN_HEADER_SIZE,
            usize_max,
            None,
        );
        let loop_rfc = Some("RFC 5321 §6.3 asks for a large threshold");
        let received = int(
            &r.max_received,
            "limits.max_received",
            MIN_RECEIVED,
            usize_max,
            loop_rfc,
        );
        let memory = int(
            &r.message_memory,
            "limits.message_memory",
            MIN_MESSAGE_SIZE,
            i64::MAX,
            None,
        );
        let max_message_size = size.map_or(DEFAULT_MAX_MESSAGE_SIZE, |n| n as u64);
        self.check_memory_budget(memory, &r.message_memory, max_message_size);
        // Each conversion below is of a value already checked to be in range.
        Sizes {
            max_message_size,
            max_headers: headers.map_or(DEFAULT_MAX_HEADERS, |n| n as usize),
            max_header_size: header_size.map_or(DEFAULT_MAX_HEADER_SIZE, |n| n as usize),
            max_received: received.map_or(DEFAULT_MAX_RECEIVED, |n| n as usize),
            message_memory: memory
                .map_or(DEFAULT_MESSAGE_MEMORY.max(max_message_size), |n| n as u64),
        }
    }

    /// `limits.command_timeout`, `limits.data_timeout` and `limits.session_timeout`; a
    /// session shorter than the DATA phase is an error.
    fn timeouts(&mut self, r: &RawLimits) -> (Duration, Duration, Duration) {
        let command_timeout = self.duration(
            &r.command_timeout,
            "limits.command_timeout",
            DEFAULT_COMMAND_TIMEOUT,
        );
        let data = self.given(&r.data_timeout, "limits.data_timeout");
        let session = self.given(&r.session_timeout, "limits.session_timeout");
        let data_timeout = data.or(DEFAULT_DATA_TIMEOUT);
        let session_timeout = session.or(DEFAULT_SESSION_TIMEOUT);
        // A session shorter than the DATA phase could cut off every large message. Reported
        // at the session key when the file sets it, else at the data key.
        let comparable = !matches!(data, Given::Invalid) && !matches!(session, Given::Invalid);
        if comparable && session_timeout < data_timeout {
            match (session.span(), data.span()) {
                (Some(span), _) => {
                    let msg = "must not be shorter than limits.data_timeout".to_string();
                    self.error(span, "limits.session_timeout", msg);
                }
                (None, Some(span)) => {
                    let msg = "must not be longer than limits.session_timeout".to_string();
                    self.error(span, "limits.data_timeout", msg);
                }
                (None, None) => {}
            }
        }
        (command_timeout, data_timeout, session_timeout)
    }

    /// `limits.message_memory` must hold the largest message allowed.
    fn check_memory_budget(
        &mut self,
        memory: Option<i64>,
        message_memory: &Option<S<i64>>,
        max_message_size: u64,
    ) {
        // A budget below the largest message would refuse that message for ever.
        if let (Some(n), Some(span)) = (memory, message_memory.as_ref().map(|m| m.span()))
            && (n as u64) < max_message_size
        {
            let msg = format!("{n} is below limits.max_message_size ({max_message_size})");
            self.error(span, "limits.message_memory", msg);
        }
    }

    /// `metrics.listen`: an address:port not used by a mail listener.
    fn metrics_listen(&mut self, raw: &RawConfig, listen: &Listen) -> Option<SocketAddr> {
        let text = raw.metrics.listen.as_ref()?;
        let parsed = text.get_ref().parse::<SocketAddr>();
        if parsed.is_err() {
            let msg = format!("{:?} is not an address:port", text.get_ref());
            self.error(text.span(), "metrics.listen", msg);
        }
        // The metrics listener is bound after the mail listeners: on one of their addresses
        // it would stop the start after the mail ports are already taken.
        let mail = [
            ("smtp", &listen.smtp),
            ("submission", &listen.submission),
            ("submissions", &listen.submissions),
        ];
        if let Ok(addr) = parsed
            && addr.port() != 0
            && let Some((by, other)) = mail.iter().find_map(|(by, list)| {
                list.iter()
                    .find(|other| overlaps(addr, **other))
                    .map(|other| (by, other))
            })
        {
            let msg = format!(
                "{addr} is already used by listen.{by} (as {other}): give the metrics their own port"
            );
            self.error(text.span(), "metrics.listen", msg);
        }
        parsed.ok()
    }

    fn nameservers(&mut self, list: &List) -> Vec<SocketAddr> {
        let mut servers = Vec::new();
        for item in list.get_ref() {
            let text = item.get_ref();
            let bare = text
                .strip_prefix('[')
                .and_then(|t| t.strip_suffix(']'))
                .unwrap_or(text);
            let parsed = text.parse::<SocketAddr>().ok().or_else(|| {
                bare.parse::<IpAddr>()
                    .ok()
                    .map(|ip| SocketAddr::new(ip, DNS_PORT))
            });
            let key = "dns.nameservers";
            match parsed {
                Some(addr) if addr.port() == 0 => {
                    let msg = format!("{text:?} has port 0, which no DNS server listens on");
                    self.error(item.span(), key, msg);
                }
                Some(addr) if servers.contains(&addr) => {
                    self.error(item.span(), key, format!("{addr} is listed twice"));
                }
                Some(addr) => servers.push(addr),
                None => {
                    let msg = format!(
                        "{text:?} is not an IP address with an optional port, such as \"192.0.2.53\" or \"127.0.0.1:5353\""
                    );
                    self.error(item.span(), key, msg);
                }
            }
        }
        servers
    }

    /// The aliases, and the catch-all per domain (keys `"@domain"`).
    #[allow(clippy::type_complexity)]
    fn aliases(
        &mut self,
        map: &BTreeMap<S<String>, List>,
        local: &[Domain],
    ) -> (
        BTreeMap<Address, Vec<Address>>,
        BTreeMap<Domain, Vec<Address>>,
    ) {
        let mut aliases: BTreeMap<Address, Vec<Address>> = BTreeMap::new();
        let mut catch_all: BTreeMap<Domain, Vec<Address>> = BTreeMap::new();
        for (alias, targets) in map {
            let key = format!("aliases.{:?}", alias.get_ref());
            let mut address = |text: &S<String>| match Address::parse(text.get_ref()) {
                Ok(a) => Some(a),
                Err(e) => {
                    let msg = format!("{:?} is not a mail address: {e}", text.get_ref());
                    self.error(text.span(), &key, msg);
                    None
                }
            };
            let catch_all_domain = alias.get_ref().strip_prefix('@');
            let alias_address = match catch_all_domain {
                Some(_) => None,
                None => address(alias),
            };
            let list: Vec<Address> = targets.get_ref().iter().filter_map(&mut address).collect();
            if targets.get_ref().is_empty() {
                let msg = "must list at least one target address".to_string();
                self.error(targets.span(), &key, msg);
            }
            if let Some(text) = catch_all_domain {
                let Ok(d) = Domain::parse(text) else {
                    let msg = format!(
                        "{:?} is not a catch-all: \"@\" must be followed by a local domain",
                        alias.get_ref()
                    );
                    self.error(alias.span(), &key, msg);
                    continue;
                };
                if !local.contains(&d) {
                    let msg = format!("{d} is not one of local_domains");
                    self.error(alias.span(), &key, msg);
                    continue;
                }
                match catch_all.entry(d) {
                    std::collections::btree_map::Entry::Occupied(e) => {
                        let msg = format!("a second catch-all for {}", e.key());
                        self.error(alias.span(), &key, msg);
                    }
                    std::collections::btree_map::Entry::Vacant(e) => {
                        e.insert(list);
                    }
                }
                continue;
            }
            let Some(a) = alias_address else {
                continue;
            };
            if !local.contains(a.domain()) {
                let msg = format!("{} is not one of local_domains", a.domain());
                self.error(alias.span(), &key, msg);
            } else if let Some(same) = aliases.keys().find(|k| k.key() == a.key()) {
                let msg = format!(
                    "the same alias as {:?} (case does not matter)",
                    same.to_string()
                );
                self.error(alias.span(), &key, msg);
            } else {
                aliases.insert(a, list);
            }
        }
        (aliases, catch_all)
    }
}

/// Whether two listeners would fight over a port: the same address, or a wildcard address
/// and another of its family (binding both fails on Linux).
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && (a.ip() == b.ip()
            || (a.is_ipv4() == b.is_ipv4() && (a.ip().is_unspecified() || b.ip().is_unspecified())))
}

/// The size limits of `[limits]`, read together because the memory budget is checked
/// against the message size.
struct Sizes {
    max_message_size: u64,
    max_headers: usize,
    max_header_size: usize,
    max_received: usize,
    message_memory: u64,
}
