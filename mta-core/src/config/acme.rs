//! `[acme]`: certificates obtained and renewed from an ACME CA (RFC 8555) by `mta serve`
//! itself. Off when the table is absent. `mta-bin` acts on it (`acme/`); here it is only
//! read and checked: the directory is HTTPS, the contacts are `mailto:` addresses, and the
//! names are ours (the hostname, a local domain or a name under one) and have no other
//! certificate configured (`[tls] cert` serves the hostname, `[tls."name"]` its name).

use std::net::{Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::Tls;
use super::checker::Checker;
use super::file::{List, RawAcme, S};
use crate::address::{Address, Domain};

/// Let's Encrypt's production directory, the default CA.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// The default HTTP-01 listener: port 80 on every address, where the CA connects.
pub const DEFAULT_HTTP_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V6(Ipv6Addr::UNSPECIFIED), 80);

/// The default TLS-ALPN-01 listener: port 443 on every address, where the CA connects.
pub const DEFAULT_TLS_ALPN_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V6(Ipv6Addr::UNSPECIFIED), 443);

/// How the CA checks that a name is ours (RFC 8555 §8.3, RFC 8737).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// A token fetched over HTTP on port 80 (`acme.http_listen`).
    Http01,
    /// A certificate served for the `acme-tls/1` protocol on port 443
    /// (`acme.tls_alpn_listen`).
    TlsAlpn01,
}

impl Challenge {
    /// As the config spells it.
    pub fn name(self) -> &'static str {
        match self {
            Challenge::Http01 => "http-01",
            Challenge::TlsAlpn01 => "tls-alpn-01",
        }
    }
}

/// `[acme]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Acme {
    /// The CA's directory URL (`https://`).
    pub directory: String,
    /// Contact URLs given to the CA, each `mailto:` and an address.
    pub contact: Vec<String>,
    /// The names of the one certificate, lower case; the hostname first when it is one.
    pub names: Vec<String>,
    /// The challenge answered.
    pub challenge: Challenge,
    /// Where the HTTP-01 responder listens (bound before privileges are dropped).
    pub http_listen: SocketAddr,
    /// Where the TLS-ALPN-01 responder listens (bound before privileges are dropped).
    pub tls_alpn_listen: SocketAddr,
    /// A PEM root the CA's own HTTPS certificate is checked against in place of the
    /// system's roots (a private or test CA). Never a way to skip the check.
    pub ca_root: Option<PathBuf>,
    /// Renew when less than this is left of the certificate; `None`: when a third of its
    /// lifetime is left (Let's Encrypt's advice), with jitter.
    pub renew_before: Option<Duration>,
}

