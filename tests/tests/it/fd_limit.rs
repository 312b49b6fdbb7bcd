//! The server out of file descriptors: every accept loop (SMTP, control socket, metrics)
//! pauses after a failed `accept()` and logs the failure only now and then, instead of
//! spinning at full CPU and writing a line per failure. And the limit at start: `mta serve`
//! raises its soft limit to the hard one, and says so when even that is below what the
//! configured limits need.

use std::io::Write;
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mta_tests::{KeptDir, TestMta, base_config, secs, wait_for};

/// Descriptors the server process has open now.
fn open_fds(pid: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// User plus system CPU time of the process so far, in clock ticks (`/proc/PID/stat`).
fn cpu_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    field(11) + field(12)
}

fn accept_failures(log: &str) -> usize {
    log.lines().filter(|l| l.contains("accept failed")).count()
}

#[test]
fn accept_loops_back_off_and_log_rarely_at_the_descriptor_limit() {
    let mta = TestMta::start("[metrics]\nlisten = \"127.0.0.1:0\"\n");
    let pid = mta.pid();
    // Let start-up settle, then allow no more descriptors than are in use: nothing that is
    // open closes on its own meanwhile, so every accept keeps failing.
    std::thread::sleep(Duration::from_millis(300));
    let limit = open_fds(&pid);
    // The soft limit only: the hard one stays, so it can be raised again.
    let set = Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={limit}:"))
        .status()
        .expect("run prlimit");
    assert!(set.success(), "prlimit failed");

    // More connections than descriptors left: the rest wait in the kernel's queues and
    // every accept of them fails with EMFILE.
    let mut held = Vec::new();
    for _ in 0..40 {
        if let Ok(s) = TcpStream::connect(mta.smtp_addr()) {
            held.push(s);
        }
    }
    let mut metrics = Vec::new();
    for _ in 0..30 {
        if let Ok(mut s) = TcpStream::connect(mta.listener("metrics")) {
            let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
            metrics.push(s);
        }
    }
    let socket = mta.data_dir().join("control.sock");
    let mut control = Vec::new();
    for _ in 0..30 {
        if let Ok(mut s) = UnixStream::connect(&socket) {
            let _ = s.write_all(b"list\n");
            control.push(s);
        }
    }
    wait_for(secs(10), "a failed accept in the log", || {
        accept_failures(&mta.log()) > 0
    });

    // A window while every loop keeps failing: count the lines and measure the CPU.
    let before_lines = accept_failures(&mta.log());
    let before_cpu = cpu_ticks(&pid);
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let window = start.elapsed().as_secs_f64();
    let lines = accept_failures(&mta.log()) - before_lines;
    let cpu = (cpu_ticks(&pid) - before_cpu) as f64 / 100.0 / window;
    eprintln!(
        "at the descriptor limit: {lines} 'accept failed' lines in {window:.1} s, CPU {:.0} %",
        cpu * 100.0
    );
    // Three loops, each at most one line per ten seconds (plus its first).
    assert!(
        lines <= 3,
        "{lines} accept-failure lines in {window:.1} s at the descriptor limit\n{}",
        mta.log()
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Descriptors free again: the waiting connections are served.
    drop(held);
    let raise = Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg("--nofile=1024:")
        .status()
        .expect("run prlimit");
    assert!(raise.success());
    wait_for(secs(20), "the control socket answers again", || {
        let out = mta.mta(&["queue", "list"], b"");
        out.code() == 0
    });
}

/// Started with too few descriptors to open its queue, `mta serve` says it is out of
/// descriptors: not that the store is damaged, nor that another server holds it.
#[test]
fn start_up_out_of_descriptors_is_named_as_such() {
    // A store with a log in it, made by a first run.
    let mut first = TestMta::start("");
    let config = first.config_path().to_path_buf();
    first.stop();
    let mut seen = Vec::new();
    // The lowest limits fail earlier (the runtime, the users file); somewhere above them
    // the queue is the first thing that cannot be opened.
    for limit in 8..40 {
        // A server that does start is stopped by `timeout` after 5 s.
        let out = mta_tests::run(
            "mta serve under a descriptor limit",
            Command::new("timeout")
                .arg("5")
                .arg("prlimit")
                .arg(format!("--nofile={limit}"))
                .arg("--")
                .arg(mta_tests::mta_bin())
                .arg("serve")
                .arg("--config")
                .arg(&config),
            b"",
            secs(20),
        );
        if out.stdout.contains("mta ready") {
            break;
        }
        if let Some(line) = out
            .stderr
            .lines()
            .find(|l| l.contains("cannot open the queue"))
        {
            seen.push(line.to_string());
        }
    }
    println!("{}", seen.join("\n"));
    assert!(!seen.is_empty(), "no limit made the queue fail to open");
    for line in &seen {
        assert!(
            line.contains("out of file descriptors")
                && !line.contains("is damaged")
                && !line.contains("another mta serve"),
            "{line}"
        );
    }
}

/// `mta serve` started under `prlimit --nofile=SOFT:HARD`, which sets the limits and then
/// runs the server in its own process (so the child's pid is the server's). Killed on drop.
struct Limited {
    child: Child,
    dir: KeptDir,
}

impl Limited {
    fn start(extra_toml: &str, soft: u64, hard: u64) -> Limited {
        let dir = KeptDir::new();
        let config = dir.path().join("mta.toml");
        std::fs::write(&config, base_config(dir.path(), extra_toml)).expect("write the config");
        let out = std::fs::File::create(dir.path().join("out")).expect("create out");
        let err = std::fs::File::create(dir.path().join("err")).expect("create err");
        let child = Command::new("prlimit")
            .arg(format!("--nofile={soft}:{hard}"))
            .arg("--")
            .arg(mta_tests::mta_bin())
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("run prlimit");
        let mut me = Limited { child, dir };
        wait_for(secs(30), "mta ready", || {
            let ready = me.read("out").contains("mta ready");
            if !ready && matches!(me.child.try_wait(), Ok(Some(_))) {
                panic!("mta serve exited before it was ready:\n{}", me.read("err"));
            }
            ready
        });
        me
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// The soft and hard `Max open files` of the running server (`/proc/PID/limits`).
    fn nofile(&self) -> (u64, u64) {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.child.id()))
            .expect("read /proc/PID/limits");
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .expect("a Max open files line");
        let n: Vec<u64> = line
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        (n[0], n[1])
    }
}

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Started with a soft limit of 256 under a hard one of 1000, the server runs with 1000 and
/// says so; 1000 is enough for 100 sessions, so no warning. (Both limits stay under 1024,
/// which any machine allows without privileges.)
#[test]
fn start_up_raises_the_soft_descriptor_limit_to_the_hard_one() {
    let mta = Limited::start("[limits]\nmax_sessions = 100\n", 256, 1000);
    assert_eq!(mta.nofile(), (1000, 1000), "{}", mta.read("err"));
    let log = mta.read("err");
    assert!(
        log.lines()
            .any(|l| l.contains("raised the soft file-descriptor limit")
                && l.contains("from=256")
                && l.contains("to=1000")),
        "{log}"
    );
    assert!(!log.contains("file-descriptor limit is below"), "{log}");
}

/// A hard limit below what `limits.max_sessions` needs: raised as far as it goes, and the
/// start-up log names the shortfall; the server still starts.
#[test]
fn start_up_warns_when_the_hard_descriptor_limit_is_below_the_sessions() {
    let mta = Limited::start("[limits]\nmax_sessions = 2000\n", 256, 512);
    assert_eq!(mta.nofile(), (512, 512), "{}", mta.read("err"));
    let log = mta.read("err");
    // 2000 sessions + 32 outbound connections (the default) + 256 kept aside.
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("file-descriptor limit is below")
            && l.contains("limit=512")
            && l.contains("needed=2288")
            && l.contains("limits.max_sessions")),
        "{log}"
    );
}
