//! The typed, validated configuration of `mta`, from one TOML file or built-in defaults.
//!
//! Owns: the file format (`file.rs`: `RawConfig` mirrors the file, unknown keys are refused),
//! defaults and validation (`validate.rs`, and `outbound.rs` for `[outbound]` and `[queue]`:
//! every problem is reported at once, each with its key and `file:line:column`), durations
//! such as `"5m"` (`duration.rs`), and the way back to TOML ([`Config::to_toml`], for
//! `mta check-config`). Leaves to others: reading the file, the machine's hostname and the
//! smarthost password (`mta-bin` hands us the text), and acting on the values.
//!
//! Limits and timeouts default to what RFC 5321 §4.5.3 asks of a server. Operators read
//! `docs/config.md`; a test keeps it listing exactly the keys this module accepts.

mod acme;
mod auth_backend;
mod authentication;
mod checker;
mod dmarc;
mod dmarc_send;
mod dnsbl;
mod duration;
mod file;
mod local;
mod milter;
mod outbound;
mod print;
mod process;
mod senders;
mod sending;
mod size;
mod srs;
mod tls_names;
mod validate;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::address::{Address, Domain};

pub use acme::{Acme, Challenge, LETS_ENCRYPT, is_ours};
pub use auth_backend::{Auth, AuthBackend};
pub use authentication::is_dkim_selector;
pub use dnsbl::{Dnsbl, DnsblAction, DnsblList};
pub use milter::{Milter, MilterAddress, OnFailure};
pub use process::Process;
pub use sending::SendingCaps;

/// How deep aliases of aliases are followed before the rest is taken as mailboxes.
const MAX_ALIAS_DEPTH: usize = 10;

/// Everything `mta` runs on. Built once at start by [`Config::from_toml`] or
/// [`Config::defaults`], then shared read-only as `Arc<Config>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Our name in the EHLO greeting, in `Received:` and in bounces. Default: the machine's
    /// hostname, or `localhost` if that is not a valid domain.
    pub hostname: Domain,
    /// Queue, self-signed certificate and Maildirs live here. Default `./mta-data`; a
    /// relative path is relative to the working directory of `mta`.
    pub data_dir: PathBuf,
    /// Mail for these domains is delivered here; anything else is relayed (only for
    /// authenticated users). Default `localhost` and [`Config::hostname`].
    pub local_domains: Vec<Domain>,
    /// Where the three kinds of listener accept connections.
    pub listen: Listen,
    /// The certificate the listeners present.
    pub tls: Tls,
    /// Per-session and per-message limits.
    pub limits: Limits,
    /// The resolver used for MX lookups.
    pub dns: Dns,
    /// Outbound SMTP delivery: connections, the smarthost and the TLS policy.
    pub outbound: Outbound,
    /// How the queue retries and when it gives up.
    pub queue: Queue,
    /// Alias address → the addresses it delivers to (other aliases, local mailboxes or remote
    /// addresses). Every alias is in one of [`Config::local_domains`].
    pub aliases: BTreeMap<Address, Vec<Address>>,
    /// Catch-all per local domain (`"@example.org" = [...]` in `[aliases]`): where mail for
    /// a local part that is neither a user nor an alias nor postmaster goes.
    pub catch_all: BTreeMap<Domain, Vec<Address>>,
    /// How local mail is delivered and how `user+tag@` addresses are read (`[local]`).
    pub local: Local,
    /// How long SIGTERM waits for open sessions to finish before closing them. Default 10 s.
    pub shutdown_grace: Duration,
    /// DKIM signing keys (`[dkim."example.org"]`), in file order. Outbound mail is signed
    /// with every key of its `From:` domain.
    pub dkim: Vec<DkimKey>,
    /// SPF, DKIM and DMARC checks on mail that arrives on the smtp listener (`[inbound]`).
    pub inbound: Inbound,
    /// Where Prometheus metrics are served over HTTP (`metrics.listen`); `None` (the
    /// default) serves none.
    pub metrics_listen: Option<SocketAddr>,
    /// The user `mta serve` runs as and its sandbox (`user`, `group`, `allow_root`,
    /// `sandbox`).
    pub process: Process,
    /// Sender rewriting for mail an alias forwards off-site (`[srs]`).
    pub srs: Srs,
    /// Login (lower case, [`Address::key`]) → the further addresses it may send as
    /// (`[senders]`), each of one of [`Config::local_domains`].
    pub senders: BTreeMap<String, Vec<crate::senders::SenderPattern>>,
    /// Where DMARC aggregate reports arrive and how much of them is kept
    /// (`[dmarc_reports]`); off when no address is set.
    pub dmarc_reports: DmarcReports,
    /// Where AUTH passwords are checked (`[auth]`).
    pub auth: Auth,
    /// `[acme]`: certificates from an ACME CA; `None` (no table): off.
    pub acme: Option<Acme>,
}

