//! Private Postfix instances as real peers: each with its own `config_directory`,
//! `queue_directory` and `data_directory` in a temp dir, one SMTP listener on a loopback
//! address and port, no system service and nothing written under `/etc/postfix`. Mail for
//! its virtual mailbox domains is delivered by virtual(8) into one Maildir per mailbox
//! under the temp dir, which the tests read; other mail is relayed as `main.cf` says
//! (`relayhost`, `transport_maps`), set through [`PostfixBuilder::main_cf`].
//!
//! `postfix -c DIR start-fg` runs the master in the foreground as a child of the test, in
//! a session of its own: stopping kills that whole process group (the master and every
//! daemon it started) with SIGKILL, on [`Drop`] too, so no instance outlives its test.
//! Needs root (the master starts daemons as `mail_owner = postfix`, virtual(8) writes as
//! `mail`); `scripts/test.sh` installs Postfix.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{KeptDir, run, secs, wait_for};

/// master.cf: Debian's services without chroot, SMTP on the test's address only, and
/// postlogd so the log goes to a file (a test machine may have no syslog daemon).
const MASTER_CF: &str = "\
@LISTEN@ inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
";

/// How a private Postfix is set up; [`PostfixBuilder::start`] runs it.
pub struct PostfixBuilder {
    hostname: String,
    ip: String,
    port: u16,
    mailboxes: Vec<String>,
    main: BTreeMap<String, String>,
    etc: Vec<(String, String)>,
}

impl PostfixBuilder {
    /// An instance named `hostname`, listening on `ip:port`.
    pub fn new(hostname: &str, ip: &str, port: u16) -> PostfixBuilder {
        PostfixBuilder {
            hostname: hostname.to_string(),
            ip: ip.to_string(),
            port,
            mailboxes: Vec::new(),
            main: BTreeMap::new(),
            etc: Vec::new(),
        }
    }

    /// Mailboxes it delivers to, each into its own Maildir; their domains become its
    /// `virtual_mailbox_domains`, and any other address there is refused at RCPT with 550.
    pub fn mailboxes(mut self, addresses: &[&str]) -> PostfixBuilder {
        self.mailboxes
            .extend(addresses.iter().map(|a| a.to_string()));
        self
    }

    /// Sets one `main.cf` parameter, over the defaults this harness writes.
    pub fn main_cf(mut self, key: &str, value: &str) -> PostfixBuilder {
        self.main.insert(key.to_string(), value.to_string());
        self
    }

    /// A file in its config directory before it starts (a map such as
    /// `texthash:$config_directory/access`, which `main.cf` may name).
    pub fn etc_file(mut self, name: &str, text: &str) -> PostfixBuilder {
        self.etc.push((name.to_string(), text.to_string()));
        self
    }

    /// TLS on its listener with `cert` and `key` (PEM files), offered (`may`).
    pub fn tls(self, cert: &Path, key: &Path) -> PostfixBuilder {
        self.main_cf("smtpd_tls_cert_file", &cert.display().to_string())
            .main_cf("smtpd_tls_key_file", &key.display().to_string())
            .main_cf("smtpd_tls_security_level", "may")
    }

