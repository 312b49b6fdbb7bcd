//! The lookups `mta doctor` makes, through the resolver delivery uses (`[dns] nameservers`,
//! its timeouts and attempts bound every lookup). Each answers with the records, an empty
//! list when the name has none of that type (NXDOMAIN or NODATA: for a check, both mean "not
//! published"), or the reason it could not be asked (timeout, SERVFAIL, refused…).

use std::net::IpAddr;

use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use mail_auth::MessageAuthenticator;
use mta_smtp::client::dane::TlsaRecord;
use mta_smtp::relay::dane::tlsa_records;

/// A lookup's answer: records, or why there is none to judge.
pub type Answer<T> = Result<Vec<T>, String>;

/// The resolver, inside mail-auth's authenticator so SPF can be evaluated on it too.
pub struct Dns {
    auth: MessageAuthenticator,
}

/// `name` as a fully qualified name, so no search domain is appended.
fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

/// The reverse-lookup name of `ip` (`10.2.0.192.in-addr.arpa.`).
pub fn reverse_name(ip: IpAddr) -> String {
    Name::from(ip).to_ascii()
}

/// No records is an empty answer; anything else is a failure to report.
fn failure<T>(e: NetError, what: &str, name: &str) -> Answer<T> {
    match e {
        NetError::Dns(DnsError::NoRecordsFound(_)) => Ok(Vec::new()),
        NetError::Timeout => Err(format!("{what} lookup for {name} timed out")),
        NetError::Dns(DnsError::ResponseCode(code)) => {
            Err(format!("{what} lookup for {name}: {code}"))
        }
        other => Err(format!("{what} lookup for {name}: {other}")),
    }
}

/// True when the error carries a DNS server's answer (a response code or an empty answer),
/// false when no server was heard from.
fn answered(e: &NetError) -> bool {
    matches!(
        e,
        NetError::Dns(DnsError::NoRecordsFound(_)) | NetError::Dns(DnsError::ResponseCode(_))
    )
}

impl Dns {
    /// Wraps the resolver delivery uses.
    pub fn new(auth: MessageAuthenticator) -> Dns {
        Dns { auth }
    }

    /// For SPF evaluation.
    pub fn auth(&self) -> &MessageAuthenticator {
        &self.auth
    }

    /// The TXT records at `name`, each one's strings joined (RFC 7208 §3.3, RFC 6376 §3.6.2.2).
    pub async fn txt(&self, name: &str) -> Answer<String> {
        match self.auth.resolver().txt_lookup(fqdn(name)).await {
            Ok(lookup) => Ok(lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::TXT(txt) => Some(
                        txt.txt_data
                            .iter()
                            .map(|s| String::from_utf8_lossy(s))
                            .collect::<String>(),
                    ),
                    _ => None,
                })
                .collect()),
            Err(e) => failure(e, "TXT", name),
        }
    }

    /// The MX records of `name`: preference and host without the trailing dot; the host is
    /// empty for a null MX (RFC 7505).
    pub async fn mx(&self, name: &str) -> Answer<(u16, String)> {
        match self.auth.resolver().mx_lookup(fqdn(name)).await {
            Ok(lookup) => Ok(lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::MX(mx) => Some((
                        mx.preference,
                        mx.exchange
                            .to_ascii()
                            .trim_end_matches('.')
                            .to_ascii_lowercase(),
                    )),
                    _ => None,
                })
                .collect()),
            Err(e) => failure(e, "MX", name),
        }
    }

    /// The TLSA records at `name` (RFC 6698).
    pub async fn tlsa(&self, name: &str) -> Answer<TlsaRecord> {
        let lookup = self
            .auth
            .resolver()
            .lookup(fqdn(name), RecordType::TLSA)
            .await;
        match lookup {
            Ok(lookup) => Ok(tlsa_records(lookup.answers())),
            Err(e) => failure(e, "TLSA", name),
        }
    }

    /// The A and AAAA records of `name`.
    pub async fn ips(&self, name: &str) -> Answer<IpAddr> {
        match self.auth.resolver().lookup_ip(fqdn(name)).await {
            Ok(lookup) => Ok(lookup.iter().collect()),
            Err(e) => failure(e, "address", name),
        }
    }

    /// Whether any nameserver answers at all: `Err` with the reason when none does (a
    /// timeout, a refused connection), `Ok` for any DNS answer, even an error code such as
    /// SERVFAIL or NXDOMAIN, which the checks then report one by one.
    pub async fn probe(&self) -> Result<(), String> {
        match self.auth.resolver().lookup(".", RecordType::NS).await {
            Ok(_) => Ok(()),
            Err(e) if answered(&e) => Ok(()),
            Err(NetError::Timeout) => Err("no answer (timed out)".to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The PTR records of `ip`, without the trailing dot.
    pub async fn ptr(&self, ip: IpAddr) -> Answer<String> {
        match self.auth.resolver().reverse_lookup(Name::from(ip)).await {
            Ok(lookup) => Ok(lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::PTR(ptr) => {
                        Some(ptr.0.to_ascii().trim_end_matches('.').to_ascii_lowercase())
                    }
                    _ => None,
                })
                .collect()),
            Err(e) => failure(e, "PTR", &ip.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_names() {
        assert_eq!(
            reverse_name("192.0.2.10".parse().unwrap()),
            "10.2.0.192.in-addr.arpa."
        );
        assert!(
            reverse_name("2001:db8::10".parse().unwrap()).ends_with(".8.b.d.0.1.0.0.2.ip6.arpa.")
        );
    }
}
