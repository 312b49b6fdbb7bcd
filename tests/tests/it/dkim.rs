//! DKIM signing end to end: keys made by `mta dkim keygen`, their records (as it printed them)
//! served by dnsmasq, mail relayed by one `mta` to another whose inbound checks (mail-auth)
//! must say `dkim=pass` for both signatures, RSA and Ed25519, and Python's dkimpy, a verifier
//! we did not write, must agree; for plain, empty-body, folded-header, 8-bit and UTF-8-header
//! messages, and for a bounce we generate.

use std::path::{Path, PathBuf};
use std::process::Command;

use mta_tests::relay::{REMOTE_BOB, receiver, sender, start_sender, submit};
use mta_tests::{
    ALICE, KeptDir, SmtpClient, TestDns, TestMta, mta_with_config, on_shared_port, read_delivered,
    run, secs, serve_expecting_failure,
};

/// One key made by `mta dkim keygen`: its DNS name, record text and file.
pub struct Key {
    pub name: String,
    pub text: String,
    pub file: PathBuf,
    pub domain: String,
    pub selector: String,
    pub algorithm: String,
}

impl Key {
    /// `--txt-record=` for dnsmasq, in strings of at most 255 octets.
    pub fn dnsmasq(&self) -> String {
        txt_record(&self.name, &self.text)
    }

    /// The config table that signs with this key.
    pub fn toml(&self) -> String {
        format!(
            "[[dkim.\"{}\"]]\nselector = \"{}\"\nkey = {:?}\nalgorithm = \"{}\"\n",
            self.domain,
            self.selector,
            self.file.display().to_string(),
            self.algorithm
        )
    }
}

/// `--txt-record=NAME,part,...` for dnsmasq (on its command line, quotes would be part of
/// the text; the texts here hold no commas).
pub fn txt_record(name: &str, text: &str) -> String {
    assert!(!text.contains(','), "{text}");
    let parts: Vec<String> = text
        .as_bytes()
        .chunks(255)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    format!("--txt-record={name},{}", parts.join(","))
}

/// Runs `mta dkim keygen` with a config whose data dir is `dir`, and reads the record back
/// from what it printed.
pub fn keygen(dir: &Path, domain: &str, selector: &str, algorithm: &str) -> Key {
    let config = dir.join("keygen.toml");
    std::fs::write(
        &config,
        format!("data_dir = {:?}\n", dir.display().to_string()),
    )
    .unwrap();
    let out = mta_with_config(
        &config,
        &[
            "dkim",
            "keygen",
            "--domain",
            domain,
            "--selector",
            selector,
            "--algorithm",
            algorithm,
        ],
        b"",
    );
    out.assert_success("mta dkim keygen");
    let stdout = out.stdout.clone();
    let start = stdout
        .find(" IN TXT (")
        .expect("a TXT record in the output");
    let name = stdout[..start]
        .rsplit('\n')
        .next()
        .unwrap()
        .trim_end_matches('.')
        .to_string();
    let rest = &stdout[start..];
    let record = &rest[..rest.find(')').expect("closing paren")];
    let text: String = record.split('"').skip(1).step_by(2).collect();
    let file = dir
        .join("dkim")
        .join(format!("{}.{selector}.key", domain.to_ascii_lowercase()));
    assert!(file.exists(), "{}\n{stdout}", file.display());
    Key {
        name,
        text,
        file,
        domain: domain.to_ascii_lowercase(),
        selector: selector.into(),
        algorithm: algorithm.into(),
    }
}

/// dkimpy: verifies every DKIM-Signature of the message in `path` with `records` as DNS, and
/// prints one `pass` or `fail` line per signature.
const DKIMPY: &str = r#"
import sys, dkim
msg = open(sys.argv[1], 'rb').read()
records = dict(a.split('=', 1) for a in sys.argv[2:])
def dnsfunc(name, timeout=5):
    return records.get(name.decode().rstrip('.'), '').encode()
d = dkim.DKIM(msg)
count = sum(1 for line in msg.splitlines() if line.lower().startswith(b'dkim-signature:'))
for i in range(count):
    try:
        ok = d.verify(idx=i, dnsfunc=dnsfunc)
    except dkim.ValidationError as e:
        ok = False
        print(e, file=sys.stderr)
    print('pass' if ok else 'fail')
