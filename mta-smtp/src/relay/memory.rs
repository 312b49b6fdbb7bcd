//! Downgrade memory: once a domain took mail over TLS with a certificate verified for its MX
//! host, later attempts must reach that level again or be deferred (`4.7.5`), never sent in
//! plaintext or over an unverified certificate, so an attacker who strips STARTTLS or presents
//! a forged certificate gets nothing. The memory lasts `outbound.tls_memory` after the last
//! verified delivery, or until an operator clears it (`mta tls forget DOMAIN`).
//!
//! DANE memory, beside it: a domain whose MX host had usable, DNSSEC-validated TLSA records
//! (RFC 7672) is remembered too, with the names of those hosts. DANE can only be applied while
//! DNSSEC validation works; when it stops (someone drops or corrupts the root DNSKEY answer,
//! or the resolver stops passing DNSSEC records along), such a domain's mail goes only to the
//! remembered hosts (whoever broke validation can also forge the MX answer), over TLS with a
//! certificate verified against the CA roots, or it waits (`4.7.5`, `policy=dane-memory`),
//! instead of going out with less. Same lifetime, same `mta tls forget`.
//!
//! Kept in `DATA_DIR/tls-memory` and `DATA_DIR/dane-memory`, one `domain unix-seconds` line per
//! domain (`dane-memory` adds the hosts, comma-separated), replaced atomically
//! (`mta_core::durable_file::write`). A file is written when a
//! domain is new to it or its time is more than an hour old, so a busy destination costs a
//! write an hour, not one a message. Each holds at most [`MAX_DOMAINS`]; when full, the domain
//! seen longest ago makes room.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mta_core::address::Domain;
use tracing::{info, warn};

/// How stale a remembered time may get before a verified delivery writes it again.
const REFRESH: u64 = 3600;

/// The most domains each memory holds.
pub const MAX_DOMAINS: usize = 10_000;
/// The most MX host names remembered per domain for DANE.
pub const MAX_HOSTS: usize = 16;

/// One remembered domain: when it was last seen, and (DANE) the MX hosts that had records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Entry {
    at: u64,
    hosts: Vec<String>,
}

/// Which memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Deliveries over verified TLS.
    Verified,
    /// Usable TLSA records seen.
    Dane,
}

impl Kind {
    fn file(self) -> &'static str {
        match self {
            Kind::Verified => "tls-memory",
            Kind::Dane => "dane-memory",
        }
    }

    fn header(self) -> &'static str {
        match self {
            Kind::Verified => "# domain  last delivery over verified TLS (Unix seconds)\n",
            Kind::Dane => {
                "# domain  last seen with usable DNSSEC-validated TLSA records (Unix seconds)  \
                 the MX hosts that had them\n"
            }
        }
    }
}

/// One memory: its file and its domains.
#[derive(Debug)]
struct List {
    kind: Kind,
    path: PathBuf,
    domains: Mutex<BTreeMap<String, Entry>>,
}

