//! Our own DMARC aggregate reports (`[dmarc_reports.send]`): mx.example.test receives mail on
//! its smtp listener from pass.test (DMARC pass), quarantine.test (fails, p=quarantine:
//! delivered and marked), reject.test (fails, p=reject: refused), noverify.test (its `rua=`
//! is in rep.test, which publishes no `_report._dmarc` record for it) and elsewhere.test
//! (its `rua=` domain is not in `allow`). After a 2 s interval the reports reach
//! dmarc@rep.test at mx.rep.test, another mta, and are read back by Python's gzip and XML
//! modules: one report per domain that may have one, with the right counts and
//! dispositions; nothing for the others; with sending off (the default), nothing at all.

use std::net::SocketAddr;
use std::process::Command;

use mta_tests::relay::{receiver, sender};
use mta_tests::{SmtpClient, TestDns, TestMta, on_shared_port, run, secs};

use crate::dkim::txt_record;

const BOB: &str = "bob@example.test";
const RUA: &str = "dmarc@rep.test";

const READ: &str = r#"
import sys, email, gzip, json
import xml.etree.ElementTree as ET
from email import policy
counts = {}
for path in sys.argv[1:]:
    m = email.message_from_bytes(open(path, 'rb').read(), policy=policy.default)
    assert str(m['Subject']).startswith('Report Domain: '), m['Subject']
    for part in m.walk():
        if part.get_content_type() == 'application/gzip':
            name = part.get_filename()
            assert name.startswith('mx.example.test!') and name.endswith('.xml.gz'), name
            root = ET.fromstring(gzip.decompress(part.get_payload(decode=True)))
            domain = root.find('{*}policy_published/{*}domain').text
            for rec in root.findall('{*}record'):
                row = rec.find('{*}row')
                key = '%s %s %s' % (domain, row.find('{*}source_ip').text,
                                    row.find('{*}policy_evaluated/{*}disposition').text)
                counts[key] = counts.get(key, 0) + int(row.find('{*}count').text)
print(json.dumps(counts, sort_keys=True))
"#;

fn zone(extra: &[&str]) -> TestDns {
    let spf_pass = "v=spf1 ip4:127.0.0.0/8 -all";
    let spf_fail = "v=spf1 ip4:192.0.2.1 -all";
    let mut records = vec![
        "--mx-host=rep.test,mx.rep.test,10".to_string(),
        "--host-record=mx.rep.test,127.0.0.2".to_string(),
        "--mx-host=elsewhere.example,mx.elsewhere.example,10".to_string(),
        "--host-record=mx.elsewhere.example,127.0.0.3".to_string(),
        txt_record("pass.test", spf_pass),
        txt_record(
            "_dmarc.pass.test",
            &format!("v=DMARC1; p=none; rua=mailto:{RUA}"),
        ),
        txt_record("pass.test._report._dmarc.rep.test", "v=DMARC1"),
        txt_record("quarantine.test", spf_fail),
        txt_record(
            "_dmarc.quarantine.test",
            &format!("v=DMARC1; p=quarantine; rua=mailto:{RUA}"),
        ),
        txt_record("quarantine.test._report._dmarc.rep.test", "v=DMARC1"),
        txt_record("reject.test", spf_fail),
        txt_record(
            "_dmarc.reject.test",
            &format!("v=DMARC1; p=reject; rua=mailto:{RUA}"),
        ),
        txt_record("reject.test._report._dmarc.rep.test", "v=DMARC1"),
        txt_record("noverify.test", spf_pass),
        txt_record(
            "_dmarc.noverify.test",
            &format!("v=DMARC1; p=none; rua=mailto:{RUA}"),
        ),
        txt_record("elsewhere.test", spf_pass),
        txt_record(
            "_dmarc.elsewhere.test",
            "v=DMARC1; p=none; rua=mailto:dmarc@elsewhere.example",
        ),
        txt_record(
            "elsewhere.test._report._dmarc.elsewhere.example",
            "v=DMARC1",
        ),
    ];
    records.extend(extra.iter().map(|s| s.to_string()));
    let records: Vec<&str> = records.iter().map(String::as_str).collect();
    TestDns::start(&records)
}

/// Sends a message from `someone@domain` to bob on `rx`'s smtp listener; the reply code.
fn send(rx: &TestMta, domain: &str) -> u16 {
    let from = format!("someone@{domain}");
    let message = format!("From: <{from}>\r\nTo: <{BOB}>\r\nSubject: {domain}\r\n\r\nHello.\r\n");
    let mut c = SmtpClient::connect(rx.smtp_addr());
    c.reply("the greeting");
    c.expect("EHLO client.pass.test", 250);
    let reply = c.send_message(&from, &[BOB], message.as_bytes());
    let _ = c.send_line("QUIT");
    reply.code
}

fn start(dns: &TestDns, port: u16, send_table: &str) -> TestMta {
    let rx = sender(dns, port, "")
        .toml(&format!(
            "[inbound]\nchecks = true\n[dmarc_reports.send]\n{send_table}"
        ))
        .start();
    rx.add_user(BOB, "bob-password-1");
    rx
}

