//! The recorder's bounds (against a reference model), what survives a restart, who may
//! receive a report, the daily limits, and the report message read back by mail-auth.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use mail_auth::common::parse::TxtRecordParser;
use mail_auth::dmarc::Dmarc;
use mail_auth::report::{ActionDisposition, Record, Report};
use mta_core::address::{Address, Domain};
use mta_core::config::DmarcSend;

use super::send::{self, Sent, allowed, needs_verification};
use super::{FILE, Recorder};

fn row(ip: u8, disposition: ActionDisposition) -> Record {
    Record::new()
        .with_source_ip(IpAddr::V4(Ipv4Addr::new(192, 0, 2, ip)))
        .with_header_from("example.net")
        .with_action_disposition(disposition)
}

/// The reference: a domain is taken while fewer than `max_domains` are; a row while its
/// domain has fewer than `max_records`; every other message is dropped.
fn model(
    events: &[(u8, u8)],
    max_domains: usize,
    max_records: usize,
) -> (HashMap<(u8, u8), u32>, u64, u64) {
    let mut counts: HashMap<(u8, u8), u32> = HashMap::new();
    let mut domains: HashSet<u8> = HashSet::new();
    let (mut dropped_rows, mut dropped_domains) = (0, 0);
    for &(d, r) in events {
        if !domains.contains(&d) {
            if domains.len() >= max_domains {
                dropped_domains += 1;
                continue;
            }
            domains.insert(d);
        }
        let rows = counts.keys().filter(|(dd, _)| *dd == d).count();
        if !counts.contains_key(&(d, r)) && rows >= max_records {
            dropped_rows += 1;
            continue;
        }
        *counts.entry((d, r)).or_default() += 1;
    }
    (counts, dropped_rows, dropped_domains)
}

proptest::proptest! {
    #[test]
    fn bounded_counting_agrees_with_the_reference(
        events in proptest::collection::vec((0u8..6, 0u8..6), 0..200),
        max_domains in 1usize..5,
        max_records in 1usize..5,
    ) {
        let r = Recorder::new(max_domains, max_records);
        for &(d, ip) in &events {
            r.record(&format!("D{d}.example"), row(ip, ActionDisposition::None));
        }
        let (period, _) = r.take();
        let (want, dropped_rows, dropped_domains) = model(&events, max_domains, max_records);
        let mut got: HashMap<(u8, u8), u32> = HashMap::new();
        let mut got_dropped = 0;
        proptest::prop_assert!(period.domains.len() <= max_domains);
        for (domain, rows) in &period.domains {
            let d: u8 = domain.trim_start_matches('d').split('.').next().unwrap().parse().unwrap();
            proptest::prop_assert!(rows.rows.len() <= max_records);
            got_dropped += rows.dropped;
            for (rec, n) in &rows.rows {
                let IpAddr::V4(ip) = rec.row.source_ip.unwrap() else { unreachable!() };
                got.insert((d, ip.octets()[3]), *n);
            }
        }
        proptest::prop_assert_eq!(got, want);
        proptest::prop_assert_eq!(got_dropped, dropped_rows);
        proptest::prop_assert_eq!(period.dropped_domains, dropped_domains);
        proptest::prop_assert!(r.take().0.domains.is_empty(), "a new period starts empty");
    }
}

/// A million messages from ever new addresses and domains keep at most the bounds.
#[test]
fn memory_is_bounded() {
    let r = Recorder::new(super::MAX_DOMAINS, 10);
    for i in 0..200_000u32 {
        let ip = IpAddr::V4(Ipv4Addr::from(i));
        let rec = Record::new().with_source_ip(ip);
        r.record(&format!("d{}.example", i % 3000), rec);
    }
    let (period, _) = r.take();
    assert_eq!(period.domains.len(), super::MAX_DOMAINS);
    assert!(period.domains.values().all(|d| d.rows.len() <= 10));
    let kept: u64 = period
        .domains
        .values()
        .map(|d| d.rows.values().map(|n| u64::from(*n)).sum::<u64>() + d.dropped)
        .sum();
    assert_eq!(
        kept + period.dropped_domains,
        200_000,
        "every message counted somewhere"
    );
}

#[test]
fn counts_survive_a_restart_and_are_sent_once() {
    let dir = tempfile::tempdir().unwrap();
    let r = Recorder::open(dir.path(), 100);
    r.record("Example.NET", row(1, ActionDisposition::None));
    r.record("example.net", row(1, ActionDisposition::None));
    r.record("example.net", row(2, ActionDisposition::Reject));
    r.save();
    drop(r);
    let again = Recorder::open(dir.path(), 100);
    let (period, end) = again.take();
    assert!(end > period.begin);
    let rows = &period.domains["example.net"];
    assert_eq!(rows.rows.len(), 2);
    assert_eq!(rows.rows[&row(1, ActionDisposition::None)], 2);
    // Taken counts are written away at once: a restart does not send them again.
    let third = Recorder::open(dir.path(), 100);
    assert!(third.take().0.domains.is_empty());
    // A file with more rows than allowed now is cut to the bounds.
    let big = Recorder::open(dir.path(), 100);
    for ip in 0..50 {
        big.record("example.net", row(ip, ActionDisposition::None));
    }
    big.save();
    let small = Recorder::open(dir.path(), 10);
    let rows = &small.take().0.domains["example.net"];
    assert_eq!((rows.rows.len(), rows.dropped), (10, 40));
    // A damaged file starts anew.
    std::fs::write(dir.path().join(FILE), b"{not json").unwrap();
    assert!(Recorder::open(dir.path(), 10).take().0.domains.is_empty());
}

