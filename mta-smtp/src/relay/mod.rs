//! Remote delivery: one attempt for the recipients of one message in one destination
//! domain. Finds the hosts ([`mx`], or the configured smarthost), gives each the TLS policy
//! it must meet (`policy`: DANE for a host with TLSA records, [`dane`], else the domain's),
//! tries hosts in order until one takes the transaction, and maps every result onto an
//! [`Outcome`] per recipient.
//!
//! Next host on a failed connection, a refused greeting, or a TLS failure where the policy
//! demands TLS. Once a transaction has started on a host, its answer is final for this
//! attempt (another host could otherwise receive the message twice).
//!
//! Bounds, so that one slow or hostile destination costs little and reaches nothing
//! internal: at most [`MAX_HOSTS`] MX hosts and [`MAX_ADDRESSES`] addresses of each per
//! attempt (Postfix's limits); a connection slot for the domain before one of the overall
//! slots ([`limits`]); `outbound.connection_timeout` for each connection and
//! `outbound.attempt_timeout` for the attempt (a connection ends by whichever comes first,
//! and its error names that one); destinations whose connections keep
//! failing are suspended ([`limits::Suspensions`]); addresses inside our own networks and
//! our own listeners are refused ([`mx::refused`]).

mod ad;
pub mod dane;
pub mod dns;
pub mod family;
pub mod limits;
pub mod memory;
pub mod mta_sts;
pub mod mx;
pub mod no_chunking;
mod policy;
pub mod slots;
pub mod tlsrpt;

pub use policy::PolicySource;
use policy::{HostPlan, Planner, TlsWish, sts_testing_report, tls_level};

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use mta_core::address::{Address, Domain};
use mta_core::config::{Config, IpFamily, PasswordSource, SmarthostTls};
use mta_core::envelope::Envelope;
use mta_core::metrics::METRICS;
use mta_core::seams::{Outcome, Remote, Verdict};
use mta_core::text::escape;
use rustls::RootCertStore;
use tracing::{info, warn};

use crate::client::reply::{MAX_KEPT_TEXT, cut};
use crate::client::{
    ClientError, ClientSettings, Connection, OutgoingMessage, RcptResult, Target, Timeouts,
    TlsInfo, TlsPolicy, Verification, roots_with, webpki_roots,
};
use mail_auth::report::tlsrpt::ResultType;
use memory::TlsMemory;
use tlsrpt::{ReportPolicy, Session, TlsReports};

/// What the relay keeps from one config to the next (a reload builds a new relay): the
/// downgrade memory, the TLS report counts, the connection slots, the suspended
/// destinations and what the log last said about DNSSEC validation.
#[derive(Clone)]
pub struct Kept {
    /// Domains that had verified TLS.
    pub memory: Arc<TlsMemory>,
    /// This period's TLS report counts.
    pub reports: Arc<TlsReports>,
    /// The outbound connection slots (`outbound.max_connections`, `max_per_domain`).
    pub limits: Arc<limits::Limits>,
    /// Destinations whose connections keep failing.
    pub dead: Arc<limits::Suspensions>,
    /// What the log last said about DNSSEC validation.
    pub dnssec_told: Arc<dane::Told>,
    /// Hosts that refused mail over IPv6 for reverse DNS or IPv6: IPv4 only for a while.
    pub fallback: Arc<family::Ipv4Fallback>,
    /// The DMARC results counted for our reports; `None` unless `[dmarc_reports.send]` is on
    /// at start-up.
    pub dmarc: Option<Arc<crate::dmarc_send::Recorder>>,
    /// Hosts that offer CHUNKING but did not take BDAT: DATA for a while.
    pub no_chunking: Arc<no_chunking::NoChunking>,
}

impl Kept {
    /// A fresh set for `config` at start-up, with the downgrade memory `memory`.
    pub fn new(config: &Config, memory: Arc<TlsMemory>) -> Kept {
        Kept {
            memory,
            reports: Default::default(),
            limits: Arc::new(limits::Limits::new(
                config.outbound.max_connections,
                config.outbound.max_per_domain,
            )),
            dead: Default::default(),
            dnssec_told: Default::default(),
            fallback: Default::default(),
            dmarc: config.dmarc_reports.send.enabled.then(|| {
                Arc::new(crate::dmarc_send::Recorder::open(
                    &config.data_dir,
                    config.dmarc_reports.send.max_records,
                ))
            }),
            no_chunking: Default::default(),
        }
    }
}

pub use policy::MAX_HOSTS;
/// Addresses tried per MX host.
pub const MAX_ADDRESSES: usize = 2;
/// How long an attempt waits for one of its domain's slots before it is deferred: the
/// scheduler's remote attempts must not all sit waiting for one busy (or stalled) domain
/// while messages for other domains wait for an attempt.
pub const SLOT_PATIENCE: Duration = Duration::from_secs(30);
use mx::DnsFailure;

