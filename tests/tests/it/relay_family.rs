//! Which address family outbound mail goes over (`outbound.ip`), and the way out when a
//! receiver refuses mail over IPv6 for its reverse DNS: each MX host has an A record on
//! `127.0.0.2` and an AAAA record on `::1`, with a fake receiver on each.

use std::net::{Ipv6Addr, SocketAddr};

use mta_tests::fake_smtp::{FakeSmtp, Script};
use mta_tests::relay::{REMOTE_BOB, message, start_sender, submit};
use mta_tests::{MtaBuilder, TestDns, on_shared_port, secs};

/// Gmail's refusal of mail from an IPv6 address without a PTR record.
const GMAIL_PTR: &str = "550-5.7.25 [2001:db8::25] The IP address sending this message does not have a\r\n\
     550-5.7.25 PTR record setup, or the corresponding forward DNS entry does not point to\r\n\
     550 5.7.25 the sending IP. As a policy, Gmail does not accept messages from IPs. - gsmtp";

/// The DNS: remote.test's MX is `mx1.remote.test`, with `addresses` (`127.0.0.2`, `::1`).
fn dns(addresses: &str) -> TestDns {
    TestDns::start(&[
        "--mx-host=remote.test,mx1.remote.test,10",
        &format!("--host-record=mx1.remote.test,{addresses}"),
    ])
}

/// A fake receiver on `127.0.0.2` that takes everything, and one on `::1` on the same port
/// that answers the data with `v6_data` (when given).
fn fakes(v6_data: Option<&'static str>) -> (u16, (FakeSmtp, FakeSmtp)) {
    on_shared_port("the IPv4 and IPv6 fakes", |p| {
        let script = match v6_data {
            Some(reply) => Script {
                data: Box::new(move |_| reply.into()),
                ..Script::default()
            },
            None => Script::default(),
        };
        let v6 = FakeSmtp::start(SocketAddr::from((Ipv6Addr::LOCALHOST, p)), script)?;
        let v4 = FakeSmtp::start(SocketAddr::from(([127, 0, 0, 2], p)), Script::default())?;
        Ok((v4, v6))
    })
}

/// The sender, its `[outbound]` table with `outbound`, retrying only after an hour: mail
/// that arrives within a test's wait went on the first attempt.
fn sender(dns: &TestDns, port: u16, outbound: &str) -> MtaBuilder {
    MtaBuilder::new().toml(&format!(
        "{}[outbound]\nport = {port}\n{outbound}\n\
         [queue]\nretry_first = \"1h\"\nretry_max = \"1h\"\n",
        dns.config_toml()
    ))
}

#[test]
fn refused_over_ipv6_for_ptr_goes_over_ipv4_at_once() {
    let dns = dns("127.0.0.2,::1");
    let (port, (v4, v6)) = fakes(Some(GMAIL_PTR));
    let tx = start_sender(sender(&dns, port, ""));
    submit(&tx, &[REMOTE_BOB], &message(REMOTE_BOB, "over IPv4 please"));

    tx.wait_for_empty_queue(secs(20));
    assert_eq!(v6.transactions().len(), 1, "{}", v6.transcript());
    let delivered = v4.transactions();
    assert_eq!(delivered.len(), 1, "{}", v4.transcript());
    assert!(delivered[0].data_reply.starts_with("250"), "{delivered:?}");
    let log = tx.log();
    assert!(log.contains("trying again over IPv4"), "{log}");
    assert!(!log.contains("recipient failed"), "no bounce: {log}");

    // The next message to the host goes over IPv4 without asking IPv6 first.
    submit(&tx, &[REMOTE_BOB], &message(REMOTE_BOB, "second"));
    tx.wait_for_empty_queue(secs(20));
    assert_eq!(v4.transactions().len(), 2, "{}", v4.transcript());
    assert_eq!(v6.connections(), 1, "{}", v6.transcript());
}

#[test]
fn other_refusals_over_ipv6_stay_final() {
    let dns = dns("127.0.0.2,::1");
    let (port, (v4, v6)) = fakes(Some("554 5.6.0 content refused"));
    let tx = start_sender(sender(&dns, port, ""));
    submit(&tx, &[REMOTE_BOB], &message(REMOTE_BOB, "refused"));

    tx.wait_for_empty_queue(secs(20));
    assert_eq!(v6.transactions().len(), 1, "{}", v6.transcript());
    assert_eq!(v4.connections(), 0, "{}", v4.transcript());
}

#[test]
fn ipv4_never_connects_over_ipv6() {
    let dns = dns("127.0.0.2,::1");
    let (port, (v4, v6)) = fakes(None);
    let tx = start_sender(sender(&dns, port, "ip = \"ipv4\""));
    submit(&tx, &[REMOTE_BOB], &message(REMOTE_BOB, "one"));
    submit(&tx, &[REMOTE_BOB], &message(REMOTE_BOB, "two"));

    tx.wait_for_empty_queue(secs(20));
    assert_eq!(v4.transactions().len(), 2, "{}", v4.transcript());
    assert_eq!(v6.connections(), 0, "{}", v6.transcript());
}

#[test]
fn prefer_ipv4_tries_ipv4_first() {
    let dns = dns("127.0.0.2,::1");
    let (port, (v4, v6)) = fakes(None);
    let tx = start_sender(sender(&dns, port, "ip = \"prefer-ipv4\""));
    submit(&tx, &[REMOTE_BOB], &message(REMOTE_BOB, "prefer"));

    tx.wait_for_empty_queue(secs(20));
    assert_eq!(v4.transactions().len(), 1, "{}", v4.transcript());
    assert_eq!(v6.connections(), 0, "{}", v6.transcript());
}

#[test]
fn ipv6_with_only_an_a_record_defers_naming_the_family() {
    let dns = dns("127.0.0.2");
    let (port, (v4, v6)) = fakes(None);
    let tx = start_sender(sender(&dns, port, "ip = \"ipv6\""));
    let id = submit(&tx, &[REMOTE_BOB], &message(REMOTE_BOB, "nowhere"));

    let r = tx.wait_for_deferral(&id, REMOTE_BOB, 1, secs(20));
    assert!(
        r.to_string()
            .contains("no IPv6 address for mx1.remote.test"),
        "{r}"
    );
    assert_eq!(v4.connections() + v6.connections(), 0);
}
