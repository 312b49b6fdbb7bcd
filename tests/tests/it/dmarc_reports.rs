//! DMARC aggregate reports sent to `[dmarc_reports] address` on port 25 by real clients
//! (Python's smtplib and swaks), as Google (gzip) and Microsoft (zip) send them and as an
//! attacker would (a zip bomb, a truncated gzip, junk XML, a million records): every message
//! is kept in the address's Maildir, each readable report is stored once, each unreadable
//! one gets one log line, nothing is sent back, and `mta report dmarc` sums them up.

use std::process::Command;

use mta_tests::{TestMta, run, secs, wait_for};

const REPORTS: &str = "dmarc-reports@example.test";

const GOOGLE_XML: &str = r#"<?xml version="1.0" encoding="UTF-8" ?>
<feedback>
  <report_metadata>
    <org_name>google.com</org_name>
    <email>noreply-dmarc-support@google.com</email>
    <extra_contact_info>https://support.google.com/a/answer/2466580</extra_contact_info>
    <report_id>5717107811868587391</report_id>
    <date_range><begin>1764979200</begin><end>1765065599</end></date_range>
  </report_metadata>
  <policy_published>
    <domain>example.test</domain><adkim>r</adkim><aspf>r</aspf><p>none</p><sp>none</sp>
    <pct>100</pct><np>none</np>
  </policy_published>
  <record>
    <row>
      <source_ip>192.0.2.25</source_ip><count>12</count>
      <policy_evaluated><disposition>none</disposition><dkim>pass</dkim><spf>pass</spf></policy_evaluated>
    </row>
    <identifiers><header_from>example.test</header_from></identifiers>
    <auth_results>
      <dkim><domain>example.test</domain><result>pass</result><selector>mta2026</selector></dkim>
      <spf><domain>example.test</domain><result>pass</result></spf>
    </auth_results>
  </record>
  <record>
    <row>
      <source_ip>203.0.113.66</source_ip><count>3</count>
      <policy_evaluated><disposition>none</disposition><dkim>fail</dkim><spf>fail</spf></policy_evaluated>
    </row>
    <identifiers><header_from>example.test</header_from></identifiers>
    <auth_results><spf><domain>spam.example</domain><result>softfail</result></spf></auth_results>
  </record>
</feedback>
"#;

const MICROSOFT_XML: &str = r#"<?xml version="1.0"?>
<feedback xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <version>1.0</version>
  <report_metadata>
    <org_name>Enterprise Outlook</org_name>
    <email>dmarcreport@microsoft.com</email>
    <report_id>8a4b7c2e91d64f0b8f5e3c1d2a6b9e70</report_id>
    <date_range><begin>1764979200</begin><end>1765065600</end></date_range>
  </report_metadata>
  <policy_published>
    <domain>example.test</domain><adkim>r</adkim><aspf>r</aspf><p>quarantine</p>
    <sp>quarantine</sp><pct>100</pct><fo>0</fo>
  </policy_published>
  <record>
    <row>
      <source_ip>192.0.2.25</source_ip><count>5</count>
      <policy_evaluated><disposition>none</disposition><dkim>pass</dkim><spf>pass</spf></policy_evaluated>
    </row>
    <identifiers>
      <envelope_to>contoso.com</envelope_to><envelope_from>example.test</envelope_from>
      <header_from>example.test</header_from>
    </identifiers>
    <auth_results>
      <dkim><domain>example.test</domain><selector>mta2026</selector><result>pass</result></dkim>
      <spf><domain>example.test</domain><scope>mfrom</scope><result>pass</result></spf>
    </auth_results>
  </record>
</feedback>
"#;

/// Builds each message with Python's own gzip, zipfile and email modules and sends it with
/// smtplib to port 25, printing "sent NAME" for each.
const SEND: &str = r#"
import email.policy, gzip, io, smtplib, sys, zipfile
from email.message import EmailMessage
port, google, microsoft = int(sys.argv[1]), open(sys.argv[2], "rb").read(), open(sys.argv[3], "rb").read()
def zipped(files):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files:
            z.writestr(name, data)
    return buf.getvalue()
