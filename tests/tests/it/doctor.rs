//! `mta doctor` against dnsmasq: a zone with every record right gives `ok` for every item and
//! exit 0; zones with one mistake each give `FAIL` for exactly that item, the record to
//! publish, and exit 1; `--json` says the same; a DNS server that fails gives "could not
//! check". No server runs: doctor reads the config and DNS only.
//!
//! Addresses are from the documentation ranges (192.0.2.0/24, 198.51.100.0/24): nothing
//! connects to them, and reverse DNS of 127.0.0.0/8 cannot be served by a test zone (the
//! resolver answers `localhost` itself, RFC 6761 §6.3).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use mta_tests::certs::spki_sha256;
use mta_tests::{KeptDir, Output, ServfailDns, TestDns, mta_with_config, run, secs};

use crate::dkim::{Key, keygen, txt_record};

const HOST: &str = "mx.example.test";
const HOST_IP: &str = "192.0.2.10";

/// Runs openssl in `dir`; panics unless it succeeds.
fn openssl(dir: &Path, args: &[&str]) {
    run(
        "openssl",
        Command::new("openssl").args(args).current_dir(dir),
        b"",
        secs(30),
    )
    .assert_success(&format!("openssl {}", args.join(" ")));
}

/// A test CA and a certificate it signed for [`HOST`]: `ca.pem`, `mx.pem`, `mx.key` in `dir`.
fn ca_signed_cert(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "30", "-subj", "/CN=Doctor Test CA"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(dir, &ca);
    let mut leaf = vec![
        "req",
        "-x509",
        "-days",
        "30",
        "-subj",
        "/CN=mx.example.test",
    ];
    leaf.extend(ec);
    leaf.extend([
        "-addext",
        "subjectAltName=DNS:mx.example.test",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-keyout",
        "mx.key",
        "-out",
        "mx.pem",
    ]);
    openssl(dir, &leaf);
}

/// The records of a mail domain served by [`HOST`], all right, unless left out by `skip`
/// (`mx`, `spf`, `dkim`, `dmarc`).
fn good_domain(domain: &str, key: &Key, skip: &[&str]) -> Vec<String> {
    let mut records = Vec::new();
    if !skip.contains(&"mx") {
        records.push(format!("--mx-host={domain},{HOST},10"));
    }
    if !skip.contains(&"spf") {
        records.push(txt_record(domain, "v=spf1 ip4:192.0.2.0/24 -all"));
    }
    if !skip.contains(&"dkim") {
        records.push(txt_record(&format!("ed._domainkey.{domain}"), &key.text));
    }
    if !skip.contains(&"dmarc") {
        records.push(txt_record(
            &format!("_dmarc.{domain}"),
            &format!("v=DMARC1; p=reject; rua=mailto:postmaster@{domain}"),
        ));
    }
    records
}

/// The host's own records: its address, forward-confirmed reverse DNS, SPF for its EHLO name
/// and the DKIM key of its bounces.
fn good_host(key: &Key) -> Vec<String> {
    vec![
        "--local=/2.0.192.in-addr.arpa/".to_string(),
        format!("--address=/{HOST}/{HOST_IP}"),
        format!("--ptr-record=10.2.0.192.in-addr.arpa,{HOST}"),
        txt_record(HOST, "v=spf1 ip4:192.0.2.0/24 -all"),
        txt_record(&format!("ed._domainkey.{HOST}"), &key.text),
    ]
}

fn start_dns(records: &[String]) -> TestDns {
    let refs: Vec<&str> = records.iter().map(String::as_str).collect();
    TestDns::start(&refs)
}

/// A `[[dkim."domain"]]` table signing `domain` with the key file of `key`.
fn dkim_table(domain: &str, key: &Key) -> String {
    format!(
        "[[dkim.\"{domain}\"]]\nselector = \"ed\"\nkey = {:?}\nalgorithm = \"ed25519\"\n",
        key.file.display().to_string()
    )
}

