//! Reports as real receivers send them (mail-auth's builder, a Google-style gzip and a
//! Microsoft-style zip written by hand), and as an attacker would: bombs, lies, truncation,
//! junk. Each bound is checked by what was read, not by how long it took.

use std::io::{Cursor, Read, Write};

use base64::Engine;
use flate2::Compression;
use flate2::write::GzEncoder;
use mail_auth::report::{
    ActionDisposition, DKIMAuthResult, DkimResult, DmarcResult, Record, Report, SPFAuthResult,
    SpfResult,
};
use proptest::prelude::*;

use super::extract::{self, Budget, ExtractError};
use super::store::{self, Saved, StoredReport};

const MIB: u64 = 1024 * 1024;

/// A Google-style report, as Google writes them (one record per source IP).
pub const GOOGLE_XML: &str = r#"<?xml version="1.0" encoding="UTF-8" ?>
<feedback>
  <report_metadata>
    <org_name>google.com</org_name>
    <email>noreply-dmarc-support@google.com</email>
    <extra_contact_info>https://support.google.com/a/answer/2466580</extra_contact_info>
    <report_id>5717107811868587391</report_id>
    <date_range>
      <begin>1764979200</begin>
      <end>1765065599</end>
    </date_range>
  </report_metadata>
  <policy_published>
    <domain>example.org</domain>
    <adkim>r</adkim>
    <aspf>r</aspf>
    <p>none</p>
    <sp>none</sp>
    <pct>100</pct>
    <np>none</np>
  </policy_published>
  <record>
    <row>
      <source_ip>192.0.2.25</source_ip>
      <count>12</count>
      <policy_evaluated>
        <disposition>none</disposition>
        <dkim>pass</dkim>
        <spf>pass</spf>
      </policy_evaluated>
    </row>
    <identifiers>
      <header_from>example.org</header_from>
    </identifiers>
    <auth_results>
      <dkim>
        <domain>example.org</domain>
        <result>pass</result>
        <selector>mta2026</selector>
      </dkim>
      <spf>
        <domain>example.org</domain>
        <result>pass</result>
      </spf>
    </auth_results>
  </record>
  <record>
    <row>
      <source_ip>203.0.113.66</source_ip>
      <count>3</count>
      <policy_evaluated>
        <disposition>none</disposition>
        <dkim>fail</dkim>
        <spf>fail</spf>
      </policy_evaluated>
    </row>
    <identifiers>
      <header_from>example.org</header_from>
    </identifiers>
    <auth_results>
      <spf>
        <domain>spammer.example</domain>
        <result>softfail</result>
      </spf>
    </auth_results>
  </record>
</feedback>
"#;

/// A Microsoft-style report (namespace, `envelope_to`, `envelope_from`, `scope`).
pub const MICROSOFT_XML: &str = r#"<?xml version="1.0"?>
<feedback xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <version>1.0</version>
  <report_metadata>
    <org_name>Enterprise Outlook</org_name>
    <email>dmarcreport@microsoft.com</email>
    <report_id>8a4b7c2e91d64f0b8f5e3c1d2a6b9e70</report_id>
    <date_range>
      <begin>1764979200</begin>
      <end>1765065600</end>
    </date_range>
  </report_metadata>
  <policy_published>
    <domain>example.org</domain>
    <adkim>r</adkim>
    <aspf>r</aspf>
    <p>quarantine</p>
    <sp>quarantine</sp>
    <pct>100</pct>
    <fo>0</fo>
  </policy_published>
  <record>
    <row>
      <source_ip>192.0.2.25</source_ip>
      <count>5</count>
      <policy_evaluated>
        <disposition>none</disposition>
        <dkim>pass</dkim>
        <spf>pass</spf>
      </policy_evaluated>
    </row>
    <identifiers>
      <envelope_to>contoso.com</envelope_to>
      <envelope_from>example.org</envelope_from>
      <header_from>example.org</header_from>
    </identifiers>
    <auth_results>
      <dkim>
        <domain>example.org</domain>
        <selector>mta2026</selector>
        <result>pass</result>
      </dkim>
      <spf>
        <domain>example.org</domain>
        <scope>mfrom</scope>
        <result>pass</result>
      </spf>
    </auth_results>
  </record>
</feedback>
"#;