/// Sender rewriting (`[srs]`, see [`crate::srs`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Srs {
    /// Rewrite the sender of forwarded mail, and take bounces to the rewritten addresses.
    /// Default `true`.
    pub enabled: bool,
    /// The domain of the rewritten addresses, which must be local and whose SPF record must
    /// name our outgoing addresses. Default: [`Config::hostname`] when it is a local domain,
    /// else the first local domain.
    pub domain: Domain,
    /// How long a rewritten address takes bounces, in whole days. Default 21 days.
    pub max_age: Duration,
    /// The secrets from `DATA_DIR/srs.key` (and `srs.key.previous`). Never in the file: set
    /// by `mta serve` when it starts and on each reload; `None` until then, when nothing is
    /// rewritten and no SRS address is accepted.
    pub keys: Option<crate::srs::Keys>,
}

/// `[dmarc_reports]`: mail to `address` is parsed as DMARC aggregate reports (RFC 7489
/// §7.2) and stored under `DATA_DIR/dmarc` for `mta report dmarc`.
#[derive(Debug, Clone, PartialEq)]
pub struct DmarcReports {
    /// The `rua=mailto:` address in our DMARC records, in a local domain; `None`: off.
    pub address: Option<Address>,
    /// Decompressed report XML read from one message, at most.
    pub max_size: u64,
    /// Records kept of one report.
    pub max_records: usize,
    /// Reports stored per day.
    pub max_per_day: usize,
    /// Our own reports about the mail we receive (`[dmarc_reports.send]`).
    pub send: DmarcSend,
}

/// `[dmarc_reports.send]`: DMARC aggregate reports (RFC 7489 §7.2) about the mail we
/// receive on port 25, sent to the `rua=` addresses of the `From:` domains. Off by default.
#[derive(Debug, Clone, PartialEq)]
pub struct DmarcSend {
    /// Record results and send reports. Default `false`.
    pub enabled: bool,
    /// The report domains (`rua=` address domains, or parents of them) we may send to;
    /// must not be empty when [`DmarcSend::enabled`].
    pub allow: Vec<Domain>,
    /// `<org_name>` of the reports and the submitter in their subject. Default the hostname.
    pub org_name: String,
    /// `<email>` of the reports. Default `postmaster@` the hostname when it is a local
    /// domain, else the first local domain.
    pub contact: Option<Address>,
    /// How often the reports go out. Default 24 hours.
    pub interval: Duration,
    /// Rows kept per reported domain and period; further messages are counted as dropped.
    pub max_records: usize,
}

/// One DKIM signing key (RFC 6376): a table `[dkim."example.org"]`, or several
/// `[[dkim."example.org"]]` to sign with more than one (RSA and Ed25519, RFC 8463).
#[derive(Debug, Clone, PartialEq)]
pub struct DkimKey {
    /// The signing domain (`d=`); mail whose `From:` is in this domain is signed.
    pub domain: Domain,
    /// The selector (`s=`): the key's TXT record is at `<selector>._domainkey.<domain>`.
    pub selector: String,
    /// The PEM private key file (PKCS#8, or PKCS#1 for RSA), as `mta dkim keygen` writes it.
    pub key: PathBuf,
    /// What kind of key [`DkimKey::key`] holds. Default [`DkimAlgorithm::Rsa`].
    pub algorithm: DkimAlgorithm,
    /// How long a signature stays valid (`x=`). Default 7 days.
    pub expire: Duration,
}

/// A DKIM signing algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DkimAlgorithm {
    /// `rsa-sha256`, which every verifier understands.
    Rsa,
    /// `ed25519-sha256` (RFC 8463): short keys, not yet verified everywhere; sign with RSA too.
    Ed25519,
}