/// Writes a config into `dir`: the hostname, the local domains, DNS, the certificate (when
/// `cert`) and a DKIM key for each of `signed`.
fn config(
    dir: &Path,
    name: &str,
    dns: &str,
    domains: &[&str],
    signed: &[&str],
    key: &Key,
    cert: bool,
) -> std::path::PathBuf {
    let list: Vec<String> = domains.iter().map(|d| format!("{d:?}")).collect();
    let mut text = format!(
        "hostname = \"{HOST}\"\ndata_dir = {:?}\nlocal_domains = [{}]\n",
        dir.join("data").display().to_string(),
        list.join(", ")
    );
    if cert {
        text.push_str(&format!(
            "[tls]\ncert = {:?}\nkey = {:?}\n",
            dir.join("mx.pem").display().to_string(),
            dir.join("mx.key").display().to_string()
        ));
    }
    text.push_str(dns);
    for d in signed {
        text.push_str(&dkim_table(d, key));
    }
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// One line of the text report.
#[derive(Debug)]
struct Line {
    status: String,
    check: String,
    domain: String,
    detail: String,
    record: Option<String>,
}

/// The verdict lines of a text report (between the header and the summary).
fn lines(out: &Output) -> Vec<Line> {
    let mut result: Vec<Line> = Vec::new();
    let mut in_record = false;
    for l in out.stdout.lines().skip(2) {
        if l.is_empty() {
            break;
        }
        if l == "      publish:" {
            in_record = true;
            continue;
        }
        if in_record && let Some(r) = l.strip_prefix("        ") {
            let last = result.last_mut().expect("a record follows a verdict");
            let record = last.record.get_or_insert_with(String::new);
            record.push_str(r);
            record.push('\n');
            continue;
        }
        in_record = false;
        let mut parts = l.split_whitespace();
        let status = parts.next().unwrap_or_default().to_string();
        let check = parts.next().unwrap_or_default().to_string();
        let domain = parts.next().unwrap_or_default().to_string();
        let detail = parts.collect::<Vec<_>>().join(" ");
        result.push(Line {
            status,
            check,
            domain,
            detail,
            record: None,
        });
    }
    assert!(!result.is_empty(), "no verdicts in:\n{}", out.all());
    result
}

fn doctor(config: &Path, args: &[&str]) -> Output {
    let mut all = vec!["doctor"];
    all.extend(args);
    mta_with_config(config, &all, b"")
}

/// `--json` output as (check, domain) → statuses, after checking each item's shape.
fn json_statuses(out: &Output) -> BTreeMap<(String, String), Vec<String>> {
    let v: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("--json is not JSON ({e}):\n{}", out.all()));
    let mut map: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for item in v.as_array().expect("a JSON array") {
        let s = |k: &str| item[k].as_str().unwrap_or_else(|| panic!("{k} in {item}"));
        assert!(!s("detail").is_empty(), "{item}");
        if s("status") == "fail" {
            assert!(
                item.get("record").is_some()
                    || s("check") == "cert"
                    || s("detail").starts_with("no key: run mta dkim keygen"),
                "a wrong or missing record comes with the record to publish: {item}"
            );
        }
        map.entry((s("check").into(), s("domain").into()))
            .or_default()
            .push(s("status").into());
    }
    map
}

fn text_statuses(lines: &[Line]) -> BTreeMap<(String, String), Vec<String>> {
    let mut map: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for l in lines {
        map.entry((l.check.clone(), l.domain.clone()))
            .or_default()
            .push(l.status.to_ascii_lowercase());
    }
    map
}