"#;

pub fn dkimpy(path: &Path, keys: &[&Key]) -> Vec<String> {
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(DKIMPY).arg(path);
    for k in keys {
        cmd.arg(format!("{}={}", k.name, k.text));
    }
    let out = run("dkimpy", &mut cmd, b"", secs(30));
    out.assert_success("dkimpy");
    out.stdout.lines().map(str::to_string).collect()
}

/// The test world: keys for `example.test` (RSA and Ed25519) and `mx.example.test` (the
/// bounce sender, Ed25519), a DNS zone with them, SPF and a `p=reject` DMARC policy, a sender
/// that signs and a receiver that checks.
struct World {
    _keys: KeptDir,
    rsa: Key,
    ed: Key,
    bounce: Key,
    _dns: TestDns,
    tx: TestMta,
    rx: TestMta,
}

fn world(sender_aliases: &str) -> World {
    let keys = KeptDir::new();
    let rsa = keygen(keys.path(), "example.test", "rsa", "rsa");
    let ed = keygen(keys.path(), "example.test", "ed", "ed25519");
    let bounce = keygen(keys.path(), "mx.example.test", "b1", "ed25519");
    let dns = TestDns::start(&[
        "--mx-host=remote.test,mx1.remote.test,10",
        "--host-record=mx1.remote.test,127.0.0.2",
        &rsa.dnsmasq(),
        &ed.dnsmasq(),
        &bounce.dnsmasq(),
        &txt_record("example.test", "v=spf1 ip4:127.0.0.0/8 -all"),
        &txt_record("_dmarc.example.test", "v=DMARC1; p=reject"),
        // bob's server: so the bounce test's sender is real (no bounce goes to a forged one).
        &txt_record("remote.test", "v=spf1 ip4:127.0.0.0/8 -all"),
    ]);
    let (port, rx) = on_shared_port("the checking receiver", |p| {
        let rx = receiver("mx1.remote.test", &["remote.test"], "127.0.0.2", p)
            .toml(&format!("{}[inbound]\nchecks = true\n", dns.config_toml()))
            .try_start()?;
        rx.add_user(REMOTE_BOB, "bob-password-1");
        Ok(rx)
    });
    let tx = start_sender(
        sender(&dns, port, "")
            .toml(&rsa.toml())
            .toml(&ed.toml())
            .toml(&bounce.toml())
            .toml(sender_aliases)
            .toml("[inbound]\nchecks = true\n"),
    );
    World {
        _keys: keys,
        rsa,
        ed,
        bounce,
        _dns: dns,
        tx,
        rx,
    }
}

/// The value of the first `Authentication-Results:` field, unfolded.
fn auth_results(message: &[u8]) -> String {
    let text = String::from_utf8_lossy(message).replace("\r\n\t", " ");
    text.lines()
        .find_map(|l| l.strip_prefix("Authentication-Results: "))
        .unwrap_or_else(|| panic!("no Authentication-Results in:\n{text}"))
        .to_string()
}

