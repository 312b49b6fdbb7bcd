//! `mta dkim keygen` and `mta dkim show`: make a DKIM signing key in the data dir and print
//! the DNS record that publishes it; print the records of every configured key. The record is
//! computed from the key file as the server loads it, so what is printed is what verifies.

use std::fmt::Write as _;
use std::fs::{DirBuilder, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Subcommand, ValueEnum};
use mail_auth::dkim::generate::DkimKeyPair;
use mta_core::address::Domain;
use mta_core::config::{Config, DkimAlgorithm, is_dkim_selector};
use mta_smtp::dkim::{PrivateKey, dns_record};

/// `mta dkim ...`
#[derive(Subcommand, Debug)]
pub enum DkimCommand {
    /// Create a signing key in DATA_DIR/dkim and print the DNS record and config to add.
    Keygen {
        /// The domain to sign for (the `From:` domain of your mail).
        #[arg(long)]
        domain: String,
        /// The selector, e.g. the year: the record goes at <selector>._domainkey.<domain>.
        #[arg(long)]
        selector: String,
        /// RSA is verified everywhere; Ed25519 (RFC 8463) is short but not yet verified
        /// everywhere, so use it next to an RSA key.
        #[arg(long, value_enum, default_value_t = Algorithm::Rsa)]
        algorithm: Algorithm,
        /// RSA key size in bits.
        #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u16).range(2048..=4096))]
        bits: u16,
    },
    /// Print the DNS records of all keys in the config.
    Show,
}

/// `--algorithm`
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum Algorithm {
    /// rsa-sha256
    Rsa,
    /// ed25519-sha256
    Ed25519,
}

impl From<Algorithm> for DkimAlgorithm {
    fn from(a: Algorithm) -> DkimAlgorithm {
        match a {
            Algorithm::Rsa => DkimAlgorithm::Rsa,
            Algorithm::Ed25519 => DkimAlgorithm::Ed25519,
        }
    }
}

/// Runs one `mta dkim` command.
///
/// # Errors
/// A bad domain or selector, a key that exists already or cannot be written, a configured key
/// that cannot be read.
pub fn run(command: DkimCommand, config: &Config) -> anyhow::Result<()> {
    match command {
        DkimCommand::Keygen {
            domain,
            selector,
            algorithm,
            bits,
        } => keygen(config, &domain, &selector, algorithm.into(), bits),
        DkimCommand::Show => show(config),
    }
}

fn keygen(
    config: &Config,
    domain: &str,
    selector: &str,
    algorithm: DkimAlgorithm,
    bits: u16,
) -> anyhow::Result<()> {
    let domain = match Domain::parse(domain) {
        Ok(d) if !d.is_literal() => d,
        _ => bail!("{domain:?} is not a domain name"),
    };
    if !is_dkim_selector(selector) {
        bail!(
            "{selector:?} is not a selector: DNS labels of letters, digits and hyphens, \
             separated by dots"
        );
    }
    let selector = selector.to_ascii_lowercase();
    let dir = config.data_dir.join("dkim");
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(format!("{domain}.{selector}.key"));
    let pem = match algorithm {
        DkimAlgorithm::Rsa => {
            let pair = DkimKeyPair::generate_rsa(usize::from(bits))
                .map_err(|e| anyhow::anyhow!("RSA key generation failed: {e}"))?;
            pem("RSA PRIVATE KEY", pair.private_key())
        }
        DkimAlgorithm::Ed25519 => {
            let pair = DkimKeyPair::generate_ed25519()
                .map_err(|e| anyhow::anyhow!("Ed25519 key generation failed: {e}"))?;
            pem("PRIVATE KEY", pair.private_key())
        }
    };
    write_new(&path, pem.as_bytes())?;
    // Read back as the server will, so the record printed is the one that verifies.
    let key = PrivateKey::load(&path, algorithm)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let (name, text) = dns_record(&domain, &selector, algorithm, &key);
    println!("Wrote {} (mode 0600).\n", path.display());
    println!(
        "1. Publish this DNS TXT record:\n\n{}",
        zone_line(&name, &text)
    );
    println!(
        "2. Add this to the config, then run `mta reload` (no restart needed):\n\n\
         [[dkim.\"{domain}\"]]\nselector = \"{selector}\"\nkey = \"{}\"\nalgorithm = \"{}\"\n",
        path.display(),
        algorithm.name()
    );
    println!(
        "3. Check it with `mta doctor {domain}` once the record is visible. \
         See docs/dns.md for the other records (SPF, DMARC)."
    );
    Ok(())
}

fn show(config: &Config) -> anyhow::Result<()> {
    if config.dkim.is_empty() {
        bail!("no [dkim.\"domain\"] keys in the config; create one with `mta dkim keygen`");
    }
    let mut out = String::new();
    for k in &config.dkim {
        let key = PrivateKey::load(&k.key, k.algorithm)
            .map_err(|e| anyhow::anyhow!("{}: {e}", k.key.display()))?;
        let (name, text) = dns_record(&k.domain, &k.selector, k.algorithm, &key);
        let _ = writeln!(
            out,
            "; {} key {}\n{}",
            k.algorithm.name(),
            k.key.display(),
            zone_line(&name, &text)
        );
    }
    print!("{out}");
    println!("; publish each record as shown (docs/dns.md), then check with `mta doctor`");
    Ok(())
}

/// A zone-file line; TXT character-strings are at most 255 octets (RFC 1035 §3.3), so a long
/// record is split into several, which DNS joins back.
pub fn zone_line(name: &str, text: &str) -> String {
    let parts: Vec<String> = text
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect();
    format!("{name}. IN TXT ( {} )\n", parts.join("\n        "))
}

/// PEM: base64 in lines of 64 (RFC 7468).
fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Creates `path` with mode 0600; never replaces an existing key.
fn write_new(path: &Path, bytes: &[u8]) -> anyhow::Result<PathBuf> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => anyhow::anyhow!(
                "{} exists already: pick another selector (keys are never overwritten)",
                path.display()
            ),
            _ => anyhow::anyhow!("cannot create {}: {e}", path.display()),
        })?;
    // The directory too: a key the DNS record was published for must survive a crash.
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| mta_core::durable_file::sync_dir(path))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path.to_path_buf())
}
