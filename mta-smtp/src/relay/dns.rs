//! DNSSEC answers as both MX routing (`mx`) and DANE (`dane`) read them: whether a set of
//! records validated, and whether a DNS error says it failed validation. Both use it; it
//! uses neither.

use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::dnssec::Proof;
use hickory_resolver::proto::rr::{Record, RecordType};

/// What the validator says of a set of records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Security {
    /// Every record validated from a trust anchor.
    Secure,
    /// Provably unsigned, or not validated at all.
    Insecure,
    /// Signed, but the signatures do not validate.
    Bogus,
}

/// The security of the `wanted` records among `records` (an answer also holds RRSIGs, and
/// CNAMEs on the way, which count too): secure only when every one is, bogus when any is.
pub fn security<'a>(records: impl IntoIterator<Item = &'a Record>, wanted: RecordType) -> Security {
    let mut any = false;
    let mut all_secure = true;
    let counted = records
        .into_iter()
        .filter(|r| r.record_type() == wanted || r.record_type() == RecordType::CNAME);
    for r in counted {
        any = true;
        match r.proof {
            Proof::Secure => {}
            Proof::Bogus => return Security::Bogus,
            Proof::Insecure | Proof::Indeterminate => all_secure = false,
        }
    }
    if any && all_secure {
        Security::Secure
    } else {
        Security::Insecure
    }
}

/// Whether a DNS error says the answer failed validation (RFC 4035 §5.5): hickory answers
/// a bogus RRset with `DnssecBogus`, and a bogus denial of existence with `Nsec`.
pub fn is_bogus(e: &NetError) -> bool {
    matches!(
        e,
        NetError::Dns(
            DnsError::DnssecBogus
                | DnsError::Nsec {
                    proof: Proof::Bogus,
                    ..
                }
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::proto::rr::{Name, RData};
    use std::net::Ipv4Addr;

    fn record(proof: Proof) -> Record {
        let mut r = Record::from_rdata(
            Name::from_ascii("a.test.").unwrap(),
            60,
            RData::A(Ipv4Addr::LOCALHOST.into()),
        );
        r.proof = proof;
        r
    }

    #[test]
    fn security_of_a_set() {
        let s = |proofs: &[Proof]| {
            let records: Vec<Record> = proofs.iter().map(|p| record(*p)).collect();
            security(&records, RecordType::A)
        };
        assert_eq!(s(&[Proof::Secure, Proof::Secure]), Security::Secure);
        assert_eq!(s(&[Proof::Secure, Proof::Insecure]), Security::Insecure);
        assert_eq!(s(&[Proof::Indeterminate]), Security::Insecure);
        assert_eq!(s(&[Proof::Secure, Proof::Bogus]), Security::Bogus);
        assert_eq!(s(&[]), Security::Insecure);
        let mut rrsig = record(Proof::Indeterminate);
        rrsig.data = RData::Update0(RecordType::RRSIG);
        assert_eq!(
            security(&[record(Proof::Secure), rrsig], RecordType::A),
            Security::Secure,
            "only the records asked for count"
        );
    }
}