#[test]
fn good_zone_is_ok_for_every_item() {
    let dir = KeptDir::new();
    let key = keygen(dir.path(), "example.test", "ed", "ed25519");
    ca_signed_cert(dir.path());
    let spki = spki_sha256(&dir.path().join("mx.pem"));
    let mut records = good_host(&key);
    records.push(tlsa_record(&spki));
    records.extend(good_domain("example.test", &key, &[]));
    records.push(txt_record("_mta-sts.example.test", "v=STSv1; id=20261129"));
    records.push(txt_record(
        "_smtp._tls.example.test",
        "v=TLSRPTv1; rua=mailto:tls-reports@example.test",
    ));
    let dns = start_dns(&records);
    let cfg = config(
        dir.path(),
        "mta.toml",
        &dns.config_toml(),
        &["example.test"],
        &["example.test", HOST],
        &key,
        true,
    );

    let out = doctor(&cfg, &[]);
    assert_eq!(out.code(), 0, "{}", out.all());
    assert!(
        out.stdout
            .starts_with("mta doctor: hostname mx.example.test, outbound 192.0.2.10 "),
        "{}",
        out.stdout
    );
    let verdicts = lines(&out);
    // dnsmasq passes no DNSSEC records along: outbound DANE cannot work through it (the
    // signed case is `dnssec_is_ok_through_a_resolver_that_passes_signatures`).
    for l in verdicts.iter().filter(|l| l.check != "dnssec") {
        assert_eq!(l.status, "ok", "{l:?}\n{}", out.stdout);
        assert!(l.record.is_none(), "{l:?}");
    }
    let checks: Vec<(&str, &str)> = verdicts
        .iter()
        .map(|l| (l.check.as_str(), l.domain.as_str()))
        .collect();
    assert_eq!(
        checks,
        [
            ("address", HOST),
            ("ptr", HOST),
            ("spf", HOST),
            ("dkim", HOST),
            ("cert", HOST),
            ("tlsa", HOST),
            ("dnssec", HOST),
            ("mx", "example.test"),
            ("spf", "example.test"),
            ("dkim", "example.test"),
            ("dmarc", "example.test"),
            ("mta-sts", "example.test"),
            ("tls-rpt", "example.test"),
        ],
        "{}",
        out.stdout
    );
    let detail = |check: &str| {
        &verdicts
            .iter()
            .find(|l| l.check == check)
            .expect("checked")
            .detail
    };
    assert_eq!(
        detail("ptr"),
        "192.0.2.10 → mx.example.test, which resolves back to 192.0.2.10"
    );
    assert!(
        detail("cert").contains("issued by CN=Doctor Test CA"),
        "{}",
        detail("cert")
    );
    assert!(
        detail("cert").contains("chain not checked"),
        "{}",
        detail("cert")
    );
    assert_eq!(detail("mx"), "MX 10 mx.example.test (this host)");

    assert_eq!(
        detail("tlsa"),
        "a DANE-EE record at _25._tcp.mx.example.test matches our certificate"
    );
    assert!(
        detail("dnssec").starts_with("DNSSEC validation does not work through the resolver"),
        "{}",
        detail("dnssec")
    );

    let json = doctor(&cfg, &["--json"]);
    assert_eq!(json.code(), 0, "{}", json.all());
    assert_eq!(json_statuses(&json), text_statuses(&verdicts));

    // A TLSA record for another key: DANE senders would refuse our mail.
    drop(dns);
    let wrong = "00".repeat(32);
    let mut records: Vec<String> = records
        .into_iter()
        .filter(|r| !r.starts_with("--dns-rr=_25._tcp"))
        .collect();
    records.push(tlsa_record(&wrong));
    let dns = start_dns(&records);
    let cfg = config(
        dir.path(),
        "mta-wrong-tlsa.toml",
        &dns.config_toml(),
        &["example.test"],
        &["example.test", HOST],
        &key,
        true,
    );
    let out = doctor(&cfg, &[]);
    assert_eq!(out.code(), 1, "{}", out.all());
    let tlsa = lines(&out)
        .into_iter()
        .find(|l| l.check == "tlsa")
        .expect("a tlsa line");
    assert_eq!(tlsa.status, "FAIL", "{tlsa:?}");
    assert!(
        tlsa.detail.contains("none matching our certificate"),
        "{tlsa:?}"
    );
    let published = tlsa.record.unwrap_or_default();
    assert!(
        published.contains(&format!("IN TLSA 3 1 1 {spki}")),
        "{published}"
    );
}

/// dnsmasq's raw record for `_25._tcp.HOST IN TLSA 3 1 1 <hash>` (type 52).
fn tlsa_record(sha256_hex: &str) -> String {
    format!("--dns-rr=_25._tcp.{HOST},52,030101{sha256_hex}")
}