#[test]
fn reports_reach_allowed_verified_addresses_with_the_counts() {
    let dns = zone(&[]);
    let (port, (rep, trap)) = on_shared_port("the report receivers", |p| {
        // mx.rep.test reads the reports it gets, as `[dmarc_reports] address`.
        let rep: TestMta = receiver("mx.rep.test", &["rep.test"], "127.0.0.2", p)
            .user(RUA, "dmarc-password-1")
            .toml(&format!("[dmarc_reports]\naddress = \"{RUA}\"\n"))
            .try_start()?;
        let trap = mta_tests::Trap::listen(SocketAddr::from(([127, 0, 0, 3], p)))?;
        Ok((rep, trap))
    });
    let rx = start(
        &dns,
        port,
        "enabled = true\nallow = [\"rep.test\", \"elsewhere.test\"]\ninterval = \"2s\"\n",
    );
    for (domain, code) in [
        ("pass.test", 250),
        ("pass.test", 250),
        ("quarantine.test", 250),
        ("reject.test", 550),
        ("noverify.test", 250),
        ("elsewhere.test", 250),
    ] {
        assert_eq!(send(&rx, domain), code, "{domain}\n{}", rx.log());
    }
    // Three domains may have reports; a round may split one domain's counts in two.
    let logged = |rx: &TestMta| rx.log().matches("DMARC report queued").count();
    rx.wait_logged(secs(30), "three reports queued", || logged(&rx) >= 3);
    rx.wait_logged(secs(30), "the unverified address skipped", || {
        rx.log()
            .contains("without a _report._dmarc record; skipped")
    });
    rx.wait_for_empty_queue(secs(30));
    let files = rep.wait_for_mail(RUA, logged(&rx), 30);
    let mut cmd = Command::new("python3");
    cmd.args(["-c", READ]).args(&files);
    let out = run("read the reports", &mut cmd, b"", secs(30));
    out.assert_success("python3");
    let counts: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(
        counts,
        serde_json::json!({
            "pass.test 127.0.0.1 none": 2,
            "quarantine.test 127.0.0.1 quarantine": 1,
            "reject.test 127.0.0.1 reject": 1,
        }),
        "{}",
        out.stdout
    );
    assert!(
        rx.log()
            .contains("not in dmarc_reports.send.allow; skipped"),
        "{}",
        rx.log()
    );
    assert_eq!(trap.connections(), 0, "elsewhere.example got a report");
    assert!(rx.data_dir().join("dmarc-send.json").exists());
    // The round trip: our own ingest on the receiving side sums the same counts.
    let json = rep.mta(&["report", "dmarc", "--json"], b"");
    json.assert_success("mta report dmarc --json");
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let mut rows: Vec<(String, u64, u64)> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["source_ip"], "127.0.0.1", "{r}");
            let from = r["header_from"].as_str().unwrap().to_string();
            (
                from,
                r["messages"].as_u64().unwrap(),
                r["dmarc"]["fail"].as_u64().unwrap(),
            )
        })
        .collect();
    rows.sort();
    assert_eq!(
        rows,
        [
            ("pass.test".to_string(), 2, 0),
            ("quarantine.test".to_string(), 1, 1),
            ("reject.test".to_string(), 1, 1),
        ],
        "{}",
        json.stdout
    );
}

#[test]
fn off_by_default_nothing_is_recorded_or_sent() {
    let dns = zone(&[]);
    let (port, rep) = on_shared_port("the report receiver", |p| {
        receiver("mx.rep.test", &["rep.test"], "127.0.0.2", p)
            .user(RUA, "dmarc-password-1")
            .try_start()
    });
    // The interval is short, but sending is off.
    let rx = start(&dns, port, "interval = \"1s\"\n");
    assert_eq!(send(&rx, "pass.test"), 250);
    assert_eq!(send(&rx, "quarantine.test"), 250);
    // A message to bob after the checks of both: they are done.
    mta_tests::wait_for(secs(10), "both delivered", || {
        rx.maildir_new(BOB).len() == 2
    });
    // On, the counts would be written when the server stops; off, nothing was kept.
    let mut rx = rx;
    rx.stop();
    assert!(!rx.data_dir().join("dmarc-send.json").exists());
    assert!(!rx.log().contains("DMARC report"), "{}", rx.log());
    assert!(rep.maildir_new(RUA).is_empty());
}

#[test]
fn counts_are_written_when_the_server_stops() {
    let dns = zone(&[]);
    let mut rx = start(
        &dns,
        9,
        "enabled = true\nallow = [\"rep.test\"]\ninterval = \"1h\"\n",
    );
    assert_eq!(send(&rx, "pass.test"), 250);
    assert_eq!(send(&rx, "quarantine.test"), 250);
    rx.stop();
    let saved = std::fs::read_to_string(rx.data_dir().join("dmarc-send.json")).unwrap();
    assert!(saved.contains("\"pass.test\""), "{saved}");
    assert!(saved.contains("\"quarantine.test\""), "{saved}");
}