    /// Starts it; panics when it does not come up.
    pub fn start(self) -> Postfix {
        self.try_start().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts it and waits until it answers; `Err` (containing "in use" when the port was
    /// taken, for [`crate::on_shared_port`]) when it does not.
    pub fn try_start(self) -> Result<Postfix, String> {
        assert!(
            Path::new("/usr/sbin/postfix").exists(),
            "Postfix is not installed (scripts/test.sh installs it)"
        );
        let dir = KeptDir::new();
        let root = dir.path().to_path_buf();
        // Postfix's daemons run as postfix and mail: they must pass through the temp dir.
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("chmod {}: {e}", root.display()))?;
        for sub in ["etc", "queue", "data", "mail"] {
            std::fs::create_dir_all(root.join(sub)).map_err(|e| format!("mkdir {sub}: {e}"))?;
        }
        let (mail_uid, mail_gid) = account("mail");
        let (postfix_uid, _) = account("postfix");
        chown(&root.join("mail"), mail_uid, mail_gid);
        chown(&root.join("data"), postfix_uid, u32::MAX);
        let mut domains: Vec<String> = Vec::new();
        let mut map = String::new();
        for a in &self.mailboxes {
            let (local, domain) = a.rsplit_once('@').expect("a mailbox is local@domain");
            if !domains.iter().any(|d| d == domain) {
                domains.push(domain.to_string());
            }
            map += &format!("{a} {domain}/{local}/Maildir/\n");
        }
        std::fs::write(root.join("etc/mailboxes"), map).map_err(|e| e.to_string())?;
        for (name, text) in &self.etc {
            std::fs::write(root.join("etc").join(name), text).map_err(|e| e.to_string())?;
        }
        let mut main = self.defaults(&root, &domains, mail_uid, mail_gid);
        main.extend(self.main.clone());
        let text: String = main.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        std::fs::write(root.join("etc/main.cf"), text).map_err(|e| e.to_string())?;
        let listen = format!("{}:{}", self.ip, self.port);
        std::fs::write(
            root.join("etc/master.cf"),
            MASTER_CF.replace("@LISTEN@", &listen),
        )
        .map_err(|e| e.to_string())?;
        let started = Instant::now();
        let child = Command::new("/usr/sbin/postfix")
            .arg("-c")
            .arg(root.join("etc"))
            .arg("start-fg")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(root.join("start.err")).map_err(|e| e.to_string())?,
            ))
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot run postfix start-fg: {e}"))?;
        let mut postfix = Postfix {
            dir,
            addr: listen.parse().expect("ip:port"),
            child,
            master: None,
            started: Duration::ZERO,
        };
        postfix.wait_up()?;
        postfix.started = started.elapsed();
        Ok(postfix)
    }

    /// The `main.cf` every instance starts from.
    fn defaults(
        &self,
        root: &Path,
        domains: &[String],
        mail_uid: u32,
        mail_gid: u32,
    ) -> BTreeMap<String, String> {
        let d = root.display();
        let name = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        [
            ("compatibility_level", "3.6".to_string()),
            ("queue_directory", format!("{d}/queue")),
            ("data_directory", format!("{d}/data")),
            ("meta_directory", "/etc/postfix".to_string()),
            ("command_directory", "/usr/sbin".to_string()),
            ("daemon_directory", "/usr/lib/postfix/sbin".to_string()),
            ("shlib_directory", "/usr/lib/postfix".to_string()),
            ("mail_owner", "postfix".to_string()),
            ("setgid_group", "postdrop".to_string()),
            ("syslog_name", format!("postfix-{name}")),
            ("maillog_file", format!("{d}/maillog")),
            ("maillog_file_prefixes", d.to_string()),
            ("myhostname", self.hostname.clone()),
            ("mydestination", String::new()),
            // Postfix accepts only addresses of an interface here; the listener in master.cf
            // names its own address (any of 127.0.0.0/8), so this only sets the client side.
            ("inet_interfaces", "loopback-only".to_string()),
            ("inet_protocols", "ipv4".to_string()),
            ("mynetworks", "127.0.0.0/8".to_string()),
            ("smtpd_banner", "$myhostname ESMTP".to_string()),
            ("biff", "no".to_string()),
            ("append_dot_mydomain", "no".to_string()),
            ("alias_maps", String::new()),
            ("alias_database", String::new()),
            ("virtual_mailbox_domains", domains.join(" ")),
            ("virtual_mailbox_base", format!("{d}/mail")),
            (
                "virtual_mailbox_maps",
                format!("texthash:{d}/etc/mailboxes"),
            ),
            ("virtual_uid_maps", format!("static:{mail_uid}")),
            ("virtual_gid_maps", format!("static:{mail_gid}")),
            ("virtual_minimum_uid", "1".to_string()),
            (
                "smtpd_relay_restrictions",
                "permit_mynetworks, reject_unauth_destination".into(),
            ),
            ("smtp_tls_security_level", "none".to_string()),
            ("smtpd_tls_security_level", "none".to_string()),
            // TLS sessions are logged ("TLS connection established ..."), for the tests.
            ("smtp_tls_loglevel", "1".to_string()),
            ("smtpd_tls_loglevel", "1".to_string()),
            // Quick retries, so a deferred message is tried again within a test's wait.
            ("queue_run_delay", "1s".to_string()),
            ("minimal_backoff_time", "1s".to_string()),
            ("maximal_backoff_time", "2s".to_string()),
            // The test DNS is not the machine's: names come from transport maps or
            // relayhost, and delivery never looks up MX or A records itself.
            ("disable_dns_lookups", "yes".to_string()),
            ("smtp_host_lookup", "native".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// A running private Postfix; stopped (its whole process group killed) when dropped.
pub struct Postfix {
    dir: KeptDir,
    addr: SocketAddr,
    child: Child,
    master: Option<i32>,
    started: Duration,
}

impl Postfix {
    /// Where its SMTP listener is.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its temp dir: `etc/` (config), `queue/`, `data/`, `mail/`, `maillog`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// How long it took from `postfix start-fg` to an answering listener.
    pub fn start_time(&self) -> Duration {
        self.started
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("maillog")).unwrap_or_default()
    }

    /// The files in the Maildir `new/` of the mailbox `address`.
    pub fn maildir_new(&self, address: &str) -> Vec<PathBuf> {
        let (local, domain) = address.rsplit_once('@').expect("local@domain");
        let new = self
            .dir()
            .join("mail")
            .join(domain)
            .join(local)
            .join("Maildir/new");
        let mut files: Vec<PathBuf> = std::fs::read_dir(new)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        files
    }

    /// Waits up to `timeout` for at least `n` messages in `address`'s Maildir; returns them.
    pub fn wait_for_mail(&self, address: &str, n: usize, timeout: Duration) -> Vec<PathBuf> {
        let what = format!("{n} message(s) in Postfix's Maildir of {address}");
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_for(timeout, &what, || self.maildir_new(address).len() >= n)
        }));
        if found.is_err() {
            panic!("{what}: not there\n--- postfix log ---\n{}", self.log());
        }
        self.maildir_new(address)
    }

    /// Writes `text` into its config directory as `name` (a map file, say).
    pub fn write_etc(&self, name: &str, text: &str) {
        std::fs::write(self.dir().join("etc").join(name), text).expect("write into etc/");
    }

    /// `postfix reload`: the daemons read `main.cf` and the maps again.
    pub fn reload(&self) {
        let mut cmd = Command::new("/usr/sbin/postfix");
        cmd.arg("-c").arg(self.dir().join("etc")).arg("reload");
        run("postfix reload", &mut cmd, b"", secs(30)).assert_success("postfix reload");
    }

    /// Waits until the master has written its pid and the listener answers, or fails with
    /// what `postfix start-fg` said and the log.
    fn wait_up(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + secs(20);
        let pid_file = self.dir().join("queue/pid/master.pid");
        loop {
            if self.master.is_none()
                && let Ok(text) = std::fs::read_to_string(&pid_file)
                && let Ok(pid) = text.trim().parse::<i32>()
            {
                self.master = Some(pid);
            }
            if self.master.is_some()
                && TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok()
            {
                return Ok(());
            }
            let exited = matches!(self.child.try_wait(), Ok(Some(_)));
            if exited || Instant::now() > deadline {
                let err = std::fs::read_to_string(self.dir().join("start.err")).unwrap_or_default();
                return Err(format!(
                    "Postfix on {} did not come up ({}):\n{err}\n--- log ---\n{}",
                    self.addr,
                    if exited { "it exited" } else { "20 s" },
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        // The master is a session leader: its process group holds every daemon it started.
        if let Some(master) = self.master {
            kill_hard(-master);
        }
        kill_hard(-(self.child.id() as i32));
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(master) = self.master {
            // Bounded: SIGKILL cannot be caught.
            let deadline = Instant::now() + secs(10);
            while alive(master) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// SIGKILL to a process (`pid > 0`) or process group (`pid < 0`).
fn kill_hard(pid: i32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Whether `pid` still exists (and is not a zombie).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// The uid and gid of the account `name`, from `id`.
fn account(name: &str) -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = run("id", Command::new("id").args([flag, name]), b"", secs(10));
        out.assert_success("id");
        out.stdout.trim().parse().expect("a number from id")
    };
    (id("-u"), id("-g"))
}

/// `chown uid[:gid] path` (`gid` `u32::MAX`: unchanged).
fn chown(path: &Path, uid: u32, gid: u32) {
    let owner = match gid {
        u32::MAX => uid.to_string(),
        g => format!("{uid}:{g}"),
    };
    let mut cmd = Command::new("chown");
    cmd.arg(owner).arg(path);
    run("chown", &mut cmd, b"", secs(10)).assert_success("chown");
}
