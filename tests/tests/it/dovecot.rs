//! The retrieval half of the mail path (docs/operations.md): Dovecot reads what
//! `mta` delivered, from the Maildirs under the data dir, over IMAPS and POP3S, with the
//! same password as for submission (our argon2id hashes in a Dovecot passwd-file).

use std::os::unix::fs::PermissionsExt;

use mta_tests::dovecot::{DovecotSetup, TestDovecot};
use mta_tests::system::{is_root, unprivileged_user};
use mta_tests::{SmtpClient, TestMta, base_config, mta_with_config, run, secs};

/// The script that turns our users file into Dovecot's passwd-file (docs/operations.md).
const USERS_TO_DOVECOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../dist/mta-dovecot-users.sh");

const PASSWORD: &str = "a long password 1";

#[test]
fn dovecot_serves_what_mta_delivered_over_imaps_and_pop3s() {
    let test = "dovecot_serves_what_mta_delivered_over_imaps_and_pop3s";
    // A test that cannot run fails: CI runs as root and scripts/test.sh installs Dovecot.
    assert!(
        is_root(),
        "{test} needs root (Dovecot's master and a user to drop to)"
    );
    assert!(
        TestDovecot::available(),
        "{test} needs Dovecot (scripts/test.sh installs dovecot-imapd and dovecot-pop3d)"
    );
    let (user, uid, gid) = unprivileged_user();
    let mta = TestMta::start_config(|dir| {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).expect("chmod");
        let config = base_config(dir, &format!("user = {user:?}\n"));
        let pre = dir.join("pre.toml");
        std::fs::write(&pre, &config).expect("write pre.toml");
        mta_with_config(
            &pre,
            &["user", "add", "alice@example.test", "--password-stdin"],
            format!("{PASSWORD}\n").as_bytes(),
        )
        .assert_success("mta user add");
        config
    });
    let mut client = SmtpClient::connect(mta.smtp_addr());
    client.reply("greeting");
    client.expect("EHLO client.test", 250);
    let message = b"From: <a@remote.test>\r\nTo: <alice@example.test>\r\n\
        Subject: read me with Dovecot\r\n\r\nhello\r\n";
    let reply = client.send_message("a@remote.test", &["alice@example.test"], message);
    assert_eq!(reply.code, 250, "{}", client.transcript());
    mta.wait_for_mail("alice@example.test", 1, 10);

    let passwd = mta.dir().join("dovecot-users");
    let users = mta.data_dir().join("users");
    let mut convert = std::process::Command::new("sh");
    convert.arg(USERS_TO_DOVECOT).arg(&users).arg(&passwd);
    run("mta-dovecot-users.sh", &mut convert, b"", secs(10)).assert_success("mta-dovecot-users.sh");
    let tls = mta.data_dir().join("tls");
    let dovecot_dir = mta.dir().join("dovecot");
    let mail_root = mta.data_dir().join("mail");
    let (cert, key) = (
        tls.join("selfsigned-cert.pem"),
        tls.join("selfsigned-key.pem"),
    );
    let dovecot = TestDovecot::start(&DovecotSetup {
        dir: &dovecot_dir,
        mail_root: &mail_root,
        passwd: &passwd,
        uid,
        gid,
        cert: &cert,
        key: &key,
    });
    let script = r#"
import imaplib, poplib, ssl, sys
cert, imaps, pop3s, user, password = sys.argv[1:]
ctx = ssl.create_default_context(cafile=cert)
m = imaplib.IMAP4_SSL("localhost", int(imaps), ssl_context=ctx)
m.login(user, password)
typ, data = m.select("INBOX")
print("imap messages", data[0].decode())
typ, data = m.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT DELIVERED-TO)])")
print(data[0][1].decode().strip())
m.logout()
p = poplib.POP3_SSL("localhost", int(pop3s), context=ctx)
p.user(user)
p.pass_(password)
print("pop3 messages", p.stat()[0])
p.quit()
"#;
    let out = run(
        "python3 imaplib/poplib",
        std::process::Command::new("python3").args([
            "-c",
            script,
            &cert.display().to_string(),
            &dovecot.imaps.to_string(),
            &dovecot.pop3s.to_string(),
            // Any case: Dovecot lowers it (auth_username_format = %Lu) to find the Maildir.
            "Alice@Example.test",
            PASSWORD,
        ]),
        b"",
        secs(30),
    );
    assert!(
        out.status.success(),
        "{out}\n--- dovecot log ---\n{}",
        dovecot.log()
    );
    for want in [
        "imap messages 1",
        "Delivered-To: alice@example.test",
        "Subject: read me with Dovecot",
        "pop3 messages 1",
    ] {
        assert!(out.stdout.contains(want), "no {want:?} in:\n{out}");
    }
}
