//! `[dmarc_reports]`: off by default, the address must be ours and not an alias, and the
//! bounds are read with their units.

use super::tests::{errors, parse};
use crate::address::Address;

const LOCAL: &str = "local_domains = [\"example.org\"]\n";

#[test]
fn address_in_a_local_domain_turns_it_on() {
    let c = parse(&format!(
        "{LOCAL}[dmarc_reports]\naddress = \"DMARC-Reports@example.org\"\nmax_size = \"1MiB\"\n\
         max_records = 50\nmax_per_day = 7\n"
    ))
    .unwrap();
    let d = &c.dmarc_reports;
    assert!(d.is_address(&Address::parse("dmarc-reports@example.org").unwrap()));
    assert!(!d.is_address(&Address::parse("someone@example.org").unwrap()));
    assert_eq!((d.max_size, d.max_records, d.max_per_day), (1 << 20, 50, 7));
    assert!(parse(LOCAL).unwrap().dmarc_reports.address.is_none());
}

#[test]
fn address_elsewhere_or_an_alias_is_refused() {
    let other = errors(&format!(
        "{LOCAL}[dmarc_reports]\naddress = \"reports@example.net\"\n"
    ));
    assert!(
        other.contains("dmarc_reports.address: reports@example.net is not in one of local_domains"),
        "{other}"
    );
    let alias = errors(&format!(
        "{LOCAL}[aliases]\n\"r@example.org\" = [\"a@example.org\"]\n\
         [dmarc_reports]\naddress = \"r@example.org\"\n"
    ));
    assert!(alias.contains("r@example.org is an alias"), "{alias}");
    let bad = errors("[dmarc_reports]\naddress = \"not an address\"\n");
    assert!(bad.contains("is not a mail address"), "{bad}");
    let zero = errors("[dmarc_reports]\nmax_records = 0\n");
    assert!(
        zero.contains("dmarc_reports.max_records: 0 is below"),
        "{zero}"
    );
}