/// Why the relay could not be set up (at start-up, so the operator sees it at once).
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The DNS resolver could not be built.
    #[error("DNS: {0}")]
    Dns(String),
    /// A CA file could not be read.
    #[error("{key}: {reason}")]
    CaFile {
        /// The config key.
        key: String,
        /// What went wrong.
        reason: String,
    },
    /// The smarthost password could not be read.
    #[error("outbound relay password: {0}")]
    Password(String),
    /// A DKIM signing key could not be loaded.
    #[error(transparent)]
    Dkim(#[from] crate::dkim::KeyError),
}

struct Smarthost {
    host: String,
    port: u16,
    policy: TlsPolicy,
    auth: Option<(String, String)>,
}

/// How much longer than `outbound.attempt_timeout` the attempt as a whole may run before
/// it is cancelled. Each connection already ends by the attempt's deadline (a [`Cutoff`]),
/// so the stall is seen and counted by the connection code; this outer bound is the last
/// resort for the steps that have none of their own (DNS, the wait for a slot).
const ATTEMPT_SLACK: Duration = Duration::from_secs(5);

/// When one connection must end: `outbound.connection_timeout` from its start, or the
/// attempt's deadline (`outbound.attempt_timeout`) when that comes first.
#[derive(Clone, Copy)]
struct Cutoff {
    at: tokio::time::Instant,
    /// The attempt's deadline is the earlier one.
    attempt: bool,
}

impl Cutoff {
    /// The cutoff of a connection starting now.
    fn from_now(connection: Duration, attempt: tokio::time::Instant) -> Cutoff {
        let own = tokio::time::Instant::now() + connection;
        match attempt < own {
            true => Cutoff {
                at: attempt,
                attempt: true,
            },
            false => Cutoff {
                at: own,
                attempt: false,
            },
        }
    }

    /// The error of a connection cut off: it names the limit that expired.
    fn expired(self) -> ClientError {
        match self.attempt {
            true => ClientError::AttemptDeadline,
            false => ClientError::Deadline,
        }
    }
}

/// How long an open connection waits for the next message to the same destination.
const IDLE: Duration = Duration::from_secs(5);

/// A connection kept open after a transaction, for the next message to the same place.
struct Idle {
    conn: Connection,
    target: Target,
    tls: String,
    since: Instant,
}

/// Where one attempt goes: the hosts in order with their TLS, the domain's MTA-STS policy,
/// the port, and the smarthost's credentials.
struct Route {
    plans: Vec<HostPlan>,
    sts: Option<Arc<mta_sts::Policy>>,
    port: u16,
    auth: Option<(String, String)>,
}

impl Route {
    /// The policy of the first host: the pool of kept connections looked in first.
    fn first_source(&self) -> PolicySource {
        self.plans
            .first()
            .map_or(PolicySource::Opportunistic, |p| p.source)
    }
}

/// What the hosts of an attempt that none took came to.
struct Tried {
    /// The last failure, for the outcome.
    last: String,
    /// The last host failed the TLS its policy demands.
    tls_failed: bool,
    /// The policy of the last host tried.
    source: PolicySource,
    /// Addresses not connected to because they are internal.
    refused: usize,
    /// Addresses found.
    found: usize,
}

/// Where one connection goes, and what is reported of it.
struct At<'a> {
    domain: &'a Domain,
    target: &'a Target,
    source: PolicySource,
    report: ReportPolicy<'a>,
    /// TLS reports are kept for this destination (an MX host, not the smarthost).
    remember: bool,
    /// The suspension keys a stall of this connection counts against: the destination
    /// and the remote address.
    suspend: [&'a str; 2],
}

/// Remote delivery, shared by all attempts.
pub struct Relay {
    idle: Mutex<HashMap<String, Vec<Idle>>>,
    config: Arc<Config>,
    resolver: TokioResolver,
    webpki: Arc<RootCertStore>,
    domain_roots: HashMap<Domain, Arc<RootCertStore>>,
    smarthost: Option<Smarthost>,
    limits: Arc<limits::Limits>,
    dead: Arc<limits::Suspensions>,
    memory: Arc<TlsMemory>,
    reports: Arc<TlsReports>,
    sts: Option<mta_sts::Sts>,
    dnssec: Option<dane::Dnssec>,
    fallback: Arc<family::Ipv4Fallback>,
    no_chunking: Arc<no_chunking::NoChunking>,
}

