//! [`TestDovecot`]: Dovecot (Debian's `dovecot-imapd` and `dovecot-pop3d`) serving IMAPS and
//! POP3S on `127.0.0.1` from the Maildirs `mta` delivers into, as `docs/operations.md`
//! configures it: the retrieval half of the mail path.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::net::claim_port;
use crate::{run, secs};

/// Where Debian installs the Dovecot master.
pub const DOVECOT: &str = "/usr/sbin/dovecot";

/// A running Dovecot, stopped (SIGTERM, then SIGKILL) on drop.
pub struct TestDovecot {
    child: Option<Child>,
    /// The IMAPS port.
    pub imaps: u16,
    /// The POP3S port.
    pub pop3s: u16,
    log: PathBuf,
}

/// What Dovecot needs to serve `mta`'s Maildirs.
pub struct DovecotSetup<'a> {
    /// A directory for the config, sockets and log.
    pub dir: &'a Path,
    /// `DATA_DIR/mail`.
    pub mail_root: &'a Path,
    /// A Dovecot passwd-file (`user:{ARGON2ID}hash`).
    pub passwd: &'a Path,
    /// The user and group Dovecot's mail processes run as: a uid of their own, not the one
    /// `mta` serves as, and the group of `local.mail_group`.
    pub uid: u32,
    pub gid: u32,
    /// The certificate and key to present.
    pub cert: &'a Path,
    pub key: &'a Path,
}

impl TestDovecot {
    /// True when Dovecot is installed.
    pub fn available() -> bool {
        Path::new(DOVECOT).exists()
    }

    /// Starts Dovecot and waits until its IMAPS port accepts connections; retries with
    /// new ports when one was taken meanwhile.
    pub fn start(setup: &DovecotSetup<'_>) -> TestDovecot {
        let mut last = String::new();
        for _ in 0..5 {
            let (imaps, pop3s) = (free_port(), free_port());
            match TestDovecot::try_start(setup, imaps, pop3s) {
                Ok(d) => return d,
                Err(e) if e.contains("in use") => last = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("dovecot: ports taken 5 times; last log:\n{last}");
    }

    fn try_start(s: &DovecotSetup<'_>, imaps: u16, pop3s: u16) -> Result<TestDovecot, String> {
        let run_dir = s.dir.join("run");
        std::fs::create_dir_all(&run_dir).expect("mkdir dovecot run dir");
        let log = s.dir.join("dovecot.log");
        let config = s.dir.join("dovecot.conf");
        let text = format!(
            "base_dir = {run}\n\
             state_dir = {run}/state\n\
             log_path = {log}\n\
             protocols = imap pop3\n\
             listen = 127.0.0.1\n\
             ssl = required\n\
             ssl_cert = <{cert}\n\
             ssl_key = <{key}\n\
             disable_plaintext_auth = yes\n\
             auth_mechanisms = plain login\n\
             auth_username_format = %Lu\n\
             mail_location = maildir:{mail}/%d/%n/Maildir\n\
             first_valid_uid = {uid}\n\
             last_valid_uid = {uid}\n\
             passdb {{\n  driver = passwd-file\n  args = scheme=ARGON2ID {passwd}\n}}\n\
             userdb {{\n  driver = static\n  args = uid={uid} gid={gid} home={mail}/%d/%n\n}}\n\
             service imap-login {{\n  inet_listener imap {{\n    port = 0\n  }}\n  \
             inet_listener imaps {{\n    port = {imaps}\n    ssl = yes\n  }}\n}}\n\
             service pop3-login {{\n  inet_listener pop3 {{\n    port = 0\n  }}\n  \
             inet_listener pop3s {{\n    port = {pop3s}\n    ssl = yes\n  }}\n}}\n",
            run = run_dir.display(),
            log = log.display(),
            cert = s.cert.display(),
            key = s.key.display(),
            mail = s.mail_root.display(),
            passwd = s.passwd.display(),
            uid = s.uid,
            gid = s.gid,
        );
        std::fs::write(&config, text).expect("write dovecot.conf");
        let child = Command::new(DOVECOT)
            .arg("-F")
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {DOVECOT}: {e}"));
        let mut dovecot = TestDovecot {
            child: Some(child),
            imaps,
            pop3s,
            log,
        };
        let deadline = Instant::now() + secs(10);
        loop {
            if let Some(status) = dovecot
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                dovecot.child = None;
                return Err(format!(
                    "dovecot exited at start-up ({status}):\n{}",
                    dovecot.log()
                ));
            }
            let up = [imaps, pop3s]
                .iter()
                .all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok());
            if up {
                return Ok(dovecot);
            }
            if Instant::now() >= deadline {
                panic!("dovecot did not listen within 10 s:\n{}", dovecot.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for TestDovecot {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SIGTERM lets the master stop its login and mail processes too.
        let _ = run(
            "kill -TERM dovecot",
            Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string()),
            b"",
            secs(5),
        );
        let deadline = Instant::now() + secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A TCP port free on 127.0.0.1 now that no other test in this binary got.
fn free_port() -> u16 {
    for _ in 0..100 {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = probe.local_addr().expect("an address").port();
        if claim_port(port) {
            return port;
        }
    }
    panic!("no free port in 100 tries");
}