impl DkimAlgorithm {
    /// The name the config file uses, which is also the DNS record's `k=`.
    pub fn name(self) -> &'static str {
        match self {
            DkimAlgorithm::Rsa => "rsa",
            DkimAlgorithm::Ed25519 => "ed25519",
        }
    }
}

/// What is checked on mail arriving on the smtp listener (`[inbound]`); mail from
/// authenticated users is never checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Inbound {
    /// Run SPF, DKIM and DMARC and add an `Authentication-Results:` header. Default true.
    pub checks: bool,
    /// Refuse (`550 5.7.1`) a message that fails DMARC for a domain whose policy is
    /// `p=reject`. Default true.
    pub dmarc_reject: bool,
    /// Refuse (`550 5.7.23`) a message whose SPF result is `fail`. Default false: DMARC
    /// decides, since forwarded mail fails SPF.
    pub spf_reject: bool,
    /// What happens to a message whose `From:` names one of our local domains when neither
    /// SPF nor a DKIM signature aligned with that domain passed. Default
    /// [`SpoofedFrom::Mark`].
    pub spoofed_from: SpoofedFrom,
    /// `[[inbound.milter]]`: the milters mail passes after our own checks, in order.
    pub milters: Vec<Milter>,
    /// `[[inbound.dnsbl]]`, `dnsbl_threshold`, `dnsbl_action`: DNS blocklists asked about
    /// clients of the `smtp` listener.
    pub dnsbl: Dnsbl,
}

/// `[inbound] spoofed_from`: mail from another server that claims to be from us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpoofedFrom {
    /// Deliver it with an `X-Spoofed-From:` field naming the domain, and log it.
    Mark,
    /// Refuse it with `550 5.7.1`.
    Reject,
    /// Do nothing.
    Off,
}

impl SpoofedFrom {
    /// The name in the config file.
    pub fn name(self) -> &'static str {
        match self {
            SpoofedFrom::Mark => "mark",
            SpoofedFrom::Reject => "reject",
            SpoofedFrom::Off => "off",
        }
    }
}

/// Local delivery (`[local]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Local {
    /// Where mail for local recipients goes. Default [`LocalDelivery::Maildir`].
    pub delivery: LocalDelivery,
    /// The character between a user and a tag (`bob+tag@example.org` goes to bob's mailbox);
    /// `None` turns plus-addressing off. Default `+`.
    pub recipient_delimiter: Option<char>,
    /// The group that may read and flag delivered mail (an IMAP server such as Dovecot
    /// running under its own uid): the Maildir tree under `DATA_DIR/mail` becomes group
    /// read-write for it, and the data dir group-traversable. `None` (the default): every
    /// file of the data dir stays private to the user `mta` serves as.
    pub mail_group: Option<String>,
    /// How lines end in a Maildir file. Default [`LineEndings::Lf`].
    pub line_endings: LineEndings,
}

/// How lines end in the files Maildir delivery writes (`local.line_endings`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LineEndings {
    /// A bare LF, as Postfix, qmail and Dovecot's LDA store mail, so that mail readers,
    /// procmail and grep see no CR. Readers canonicalise back to CRLF (DKIM, S/MIME, IMAP).
    #[default]
    Lf,
    /// CRLF, the message as it was received on the wire.
    Crlf,
}

impl LineEndings {
    /// The value in the config file.
    pub fn name(self) -> &'static str {
        match self {
            LineEndings::Lf => "lf",
            LineEndings::Crlf => "crlf",
        }
    }
}

/// How mail for local recipients is delivered (`local.delivery`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalDelivery {
    /// Into `DATA_DIR/mail/<domain>/<user>/Maildir`, by us.
    Maildir,
    /// Handed to an LMTP server (RFC 2033), such as Dovecot's, at this address
    /// (`local.lmtp`).
    Lmtp(LmtpAddress),
}

/// Where the LMTP server listens (`local.lmtp`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LmtpAddress {
    /// An IP address and port, such as `127.0.0.1:24`.
    Tcp(SocketAddr),
    /// A Unix socket, such as `/run/dovecot/lmtp` (an absolute path).
    Unix(PathBuf),
}