/// One mistake per domain (or per outbound address), each to be named alone.
#[test]
fn each_mistake_fails_naming_the_item_and_the_record() {
    let dir = KeptDir::new();
    let key = keygen(dir.path(), "example.test", "ed", "ed25519");
    let other = keygen(dir.path(), "other.test", "ed", "ed25519");
    ca_signed_cert(dir.path());
    let mut records = good_host(&key);
    records.extend(good_domain("nomx.test", &key, &["mx"]));
    records.extend(good_domain("wrongmx.test", &key, &["mx"]));
    records.push("--mx-host=wrongmx.test,mx.elsewhere.test,10".into());
    records.push("--address=/mx.elsewhere.test/198.51.100.7".into());
    records.extend(good_domain("badspf.test", &key, &["spf"]));
    records.push(txt_record("badspf.test", "v=spf1 ip4:198.51.100.0/24 -all"));
    records.extend(good_domain("baddkim.test", &key, &["dkim"]));
    records.push(txt_record("ed._domainkey.baddkim.test", &other.text));
    records.extend(good_domain("nodkim.test", &key, &["dkim"]));
    records.extend(good_domain("nodmarc.test", &key, &["dmarc"]));
    records.extend(good_domain("badsts.test", &key, &[]));
    records.push(txt_record("_mta-sts.badsts.test", "v=STSv1;"));
    records.extend(good_domain("example.test", &key, &[]));
    // 192.0.2.20 has no PTR; 192.0.2.30's names a host that is elsewhere.
    records.push("--ptr-record=30.2.0.192.in-addr.arpa,mail.elsewhere.test".into());
    records.push("--address=/mail.elsewhere.test/198.51.100.30".into());
    let dns = start_dns(&records);
    let domains = [
        "nomx.test",
        "wrongmx.test",
        "badspf.test",
        "baddkim.test",
        "nodkim.test",
        "nodmarc.test",
        "badsts.test",
        "example.test",
    ];
    let signed: Vec<&str> = domains
        .iter()
        .copied()
        .filter(|d| *d != "nodkim.test")
        .chain([HOST])
        .collect();
    let cfg = config(
        dir.path(),
        "mta.toml",
        &dns.config_toml(),
        &domains,
        &signed,
        &key,
        true,
    );

    // (arguments, the failing check, words of its detail, words of the record)
    let cases: [(&[&str], &str, &str, &str); 9] = [
        (
            &["nomx.test"],
            "mx",
            "no MX record",
            "nomx.test. IN MX 10 mx.example.test.",
        ),
        (
            &["wrongmx.test"],
            "mx",
            "MX 10 mx.elsewhere.test is not this host",
            "wrongmx.test. IN MX 10 mx.example.test.",
        ),
        (
            &["badspf.test"],
            "spf",
            "\"v=spf1 ip4:198.51.100.0/24 -all\" gives fail for 192.0.2.10",
            "\"v=spf1 ip4:192.0.2.10 ip4:198.51.100.0/24 -all\"",
        ),
        (
            &["baddkim.test"],
            "dkim",
            "ed._domainkey.baddkim.test publishes another key than",
            &format!("ed._domainkey.baddkim.test. IN TXT ( \"{}\" )", key.text),
        ),
        (
            &["nodkim.test"],
            "dkim",
            "no key: run mta dkim keygen --domain nodkim.test",
            "",
        ),
        (
            &["nodmarc.test"],
            "dmarc",
            "no DMARC record at _dmarc.nodmarc.test",
            "\"v=DMARC1; p=none; rua=mailto:postmaster@nodmarc.test\"",
        ),
        (
            &["badsts.test"],
            "mta-sts",
            "\"v=STSv1;\" at _mta-sts.badsts.test does not parse",
            "_mta-sts.badsts.test. IN TXT ( \"v=STSv1; id=",
        ),
        (
            &["example.test", "--ip", "192.0.2.20"],
            "ptr",
            "192.0.2.20 has no PTR record",
            "20.2.0.192.in-addr.arpa. IN PTR mx.example.test.",
        ),
        (
            &["example.test", "--ip", "192.0.2.30"],
            "ptr",
            "192.0.2.30 → mail.elsewhere.test, which does not resolve back",
            "30.2.0.192.in-addr.arpa. IN PTR mx.example.test.",
        ),
    ];
    for (args, check, detail, record) in cases {
        let out = doctor(&cfg, args);
        assert_eq!(out.code(), 1, "{args:?}\n{}", out.all());
        let verdicts = lines(&out);
        let failed: Vec<&Line> = verdicts.iter().filter(|l| l.status == "FAIL").collect();
        assert_eq!(failed.len(), 1, "{args:?}: one FAIL\n{}", out.stdout);
        let f = failed[0];
        assert_eq!(f.check, check, "{args:?}\n{}", out.stdout);
        assert!(f.detail.contains(detail), "{args:?}: {f:?}");
        if !record.is_empty() {
            let published = f.record.as_deref().unwrap_or_default();
            assert!(published.contains(record), "{args:?}: {f:?}");
        }
        // Everything else is fine (MTA-STS and TLS-RPT are optional, the address warns
        // when --ip is not the hostname's, and dnsmasq cannot pass DNSSEC along).
        for l in verdicts.iter().filter(|l| l.status != "FAIL") {
            assert!(
                l.status == "ok"
                    || (["mta-sts", "tls-rpt", "tlsa"].contains(&l.check.as_str())
                        && l.status == "info")
                    || (["address", "dnssec"].contains(&l.check.as_str()) && l.status == "warn"),
                "{args:?}: {l:?}\n{}",
                out.stdout
            );
        }
    }

    // Every domain at once, in text and in JSON: the same verdicts.
    let out = doctor(&cfg, &[]);
    assert_eq!(out.code(), 1, "{}", out.all());
    let text = text_statuses(&lines(&out));
    let json = doctor(&cfg, &["--json"]);
    assert_eq!(json.code(), 1, "{}", json.all());
    assert_eq!(json_statuses(&json), text);
    let failed: Vec<(&str, &str)> = text
        .iter()
        .filter(|(_, s)| s.iter().any(|s| s == "fail"))
        .map(|((c, d), _)| (c.as_str(), d.as_str()))
        .collect();
    assert_eq!(
        failed,
        [
            ("dkim", "baddkim.test"),
            ("dkim", "nodkim.test"),
            ("dmarc", "nodmarc.test"),
            ("mta-sts", "badsts.test"),
            ("mx", "nomx.test"),
            ("mx", "wrongmx.test"),
            ("spf", "badspf.test"),
        ]
    );

    // No [tls] cert: the self-signed certificate `mta serve` made is a FAIL.
    let tls = dir.path().join("data").join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    openssl(
        &tls,
        &[
            "req",
            "-x509",
            "-days",
            "30",
            "-subj",
            "/CN=mx.example.test",
            "-addext",
            "subjectAltName=DNS:mx.example.test",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "selfsigned-key.pem",
            "-out",
            "selfsigned-cert.pem",
        ],
    );
    let cfg = config(
        dir.path(),
        "selfsigned.toml",
        &dns.config_toml(),
        &["example.test"],
        &["example.test"],
        &key,
        false,
    );
    let out = doctor(&cfg, &[]);
    assert_eq!(out.code(), 1, "{}", out.all());
    let failed: Vec<Line> = lines(&out)
        .into_iter()
        .filter(|l| l.status == "FAIL")
        .collect();
    assert_eq!(failed.len(), 1, "{}", out.stdout);
    assert_eq!(failed[0].check, "cert");
    assert!(failed[0].detail.contains("self-signed"), "{:?}", failed[0]);
}

