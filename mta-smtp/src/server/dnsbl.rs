//! DNS blocklists (RFC 5782) for clients of the `smtp` listener: `[[inbound.dnsbl]]`,
//! `[inbound] dnsbl_threshold` and `dnsbl_action`.
//!
//! A session asks once, at its first RCPT ([`super::session::Action::CheckDnsbl`]); all lists
//! are asked at once and together given [`LOOKUP_TIMEOUT`]. A list never blocks mail by
//! failing: no answer in time, a DNS error, an answer outside 127.0.0.0/8 (RFC 5782 §2.1:
//! a resolver that answers every name) and the refusal codes in 127.255.255.0/24 (Spamhaus:
//! queries through a public resolver, too many queries) all count as not listed. Answers are
//! kept per client address for their TTL, at most [`MAX_TTL`], for at most [`MAX_CACHED`]
//! addresses.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::rr::{RData, RecordType};
use ipnet::Ipv4Net;
use mta_core::config::{Config, Dnsbl, DnsblAction, IpFamily};
use mta_core::reply::Reply;
use mta_core::seams::FieldRemoval;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{info, warn};

/// How long all lists together may take to answer for one client.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);
/// The longest an answer is kept, whatever its TTL.
pub const MAX_TTL: Duration = Duration::from_secs(3600);
/// How long "not listed" is kept when the list's answer gives no TTL (no SOA).
const NEGATIVE_TTL: Duration = Duration::from_secs(300);
/// The most client addresses whose answers are kept.
pub const MAX_CACHED: usize = 10_000;
/// A list's refusal codes and answers outside 127.0.0.0/8 are logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(3600);
/// The most characters of a list's TXT record put in a refusal.
const MAX_TXT: usize = 200;
/// The header field a listed client's mail gets with `dnsbl_action = "mark"`; one a client
/// sends is removed.
pub const MARK_FIELD: &str = "X-DNSBL";

/// The name to look up for `ip` in `zone`: the four octets of an IPv4 address (also one
/// mapped into IPv6) in reverse (RFC 5782 §2.1), the 32 nibbles of an IPv6 address in
/// reverse (§2.4), then the zone and the root.
pub fn query_name(ip: IpAddr, zone: &str) -> String {
    let mut name = String::with_capacity(64 + zone.len() + 1);
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            let _ = write!(name, "{d}.{c}.{b}.{a}.");
        }
        IpAddr::V6(v6) => {
            for byte in v6.octets().iter().rev() {
                let _ = write!(name, "{:x}.{:x}.", byte & 0xf, byte >> 4);
            }
        }
    }
    name.push_str(zone);
    name.push('.');
    name
}

/// What one list's A records say about a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Listed: the first answer `returns` takes.
    Listed(Ipv4Addr),
    /// Not listed: no answer, or none `returns` takes.
    NotListed,
    /// A refusal code (127.255.255.0/24): the list refused to answer our query.
    Refused(Ipv4Addr),
    /// An answer outside 127.0.0.0/8: not a list's answer (RFC 5782 §2.1).
    Outside(Ipv4Addr),
}

/// Judges one list's A records: any answer outside 127.0.0.0/8 or any refusal code spoils
/// the whole answer (never a listing); otherwise listed when an answer is in `returns`
/// (empty: any).
pub fn judge(answers: &[Ipv4Addr], returns: &[Ipv4Net]) -> Answer {
    if let Some(a) = answers.iter().find(|a| a.octets()[0] != 127) {
        return Answer::Outside(*a);
    }
    if let Some(a) = answers.iter().find(|a| is_refusal(**a)) {
        return Answer::Refused(*a);
    }
    answers
        .iter()
        .find(|a| returns.is_empty() || returns.iter().any(|n| n.contains(*a)))
        .map_or(Answer::NotListed, |a| Answer::Listed(*a))
}

fn is_refusal(a: Ipv4Addr) -> bool {
    let [x, y, z, _] = a.octets();
    (x, y, z) == (127, 255, 255)
}

/// What a session does with a client, once asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Not listed enough (or no list could say).
    Clear,
    /// Each RCPT but postmaster's gets this reply.
    Reject(Reply),
    /// The message gets this field (with its CRLF) in front.
    Mark(String),
}

/// One list's finding for one client.
#[derive(Debug, Clone)]
struct Finding {
    zone: String,
    weight: u32,
    answer: Answer,
    txt: Option<String>,
}

/// The findings for one client, kept until `until`.
struct Cached {
    findings: Vec<Finding>,
    until: Instant,
}

/// The lists of the config, their resolver and the answers kept. One per server config.
pub struct Blocklists {
    config: Dnsbl,
    resolver: Option<TokioResolver>,
    cache: Mutex<HashMap<IpAddr, Cached>>,
    /// When each zone's refusal (true) or answer outside 127.0.0.0/8 (false) was last
    /// logged.
    logged: Mutex<HashMap<(String, bool), Instant>>,
}