impl fmt::Display for LmtpAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LmtpAddress::Tcp(addr) => write!(f, "{addr}"),
            LmtpAddress::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

impl LocalDelivery {
    /// The name the config file uses: `maildir` or `lmtp`.
    pub fn name(&self) -> &'static str {
        match self {
            LocalDelivery::Maildir => "maildir",
            LocalDelivery::Lmtp(_) => "lmtp",
        }
    }
}

/// Listening sockets per kind. An empty list means that listener is off; at least one list
/// is not empty. No address:port appears twice (port 0, "any free port", may).
#[derive(Debug, Clone, PartialEq)]
pub struct Listen {
    /// Inbound mail for local domains, no AUTH (real port 25). Default `127.0.0.1:2525`.
    pub smtp: Vec<SocketAddr>,
    /// Message submission with STARTTLS and AUTH (RFC 6409, real port 587). Default
    /// `127.0.0.1:2587`.
    pub submission: Vec<SocketAddr>,
    /// Submission over implicit TLS (RFC 8314, real port 465). Default `127.0.0.1:2465`.
    pub submissions: Vec<SocketAddr>,
}

/// The certificate and key files: both set, or both `None` for a self-signed certificate
/// generated in [`Config::data_dir`] on first start.
#[derive(Debug, Clone, PartialEq)]
pub struct Tls {
    /// PEM certificate chain.
    pub cert: Option<PathBuf>,
    /// PEM private key of the certificate.
    pub key: Option<PathBuf>,
    /// `[tls."mail.example.net"]`: the certificate for a client that asks for that name
    /// (SNI), by lower-case name.
    pub names: BTreeMap<String, NamedCert>,
}

/// The certificate and key files served for one name (`[tls."name"]`).
#[derive(Debug, Clone, PartialEq)]
pub struct NamedCert {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key of the certificate.
    pub key: PathBuf,
}

/// Limits that keep one client from exhausting the server (RFC 5321 §4.5.3).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Largest message accepted, in bytes, announced as EHLO SIZE. Default 25 MiB; ≥ 1024.
    pub max_message_size: u64,
    /// Recipients per message. Default 100; ≥ 100, as RFC 5321 §4.5.3.1.8 requires.
    pub max_recipients: usize,
    /// Concurrent sessions over all listeners. Default 1000; ≥ 1.
    pub max_sessions: usize,
    /// Bad commands in a session before `421` and close. Default 10; ≥ 1.
    pub max_errors: u32,
    /// How long to wait for the next command. Default 5 min (RFC 5321 §4.5.3.2.7).
    pub command_timeout: Duration,
    /// How long the whole message may take, from our `354` to the final dot. Default 10 min
    /// (RFC 5321 §4.5.3.2.6). Each read within it waits at most [`Limits::command_timeout`].
    pub data_timeout: Duration,
    /// Sessions one client may have open at once; IPv6 clients count per /64 (one host can
    /// have all of one). Default 20; ≥ 1.
    pub max_sessions_per_ip: usize,
    /// Sessions one network may have open at once: IPv4 clients count per /24, IPv6 per
    /// /48, so one hostile network cannot take every session with many addresses. Default
    /// 50; ≥ 1.
    pub max_sessions_per_network: usize,
    /// Commands a session may send in a row without moving towards a message (an accepted
    /// RCPT, a 354 to DATA, a successful AUTH) before `421 4.7.0` and close: a client
    /// sending NOOP or RSET for ever cannot hold a session. Default 20; ≥ 5.
    pub max_commands_without_progress: u32,
    /// How long one connection may last in all, STARTTLS and every message included, so a
    /// client that trickles bytes cannot hold a session for ever. Default 30 min; not shorter
    /// than [`Limits::data_timeout`].
    pub session_timeout: Duration,
    /// Failed AUTH attempts from one client (per address, IPv6 per /64), or for one account,
    /// within [`Limits::auth_failure_window`] before further AUTH is refused with `421`.
    /// Default 5; 1..=100.
    pub auth_failures: u32,
    /// The window [`Limits::auth_failures`] is counted in; the lock-out ends when the oldest
    /// of those failures is this old. Default 10 min.
    pub auth_failure_window: Duration,
    /// Header fields in one message. Default 1000; ≥ 100.
    pub max_headers: usize,
    /// Octets of one message's header section. Default 1 MiB; ≥ 16 KiB.
    pub max_header_size: usize,
    /// `Received:` fields a message may carry before it is taken for a mail loop
    /// (RFC 5321 §6.3). Default 50; ≥ 10.
    pub max_received: usize,
    /// Message bytes all sessions together may hold in memory while receiving DATA; past
    /// it a message is refused with `452 4.3.1`. Default 64 MiB or `max_message_size`,
    /// whichever is larger; never below `max_message_size`.
    pub message_memory: u64,
    /// How much one authenticated user may send (`[limits.sending]`).
    pub sending: Sending,
}