#[test]
fn dns_failure_is_could_not_check() {
    let dir = KeptDir::new();
    let key = keygen(dir.path(), "example.test", "ed", "ed25519");
    ca_signed_cert(dir.path());
    let dns = ServfailDns::start();
    let cfg = config(
        dir.path(),
        "mta.toml",
        &dns.config_toml(),
        &["example.test"],
        &["example.test"],
        &key,
        true,
    );
    let out = doctor(&cfg, &["--ip", HOST_IP]);
    assert_eq!(out.code(), 1, "{}", out.all());
    let verdicts = lines(&out);
    // Only the certificate (a file) and the bounce key (none configured) need no DNS; the
    // DNSSEC probe cannot tell a failing resolver from one that strips signatures, and warns.
    for l in verdicts
        .iter()
        .filter(|l| l.check != "cert" && l.check != "dnssec" && l.status != "info")
    {
        assert_eq!(l.status, "FAIL", "{l:?}");
        assert!(l.detail.starts_with("could not check (DNS: "), "{l:?}");
    }
    assert!(dns.queries() > 0);
}

#[test]
fn dnssec_is_ok_through_a_resolver_that_passes_signatures_and_tlsa_must_be_signed() {
    let dir = KeptDir::new();
    let key = keygen(dir.path(), "example.test", "ed", "ed25519");
    ca_signed_cert(dir.path());
    let spki = spki_sha256(&dir.path().join("mx.pem"));
    let record = format!("_25._tcp.{HOST}. 300 IN TLSA 3 1 1 {spki}");
    let host = format!("{HOST}. 300 IN A {HOST_IP}");
    // The verdicts `dnssec` and `tlsa` with `signed`, `unsigned` (zone, records) and `bogus`.
    let verdicts = |name: &str, signed: &[&str], unsigned: &[(&str, &[&str])], bogus: &[&str]| {
        let dns = mta_tests::SignedDns::start(signed, unsigned, bogus);
        let outbound = format!(
            "[outbound]\ndane_trust_anchor = {:?}\n",
            dns.trust_anchor().display().to_string()
        );
        let cfg = config(
            dir.path(),
            name,
            &format!("{}{outbound}", dns.config_toml()),
            &["example.test"],
            &[],
            &key,
            true,
        );
        let out = doctor(&cfg, &["--ip", HOST_IP]);
        let find = |check: &str| {
            lines(&out)
                .into_iter()
                .find(|l| l.check == check)
                .unwrap_or_else(|| panic!("no {check} verdict\n{}", out.stdout))
        };
        (find("dnssec"), find("tlsa"))
    };

    let (dnssec, tlsa) = verdicts("signed.toml", &[&host, &record], &[], &[]);
    assert_eq!(dnssec.status, "ok", "{dnssec:?}");
    assert!(dnssec.detail.contains("uses DANE"), "{dnssec:?}");
    assert_eq!(tlsa.status, "ok", "{tlsa:?}");

    let (_, tlsa) = verdicts(
        "unsigned.toml",
        &[],
        &[(
            "example.test.",
            &[host.as_str(), record.as_str()] as &[&str],
        )],
        &[],
    );
    assert_eq!(tlsa.status, "warn", "{tlsa:?}");
    assert!(tlsa.detail.contains("not DNSSEC-signed"), "{tlsa:?}");

    let (_, tlsa) = verdicts("bogus.toml", &[&host], &[], &[&record]);
    assert_eq!(tlsa.status, "FAIL", "{tlsa:?}");
    assert!(tlsa.detail.contains("bogus"), "{tlsa:?}");

    let dns = mta_tests::SignedDns::start(&[], &[], &[]);
    let off = config(
        dir.path(),
        "off.toml",
        &format!("{}[outbound]\ndane = false\n", dns.config_toml()),
        &["example.test"],
        &[],
        &key,
        false,
    );
    let out = doctor(&off, &["--ip", HOST_IP]);
    let dnssec = lines(&out)
        .into_iter()
        .find(|l| l.check == "dnssec")
        .expect("a dnssec verdict");
    assert_eq!(dnssec.status, "info", "{dnssec:?}");
}

