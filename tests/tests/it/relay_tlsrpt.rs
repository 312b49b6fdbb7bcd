//! TLS reports (RFC 8460): the sender delivers to remote.test over STARTTLS and to plain.test,
//! whose MX offers no STARTTLS; both domains ask for reports at `tlsrpt@example.test` (a local
//! mailbox of the sender). After one report period each gets a gzip JSON report in
//! `multipart/report`, read here by Python's email and gzip modules.

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
    let tx = start_sender(sender(&dns, port, "tls_report_interval = \"2s\"\n"));
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
