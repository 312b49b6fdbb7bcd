//! `[auth] backend = "dovecot"`: AUTH on submission checked by a real Dovecot's auth service
//! over its `auth-client` socket (a passwd-file passdb), through a counting proxy so the test
//! sees each time `mta` asks it. A good password logs in and sends; a bad one gets `535`;
//! once our lockout blocks the client no more attempts reach Dovecot; a missing socket or a
//! stopped Dovecot gives `454`, never a login.

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use mta_tests::dovecot::{DovecotSetup, TestDovecot};
use mta_tests::system::{imap_user, is_root, mail_group};
use mta_tests::{SmtpClient, TestMta, base_config};

const CAROL: &str = "carol@example.test";
const CAROL_PASSWORD: &str = "carol-dovecot-password";
const BOB: &str = "bob@example.test";

/// A Unix-socket proxy to `upstream` that counts the connections it takes.
struct CountingProxy {
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl CountingProxy {
    fn start(listen: &Path, upstream: PathBuf) -> CountingProxy {
        let listener = UnixListener::bind(listen).expect("bind the proxy socket");
        listener.set_nonblocking(true).expect("nonblocking");
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, halt) = (connections.clone(), stop.clone());
        std::thread::spawn(move || {
            while !halt.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let _ = client.set_nonblocking(false);
                // Upstream gone: the client sees the connection close.
                let Ok(server) = UnixStream::connect(&upstream) else {
                    continue;
                };
                pipe(&client, &server);
                pipe(&server, &client);
            }
        });
        CountingProxy { connections, stop }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Copies `from` to `to` on a thread until either side closes.
fn pipe(from: &UnixStream, to: &UnixStream) {
    let (mut from, mut to) = (
        from.try_clone().expect("clone"),
        to.try_clone().expect("clone"),
    );
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}

/// AUTH PLAIN over implicit TLS from `source`: the reply, and the client to go on with.
fn login(mta: &TestMta, source: &str, password: &str) -> (u16, SmtpClient) {
    let mut c = SmtpClient::connect_tls_from(
        mta.submissions_addr(),
        source.parse().expect("an address"),
        &mta.cert_path(),
    );
    c.reply("the greeting");
    c.expect("EHLO client.test", 250);
    let code = c.auth_plain(CAROL, password).code;
    (code, c)
}

#[test]
fn dovecot_checks_the_passwords_behind_our_lockout() {
    assert!(
        is_root(),
        "needs root (Dovecot's master and users to drop to)"
    );
    assert!(
        TestDovecot::available(),
        "needs Dovecot (scripts/test.sh installs dovecot-imapd)"
    );
    let mta = TestMta::start_config(|dir| {
        base_config(
            dir,
            &format!(
                "[limits]\nauth_failures = 3\n[auth]\nbackend = \"dovecot\"\nsocket = {:?}\n",
                dir.join("auth-proxy").display().to_string()
            ),
        )
    });
    // Bob is ours, a recipient; carol is only Dovecot's.
    mta.add_user(BOB, "bob-password-1");

    // No socket yet: 454, not a login.
    let (code, _) = login(&mta, "127.0.0.1", CAROL_PASSWORD);
    assert_eq!(code, 454);

    let passwd = mta.dir().join("dovecot-users");
    std::fs::write(&passwd, format!("{CAROL}:{{PLAIN}}{CAROL_PASSWORD}\n")).expect("passwd");
    let (_, mail_gid) = mail_group();
    let (_, imap_uid, _) = imap_user();
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
    let proxy = CountingProxy::start(
        &mta.dir().join("auth-proxy"),
        dovecot_dir.join("run/auth-client"),
    );

    // The good password: logged in, and carol sends as herself.
    let (code, mut c) = login(&mta, "127.0.0.1", CAROL_PASSWORD);
    assert_eq!(code, 235, "{}\n{}", c.transcript(), dovecot.log());
    let message = format!("From: {CAROL}\r\nTo: {BOB}\r\nSubject: via dovecot\r\n\r\nhi\r\n");
    let r = c.send_message(CAROL, &[BOB], message.as_bytes());
    assert_eq!(r.code, 250, "{}", c.transcript());
    c.expect("QUIT", 221);
    mta.wait_for_mail(BOB, 1, 20);
    assert_eq!(proxy.connections(), 1);

    // Bad passwords: 535 each, until our lockout (3 failures) blocks the client.
    let (_, mut c) = login(&mta, "127.0.0.1", "wrong-1");
    for i in 2..=3 {
        let r = c.auth_plain(CAROL, &format!("wrong-{i}"));
        assert_eq!(r.code, 535, "{}", c.transcript());
    }
    assert_eq!(proxy.connections(), 4);
    // Blocked: refused before Dovecot is asked, even with the right password.
    let (code, _) = login(&mta, "127.0.0.1", CAROL_PASSWORD);
    assert_eq!(code, 421);
    assert_eq!(proxy.connections(), 4, "a blocked login reached Dovecot");

    // Dovecot stopped: 454 from another client address, never a login.
    drop(dovecot);
    let (code, _) = login(&mta, "127.0.0.9", CAROL_PASSWORD);
    assert_eq!(code, 454);
    assert!(proxy.connections() >= 5);
    mta.wait_logged(
        mta_tests::secs(10),
        "the failure to ask Dovecot logged",
        || mta.log().contains("Dovecot could not check the password"),
    );
}

/// A fake auth service at `path` that takes each connection and, after reading what `mta`
/// sends, answers `answer` (nothing: it hangs) and holds the connection.
fn fake_service(path: &Path, answer: Vec<u8>) -> Arc<AtomicBool> {
    let listener = UnixListener::bind(path).expect("bind the fake socket");
    listener.set_nonblocking(true).expect("nonblocking");
    let stop = Arc::new(AtomicBool::new(false));
    let halt = stop.clone();
    std::thread::spawn(move || {
        while !halt.load(Ordering::Relaxed) {
            let Ok((mut client, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            let answer = answer.clone();
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let _ = client.set_nonblocking(false);
                let _ = client.set_read_timeout(Some(Duration::from_secs(30)));
                let mut buf = [0u8; 4096];
                let _ = client.read(&mut buf);
                let _ = client.write_all(&answer);
                // Held until mta gives up.
                while matches!(client.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    stop
}

#[test]
fn a_socket_that_hangs_or_talks_nonsense_gives_454() {
    let huge = format!("VERSION\t1\t2\nMECH\tPLAIN\n{}\n", "x".repeat(100_000));
    for (what, answer) in [
        ("hangs", String::new()),
        ("garbage", "\x01\x01\x01 what\n".repeat(3)),
        ("a huge line", huge),
        (
            "OK before AUTH",
            "OK\t1\tuser=carol@example.test\n".to_string(),
        ),
    ] {
        let mta = TestMta::start_config(|dir| {
            base_config(
                dir,
                &format!(
                    "[auth]\nbackend = \"dovecot\"\nsocket = {:?}\n",
                    dir.join("fake-auth").display().to_string()
                ),
            )
        });
        let stop = fake_service(&mta.dir().join("fake-auth"), answer.into_bytes());
        let (code, c) = login(&mta, "127.0.0.1", CAROL_PASSWORD);
        stop.store(true, Ordering::Relaxed);
        assert_eq!(code, 454, "{what}: {}", c.transcript());
        mta.wait_logged(mta_tests::secs(10), "the failure logged", || {
            mta.log().contains("Dovecot could not check the password")
        });
    }
}