many = google.split(b"<record>")[0] + b"<record><row><source_ip>192.0.2.9</source_ip><count>1</count></row><identifiers><header_from>example.test</header_from></identifiers></record>\n" * 1000000 + b"</feedback>\n"
some = google.split(b"<record>")[0] + b"<record><row><source_ip>192.0.2.7</source_ip><count>2</count></row><identifiers><header_from>example.test</header_from></identifiers></record>\n" * 300 + b"</feedback>\n"
some = some.replace(b"5717107811868587391", b"many-records")
foreign = google.replace(b"<domain>example.test</domain><adkim>", b"<domain>other.example</domain><adkim>").replace(b"5717107811868587391", b"foreign-1").replace(b"<header_from>example.test", b"<header_from>other.example")
gz = gzip.compress(google)
cases = [
    ("google", "application", "gzip", "google.com!example.test!1764979200!1765065599.xml.gz", gz),
    ("google-again", "application", "gzip", "google.com!example.test!1764979200!1765065599.xml.gz", gz),
    ("microsoft", "application", "zip", "enterprise.protection.outlook.com!example.test!1764979200!1765065600.zip", zipped([("report.xml", microsoft)])),
    ("two-files", "application", "zip", "two.zip", zipped([("notes.txt", b"hello"), ("foreign.xml", foreign)])),
    ("some-records", "application", "gzip", "some.xml.gz", gzip.compress(some)),
    ("malformed", "text", "xml", "bad.xml", b"<feedback><report_metadata><org_name>bad\x1b[31m"),
    ("truncated", "application", "gzip", "cut.xml.gz", gz[: len(gz) // 2]),
    ("zip-bomb", "application", "zip", "bomb.zip", zipped([("bomb.xml", b"\0" * (8 << 20))])),
    ("million-records", "application", "gzip", "million.xml.gz", gzip.compress(many)),
]
with smtplib.SMTP("127.0.0.1", port, local_hostname="mail-reports.example", timeout=30) as s:
    for name, main, sub, filename, data in cases:
        m = EmailMessage()
        m["From"] = "noreply-dmarc-support@google.com"
        m["To"] = sys.argv[4]
        m["Subject"] = "Report domain: example.test Submitter: " + name
        m.set_content("DMARC aggregate report")
        m.add_attachment(data, maintype=main, subtype=sub, filename=filename)
        if name == "zip-bomb":
            print("bomb", len(data), file=sys.stderr)
        s.sendmail("noreply-dmarc-support@google.com", [sys.argv[4]], m.as_bytes(policy=email.policy.SMTP))
        print("sent", name)
"#;

fn server() -> TestMta {
    TestMta::start(&format!(
        "[dmarc_reports]\naddress = \"{REPORTS}\"\nmax_size = \"1MiB\"\nmax_records = 100\n"
    ))
}

fn stored(mta: &TestMta) -> Vec<serde_json::Value> {
    let dir = mta.data_dir().join("dmarc");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).into_iter().flatten() {
        let bytes = std::fs::read(e.unwrap().path()).unwrap();
        out.push(serde_json::from_slice(&bytes).unwrap());
    }
    out
}

#[test]
fn reports_in_on_port_25_are_kept_stored_and_summed_up() {
    let mta = server();
    let dir = mta.dir().to_path_buf();
    std::fs::write(dir.join("google.xml"), GOOGLE_XML).unwrap();
    std::fs::write(dir.join("microsoft.xml"), MICROSOFT_XML).unwrap();
    let out = run(
        "python3 smtplib",
        Command::new("python3")
            .args(["-c", SEND])
            .arg(mta.smtp_addr().port().to_string())
            .arg(dir.join("google.xml"))
            .arg(dir.join("microsoft.xml"))
            .arg(REPORTS),
        b"",
        secs(120),
    );
    out.assert_success("python3 smtplib");
    assert_eq!(out.stdout.matches("sent ").count(), 9, "{out}");
    // The bomb is a few KB of zip expanding to 8 MiB, past the 1 MiB budget.
    let bomb: usize = out
        .stderr
        .split("bomb ")
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(bomb < 16 * 1024, "{bomb}");
    // Every message is kept: nothing lost, whatever its report held.
    mta.wait_for_mail(REPORTS, 9, 60);
    mta.wait_for_empty_queue(secs(30));
    wait_for(secs(30), "four log lines of unread reports", || {
        mta.log().matches("DMARC report not read").count() == 4
    });
    let log = mta.log();
    assert!(
        log.contains("more than 1048576 bytes of report XML"),
        "{log}"
    );
    assert!(log.contains("cannot decompress"), "{log}");
    assert!(!log.contains('\x1b'), "escape bytes reached the log");
    assert!(log.contains("DMARC report already stored"), "{log}");
    // Google, Microsoft, the zip's second file (a domain not ours: stored, it is what the
    // reporter says), and the one cut to 100 records.
    let reports = stored(&mta);
    let mut ids: Vec<&str> = reports
        .iter()
        .map(|r| r["report_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        [
            "5717107811868587391",
            "8a4b7c2e91d64f0b8f5e3c1d2a6b9e70",
            "foreign-1",
            "many-records"
        ]
    );
    let many = reports
        .iter()
        .find(|r| r["report_id"] == "many-records")
        .unwrap();
    assert_eq!(many["records"].as_array().unwrap().len(), 100);
    assert_eq!(many["records_dropped"], 200);
    assert!(reports.iter().all(|r| r["source"] == "unverified"));
    for e in std::fs::read_dir(mta.data_dir().join("dmarc")).unwrap() {
        use std::os::unix::fs::PermissionsExt;
        let meta = e.unwrap().metadata().unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }

    let text = mta.mta(&["report", "dmarc"], b"");
    text.assert_success("mta report dmarc");
    let lines: Vec<&str> = text.stdout.lines().collect();
    assert!(
        lines[0].starts_with("4 reports from 2 organisations in the last 7 days"),
        "{text}"
    );
    assert!(lines[0].contains("source: unverified"), "{text}");
    // By volume: 192.0.2.7 (200 kept of 600), then 192.0.2.25 (12 + 5 from two orgs).
    assert!(lines[2].contains("192.0.2.7"), "{text}");
    assert!(
        lines[3].contains("192.0.2.25") && lines[3].contains("example.test"),
        "{text}"
    );
    assert!(lines[3].trim_start().starts_with("17 "), "{text}");
    assert!(
        lines[3].contains("Enterprise Outlook, google.com"),
        "{text}"
    );
    let json = mta.mta(&["report", "dmarc", "--json", "--days", "2"], b"");
    json.assert_success("mta report dmarc --json");
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["reports"], 4);
    let spam = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["source_ip"] == "203.0.113.66" && r["header_from"] == "example.test")
        .unwrap();
    assert_eq!(spam["messages"], 3);
    assert_eq!(spam["spf"]["fail"], 3);
    assert_eq!(spam["dmarc"]["fail"], 3);
}