/// `[limits.sending]`: caps per authenticated user, so that a stolen password cannot send
/// ten thousand messages. Mail on port 25 without AUTH is not counted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sending {
    /// The caps of every user without an override.
    pub default: SendingCaps,
    /// Overrides by [`Address::key`](crate::address::Address::key); a key a user's table
    /// leaves out keeps the default's value.
    pub users: BTreeMap<String, SendingCaps>,
}

/// The DNS resolver used for outbound delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Dns {
    /// Servers to ask, in order. Empty (the default) means the system resolver.
    pub nameservers: Vec<SocketAddr>,
}

/// Outbound SMTP delivery (`[outbound]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Outbound {
    /// The port MX hosts are connected on. Default 25; tests point it elsewhere. Not used for
    /// the smarthost, whose port is part of [`Smarthost`].
    pub port: u16,
    /// Which address family MX hosts are connected over. Default [`IpFamily::Any`].
    pub ip: IpFamily,
    /// Concurrent outbound SMTP connections overall. Default 32; ≥ 1.
    pub max_connections: usize,
    /// Concurrent connections per destination domain. Default 4; ≥ 1.
    pub max_per_domain: usize,
    /// How long one TCP connect to an MX host or the smarthost may take. Default 30 s.
    pub connect_timeout: Duration,
    /// How long one connection may serve one attempt, from the TCP connect to the end of
    /// the transaction (greeting, EHLO, TLS, AUTH and the transaction together). Default
    /// 10 minutes.
    pub connection_timeout: Duration,
    /// How long one attempt for one destination domain may take over all its hosts.
    /// Default 15 minutes.
    pub attempt_timeout: Duration,
    /// Internal addresses (loopback, unspecified, link-local, and private ones under
    /// `refuse_private`) that mail may still be sent to. Default none.
    pub allow_internal: Vec<ipnet::IpNet>,
    /// Refuse private addresses (RFC 1918, RFC 6598, RFC 4193) too. Default false.
    pub refuse_private: bool,
    /// How long a domain that took mail over verified TLS keeps needing it (downgrade
    /// memory), counted from its last such delivery. Default 30 days.
    pub tls_memory: Duration,
    /// Apply the MTA-STS policies (RFC 8461) that destination domains publish. Default true.
    pub mta_sts: bool,
    /// The HTTPS port MTA-STS policies are fetched from. Default 443; tests point it elsewhere.
    pub mta_sts_port: u16,
    /// Extra CA certificates (PEM) trusted for the MTA-STS policy servers, besides the system's.
    pub mta_sts_ca_file: Option<PathBuf>,
    /// Authenticate MX hosts by their DNSSEC-validated TLSA records (DANE, RFC 7672).
    /// Default true; applies only while DNSSEC validation works through the resolver.
    pub dane: bool,
    /// Who validates DNSSEC for DANE. Default [`DnssecSource::Validate`].
    pub dnssec: DnssecSource,
    /// The DNSSEC trust anchors (root DNSKEY records in zone-file form) that validation
    /// starts from. Default `None`: the IANA root keys built into hickory-resolver.
    pub dane_trust_anchor: Option<PathBuf>,
    /// Send TLS reports (RFC 8460) to the domains that ask for them. Default true.
    pub tls_reports: bool,
    /// How often TLS reports are sent, each covering the time since the last. Default 1 day.
    pub tls_report_interval: Duration,
    /// Domains whose addresses may receive any domain's TLS reports (a report processor a
    /// domain hired); otherwise a report goes only to addresses in the reporting domain's
    /// own organisational domain. Default empty.
    pub tls_report_allow: Vec<Domain>,
    /// Send all remote mail to this host instead of the MX hosts. Default `None`.
    pub relay: Option<Smarthost>,
    /// TLS policy per destination domain (`[outbound.tls."example.com"]`); a domain not
    /// listed gets [`TlsMode::Opportunistic`]. Applies to MX delivery, not to the smarthost.
    pub tls: BTreeMap<Domain, DomainTls>,
}

