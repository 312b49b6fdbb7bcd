//! TLS reports (RFC 8460): the sender delivers to remote.test over STARTTLS and to plain.test,
//! whose MX offers no STARTTLS; both domains ask for reports at `tlsrpt@example.test` (a local
//! mailbox of the sender, allowed by `outbound.tls_report_allow`). After one report period
//! each gets a gzip JSON report in `multipart/report`, read here by Python's email and gzip
//! modules.
//!
//! A domain that lists many addresses gets its report sent to two of them, only those in its
//! own domain or an allowed one; an HTTPS address with an encoded line break cannot forge a
//! log line. The domains of one organisational domain get 5 reports a day between them.

use std::net::SocketAddr;
use std::process::Command;

use mta_tests::fake_smtp::{FakeSmtp, Script};
use mta_tests::relay::{REMOTE_BOB, message, sender, start_sender, submit, try_remote_receiver};
use mta_tests::{TestDns, on_shared_port, run, secs, wait_for};

use crate::dkim::txt_record;

pub(crate) const READ: &str = r#"
import sys, email, gzip, json
from email import policy
out = []
for path in sys.argv[1:]:
    m = email.message_from_bytes(open(path, 'rb').read(), policy=policy.default)
    assert m['TLS-Report-Domain'], 'no TLS-Report-Domain header'
    for part in m.walk():
        if part.get_content_type() == 'application/tlsrpt+gzip':
            r = json.loads(gzip.decompress(part.get_payload(decode=True)))
            p = r['policies'][0]
            out.append({
                'domain': p['policy']['policy-domain'],
                'type': p['policy']['policy-type'],
                'ok': p['summary']['total-successful-session-count'],
                'fail': p['summary']['total-failure-session-count'],
                'results': sorted(f['result-type'] for f in p.get('failure-details', [])),
            })
print(json.dumps(sorted(out, key=lambda x: x['domain'])))
"#;

#[test]
fn reports_go_to_the_domains_that_ask() {
    let rua = "v=TLSRPTv1; rua=mailto:tlsrpt@example.test";
    let dns = TestDns::start(&[
        "--mx-host=remote.test,mx1.remote.test,10",
        "--host-record=mx1.remote.test,127.0.0.2",
        "--mx-host=plain.test,mx.plain.test,10",
        "--host-record=mx.plain.test,127.0.0.3",
        &txt_record("_smtp._tls.remote.test", rua),
        &txt_record("_smtp._tls.plain.test", rua),
    ]);
    let (port, (_rx, plain)) = on_shared_port("the receivers", |p| {
        let rx = try_remote_receiver("mx1.remote.test", "127.0.0.2", p)?;
        let plain = FakeSmtp::start(SocketAddr::from(([127, 0, 0, 3], p)), Script::default())?;
        Ok((rx, plain))
    });
    let tx = start_sender(sender(
        &dns,
        port,
        "tls_report_interval = \"2s\"\ntls_report_allow = [\"example.test\"]\n",
    ));
    tx.add_user("tlsrpt@example.test", "reports-password-1");
    submit(&tx, &[REMOTE_BOB], &message(REMOTE_BOB, "over tls"));
    submit(
        &tx,
        &["carol@plain.test"],
        &message("carol@plain.test", "in the clear"),
    );
    wait_for(secs(10), "the plaintext delivery", || {
        plain.transactions().len() == 1
    });
    let files = tx.wait_for_mail("tlsrpt@example.test", 2, 20);
    let mut cmd = Command::new("python3");
    cmd.args(["-c", READ]).args(&files);
    let out = run("read the reports", &mut cmd, b"", secs(30));
    out.assert_success("python3");
    let reports: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(
        reports,
        serde_json::json!([
            {"domain": "plain.test", "type": "no-policy-found", "ok": 0, "fail": 1,
             "results": ["starttls-not-supported"]},
            {"domain": "remote.test", "type": "no-policy-found", "ok": 1, "fail": 0, "results": []},
        ]),
        "{}",
        out.stdout
    );
    assert!(tx.log().contains("TLS report queued"), "{}", tx.log());
}

/// A dnsmasq option that publishes `text` as one TXT record at `name`, commas and all (as
/// character-strings of at most 255 octets, RFC 1035 §3.3.14).
pub(crate) fn txt_rr(name: &str, text: &str) -> String {
    let mut hex = String::new();
    for chunk in text.as_bytes().chunks(255) {
        hex.push_str(&format!("{:02x}", chunk.len()));
        for b in chunk {
            hex.push_str(&format!("{b:02x}"));
        }
    }
    format!("--dns-rr={name},16,{hex}")
}

