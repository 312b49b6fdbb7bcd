//! `[dmarc_reports.send]`: off by default, on only with an allow-list.

use std::time::Duration;

use super::tests::{errors, parse};
use crate::address::{Address, Domain};

const LOCAL: &str = "hostname = \"mx.example.org\"\nlocal_domains = [\"example.org\"]\n";

#[test]
fn off_by_default() {
    let s = parse(LOCAL).unwrap().dmarc_reports.send;
    assert!(!s.enabled);
    assert!(s.allow.is_empty());
    assert_eq!(s.org_name, "mx.example.org");
    assert_eq!(s.contact, Address::parse("postmaster@example.org").ok());
    assert_eq!(s.interval, Duration::from_secs(86_400));
}

#[test]
fn on_with_an_allow_list() {
    let c = parse(&format!(
        "{LOCAL}[dmarc_reports.send]\nenabled = true\nallow = [\"example.net\", \"Rep.Test\"]\n\
         org_name = \"Example Org\"\ncontact = \"dmarc@example.org\"\ninterval = \"2s\"\n\
         max_records = 5\n"
    ))
    .unwrap();
    let s = c.dmarc_reports.send;
    assert!(s.enabled);
    let allow: Vec<Domain> = ["example.net", "rep.test"]
        .iter()
        .map(|d| Domain::parse(d).unwrap())
        .collect();
    assert_eq!(s.allow, allow);
    assert_eq!(s.org_name, "Example Org");
    assert_eq!(s.contact, Address::parse("dmarc@example.org").ok());
    assert_eq!((s.interval, s.max_records), (Duration::from_secs(2), 5));
}

#[test]
fn on_without_an_allow_list_is_refused() {
    for allow in ["", "allow = []\n"] {
        let e = errors(&format!(
            "{LOCAL}[dmarc_reports.send]\nenabled = true\n{allow}"
        ));
        assert!(
            e.contains("dmarc_reports.send.enabled: sending DMARC reports needs"),
            "{e}"
        );
    }
    let e = errors("[dmarc_reports.send]\nallow = [\"[192.0.2.1]\"]\nmax_records = 0\n");
    assert!(e.contains("is an address literal"), "{e}");
    assert!(e.contains("dmarc_reports.send.max_records"), "{e}");
    let e = errors("[dmarc_reports.send]\norg_name = \"a\\r\\nb\"\ninterval = \"0s\"\n");
    assert!(e.contains("dmarc_reports.send.org_name"), "{e}");
    assert!(e.contains("dmarc_reports.send.interval"), "{e}");
}
