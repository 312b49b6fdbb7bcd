//! `[dkim."domain"]` and `[inbound]`: the full example's keys, one table or several per
//! domain, and the exact text of each mistake.

use super::tests::{domain, errors, parse};
use super::*;

#[test]
fn full_example_keys_in_file_order() {
    let c = parse(super::tests::FULL).unwrap();
    let keys: Vec<(String, &str, &str, Duration)> = c
        .dkim
        .iter()
        .map(|k| {
            (
                k.domain.to_string(),
                k.selector.as_str(),
                k.algorithm.name(),
                k.expire,
            )
        })
        .collect();
    let week = Duration::from_secs(7 * 86_400);
    assert_eq!(
        keys,
        vec![
            ("example.org".to_string(), "s2026", "rsa", week),
            (
                "xn--bcher-kva.example".to_string(),
                "rsa",
                "rsa",
                Duration::from_secs(2 * 86_400)
            ),
            (
                "xn--bcher-kva.example".to_string(),
                "ed.2026",
                "ed25519",
                week
            ),
        ]
    );
    assert_eq!(
        c.dkim[0].key,
        PathBuf::from("/etc/mta/dkim/example.org.key")
    );
    assert_eq!(
        c.inbound,
        Inbound {
            checks: true,
            dmarc_reject: false,
            spf_reject: true,
            spoofed_from: SpoofedFrom::Reject,
            milters: vec![],
            dnsbl: Dnsbl::default(),
        }
    );
}

#[test]
fn one_table_and_an_array_are_both_a_list() {
    let one = parse("[dkim.\"a.test\"]\nselector = \"s\"\nkey = \"k.pem\"\n").unwrap();
    assert_eq!(one.dkim.len(), 1);
    assert_eq!(one.dkim[0].domain, domain("a.test"));
    let two = parse(
        "[[dkim.\"a.test\"]]\nselector = \"r\"\nkey = \"r.pem\"\n\
         [[dkim.\"a.test\"]]\nselector = \"e\"\nkey = \"e.pem\"\nalgorithm = \"ed25519\"\n",
    )
    .unwrap();
    let selectors: Vec<&str> = two.dkim.iter().map(|k| k.selector.as_str()).collect();
    assert_eq!(selectors, ["r", "e"]);
    assert!(!parse("[inbound]\nchecks = false\n").unwrap().inbound.checks);
}

#[test]
fn spoofed_from_is_one_of_three() {
    assert_eq!(parse("").unwrap().inbound.spoofed_from, SpoofedFrom::Mark);
    for (text, want) in [
        ("mark", SpoofedFrom::Mark),
        ("reject", SpoofedFrom::Reject),
        ("off", SpoofedFrom::Off),
    ] {
        let c = parse(&format!("[inbound]\nspoofed_from = \"{text}\"\n")).unwrap();
        assert_eq!(c.inbound.spoofed_from, want);
    }
    let bad = errors("[inbound]\nspoofed_from = \"drop\"\n");
    assert!(
        bad.contains("inbound.spoofed_from: \"drop\" is not one of mark, reject, off"),
        "{bad}"
    );
}

#[test]
fn mistakes_are_named() {
    assert_eq!(
        errors("[dkim.\"a.test\"]\nkey = \"k.pem\"\n"),
        "mta.toml:1:7: dkim.\"a.test\".selector: must be set"
    );
    assert_eq!(
        errors("[dkim.\"a.test\"]\nselector = \"s\"\n"),
        "mta.toml:1:7: dkim.\"a.test\".key: must be set: the PEM private key file (see `mta dkim keygen`)"
    );
    assert_eq!(
        errors("[dkim.\"a.test\"]\nselector = \"s_1\"\nkey = \"k\"\n"),
        "mta.toml:2:12: dkim.\"a.test\".selector: \"s_1\" is not a selector: DNS labels of letters, \
         digits and hyphens, separated by dots"
    );
    assert_eq!(
        errors("[dkim.\"a.test\"]\nselector = \"s\"\nkey = \"k\"\nalgorithm = \"dsa\"\n"),
        "mta.toml:4:13: dkim.\"a.test\".algorithm: \"dsa\" is not one of rsa, ed25519"
    );
    assert_eq!(
        errors("[dkim.\"a b\"]\nselector = \"s\"\nkey = \"k\"\n"),
        "mta.toml:1:7: dkim.\"a b\": \"a b\" is not a domain name"
    );
    assert_eq!(
        errors(
            "[[dkim.\"a.test\"]]\nselector = \"s\"\nkey = \"k\"\n\
             [[dkim.\"a.test\"]]\nselector = \"S\"\nkey = \"k2\"\n"
        ),
        "mta.toml:1:8: dkim.\"a.test\".selector: selector \"s\" is used twice for a.test"
    );
    let unknown = errors("[dkim.\"a.test\"]\nselector = \"s\"\nkey = \"k\"\nbits = 2048\n");
    assert!(unknown.contains("unknown field `bits`"), "{unknown}");
    let not_bool = errors("[inbound]\ndmarc_reject = \"yes\"\n");
    assert!(not_bool.contains("inbound.dmarc_reject"), "{not_bool}");
}
