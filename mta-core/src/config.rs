//! The typed, validated configuration of `mta`, from one TOML file or built-in defaults.
//!
//! Owns: the file format (`file.rs`: `RawConfig` mirrors the file, unknown keys are refused),
//! defaults and validation (`validate.rs`: every problem is reported at once, each with its
//! key and `file:line:column`), durations such as `"5m"` (`duration.rs`), and the way back to
//! TOML ([`Config::to_toml`], for `mta check-config`). Leaves to others: reading the file and
//! the machine's hostname (`mta-bin` hands us the text), and acting on the values.
//!
//! Limits and timeouts default to what RFC 5321 §4.5.3 asks of a server. Operators read
//! `docs/config.md`; a test keeps it listing exactly the keys this module accepts.

mod duration;
mod file;
mod validate;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::address::{Address, Domain};

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
    /// Outbound SMTP delivery.
    pub outbound: Outbound,
    /// Alias address → the addresses it delivers to (other aliases, local mailboxes or remote
    /// addresses). Every alias is in one of [`Config::local_domains`].
    pub aliases: BTreeMap<Address, Vec<Address>>,
    /// How long SIGTERM waits for open sessions to finish before closing them. Default 10 s.
    pub shutdown_grace: Duration,
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
    /// How long to wait for each DATA block and the final dot. Default 10 min
    /// (RFC 5321 §4.5.3.2.6).
    pub data_timeout: Duration,
}

/// The DNS resolver used for outbound delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Dns {
    /// Servers to ask, in order. Empty (the default) means the system resolver.
    pub nameservers: Vec<SocketAddr>,
}

/// Outbound SMTP delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Outbound {
    /// The port MX hosts are connected on. Default 25; tests point it elsewhere.
    pub port: u16,
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
        validate::from_raw(&source, file::RawConfig::default(), system_hostname)
    }

    /// Parses and validates the text of a config file. `origin` (the file name) starts
    /// every error message; `system_hostname` is the default for `hostname`.
    ///
    /// # Errors
    /// All problems found, in file order, each with its position and key. A TOML syntax
    /// error or an unknown key stops the parse and is reported alone.
    pub fn from_toml(
        origin: &str,
        text: &str,
        system_hostname: &str,
    ) -> Result<Config, ConfigErrors> {
        let source = file::Source { origin, text };
        let raw = file::parse(&source)?;
        validate::from_raw(&source, raw, system_hostname)
    }

    /// The effective config as TOML, every key written out: [`Config::from_toml`] reads it
    /// back to an equal `Config`. Paths that are not UTF-8 are written lossily, and
    /// durations in whole seconds (rounded up).
    pub fn to_toml(&self) -> String {
        file::write(self)
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
            match self.alias_targets(target) {
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
mod tests;