#[test]
fn signed_mail_verifies_with_mail_auth_and_dkimpy() {
    let w = world("");
    let long_subject = format!(
        "Subject: a long subject that goes on{}\r\n\tand is folded  \r\n  twice\r\n",
        " and on".repeat(20)
    );
    let to_many = format!(
        "To: <{REMOTE_BOB}>,\r\n {}\r\n",
        (0..30)
            .map(|i| format!("someone{i}@elsewhere.test"))
            .collect::<Vec<_>>()
            .join(",\r\n ")
    );
    let messages: Vec<(&str, String)> = vec![
        (
            "plain",
            format!(
                "From: Alice <{ALICE}>\r\nTo: <{REMOTE_BOB}>\r\nSubject: plain\r\n\r\nHello.\r\n"
            ),
        ),
        (
            "empty body",
            format!("From: {ALICE}\r\nTo: <{REMOTE_BOB}>\r\nSubject: empty\r\n\r\n"),
        ),
        (
            "long and folded headers",
            format!(
                "From: Alice\r\n <{ALICE}>\r\n{to_many}{long_subject}Cc: <{REMOTE_BOB}>\r\n\r\nbody  with  spaces \t\r\n\r\n\r\n"
            ),
        ),
        (
            "8-bit body",
            format!(
                "From: <{ALICE}>\r\nTo: <{REMOTE_BOB}>\r\nSubject: 8bit\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße aus Köln, 東京.\r\n"
            ),
        ),
        (
            "UTF-8 headers",
            format!(
                "From: Zoë Ålander <{ALICE}>\r\nTo: Bøb <{REMOTE_BOB}>\r\nSubject: Ünïcödé subject ✓\r\n\r\nRFC 6532 header.\r\n"
            ),
        ),
    ];
    for (i, (what, msg)) in messages.iter().enumerate() {
        submit(&w.tx, &[REMOTE_BOB], msg.as_bytes());
        let files = w.rx.wait_for_mail(REMOTE_BOB, i + 1, 20);
        let newest = newest_containing(&files, msg.lines().nth(1).unwrap_or_default());
        let d = read_delivered(&newest);
        let results = auth_results(&d.rest);
        for want in [
            "dkim=pass header.d=example.test header.s=rsa",
            "dkim=pass header.d=example.test header.s=ed",
            "spf=pass",
            "dmarc=pass",
        ] {
            assert!(results.contains(want), "{what}: want {want:?} in {results}");
        }
        let verdicts = dkimpy(&newest, &[&w.rsa, &w.ed]);
        assert_eq!(
            verdicts,
            ["pass", "pass"],
            "{what}: dkimpy on {}",
            newest.display()
        );
    }
    let signed = w.tx.log();
    assert!(signed.contains("DKIM-signed"), "{signed}");
}

/// The file among `files` whose text contains `needle` (the messages differ in their `To:`
/// or `Subject:` line).
fn newest_containing(files: &[PathBuf], needle: &str) -> PathBuf {
    files
        .iter()
        .filter(|f| String::from_utf8_lossy(&std::fs::read(f).unwrap()).contains(needle))
        .max_by_key(|f| std::fs::metadata(f).and_then(|m| m.modified()).unwrap())
        .unwrap_or_else(|| panic!("no delivered file contains {needle:?}"))
        .clone()
}

#[test]
fn signature_has_the_promised_shape_and_breaks_when_the_body_changes() {
    let w = world("");
    let msg =
        format!("From: {ALICE}\r\nTo: <{REMOTE_BOB}>\r\nSubject: shape\r\n\r\noriginal body\r\n");
    submit(&w.tx, &[REMOTE_BOB], msg.as_bytes());
    let files = w.rx.wait_for_mail(REMOTE_BOB, 1, 20);
    let bytes = mta_tests::read_crlf(&files[0]);
    let text = String::from_utf8_lossy(&bytes)
        .replace("\r\n\t", " ")
        .replace("\r\n ", " ");
    let sigs: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("DKIM-Signature:"))
        .collect();
    assert_eq!(sigs.len(), 2, "{text}");
    for sig in &sigs {
        let tags: String = sig.split_whitespace().collect();
        assert!(tags.contains("c=relaxed/relaxed"), "{sig}");
        assert!(!tags.contains(";l="), "no body length limit: {sig}");
        assert!(tags.contains(";x="), "an expiry: {sig}");
        let h = tags.split(";h=").nth(1).unwrap().split(';').next().unwrap();
        let names: Vec<String> = h.split(':').map(|n| n.to_ascii_lowercase()).collect();
        assert_eq!(
            names.iter().filter(|n| *n == "from").count(),
            2,
            "From over-signed: {h}"
        );
        for name in [
            "to",
            "subject",
            "date",
            "message-id",
            "mime-version",
            "content-type",
            "reply-to",
            "cc",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} in h=: {h}");
        }
        let t: u64 = tags
            .split(";t=")
            .nth(1)
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let x: u64 = tags
            .split(";x=")
            .nth(1)
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(x - t, 7 * 86_400, "the default expiry is 7 days: {sig}");
    }
    // The same bytes with one body word changed fail for both verifiers.
    let changed = String::from_utf8_lossy(&bytes).replace("original body", "altered body");
    let path = w.rx.dir().join("changed.eml");
    std::fs::write(&path, changed).unwrap();
    assert_eq!(dkimpy(&path, &[&w.rsa, &w.ed]), ["fail", "fail"]);
}