impl List {
    fn open(data_dir: &Path, kind: Kind) -> List {
        let path = data_dir.join(kind.file());
        let mut domains = BTreeMap::new();
        if let Ok(text) = std::fs::read_to_string(&path) {
            for line in text
                .lines()
                .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            {
                match parse_line(line) {
                    Some((domain, entry)) => {
                        insert_bounded(&mut domains, domain, entry, MAX_DOMAINS)
                    }
                    None => {
                        warn!(path = %path.display(), line = %mta_core::text::escape(line), "skipping an unreadable TLS memory line")
                    }
                }
            }
        }
        List {
            kind,
            path,
            domains: Mutex::new(domains),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.domains.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The entry of `domain` when it is within `keep`.
    fn get(&self, domain: &Domain, keep: Duration) -> Option<Entry> {
        self.lock()
            .get(domain.as_str())
            .filter(|e| now().saturating_sub(e.at) < keep.as_secs())
            .cloned()
    }

    /// Records `domain` now, and `host` with it when given; true when the domain was not
    /// remembered before.
    fn seen(&self, domain: &Domain, host: Option<&str>) -> bool {
        let mut domains = self.lock();
        let now = now();
        let old = domains.get(domain.as_str()).cloned();
        let host = host.map(|h| h.trim_end_matches('.').to_ascii_lowercase());
        let known_host = match (&host, &old) {
            (Some(h), Some(e)) => e.hosts.contains(h),
            (Some(_), None) => false,
            (None, _) => true,
        };
        let fresh = old
            .as_ref()
            .is_some_and(|e| now.saturating_sub(e.at) < REFRESH);
        if fresh && known_host {
            return false;
        }
        let mut entry = old.clone().unwrap_or_default();
        entry.at = now;
        if let Some(h) = host.filter(|h| !entry.hosts.contains(h)) {
            if entry.hosts.len() >= MAX_HOSTS {
                entry.hosts.remove(0);
            }
            entry.hosts.push(h);
        }
        insert_bounded(&mut domains, domain.to_string(), entry, MAX_DOMAINS);
        self.save(&domains);
        old.is_none()
    }

    fn forget(&self, domain: &Domain) -> bool {
        let mut domains = self.lock();
        let known = domains.remove(domain.as_str()).is_some();
        if known {
            self.save(&domains);
        }
        known
    }

    fn list(&self, keep: Duration) -> Vec<(String, u64, bool)> {
        let now = now();
        self.lock()
            .iter()
            .map(|(d, e)| (d.clone(), e.at, now.saturating_sub(e.at) < keep.as_secs()))
            .collect()
    }

    fn save(&self, domains: &BTreeMap<String, Entry>) {
        if let Err(e) = write(self.kind, &self.path, domains) {
            // The memory still holds in this process; only a restart would lose the entry.
            warn!(path = %self.path.display(), error = %e, "cannot save the TLS memory");
        }
    }
}

/// The remembered domains: verified TLS, and DANE.
#[derive(Debug)]
pub struct TlsMemory {
    keep: Duration,
    verified: List,
    dane: List,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl TlsMemory {
    /// The files in `data_dir`; entries older than `keep` no longer apply. A missing file is
    /// an empty memory; an unreadable line is skipped with a warning.
    pub fn open(data_dir: &Path, keep: Duration) -> TlsMemory {
        TlsMemory {
            keep,
            verified: List::open(data_dir, Kind::Verified),
            dane: List::open(data_dir, Kind::Dane),
        }
    }

    /// True when `domain` had a verified delivery within the memory's lifetime.
    pub fn remembers(&self, domain: &Domain) -> bool {
        self.verified.get(domain, self.keep).is_some()
    }

    /// Records a delivery to `domain` over verified TLS.
    pub fn verified(&self, domain: &Domain) {
        if self.verified.seen(domain, None) {
            info!(%domain, "verified TLS remembered: later mail to this domain needs it too");
        }
    }

    /// The MX hosts of `domain` that had usable DNSSEC-validated TLSA records, when the
    /// domain is remembered for DANE (within the lifetime).
    pub fn dane_hosts(&self, domain: &Domain) -> Option<Vec<String>> {
        self.dane.get(domain, self.keep).map(|e| e.hosts)
    }

    /// Records that `host`, an MX host of `domain`, has usable DNSSEC-validated TLSA
    /// records.
    pub fn dane(&self, domain: &Domain, host: &str) {
        if self.dane.seen(domain, Some(host)) {
            info!(%domain, "DANE remembered: while DNSSEC validation is unavailable, this domain needs verified TLS");
        }
    }

    /// Forgets `domain` in both memories; false when neither remembered it.
    pub fn forget(&self, domain: &Domain) -> bool {
        let verified = self.verified.forget(domain);
        let dane = self.dane.forget(domain);
        verified || dane
    }

    /// Every domain remembered for verified TLS, with the time of its last verified delivery
    /// (Unix seconds) and whether it still applies.
    pub fn list(&self) -> Vec<(String, u64, bool)> {
        self.verified.list(self.keep)
    }

    /// Every domain remembered for DANE, with the time its TLSA records were last seen and
    /// whether it still applies.
    pub fn list_dane(&self) -> Vec<(String, u64, bool)> {
        self.dane.list(self.keep)
    }
}

/// Inserts `domain`; when that makes more than `max`, the one seen longest ago goes.
fn insert_bounded(domains: &mut BTreeMap<String, Entry>, domain: String, entry: Entry, max: usize) {
    domains.insert(domain, entry);
    while domains.len() > max {
        let oldest = domains
            .iter()
            .min_by_key(|(_, e)| e.at)
            .map(|(d, _)| d.clone());
        match oldest {
            Some(d) => domains.remove(&d),
            None => break,
        };
    }
}

/// `domain at` or `domain at host,host`.
fn parse_line(line: &str) -> Option<(String, Entry)> {
    let mut words = line.split_ascii_whitespace();
    let domain = Domain::parse(words.next()?).ok()?;
    let at = words.next()?.parse().ok()?;
    let hosts: Vec<String> = match words.next() {
        None => Vec::new(),
        Some(list) => list.split(',').map(str::to_string).collect(),
    };
    let good =
        hosts.len() <= MAX_HOSTS && hosts.iter().all(|h| mta_core::address::is_ldh_name(h, 253));
    (good && words.next().is_none()).then(|| (domain.to_string(), Entry { at, hosts }))
}

/// Replaces the file whole (a unique temporary file, synced, renamed, the directory synced),
/// never writing through a symlink planted in the data dir.
fn write(kind: Kind, path: &Path, domains: &BTreeMap<String, Entry>) -> std::io::Result<()> {
    let mut text = String::from(kind.header());
    for (d, e) in domains {
        match e.hosts.is_empty() {
            true => text.push_str(&format!("{d} {}\n", e.at)),
            false => text.push_str(&format!("{d} {} {}\n", e.at, e.hosts.join(","))),
        }
    }
    mta_core::durable_file::write(path, text.as_bytes(), 0o600)
}

/// Forgets `domain` in the files of a server that is not running.
///
/// # Errors
/// A file cannot be rewritten.
pub fn forget_offline(data_dir: &Path, domain: &Domain) -> std::io::Result<bool> {
    let mut known = false;
    for kind in [Kind::Verified, Kind::Dane] {
        let list = List::open(data_dir, kind);
        let mut domains = list.lock();
        if domains.remove(domain.as_str()).is_some() {
            known = true;
            write(kind, &list.path, &domains)?;
        }
    }
    Ok(known)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_saves_reloads_and_forgets() {
        let dir = tempfile::tempdir().unwrap();
        let d = Domain::parse("Remote.TEST").unwrap();
        let m = TlsMemory::open(dir.path(), Duration::from_secs(86_400));
        assert!(!m.remembers(&d));
        m.verified(&d);
        assert!(m.remembers(&d));
        let text = std::fs::read_to_string(dir.path().join("tls-memory")).unwrap();
        assert!(text.contains("\nremote.test "), "{text}");
        // A restart reads it back; a short lifetime has it expired.
        assert!(TlsMemory::open(dir.path(), Duration::from_secs(86_400)).remembers(&d));
        assert!(!TlsMemory::open(dir.path(), Duration::from_secs(0)).remembers(&d));
        assert!(m.forget(&d));
        assert!(!m.forget(&d));
        assert!(!TlsMemory::open(dir.path(), Duration::from_secs(86_400)).remembers(&d));
        std::fs::write(dir.path().join("tls-memory"), "garbage\nok.test 5\n").unwrap();
        let listed = TlsMemory::open(dir.path(), Duration::MAX).list();
        assert_eq!(listed, vec![("ok.test".to_string(), 5, true)]);
    }

    #[test]
    fn dane_is_remembered_apart_and_forgotten_with_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let d = Domain::parse("dane.test").unwrap();
        let m = TlsMemory::open(dir.path(), Duration::from_secs(86_400));
        assert_eq!(m.dane_hosts(&d), None);
        m.dane(&d, "MX1.dane.test.");
        m.dane(&d, "mx2.dane.test");
        m.dane(&d, "mx1.dane.test");
        let hosts = vec!["mx1.dane.test".to_string(), "mx2.dane.test".to_string()];
        assert_eq!(m.dane_hosts(&d), Some(hosts.clone()));
        assert!(!m.remembers(&d));
        let again = TlsMemory::open(dir.path(), Duration::from_secs(86_400));
        assert_eq!(again.dane_hosts(&d), Some(hosts), "a restart keeps it");
        assert_eq!(again.list_dane().len(), 1);
        assert!(forget_offline(dir.path(), &d).unwrap());
        assert_eq!(
            TlsMemory::open(dir.path(), Duration::MAX).dane_hosts(&d),
            None
        );
        // A forged host list is not read.
        let forged = "dane.test 5 mx1.dane.test,a\rb\n";
        std::fs::write(dir.path().join("dane-memory"), forged).unwrap();
        assert_eq!(
            TlsMemory::open(dir.path(), Duration::MAX).dane_hosts(&d),
            None
        );
    }

    #[test]
    fn the_memory_is_bounded_and_the_oldest_goes() {
        let mut domains = BTreeMap::new();
        for i in 0..5u64 {
            let entry = Entry {
                at: 100 + i,
                hosts: Vec::new(),
            };
            insert_bounded(&mut domains, format!("d{i}.test"), entry, 3);
        }
        let kept: Vec<&str> = domains.keys().map(String::as_str).collect();
        assert_eq!(kept, ["d2.test", "d3.test", "d4.test"]);
        // Through the public type too: the file never holds more than MAX_DOMAINS.
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::new();
        for i in 0..MAX_DOMAINS + 5 {
            text.push_str(&format!("d{i}.test {}\n", 1_000 + i));
        }
        std::fs::write(dir.path().join("tls-memory"), text).unwrap();
        let m = TlsMemory::open(dir.path(), Duration::MAX);
        let listed = m.list();
        assert_eq!(listed.len(), MAX_DOMAINS);
        assert!(
            !listed.iter().any(|(d, _, _)| d == "d0.test"),
            "the oldest went"
        );
    }

    /// Symlinks where the file or its temporary file go (planted by whoever can write the
    /// data dir) are replaced, not written through.
    #[test]
    fn saving_does_not_follow_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("tls-memory.tmp")).unwrap();
        let m = TlsMemory::open(dir.path(), Duration::from_secs(86_400));
        m.verified(&Domain::parse("remote.test").unwrap());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        std::fs::remove_file(dir.path().join("tls-memory")).unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("tls-memory")).unwrap();
        m.verified(&Domain::parse("other.test").unwrap());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        let saved = std::fs::symlink_metadata(dir.path().join("tls-memory")).unwrap();
        assert!(saved.is_file(), "the link was replaced by the file");
    }
}
