//! The retrieval half of the mail path (docs/operations.md): Dovecot reads what `mta`
//! delivered, from the Maildirs under the data dir, over IMAPS and POP3S, with the same
//! password as for submission (our argon2id hashes in a Dovecot passwd-file). Dovecot's mail
//! processes run under a uid of their own in the mail group (`local.mail_group`), never as
//! the user `mta` serves as: they read, flag and expunge the mail, and cannot open the users
//! file, the DKIM key, the TLS key or the control socket. The files hold bare LFs
//! (`local.line_endings`); over IMAP the message has CRLFs and `RFC822.SIZE` is its size.

use std::os::unix::fs::PermissionsExt;

use mta_tests::dovecot::{DovecotSetup, TestDovecot};
use mta_tests::system::{can_open_as, imap_user, is_root, mail_group, unprivileged_user};
use mta_tests::{SmtpClient, TestMta, base_config, mta_with_config, run, secs};

/// The script that turns our users file into Dovecot's passwd-file (docs/operations.md).
const USERS_TO_DOVECOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../dist/mta-dovecot-users.sh");

const PASSWORD: &str = "a long password 1";

/// Over IMAPS: reads the first message, marks it seen (a rename into `cur/`), and deletes
/// and expunges the second; then over POP3S reads the one left and deletes it.
const CLIENT: &str = r#"
import imaplib, poplib, ssl, sys
cert, imaps, pop3s, user, password = sys.argv[1:]
ctx = ssl.create_default_context(cafile=cert)
m = imaplib.IMAP4_SSL("localhost", int(imaps), ssl_context=ctx)
m.login(user, password)
typ, data = m.select("INBOX")
print("imap messages", data[0].decode())
typ, data = m.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT DELIVERED-TO)])")
print(data[0][1].decode().strip())
typ, data = m.fetch("1", "(RFC822.SIZE BODY.PEEK[])")
size = int(data[0][0].split(b"RFC822.SIZE ")[1].split()[0])
body = data[0][1]
print("imap size", "right" if size == len(body) else "wrong %d %d" % (size, len(body)))
print("imap bare lf", body.replace(b"\r\n", b"").count(b"\n"))
typ, data = m.store("1", "+FLAGS", "(\\Seen)")
print("imap store", typ)
typ, data = m.fetch("1", "(FLAGS)")
print("imap flags", data[0].decode())
typ, data = m.store("2", "+FLAGS", "(\\Deleted)")
typ, data = m.expunge()
print("imap expunge", typ, data)
typ, data = m.select("INBOX")
print("imap left", data[0].decode())
m.logout()
p = poplib.POP3_SSL("localhost", int(pop3s), context=ctx)
p.user(user)
p.pass_(password)
print("pop3 messages", p.stat()[0])
print("pop3 retr", b"\n".join(p.retr(1)[1]).decode())
print("pop3 dele", p.dele(1).decode())
p.quit()
p = poplib.POP3_SSL("localhost", int(pop3s), context=ctx)
p.user(user)
p.pass_(password)
print("pop3 left", p.stat()[0])
p.quit()
"#;

/// Over IMAPS: the INBOX of users who have had no mail.
const EMPTY: &str = r#"
import imaplib, ssl, sys
cert, imaps, password = sys.argv[1:]
ctx = ssl.create_default_context(cafile=cert)
for user in ["bob@example.test", "carol@example.test"]:
    m = imaplib.IMAP4_SSL("localhost", int(imaps), ssl_context=ctx)
    m.login(user, password)
    typ, data = m.select("INBOX")
    print(user, typ, data[0].decode())
    m.logout()
"#;