/// The address family outbound connections use (`outbound.ip`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpFamily {
    /// IPv6 and IPv4 addresses of each MX host: every AAAA address, then every A address.
    Any,
    /// Only A records: for hosts without IPv6 connectivity.
    Ipv4,
    /// Only AAAA records.
    Ipv6,
    /// Both families, each host's A addresses first.
    PreferIpv4,
    /// Both families, each host's AAAA addresses first.
    PreferIpv6,
}

/// Who validates DNSSEC for DANE (`outbound.dnssec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnssecSource {
    /// `mta` itself, from the trust anchors, through any resolver that passes DNSSEC
    /// records along.
    Validate,
    /// A validating resolver on loopback, whose AD bit is trusted.
    Resolver,
}

impl DnssecSource {
    /// The name the config file uses: `validate` or `resolver`.
    pub fn name(self) -> &'static str {
        match self {
            DnssecSource::Validate => "validate",
            DnssecSource::Resolver => "resolver",
        }
    }
}

/// A smarthost (`outbound.relay`): every remote message goes here, never to MX hosts.
#[derive(Debug, Clone, PartialEq)]
pub struct Smarthost {
    /// A domain name (lower-case A-labels) or an IP address (IPv6 without brackets). The
    /// certificate is verified against it.
    pub host: String,
    /// From `outbound.relay`, which must name it.
    pub port: u16,
    /// How the connection is secured; TLS is never optional with a smarthost.
    pub tls: SmarthostTls,
    /// The AUTH user name; `Some` exactly when [`Smarthost::password`] is.
    pub user: Option<String>,
    /// Where the AUTH password is read from; the password is never in the config file.
    pub password: Option<PasswordSource>,
    /// A PEM file of extra CA certificates trusted for the smarthost, besides the system's.
    pub ca_file: Option<PathBuf>,
}

/// How the smarthost connection is secured (`outbound.relay_tls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmarthostTls {
    /// Plain connect, then STARTTLS, which must succeed (usually port 587).
    Starttls,
    /// TLS from the first byte (RFC 8314, usually port 465).
    Implicit,
}

/// Where the smarthost password comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// The first line of this file (`outbound.relay_password_file`).
    File(PathBuf),
    /// This environment variable of the `mta` process (`outbound.relay_password_env`).
    Env(String),
}

/// The TLS policy for one destination domain (`[outbound.tls."example.com"]`).
#[derive(Debug, Clone, PartialEq)]
pub struct DomainTls {
    /// What is required of the connection.
    pub mode: TlsMode,
    /// A PEM file of extra CA certificates trusted for this domain's MX hosts.
    pub ca_file: Option<PathBuf>,
}

/// What TLS an outbound connection to a domain's MX hosts must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// STARTTLS when offered, any certificate accepted (whether it verified is recorded);
    /// plaintext when not offered.
    Opportunistic,
    /// STARTTLS and a certificate verified for the MX host name, or the attempt is deferred
    /// (`4.7.5`); never plaintext.
    Required,
    /// Never STARTTLS, for peers whose TLS is broken.
    None,
}

/// The queue's retry schedule and lifetime (`[queue]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Queue {
    /// Delay after the first failed attempt; it doubles after each further one. Default 5 min.
    pub retry_first: Duration,
    /// The delay stops doubling here. Default 1 h; ≥ [`Queue::retry_first`].
    pub retry_max: Duration,
    /// Recipients still pending this long after the message was queued fail and are
    /// bounced. Default 5 days.
    pub max_lifetime: Duration,
    /// One "delayed" DSN goes to the sender after the message waited this long. Default
    /// 4 h; < [`Queue::max_lifetime`].
    pub delay_warning: Duration,
    /// MAIL FROM gets `452 4.3.1` while the queue's file system has less free space than
    /// this, in bytes. Default 100 MiB; 0 turns the check off.
    pub min_free_space: u64,
    /// Likewise for free inodes (files). Default 1000; 0 turns the check off.
    pub min_free_inodes: u64,
}