#[test]
fn ipv6_address_without_ptr_names_the_family_to_turn_off() {
    // The hostname has an A record with a forward-confirmed PTR and an AAAA record without.
    let dir = KeptDir::new();
    let key = keygen(dir.path(), "example.test", "ed", "ed25519");
    ca_signed_cert(dir.path());
    let mut records = good_host(&key);
    records.push(format!("--address=/{HOST}/2001:db8::10"));
    records.push("--local=/8.b.d.0.1.0.0.2.ip6.arpa/".into());
    records.extend(good_domain("example.test", &key, &[]));
    let dns = start_dns(&records);
    let signed = ["example.test", HOST];
    let both = config(
        dir.path(),
        "both.toml",
        &dns.config_toml(),
        &["example.test"],
        &signed,
        &key,
        true,
    );

    let out = doctor(&both, &["example.test"]);
    assert_eq!(out.code(), 1, "{}", out.all());
    let verdicts = lines(&out);
    let ptr: Vec<&Line> = verdicts.iter().filter(|l| l.check == "ptr").collect();
    assert_eq!(ptr.len(), 2, "{}", out.stdout);
    let (v6, v4): (Vec<&Line>, Vec<&Line>) = ptr.iter().partition(|l| l.detail.contains("IPv6"));
    assert_eq!(v4[0].status, "ok", "{:?}", v4[0]);
    assert_eq!(v6[0].status, "FAIL", "{:?}", v6[0]);
    assert!(
        v6[0].detail.contains(
            "IPv6 address 2001:db8::10 has no PTR record (reverse DNS): many receivers refuse \
             its mail: set outbound.ip = \"ipv4\" or add a PTR"
        ),
        "{:?}",
        v6[0]
    );
    let published = v6[0].record.as_deref().unwrap_or_default();
    assert!(
        published.contains("ip6.arpa. IN PTR mx.example.test."),
        "{published}"
    );

    // With IPv4 only, the IPv6 address is not where mail leaves from.
    let v4 = dir.path().join("v4.toml");
    let text = std::fs::read_to_string(&both).unwrap() + "[outbound]\nip = \"ipv4\"\n";
    std::fs::write(&v4, text).unwrap();
    let out = doctor(&v4, &["example.test"]);
    let verdicts = lines(&out);
    let ptr: Vec<&Line> = verdicts.iter().filter(|l| l.check == "ptr").collect();
    assert_eq!(ptr.len(), 1, "{}", out.stdout);
    assert_eq!(ptr[0].status, "ok", "{:?}", ptr[0]);
    let header = out.stdout.lines().next().unwrap_or_default();
    assert!(
        header.contains("outbound 192.0.2.10 (") && !header.contains("2001:db8::10"),
        "{}",
        out.stdout
    );
}

