//! The operator's tools tell the truth: the config is found the usual way (`--config` before
//! or after the subcommand, `MTA_CONFIG`) and every error names it; `mta queue` and `mta
//! reload` report a closed or missing data dir and a dead socket as failures, never as an
//! empty queue or a missing server; `mta check-config` reports every problem `mta serve`
//! would stop on in one run; `mta doctor` says in one line, in time, when DNS does not answer,
//! and does not pass a private address or fail the hostname as a mail domain; JSON logs are
//! JSON on every line; hints appear only when they apply.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use mta_tests::silent_dns::SilentDns;
use mta_tests::{
    ALICE, ALICE_PASSWORD, KeptDir, MtaBuilder, Output, TestDns, TestMta, mta_bin, mta_with_config,
    run, secs, serve_expecting_failure, wait_for,
};

/// `mta ARGS` run in `dir` with `env`, bounded.
fn mta_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(mta_bin());
    cmd.args(args).current_dir(dir).env_remove("MTA_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(&format!("mta {}", args.join(" ")), &mut cmd, b"", secs(20))
}

#[test]
fn config_is_found_by_flag_on_either_side_or_mta_config_and_errors_name_it() {
    let mta = TestMta::start("");
    mta.add_user(ALICE, ALICE_PASSWORD);
    let cfg = mta.config_path().display().to_string();
    // Somewhere else, where the built-in defaults' ./mta-data is not.
    let elsewhere = KeptDir::new();
    let before = mta_in(elsewhere.path(), &["--config", &cfg, "user", "list"], &[]);
    before.assert_success("mta --config F user list");
    assert!(before.stdout.contains(ALICE), "{before}");
    let after = mta_in(elsewhere.path(), &["queue", "list", "--config", &cfg], &[]);
    after.assert_success("mta queue list --config F");
    let env = mta_in(elsewhere.path(), &["user", "list"], &[("MTA_CONFIG", &cfg)]);
    env.assert_success("MTA_CONFIG=F mta user list");
    assert!(env.stdout.contains(ALICE), "{env}");
    let check = mta_in(elsewhere.path(), &["check-config"], &[("MTA_CONFIG", &cfg)]);
    check.assert_success("MTA_CONFIG=F mta check-config");
    assert!(check.stdout.contains("mx.example.test"), "{check}");

    // The flag wins over the variable; a missing file is named with where it came from.
    let missing = "/nonexistent/mta.toml";
    let out = mta_in(
        elsewhere.path(),
        &["queue", "list"],
        &[("MTA_CONFIG", missing)],
    );
    assert_eq!(out.code(), 1, "{out}");
    assert!(
        out.stderr
            .contains(&format!("config in use: {missing} (MTA_CONFIG)")),
        "{out}"
    );
    let out = mta_in(
        elsewhere.path(),
        &["user", "list", "--config", &cfg],
        &[("MTA_CONFIG", missing)],
    );
    out.assert_success("--config over MTA_CONFIG");
    // An error of a command that found its config names it too.
    let out = mta_in(
        elsewhere.path(),
        &["queue", "show", "0190000000000000abcd", "--config", &cfg],
        &[],
    );
    assert_eq!(out.code(), 1, "{out}");
    assert!(
        out.stderr
            .contains(&format!("mta: config in use: {cfg} (--config)")),
        "{out}"
    );
}

