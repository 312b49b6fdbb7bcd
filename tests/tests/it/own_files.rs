//! Files `mta` writes for itself at start-up: a self-signed certificate left empty by a
//! crash is made again instead of stopping the server, and a symlink planted in the data dir
//! (by the `mta` user, for root to follow at its next start) is not written through.

use mta_tests::{TestMta, base_config};

/// An empty certificate (and key) at start: the server makes a new pair and starts.
#[test]
fn empty_self_signed_certificate_is_made_again() {
    let mut mta = TestMta::start("");
    let cert = mta.data_dir().join("tls").join("selfsigned-cert.pem");
    let key = mta.data_dir().join("tls").join("selfsigned-key.pem");
    mta.stop();
    std::fs::write(&cert, b"").expect("empty the certificate");
    std::fs::write(&key, b"-----BEGIN PRIVATE KEY-----\nMIIE").expect("tear the key");
    mta.restart();
    let text = std::fs::read_to_string(&cert).expect("read the certificate");
    assert!(
        text.trim_end().ends_with("-----END CERTIFICATE-----"),
        "{text}"
    );
    let log = mta.log();
    assert!(log.contains("empty or cut short"), "{log}");
    // It serves TLS with it.
    let mut c = mta_tests::SmtpClient::connect(mta.submission_addr());
    c.reply("the greeting");
    c.expect("EHLO client.test", 250);
    c.expect("STARTTLS", 220);
    c.upgrade_tls(&cert);
    c.expect("EHLO client.test", 250);
}

/// Symlinks in the data dir to a file outside it (root-owned when root starts mta): the
/// start-up write test and the self-signed key neither truncate nor overwrite it.
#[test]
fn symlinks_in_the_data_dir_are_not_followed() {
    let outside = tempfile::tempdir().expect("temp dir");
    let victim = outside.path().join("shadow");
    std::fs::write(&victim, "precious\n").expect("write the victim");
    let planted = tempfile::tempdir().expect("temp dir");
    let data = planted.path().join("data");
    std::fs::create_dir_all(data.join("tls")).expect("mkdir");
    std::os::unix::fs::symlink(&victim, data.join(".write-test")).expect("plant");
    std::os::unix::fs::symlink(&victim, data.join("tls").join("selfsigned-key.pem"))
        .expect("plant");
    let config = base_config(planted.path(), "");
    let (_, out) = mta_tests::serve_expecting_failure(planted.path(), &config);
    assert_eq!(
        std::fs::read_to_string(&victim).expect("read the victim"),
        "precious\n",
        "a file outside the data dir was written through a symlink\n{out}"
    );
    assert!(
        out.stderr.contains("symbolic link"),
        "the link is named as the cause\n{out}"
    );
}

/// A FIFO planted where the users file goes (by the `mta` user, for root's next start):
/// start-up refuses it at once instead of blocking for ever in `open`, and nothing but a
/// regular file is opened there.
#[test]
fn a_fifo_for_the_users_file_is_refused_not_opened() {
    let planted = tempfile::tempdir().expect("temp dir");
    let data = planted.path().join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    let made = std::process::Command::new("mkfifo")
        .arg(data.join("users"))
        .status()
        .expect("run mkfifo");
    assert!(made.success(), "mkfifo");
    let config = base_config(planted.path(), "");
    let (_, out) = mta_tests::serve_expecting_failure(planted.path(), &config);
    assert_ne!(out.code(), 0, "{out}");
    assert!(
        out.stderr.contains("not a regular file"),
        "the users file is named as the cause\n{out}"
    );
}

/// A FIFO planted where the self-signed certificate goes: refused at once, not read (which
/// blocks for ever).
#[test]
fn a_fifo_for_the_self_signed_certificate_is_refused_not_read() {
    let planted = tempfile::tempdir().expect("temp dir");
    let tls = planted.path().join("data").join("tls");
    std::fs::create_dir_all(&tls).expect("mkdir");
    let made = std::process::Command::new("mkfifo")
        .arg(tls.join("selfsigned-cert.pem"))
        .status()
        .expect("run mkfifo");
    assert!(made.success(), "mkfifo");
    let config = base_config(planted.path(), "");
    let (_, out) = mta_tests::serve_expecting_failure(planted.path(), &config);
    assert_ne!(out.code(), 0, "{out}");
    assert!(
        out.stderr.contains("not a regular file"),
        "the certificate is named as the cause\n{out}"
    );
}

/// A FIFO planted where a DKIM key made by `mta dkim keygen` goes (the data dir): refused
/// at once, not read.
#[test]
fn a_fifo_for_a_dkim_key_is_refused_not_read() {
    let planted = tempfile::tempdir().expect("temp dir");
    let dkim = planted.path().join("data").join("dkim");
    std::fs::create_dir_all(&dkim).expect("mkdir");
    let key = dkim.join("example.test.s1.pem");
    let made = std::process::Command::new("mkfifo")
        .arg(&key)
        .status()
        .expect("run mkfifo");
    assert!(made.success(), "mkfifo");
    let extra = format!(
        "[[dkim.\"example.test\"]]\nselector = \"s1\"\nkey = {:?}\nalgorithm = \"ed25519\"\n",
        key.display().to_string()
    );
    let config = base_config(planted.path(), &extra);
    let (_, out) = mta_tests::serve_expecting_failure(planted.path(), &config);
    assert_ne!(out.code(), 0, "{out}");
    assert!(
        out.stderr.contains("not a regular file"),
        "the key is named as the cause\n{out}"
    );
}