#[test]
fn bounces_are_signed_for_our_hostname() {
    // Mail from bob@remote.test to an alias that forwards to a user the receiver does not
    // have: the receiver refuses it, and our bounce to bob leaves signed for mx.example.test.
    let w = world("[aliases]\n\"fwd@example.test\" = [\"nobody@remote.test\"]\n");
    let mut c = SmtpClient::connect(w.tx.smtp_addr());
    c.reply("the greeting");
    c.expect("EHLO remote.test", 250);
    let msg =
        format!("From: <{REMOTE_BOB}>\r\nTo: <fwd@example.test>\r\nSubject: fwd\r\n\r\nhi\r\n");
    let reply = c.send_message(REMOTE_BOB, &["fwd@example.test"], msg.as_bytes());
    assert_eq!(reply.code, 250, "{}", c.transcript());
    let files = w.rx.wait_for_mail(REMOTE_BOB, 1, 30);
    let bytes = mta_tests::read_crlf(&files[0]);
    let results = auth_results(&read_delivered(&files[0]).rest);
    assert!(
        results.contains("dkim=pass header.d=mx.example.test header.s=b1"),
        "{results}\n{}",
        String::from_utf8_lossy(&bytes)
    );
    assert_eq!(dkimpy(&files[0], &[&w.bounce]), ["pass"]);
}

#[test]
fn keygen_show_and_check_config_agree_and_refuse_bad_keys() {
    let dir = KeptDir::new();
    let rsa = keygen(dir.path(), "Example.TEST", "s1", "rsa");
    assert_eq!(rsa.name, "s1._domainkey.example.test");
    assert!(
        rsa.text
            .starts_with("v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A"),
        "{}",
        rsa.text
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&rsa.file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    // A second keygen for the same selector never overwrites the key.
    let again = mta_with_config(
        &dir.path().join("keygen.toml"),
        &[
            "dkim",
            "keygen",
            "--domain",
            "example.test",
            "--selector",
            "s1",
        ],
        b"",
    );
    assert_ne!(again.code(), 0);
    assert!(again.stderr.contains("exists already"), "{}", again.all());

    let rsa_config = rsa.toml();
    let config = dir.path().join("mta.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n{rsa_config}",
            dir.path().display().to_string()
        ),
    )
    .unwrap();
    let shown = mta_with_config(&config, &["dkim", "show"], b"");
    shown.assert_success("mta dkim show");
    let joined: String = shown.stdout.split('"').skip(1).step_by(2).collect();
    assert_eq!(
        joined, rsa.text,
        "show prints what keygen printed:\n{}",
        shown.stdout
    );
    mta_with_config(&config, &["check-config"], b"").assert_success("check-config");

    // The key declared as Ed25519: check-config names the file and the problem.
    let wrong = rsa_config.replace("algorithm = \"rsa\"", "algorithm = \"ed25519\"");
    std::fs::write(
        &config,
        format!("data_dir = {:?}\n{wrong}", dir.path().display().to_string()),
    )
    .unwrap();
    let out = mta_with_config(&config, &["check-config"], b"");
    assert_ne!(out.code(), 0);
    assert!(
        out.stderr.contains("not an Ed25519 private key"),
        "{}",
        out.all()
    );
    assert!(
        out.stderr.contains(&rsa.file.display().to_string()),
        "{}",
        out.all()
    );
    // A missing key stops `mta serve` at start-up.
    let missing = rsa_config.replace(".key\"", ".gone\"");
    let text = format!(
        "data_dir = {:?}\n{missing}[listen]\nsmtp = [\"127.0.0.1:0\"]\nsubmission = []\nsubmissions = []\n",
        dir.path().join("data").display().to_string()
    );
    let (_, out) = serve_expecting_failure(dir.path(), &text);
    assert_ne!(out.code(), 0);
    assert!(
        out.stderr
            .contains("s1.gone (example.test, selector s1): cannot read"),
        "{}",
        out.all()
    );
}