/// Makes the test dir and config readable by everyone, copies the binary there, and returns
/// a runner of `mta ARGS --config CONFIG` as `nobody`. The data dir stays 0700 root.
fn as_nobody(mta: &TestMta) -> impl Fn(&[&str]) -> Output + '_ {
    let dir = mta.dir();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(mta.config_path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let bin = dir.join("mta");
    std::fs::copy(mta_bin(), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    move |args: &[&str]| {
        run(
            &format!("mta {} (as nobody)", args.join(" ")),
            Command::new("setpriv")
                .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
                .arg(&bin)
                .args(args)
                .arg("--config")
                .arg(mta.config_path())
                .current_dir("/"),
            b"",
            secs(20),
        )
    }
}

#[test]
fn queue_and_reload_name_the_failure_never_empty_or_no_server() {
    let mta = TestMta::start("");
    let nobody = as_nobody(&mta);
    let data = mta.data_dir().display().to_string();

    let out = nobody(&["queue", "list"]);
    assert_eq!(out.code(), 1, "{out}");
    assert!(out.stderr.contains("permission denied"), "{out}");
    assert!(out.stderr.contains(&data), "{out}");
    assert!(!out.stdout.contains("queued"), "{out}");

    let out = nobody(&["queue", "list", "--json"]);
    assert_eq!(out.code(), 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("--json error is not JSON ({e}): {out}"));
    assert!(
        v["error"].as_str().unwrap().contains("permission denied"),
        "{v}"
    );
    assert!(v.get("records").is_none(), "{v}");

    let out = nobody(&["reload"]);
    assert_eq!(out.code(), 1, "{out}");
    assert!(out.stderr.contains("permission denied"), "{out}");
    assert!(!out.stderr.contains("no server"), "{out}");
    assert!(!out.stderr.contains("no running server"), "{out}");
    // The server that runs was not touched.
    mta.mta(&["queue", "list"], b"")
        .assert_success("mta queue list as root");

    // A data dir that does not exist (a forgotten or wrong config) is not an empty queue.
    let dir = KeptDir::new();
    let missing = dir.path().join("missing.toml");
    std::fs::write(
        &missing,
        format!("data_dir = {:?}\n", dir.path().join("nothing-here")),
    )
    .unwrap();
    let out = mta_with_config(&missing, &["queue", "list"], b"");
    assert_eq!(out.code(), 1, "{out}");
    assert!(out.stderr.contains("does not exist"), "{out}");
    assert!(!out.stdout.contains("queued"), "{out}");
    assert!(
        !dir.path().join("nothing-here").exists(),
        "nothing is created"
    );

    // A control socket nobody accepts on (left by a killed server): reload says so.
    let stale_dir = dir.path().join("stale");
    std::fs::create_dir(&stale_dir).unwrap();
    drop(std::os::unix::net::UnixListener::bind(stale_dir.join("control.sock")).unwrap());
    let stale = dir.path().join("stale.toml");
    std::fs::write(&stale, format!("data_dir = {stale_dir:?}\n")).unwrap();
    let out = mta_with_config(&stale, &["reload"], b"");
    assert_eq!(out.code(), 1, "{out}");
    assert!(out.stderr.contains("refuses connections"), "{out}");
    assert!(out.stderr.contains("control.sock"), "{out}");
}

/// Writes `text` as `mta.toml` in `dir` and runs `mta check-config` on it.
fn check_config(dir: &Path, text: &str) -> (PathBuf, Output) {
    let path = dir.join("mta.toml");
    std::fs::write(&path, text).unwrap();
    let out = mta_with_config(&path, &["check-config"], b"");
    (path, out)
}

#[test]
fn check_config_reports_every_problem_in_one_run() {
    let dir = KeptDir::new();
    let d = |name: &str| dir.path().join(name).display().to_string();

    // Problems of the file itself: an unknown key no longer hides the others, nor what
    // mta serve would find next (a certificate that is not there).
    let (_, out) = check_config(
        dir.path(),
        &format!(
            "colour = \"blue\"\nshutdown_grace = \"10\"\ndata_dir = {:?}\n[limits]\n\
             max_message_size = \"25XB\"\n[tls]\ncert = {:?}\nkey = {:?}\n",
            d("data"),
            d("no-cert.pem"),
            d("no-key.pem")
        ),
    );
    assert_eq!(out.code(), 2, "{out}");
    for want in [
        "mta.toml:1:1: colour: unknown field",
        "mta.toml:2:18: shutdown_grace: \"10\" is not a duration",
        "mta.toml:5:20: limits.max_message_size: \"25XB\" is not a size",
        "no-cert.pem",
        "4 problem(s)",
    ] {
        assert!(out.stderr.contains(want), "{want}\n{out}");
    }
    let (_, out) = check_config(
        dir.path(),
        &format!(
            "data_dir = {:?}\n[limits]\nmax_message_size = \"25MB\"\n",
            d("data")
        ),
    );
    out.assert_success("a size with a unit");
    assert!(out.stdout.contains("max_message_size = 25000000"), "{out}");

    // What mta serve checks before it binds: all three problems at once, exit 2.
    let text = format!(
        "hostname = \"mx.example.test\"\ndata_dir = {data:?}\nallow_root = true\n\
         [listen]\nsmtp = [\"127.0.0.1:0\"]\nsubmission = []\nsubmissions = []\n\
         [tls]\ncert = {cert:?}\nkey = {key:?}\n\
         [outbound]\nrelay = \"smtp.example.net:587\"\nrelay_user = \"u\"\n\
         relay_password_env = \"MTA_TEST_NEVER_SET\"\n\
         [[dkim.\"example.test\"]]\nselector = \"s\"\nkey = {dkim:?}\n",
        data = d("data"),
        cert = d("no-cert.pem"),
        key = d("no-key.pem"),
        dkim = d("no-dkim.pem"),
    );
    let (_, out) = check_config(dir.path(), &text);
    assert_eq!(out.code(), 2, "{out}");
    for want in [
        "no-cert.pem",
        "no-dkim.pem",
        "MTA_TEST_NEVER_SET",
        "3 problem(s)",
    ] {
        assert!(out.stderr.contains(want), "{want}\n{out}");
    }
    assert!(out.stdout.is_empty(), "{out}");
    // mta serve stops on the same three, named together.
    let serve_dir = KeptDir::new();
    let (_, out) = serve_expecting_failure(serve_dir.path(), &text);
    assert_ne!(out.code(), 0, "{out}");
    for want in ["no-cert.pem", "no-dkim.pem", "MTA_TEST_NEVER_SET"] {
        assert!(out.stderr.contains(want), "{want}\n{out}");
    }

    // The user mta serve drops to must be able to enter the data dir: this one is under a
    // 0700 directory of root's.
    std::fs::create_dir_all(dir.path().join("closed/data")).unwrap();
    std::fs::set_permissions(
        dir.path().join("closed"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    let (_, out) = check_config(
        dir.path(),
        &format!(
            "user = \"nobody\"\ndata_dir = {:?}\n[listen]\nsmtp = [\"127.0.0.1:0\"]\n",
            d("closed/data")
        ),
    );
    assert_eq!(out.code(), 2, "{out}");
    assert!(
        out.stderr
            .contains("user nobody (config key user) cannot reach directory"),
        "{out}"
    );
}

#[test]
fn doctor_says_in_one_line_when_dns_does_not_answer() {
    let dir = KeptDir::new();
    let dns = SilentDns::start();
    let cfg = dir.path().join("mta.toml");
    std::fs::write(
        &cfg,
        format!(
            "hostname = \"mx.example.test\"\nlocal_domains = [\"example.test\"]\ndata_dir = {:?}\n{}",
            dir.path().join("data"),
            dns.config_toml()
        ),
    )
    .unwrap();
    for json in [false, true] {
        let mut args = vec!["doctor", "--ip", "192.0.2.10"];
        if json {
            args.push("--json");
        }
        // The deadline is the promise: the whole run within 10 s.
        let out = run(
            "mta doctor against a silent DNS server",
            Command::new(mta_bin())
                .args(&args)
                .arg("--config")
                .arg(&cfg),
            b"",
            secs(10),
        );
        assert_eq!(out.code(), 1, "{out}");
        let text = if json {
            let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
            assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
            assert_eq!(v[0]["check"], "dns");
            assert_eq!(v[0]["status"], "fail");
            v[0]["detail"].as_str().unwrap().to_string()
        } else {
            assert_eq!(out.stdout.lines().count(), 1, "{out}");
            out.stdout.clone()
        };
        assert!(text.contains("DNS unreachable"), "{out}");
        assert!(text.contains(&dns.addr().to_string()), "{out}");
    }
    assert!(dns.queries() > 0);
}

#[test]
fn doctor_passes_no_private_ptr_and_treats_the_hostname_as_the_host() {
    let dir = KeptDir::new();
    // The hostname resolves to a private address, whose reverse DNS names it back.
    let records = [
        "--local=/10.in-addr.arpa/",
        "--address=/mx.example.test/10.0.0.5",
        "--ptr-record=5.0.0.10.in-addr.arpa,mx.example.test",
    ];
    let dns = TestDns::start(&records);
    let cfg = dir.path().join("mta.toml");
    std::fs::write(
        &cfg,
        format!(
            "hostname = \"mx.example.test\"\nlocal_domains = [\"example.test\", \
             \"mx.example.test\"]\ndata_dir = {:?}\n{}",
            dir.path().join("data"),
            dns.config_toml()
        ),
    )
    .unwrap();
    let out = mta_with_config(&cfg, &["doctor", "--json"], b"");
    let v: serde_json::Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    let verdicts = v.as_array().unwrap();
    let ptr: Vec<&serde_json::Value> = verdicts.iter().filter(|i| i["check"] == "ptr").collect();
    assert!(!ptr.is_empty(), "{v}");
    for p in &ptr {
        assert_ne!(
            p["status"], "ok",
            "a private address is never an ok PTR: {p}"
        );
        assert!(p["detail"].as_str().unwrap().contains("10.0.0.5"), "{p}");
    }
    // The hostname is checked as the host, not failed as a mail domain.
    for item in verdicts {
        if item["domain"] == "mx.example.test" {
            assert!(
                !["mx", "dmarc", "mta-sts", "tls-rpt"].contains(&item["check"].as_str().unwrap()),
                "{item}"
            );
        }
    }
    // A domain that is not local: said so.
    let out = mta_with_config(&cfg, &["doctor", "other.test", "--json"], b"");
    let v: serde_json::Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    let note = v
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["check"] == "domain")
        .unwrap_or_else(|| panic!("no word on other.test not being local: {v}"));
    assert_eq!(note["domain"], "other.test");
    assert!(
        note["detail"]
            .as_str()
            .unwrap()
            .contains("not one of local_domains"),
        "{note}"
    );
}

#[test]
fn json_logs_are_json_on_every_line_and_received_names_the_user() {
    let mta = MtaBuilder::new().env("MTA_LOG_FORMAT", "json").start();
    mta.add_user(ALICE, ALICE_PASSWORD);
    let out = crate::send::mta_send(
        &mta,
        &["--to", ALICE, "--subject", "story", "--body", "hi"],
        b"",
    );
    out.assert_success("mta send");
    wait_for(secs(10), "the received line", || {
        mta.log().contains("\"received\"")
    });
    let parse = |text: &str| -> Vec<serde_json::Value> {
        text.lines()
            .filter(|l| !l.starts_with("--- test harness"))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    };
    let stdout = parse(&mta.stdout());
    assert!(
        stdout
            .iter()
            .any(|e| e["message"].as_str().unwrap().starts_with("mta ready ")),
        "{stdout:?}"
    );
    let log = parse(&mta.log());
    let received = log
        .iter()
        .find(|e| e["message"] == "received")
        .expect("a received line");
    assert_eq!(received["user"], ALICE, "{received}");
}

#[test]
fn hints_only_when_they_apply_and_with_the_config() {
    let mut mta = TestMta::start("");
    let cfg = mta.config_path().display().to_string();
    // The hints follow the ready line: wait for them rather than race the server.
    mta.wait_logged(secs(10), "the first hint", || {
        mta.stdout().contains("mta hint:")
    });
    let first = mta.stdout();
    let hint = first
        .lines()
        .find(|l| l.starts_with("mta hint: no user yet"))
        .unwrap_or_else(|| panic!("no hint without users:\n{first}"));
    assert!(hint.contains(&format!("--config {cfg}")), "{hint}");
    mta.add_user(ALICE, ALICE_PASSWORD);
    mta.restart();
    let all = mta.stdout();
    assert_eq!(
        all.matches("mta hint:").count(),
        first.matches("mta hint:").count(),
        "with a user, no hint:\n{all}"
    );
}

/// The value of `mta_recipients_total{result="failed"}` on the metrics listener.
fn failed_recipients(metrics: std::net::SocketAddr) -> f64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(metrics).expect("connect to the metrics listener");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read the response");
    text.lines()
        .find_map(|l| l.strip_prefix("mta_recipients_total{result=\"failed\"} "))
        .map_or(0.0, |v| v.trim().parse().expect("a number"))
}

#[test]
fn an_operator_bounce_counts_as_failed_recipients() {
    // The smarthost port is closed: the message is deferred at once and waits.
    let mta = TestMta::start(
        "[metrics]\nlisten = \"127.0.0.1:0\"\n[outbound]\nrelay = \"127.0.0.1:1\"\n",
    );
    mta.add_user(ALICE, ALICE_PASSWORD);
    let metrics = mta.listener("metrics");
    let out = crate::send::mta_send(
        &mta,
        &["--to", "far@remote.test", "--subject", "s", "--body", "b"],
        b"",
    );
    out.assert_success("mta send");
    let id = mta_tests::queue_id(&out.stdout);
    mta.wait_for_deferral(&id, "far@remote.test", 1, secs(30));
    let before = failed_recipients(metrics);
    mta.mta(&["queue", "bounce", &id], b"")
        .assert_success("mta queue bounce");
    assert_eq!(failed_recipients(metrics), before + 1.0);
}

#[test]
fn dkim_keygen_says_reload_not_restart() {
    let dir = KeptDir::new();
    let cfg = dir.path().join("mta.toml");
    std::fs::write(&cfg, format!("data_dir = {:?}\n", dir.path().join("data"))).unwrap();
    let out = mta_with_config(
        &cfg,
        &[
            "dkim",
            "keygen",
            "--domain",
            "example.test",
            "--selector",
            "s",
        ],
        b"",
    );
    out.assert_success("mta dkim keygen");
    assert!(out.stdout.contains("then run `mta reload`"), "{out}");
    assert!(!out.stdout.contains("restart mta"), "{out}");
}

#[test]
fn json_log_format_makes_a_start_up_error_json_too() {
    let dir = KeptDir::new();
    let cfg = dir.path().join("mta.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = {:?}\nallow_root = true\n[tls]\ncert = \"/nonexistent/cert.pem\"\n\
             key = \"/nonexistent/key.pem\"\n",
            dir.path().join("data")
        ),
    )
    .unwrap();
    let out = run(
        "mta serve --log-format json (expected to fail at start-up)",
        Command::new(mta_bin())
            .args(["serve", "--log-format", "json", "--config"])
            .arg(&cfg),
        b"",
        secs(15),
    );
    assert_ne!(out.code(), 0, "{out}");
    let lines: Vec<serde_json::Value> = out
        .stderr
        .lines()
        .chain(out.stdout.lines())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}\n{out}")))
        .collect();
    let error = lines
        .iter()
        .find(|l| l["level"] == "ERROR")
        .unwrap_or_else(|| panic!("no error line: {out}"));
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/cert.pem"),
        "{error}"
    );
    assert!(
        error["config"].as_str().unwrap().contains("mta.toml"),
        "{error}"
    );
}