/// A MIME message with a text part and these attachments (type, file name, bytes).
pub fn mime(parts: &[(&str, &str, &[u8])]) -> Vec<u8> {
    let mut m = String::from(
        "From: noreply-dmarc-support@google.com\r\nTo: dmarc-reports@example.org\r\n\
         Subject: Report domain: example.org\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n\
         Content-Type: text/plain\r\n\r\nThis is an aggregate report.\r\n",
    );
    for (ctype, name, bytes) in parts {
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        m += &format!(
            "--b1\r\nContent-Type: {ctype}; name=\"{name}\"\r\n\
             Content-Disposition: attachment; filename=\"{name}\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n"
        );
        for line in b64.as_bytes().chunks(76) {
            m += std::str::from_utf8(line).unwrap();
            m += "\r\n";
        }
    }
    m += "--b1--\r\n";
    m.into_bytes()
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::best());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

pub fn zip(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(9));
    for (name, bytes) in files {
        w.start_file(*name, opts).unwrap();
        w.write_all(bytes).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn parse(message: &[u8]) -> Result<(Report, usize), ExtractError> {
    extract::report(message, 4 * MIB, 10_000)
}

#[test]
fn google_gzip_and_microsoft_zip_are_read() {
    let g = mime(&[(
        "application/gzip",
        "google.com!example.org!1764979200!1765065599.xml.gz",
        &gzip(GOOGLE_XML.as_bytes()),
    )]);
    let (r, dropped) = parse(&g).unwrap();
    assert_eq!(
        (r.org_name(), r.report_id(), dropped),
        ("google.com", "5717107811868587391", 0)
    );
    let s = StoredReport::new(&r, 1_765_100_000, 0, 10_000);
    assert_eq!(s.records.len(), 2);
    assert_eq!(s.records[1].spf[0].result, "softfail");
    assert_eq!(s.records[0].dkim[0].selector, "mta2026");
    assert_eq!(s.policy.p, "none");
    let m = mime(&[(
        "application/zip",
        "enterprise.protection.outlook.com!example.org!1764979200!1765065600.zip",
        &zip(&[("report.xml", MICROSOFT_XML.as_bytes())]),
    )]);
    let (r, _) = parse(&m).unwrap();
    let s = StoredReport::new(&r, 1_765_100_000, 0, 10_000);
    assert_eq!(s.org, "Enterprise Outlook");
    assert_eq!(s.records[0].envelope_from, "example.org");
    assert_eq!(s.records[0].spf[0].scope, "mfrom");
    assert_eq!(s.policy.p, "quarantine");
}

/// A report as mail-auth's builder writes it, the way another mta would send it.
pub fn built_report(id: &str, records: usize) -> Report {
    let mut r = Report::new()
        .with_org_name("receiver.example")
        .with_email("dmarc@receiver.example")
        .with_report_id(id)
        .with_date_range_begin(1_764_979_200)
        .with_date_range_end(1_765_065_599)
        .with_domain("example.org")
        .with_p(mail_auth::report::Disposition::None);
    for i in 0..records {
        r.add_record(
            Record::new()
                .with_source_ip(std::net::IpAddr::from([198, 51, 100, (i % 250) as u8]))
                .with_count(1)
                .with_header_from("example.org")
                .with_envelope_from("example.org")
                .with_action_disposition(ActionDisposition::None)
                .with_dmarc_dkim_result(DmarcResult::Pass)
                .with_dmarc_spf_result(DmarcResult::Fail)
                .with_dkim_auth_result(
                    DKIMAuthResult::new()
                        .with_domain("example.org")
                        .with_selector("s1")
                        .with_result(DkimResult::Pass),
                )
                .with_spf_auth_result(
                    SPFAuthResult::new()
                        .with_domain("example.org")
                        .with_result(SpfResult::Fail),
                ),
        );
    }
    r
}

#[test]
fn a_report_from_mail_auth_builder_is_read() {
    let report = built_report("r-1", 3);
    let msg = report
        .to_rfc5322(
            "receiver.example",
            ("", "dmarc@receiver.example"),
            ["dmarc-reports@example.org"].into_iter(),
        )
        .unwrap();
    let (r, _) = parse(msg.as_bytes()).unwrap();
    assert_eq!(r, report);
}

#[test]
fn junk_truncation_and_reports_without_attachments_are_errors_not_panics() {
    let bad_xml = mime(&[(
        "text/xml",
        "r.xml",
        b"<feedback><report_metadata><org_name>x",
    )]);
    assert!(
        matches!(parse(&bad_xml), Err(ExtractError::Xml(_))),
        "{:?}",
        parse(&bad_xml)
    );
    let gz = gzip(GOOGLE_XML.as_bytes());
    let truncated = mime(&[("application/gzip", "r.xml.gz", &gz[..gz.len() / 2])]);
    assert!(
        matches!(parse(&truncated), Err(ExtractError::Decompress(_))),
        "{:?}",
        parse(&truncated)
    );
    let no_report = mime(&[("image/png", "logo.png", b"\x89PNG")]);
    assert_eq!(parse(&no_report).unwrap_err(), ExtractError::NoReport);
    let not_zip = mime(&[("application/zip", "r.zip", b"PK\x03\x04 not really")]);
    assert!(matches!(parse(&not_zip), Err(ExtractError::Decompress(_))));
    let other = mime(&[("application/gzip", "r.xml.gz", &gzip(b"<html>no</html>"))]);
    assert!(matches!(parse(&other), Err(ExtractError::Xml(_))));
}

#[test]
fn a_zip_with_two_files_gives_the_first_report() {
    let z = zip(&[
        ("readme.txt", b"not xml"),
        ("report.xml", MICROSOFT_XML.as_bytes()),
        ("second.xml", GOOGLE_XML.as_bytes()),
    ]);
    let (r, _) = parse(&mime(&[("application/zip", "r.zip", &z)])).unwrap();
    assert_eq!(r.org_name(), "Enterprise Outlook");
}

/// Counts the bytes a reader gives, to prove what the budget let through.
struct Counting<R>(R, std::rc::Rc<std::cell::Cell<u64>>);
impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.read(buf)?;
        self.1.set(self.1.get() + n as u64);
        Ok(n)
    }
}