impl Outbound {
    /// The TLS policy for a destination domain: its table's mode, else Opportunistic.
    pub fn tls_for(&self, domain: &Domain) -> DomainTls {
        self.tls.get(domain).cloned().unwrap_or(DomainTls {
            mode: TlsMode::Opportunistic,
            ca_file: None,
        })
    }
}

impl IpFamily {
    /// The name the config file uses: `any`, `ipv4`, `ipv6`, `prefer-ipv4` or
    /// `prefer-ipv6`.
    pub fn name(self) -> &'static str {
        match self {
            IpFamily::Any => "any",
            IpFamily::Ipv4 => "ipv4",
            IpFamily::Ipv6 => "ipv6",
            IpFamily::PreferIpv4 => "prefer-ipv4",
            IpFamily::PreferIpv6 => "prefer-ipv6",
        }
    }

    /// True when addresses of this family may be connected to.
    pub fn allows(self, ip: std::net::IpAddr) -> bool {
        match self {
            IpFamily::Ipv4 => ip.is_ipv4(),
            IpFamily::Ipv6 => ip.is_ipv6(),
            IpFamily::Any | IpFamily::PreferIpv4 | IpFamily::PreferIpv6 => true,
        }
    }
}

impl SmarthostTls {
    /// The name the config file uses: `starttls` or `implicit`.
    pub fn name(self) -> &'static str {
        match self {
            SmarthostTls::Starttls => "starttls",
            SmarthostTls::Implicit => "implicit",
        }
    }
}

impl TlsMode {
    /// The name the config file (and the log) uses: `opportunistic`, `required` or `none`.
    pub fn name(self) -> &'static str {
        match self {
            TlsMode::Opportunistic => "opportunistic",
            TlsMode::Required => "required",
            TlsMode::None => "none",
        }
    }
}