impl Checker<'_> {
    /// `[acme]` when present. `tls` is checked against it: a name never has two sources.
    pub(super) fn acme(
        &mut self,
        raw: Option<&S<RawAcme>>,
        hostname: &Domain,
        local_domains: &[Domain],
        tls: &Tls,
    ) -> Option<Acme> {
        let raw_span = raw?.span();
        let raw = raw?.get_ref();
        let directory = match &raw.directory {
            Some(d) if d.get_ref().starts_with("https://") && d.get_ref().len() > 8 => {
                d.get_ref().clone()
            }
            Some(d) => {
                let msg = format!("{:?} is not an https:// URL", d.get_ref());
                self.error(d.span(), "acme.directory", msg);
                LETS_ENCRYPT.to_string()
            }
            None => LETS_ENCRYPT.to_string(),
        };
        let contact = self.acme_contact(raw.contact.as_ref());
        let names = self.acme_names(raw.names.as_ref(), hostname, local_domains, tls, raw_span);
        let challenge = match raw.challenge.as_ref().map(|c| (c, c.get_ref().as_str())) {
            None | Some((_, "http-01")) => Challenge::Http01,
            Some((_, "tls-alpn-01")) => Challenge::TlsAlpn01,
            Some((c, other)) => {
                let msg = format!("{other:?} is not \"http-01\" or \"tls-alpn-01\"");
                self.error(c.span(), "acme.challenge", msg);
                Challenge::Http01
            }
        };
        let http_listen = self.listen_addr(
            raw.http_listen.as_ref(),
            "acme.http_listen",
            DEFAULT_HTTP_LISTEN,
        );
        let tls_alpn_listen = self.listen_addr(
            raw.tls_alpn_listen.as_ref(),
            "acme.tls_alpn_listen",
            DEFAULT_TLS_ALPN_LISTEN,
        );
        let ca_root = self.path(&raw.ca_root, "acme.ca_root");
        let renew_before = raw
            .renew_before
            .is_some()
            .then(|| self.duration(&raw.renew_before, "acme.renew_before", Duration::ZERO));
        Some(Acme {
            directory,
            contact,
            names,
            challenge,
            http_listen,
            tls_alpn_listen,
            ca_root,
            renew_before,
        })
    }

    fn listen_addr(
        &mut self,
        text: Option<&S<String>>,
        key: &str,
        default: SocketAddr,
    ) -> SocketAddr {
        let Some(text) = text else {
            return default;
        };
        text.get_ref().parse().unwrap_or_else(|_| {
            let msg = format!("{:?} is not an address:port", text.get_ref());
            self.error(text.span(), key, msg);
            default
        })
    }

    fn acme_contact(&mut self, list: Option<&List>) -> Vec<String> {
        let mut out = Vec::new();
        for item in list.map(|l| l.get_ref().as_slice()).unwrap_or_default() {
            let text = item.get_ref();
            match text.strip_prefix("mailto:").map(Address::parse) {
                Some(Ok(_)) => out.push(text.clone()),
                _ => {
                    let msg = format!("{text:?} is not mailto: and an address");
                    self.error(item.span(), "acme.contact", msg);
                }
            }
        }
        out
    }

    fn acme_names(
        &mut self,
        list: Option<&List>,
        hostname: &Domain,
        local_domains: &[Domain],
        tls: &Tls,
        table: std::ops::Range<usize>,
    ) -> Vec<String> {
        let host = hostname.as_str().to_ascii_lowercase();
        let given: Vec<(String, std::ops::Range<usize>)> = match list {
            Some(l) => l
                .get_ref()
                .iter()
                .map(|n| (n.get_ref().clone(), n.span()))
                .collect(),
            None => vec![(host.clone(), table)],
        };
        let mut out: Vec<String> = Vec::new();
        for (text, span) in given {
            let name = text.trim_end_matches('.').to_ascii_lowercase();
            let why = match Domain::parse(&name) {
                Ok(d) if !d.is_literal() => name_problem(&name, &host, local_domains, tls),
                _ => Some("is not a host name (no wildcards, no addresses)".to_string()),
            };
            if let Some(why) = why {
                self.error(span, "acme.names", format!("{text:?} {why}"));
            } else if !out.contains(&name) {
                out.push(name);
            }
        }
        out
    }
}

/// Why `name` (lower case, a valid host name) cannot be in `acme.names`, if it cannot.
fn name_problem(name: &str, host: &str, local: &[Domain], tls: &Tls) -> Option<String> {
    if !name.contains('.') {
        return Some("has no dot: a CA certifies only names in the DNS".to_string());
    }
    if !is_ours(name, host, local) {
        return Some("is neither the hostname nor a local domain nor a name under one".to_string());
    }
    if name == host && tls.cert.is_some() {
        return Some(
            "is the hostname, which [tls] cert already serves: remove one of them".to_string(),
        );
    }
    if tls.names.contains_key(name) {
        return Some(format!(
            "has its own certificate in [tls.{name:?}]: remove one of them"
        ));
    }
    None
}

/// True when `name` is the hostname, a local domain or a name under a local domain.
pub fn is_ours(name: &str, host: &str, local: &[Domain]) -> bool {
    name == host
        || local.iter().any(|d| {
            let d = d.as_str().to_ascii_lowercase();
            name == d
                || name
                    .strip_suffix(&d)
                    .is_some_and(|rest| rest.ends_with('.'))
        })
}