impl Blocklists {
    /// The lists `config` names, asked through `[dns] nameservers` (or the system resolver).
    /// A resolver that cannot be built is logged, and then no list is asked.
    pub fn new(config: &Config) -> Blocklists {
        let dnsbl = config.inbound.dnsbl.clone();
        let resolver = if dnsbl.lists.is_empty() {
            None
        } else {
            crate::relay::mx::resolver(&config.dns.nameservers, IpFamily::Any)
                .inspect_err(|e| warn!(error = %e, "DNS blocklists not asked: no resolver"))
                .ok()
        };
        Blocklists {
            config: dnsbl,
            resolver,
            cache: Mutex::default(),
            logged: Mutex::default(),
        }
    }

    /// True when there are lists to ask.
    pub fn configured(&self) -> bool {
        !self.config.lists.is_empty()
    }

    /// What the lists say of `ip`, from the kept answers or asked now.
    pub async fn check(&self, ip: IpAddr) -> Standing {
        let ip = ip.to_canonical();
        let now = Instant::now();
        let kept = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&ip)
            .filter(|c| c.until > now)
            .map(|c| c.findings.clone());
        let findings = match kept {
            Some(f) => f,
            None => self.ask(ip).await,
        };
        self.standing(ip, &findings)
    }

    /// Asks every list about `ip` at once, for at most [`LOOKUP_TIMEOUT`]; keeps the answers
    /// when every list gave one.
    async fn ask(&self, ip: IpAddr) -> Vec<Finding> {
        let Some(resolver) = &self.resolver else {
            return Vec::new();
        };
        let want_txt = self.config.action == DnsblAction::Reject;
        let mut set = JoinSet::new();
        for (i, list) in self.config.lists.iter().enumerate() {
            let (resolver, name) = (resolver.clone(), query_name(ip, &list.zone.to_string()));
            let returns = list.returns.clone();
            set.spawn(async move { (i, lookup(&resolver, &name, &returns, want_txt).await) });
        }
        let deadline = Instant::now() + LOOKUP_TIMEOUT;
        let mut findings = Vec::new();
        let mut ttl = MAX_TTL;
        let mut complete = true;
        let mut answered = vec![false; self.config.lists.len()];
        while !set.is_empty() {
            match tokio::time::timeout_at(deadline, set.join_next()).await {
                Ok(Some(Ok((i, looked)))) => {
                    answered[i] = true;
                    let list = &self.config.lists[i];
                    let zone = list.zone.to_string();
                    match looked {
                        Ok(l) => {
                            ttl = ttl.min(l.ttl);
                            self.log_odd(&zone, ip, l.answer);
                            let finding = Finding {
                                zone,
                                weight: list.weight,
                                answer: l.answer,
                                txt: l.txt,
                            };
                            findings.push((i, finding));
                        }
                        Err(e) => {
                            complete = false;
                            warn!(zone = %zone, client = %ip, error = %e,
                                "DNS blocklist lookup failed; taken as not listed");
                        }
                    }
                }
                Ok(Some(Err(_))) | Ok(None) => complete = false,
                Err(_) => {
                    complete = false;
                    for (i, _) in answered.iter().enumerate().filter(|(_, a)| !**a) {
                        warn!(zone = %self.config.lists[i].zone, client = %ip,
                            timeout = ?LOOKUP_TIMEOUT,
                            "DNS blocklist did not answer in time; taken as not listed");
                    }
                    set.abort_all();
                    break;
                }
            }
        }
        // In the file's order, whichever answered first.
        findings.sort_by_key(|(i, _)| *i);
        let findings: Vec<Finding> = findings.into_iter().map(|(_, f)| f).collect();
        if complete {
            self.keep(ip, &findings, ttl);
        }
        findings
    }

    /// Keeps `findings` for `ttl`, unless the table is full of answers still good.
    fn keep(&self, ip: IpAddr, findings: &[Finding], ttl: Duration) {
        let now = Instant::now();
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, c| c.until > now);
        }
        if cache.len() < MAX_CACHED || cache.contains_key(&ip) {
            let until = now + ttl.min(MAX_TTL);
            cache.insert(
                ip,
                Cached {
                    findings: findings.to_vec(),
                    until,
                },
            );
        }
    }

    /// Logs a refusal code or an answer outside 127.0.0.0/8, each at most once per
    /// [`LOG_EVERY`] per zone.
    fn log_odd(&self, zone: &str, ip: IpAddr, answer: Answer) {
        let (Answer::Refused(a) | Answer::Outside(a)) = answer else {
            return;
        };
        let now = Instant::now();
        let key = (zone.to_string(), matches!(answer, Answer::Refused(_)));
        let mut logged = self.logged.lock().unwrap_or_else(PoisonError::into_inner);
        if logged
            .get(&key)
            .is_some_and(|t| now.duration_since(*t) < LOG_EVERY)
        {
            return;
        }
        logged.insert(key, now);
        match answer {
            Answer::Refused(_) => warn!(zone, client = %ip, answer = %a,
                "DNS blocklist refused our query (public resolver or too many queries?); \
                 taken as not listed; logged once an hour"),
            _ => warn!(zone, client = %ip, answer = %a,
                "DNS blocklist answered outside 127.0.0.0/8; taken as not listed; \
                 logged once an hour"),
        }
    }

    /// What `findings` amount to under the threshold and the action.
    fn standing(&self, ip: IpAddr, findings: &[Finding]) -> Standing {
        let listed: Vec<&Finding> = findings
            .iter()
            .filter(|f| matches!(f.answer, Answer::Listed(_)))
            .collect();
        let score: u32 = listed.iter().map(|f| f.weight).sum();
        if listed.is_empty() || score < self.config.threshold {
            return Standing::Clear;
        }
        let zones: Vec<&str> = listed.iter().map(|f| f.zone.as_str()).collect();
        info!(client = %ip, zones = %zones.join(","), score,
            action = self.config.action.name(), "client listed by DNS blocklists");
        match self.config.action {
            DnsblAction::Reject => Standing::Reject(refusal(ip, &listed)),
            DnsblAction::Mark => Standing::Mark(mark(ip, &listed)),
        }
    }
}