#[test]
fn dovecot_under_its_own_uid_reads_flags_and_expunges_what_mta_delivered() {
    let test = "dovecot_under_its_own_uid_reads_flags_and_expunges_what_mta_delivered";
    // A test that cannot run fails: CI runs as root and scripts/test.sh installs Dovecot.
    assert!(
        is_root(),
        "{test} needs root (Dovecot's master and users to drop to)"
    );
    assert!(
        TestDovecot::available(),
        "{test} needs Dovecot (scripts/test.sh installs dovecot-imapd and dovecot-pop3d)"
    );
    let (user, mta_uid, _) = unprivileged_user();
    let (group, mail_gid) = mail_group();
    let (_, imap_uid, _) = imap_user();
    assert_ne!(imap_uid, mta_uid);
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
        mta_with_config(
            &pre,
            &[
                "dkim",
                "keygen",
                "--domain",
                "example.test",
                "--selector",
                "s1",
            ],
            b"",
        )
        .assert_success("mta dkim keygen");
        let config = base_config(
            dir,
            &format!(
                "user = {user:?}\n[local]\nmail_group = {group:?}\n\
                 [[dkim.\"example.test\"]]\nselector = \"s1\"\nkey = {:?}\n",
                dir.join("data/dkim/example.test.s1.key")
                    .display()
                    .to_string()
            ),
        );
        // A user without mail yet, added before the start.
        std::fs::write(&pre, &config).expect("write pre.toml");
        mta_with_config(
            &pre,
            &["user", "add", "bob@example.test", "--password-stdin"],
            format!("{PASSWORD}\n").as_bytes(),
        )
        .assert_success("mta user add bob");
        config
    });
    let mut client = SmtpClient::connect(mta.smtp_addr());
    client.reply("greeting");
    client.expect("EHLO client.test", 250);
    // One after the other: two messages delivered at once may land in either order (each
    // takes its Maildir name when its delivery starts), and the client below reads them by
    // number.
    for (delivered, subject) in ["read me with Dovecot", "expunge me"].iter().enumerate() {
        let message = format!(
            "From: <a@remote.test>\r\nTo: <alice@example.test>\r\nSubject: {subject}\r\n\r\nhello\r\n"
        );
        let reply =
            client.send_message("a@remote.test", &["alice@example.test"], message.as_bytes());
        assert_eq!(reply.code, 250, "{}", client.transcript());
        mta.wait_for_mail("alice@example.test", delivered + 1, 10);
    }
    // And one added while mta runs, as root, with the config mta serves with.
    mta_with_config(
        &mta.dir().join("mta.toml"),
        &["user", "add", "carol@example.test", "--password-stdin"],
        format!("{PASSWORD}\n").as_bytes(),
    )
    .assert_success("mta user add carol");

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
        uid: imap_uid,
        gid: mail_gid,
        cert: &cert,
        key: &key,
    });
    let out = run(
        "python3 imaplib/poplib",
        std::process::Command::new("python3").args([
            "-c",
            CLIENT,
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
        "imap messages 2",
        "Delivered-To: alice@example.test",
        "Subject: read me with Dovecot",
        "imap size right",
        "imap bare lf 0",
        "imap store OK",
        "\\Seen",
        "imap expunge OK",
        "imap left 1",
        "pop3 messages 1",
        "Subject: read me with Dovecot",
        "pop3 dele +OK",
        "pop3 left 0",
    ] {
        assert!(out.stdout.contains(want), "no {want:?} in:\n{out}");
    }
    // Users who have had no mail find an empty INBOX: Dovecot cannot create a Maildir, so
    // `mta user add` made theirs.
    let out = run(
        "python3 imaplib",
        std::process::Command::new("python3").args([
            "-c",
            EMPTY,
            &cert.display().to_string(),
            &dovecot.imaps.to_string(),
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
    for want in ["bob@example.test OK 0", "carol@example.test OK 0"] {
        assert!(out.stdout.contains(want), "no {want:?} in:\n{out}");
    }
    assert!(!dovecot.log().contains("Error"), "{}", dovecot.log());
    // Dovecot's uid in the mail group opens none of mta's secrets.
    let data = mta.data_dir();
    for secret in [
        data.join("users"),
        data.join("dkim/example.test.s1.key"),
        data.join("tls/selfsigned-key.pem"),
        data.join("control.sock"),
    ] {
        assert!(secret.exists(), "{}", secret.display());
        assert!(
            !can_open_as(imap_uid, mail_gid, &secret),
            "Dovecot's uid can open {}",
            secret.display()
        );
    }
    // mta still delivers into the Maildir Dovecot has since written in (its index and
    // uidlist, files renamed into cur/ and removed).
    let reply = client.send_message(
        "a@remote.test",
        &["alice@example.test"],
        b"From: <a@remote.test>\r\nSubject: after\r\n\r\nagain\r\n",
    );
    assert_eq!(reply.code, 250, "{}", client.transcript());
    mta.wait_for_mail("alice@example.test", 1, 10);
}

/// The passwd-file script runs as root over a file in a directory the user mta runs as owns:
/// a link to a root-only file, a FIFO, or a root-only file put there is refused (the
/// passwd-file left as it was, no waiting), and a plain users file of that user is copied.
#[test]
fn the_passwd_file_script_reads_the_users_file_only_as_its_owner() {
    use std::os::unix::fs::{chown, symlink};
    assert!(
        is_root(),
        "this test runs the script as root (CI and scripts/test.sh do)"
    );
    let (_, uid, gid) = unprivileged_user();
    let base = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let data = base.path().join("data");
    std::fs::create_dir(&data).expect("data dir");
    chown(&data, Some(uid), Some(gid)).expect("chown data dir");
    let secret = base.path().join("root-only");
    std::fs::write(&secret, "root@example.test $argon2id$SECRET\n").expect("secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let users = data.join("users");
    let passwd = base.path().join("passwd");
    let convert = || {
        let mut cmd = std::process::Command::new("sh");
        cmd.arg(USERS_TO_DOVECOT).arg(&users).arg(&passwd);
        run("mta-dovecot-users.sh", &mut cmd, b"", secs(30))
    };

    symlink(&secret, &users).expect("symlink");
    let out = convert();
    assert!(
        !out.status.success() && !passwd.exists(),
        "a link was followed: {out}"
    );
    std::fs::remove_file(&users).expect("rm link");

    let made = std::process::Command::new("mkfifo")
        .arg(&users)
        .status()
        .expect("mkfifo");
    assert!(made.success(), "mkfifo");
    let out = convert();
    assert!(
        !out.status.success() && !passwd.exists(),
        "a FIFO was read: {out}"
    );
    std::fs::remove_file(&users).expect("rm fifo");

    // As a hard link to a root-only file would be: root could read it, its owner cannot.
    std::fs::copy(&secret, &users).expect("root-only users file");
    let out = convert();
    assert!(
        !out.status.success() && !passwd.exists(),
        "read with root's rights: {out}"
    );
    std::fs::remove_file(&users).expect("rm");

    std::fs::write(&users, "# users\nAlice@Example.test $argon2id$HASH\n").expect("users");
    chown(&users, Some(uid), Some(gid)).expect("chown users");
    std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    convert().assert_success("mta-dovecot-users.sh on a plain users file");
    let written = std::fs::read_to_string(&passwd).expect("passwd-file");
    assert_eq!(written, "alice@example.test:{ARGON2ID}$argon2id$HASH\n");
}
