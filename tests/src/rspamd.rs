//! [`TestRspamd`]: Debian's rspamd with a private config in a temp dir, only its proxy worker
//! in milter mode (`self_scan`: no separate scanner, no redis) on a free loopback port, with
//! `milter_headers` adding its extended headers (`X-Spamd-Result`, `X-Rspamd-Server`; not
//! `X-Rspamd-Queue-Id`, which needs the `{i}` macro we cannot send) also for mail from
//! loopback. Run in the foreground (`-f`); as root
//! (the tests' usual user) its workers run as `nobody`, since rspamd refuses root.

use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::run;
use crate::{KeptDir, secs};

const RSPAMD: &str = "/usr/bin/rspamd";

/// A running rspamd.
pub struct TestRspamd {
    child: Option<Child>,
    port: u16,
    dir: KeptDir,
}

impl TestRspamd {
    /// Starts rspamd and waits (at most 5 minutes: it compiles its expressions at start-up,
    /// which takes half a minute on a quiet machine) until its milter port accepts.
    pub fn start() -> TestRspamd {
        let dir = KeptDir::new();
        let root = dir.path().to_path_buf();
        for d in ["conf/local.d", "db", "run"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        // The workers (nobody) write the database, pid and log files here.
        for d in ["", "db", "run"] {
            std::fs::set_permissions(root.join(d), std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let conf = format!(
            ".include \"$CONFDIR/common.conf\"\n\
             options {{\n  pidfile = \"{root}/run/rspamd.pid\";\n  .include \"$CONFDIR/options.inc\"\n}}\n\
             logging {{\n  type = \"file\";\n  filename = \"{root}/run/rspamd.log\";\n  level = \"info\";\n}}\n\
             worker \"rspamd_proxy\" {{\n  bind_socket = \"127.0.0.1:{port}\";\n  milter = yes;\n  \
             timeout = 120s;\n  count = 1;\n  upstream \"local\" {{\n    default = yes;\n    self_scan = yes;\n  }}\n}}\n",
            root = root.display()
        );
        std::fs::write(root.join("conf/rspamd.conf"), conf).unwrap();
        std::fs::write(
            root.join("conf/local.d/milter_headers.conf"),
            "extended_spam_headers = true;\nskip_local = false;\nskip_authenticated = false;\n",
        )
        .unwrap();
        let mut cmd = Command::new(RSPAMD);
        cmd.arg("-f")
            .arg("-c")
            .arg(root.join("conf/rspamd.conf"))
            .arg("--var")
            .arg(format!("LOCAL_CONFDIR={}", root.join("conf").display()))
            .arg("--var")
            .arg(format!("DBDIR={}", root.join("db").display()))
            .arg("--var")
            .arg(format!("RUNDIR={}", root.join("run").display()))
            .arg("--var")
            .arg(format!("LOGDIR={}", root.join("run").display()));
        if crate::system::is_root() {
            cmd.args(["-u", "nobody", "-g", "nogroup"]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {RSPAMD}: {e}"));
        let mut rspamd = TestRspamd {
            child: Some(child),
            port,
            dir,
        };
        let deadline = Instant::now() + secs(300);
        loop {
            if let Some(status) = rspamd
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                rspamd.child = None;
                panic!("rspamd exited at start-up ({status}):\n{}", rspamd.log());
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return rspamd;
            }
            assert!(
                Instant::now() < deadline,
                "rspamd did not listen within 5 minutes:\n{}",
                rspamd.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Its milter address for `[[inbound.milter]]`.
    pub fn address(&self) -> String {
        format!("inet:127.0.0.1:{}", self.port)
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("run/rspamd.log")).unwrap_or_default()
    }

    /// Stops it (SIGTERM; SIGKILL if it lingers) and waits until its port is closed.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = run(
            "kill -TERM rspamd",
            Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string()),
            b"",
            secs(5),
        );
        let deadline = Instant::now() + secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        let deadline = Instant::now() + secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(Instant::now() < deadline, "rspamd's port still open");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for TestRspamd {
    fn drop(&mut self) {
        self.stop();
    }
}