impl Relay {
    /// Builds the relay from the config: resolver, CA roots, smarthost credentials.
    ///
    /// # Errors
    /// [`RelayError`] naming what could not be loaded.
    pub fn new(config: Arc<Config>, kept: Kept) -> Result<Relay, RelayError> {
        let out = &config.outbound;
        let resolver = mx::resolver(&config.dns.nameservers, out.ip).map_err(RelayError::Dns)?;
        let sts = match out.mta_sts {
            true => {
                let roots = load_roots(out.mta_sts_ca_file.as_deref(), "outbound.mta_sts_ca_file")?;
                Some(
                    mta_sts::Sts::new(resolver.clone(), roots, out.mta_sts_port, &config.data_dir)
                        .with_internal(out.allow_internal.clone(), out.refuse_private),
                )
            }
            false => None,
        };
        // DANE is for MX hosts; everything goes to the smarthost when there is one.
        let dnssec = match out.dane && out.relay.is_none() {
            true => Some(
                dane::Dnssec::new(&config)
                    .map_err(RelayError::Dns)?
                    .told_in(kept.dnssec_told.clone()),
            ),
            false => None,
        };
        let webpki = Arc::new(webpki_roots());
        let mut domain_roots = HashMap::new();
        for (domain, policy) in &out.tls {
            if let Some(ca) = &policy.ca_file {
                let roots = load_roots(Some(ca), &format!("outbound.tls.\"{domain}\".ca_file"))?;
                domain_roots.insert(domain.clone(), roots);
            }
        }
        let smarthost = match &out.relay {
            None => None,
            Some(s) => {
                let roots = load_roots(s.ca_file.as_deref(), "outbound.relay_ca_file")?;
                let policy = match s.tls {
                    SmarthostTls::Starttls => TlsPolicy::Required { roots },
                    SmarthostTls::Implicit => TlsPolicy::Implicit { roots },
                };
                let auth = match (&s.user, &s.password) {
                    (Some(user), Some(source)) => Some((user.clone(), read_password(source)?)),
                    _ => None,
                };
                Some(Smarthost {
                    host: s.host.clone(),
                    port: s.port,
                    policy,
                    auth,
                })
            }
        };
        Ok(Relay {
            idle: Mutex::new(HashMap::new()),
            limits: kept.limits,
            dead: kept.dead,
            config,
            resolver,
            webpki,
            domain_roots,
            smarthost,
            memory: kept.memory,
            reports: kept.reports,
            sts,
            dnssec,
            fallback: kept.fallback,
            no_chunking: kept.no_chunking,
        })
    }

