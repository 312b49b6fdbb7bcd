//! Downgrade memory: once a domain took mail over TLS with a certificate verified for its MX
//! host, later attempts must reach that level again or be deferred (`4.7.5`), never sent in
//! plaintext or over an unverified certificate, so an attacker who strips STARTTLS or presents
//! a forged certificate gets nothing. The memory lasts `outbound.tls_memory` after the last
//! verified delivery, or until an operator clears it (`mta tls forget DOMAIN`).
//!
//! Kept in `DATA_DIR/tls-memory`, one `domain verified-at-unix-seconds` line per domain,
//! replaced atomically (write, fsync, rename). It is written when a domain is new to it or its
//! time is more than an hour old, so a busy destination costs a write an hour, not one a
//! message.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mta_core::address::Domain;
use tracing::{info, warn};

/// How stale a remembered time may get before a verified delivery writes it again.
const REFRESH: u64 = 3600;

/// The remembered domains.
#[derive(Debug)]
pub struct TlsMemory {
    path: PathBuf,
    keep: Duration,
    domains: Mutex<BTreeMap<String, u64>>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl TlsMemory {
    /// The file in `data_dir`; entries older than `keep` are forgotten as they are read.
    /// A missing file is an empty memory; an unreadable line is skipped with a warning.
    pub fn open(data_dir: &Path, keep: Duration) -> TlsMemory {
        let path = data_dir.join("tls-memory");
        let mut domains = BTreeMap::new();
        if let Ok(text) = std::fs::read_to_string(&path) {
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                match parse_line(line) {
                    Some((domain, at)) => {
                        domains.insert(domain, at);
                    }
                    None => {
                        warn!(path = %path.display(), line, "skipping an unreadable TLS memory line")
                    }
                }
            }
        }
        TlsMemory {
            path,
            keep,
            domains: Mutex::new(domains),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
        self.domains.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True when `domain` had a verified delivery within the memory's lifetime.
    pub fn remembers(&self, domain: &Domain) -> bool {
        self.lock()
            .get(domain.as_str())
            .is_some_and(|&at| now().saturating_sub(at) < self.keep.as_secs())
    }

    /// Records a delivery to `domain` over verified TLS.
    pub fn verified(&self, domain: &Domain) {
        let mut domains = self.lock();
        let now = now();
        let fresh = domains
            .get(domain.as_str())
            .is_some_and(|&at| now.saturating_sub(at) < REFRESH);
        if fresh {
            return;
        }
        if !domains.contains_key(domain.as_str()) {
            info!(%domain, "verified TLS remembered: later mail to this domain needs it too");
        }
        domains.insert(domain.to_string(), now);
        self.save(&domains);
    }

    /// Forgets `domain`; false when it was not remembered.
    pub fn forget(&self, domain: &Domain) -> bool {
        let mut domains = self.lock();
        let known = domains.remove(domain.as_str()).is_some();
        if known {
            self.save(&domains);
        }
        known
    }

    /// Every remembered domain with the time of its last verified delivery (Unix seconds)
    /// and whether it still applies.
    pub fn list(&self) -> Vec<(String, u64, bool)> {
        let now = now();
        self.lock()
            .iter()
            .map(|(d, &at)| (d.clone(), at, now.saturating_sub(at) < self.keep.as_secs()))
            .collect()
    }

    fn save(&self, domains: &BTreeMap<String, u64>) {
        if let Err(e) = write_atomically(&self.path, domains) {
            // The memory still holds in this process; only a restart would lose the entry.
            warn!(path = %self.path.display(), error = %e, "cannot save the TLS memory");
        }
    }
}

fn parse_line(line: &str) -> Option<(String, u64)> {
    let mut words = line.split_ascii_whitespace();
    let domain = Domain::parse(words.next()?).ok()?;
    let at = words.next()?.parse().ok()?;
    words.next().is_none().then(|| (domain.to_string(), at))
}

/// Replaces the file whole (a unique temporary file, synced, renamed, the directory synced),
/// never writing through a symlink planted in the data dir.
fn write_atomically(path: &Path, domains: &BTreeMap<String, u64>) -> std::io::Result<()> {
    let mut text = String::from("# domain  last delivery over verified TLS (Unix seconds)\n");
    for (d, at) in domains {
        text.push_str(&format!("{d} {at}\n"));
    }
    mta_core::durable_file::write(path, text.as_bytes(), 0o600)
}

/// Forgets `domain` in the file of a server that is not running.
///
/// # Errors
/// The file cannot be rewritten.
pub fn forget_offline(data_dir: &Path, domain: &Domain) -> std::io::Result<bool> {
    let memory = TlsMemory::open(data_dir, Duration::MAX);
    let mut domains = memory.lock();
    let known = domains.remove(domain.as_str()).is_some();
    if known {
        write_atomically(&memory.path, &domains)?;
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
