//! The certificate `mta serve` presents: the configured one, or a self-signed one made once
//! in `DATA_DIR/tls/` (each file whole or absent after a crash; links and special files are
//! refused, a file cut short is made again). Used at start and on every reload.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use mta_core::config::Config;
use mta_core::durable_file;
use tracing::warn;

/// What is found where the self-signed certificate or key should be.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    /// A whole PEM file: used as it is.
    Whole,
    /// Nothing: made now.
    Missing,
    /// Empty or cut short (a crash while it was written by an older version): made again.
    Torn,
    /// A symbolic link: mta neither follows nor replaces links in its data dir.
    Link,
    /// Not a regular file (a FIFO, a device): never read.
    Special,
}

fn inspect_pem(path: &Path) -> Found {
    match fs::symlink_metadata(path) {
        Err(_) => Found::Missing,
        Ok(m) if m.file_type().is_symlink() => Found::Link,
        // A FIFO would block the read for ever, a device act on it.
        Ok(m) if !m.is_file() => Found::Special,
        Ok(_) => match fs::read_to_string(path) {
            Ok(text) if is_whole_pem(&text) => Found::Whole,
            _ => Found::Torn,
        },
    }
}

/// A PEM file written whole: at least one block, and it ends with the end line of its
/// last block (a write cut short loses the end).
fn is_whole_pem(text: &str) -> bool {
    let text = text.trim_end();
    let begins = text.matches("-----BEGIN ").count();
    let ends = text.matches("-----END ").count();
    let last = text.rsplit('\n').next().unwrap_or("");
    begins > 0
        && begins == ends
        && text.starts_with("-----BEGIN ")
        && last.starts_with("-----END ")
        && last.ends_with("-----")
}

/// The configured certificate, or a self-signed one made once in `DATA_DIR/tls/`.
pub(crate) fn load_tls(config: &Config) -> anyhow::Result<(tokio_rustls::TlsAcceptor, String)> {
    let (cert, key, note) = match (&config.tls.cert, &config.tls.key) {
        (Some(c), Some(k)) => (
            c.clone(),
            k.clone(),
            format!("mta tls certificate {}", c.display()),
        ),
        (None, None) => {
            let (c, k, made) = self_signed(config)?;
            let how = if made {
                "generated now"
            } else {
                "generated earlier"
            };
            let note = format!(
                "mta tls self-signed certificate {} ({how}; set [tls] cert and key for a real one)",
                c.display()
            );
            (c, k, note)
        }
        _ => bail!("tls.cert and tls.key must be set together"),
    };
    let (acceptor, resolver) = mta_smtp::tls::load_sni_acceptor(&cert, &key, &named(config))?;
    crate::acme::serve_into(config, &resolver);
    let names: Vec<&str> = config.tls.names.keys().map(String::as_str).collect();
    let note = match names.is_empty() {
        true => note,
        false => format!("{note}, and by SNI for {}", names.join(", ")),
    };
    Ok((acceptor, note))
}

/// `[tls."name"]`: name → (certificate, key) files.
fn named(config: &Config) -> BTreeMap<String, (PathBuf, PathBuf)> {
    config
        .tls
        .names
        .iter()
        .map(|(name, n)| (name.clone(), (n.cert.clone(), n.key.clone())))
        .collect()
}

fn self_signed(config: &Config) -> anyhow::Result<(PathBuf, PathBuf, bool)> {
    let dir = config.data_dir.join("tls");
    let cert = dir.join("selfsigned-cert.pem");
    let key = dir.join("selfsigned-key.pem");
    if fs::symlink_metadata(&dir).is_ok_and(|m| m.file_type().is_symlink()) {
        bail!(
            "{} is a symbolic link: mta does not write through links in its data dir; \
             remove it (mta makes the directory again)",
            dir.display()
        );
    }
    let found = [(&cert, inspect_pem(&cert)), (&key, inspect_pem(&key))];
    if let Some((link, _)) = found.iter().find(|(_, f)| *f == Found::Link) {
        bail!(
            "{} is a symbolic link: mta does not follow links in its data dir; remove it \
             (a new self-signed certificate is then made), or set [tls] cert and key",
            link.display()
        );
    }
    if let Some((special, _)) = found.iter().find(|(_, f)| *f == Found::Special) {
        bail!(
            "{} is not a regular file: remove it (a new self-signed certificate is then made), \
             or set [tls] cert and key",
            special.display()
        );
    }
    if found.iter().all(|(_, f)| *f == Found::Whole) {
        return Ok((cert, key, false));
    }
    for (path, f) in &found {
        if *f == Found::Torn {
            warn!(file = %path.display(), "self-signed certificate or key is empty or cut short: making a new pair");
        }
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let names = vec![
        config.hostname.to_string(),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let made =
        rcgen::generate_simple_self_signed(names).context("cannot generate a certificate")?;
    // Each file is whole or absent after a crash (temp file, fsync, rename, directory
    // sync); the key first, so a certificate never exists without its key.
    durable_file::write(&key, made.signing_key.serialize_pem().as_bytes(), 0o600)
        .with_context(|| format!("cannot write {}", key.display()))?;
    durable_file::write(&cert, made.cert.pem().as_bytes(), 0o600)
        .with_context(|| format!("cannot write {}", cert.display()))?;
    Ok((cert, key, true))
}

#[cfg(test)]
mod tests {
    use super::is_whole_pem;

    /// Reference: a prefix of PEM text written whole is whole exactly when it ends at the end
    /// of one of its blocks (trailing whitespace aside). Every cut of a one- and a two-block
    /// file is compared.
    #[test]
    fn every_cut_of_a_pem_file_is_torn() {
        let made = rcgen::generate_simple_self_signed(vec!["mx.example.test".to_string()])
            .expect("certificate");
        let one = made.cert.pem();
        let two = format!("{one}{one}");
        for text in [&one, &two] {
            let block_ends: Vec<&str> = text
                .match_indices("-----END CERTIFICATE-----")
                .map(|(at, end)| &text[..at + end.len()])
                .collect();
            for cut in 0..=text.len() {
                let prefix = &text[..cut];
                let reference = block_ends.contains(&prefix.trim_end());
                assert_eq!(
                    is_whole_pem(prefix),
                    reference,
                    "cut at {cut} of {}",
                    text.len()
                );
            }
        }
        assert!(!is_whole_pem("garbage -----BEGIN X-----\n-----END X-----"));
    }
}