#[test]
fn each_named_certificate_is_checked_for_its_name() {
    let dir = KeptDir::new();
    let key = keygen(dir.path(), "example.test", "ed", "ed25519");
    ca_signed_cert(dir.path());
    let (_, chain, leaf_key) =
        mta_tests::certs::ca_and_leaf(dir.path(), "mail", "mail.example.test");
    let mut records = good_host(&key);
    records.extend(good_domain("example.test", &key, &[]));
    let dns = start_dns(&records);
    let cfg = config(
        dir.path(),
        "mta.toml",
        &dns.config_toml(),
        &["example.test"],
        &["example.test", HOST],
        &key,
        true,
    );
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    for name in ["mail.example.test", "other.example.test"] {
        text.push_str(&format!(
            "[tls.\"{name}\"]\ncert = {:?}\nkey = {:?}\n",
            chain.display().to_string(),
            leaf_key.display().to_string()
        ));
    }
    std::fs::write(&cfg, text).unwrap();

    let out = doctor(&cfg, &["example.test"]);
    let verdicts = lines(&out);
    let cert = |name: &str| {
        verdicts
            .iter()
            .find(|l| l.check == "cert" && l.domain == name)
            .unwrap_or_else(|| panic!("no cert verdict for {name}:\n{}", out.stdout))
    };
    // The test certificates are valid for two days: a warning to renew, not a failure.
    let mail = cert("mail.example.test");
    assert_eq!(mail.status, "warn", "{mail:?}");
    assert!(
        mail.detail.starts_with("mail.crt: expires in ") && !mail.detail.contains("not valid"),
        "{mail:?}"
    );
    let other = cert("other.example.test");
    assert_eq!(other.status, "FAIL", "{other:?}");
    assert!(
        other
            .detail
            .contains("not valid for other.example.test (it names mail.example.test)"),
        "{other:?}"
    );
}
