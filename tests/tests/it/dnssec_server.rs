//! [`SignedDns`] seen through a validating hickory resolver set up the way the relay sets up
//! its own (only this server, its key as the sole trust anchor, `validate = true`): signed
//! RRsets are Secure, RRsets in an unsigned child zone Insecure, a broken signature is an
//! error, and negative answers are `NoRecordsFound` whose SOA carries the proof. These are
//! the facts the module doc of `mta_tests::dnssec` records for DANE (RFC 7672).

use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::dnssec::{Proof, TrustAnchors};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::RecordType;
use mta_tests::{SignedDns, secs, wait_for};

/// How long one lookup may take (the resolver's own timeout is 2 s, one attempt).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Certificate association data (SHA-256 sized) for TLSA records.
const HASH_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const HASH_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const HASH_C: &str = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

/// The layout every test here uses: `remote.test` signed with a good TLSA at mx1 and a
/// bogus one at mx2; `plain.test` an unsigned child zone with a TLSA at its MX host.
fn start() -> SignedDns {
    let good = format!("_25._tcp.mx1.remote.test. 300 IN TLSA 3 1 1 {HASH_A}");
    let plain = format!("_25._tcp.mx.plain.test. 300 IN TLSA 3 1 1 {HASH_C}");
    let bogus = format!("_25._tcp.mx2.remote.test. 300 IN TLSA 3 1 1 {HASH_B}");
    SignedDns::start(
        &[
            "remote.test. 300 IN MX 10 mx1.remote.test.",
            "remote.test. 300 IN MX 20 mx2.remote.test.",
            "mx1.remote.test. 300 IN A 127.0.0.2",
            "mx2.remote.test. 300 IN A 127.0.0.3",
            &good,
        ],
        &[(
            "plain.test.",
            &[
                "plain.test. 300 IN MX 10 mx.plain.test.",
                "mx.plain.test. 300 IN A 127.0.0.4",
                &plain,
            ],
        )],
        &[&bogus],
    )
}

/// A validating resolver asking only `dns`, trusting only its root key (as
/// `mta-smtp/src/relay/mx.rs` points the relay at `[dns] nameservers`).
fn resolver(dns: &SignedDns) -> TokioResolver {
    let mut server = NameServerConfig::udp_and_tcp(dns.addr().ip());
    for connection in &mut server.connections {
        connection.port = dns.addr().port();
    }
    let anchors = TrustAnchors::from_file(dns.trust_anchor()).unwrap_or_else(|e| {
        panic!(
            "hickory cannot read the trust anchor {}: {e}",
            dns.trust_anchor().display()
        )
    });
    let mut builder = TokioResolver::builder_with_config(
        ResolverConfig::from_parts(None, vec![], vec![server]),
        TokioRuntimeProvider::default(),
    )
    .with_trust_anchor(Arc::new(anchors));
    let options = builder.options_mut();
    options.validate = true;
    options.timeout = Duration::from_secs(2);
    options.attempts = 1;
    builder.build().expect("a resolver from a valid config")
}

/// What a validating lookup came to.
#[derive(Debug, PartialEq)]
enum Seen {
    /// `Ok`: the proof of each answer record of the asked type (RRSIGs left out).
    Records(Vec<Proof>),
    /// `DnsError::NoRecordsFound`: its response code and the proof on its SOA.
    NoRecords(ResponseCode, Option<Proof>),
    /// `DnsError::DnssecBogus`.
    Bogus,
    /// Anything else, as Debug.
    Other(String),
}

async fn lookup(resolver: &TokioResolver, name: &str, rtype: RecordType) -> Seen {
    let answer = tokio::time::timeout(LOOKUP_TIMEOUT, resolver.lookup(name, rtype))
        .await
        .unwrap_or_else(|_| panic!("no answer for {name} {rtype} within {LOOKUP_TIMEOUT:?}"));
    match answer {
        Ok(lookup) => Seen::Records(
            lookup
                .answers()
                .iter()
                .filter(|r| r.record_type() == rtype)
                .map(|r| r.proof)
                .collect(),
        ),
        Err(NetError::Dns(DnsError::NoRecordsFound(none))) => {
            Seen::NoRecords(none.response_code, none.soa.as_ref().map(|soa| soa.proof))
        }
        Err(NetError::Dns(DnsError::DnssecBogus)) => Seen::Bogus,
        Err(other) => Seen::Other(format!("{other:?}")),
    }
}