impl Config {
    /// Built-in defaults (no file): what `mta serve` runs on out of the box, loopback only.
    ///
    /// # Errors
    /// None in practice: a `system_hostname` that is not a domain falls back to `localhost`.
    /// The `Result` keeps the signature in step with [`Config::from_toml`].
    pub fn defaults(system_hostname: &str) -> Result<Config, ConfigErrors> {
        let source = file::Source {
            origin: "defaults",
            text: "",
        };
        let (config, errors) = validate::from_raw(
            &source,
            file::RawConfig::default(),
            Vec::new(),
            system_hostname,
        );
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// Parses and validates the text of a config file. `origin` (the file name) starts
    /// every error message; `system_hostname` is the default for `hostname`.
    ///
    /// # Errors
    /// All problems found, in file order, each with its position and key: unknown keys and
    /// values of the wrong type together with every other problem. Only a TOML syntax error
    /// stops the parse and is reported alone.
    pub fn from_toml(
        origin: &str,
        text: &str,
        system_hostname: &str,
    ) -> Result<Config, ConfigErrors> {
        match Config::check_toml(origin, text, system_hostname) {
            (Some(config), errors) if errors.is_empty() => Ok(config),
            (_, errors) => Err(ConfigErrors(errors)),
        }
    }

    /// [`Config::from_toml`] for `mta check-config`, which goes on to check what it can
    /// after errors: every problem, and the config as far as it could be read, each value in
    /// error replaced by its default (`None` after a TOML syntax error). Such a config is only
    /// for finding more problems, never for running on.
    pub fn check_toml(
        origin: &str,
        text: &str,
        system_hostname: &str,
    ) -> (Option<Config>, Vec<ConfigError>) {
        let source = file::Source { origin, text };
        match file::parse(&source) {
            Ok((raw, shape_errors)) => {
                let (config, errors) =
                    validate::from_raw(&source, raw, shape_errors, system_hostname);
                (Some(config), errors)
            }
            Err(errors) => (None, errors.0),
        }
    }

    /// The effective config as TOML, every key written out: [`Config::from_toml`] reads it
    /// back to an equal `Config`. Paths that are not UTF-8 are written lossily, and
    /// durations in whole seconds (rounded up).
    pub fn to_toml(&self) -> String {
        print::write(self)
    }

    /// The addresses `alias` delivers to, or `None` if it is not an alias (compared by
    /// [`Address::key`], so case does not matter). Aliases among the targets are expanded in
    /// turn, up to 10 levels; a target that is already being expanded (a cycle, or an alias
    /// listing itself to keep a copy) stands for its own mailbox. Duplicates are dropped,
    /// first occurrence kept. Targets may be remote: route each by
    /// [`Config::is_local_domain`].
    pub fn expand_alias(&self, alias: &Address) -> Option<Vec<Address>> {
        let targets = self.alias_targets(alias)?;
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut path = vec![alias.key()];
        self.expand_into(targets, &mut path, &mut seen, &mut out);
        Some(out)
    }

    /// Where mail for an unknown local part of `domain` goes: the domain's catch-all
    /// (`"@example.org"` in `[aliases]`), expanded like an alias, or `None` when it has none.
    pub fn expand_catch_all(&self, domain: &Domain) -> Option<Vec<Address>> {
        let targets = self.catch_all.get(domain)?;
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut path = vec![format!("@{domain}")];
        self.expand_into(targets, &mut path, &mut seen, &mut out);
        Some(out)
    }

    /// `address` without its tag: `bob@example.org` for `bob+tag@example.org` when the
    /// recipient delimiter is `+`. `None` when plus-addressing is off, the local part is
    /// quoted or has no delimiter, or nothing (or no valid local part) comes before it.
    /// The cut is at the first delimiter: `a+b+c` is `a` with the tag `b+c`.
    pub fn untagged(&self, address: &Address) -> Option<Address> {
        let delimiter = self.local.recipient_delimiter?;
        let local = address.local_part();
        if local.starts_with('"') {
            return None;
        }
        let (base, _tag) = local.split_once(delimiter)?;
        if base.is_empty() {
            return None;
        }
        Address::from_parts(base, address.domain()).ok()
    }

    fn alias_targets(&self, alias: &Address) -> Option<&[Address]> {
        let key = alias.key();
        self.aliases
            .iter()
            .find(|(a, _)| a.key() == key)
            .map(|(_, targets)| targets.as_slice())
    }

    fn expand_into(
        &self,
        targets: &[Address],
        path: &mut Vec<String>,
        seen: &mut HashSet<String>,
        out: &mut Vec<Address>,
    ) {
        for target in targets {
            let key = target.key();
            // A tagged target (`bob+lists@`) whose untagged form is an alias follows it.
            let next = self.alias_targets(target).or_else(|| {
                self.untagged(target)
                    .and_then(|base| self.alias_targets(&base))
            });
            match next {
                Some(next) if !path.contains(&key) && path.len() < MAX_ALIAS_DEPTH => {
                    path.push(key);
                    self.expand_into(next, path, seen, out);
                    path.pop();
                }
                _ => {
                    if seen.insert(key) {
                        out.push(target.clone());
                    }
                }
            }
        }
    }

    /// True if mail for `domain` is delivered here (it is one of `local_domains`).
    pub fn is_local_domain(&self, domain: &Domain) -> bool {
        self.local_domains.contains(domain)
    }
}

/// Everything wrong with a config, in file order; never empty. Displayed one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

/// One problem in a config: `mta.toml:14:1: listen.submission: 127.0.0.1:587 is already
/// used by listen.smtp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file name (or `defaults`).
    pub origin: String,
    /// 1-based line; 0 when the problem has no position in a file.
    pub line: usize,
    /// 1-based column in characters; 0 with `line`.
    pub column: usize,
    /// The dotted key, such as `limits.max_recipients` or `aliases."postmaster@example.org"`;
    /// empty when a syntax error leaves none to name.
    pub key: String,
    /// What is wrong, for the operator.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            0 => write!(f, "{}: ", self.origin)?,
            line => write!(f, "{}:{}:{}: ", self.origin, line, self.column)?,
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[cfg(test)]
mod authentication_tests;
#[cfg(test)]
mod dmarc_send_tests;
#[cfg(test)]
mod dmarc_tests;
#[cfg(test)]
mod docs_tests;
#[cfg(test)]
mod limits_tests;
#[cfg(test)]
mod outbound_tests;
#[cfg(test)]
mod sending_tests;
#[cfg(test)]
mod tests;