#[test]
fn a_gzip_bomb_is_read_no_further_than_the_budget() {
    // 64 MiB of zeros in about 64 KiB; the budget stops the decoder at 4 MiB and one byte.
    let mut e = GzEncoder::new(Vec::new(), Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        e.write_all(&zeros).unwrap();
    }
    let bomb = e.finish().unwrap();
    assert!(bomb.len() < 128 * 1024, "{}", bomb.len());
    let count = std::rc::Rc::new(std::cell::Cell::new(0));
    let mut budget = Budget::new(4 * MIB);
    let got = budget.read(Counting(
        flate2::read::GzDecoder::new(&bomb[..]),
        count.clone(),
    ));
    assert_eq!(got, Err(ExtractError::TooLarge { max: 4 * MIB }));
    assert!(count.get() <= 4 * MIB + 1, "read {}", count.get());
    let msg = mime(&[("application/gzip", "bomb.xml.gz", &bomb)]);
    assert_eq!(
        parse(&msg).unwrap_err(),
        ExtractError::TooLarge { max: 4 * MIB }
    );
}

/// mail-auth's own parser caps each part at `max_size` but reads every part: this message
/// makes it decompress 16 MiB under a 1 MiB cap. Ours counts all parts against one budget.
#[test]
fn many_small_bombs_share_one_budget() {
    let junk = gzip(&vec![b' '; (MIB - 1024) as usize]);
    let parts: Vec<(&str, &str, &[u8])> = (0..16)
        .map(|_| ("application/gzip", "r.xml.gz", junk.as_slice()))
        .collect();
    let msg = mime(&parts);
    assert!(msg.len() < 64 * 1024, "{}", msg.len());
    let theirs = Report::parse_rfc5322(&msg, MIB as usize);
    assert!(
        !matches!(theirs, Err(mail_auth::report::Error::ReportTooLarge)),
        "mail-auth read every part within its per-part cap: {theirs:?}"
    );
    assert_eq!(
        extract::report(&msg, MIB, 10).unwrap_err(),
        ExtractError::TooLarge { max: MIB }
    );
}

/// A zip entry whose headers say 100 bytes while it expands to 64 MiB.
#[test]
fn a_zip_entry_that_lies_about_its_size_is_still_bounded() {
    let mut z = zip(&[("report.xml", &vec![b'<'; 64 << 20])]);
    assert!(z.len() < 256 * 1024, "{}", z.len());
    // Local header: uncompressed size at offset 22; central directory entry: at 24.
    let patch = |z: &mut Vec<u8>, sig: &[u8; 4], off: usize| {
        let at = z.windows(4).position(|w| w == sig).unwrap();
        z[at + off..at + off + 4].copy_from_slice(&100u32.to_le_bytes());
    };
    patch(&mut z, b"PK\x03\x04", 22);
    patch(&mut z, b"PK\x01\x02", 24);
    let msg = mime(&[("application/zip", "r.zip", &z)]);
    match extract::report(&msg, MIB, 10) {
        Err(ExtractError::TooLarge { .. } | ExtractError::Decompress(_)) => {}
        other => panic!("{other:?}"),
    }
    // And whatever the zip crate makes of the lie, our reader never takes more than the cap.
    let mut archive = zip::ZipArchive::new(Cursor::new(&z[..])).unwrap();
    let count = std::rc::Rc::new(std::cell::Cell::new(0));
    let mut budget = Budget::new(MIB);
    let _ = budget.read(Counting(archive.by_index(0).unwrap(), count.clone()));
    assert!(count.get() <= MIB + 1, "read {}", count.get());
}