#[tokio::test]
async fn signed_mx_tlsa_and_address_are_secure() {
    let dns = start();
    let resolver = resolver(&dns);
    let secure = |n| Seen::Records(vec![Proof::Secure; n]);
    assert_eq!(
        lookup(&resolver, "remote.test.", RecordType::MX).await,
        secure(2)
    );
    assert_eq!(
        lookup(&resolver, "_25._tcp.mx1.remote.test.", RecordType::TLSA).await,
        secure(1)
    );
    assert_eq!(
        lookup(&resolver, "mx1.remote.test.", RecordType::A).await,
        secure(1)
    );
    // From the cache, the proof is the same.
    assert_eq!(
        lookup(&resolver, "_25._tcp.mx1.remote.test.", RecordType::TLSA).await,
        secure(1)
    );
    // The relay's own address lookup keeps the proof too.
    let ips = tokio::time::timeout(LOOKUP_TIMEOUT, resolver.lookup_ip("mx1.remote.test."))
        .await
        .expect("lookup_ip answers in time")
        .expect("mx1.remote.test has an address");
    let proofs: Vec<Proof> = ips
        .as_lookup()
        .answers()
        .iter()
        .filter(|r| r.record_type() == RecordType::A)
        .map(|r| r.proof)
        .collect();
    assert_eq!(proofs, [Proof::Secure]);
}

#[tokio::test]
async fn unsigned_child_zone_is_insecure_not_an_error() {
    let dns = start();
    let resolver = resolver(&dns);
    let insecure = Seen::Records(vec![Proof::Insecure]);
    assert_eq!(
        lookup(&resolver, "plain.test.", RecordType::MX).await,
        insecure
    );
    assert_eq!(
        lookup(&resolver, "_25._tcp.mx.plain.test.", RecordType::TLSA).await,
        insecure
    );
    assert_eq!(
        lookup(&resolver, "mx.plain.test.", RecordType::A).await,
        insecure
    );
}

#[tokio::test]
async fn a_broken_signature_is_the_dnssec_bogus_error() {
    let dns = start();
    let resolver = resolver(&dns);
    assert_eq!(
        lookup(&resolver, "_25._tcp.mx2.remote.test.", RecordType::TLSA).await,
        Seen::Bogus,
        "signed root zone:\n{}",
        dns.root_zone()
    );
    // Not cached: asked again, it is still an error, and its neighbours are still fine.
    assert_eq!(
        lookup(&resolver, "_25._tcp.mx2.remote.test.", RecordType::TLSA).await,
        Seen::Bogus
    );
    assert_eq!(
        lookup(&resolver, "mx2.remote.test.", RecordType::A).await,
        Seen::Records(vec![Proof::Secure])
    );
}

#[tokio::test]
async fn negative_answers_are_no_records_found_with_the_proof_on_the_soa() {
    let dns = start();
    let resolver = resolver(&dns);
    let cases = [
        // Signed zone: NXDOMAIN, and NODATA at a name that has an MX only.
        (
            "nowhere.remote.test.",
            ResponseCode::NXDomain,
            Proof::Secure,
        ),
        (
            "_25._tcp.nowhere.remote.test.",
            ResponseCode::NXDomain,
            Proof::Secure,
        ),
        ("remote.test.", ResponseCode::NoError, Proof::Secure),
        ("mx1.remote.test.", ResponseCode::NoError, Proof::Secure),
        // An empty non-terminal (only _25._tcp.mx1.remote.test exists below it).
        (
            "_tcp.mx1.remote.test.",
            ResponseCode::NoError,
            Proof::Secure,
        ),
        // Unsigned child zone: the same shapes, Insecure.
        (
            "nowhere.plain.test.",
            ResponseCode::NXDomain,
            Proof::Insecure,
        ),
        ("mx.plain.test.", ResponseCode::NoError, Proof::Insecure),
    ];
    for (name, code, proof) in cases {
        assert_eq!(
            lookup(&resolver, name, RecordType::TLSA).await,
            Seen::NoRecords(code, Some(proof)),
            "TLSA at {name}"
        );
        // From the cache, the same.
        assert_eq!(
            lookup(&resolver, name, RecordType::TLSA).await,
            Seen::NoRecords(code, Some(proof)),
            "TLSA at {name}, asked again"
        );
    }
}

#[test]
fn the_harness_serves_its_zones_and_stops() {
    let dns = start();
    assert!(
        dns.config_toml().contains(&format!(
            "nameservers = [\"127.0.0.1:{}\"]",
            dns.addr().port()
        )),
        "{}",
        dns.config_toml()
    );
    let anchor = std::fs::read_to_string(dns.trust_anchor()).expect("the trust anchor is a file");
    assert!(anchor.starts_with(". 3600 IN DNSKEY 257 3 13 "), "{anchor}");
    // Its log is kept (read by a thread, so it may lag the first answer a little).
    wait_for(secs(5), "nsd to log loading plain.test.", || {
        dns.log().contains("zone plain.test. read with success")
    });
    let addr = dns.addr();
    drop(dns);
    // nsd and its helper processes are gone: the port can be bound again.
    wait_for(secs(5), "nsd to release its port", || {
        std::net::UdpSocket::bind(addr).is_ok() && std::net::TcpListener::bind(addr).is_ok()
    });
}