/// The repository root (the tests crate is one level down).
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the repository")
        .to_path_buf()
}

#[test]
fn docs_match_the_unit_the_binary_and_its_help() {
    let read = |p: &str| std::fs::read_to_string(repo().join(p)).unwrap();
    let (unit, install, readme) = (
        read("dist/mta.service"),
        read("docs/install.md"),
        read("README.md"),
    );
    // Every page the unit's Documentation= names is one of ours, and install.md puts it there.
    let line = unit
        .lines()
        .find(|l| l.starts_with("Documentation="))
        .expect("a Documentation= line");
    for url in line["Documentation=".len()..].split_whitespace() {
        let page = url
            .strip_prefix("file:///usr/local/share/doc/mta/")
            .unwrap_or_else(|| panic!("{url} is not where install.md puts the docs"));
        assert!(repo().join("docs").join(page).is_file(), "{url}");
    }
    assert!(
        install.contains("-t\n/usr/local/share/doc/mta docs/*.md")
            || install.contains("/usr/local/share/doc/mta docs/*.md"),
        "install.md installs the pages Documentation= names"
    );
    // What mta user run as root does with the users file (users.rs gives it to the data
    // dir's owner), and what a failed restart leaves.
    assert!(
        install.contains("gives the users file\nto the owner of the data dir"),
        "install.md on the users file's owner"
    );
    assert!(
        install.contains("mta stays **down**"),
        "install.md on a failed restart"
    );
    // Each subcommand in `mta --help` has its row in the README's command table.
    let help = run(
        "mta --help",
        Command::new(mta_bin()).arg("--help"),
        b"",
        secs(10),
    );
    help.assert_success("mta --help");
    let commands: Vec<&str> = help
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(commands.len() >= 9, "{help}");
    for c in commands {
        assert!(
            readme.contains(&format!("| `mta {c}")),
            "README's command table has no row for mta {c}"
        );
    }
    assert!(help.stdout.contains("MTA_CONFIG"), "{help}");
    assert!(
        readme.contains("`MTA_CONFIG`"),
        "README on finding the config"
    );
}