/// A zip bomb of many entries over the same compressed bytes is cut off at the budget and
/// at [`extract::MAX_ZIP_ENTRIES`].
#[test]
fn a_zip_of_many_bombs_is_bounded() {
    let bomb = vec![b' '; (MIB / 2) as usize];
    let files: Vec<(String, &[u8])> = (0..50)
        .map(|i| (format!("{i}.xml"), bomb.as_slice()))
        .collect();
    let files: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (n.as_str(), *b)).collect();
    let z = zip(&files);
    let msg = mime(&[("application/zip", "r.zip", &z)]);
    // Four entries of junk XML under a 4 MiB budget: read (2 MiB), none parses.
    assert!(
        matches!(parse(&msg), Err(ExtractError::Xml(_))),
        "{:?}",
        parse(&msg)
    );
    // Under 1 MiB: the third entry goes past it.
    assert_eq!(
        extract::report(&msg, MIB, 10).unwrap_err(),
        ExtractError::TooLarge { max: MIB }
    );
}

#[test]
fn a_million_records_are_cut_before_parsing() {
    let one = "<record><row><source_ip>192.0.2.1</source_ip><count>1</count></row>\
               <identifiers><header_from>example.org</header_from></identifiers></record>\n";
    let head = GOOGLE_XML.split("<record>").next().unwrap();
    let mut xml = String::from(head);
    for _ in 0..1_000_000 {
        xml += one;
    }
    xml += "</feedback>\n";
    let msg = mime(&[("application/gzip", "big.xml.gz", &gzip(xml.as_bytes()))]);
    let (r, dropped) = extract::report(&msg, 256 * MIB, 1000).unwrap();
    assert_eq!((r.records().len(), dropped), (1000, 999_000));
    // Under the default 4 MiB budget the same report is refused whole.
    assert_eq!(
        parse(&msg).unwrap_err(),
        ExtractError::TooLarge { max: 4 * MIB }
    );
}

#[test]
fn the_store_keeps_a_report_once_and_a_day_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let now = 1_765_100_000;
    let report = |id: &str| StoredReport::new(&built_report(id, 2), now, 0, 10);
    let first = store::save(dir.path(), &report("a"), 2).unwrap();
    let Saved::Stored(path) = first else {
        panic!("{first:?}")
    };
    let name = path.file_name().unwrap().to_str().unwrap().to_string();
    assert!(
        name.starts_with("20251207-") && name.len() == "20251207-".len() + 32 + 5,
        "{name}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        store::save(dir.path(), &report("a"), 2).unwrap(),
        Saved::Duplicate
    );
    assert!(matches!(
        store::save(dir.path(), &report("b"), 2).unwrap(),
        Saved::Stored(_)
    ));
    assert_eq!(
        store::save(dir.path(), &report("c"), 2).unwrap(),
        Saved::DayFull
    );
    let loaded = store::load(dir.path(), 0).unwrap();
    assert_eq!(loaded.len(), 2);
    assert!(store::load(dir.path(), now + 1).unwrap().is_empty());
    // A report id made to look like a path changes nothing of the name.
    let evil = StoredReport::new(&built_report("../../etc/passwd", 1), now, 0, 10);
    assert!(!evil.file_name().contains('/'));
}

#[test]
fn day_names_match_the_calendar() {
    assert_eq!(store::day(0), "19700101");
    assert_eq!(store::day(951_782_400), "20000229");
    assert_eq!(store::day(1_765_100_000), "20251207");
    assert_eq!(store::day(4_102_444_799), "20991231");
}