    /// What planning an MX delivery reads from the relay.
    fn planner(&self) -> Planner<'_> {
        Planner {
            config: &self.config,
            resolver: &self.resolver,
            webpki: &self.webpki,
            domain_roots: &self.domain_roots,
            memory: &self.memory,
            reports: &self.reports,
            sts: self.sts.as_ref(),
            dnssec: self.dnssec.as_ref(),
        }
    }

    fn settings(&self, policy: TlsPolicy, auth: Option<(String, String)>) -> ClientSettings {
        ClientSettings {
            helo: self.config.hostname.to_string(),
            policy,
            auth,
            connect_timeout: self.config.outbound.connect_timeout,
            timeouts: Timeouts::default(),
        }
    }

    /// One attempt for `rcpts` (all in `domain`) of one message, `prefix` (our header fields,
    /// such as DKIM signatures, whole lines) sent in front of `body`; one outcome per
    /// recipient. Ends within `outbound.attempt_timeout`, waiting for a connection slot
    /// included: each connection ends by then (so a stall cut short by it still counts
    /// against the destination's suspension), and the attempt is cancelled
    /// [`ATTEMPT_SLACK`] later.
    pub async fn deliver(
        &self,
        envelope: &Envelope,
        prefix: &[u8],
        body: &[u8],
        domain: &Domain,
        rcpts: &[Address],
    ) -> Vec<Outcome> {
        let limit = self.config.outbound.attempt_timeout;
        let deadline = tokio::time::Instant::now() + limit;
        let attempt = self.attempt(envelope, prefix, body, domain, rcpts, deadline);
        match tokio::time::timeout(limit + ATTEMPT_SLACK, attempt).await {
            Ok(outcomes) => outcomes,
            Err(_) => {
                warn!(%domain, timeout = ?limit, "attempt took longer than outbound.attempt_timeout");
                let why = format!(
                    "no host for {domain} took the message within \
                     outbound.attempt_timeout ({} s)",
                    limit.as_secs()
                );
                vec![Outcome::deferred("4.4.1", why); rcpts.len()]
            }
        }
    }

    /// Where the suspension of dead destinations counts: the smarthost, or the domain.
    fn destination(&self, domain: &Domain) -> String {
        match &self.smarthost {
            Some(s) => format!("smarthost {}:{}", s.host, s.port),
            None => domain.to_string(),
        }
    }

    /// One attempt, in named steps: admission (suspension, then a slot), the route (the
    /// smarthost, or the domain's plan), a kept connection if one is alive, then each host
    /// in turn, each connection ending by `deadline` at the latest; when none took the
    /// message, one outcome says why.
    async fn attempt(
        &self,
        envelope: &Envelope,
        prefix: &[u8],
        body: &[u8],
        domain: &Domain,
        rcpts: &[Address],
        deadline: tokio::time::Instant,
    ) -> Vec<Outcome> {
        let destination = self.destination(domain);
        let (_probe, _slot) = match self.admit(&destination, domain).await {
            Ok(held) => held,
            Err(outcome) => return vec![outcome; rcpts.len()],
        };
        let mut outcomes = self
            .send_once(envelope, prefix, body, domain, rcpts, deadline)
            .await;
        // Recipients refused over IPv6 for reverse DNS or IPv6 go again at once, over IPv4.
        let again = self.refused_over_ipv6(domain, &outcomes).await;
        if !again.is_empty() {
            let subset: Vec<Address> = again.iter().map(|&i| rcpts[i].clone()).collect();
            let retried = self
                .send_once(envelope, prefix, body, domain, &subset, deadline)
                .await;
            for (i, outcome) in again.into_iter().zip(retried) {
                outcomes[i] = outcome;
            }
        }
        outcomes
    }

    /// The route, a kept connection or each host in turn, for `rcpts`; when none took
    /// the message, one outcome says why.
    async fn send_once(
        &self,
        envelope: &Envelope,
        prefix: &[u8],
        body: &[u8],
        domain: &Domain,
        rcpts: &[Address],
        deadline: tokio::time::Instant,
    ) -> Vec<Outcome> {
        let destination = self.destination(domain);
        let msg = OutgoingMessage::of(envelope, rcpts, prefix, body);
        let route = match self.route(envelope, body, domain).await {
            Ok(route) => route,
            Err(outcome) => return vec![outcome; rcpts.len()],
        };
        if let Some(outcomes) = self
            .on_kept_connection(domain, &route, &msg, deadline)
            .await
        {
            return outcomes;
        }
        match self
            .try_hosts(domain, &destination, &route, &msg, deadline)
            .await
        {
            Ok(outcomes) => outcomes,
            Err(tried) => vec![self.no_host_took_it(domain, envelope, &tried); rcpts.len()],
        }
    }

    /// Admission: a suspended destination is deferred before it waits for a slot (its
    /// messages must not queue up behind the one probe), then a slot of the domain's, then
    /// the suspension again (it may have begun while this attempt waited: the others that
    /// waited with it must not all connect now).
    async fn admit(
        &self,
        destination: &str,
        domain: &Domain,
    ) -> Result<(Option<limits::Probe>, limits::Slot), Outcome> {
        let interval = self.config.queue.retry_first;
        let probe = match self.dead.admit(destination, interval, Instant::now()) {
            limits::Admit::Go => None,
            limits::Admit::Probe(p) => {
                info!(%destination, "probing a suspended destination");
                Some(p)
            }
            limits::Admit::Skip(why) => return Err(suspended(&why)),
        };
        let slot = match self.limits.acquire(domain, SLOT_PATIENCE).await {
            Ok(slot) => slot,
            Err(busy) => return Err(suspended(&busy.to_string())),
        };
        let probe = match probe {
            Some(p) => Some(p),
            None => match self.dead.admit(destination, interval, Instant::now()) {
                limits::Admit::Go => None,
                limits::Admit::Probe(p) => Some(p),
                limits::Admit::Skip(why) => return Err(suspended(&why)),
            },
        };
        Ok((probe, slot))
    }

    /// Where the message goes: the smarthost, or the domain's MX plan.
    async fn route(
        &self,
        envelope: &Envelope,
        body: &[u8],
        domain: &Domain,
    ) -> Result<Route, Outcome> {
        let route = match &self.smarthost {
            Some(s) => {
                let plan = HostPlan {
                    host: mx::MxHost {
                        name: s.host.clone(),
                        preference: 0,
                    },
                    policy: s.policy.clone(),
                    source: PolicySource::Configured,
                    dane: None,
                };
                Route {
                    plans: vec![plan],
                    sts: None,
                    port: s.port,
                    auth: s.auth.clone(),
                }
            }
            None => {
                let plan = self
                    .planner()
                    .plan(domain, TlsWish::of(envelope, body))
                    .await?;
                Route {
                    plans: plan.hosts,
                    sts: plan.sts,
                    port: self.config.outbound.port,
                    auth: None,
                }
            }
        };
        Ok(route)
    }

    /// The downgrade memory and TLS reports are about MX hosts; the smarthost's TLS is
    /// always required.
    fn remembered<'a>(&self, domain: &'a Domain) -> Option<&'a Domain> {
        self.smarthost.is_none().then_some(domain)
    }

    /// The pool of kept connections for `domain` under `source`. A kept connection serves
    /// only attempts under the same policy: one opened opportunistically must never carry a
    /// message that needs verified TLS.
    fn pool_key(&self, domain: &Domain, source: PolicySource) -> String {
        match &self.smarthost {
            Some(_) => "smarthost".to_string(),
            None => format!("{domain} {}", source.name()),
        }
    }

    /// A connection left open by an earlier message to the same place: RSET proves it is
    /// still alive (RFC 5321 §4.1.1.5), then it carries this message too. `None` when no
    /// kept connection is alive.
    async fn on_kept_connection(
        &self,
        domain: &Domain,
        route: &Route,
        msg: &OutgoingMessage<'_>,
        attempt: tokio::time::Instant,
    ) -> Option<Vec<Outcome>> {
        let key = self.pool_key(domain, route.first_source());
        let limit = self.config.outbound.connection_timeout;
        let interval = self.config.queue.retry_first;
        while let Some(mut idle) = self.take_idle(&key) {
            let (ip, capped) = (idle.target.addr.ip(), self.smarthost.is_none());
            if ip.is_ipv6() && self.fallback.active(&idle.target.name, Instant::now()) {
                tokio::spawn(idle.conn.quit());
                continue;
            }
            let Ok(_at) = limits::admit_address(&self.limits, &self.dead, ip, capped, interval)
            else {
                tokio::spawn(idle.conn.quit());
                continue;
            };
            let cutoff = Cutoff::from_now(limit, attempt);
            if let Ok(Ok(())) = tokio::time::timeout_at(cutoff.at, idle.conn.reset()).await {
                self.no_chunking.apply(&mut idle.conn, &idle.target.name);
                let result = tokio::time::timeout_at(cutoff.at, idle.conn.send(msg))
                    .await
                    .unwrap_or(Err(cutoff.expired()));
                self.no_chunking.learn(&idle.target.name, &result);
                let dsn = idle.conn.extensions().dsn;
                let outcomes = self.outcomes(&idle.target, &idle.tls, msg.rcpts, &result, dsn);
                self.remember(self.remembered(domain), idle.conn.tls(), &outcomes);
                if result.is_ok() && idle.conn.reusable() {
                    self.put_idle(&key, idle);
                }
                return Some(outcomes);
            }
        }
        None
    }

    /// Each host of the route in turn, each of its addresses, until one takes the message
    /// (its outcomes), or what the last failure was when none did.
    async fn try_hosts(
        &self,
        domain: &Domain,
        destination: &str,
        route: &Route,
        msg: &OutgoingMessage<'_>,
        attempt: tokio::time::Instant,
    ) -> Result<Vec<Outcome>, Tried> {
        let Route {
            plans,
            sts,
            port,
            auth,
        } = route;
        let port = *port;
        let limit = self.config.outbound.connection_timeout;
        let remember = self.remembered(domain);
        let testing = sts.as_ref().filter(|p| p.mode == mta_sts::Mode::Testing);
        let mut tried = Tried {
            last: String::from("no host to try"),
            tls_failed: false,
            source: route.first_source(),
            refused: 0,
            found: 0,
        };
        for plan in plans.iter().take(MAX_HOSTS) {
            let host = &plan.host;
            tried.source = plan.source;
            let source = plan.source;
            let settings = self.settings(plan.policy.clone(), auth.clone());
            let report = plan.report(sts.as_deref());
            let ips = match self.ips(&host.name).await {
                Ok(ips) => ips,
                Err(e) => {
                    let e = kept(&e.to_string());
                    warn!(%domain, mx = %escape(&host.name), error = %escape(&e), "MX host has no usable address");
                    tried.last = format!("{}: {e}", host.name);
                    continue;
                }
            };
            for ip in ips.into_iter().take(MAX_ADDRESSES) {
                let target = Target {
                    addr: SocketAddr::new(ip, port),
                    name: host.name.clone(),
                };
                tried.found += 1;
                if let Some(why) = self.refused(&target) {
                    warn!(%domain, mx = %host.name, %ip, reason = why, "not connecting: internal address");
                    tried.last = format!("{} [{ip}]: {why}", host.name);
                    tried.refused += 1;
                    continue;
                }
                let capped = self.smarthost.is_none();
                let interval = self.config.queue.retry_first;
                let held = match limits::admit_address(
                    &self.limits,
                    &self.dead,
                    ip,
                    capped,
                    interval,
                ) {
                    Ok(held) => held,
                    Err(why) => {
                        info!(%domain, mx = %escape(&host.name), %ip, reason = %escape(&why), "not connecting now");
                        tried.last = format!("{} [{ip}]: {why}", host.name);
                        continue;
                    }
                };
                let at = At {
                    domain,
                    target: &target,
                    source,
                    report,
                    remember: remember.is_some(),
                    suspend: [destination, held.key()],
                };
                let cutoff = Cutoff::from_now(limit, attempt);
                match self.open_counted(&at, &settings, cutoff).await {
                    Ok(conn) => {
                        return Ok(self.deliver_on(&at, conn, testing, cutoff, msg).await);
                    }
                    Err(e) => self.connection_failed(&at, &e, &mut tried),
                }
            }
        }
        Err(tried)
    }

    /// Opens a connection to `at.target` by `cutoff`; one that fails to open counts
    /// against the suspension of its destination and address (a TLS failure says nothing of
    /// whether the host is alive, and one that opens is judged when its transaction ends).
    async fn open_counted(
        &self,
        at: &At<'_>,
        settings: &ClientSettings,
        cutoff: Cutoff,
    ) -> Result<Connection, ClientError> {
        let target = at.target;
        let opened = tokio::time::timeout_at(cutoff.at, Connection::open(target, settings))
            .await
            .unwrap_or(Err(cutoff.expired()));
        if let Err(e) = &opened
            && !matches!(
                e,
                ClientError::Tls(_)
                    | ClientError::StartTlsNotOffered
                    | ClientError::TlsRequiredButFailed(_)
            )
        {
            self.dead.record(
                &at.suspend,
                Err(&format!(
                    "4.4.1 {} [{}]: {e}",
                    target.name,
                    target.addr.ip()
                )),
                self.config.queue.retry_first,
                Instant::now(),
            );
        }
        opened
    }

    /// Sends the message on a connection just opened: TLS reporting, the outcomes, and the
    /// connection kept for the next message when it can carry one.
    async fn deliver_on(
        &self,
        at: &At<'_>,
        mut conn: Connection,
        testing: Option<&Arc<mta_sts::Policy>>,
        cutoff: Cutoff,
        msg: &OutgoingMessage<'_>,
    ) -> Vec<Outcome> {
        let (domain, host, ip) = (at.domain, &at.target.name, at.target.addr.ip());
        let tls = format!("{} policy={}", describe_tls(conn.tls()), at.source.name());
        if let Some(p) = testing {
            sts_testing_report(domain, host, p, conn.tls());
        }
        if at.remember {
            let session = session_of(at.report, host, ip, conn.tls());
            self.report(domain, at.report, session);
        }
        self.no_chunking.apply(&mut conn, host);
        let result = tokio::time::timeout_at(cutoff.at, conn.send(msg))
            .await
            .unwrap_or(Err(cutoff.expired()));
        self.no_chunking.learn(host, &result);
        let name = format!("{host} [{ip}]");
        let interval = self.config.queue.retry_first;
        self.dead
            .transaction_ended(&at.suspend, &name, &result, interval);
        let dsn = conn.extensions().dsn;
        let outcomes = self.outcomes(at.target, &tls, msg.rcpts, &result, dsn);
        self.remember(at.remember.then_some(domain), conn.tls(), &outcomes);
        if result.is_ok() && conn.reusable() {
            let idle = Idle {
                conn,
                target: at.target.clone(),
                tls,
                since: Instant::now(),
            };
            self.put_idle(&self.pool_key(domain, at.source), idle);
        }
        outcomes
    }

    /// Records a connection that failed: the log, `tried`, and the TLS report when TLS
    /// was what failed.
    fn connection_failed(&self, at: &At<'_>, e: &ClientError, tried: &mut Tried) {
        let (host, ip) = (&at.target.name, at.target.addr.ip());
        // The error may quote the server, or list every TLSA record.
        let why = kept(&e.to_string());
        warn!(domain = %at.domain, mx = %escape(host), %ip, policy = at.source.name(), error = %escape(&why), "connection attempt failed; trying the next host");
        tried.tls_failed = matches!(
            e,
            ClientError::Tls(_)
                | ClientError::StartTlsNotOffered
                | ClientError::TlsRequiredButFailed(_)
        );
        tried.last = format!("{host} [{ip}]: {why}");
        if tried.tls_failed && at.remember {
            let session = Session::Failure {
                kind: tlsrpt::failure_kind(&e.to_string()),
                mx: Some(host.clone()),
                ip: Some(ip),
                info: Some(why),
            };
            self.report(at.domain, at.report, session);
        }
    }

    /// Why no host took the message, for every recipient.
    fn no_host_took_it(&self, domain: &Domain, envelope: &Envelope, tried: &Tried) -> Outcome {
        let Tried {
            last,
            tls_failed,
            source,
            refused,
            found,
        } = tried;
        if *refused > 0 && refused == found && self.smarthost.is_none() {
            // Every address there is points inside: retrying will not change that until the
            // DNS does (RFC 3463 5.4.4: unable to route).
            return Outcome::failed(
                "5.4.4",
                format!(
                    "{domain} leads only to internal addresses, which mail is not sent \
                     to (outbound.allow_internal); last: {last}"
                ),
            );
        }
        if *tls_failed && envelope.require_tls {
            // RFC 8689 §4.2.1: a REQUIRETLS message that cannot get verified TLS is returned.
            return Outcome::failed(
                "5.7.30",
                format!(
                    "REQUIRETLS: no host for {domain} offered TLS with a verified \
                     certificate; last error: {last}"
                ),
            );
        }
        // RFC 3463: 4.7.5 when the last host failed the TLS the policy demands.
        let code = if *tls_failed { "4.7.5" } else { "4.4.1" };
        let hint = match (tls_failed, source) {
            (true, PolicySource::Memory) => format!(
                " (policy=memory: {domain} took mail over verified TLS before; \
                 `mta tls forget {domain}` allows less)"
            ),
            (true, PolicySource::DaneMemory) => format!(
                " (policy=dane-memory: {domain} has DANE (TLSA records) and DNSSEC validation \
                 does not work now; `mta tls forget {domain}` allows less)"
            ),
            _ => format!(" (policy={})", source.name()),
        };
        Outcome::deferred(
            code,
            format!("no host for {domain} took the message; last error: {last}{hint}"),
        )
    }

    /// Counts a session for the TLS reports, as [`Planner::report`].
    fn report(&self, domain: &Domain, policy: ReportPolicy<'_>, session: Session) {
        self.planner().report(domain, policy, session);
    }

    /// Remembers `domain` when a message was delivered to it over verified TLS.
    fn remember(&self, domain: Option<&Domain>, tls: Option<&TlsInfo>, outcomes: &[Outcome]) {
        let verified = tls.is_some_and(|t| matches!(t.verified, Verification::Verified));
        let delivered = outcomes.iter().any(|o| o.verdict == Verdict::Delivered);
        if let (Some(domain), true, true) = (domain, verified, delivered) {
            self.memory.verified(domain);
        }
    }

    /// An idle connection to `key` that has not waited too long; expired ones are closed.
    fn take_idle(&self, key: &str) -> Option<Idle> {
        let mut pool = self.idle.lock().expect("idle pool lock poisoned");
        let list = pool.get_mut(key)?;
        while let Some(idle) = list.pop() {
            if idle.since.elapsed() < IDLE {
                return Some(idle);
            }
            tokio::spawn(idle.conn.quit());
        }
        None
    }

    /// Keeps a connection for the next message to `key` (at most `max_per_domain` each).
    fn put_idle(&self, key: &str, mut idle: Idle) {
        idle.since = Instant::now();
        let mut pool = self.idle.lock().expect("idle pool lock poisoned");
        let list = pool.entry(key.to_string()).or_default();
        if list.len() < self.config.outbound.max_per_domain {
            list.push(idle);
        } else {
            tokio::spawn(idle.conn.quit());
        }
    }

    /// Closes connections that waited longer than [`IDLE`]; the router calls this every
    /// second.
    pub fn close_idle(&self) {
        let mut pool = self.idle.lock().expect("idle pool lock poisoned");
        for list in pool.values_mut() {
            let (keep, expired): (Vec<Idle>, Vec<Idle>) =
                list.drain(..).partition(|i| i.since.elapsed() < IDLE);
            *list = keep;
            for idle in expired {
                tokio::spawn(idle.conn.quit());
            }
        }
        pool.retain(|_, list| !list.is_empty());
    }

    /// Why mail must not go to `target`: an internal address not allowed by
    /// `outbound.allow_internal`, or one of our own listeners (a loop). The smarthost is
    /// the operator's own choice and never refused.
    fn refused(&self, target: &Target) -> Option<&'static str> {
        if self.smarthost.is_some() {
            return None;
        }
        let listen = &self.config.listen;
        // An IPv4 address written as IPv6 (mapped, NAT64) reaches the same listener.
        let v4 = |ip: IpAddr| match ip {
            IpAddr::V6(v6) => mx::embedded_v4(v6).map_or(ip, IpAddr::V4),
            IpAddr::V4(_) => ip,
        };
        let ours = listen
            .smtp
            .iter()
            .chain(&listen.submission)
            .chain(&listen.submissions)
            .any(|l| {
                l.port() == target.addr.port()
                    && (v4(l.ip()) == v4(target.addr.ip())
                        || (l.ip().is_unspecified()
                            && mx::internal(target.addr.ip(), false).is_some()))
            });
        if ours {
            return Some("a mail loop: one of our own listeners");
        }
        let out = &self.config.outbound;
        mx::refused(target.addr.ip(), &out.allow_internal, out.refuse_private)
    }

    async fn ips(&self, host: &str) -> Result<Vec<IpAddr>, DnsFailure> {
        let family = self.config.outbound.ip;
        let ips = match mx::addresses(&self.resolver, host).await {
            Ok(ips) => ips,
            Err(DnsFailure::Temporary(e)) => {
                METRICS.dns_error("address");
                return Err(DnsFailure::Temporary(e));
            }
            // The resolver asks only for the family `outbound.ip` keeps (`mx::resolver`):
            // "no such record" then means none of that family.
            Err(DnsFailure::Permanent(e)) => {
                let none_of_family = e == format!("{host} has no address record");
                return Err(match family {
                    IpFamily::Ipv4 if none_of_family => {
                        DnsFailure::Temporary(format!("no IPv4 address for {host}"))
                    }
                    IpFamily::Ipv6 if none_of_family => {
                        DnsFailure::Temporary(format!("no IPv6 address for {host}"))
                    }
                    _ => DnsFailure::Permanent(e),
                });
            }
        };
        let ipv4_only = self.fallback.active(host, Instant::now());
        family::order(host, ips, family, ipv4_only).map_err(DnsFailure::Temporary)
    }

    fn outcomes(
        &self,
        target: &Target,
        tls: &str,
        rcpts: &[Address],
        result: &Result<Vec<RcptResult>, ClientError>,
        dsn: bool,
    ) -> Vec<Outcome> {
        let at = format!("{} [{}] {tls}", target.name, target.addr.ip());
        match result {
            Ok(results) => rcpts
                .iter()
                .zip(results)
                .map(|(rcpt, r)| {
                    let remote = Remote {
                        host: Some(target.name.clone()),
                        at: at.clone(),
                    };
                    let mut outcome = r.outcome(remote);
                    // RFC 3461 §6.2: the server offers DSN and got the recipient's NOTIFY;
                    // a success notice is now its to send.
                    outcome.dsn_passed = dsn && outcome.verdict == Verdict::Delivered;
                    let result = outcome.verdict.name();
                    let text = outcome.to_string();
                    info!(%rcpt, mx = %escape(&target.name), ip = %target.addr.ip(), tls, result, reply = %escape(&text), "remote attempt");
                    METRICS.remote_attempt(result, tls_level(tls));
                    outcome
                })
                .collect(),
            Err(e) => {
                let e = kept(&e.to_string());
                warn!(mx = %escape(&target.name), ip = %target.addr.ip(), tls, error = %escape(&e), "transaction failed");
                METRICS.remote_attempt("error", tls_level(tls));
                let text = format!("transaction with {at} failed: {e}");
                vec![Outcome::deferred("4.4.2", text); rcpts.len()]
            }
        }
    }
}

