//! [`TestMta`]: one real `mta serve` in its own temp dir, on `127.0.0.1:0` ports that its
//! ready line reveals, killed when the test ends. On a failing test the temp dir is kept and
//! the server's log printed.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::process::{Output, run};
use crate::{mta_bin, secs, wait_for};

/// How long `mta serve` may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a SIGTERM may take (the default `shutdown_grace` is 10 s, plus a margin).
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long an `mta` command (user, queue, check-config) may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

/// A temp dir that is removed when dropped, unless the thread is panicking (a failing
/// test): then it is kept and its path printed.
pub struct KeptDir {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl KeptDir {
    /// A new empty directory under the system temp dir.
    pub fn new() -> KeptDir {
        let dir = tempfile::Builder::new()
            .prefix("mta-test-")
            .tempdir()
            .expect("cannot create a temp dir");
        let path = dir.path().to_path_buf();
        KeptDir {
            dir: Some(dir),
            path,
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Default for KeptDir {
    fn default() -> Self {
        KeptDir::new()
    }
}

impl Drop for KeptDir {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            eprintln!("test failed: keeping {}", dir.keep().display());
        }
    }
}

/// The config every [`TestMta`] starts from: `hostname`, `data_dir` (`DIR/data`),
/// `local_domains` and `allow_root = true` (the tests run as root, and most run the server
/// as the user that runs them), then `extra_toml`, then the `[listen]` table with all three
/// listeners on `127.0.0.1:0`. `extra_toml` may add top-level keys and tables other than
/// `[listen]` (top-level keys must come before its own tables, as TOML requires).
pub fn base_config(dir: &Path, extra_toml: &str) -> String {
    let extra_toml = with_inbound_default(extra_toml);
    format!(
        "hostname = \"mx.example.test\"\n\
         data_dir = {:?}\n\
         local_domains = [\"example.test\"]\n\
         allow_root = true\n\
         {extra_toml}\n\
         [listen]\n\
         smtp = [\"127.0.0.1:0\"]\n\
         submission = [\"127.0.0.1:0\"]\n\
         submissions = [\"127.0.0.1:0\"]\n",
        dir.join("data").display().to_string()
    )
}

/// `extra_toml`, plus `[inbound] checks = false` unless it has an `[inbound]` table: the
/// SPF/DKIM/DMARC checks would ask the machine's resolver about the test domains, so only the
/// tests of those checks (which bring their own DNS server) turn them on. Also
/// `outbound.allow_internal` = loopback unless the text sets it: every receiving test server
/// listens on 127.0.0.0/8 or ::1, where mail is otherwise never sent.
pub fn with_inbound_default(extra_toml: &str) -> String {
    let mut text = extra_toml.to_string();
    if !text.contains("[inbound]") {
        text.push_str("\n[inbound]\nchecks = false\n");
    }
    if !text.contains("allow_internal") {
        const ALLOW: &str = "allow_internal = [\"127.0.0.0/8\", \"::1/128\"]\n";
        text = match text.find("[outbound]\n") {
            Some(at) => {
                let after = at + "[outbound]\n".len();
                format!("{}{ALLOW}{}", &text[..after], &text[after..])
            }
            None => format!("{text}\n[outbound]\n{ALLOW}"),
        };
    }
    text
}

type Shared = Arc<Mutex<Vec<u8>>>;

fn text(buf: &Shared) -> String {
    String::from_utf8_lossy(&buf.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
}

/// A running `mta serve`.
pub struct TestMta {
    child: Option<Child>,
    config: PathBuf,
    listeners: Vec<(String, SocketAddr)>,
    cert: Option<PathBuf>,
    /// The file the server's stderr is, over all its runs. A file, not a pipe read by a
    /// thread: a line the server logged before it answered is in the file when the test
    /// reads the answer (through a pipe the copying thread could still be behind).
    log: PathBuf,
    /// Everything it wrote on stdout, over all its runs.
    stdout: Shared,
    /// Environment variables set on every run (a smarthost password, `RUST_LOG`).
    env: Vec<(String, String)>,
    dir: KeptDir,
}

impl TestMta {
    /// Starts a server on [`base_config`] plus `extra_toml`.
    pub fn start(extra_toml: &str) -> TestMta {
        TestMta::start_config(|dir| base_config(dir, extra_toml))
    }

    /// Starts a server on the config `make` returns for the temp dir. The config must set
    /// `data_dir = "DIR/data"` (as [`base_config`] does) and should listen on port 0.
    pub fn start_config(make: impl FnOnce(&Path) -> String) -> TestMta {
        TestMta::try_start_with(make, Vec::new()).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`TestMta::start_config`], with `env` set on the server process, but a server
    /// that exits before it is ready is an `Err` with its config and output (the caller
    /// may retry, for example on `Address already in use`). A server that prints no ready
    /// line in time still panics.
    pub fn try_start_with(
        make: impl FnOnce(&Path) -> String,
        env: Vec<(String, String)>,
    ) -> Result<TestMta, String> {
        TestMta::try_start_with_users(make, env, &[])
    }

    /// [`TestMta::try_start_with`], with `users` (address, password) added before the
    /// server starts, so no client can reach it before they exist.
    pub fn try_start_with_users(
        make: impl FnOnce(&Path) -> String,
        env: Vec<(String, String)>,
        users: &[(String, String)],
    ) -> Result<TestMta, String> {
        let dir = KeptDir::new();
        let config = dir.path().join("mta.toml");
        std::fs::write(&config, make(dir.path())).expect("cannot write the test config");
        let mut mta = TestMta {
            child: None,
            config,
            listeners: Vec::new(),
            cert: None,
            log: dir.path().join("serve-stderr.log"),
            stdout: Shared::default(),
            env,
            dir,
        };
        for (addr, password) in users {
            mta.add_user(addr, password);
        }
        mta.try_spawn()?;
        Ok(mta)
    }

    fn spawn(&mut self) {
        if let Err(e) = self.try_spawn() {
            panic!("{e}");
        }
    }

    fn try_spawn(&mut self) -> Result<(), String> {
        let mut child = Command::new(mta_bin())
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .current_dir(self.dir.path())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(self.log_file())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start mta serve: {e}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let (lines, ready) = mpsc::channel();
        let keep = self.stdout.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut kept = keep.lock().unwrap_or_else(PoisonError::into_inner);
                kept.extend_from_slice(line.as_bytes());
                kept.push(b'\n');
                // After start-up nobody listens: the line is only kept.
                let _ = lines.send(line);
            }
        });
        self.child = Some(child);
        self.listeners.clear();
        let deadline = Instant::now() + READY_TIMEOUT;
        // The ready line, then the certificate line right after it.
        loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            // With `--log-format json` each stdout line is a JSON object; its message is the
            // text line.
            let received = ready.recv_timeout(wait).map(|line| {
                match serde_json::from_str::<serde_json::Value>(&line) {
                    Ok(v) if line.starts_with('{') => {
                        v["message"].as_str().unwrap_or("").to_string()
                    }
                    _ => line,
                }
            });
            match received {
                Ok(line) if line.starts_with("mta ready ") => {
                    self.listeners = parse_ready(&line);
                }
                Ok(line) if line.starts_with("mta tls ") => {
                    self.cert = parse_cert(&line);
                    if !self.listeners.is_empty() {
                        return Ok(());
                    }
                }
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "mta serve printed no ready line within {READY_TIMEOUT:?}\n{}",
                        self.describe()
                    );
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.take().map(|mut c| c.wait());
                    return Err(format!(
                        "mta serve exited before it was ready ({status:?})\n{}",
                        self.describe()
                    ));
                }
            }
        }
    }

    fn describe(&self) -> String {
        format!(
            "--- config {} ---\n{}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.config.display(),
            std::fs::read_to_string(&self.config).unwrap_or_default(),
            text(&self.stdout),
            self.log()
        )
    }

    /// The address of a listener the ready line named (`smtp`, `metrics`, ...).
    pub fn listener(&self, kind: &str) -> SocketAddr {
        self.listeners
            .iter()
            .find(|(k, _)| k == kind)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| panic!("no {kind} listener in the ready line: {:?}", self.listeners))
    }

    /// The port-25-style listener.
    pub fn smtp_addr(&self) -> SocketAddr {
        self.listener("smtp")
    }

    /// The STARTTLS submission listener.
    pub fn submission_addr(&self) -> SocketAddr {
        self.listener("submission")
    }

    /// The implicit-TLS submission listener.
    pub fn submissions_addr(&self) -> SocketAddr {
        self.listener("submissions")
    }

    /// The temp dir holding the config and the data dir.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The config file.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// `DIR/data`.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The certificate the server presents, as its start-up line names it.
    pub fn cert_path(&self) -> PathBuf {
        self.cert
            .clone()
            .unwrap_or_else(|| panic!("mta serve named no certificate\n{}", self.describe()))
    }

    /// What the server wrote on stdout so far (all runs): the ready, certificate and hint
    /// lines.
    pub fn stdout(&self) -> String {
        text(&self.stdout)
    }

    /// The server's stderr, opened for appending (made on first use).
    fn log_file(&self) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", self.log.display()))
    }

    /// What the server wrote on stderr so far (all runs).
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// Runs `mta ARGS --config CONFIG` with `stdin`, bounded.
    pub fn mta(&self, args: &[&str], stdin: &[u8]) -> Output {
        mta_with_config(&self.config, args, stdin)
    }

    /// `mta user add ADDR --password-stdin`; panics unless it succeeds.
    pub fn add_user(&self, addr: &str, password: &str) {
        self.mta(
            &["user", "add", addr, "--password-stdin"],
            format!("{password}\n").as_bytes(),
        )
        .assert_success(&format!("mta user add {addr}"));
    }

    /// `mta queue list --json`, parsed.
    pub fn queue_json(&self) -> serde_json::Value {
        let out = self.mta(&["queue", "list", "--json"], b"");
        out.assert_success("mta queue list --json");
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("mta queue list --json printed bad JSON ({e}): {out}"))
    }

    /// The queue record of message `id` (`mta queue list --json`), if it is queued. Panics
    /// when the queue reports errors.
    pub fn queue_record(&self, id: &str) -> Option<serde_json::Value> {
        let queue = self.queue_json();
        let errors = queue["errors"].as_array().expect("errors is an array");
        assert!(errors.is_empty(), "queue errors: {queue}");
        queue["records"]
            .as_array()
            .expect("records is an array")
            .iter()
            .find(|r| r["envelope"]["id"] == id)
            .cloned()
    }

    /// The queue entry of recipient `addr` of message `id` (`address`, `state`,
    /// `attempts`, `last_result`), if the message is queued.
    pub fn queued_recipient(&self, id: &str, addr: &str) -> Option<serde_json::Value> {
        let record = self.queue_record(id)?;
        let found = record["envelope"]["recipients"]
            .as_array()
            .expect("recipients is an array")
            .iter()
            .find(|r| r["address"] == addr)
            .cloned();
        Some(found.unwrap_or_else(|| panic!("{addr} is not a recipient of {record}")))
    }

    /// Waits until recipient `addr` of message `id` is pending after at least `attempts`
    /// attempts, and returns its queue entry.
    pub fn wait_for_deferral(
        &self,
        id: &str,
        addr: &str,
        attempts: u64,
        timeout: Duration,
    ) -> serde_json::Value {
        let what = format!("{addr} of {id} pending after {attempts} attempt(s)");
        self.wait_logged(timeout, &what, || {
            self.queued_recipient(id, addr).is_some_and(|r| {
                r["state"] == "pending" && r["attempts"].as_u64() >= Some(attempts)
            })
        });
        self.queued_recipient(id, addr)
            .unwrap_or_else(|| panic!("{id} left the queue"))
    }

    /// Waits until the queue holds no message at all.
    pub fn wait_for_empty_queue(&self, timeout: Duration) {
        self.wait_logged(timeout, "an empty queue", || {
            self.queue_json()["records"]
                .as_array()
                .is_some_and(Vec::is_empty)
        });
    }

    /// [`wait_for`], printing this server's queue when it times out (its log follows when
    /// the test's servers are dropped).
    pub fn wait_logged(&self, timeout: Duration, what: &str, cond: impl FnMut() -> bool) {
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_for(timeout, what, cond)
        }));
        if let Err(panic) = found {
            eprintln!(
                "--- queue of {} ---\n{}",
                self.config.display(),
                self.mta(&["queue", "list"], b"").all()
            );
            std::panic::resume_unwind(panic);
        }
    }

    /// The files in `new/` of `addr`'s Maildir, sorted (none when it does not exist).
    pub fn maildir_new(&self, addr: &str) -> Vec<PathBuf> {
        let (local, domain) = addr
            .rsplit_once('@')
            .unwrap_or_else(|| panic!("{addr:?} is not an address"));
        let new = self
            .data_dir()
            .join("mail")
            .join(domain.to_lowercase())
            .join(local.to_lowercase())
            .join("Maildir")
            .join("new");
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&new) {
            Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(_) => Vec::new(),
        };
        files.sort();
        files
    }

    /// Waits up to `secs` seconds until `addr`'s Maildir holds at least `n` messages and
    /// returns them.
    pub fn wait_for_mail(&self, addr: &str, n: usize, timeout_secs: u64) -> Vec<PathBuf> {
        let what = format!("{n} message(s) in {addr}'s Maildir");
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_for(secs(timeout_secs), &what, || {
                self.maildir_new(addr).len() >= n
            })
        }));
        if let Err(panic) = found {
            eprintln!("--- mta log ---\n{}", self.log());
            std::panic::resume_unwind(panic);
        }
        self.maildir_new(addr)
    }

    /// The process id of the running server.
    pub fn pid(&self) -> String {
        self.child
            .as_ref()
            .expect("the server is running")
            .id()
            .to_string()
    }

    /// Sends SIGHUP (reload the config); panics when `kill` fails.
    pub fn hangup(&self) {
        let status = Command::new("kill")
            .args(["-s", "HUP", &self.pid()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -HUP failed");
    }

    /// Kills the server with SIGKILL: no chance to flush or say goodbye.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits (bounded) for the server to exit; returns how it exited.
    pub fn stop(&mut self) -> ExitStatus {
        self.stop_within(STOP_TIMEOUT)
    }

    /// Sends SIGTERM; panics unless the server exits within `timeout`.
    pub fn stop_within(&mut self, timeout: Duration) -> ExitStatus {
        let pid = self.pid();
        let mut child = self.child.take().expect("the server is running");
        // `kill` the command: the crate forbids unsafe code, so no libc::kill.
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("cannot run kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "mta serve did not exit within {timeout:?} of SIGTERM\n{}",
                        self.describe()
                    );
                }
            }
        }
    }

    /// Starts the server again on the same dir and config (after [`TestMta::kill9`] or
    /// [`TestMta::stop`]; a running server is stopped first). The ports are new.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            let status = self.stop();
            assert!(
                status.success(),
                "mta serve exited with {status} on SIGTERM"
            );
        }
        use std::io::Write;
        self.log_file()
            .write_all(b"--- test harness: restart ---\n")
            .expect("write the restart mark into the server's log");
        self.spawn();
    }
}

