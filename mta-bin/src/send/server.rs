//! `--server`: `HOST`, `HOST:PORT`, `[IPv6]:PORT`, `[IPv6]` or a bare IPv6 address. Without a
//! port, the one the TLS mode implies (RFC 8314 §3.3: 465 for implicit TLS, RFC 6409 §3.1:
//! 587 for submission with STARTTLS, RFC 5321 §4.5.4.2: 25 for plaintext).

use std::net::Ipv6Addr;

use anyhow::bail;

/// Splits `--server` into host and port, `default_port` when none is given.
///
/// # Errors
/// A malformed value, named with the form to use instead.
pub fn parse(text: &str, default_port: u16) -> anyhow::Result<(String, u16)> {
    if text.is_empty() {
        bail!("--server is empty: give HOST or HOST:PORT");
    }
    if let Some(rest) = text.strip_prefix('[') {
        let Some((addr, after)) = rest.split_once(']') else {
            bail!("--server {text:?}: no closing `]`: write an IPv6 address as [ADDRESS]:PORT");
        };
        if addr.parse::<Ipv6Addr>().is_err() {
            bail!("--server {text:?}: {addr:?} inside [ ] is not an IPv6 address");
        }
        let port = match after {
            "" => default_port,
            _ => match after.strip_prefix(':') {
                Some(p) => port(text, p)?,
                None => bail!("--server {text:?}: expected `:PORT` after `]`"),
            },
        };
        return Ok((addr.to_string(), port));
    }
    if text.parse::<Ipv6Addr>().is_ok() {
        return Ok((text.to_string(), default_port));
    }
    let (host, port) = match text.split_once(':') {
        None => (text, default_port),
        Some((_, p)) if p.contains(':') => {
            bail!(
                "--server {text:?}: more than one `:`: write HOST:PORT, or an IPv6 address \
                 with a port as [ADDRESS]:PORT"
            )
        }
        Some((h, p)) => (h, port(text, p)?),
    };
    if !is_host(host) {
        bail!(
            "--server {text:?}: {host:?} is not a host name or IP address \
             (letters, digits, `-`, `_` and `.` only)"
        );
    }
    Ok((host.to_string(), port))
}

/// A host name or IPv4 address as a resolver takes it: dot-separated labels of letters,
/// digits, `-` and `_` (RFC 1123 §2.1 plus the `_` some internal names carry).
fn is_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').enumerate().all(|(i, label)| {
            // A trailing dot (an absolute name) leaves one empty last label.
            (label.is_empty() && i > 0 && host.ends_with('.') && host.len() > 1)
                || (!label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        })
        && !host.contains("..")
}

fn port(text: &str, p: &str) -> anyhow::Result<u16> {
    match p.parse::<u16>() {
        Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => bail!("--server {text:?}: port {p:?} is not a number from 1 to 65535"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn forms_and_their_errors() {
        let ok: &[(&str, (&str, u16))] = &[
            ("mail.example.org", ("mail.example.org", 587)),
            ("mail.example.org:25", ("mail.example.org", 25)),
            ("mail.example.org.", ("mail.example.org.", 587)),
            ("127.0.0.1:2525", ("127.0.0.1", 2525)),
            ("[::1]:465", ("::1", 465)),
            ("[::1]", ("::1", 587)),
            ("::1", ("::1", 587)),
            ("fe80::1", ("fe80::1", 587)),
            ("a_b-c", ("a_b-c", 587)),
        ];
        for (text, (host, p)) in ok {
            assert_eq!(parse(text, 587).unwrap(), (host.to_string(), *p), "{text}");
        }
        let bad: &[(&str, &str)] = &[
            ("", "--server is empty"),
            ("host:", "port \"\" is not a number"),
            ("host:0", "port \"0\" is not a number"),
            ("host:65536", "port \"65536\""),
            ("host:+25", "port \"+25\""),
            ("[::1", "no closing `]`"),
            ("[mail]:25", "is not an IPv6 address"),
            ("[::1]25", "expected `:PORT`"),
            ("fe80::1:x:25", "as [ADDRESS]:PORT"),
            ("a b:25", "is not a host name"),
            ("a..b", "is not a host name"),
            (".", "is not a host name"),
            ("smtp://host:25", "as [ADDRESS]:PORT"),
            ("user@host", "is not a host name"),
        ];
        for (text, want) in bad {
            let e = parse(text, 587).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    /// The reference model: a label of the host alphabet, and how a server is written.
    fn host() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9_-]{1,10}(\\.[a-z0-9_-]{1,10}){0,3}\\.?",
            any::<[u8; 4]>().prop_map(|o| std::net::Ipv4Addr::from(o).to_string()),
            any::<u128>().prop_map(|v| Ipv6Addr::from(v).to_string()),
        ]
    }

    proptest! {
        #[test]
        fn every_written_form_reads_back(h in host(), p in proptest::option::of(1u16..)) {
            let v6 = h.contains(':');
            let text = match (p, v6) {
                (None, false) => h.clone(),
                (None, true) => format!("[{h}]"),
                (Some(p), false) => format!("{h}:{p}"),
                (Some(p), true) => format!("[{h}]:{p}"),
            };
            prop_assert_eq!(parse(&text, 25).unwrap(), (h.clone(), p.unwrap_or(25)));
            if v6 && p.is_none() {
                prop_assert_eq!(parse(&h, 25).unwrap(), (h, 25));
            }
        }

        #[test]
        fn anything_else_is_refused_or_means_one_host(text in "[a-z0-9:.\\[\\] @_-]{0,24}") {
            // Whatever is accepted is a plain host (or an IPv6 address) and a non-zero port,
            // and reads back the same once written in the canonical form.
            if let Ok((h, p)) = parse(&text, 25) {
                prop_assert!(p > 0);
                let v6 = h.parse::<Ipv6Addr>().is_ok();
                prop_assert!(v6 || is_host(&h), "{h:?}");
                let canonical = if v6 { format!("[{h}]:{p}") } else { format!("{h}:{p}") };
                prop_assert_eq!(parse(&canonical, 25).unwrap(), (h, p));
            }
        }
    }
}