/// What a connection that opened shows for TLS reporting: under an MTA-STS or DANE policy,
/// success only with a verified certificate; with no policy, success whenever TLS was
/// negotiated.
fn session_of(
    policy: ReportPolicy<'_>,
    mx: &str,
    ip: std::net::IpAddr,
    tls: Option<&TlsInfo>,
) -> Session {
    let failure = |kind, info: String| Session::Failure {
        kind,
        mx: Some(mx.to_string()),
        ip: Some(ip),
        info: Some(info),
    };
    match (tls, policy) {
        (None, _) => failure(ResultType::StartTlsNotSupported, "no STARTTLS".into()),
        (Some(_), ReportPolicy::None) => Session::Success,
        // No usable TLSA record: TLS was all DANE asked for (RFC 7672 §2.2).
        (Some(_), ReportPolicy::Tlsa { dane, .. }) if !dane.usable() => Session::Success,
        (Some(t), ReportPolicy::Sts(_) | ReportPolicy::Tlsa { .. }) => match &t.verified {
            Verification::Verified => Session::Success,
            Verification::Failed(why) => failure(tlsrpt::failure_kind(why), why.clone()),
        },
    }
}

/// `TLSv1.3 verified` / `TLSv1.2 unverified (UnknownIssuer)` / `plaintext`.
fn describe_tls(tls: Option<&TlsInfo>) -> String {
    match tls {
        None => "plaintext".into(),
        Some(t) => match &t.verified {
            Verification::Verified => format!("{} {} verified", t.version, t.cipher),
            Verification::Failed(why) => format!("{} {} unverified ({why})", t.version, t.cipher),
        },
    }
}

/// The outcome of an attempt a suspended destination refused: the suspension's reason
/// starts with the status of the failure that caused it (`4.4.1 …`).
fn suspended(why: &str) -> Outcome {
    Outcome::from_text(Verdict::Deferred, why)
}

/// Remote text as it is stored and logged: at most [`MAX_KEPT_TEXT`] octets.
fn kept(text: &str) -> String {
    cut(text, MAX_KEPT_TEXT).into_owned()
}

fn load_roots(ca_file: Option<&Path>, key: &str) -> Result<Arc<RootCertStore>, RelayError> {
    roots_with(ca_file)
        .map(Arc::new)
        .map_err(|e| RelayError::CaFile {
            key: key.to_string(),
            reason: e.to_string(),
        })
}

fn read_password(source: &PasswordSource) -> Result<String, RelayError> {
    match source {
        PasswordSource::Env(var) => std::env::var(var)
            .map_err(|_| RelayError::Password(format!("environment variable {var} is not set"))),
        PasswordSource::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                RelayError::Password(format!("cannot read {}: {e}", path.display()))
            })?;
            Ok(text.lines().next().unwrap_or("").to_string())
        }
    }
}