impl Drop for TestMta {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("{}", self.describe());
        }
    }
}

/// `mta ready smtp=127.0.0.1:1 submission=…` → `[("smtp", addr), …]`.
fn parse_ready(line: &str) -> Vec<(String, SocketAddr)> {
    line.split_whitespace()
        .skip(2)
        .map(|item| {
            let (kind, addr) = item
                .split_once('=')
                .unwrap_or_else(|| panic!("bad ready line {line:?}"));
            let addr = addr
                .parse()
                .unwrap_or_else(|e| panic!("bad address in ready line {line:?}: {e}"));
            (kind.to_string(), addr)
        })
        .collect()
}

/// `mta tls self-signed certificate PATH (…)` or `mta tls certificate PATH`.
fn parse_cert(line: &str) -> Option<PathBuf> {
    line.split_whitespace()
        .find(|w| w.ends_with(".pem"))
        .map(PathBuf::from)
}

/// Runs `mta ARGS --config CONFIG` with `stdin` in the config's directory, bounded (20 s).
pub fn mta_with_config(config: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let what = format!("mta {}", args.join(" "));
    let dir = config.parent().expect("a config file is in a directory");
    run(
        &what,
        Command::new(mta_bin())
            .args(args)
            .arg("--config")
            .arg(config)
            .current_dir(dir),
        stdin,
        COMMAND_TIMEOUT,
    )
}

/// Runs `mta serve` on a config that must make it fail at start-up; returns the config
/// path and the output. Panics if the server is still running after 15 s (it started).
pub fn serve_expecting_failure(dir: &Path, config_text: &str) -> (PathBuf, Output) {
    let config = dir.join("mta.toml");
    std::fs::write(&config, config_text).expect("cannot write the test config");
    let out = run(
        "mta serve (expected to fail at start-up)",
        Command::new(mta_bin())
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .current_dir(dir),
        b"",
        secs(15),
    );
    (config, out)
}