fn d(s: &str) -> Domain {
    Domain::parse(s).unwrap()
}

/// The reference: the labels of `to` end with the labels of an allowed domain.
fn allowed_model(to: &str, allow: &[String]) -> bool {
    let labels = |s: &str| {
        s.to_ascii_lowercase()
            .split('.')
            .rev()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    allow.iter().any(|a| labels(to).starts_with(&labels(a)))
}

proptest::proptest! {
    #[test]
    fn the_allow_list_agrees_with_the_reference(
        to in "(a|b|Rep|rep|test)(\\.(a|b|rep|test)){0,3}",
        allow in proptest::collection::vec("(a|b|rep|TEST|test)(\\.(a|b|rep|test)){0,2}", 0..3),
    ) {
        let domains: Vec<Domain> = allow.iter().map(|a| d(a)).collect();
        proptest::prop_assert_eq!(allowed(&d(&to), &domains), allowed_model(&to, &allow));
    }
}

#[test]
fn who_may_receive() {
    let allow = [d("rep.test")];
    assert!(allowed(&d("rep.test"), &allow));
    assert!(allowed(&d("dmarc.REP.test"), &allow));
    assert!(!allowed(&d("xrep.test"), &allow));
    assert!(!allowed(&d("test"), &allow));
    assert!(!allowed(&Domain::parse("[192.0.2.1]").unwrap(), &allow));
    assert!(!needs_verification("example.net", "reports.example.net"));
    assert!(needs_verification("example.net", "rep.test"));
    assert!(needs_verification("victim.co.uk", "attacker.co.uk"));
}

#[test]
fn reports_a_day_are_limited_per_destination_and_in_all() {
    let mut sent = Sent::default();
    let day = 20_000 * 86_400;
    let to = |s: &str| vec![Address::parse(s).unwrap()];
    for _ in 0..send::MAX_REPORTS_PER_DESTINATION {
        assert!(sent.may_send(day, &to("a@rep.test")));
    }
    assert!(!sent.may_send(day, &to("b@REP.test")));
    assert!(sent.may_send(day, &to("a@other.test")));
    assert!(sent.may_send(day + 86_400, &to("a@rep.test")), "a new day");
    let mut sent = Sent::default();
    for i in 0..send::MAX_REPORTS_PER_DAY {
        assert!(sent.may_send(day, &to(&format!("a@d{i}.test"))));
    }
    assert!(!sent.may_send(day, &to("a@new.test")));
}

#[test]
fn the_report_reads_back() {
    let settings = DmarcSend {
        enabled: true,
        allow: vec![d("rep.test")],
        org_name: "Example Org".into(),
        contact: Address::parse("postmaster@example.org").ok(),
        interval: Duration::from_secs(60),
        max_records: 10,
    };
    let r = Recorder::new(10, 10);
    r.record("example.net", row(1, ActionDisposition::None));
    r.record("example.net", row(1, ActionDisposition::None));
    r.record("example.net", row(2, ActionDisposition::Reject));
    let (period, end) = r.take();
    let dmarc = Dmarc::parse(b"v=DMARC1; p=reject; rua=mailto:dmarc@rep.test").unwrap();
    let report = send::report(
        &settings,
        "mx.example.org",
        "example.net",
        &dmarc,
        &period.domains["example.net"],
        period.begin,
        end,
    );
    let text = report
        .to_rfc5322(
            "mx.example.org",
            "postmaster@example.org",
            ["dmarc@rep.test"].into_iter(),
        )
        .unwrap();
    // RFC 7489 §7.2.1.1's subject (mail-builder writes it as encoded words, RFC 2047).
    assert!(
        text.contains(
            "Subject: =?us-ascii?Q?Report_Domain:_example.net_Submitter:_mx.example.org?="
        ),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "Report-ID:_<{}.example.net@mx.example.org>",
            period.begin
        )),
        "{text}"
    );
    let name = format!("mx.example.org!example.net!{}!{end}.xml.gz", period.begin);
    assert!(text.contains(&name), "{text}");
    let back = Report::parse_rfc5322(text.as_bytes(), 1 << 20).unwrap();
    assert_eq!(back.org_name(), "Example Org");
    assert_eq!(back.domain(), "example.net");
    let mut counts: Vec<(ActionDisposition, u32)> = back
        .records()
        .iter()
        .map(|r| (r.action_disposition(), r.count()))
        .collect();
    counts.sort_by_key(|c| c.1);
    assert_eq!(
        counts,
        [(ActionDisposition::Reject, 1), (ActionDisposition::None, 2)]
    );
}