proptest! {
    /// The budget against its model: a read fits or fails, and what is left only shrinks.
    #[test]
    fn budget_matches_model(max in 0u64..5000, reads in proptest::collection::vec(0usize..3000, 0..8)) {
        let mut budget = Budget::new(max);
        let mut left = max;
        for len in reads {
            let got = budget.read(Cursor::new(vec![7u8; len]));
            if len as u64 <= left {
                prop_assert_eq!(got.map(|v| v.len()), Ok(len));
                left -= len as u64;
            } else {
                prop_assert_eq!(got, Err(ExtractError::TooLarge { max }));
                left = 0;
            }
            prop_assert_eq!(budget.left(), left);
        }
    }

    /// Cutting records against the model "keep the first `max`, drop the rest", checked by
    /// parsing what is left.
    #[test]
    fn cut_records_matches_model(n in 0usize..40, max in 1usize..50, spaced in any::<bool>()) {
        let report = built_report("p", n);
        let mut xml = report.to_xml();
        if spaced {
            xml = xml.replace("<record>", "<record >");
        }
        let (cut, dropped) = extract::cut_records(xml.as_bytes(), max);
        prop_assert_eq!(dropped, n.saturating_sub(max));
        let parsed = Report::parse_xml(&cut).unwrap();
        prop_assert_eq!(parsed.records(), &report.records()[..n.min(max)]);
    }

    /// Whatever bytes arrive, reading them ends in a report or an error, within budget.
    #[test]
    fn any_message_gives_a_result(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let _ = extract::report(&bytes, 4096, 10);
        let _ = extract::report(&mime(&[("application/gzip", "r.gz", &bytes)]), 4096, 10);
        let _ = extract::report(&mime(&[("application/zip", "r.zip", &bytes)]), 4096, 10);
    }
}

/// Deliveries run in parallel: sixteen copies of one report at once are stored once, and
/// sixteen different reports at once against a quota of five store five.
#[test]
fn parallel_saves_keep_duplicates_and_the_quota() {
    let dir = tempfile::tempdir().unwrap();
    let now = 1_765_100_000;
    let run = |ids: Vec<String>, quota: usize| -> Vec<Saved> {
        let barrier = std::sync::Barrier::new(ids.len());
        std::thread::scope(|s| {
            let handles: Vec<_> = ids
                .iter()
                .map(|id| {
                    let report = StoredReport::new(&built_report(id, 1), now, 0, 10);
                    let (barrier, path) = (&barrier, dir.path());
                    s.spawn(move || {
                        barrier.wait();
                        store::save(path, &report, quota).unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    };
    let same = run(vec!["same".to_string(); 16], 100);
    let stored = same
        .iter()
        .filter(|s| matches!(s, Saved::Stored(_)))
        .count();
    assert_eq!(stored, 1, "{same:?}");
    let other = run((0..16).map(|i| format!("r{i}")).collect(), 5);
    let stored = other
        .iter()
        .filter(|s| matches!(s, Saved::Stored(_)))
        .count();
    assert_eq!(
        stored, 4,
        "the quota of 5 counts the first report too: {other:?}"
    );
}

/// DKIM and SPF results are bounded like records: one record listing 300,000 empty
/// `<dkim>` elements (11 KB of gzip) is stored with at most `max_records` of them, not as
/// 30 MB of JSON a day's quota of such messages would multiply.
#[test]
fn a_record_with_endless_auth_results_is_stored_small() {
    let head = GOOGLE_XML.split("<record>").next().unwrap();
    let mut xml = String::from(head);
    xml += "<record><row><source_ip>192.0.2.1</source_ip><count>1</count></row>\
            <identifiers><header_from>example.org</header_from></identifiers><auth_results>";
    for _ in 0..150_000 {
        xml += "<dkim></dkim><spf></spf>";
    }
    xml += "</auth_results></record></feedback>\n";
    let msg = mime(&[("application/gzip", "big.xml.gz", &gzip(xml.as_bytes()))]);
    let (report, dropped) = parse(&msg).unwrap();
    let stored = StoredReport::new(&report, 1_765_100_000, dropped, 100);
    assert_eq!(stored.records.len(), 1);
    assert_eq!(stored.records[0].dkim.len(), 100);
    assert_eq!(stored.records[0].spf.len(), 100);
    let json = serde_json::to_vec_pretty(&stored).unwrap();
    assert!(json.len() < 64 * 1024, "{} bytes stored", json.len());
}

/// Text fields are cut short: an `org_name` of a million control characters (a few KB of
/// gzip) would be stored as 6 MB of JSON escapes.
#[test]
fn endless_text_fields_are_stored_short() {
    let long = "\u{1}".repeat(1_000_000);
    let xml = GOOGLE_XML
        .replace("google.com</org_name>", &format!("{long}</org_name>"))
        .replace("<header_from>example.org", &format!("<header_from>{long}"));
    let msg = mime(&[("application/gzip", "big.xml.gz", &gzip(xml.as_bytes()))]);
    let (report, dropped) = parse(&msg).unwrap();
    assert_eq!(report.report_metadata.org_name.len(), 1_000_000);
    let stored = StoredReport::new(&report, 1_765_100_000, dropped, 100);
    let json = serde_json::to_vec_pretty(&stored).unwrap();
    assert!(json.len() < 64 * 1024, "{} bytes stored", json.len());
}