/// `[acme]` as TOML, or nothing when off.
pub(super) fn write(acme: Option<&Acme>, quote: impl Fn(&str) -> String) -> String {
    let Some(a) = acme else {
        return String::new();
    };
    let list = |items: &[String]| {
        let q: Vec<String> = items.iter().map(|i| quote(i)).collect();
        format!("[{}]", q.join(", "))
    };
    let mut out = format!(
        "\n[acme]\ndirectory = {}\ncontact = {}\nnames = {}\nchallenge = {}\n\
         http_listen = {}\ntls_alpn_listen = {}\n",
        quote(&a.directory),
        list(&a.contact),
        list(&a.names),
        quote(a.challenge.name()),
        quote(&a.http_listen.to_string()),
        quote(&a.tls_alpn_listen.to_string()),
    );
    if let Some(root) = &a.ca_root {
        out += &format!("ca_root = {}\n", quote(&root.to_string_lossy()));
    }
    if let Some(before) = a.renew_before {
        out += &format!(
            "renew_before = {}\n",
            quote(&super::duration::format(before))
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::tests::{domain, errors, parse};
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn off_without_the_table_and_defaults_with_it() {
        assert_eq!(parse("").unwrap().acme, None);
        let c = parse("hostname = \"mx.example.org\"\n[acme]\n").unwrap();
        let want = Acme {
            directory: LETS_ENCRYPT.into(),
            contact: vec![],
            names: vec!["mx.example.org".into()],
            challenge: Challenge::Http01,
            http_listen: DEFAULT_HTTP_LISTEN,
            tls_alpn_listen: DEFAULT_TLS_ALPN_LISTEN,
            ca_root: None,
            renew_before: None,
        };
        assert_eq!(c.acme, Some(want));
        assert_eq!(parse(&c.to_toml()).unwrap(), c);
    }

    #[test]
    fn reads_every_key_and_round_trips() {
        let c = parse(
            "hostname = \"mx.example.org\"\nlocal_domains = [\"example.org\"]\n[acme]\n\
             directory = \"https://127.0.0.1:14000/dir\"\ncontact = [\"mailto:pm@example.org\"]\n\
             names = [\"MX.example.org.\", \"mail.example.org\", \"example.org\"]\n\
             challenge = \"tls-alpn-01\"\ntls_alpn_listen = \"127.0.0.1:8443\"\n\
             http_listen = \"127.0.0.1:8080\"\nca_root = \"/etc/ca.pem\"\nrenew_before = \"20d\"\n",
        )
        .unwrap();
        let a = c.acme.clone().unwrap();
        assert_eq!(
            a.names,
            ["mx.example.org", "mail.example.org", "example.org"]
        );
        assert_eq!(a.renew_before, Some(Duration::from_secs(20 * 86400)));
        assert_eq!(a.challenge, Challenge::TlsAlpn01);
        assert_eq!(a.tls_alpn_listen, "127.0.0.1:8443".parse().unwrap());
        assert_eq!(parse(&c.to_toml()).unwrap(), c);
    }

    #[test]
    fn refuses_names_not_ours_bad_contacts_and_two_sources() {
        let e = errors(
            "hostname = \"mx.example.org\"\nlocal_domains = [\"example.org\"]\n[tls]\ncert = \"/c\"\nkey = \"/k\"\n\
             [tls.\"mail.example.org\"]\ncert = \"/c2\"\nkey = \"/k2\"\n\
             [acme]\ndirectory = \"http://ca\"\ncontact = [\"pm@example.org\"]\n\
             names = [\"mx.example.org\", \"mail.example.org\", \"other.net\", \"localhost\", \
             \"*.example.org\"]\nhttp_listen = \"80\"\nchallenge = \"dns-01\"\n",
        );
        for want in [
            "acme.directory: \"http://ca\" is not an https:// URL",
            "acme.contact: \"pm@example.org\" is not mailto: and an address",
            "\"mx.example.org\" is the hostname, which [tls] cert already serves",
            "\"mail.example.org\" has its own certificate in [tls.\"mail.example.org\"]",
            "\"other.net\" is neither the hostname nor a local domain",
            "\"localhost\" has no dot",
            "\"*.example.org\" is not a host name",
            "acme.http_listen: \"80\" is not an address:port",
            "acme.challenge: \"dns-01\" is not \"http-01\" or \"tls-alpn-01\"",
        ] {
            assert!(e.contains(want), "{want}\nin\n{e}");
        }
    }

    /// The obvious model of "ours": equal to the hostname or a local domain, or ending in
    /// a dot followed by a local domain.
    fn ours_model(name: &str, host: &str, local: &[&str]) -> bool {
        name == host
            || local
                .iter()
                .any(|d| name == *d || name.ends_with(&format!(".{d}")))
    }

    proptest! {
        #[test]
        fn is_ours_matches_the_model(
            labels in proptest::collection::vec("[ab]{1,2}", 1..4),
            local in proptest::collection::vec(proptest::collection::vec("[ab]{1,2}", 1..3), 0..3),
        ) {
            let name = labels.join(".");
            let local: Vec<String> = local.iter().map(|l| l.join(".")).collect();
            let domains: Vec<Domain> = local.iter().map(|d| domain(d)).collect();
            let refs: Vec<&str> = local.iter().map(String::as_str).collect();
            prop_assert_eq!(
                is_ours(&name, "mx.host", &domains),
                ours_model(&name, "mx.host", &refs)
            );
        }
    }
}