#[test]
fn a_report_goes_to_two_addresses_of_the_domain_and_forges_no_log_line() {
    // remote.test lists 30 addresses: a stranger's, 28 of the sender's own domain (which
    // `tls_report_allow` lets in, as a report processor would be), and an HTTPS address
    // whose `=0D=0A` the record parser turns into a line break.
    let forged = "https://reports.remote.test/=0D=0AFORGED=20INFO=20mta_queue::scheduler:=20delivered=20rcpt=3Dceo@bank.example";
    let mut rua = vec!["mailto:ceo@bank.example".to_string()];
    rua.extend((0..28).map(|i| format!("mailto:r{i}@example.test")));
    rua.push(forged.to_string());
    let record = format!("v=TLSRPTv1; rua={}", rua.join(","));
    let dns = TestDns::start(&[
        "--mx-host=remote.test,mx1.remote.test,10",
        "--host-record=mx1.remote.test,127.0.0.2",
        &txt_rr("_smtp._tls.remote.test", &record),
    ]);
    let (port, _rx) = on_shared_port("the receiver", |p| {
        try_remote_receiver("mx1.remote.test", "127.0.0.2", p)
    });
    let tx = start_sender(sender(
        &dns,
        port,
        "tls_report_interval = \"2s\"\ntls_report_allow = [\"example.test\"]\n",
    ));
    for i in 0..28 {
        tx.add_user(&format!("r{i}@example.test"), "reports-password-1");
    }
    submit(&tx, &[REMOTE_BOB], &message(REMOTE_BOB, "counted"));
    tx.wait_for_mail("r0@example.test", 1, 20);
    tx.wait_for_mail("r1@example.test", 1, 20);
    tx.wait_for_empty_queue(secs(20));
    let others: usize = (2..28)
        .map(|i| tx.maildir_new(&format!("r{i}@example.test")).len())
        .sum();
    assert_eq!(others, 0, "only two addresses get the report");
    let log = tx.log();
    let queued: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("TLS report queued"))
        .collect();
    assert_eq!(queued.len(), 1, "{log}");
    assert!(!queued[0].contains("bank.example"), "{}", queued[0]);
    assert!(
        !log.lines().any(|l| l.starts_with("FORGED")),
        "a DNS record wrote a line of its own:\n{log}"
    );
    assert!(
        log.contains("TLS reports over HTTPS are not supported"),
        "{log}"
    );
}

#[test]
fn no_report_goes_to_an_address_literal() {
    let rua = "v=TLSRPTv1; rua=mailto:ops@[127.0.0.13]";
    let dns = TestDns::start(&[
        "--mx-host=remote.test,mx1.remote.test,10",
        "--host-record=mx1.remote.test,127.0.0.2",
        &txt_record("_smtp._tls.remote.test", rua),
    ]);
    let (port, (_rx, trap)) = on_shared_port("the receiver and the trap", |p| {
        let rx = try_remote_receiver("mx1.remote.test", "127.0.0.2", p)?;
        let trap = mta_tests::Trap::listen(SocketAddr::from(([127, 0, 0, 13], p)))?;
        Ok((rx, trap))
    });
    let tx = start_sender(sender(&dns, port, "tls_report_interval = \"2s\"\n"));
    submit(&tx, &[REMOTE_BOB], &message(REMOTE_BOB, "over tls"));
    tx.wait_logged(secs(30), "the report address skipped", || {
        tx.log()
            .contains("TLS report address is an address literal; skipped")
    });
    tx.wait_for_empty_queue(secs(30));
    assert_eq!(trap.connections(), 0, "{}", tx.log());
    assert!(!tx.log().contains("TLS report queued"), "{}", tx.log());
}

/// Domains of one organisational domain that each ask for a report.
const ORGANIZATION_DOMAINS: usize = 8;

#[test]
fn one_organisational_domain_gets_five_reports_a_day() {
    // d0.attacker.test … d7.attacker.test (one organisational domain, attacker.test) each
    // publish a report address; a message to each makes a report for each.
    let rua = "v=TLSRPTv1; rua=mailto:tlsrpt@example.test";
    let mut records = vec!["--host-record=mx.attacker.test,127.0.0.23".to_string()];
    for i in 0..ORGANIZATION_DOMAINS {
        records.push(format!("--mx-host=d{i}.attacker.test,mx.attacker.test,10"));
        records.push(txt_record(&format!("_smtp._tls.d{i}.attacker.test"), rua));
    }
    let records: Vec<&str> = records.iter().map(String::as_str).collect();
    let dns = TestDns::start(&records);
    let (port, fake) = on_shared_port("the receiver", |p| {
        FakeSmtp::start(SocketAddr::from(([127, 0, 0, 23], p)), Script::default())
    });
    let tx = start_sender(sender(
        &dns,
        port,
        "tls_report_interval = \"2s\"\ntls_report_allow = [\"example.test\"]\n",
    ));
    tx.add_user("tlsrpt@example.test", "reports-password-1");
    for i in 0..ORGANIZATION_DOMAINS {
        let to = format!("r@d{i}.attacker.test");
        submit(&tx, &[&to], &message(&to, "counted"));
    }
    wait_for(secs(60), "every message delivered", || {
        fake.transactions().len() == ORGANIZATION_DOMAINS
    });
    tx.wait_logged(secs(60), "the organisational domain's cap", || {
        tx.log()
            .contains("daily TLS report limit of an organisational domain reached")
    });
    tx.wait_for_empty_queue(secs(60));
    let reports = tx.maildir_new("tlsrpt@example.test").len();
    eprintln!("{ORGANIZATION_DOMAINS} domains of one organisational domain: {reports} reports");
    assert_eq!(reports, 5, "{}", tx.log());
}