/// `554 5.7.1 Client [ip] listed by zone, zone: TXT` (RFC 5782 §2.1: the TXT record says
/// why), the TXT cut and made printable ASCII.
fn refusal(ip: IpAddr, listed: &[&Finding]) -> Reply {
    let zones: Vec<&str> = listed.iter().map(|f| f.zone.as_str()).collect();
    let mut text = format!("Client [{ip}] listed by {}", zones.join(", "));
    if let Some(txt) = listed.iter().find_map(|f| f.txt.as_deref()) {
        text.push_str(": ");
        text.push_str(&printable(txt, MAX_TXT));
    }
    // Within a reply line's 512 octets (RFC 5321 §4.5.3.1.5) with the codes.
    text.truncate(450);
    Reply::new(554, "5.7.1", text)
}

/// `X-DNSBL: ip listed by zone (answer)`, each further list on a folded line.
fn mark(ip: IpAddr, listed: &[&Finding]) -> String {
    let parts: Vec<String> = listed
        .iter()
        .map(|f| match f.answer {
            Answer::Listed(a) => format!("{} ({a})", f.zone),
            _ => f.zone.clone(),
        })
        .collect();
    format!("{MARK_FIELD}: {ip} listed by {}\r\n", parts.join(",\r\n\t"))
}

/// Our `X-DNSBL:` field in front of a message from the `smtp` listener (`mark`: the field
/// [`Standing::Mark`] holds), and every one the client sent removed: only ours says what
/// the lists said.
pub fn mark_fields(passed: &mut super::pipeline::Passed, mark: Option<&str>) {
    passed.remove.push(FieldRemoval {
        name: MARK_FIELD.to_string(),
        when: None,
    });
    if let Some(field) = mark {
        passed.add.insert_str(0, field);
    }
}

/// `text` with anything but printable ASCII as `?`, at most `max` characters.
fn printable(text: &str, max: usize) -> String {
    text.chars()
        .take(max)
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// One list's answer for one client, and how long it holds.
struct Looked {
    answer: Answer,
    ttl: Duration,
    txt: Option<String>,
}

/// Asks one list (`name` is [`query_name`]'s): A records, and with `want_txt` the TXT
/// record of a listing.
async fn lookup(
    resolver: &TokioResolver,
    name: &str,
    returns: &[Ipv4Net],
    want_txt: bool,
) -> Result<Looked, String> {
    let (answers, ttl) = match resolver.lookup(name, RecordType::A).await {
        Ok(lookup) => {
            let records = lookup.answers();
            let ttl = records.iter().map(|r| r.ttl).min().unwrap_or(0);
            let answers: Vec<Ipv4Addr> = records
                .iter()
                .filter_map(|r| match &r.data {
                    RData::A(a) => Some(a.0),
                    _ => None,
                })
                .collect();
            (answers, Duration::from_secs(u64::from(ttl)))
        }
        Err(NetError::Dns(DnsError::NoRecordsFound(nr))) => {
            let ttl = nr
                .negative_ttl
                .map_or(NEGATIVE_TTL, |t| Duration::from_secs(u64::from(t)));
            (Vec::new(), ttl)
        }
        Err(e) => return Err(e.to_string()),
    };
    let answer = judge(&answers, returns);
    let txt = match answer {
        Answer::Listed(_) if want_txt => txt(resolver, name).await,
        _ => None,
    };
    Ok(Looked { answer, ttl, txt })
}

/// The first TXT record at `name`, its strings joined; `None` on any failure.
async fn txt(resolver: &TokioResolver, name: &str) -> Option<String> {
    let lookup = resolver.txt_lookup(name).await.ok()?;
    lookup.answers().iter().find_map(|r| match &r.data {
        RData::TXT(t) => Some(
            t.txt_data
                .iter()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .collect::<String>(),
        ),
        _ => None,
    })
}

#[cfg(test)]
#[path = "dnsbl_tests.rs"]
mod tests;