#[test]
fn swaks_attachment_is_read_too() {
    let mta = server();
    let file = mta
        .dir()
        .join("google.com!example.test!1764979200!1765065599.xml");
    std::fs::write(&file, GOOGLE_XML).unwrap();
    let attach = format!("@{}", file.display());
    let out = run(
        "swaks",
        Command::new("swaks")
            .args(["--server", &mta.smtp_addr().to_string(), "--timeout", "10"])
            .args([
                "--helo",
                "mail-reports.example",
                "--from",
                "noreply-dmarc-support@google.com",
            ])
            .args([
                "--to",
                REPORTS,
                "--attach-type",
                "text/xml",
                "--attach",
                &attach,
            ]),
        b"",
        secs(30),
    );
    out.assert_success("swaks");
    mta.wait_for_mail(REPORTS, 1, 10);
    wait_for(secs(10), "one stored report", || stored(&mta).len() == 1);
    assert_eq!(stored(&mta)[0]["org"], "google.com");
}

#[test]
fn an_empty_store_says_so_and_a_missing_or_broken_one_is_an_error() {
    let mta = server();
    let missing = mta.mta(&["report", "dmarc"], b"");
    assert_eq!(missing.code(), 1, "{missing}");
    assert!(
        missing
            .stderr
            .contains("cannot read the DMARC report store"),
        "{missing}"
    );
    assert!(
        missing
            .stderr
            .contains("no report to dmarc-reports@example.test was stored yet"),
        "{missing}"
    );
    let dir = mta.data_dir().join("dmarc");
    std::fs::create_dir(&dir).unwrap();
    let empty = mta.mta(&["report", "dmarc", "--days", "3"], b"");
    empty.assert_success("mta report dmarc on an empty store");
    assert_eq!(empty.stdout, "no reports in the last 3 days\n");
    std::fs::write(dir.join("20251207-00.json"), b"{ torn").unwrap();
    let broken = mta.mta(&["report", "dmarc", "--json"], b"");
    assert_eq!(broken.code(), 1, "{broken}");
    assert!(
        broken.stdout.contains("is not a stored DMARC report")
            || broken.stderr.contains("is not a stored DMARC report"),
        "{broken}"
    );
}
