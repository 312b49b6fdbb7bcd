//! The `acme` verdicts: for each `acme.names` entry, the certificate `mta serve` obtained
//! (judged as any certificate: covers the name, trusted, not expiring), when it expires,
//! and the last error of the renewal task (`data_dir/acme/status.json`).

use mta_core::config::Config;

use super::cert::{facts, judge};
use super::report::{Status, Verdict};
use crate::acme::status::Status as AcmeStatus;

/// One verdict per ACME name; none when `[acme]` is off.
pub fn check(config: &Config, now: i64) -> Vec<Verdict> {
    let Some(acme) = &config.acme else {
        return Vec::new();
    };
    let dir = crate::acme::dir(config);
    let status = AcmeStatus::read(&dir).unwrap_or_default();
    let pem = std::fs::read(dir.join("cert.pem"));
    let mut out = Vec::new();
    for name in &acme.names {
        let verdict = |status, detail| Verdict::new("acme", name, status, detail);
        let (mut level, mut detail) = match pem.as_ref().map_err(ToString::to_string) {
            Ok(pem) => match facts(pem) {
                Ok(f) => {
                    let (level, detail) = judge(&f, name, now);
                    let days = (f.not_after - now).div_euclid(86400);
                    match detail.contains("expires in") {
                        true => (level, detail),
                        false => (level, format!("{detail}; expires in {days} days")),
                    }
                }
                Err(e) => (Status::Fail, format!("cert.pem: {e}")),
            },
            Err(_) => (
                Status::Fail,
                format!(
                    "no certificate from {} yet: the self-signed one is served",
                    acme.directory
                ),
            ),
        };
        if let Some(error) = &status.last_error {
            level = level.max(Status::Warn);
            detail += &format!("; last attempt failed: {error}");
        }
        if let Some(next) = status.next_attempt {
            let minutes = (next - now).max(0) / 60;
            detail += &format!("; next attempt in {minutes} min");
        }
        out.push(verdict(level, detail));
    }
    out
}

/// True when the hostname's certificate comes from ACME (its `cert` verdict is then this).
pub fn covers_hostname(config: &Config) -> bool {
    let host = config.hostname.as_str().to_ascii_lowercase();
    config
        .acme
        .as_ref()
        .is_some_and(|a| a.names.contains(&host))
}
